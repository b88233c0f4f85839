//! Snapshots of directory trees, for "byte-identical before and after" assertions.
//!
//! A snapshot records, for every path below a root (the root included, as `.`): its type, mode
//! (permission and special bits), owner, and for files the size and sha256 of the content, for
//! symlinks the target, for devices the device number. Timestamps are left out. The walk never
//! follows symlinks and never crosses into another filesystem (a mount point is recorded as such),
//! so a leaked mount under the tree shows up instead of being walked.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File {
        size: u64,
        sha256: String,
    },
    Symlink {
        target: PathBuf,
    },
    CharDevice {
        rdev: u64,
    },
    BlockDevice {
        rdev: u64,
    },
    Fifo,
    Socket,
    /// A directory on another filesystem than the snapshot's root: not descended into.
    MountPoint {
        dev: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub root: PathBuf,
    /// Relative paths (the root itself is `.`). Empty when the root does not exist.
    pub entries: BTreeMap<PathBuf, Entry>,
}

impl Snapshot {
    /// Walks `root`. A missing root gives an empty snapshot.
    pub fn of(root: &Path) -> Snapshot {
        let mut entries = BTreeMap::new();
        if let Ok(meta) = std::fs::symlink_metadata(root) {
            walk(root, Path::new("."), &meta, meta.dev(), &mut entries);
        }
        Snapshot {
            root: root.to_path_buf(),
            entries,
        }
    }

    pub fn get(&self, rel: impl AsRef<Path>) -> Option<&Entry> {
        self.entries.get(rel.as_ref())
    }

    pub fn contains(&self, rel: impl AsRef<Path>) -> bool {
        self.entries.contains_key(rel.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Human-readable differences from `self` (before) to `later` (after).
    pub fn diff(&self, later: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (path, before) in &self.entries {
            match later.entries.get(path) {
                None => out.push(format!("removed  {}: {}", path.display(), describe(before))),
                Some(after) if after != before => out.push(format!(
                    "changed  {}: {} -> {}",
                    path.display(),
                    describe(before),
                    describe(after)
                )),
                Some(_) => {}
            }
        }
        for (path, after) in &later.entries {
            if !self.entries.contains_key(path) {
                out.push(format!("added    {}: {}", path.display(), describe(after)));
            }
        }
        out
    }

    /// Panics with the differences when `later` differs from `self`.
    #[track_caller]
    pub fn assert_unchanged(&self, later: &Snapshot, what: &str) {
        let diff = self.diff(later);
        assert!(
            diff.is_empty(),
            "{what}: {} changed ({} differences):\n  {}",
            self.root.display(),
            diff.len(),
            diff.join("\n  ")
        );
    }
}

fn describe(e: &Entry) -> String {
    let kind = match &e.kind {
        Kind::Dir => "dir".to_string(),
        Kind::File { size, sha256 } => format!("file {size} bytes sha256 {}", &sha256[..12]),
        Kind::Symlink { target } => format!("symlink -> {}", target.display()),
        Kind::CharDevice { rdev } => format!("char device {rdev:#x}"),
        Kind::BlockDevice { rdev } => format!("block device {rdev:#x}"),
        Kind::Fifo => "fifo".into(),
        Kind::Socket => "socket".into(),
        Kind::MountPoint { dev } => format!("mount point (dev {dev:#x})"),
    };
    format!("{kind} mode {:04o} owner {}:{}", e.mode, e.uid, e.gid)
}

fn walk(
    abs: &Path,
    rel: &Path,
    meta: &std::fs::Metadata,
    root_dev: u64,
    out: &mut BTreeMap<PathBuf, Entry>,
) {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        if meta.dev() != root_dev {
            Kind::MountPoint { dev: meta.dev() }
        } else {
            Kind::Dir
        }
    } else if ft.is_file() {
        let sha256 = match std::fs::read(abs) {
            Ok(data) => crate::host::sha256_hex(&data),
            Err(e) => format!("unreadable: {e}"),
        };
        Kind::File {
            size: meta.len(),
            sha256,
        }
    } else if ft.is_symlink() {
        Kind::Symlink {
            target: std::fs::read_link(abs).unwrap_or_default(),
        }
    } else if ft.is_char_device() {
        Kind::CharDevice { rdev: meta.rdev() }
    } else if ft.is_block_device() {
        Kind::BlockDevice { rdev: meta.rdev() }
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let descend = kind == Kind::Dir;
    out.insert(
        rel.to_path_buf(),
        Entry {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        },
    );
    if !descend {
        return;
    }
    let Ok(dir) = std::fs::read_dir(abs) else {
        return;
    };
    let mut children: Vec<_> = dir.filter_map(Result::ok).collect();
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let child_abs = child.path();
        // Entries that vanish between listing and stat are not part of the tree.
        let Ok(child_meta) = std::fs::symlink_metadata(&child_abs) else {
            continue;
        };
        let child_rel = if rel == Path::new(".") {
            PathBuf::from(child.file_name())
        } else {
            rel.join(child.file_name())
        };
        walk(&child_abs, &child_rel, &child_meta, root_dev, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn detects_content_mode_and_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, "one").unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("l")).unwrap();
        let s0 = Snapshot::of(dir.path());
        assert!(s0.diff(&Snapshot::of(dir.path())).is_empty());
        assert!(s0.contains("l") && s0.contains("."));

        std::fs::write(&f, "two").unwrap(); // same size, other content
        let s1 = Snapshot::of(dir.path());
        assert_eq!(s0.diff(&s1).len(), 1, "{:?}", s0.diff(&s1));

        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let s2 = Snapshot::of(dir.path());
        let d = s1.diff(&s2);
        assert!(d.iter().any(|l| l.starts_with("changed  a")), "{d:?}");
        assert!(d.iter().any(|l| l.starts_with("added    d")), "{d:?}");
    }

    #[test]
    fn missing_root_is_empty() {
        assert!(Snapshot::of(Path::new("/nonexistent/carton-conf")).is_empty());
    }
}
