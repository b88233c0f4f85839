//! `wait` on a container that removes itself (`run --rm`): with no daemon to remember the exit
//! code, whoever removes a container's directory first tells the registered waiters.
//!
//! A waiter is a file `waiters/<id>.<pid>` under the state root. `wait` registers under the
//! global lock after checking the record still exists; the removers (the owner's finalize of a
//! `--rm` container, `rm`) write the exit code into every such file under the same lock, then
//! delete the directory. So a waiter either sees the record or finds its code: never neither.
//! Files of waiters that died (killed `wait`) are pruned whenever a container's waiters are told.

use super::{StateError, StateStore, io_err};
use std::fs;
use std::path::PathBuf;

/// A registered `wait`; its file goes when it is dropped.
#[derive(Debug)]
pub struct Waiter {
    path: PathBuf,
}

impl Waiter {
    /// The code written by whoever removed the container, once that happened.
    pub fn exit_code(&self) -> Option<i32> {
        fs::read_to_string(&self.path).ok()?.trim().parse().ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl StateStore {
    fn waiters_dir(&self) -> PathBuf {
        self.root.join("waiters")
    }

    /// Registers the calling process as a waiter for `id`. The caller holds the global lock
    /// and has just seen the container's record.
    pub fn register_waiter(&self, id: &str) -> Result<Waiter, StateError> {
        let dir = self.waiters_dir();
        fs::create_dir_all(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let path = dir.join(format!("{id}.{}", std::process::id()));
        fs::write(&path, b"").map_err(io_err(format!("cannot create {}", path.display())))?;
        Ok(Waiter { path })
    }

    /// Writes `code` for every live waiter of `id` (the caller holds the global lock and is
    /// about to remove the container). Best effort: a waiter that cannot be told reports the
    /// code it last saw.
    pub fn tell_waiters(&self, id: &str, code: i32) {
        let Ok(entries) = fs::read_dir(self.waiters_dir()) else {
            return;
        };
        let prefix = format!("{id}.");
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            let result = if process_exists(pid) {
                fs::write(entry.path(), code.to_string())
            } else {
                fs::remove_file(entry.path())
            };
            if let Err(e) = result {
                log::warn!("cannot tell waiter {pid} of container {id}: {e}");
            }
        }
    }
}

fn process_exists(pid: i32) -> bool {
    // Signal 0: permission and existence check only.
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e != nix::errno::Errno::ESRCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_told_waiter_reads_the_code_and_dead_waiters_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let waiter = store.register_waiter("abc").unwrap();
        let other = store.register_waiter("abd").unwrap();
        assert_eq!(waiter.exit_code(), None);
        // A waiter that was killed (no such pid) leaves a file behind.
        let dead = store.waiters_dir().join(format!("abc.{}", i32::MAX));
        fs::write(&dead, b"").unwrap();

        store.tell_waiters("abc", 3);
        assert_eq!(waiter.exit_code(), Some(3));
        assert_eq!(other.exit_code(), None, "another container's waiter");
        assert!(!dead.exists());

        let path = waiter.path.clone();
        drop(waiter);
        assert!(!path.exists(), "a waiter removes its file when done");
    }
}
