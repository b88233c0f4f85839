//! Crash-safe file replacement: write a sibling temp file, fsync it, rename it over the target,
//! fsync the directory. A reader sees either the old or the new content, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Whether a replacement must survive a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync of the file and of its directory: after a crash, the old or the new content.
    Durable,
    /// Rename only: readers still see the old or the new content, but a crash may leave the
    /// file empty. For files of containers removed when they exit (`--rm`): after a crash they
    /// are garbage anyway (`rm -f` removes an unreadable record), and the fsyncs were a
    /// visible part of a short container's start-to-exit time.
    Volatile,
}

impl Durability {
    /// How a container's own files are written: volatile for a `--rm` container.
    pub fn for_container(auto_remove: bool) -> Durability {
        if auto_remove {
            Durability::Volatile
        } else {
            Durability::Durable
        }
    }
}

/// Replaces `path` with `contents` atomically and durably.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomic_with(path, contents, Durability::Durable)
}

/// Replaces `path` with `contents` atomically, as durable as asked.
pub fn write_atomic_with(path: &Path, contents: &[u8], durability: Durability) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        file.write_all(contents)?;
        if durability == Durability::Volatile {
            return fs::rename(&tmp, path);
        }
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Serializes `value` as pretty JSON and writes it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    write_json_atomic_with(path, value, Durability::Durable)
}

/// [`write_json_atomic`], as durable as asked.
pub fn write_json_atomic_with<T: serde::Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic_with(path, &bytes, durability)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state.json");
        write_atomic(&target, b"one").unwrap();
        write_atomic(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        let entries: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1);
        write_atomic_with(&target, b"three", Durability::Volatile).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"three");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
