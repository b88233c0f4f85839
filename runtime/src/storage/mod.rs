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

    /// overlayfs mount data: `lowerdir=TOP:…:BOTTOM,upperdir=…,workdir=…,redirect_dir=off,
    /// metacopy=off`.
    ///
    /// Lower layers are named by their short links (`images/l/<12 hex>`, see
    /// `image::short_layer_path`) where the store has them, so that images of up to ~100
    /// layers fit the kernel's one-page limit on mount options.
    ///
    /// `redirect_dir=off` and `metacopy=off` keep `upper/` self-contained, which `commit`
    /// relies on: with redirects a renamed lower directory is only a pointer into the lower
    /// layers, and with metacopy a chmod'ed file is copied up without its data. (They are
    /// the defaults of most kernels; saying so makes carton independent of the host's.)
    pub fn overlay_data(&self) -> Result<String, StorageError> {
        let upper = self.upper();
        let work = self.dir.join("work");
        let lower: Vec<PathBuf> = self
            .lower
            .iter()
            .rev()
            .map(|p| crate::image::short_layer_path(p))
            .collect();
        for path in lower.iter().chain([&upper, &work]) {
            let text = path.to_string_lossy();
            if text.contains(',') || text.contains(':') {
                return Err(StorageError::UnusablePath(path.clone()));
            }
        }
        let lower: Vec<String> = lower
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={},{SELF_CONTAINED_UPPER}",
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

/// See [`ContainerLayer::overlay_data`].
const SELF_CONTAINED_UPPER: &str = "redirect_dir=off,metacopy=off";

/// Read-only overlay data showing a container's files as they are now: its `upper/` as the
/// topmost lower layer over the image layers, taken from the container's own mount data
/// (`overlay_data`). Used to export a stopped container without an upper or work dir.
pub fn read_only_view(overlay_data: &str) -> Option<String> {
    let mut lower = None;
    let mut upper = None;
    for option in overlay_data.split(',') {
        if let Some(v) = option.strip_prefix("lowerdir=") {
            lower = Some(v);
        } else if let Some(v) = option.strip_prefix("upperdir=") {
            upper = Some(v);
        }
    }
    Some(format!("lowerdir={}:{}", upper?, lower?))
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
            format!(
                "lowerdir=/l/top:/l/bottom,upperdir={d}/upper,workdir={d}/work,\
                 redirect_dir=off,metacopy=off"
            )
        );
        assert_eq!(
            read_only_view(&layer.overlay_data().unwrap()).unwrap(),
            format!("lowerdir={d}/upper:/l/top:/l/bottom")
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
