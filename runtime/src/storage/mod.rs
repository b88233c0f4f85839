//! Per-container storage: the writable layer (`upper/`), overlayfs' scratch dir (`work/`) and
//! the rootfs mount point (`merged/`) inside the container's directory.
//!
//! The overlay itself is mounted by the engine inside the container's mount namespace (see
//! `engine::OVERLAY_ANNOTATION`); this module only prepares directories and the mount data.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("path {0:?} cannot be used in an overlay mount: it contains ',' or ':'")]
    UnusablePath(PathBuf),
    #[error("the overlay mount options are {0} bytes long, more than the kernel's 4095")]
    TooLong(usize),
}

/// The writable layer of one container.
#[derive(Debug, Clone)]
pub struct ContainerLayer {
    dir: PathBuf,
    /// Image layers, bottom first.
    lower: Vec<PathBuf>,
}

const ROOTFS: &str = "merged";

impl ContainerLayer {
    /// Creates `upper/`, `work/` and `merged/` in the container directory `dir`.
    pub fn create(dir: &Path, lower: &[PathBuf]) -> io::Result<ContainerLayer> {
        for sub in ["upper", "work", ROOTFS] {
            match fs::DirBuilder::new().mode(0o755).create(dir.join(sub)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ContainerLayer {
            dir: dir.to_path_buf(),
            lower: lower.to_vec(),
        })
    }

    /// The rootfs mount point relative to the container directory (the spec's root.path).
    pub fn rootfs_relative(&self) -> PathBuf {
        PathBuf::from(ROOTFS)
    }

    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// overlayfs mount data: `lowerdir=TOP:…:BOTTOM,upperdir=…,workdir=…`.
    pub fn overlay_data(&self) -> Result<String, StorageError> {
        let upper = self.upper();
        let work = self.dir.join("work");
        let all = self.lower.iter().chain([&upper, &work]);
        for path in all {
            let text = path.to_string_lossy();
            if text.contains(',') || text.contains(':') {
                return Err(StorageError::UnusablePath(path.clone()));
            }
        }
        let lower: Vec<String> = self
            .lower
            .iter()
            .rev()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        // mount(2) copies at most one page of options.
        if data.len() > 4095 {
            return Err(StorageError::TooLong(data.len()));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_data_lists_the_top_layer_first() {
        let dir = tempfile::tempdir().unwrap();
        let layer =
            ContainerLayer::create(dir.path(), &["/l/bottom".into(), "/l/top".into()]).unwrap();
        let d = dir.path().display();
        assert_eq!(
            layer.overlay_data().unwrap(),
            format!("lowerdir=/l/top:/l/bottom,upperdir={d}/upper,workdir={d}/work")
        );
        assert!(dir.path().join("merged").is_dir());
    }

    #[test]
    fn refuses_paths_overlay_cannot_parse() {
        let dir = tempfile::tempdir().unwrap();
        let layer = ContainerLayer::create(dir.path(), &["/a,b".into()]).unwrap();
        assert!(matches!(
            layer.overlay_data(),
            Err(StorageError::UnusablePath(_))
        ));
    }
}
