//! What carton-runtime keeps about a container between its commands (`<root>/<id>/`):
//! `state.json` (pid, bundle, cgroup, the hooks run after create) and `exec.fifo` while the
//! container waits for `start`. The status is derived, never stored: from whether the init
//! lives, whether its FIFO is still there, and whether its cgroup is frozen.

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
    #[serde(default)]
    pub poststart: Vec<Hook>,
    #[serde(default)]
    pub poststop: Vec<Hook>,
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
        let alive = record.pid > 0 && process_start_time(record.pid) == record.pid_start_time;
        if !alive {
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

/// The OCI `state` document.
pub fn state_json(record: &Record, status: Status) -> serde_json::Value {
    let mut v = serde_json::json!({
        "ociVersion": "1.2.0",
        "id": record.id,
        "status": status.as_str(),
        "bundle": record.bundle,
        "created": record.created.to_rfc3339(),
    });
    if status != Status::Stopped {
        v["pid"] = serde_json::json!(record.pid);
    } else {
        v["pid"] = serde_json::json!(0);
    }
    if !record.annotations.is_empty() {
        v["annotations"] = serde_json::json!(record.annotations);
    }
    v
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
            poststart: vec![],
            poststop: vec![],
        };
        store.save(&record).unwrap();
        let loaded = store.load("c1").unwrap();
        assert_eq!(store.status(&loaded), Status::Stopped);
        assert_eq!(state_json(&loaded, Status::Stopped)["status"], "stopped");
        assert_eq!(store.ids().unwrap(), ["c1"]);
        store.remove("c1").unwrap();
        assert!(matches!(store.load("c1"), Err(OciError::NotFound(_))));
    }
}
