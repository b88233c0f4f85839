//! Advisory locks (flock) on files under `<root>/locks/`.
//!
//! The global lock serialises decisions that must be unique across concurrent carton processes:
//! container names, image references, "is this image in use". It is held for milliseconds,
//! never while a container runs. flock locks die with the process, so a crashed command never
//! leaves a stale lock behind.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// An exclusive flock held until dropped.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

impl LockGuard {
    /// Blocks until the exclusive lock on `path` is held; creates the file (and its directory).
    pub fn exclusive(path: &Path) -> io::Result<LockGuard> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        loop {
            // SAFETY: flock on a valid, owned fd.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(LockGuard { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_can_be_taken_again_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/global.lock");
        drop(LockGuard::exclusive(&path).unwrap());
        drop(LockGuard::exclusive(&path).unwrap());
        assert!(path.exists());
    }
}
