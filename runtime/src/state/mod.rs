//! Container records on disk, and the locks and atomic writes that keep them consistent.
//!
//! Layout under the state root (`--root`):
//! ```text
//! containers/<id>/state.json   the record (this module)
//! containers/<id>/config.json  the OCI spec (written by `container`)
//! locks/global.lock            names, image references, image-in-use decisions
//! waiters/<id>.<pid>           a `wait` for a container that may remove itself (waiters.rs)
//! ```

mod atomic;
mod lock;
mod names;
mod record;
mod time;
mod waiters;

pub use atomic::{
    Durability, write_atomic, write_atomic_with, write_json_atomic, write_json_atomic_with,
};
pub use lock::LockGuard;
pub use names::{generate_name, validate_name};
pub use record::{ContainerRecord, Status, process_start_time};
pub use time::Timestamp;
pub use waiters::Waiter;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("container reference {reference:?} is ambiguous: it matches {count} containers")]
    Ambiguous { reference: String, count: usize },
    #[error(
        "the record of container {id} is unreadable (corrupt): {source}; `rm -f {id}` removes it"
    )]
    Corrupt {
        id: String,
        source: serde_json::Error,
    },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StateError {
    move |source| StateError::Io {
        context: context.into(),
        source,
    }
}

/// The container half of a state root.
#[derive(Debug, Clone)]
pub struct StateStore {
    root: PathBuf,
}

impl StateStore {
    pub fn new(root: &Path) -> StateStore {
        StateStore {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    /// The lock under which names are reserved and images are checked for use.
    pub fn global_lock(&self) -> Result<LockGuard, StateError> {
        let path = self.root.join("locks").join("global.lock");
        LockGuard::exclusive(&path).map_err(io_err(format!("cannot lock {}", path.display())))
    }

    /// Every container with a readable record, oldest first. Directories without a record (a
    /// `run` that crashed before writing one) are skipped; unreadable records are returned
    /// apart, so that one broken container never hides the others.
    pub fn list_checked(&self) -> Result<(Vec<ContainerRecord>, Vec<StateError>), StateError> {
        let mut records = Vec::new();
        let mut broken = Vec::new();
        for id in self.container_ids()? {
            match self.load(&id) {
                Ok(record) => records.push(record),
                Err(StateError::NotFound(_)) => continue,
                Err(e @ StateError::Corrupt { .. }) => broken.push(e),
                Err(e) => return Err(e),
            }
        }
        records.sort_by_key(|r| r.created);
        Ok((records, broken))
    }

    /// [`StateStore::list_checked`] without the broken ones.
    pub fn list(&self) -> Result<Vec<ContainerRecord>, StateError> {
        Ok(self.list_checked()?.0)
    }

    /// Names of the container directories.
    fn container_ids(&self) -> Result<Vec<String>, StateError> {
        let dir = self.containers_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("cannot read {}", dir.display()))(e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(format!("cannot read {}", dir.display())))?;
            ids.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(ids)
    }

    pub fn load(&self, id: &str) -> Result<ContainerRecord, StateError> {
        let path = self.container_dir(id).join("state.json");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_string()));
            }
            Err(e) => return Err(io_err(format!("cannot read {}", path.display()))(e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
            id: id.to_string(),
            source,
        })
    }

    /// Writes the record atomically. The container directory must exist: a record is never
    /// resurrected for a container that `rm` already removed.
    pub fn save(&self, record: &ContainerRecord) -> Result<(), StateError> {
        let dir = self.container_dir(&record.id);
        if !dir.is_dir() {
            return Err(StateError::NotFound(record.id.clone()));
        }
        let durability = Durability::for_container(record.auto_remove);
        write_json_atomic_with(&dir.join("state.json"), record, durability)
            .map_err(io_err(format!("cannot write record of {}", record.id)))
    }

    /// Loads, changes and saves a record under the global lock.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord, StateError> {
        let _lock = self.global_lock()?;
        self.update_locked(id, change)
    }

    /// [`StateStore::update`] for a caller that already holds the global lock.
    pub fn update_locked(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord, StateError> {
        let mut record = self.load(id)?;
        change(&mut record);
        self.save(&record)?;
        Ok(record)
    }

    /// Finds a container by full id, name, or unique id prefix (docker's rules, in that order).
    /// A container whose record is unreadable is found by id or id prefix and reported as
    /// [`StateError::Corrupt`].
    pub fn resolve(&self, reference: &str) -> Result<ContainerRecord, StateError> {
        let (records, broken) = self.list_checked()?;
        if let Some(r) = records.iter().find(|r| r.id == reference) {
            return Ok(r.clone());
        }
        if let Some(r) = records.iter().find(|r| r.name == reference) {
            return Ok(r.clone());
        }
        let is_hex = !reference.is_empty() && reference.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex {
            return Err(StateError::NotFound(reference.to_string()));
        }
        let matches: Vec<&ContainerRecord> = records
            .iter()
            .filter(|r| r.id.starts_with(reference))
            .collect();
        let broken_matches: Vec<StateError> = broken
            .into_iter()
            .filter(|e| matches!(e, StateError::Corrupt { id, .. } if id.starts_with(reference)))
            .collect();
        match (matches.as_slice(), broken_matches.len()) {
            ([one], 0) => Ok((*one).clone()),
            ([], 1) => Err(broken_matches.into_iter().next().expect("one")),
            ([], 0) => Err(StateError::NotFound(reference.to_string())),
            (many, b) => Err(StateError::Ambiguous {
                reference: reference.to_string(),
                count: many.len() + b,
            }),
        }
    }

    /// Deletes the container's directory and everything in it (record, spec, layer).
    pub fn remove_dir(&self, id: &str) -> Result<(), StateError> {
        let dir = self.container_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("cannot remove {}", dir.display()))(e)),
        }
    }
}

