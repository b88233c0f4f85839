//! What carton-runtime keeps about a container between its commands (`<root>/<id>/`):
//! `state.json` (pid, bundle, cgroup, the hooks run after create) and `exec.fifo` while the
//! container waits for `start`. The status is derived, never stored: from whether its `create`
//! is still at work (a provisional record names that process), whether the init lives,
//! whether its FIFO is still there, and whether its cgroup is frozen.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Hook;
use serde::{Deserialize, Serialize};

use super::OciError;
use crate::cgroups::{self, Layout};
use crate::state::{self, Timestamp, process_start_time};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub bundle: PathBuf,
    pub pid: i32,
    pub pid_start_time: Option<u64>,
    pub created: Timestamp,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    #[serde(default)]
    pub cgroup_path: Option<String>,
    /// The container's root filesystem on the host (config.json's root.path, absolute).
    #[serde(default)]
    pub rootfs: Option<PathBuf>,
    #[serde(default)]
    pub poststart: Vec<Hook>,
    #[serde(default)]
    pub poststop: Vec<Hook>,
    /// Set in the provisional record `create` writes before the engine starts, gone from the
    /// final one: the container is "creating" while this process lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creating: Option<Creator>,
}

/// The `create` process building a container, by pid and start time (a recycled pid is not
/// mistaken for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creator {
    pub pid: i32,
    pub start_time: Option<u64>,
}

impl Creator {
    /// The current process.
    pub fn me() -> Creator {
        let pid = std::process::id() as i32;
        Creator {
            pid,
            start_time: process_start_time(pid),
        }
    }

    pub fn alive(&self) -> bool {
        self.start_time.is_some() && process_start_time(self.pid) == self.start_time
    }
}

/// OCI statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// The directory of all containers (`--root`).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Container ids become directory names: keep them to a safe alphabet, as runc does.
pub fn check_id(id: &str) -> Result<(), OciError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(OciError::InvalidId(id.to_string()))
    }
}

impl Store {
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub fn fifo(&self, id: &str) -> PathBuf {
        self.dir(id).join("exec.fifo")
    }