/// A new random container id: 64 lowercase hex characters, never all digits (docker avoids
/// those so that a short id is never mistaken for a number).
pub fn generate_id() -> String {
    loop {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if !id[..12].bytes().all(|b| b.is_ascii_digit()) {
            return id;
        }
    }
}

pub(crate) fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most `len` bytes into the valid buffer.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            panic!("getrandom failed: {}", io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            name: name.into(),
            image: "busybox".into(),
            image_id: "sha256:00".into(),
            command: vec!["true".into()],
            created: Timestamp::now(),
            status: Status::Created,
            pid: None,
            pid_start_time: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            oom_killed: false,
            owner_pid: None,
            owner_start_time: None,
            auto_remove: false,
            network: "none".into(),
            publish: Vec::new(),
            attachment: None,
        }
    }

    fn store_with(records: &[ContainerRecord]) -> (tempfile::TempDir, StateStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        for r in records {
            fs::create_dir_all(store.container_dir(&r.id)).unwrap();
            store.save(r).unwrap();
        }
        (dir, store)
    }

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let a = generate_id();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, generate_id());
    }

    #[test]
    fn resolves_by_id_name_and_unique_prefix() {
        let a = record(&format!("abc1{}", "0".repeat(60)), "web");
        let b = record(&format!("abc2{}", "0".repeat(60)), "db");
        let (_dir, store) = store_with(&[a.clone(), b.clone()]);
        assert_eq!(store.resolve(&a.id).unwrap().id, a.id);
        assert_eq!(store.resolve("db").unwrap().id, b.id);
        assert_eq!(store.resolve("abc1").unwrap().id, a.id);
        assert!(matches!(
            store.resolve("abc"),
            Err(StateError::Ambiguous { count: 2, .. })
        ));
        assert!(matches!(store.resolve("zzz"), Err(StateError::NotFound(_))));
    }

    #[test]
    fn save_refuses_a_removed_container() {
        let a = record(&"f".repeat(64), "gone");
        let (_dir, store) = store_with(std::slice::from_ref(&a));
        store.remove_dir(&a.id).unwrap();
        assert!(matches!(store.save(&a), Err(StateError::NotFound(_))));
        assert!(store.list().unwrap().is_empty());
    }
}