    /// Reserves `id`: its directory is created exclusively, so two creates cannot both win.
    pub fn reserve(&self, id: &str) -> Result<PathBuf, OciError> {
        check_id(id)?;
        fs::create_dir_all(&self.root)
            .map_err(OciError::io(format!("create {}", self.root.display())))?;
        let dir = self.dir(id);
        match fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(OciError::Exists(id.to_string()))
            }
            Err(e) => Err(OciError::io(format!("create {}", dir.display()))(e)),
        }
    }

    pub fn save(&self, record: &Record) -> Result<(), OciError> {
        state::write_json_atomic(&self.dir(&record.id).join("state.json"), record)
            .map_err(OciError::io("write state.json"))
    }

    /// Writes the provisional record of a create under way. Atomic (readers see it whole) but
    /// not synced: the final record replaces it within the create, and after a crash an empty
    /// one is what `delete --force` removes anyway.
    pub fn save_provisional(&self, record: &Record) -> Result<(), OciError> {
        state::write_json_atomic_with(
            &self.dir(&record.id).join("state.json"),
            record,
            state::Durability::Volatile,
        )
        .map_err(OciError::io("write state.json"))
    }

    pub fn load(&self, id: &str) -> Result<Record, OciError> {
        check_id(id)?;
        let path = self.dir(id).join("state.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(OciError::NotFound(id.to_string()));
            }
            Err(e) => return Err(OciError::io(format!("read {}", path.display()))(e)),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| OciError::Corrupt(format!("{}: {e}", path.display())))
    }

    pub fn remove(&self, id: &str) -> Result<(), OciError> {
        match fs::remove_dir_all(self.dir(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(OciError::io(format!("remove state of {id}"))(e)),
        }
    }

    /// Ids of every container with a state directory.
    pub fn ids(&self) -> Result<Vec<String>, OciError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(OciError::io("read the state root")(e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("state.json").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub fn status(&self, record: &Record) -> Status {
        if let Some(creator) = &record.creating {
            if creator.alive() {
                return Status::Creating;
            }
            // A create writes its final record before it exits: it may have done so since
            // `record` was read.
            if let Ok(fresh) = self.load(&record.id) {
                if fresh.creating.is_none() {
                    return self.status(&fresh);
                }
            }
            // A create that died half-way made nothing that could still become a container:
            // what it left (an init, a cgroup) is for `delete` to clear.
            return Status::Stopped;
        }
        if !init_alive(record) {
            return Status::Stopped;
        }
        if self.fifo(&record.id).exists() {
            return Status::Created;
        }
        let frozen = record
            .cgroup_path
            .as_deref()
            .and_then(|p| cgroups::open(&Layout::detect(), p).ok())
            .is_some_and(|c| c.is_frozen());
        if frozen {
            Status::Paused
        } else {
            Status::Running
        }
    }
}

/// Whether the record's init (pid and start time) is alive; a record without one has none.
pub fn init_alive(record: &Record) -> bool {
    record.pid > 0 && process_start_time(record.pid) == record.pid_start_time
}

/// The OCI `state` document.
pub fn state_json(record: &Record, status: Status) -> serde_json::Value {
    let mut v = serde_json::json!({
        "ociVersion": "1.2.0",
        "id": record.id,
        "status": status.as_str(),
        "bundle": record.bundle,
        "created": record.created.to_rfc3339(),
    });
    // The pid is required once created (runtime spec); while creating it is given once the
    // init exists.
    match status {
        Status::Stopped => v["pid"] = serde_json::json!(0),
        Status::Creating if record.pid <= 0 => {}
        _ => v["pid"] = serde_json::json!(record.pid),
    }
    if !record.annotations.is_empty() {
        v["annotations"] = serde_json::json!(record.annotations);
    }
    v
}

/// A container as `list --format json` shows it: its state, plus its rootfs and the owner of
/// its state directory (what runc's list gives).
pub fn list_json(record: &Record, status: Status, owner: &str) -> serde_json::Value {
    let mut v = state_json(record, status);
    v["rootfs"] = serde_json::json!(record.rootfs.as_deref().unwrap_or(Path::new("")));
    v["owner"] = serde_json::json!(owner);
    v
}

impl Store {
    /// The user owning the state directory of `id`, by name as the host's passwd has it, else
    /// `#UID` (runc's `list` OWNER).
    pub fn owner(&self, id: &str) -> String {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = fs::metadata(self.dir(id)) else {
            return String::new();
        };
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid())) {
            Ok(Some(user)) => user.name,
            _ => format!("#{}", meta.uid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        for good in ["a", "abc-123_x.y+z", "libpod-0123abcd"] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserve_is_exclusive_and_status_of_a_dead_pid_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.reserve("c1").unwrap();
        assert!(matches!(store.reserve("c1"), Err(OciError::Exists(_))));
        let record = Record {
            id: "c1".into(),
            bundle: "/b".into(),
            pid: i32::MAX - 1,
            pid_start_time: Some(1),
            created: Timestamp::now(),
            annotations: HashMap::new(),
            cgroup_path: None,
            rootfs: None,
            poststart: vec![],
            poststop: vec![],
            creating: None,
        };
        store.save(&record).unwrap();
        let loaded = store.load("c1").unwrap();
        assert_eq!(store.status(&loaded), Status::Stopped);
        assert_eq!(state_json(&loaded, Status::Stopped)["status"], "stopped");
        assert_eq!(store.ids().unwrap(), ["c1"]);
        store.remove("c1").unwrap();
        assert!(matches!(store.load("c1"), Err(OciError::NotFound(_))));
    }

    #[test]
    fn a_provisional_record_is_creating_while_its_creator_lives() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.reserve("c2").unwrap();
        let mut record = Record {
            id: "c2".into(),
            bundle: "/b".into(),
            pid: 0,
            pid_start_time: None,
            created: Timestamp::now(),
            annotations: HashMap::new(),
            cgroup_path: None,
            rootfs: None,
            poststart: vec![],
            poststop: vec![],
            creating: Some(Creator::me()),
        };
        store.save_provisional(&record).unwrap();
        let loaded = store.load("c2").unwrap();
        assert_eq!(store.status(&loaded), Status::Creating);
        let json = state_json(&loaded, Status::Creating);
        assert_eq!(json["status"], "creating");
        assert!(json.get("pid").is_none(), "no init yet, no pid: {json}");
        assert_eq!(store.ids().unwrap(), ["c2"]);
        // A creator that is gone (its start time no longer matches) left a stopped leftover.
        record.creating = Some(Creator {
            pid: std::process::id() as i32,
            start_time: Some(1),
        });
        store.save_provisional(&record).unwrap();
        let provisional = store.load("c2").unwrap();
        assert_eq!(store.status(&provisional), Status::Stopped);
        // A final record written after that read counts: its init (this test process stands
        // in) lives and there is no FIFO, so the container runs.
        let me = Creator::me();
        record.creating = None;
        record.pid = me.pid;
        record.pid_start_time = me.start_time;
        store.save(&record).unwrap();
        assert_eq!(store.status(&provisional), Status::Running);
    }
}
