//! The on-disk OCI image layout: where things live, reading and writing blobs and index.json,
//! staging directories for work in progress, and removal of whole trees.

use super::ImageError;
use super::digest::{is_sha256_hex, sha256_hex};
use super::split::Reassembly;
use crate::state::{LockGuard, write_atomic};
use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::ImageIndex;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Extension of a layer's tar-split record next to its directory.
pub(crate) const RECORD_EXT: &str = "split";
const OCI_LAYOUT: &[u8] = b"{\"imageLayoutVersion\":\"1.0.0\"}\n";
/// Directory of the short layer links, next to `layers/`.
const LINKS_DIR: &str = "l";
/// Hex digits of a layer's diff_id in its short link name: 48 bits, and a clash only costs
/// the longer path.
const SHORT_LEN: usize = 12;
/// A staging directory untouched for this long, whose lock nobody holds, is a crashed import.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Paths of the store under `<state_root>/images/`.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
    lock: PathBuf,
}

impl Layout {
    pub(crate) fn new(state_root: &Path) -> Layout {
        Layout {
            root: state_root.join("images"),
            lock: state_root.join("locks").join("images.lock"),
        }
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub(crate) fn blob_path(&self, hex: &str) -> PathBuf {
        self.blobs_dir().join(hex)
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub(crate) fn layer_dir(&self, diff_id_hex: &str) -> PathBuf {
        self.layers_dir().join(diff_id_hex)
    }

    pub(crate) fn layer_sidecar(&self, diff_id_hex: &str) -> PathBuf {
        self.layers_dir().join(format!("{diff_id_hex}.json"))
    }

    /// The tar-split record of a plain layer stored without its blob file (`split.rs`).
    pub(crate) fn layer_record(&self, diff_id_hex: &str) -> PathBuf {
        self.layers_dir()
            .join(format!("{diff_id_hex}.{RECORD_EXT}"))
    }

    /// Whether the store holds the blob `hex`: as a file, or as a layer's record (with the
    /// unpacked layer it refers to).
    pub(crate) fn has_blob(&self, hex: &str) -> bool {
        self.blob_path(hex).exists()
            || (self.layer_record(hex).exists() && self.layer_dir(hex).is_dir())
    }

    /// Opens a layer blob for reading, whichever way it is stored: (bytes, length). The
    /// reader does not check the digest: the caller hashes what it reads.
    pub(crate) fn open_layer_blob(&self, hex: &str) -> Result<(Box<dyn Read>, u64), ImageError> {
        let path = self.blob_path(hex);
        match File::open(&path) {
            Ok(file) => {
                let size = file
                    .metadata()
                    .map_err(ImageError::io(format!("cannot read {}", path.display())))?
                    .len();
                return Ok((Box::new(file), size));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io(format!("cannot read {}", path.display()))(e)),
        }
        let record = self.layer_record(hex);
        if !is_sha256_hex(hex) || !record.exists() {
            return Err(ImageError::Corrupt(format!("blob sha256:{hex} is missing")));
        }
        let (stream, size) = Reassembly::open(&record, &self.layer_dir(hex))?;
        Ok((Box::new(stream), size))
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `l/`: short symlinks to the layer directories, for overlay mount options.
    pub(crate) fn links_dir(&self) -> PathBuf {
        self.root.join(LINKS_DIR)
    }

    /// Makes `l/<short>` point to `layers/<diff_id hex>` unless the name is taken by another
    /// layer (then that layer is mounted by its full path: see [`short_layer_path`]).
    pub(crate) fn ensure_short_link(&self, diff_id_hex: &str) -> Result<(), ImageError> {
        let link = self.links_dir().join(short_name(diff_id_hex));
        let target = link_target(diff_id_hex);
        match fs::read_link(&link) {
            Ok(existing) if existing == target => return Ok(()),
            Ok(existing) if self.links_dir().join(&existing).exists() => {
                log::debug!(
                    "short link {} is taken by {}",
                    link.display(),
                    existing.display()
                );
                return Ok(());
            }
            // Dangling (its layer was collected): reuse the name.
            Ok(_) => {
                let _ = fs::remove_file(&link);
            }
            Err(_) => {}
        }
        match std::os::unix::fs::symlink(&target, &link) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(ImageError::io(format!("cannot create {}", link.display()))(
                e,
            )),
        }
    }

    /// Removes the short links that do not point to a layer directory any more.
    pub(crate) fn remove_dangling_links(&self) -> Result<(), ImageError> {
        let entries = match fs::read_dir(self.links_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ImageError::io("cannot read the short links")(e)),
        };
        for entry in entries.flatten() {
            let link = entry.path();
            if fs::metadata(&link).is_err() {
                fs::remove_file(&link)
                    .map_err(ImageError::io(format!("cannot remove {}", link.display())))?;
            }
        }
        Ok(())
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Serialises index.json changes and garbage collection across carton processes.
    pub(crate) fn lock(&self) -> Result<LockGuard, ImageError> {
        LockGuard::exclusive(&self.lock).map_err(ImageError::io(format!(
            "cannot lock {}",
            self.lock.display()
        )))
    }

    /// Creates the directories, `oci-layout` and an empty `index.json` where missing.
    pub(crate) fn ensure(&self) -> Result<(), ImageError> {
        for dir in [
            self.blobs_dir(),
            self.layers_dir(),
            self.tmp_dir(),
            self.links_dir(),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(ImageError::io(format!("cannot create {}", dir.display())))?;
        }
        let layout = self.root.join("oci-layout");
        let index = self.index_path();
        if layout.exists() && index.exists() {
            return Ok(());
        }
        // Checked again under the lock: never overwrite an index another process just wrote.
        let _lock = self.lock()?;
        if !layout.exists() {
            write_atomic(&layout, OCI_LAYOUT)
                .map_err(ImageError::io(format!("cannot write {}", layout.display())))?;
        }
        if !index.exists() {
            self.write_index(&ImageIndex::default())?;
        }
        Ok(())
    }

    pub(crate) fn read_index(&self) -> Result<ImageIndex, ImageError> {
        let path = self.index_path();
        let bytes =
            fs::read(&path).map_err(ImageError::io(format!("cannot read {}", path.display())))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Corrupt(format!("{}: {e}", path.display())))
    }

    /// Replaces index.json atomically (temp file, fsync, rename). Call with the lock held.
    pub(crate) fn write_index(&self, index: &ImageIndex) -> Result<(), ImageError> {
        let path = self.index_path();
        let mut bytes = serde_json::to_vec_pretty(index)
            .map_err(|e| ImageError::Corrupt(format!("cannot serialise the index: {e}")))?;
        bytes.push(b'\n');
        write_atomic(&path, &bytes)
            .map_err(ImageError::io(format!("cannot write {}", path.display())))
    }

    /// Reads a blob and checks that its content still matches its name.
    pub(crate) fn read_blob(&self, hex: &str) -> Result<Vec<u8>, ImageError> {
        if !is_sha256_hex(hex) {
            return Err(ImageError::Corrupt(format!("invalid blob digest {hex:?}")));
        }
        let path = self.blob_path(hex);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::Corrupt(format!("blob sha256:{hex} is missing")),
            _ => ImageError::io(format!("cannot read {}", path.display()))(e),
        })?;
        if sha256_hex(&bytes) != hex {
            return Err(ImageError::Corrupt(format!(
                "blob sha256:{hex} does not match its digest"
            )));
        }
        Ok(bytes)
    }
}

/// A private directory under `tmp/` for one operation, removed when dropped (whatever
/// happened). It holds an flock on its `lock` file so a sweep can tell live from crashed.
pub(crate) struct Staging {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Staging {
    pub(crate) fn new(tmp_dir: &Path) -> Result<Staging, ImageError> {
        let mut random = [0u8; 8];
        crate::state::fill_random(&mut random);
        let path = tmp_dir.join(super::digest::hex(&random));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(ImageError::io(format!("cannot create {}", path.display())))?;
        let lock_path = path.join("lock");
        let lock = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock_path)
            .and_then(|file| {
                Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e.into())
            });
        match lock {
            Ok(lock) => Ok(Staging { path, _lock: lock }),
            Err(e) => {
                let _ = remove_tree(&path);
                Err(ImageError::io(format!(
                    "cannot lock {}",
                    lock_path.display()
                ))(e))
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.path) {
            log::warn!(
                "cannot remove staging directory {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Removes staging directories left by crashed commands: older than a minute and with no
/// live holder of their lock. Call with the store lock held.
pub(crate) fn sweep_stale_staging(tmp_dir: &Path) -> Result<(), ImageError> {
    let entries = match fs::read_dir(tmp_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io(format!("cannot read {}", tmp_dir.display()))(e)),
    };
    let now = SystemTime::now();
    for entry in entries {
        let entry = entry.map_err(ImageError::io(format!("cannot read {}", tmp_dir.display())))?;
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if age < STALE_AFTER {
            continue;
        }
        // A successful probe releases the lock at once; that is fine, as a staging directory
        // is never reused once its creator is gone.
        let held_by_someone = match File::open(path.join("lock")) {
            Ok(file) => Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err(),
            Err(_) => false,
        };
        if !held_by_someone {
            log::info!("removing stale staging directory {}", path.display());
            remove_tree(&path)
                .map_err(ImageError::io(format!("cannot remove {}", path.display())))?;
        }
    }
    Ok(())
}

/// Removes a file or a directory tree without following symlinks. Directories without
/// write permission (an unpacked 0555 dir, when not root) are opened up and retried.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path)?;
            fs::remove_dir_all(path)
        }
        other => other,
    }
}

fn make_dirs_writable(dir: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700))?;
    for entry in fs::read_dir(dir)? {
        make_dirs_writable(&entry?.path())?;
    }
    Ok(())
}

/// fsync of a directory, so that renames into it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ImageError::io(format!("cannot sync {}", dir.display())))
}

/// Moves a staged file or directory into its content-addressed place, unless identical
/// content is already there. Returns whether it was moved (i.e. is new in the store).
pub(crate) fn install(staged: &Path, target: &Path) -> Result<bool, ImageError> {
    if fs::symlink_metadata(target).is_ok() {
        return Ok(false);
    }
    fs::rename(staged, target).map_err(ImageError::io(format!(
        "cannot move {} to {}",
        staged.display(),
        target.display()
    )))?;
    Ok(true)
}

/// The sidecar `layers/<diff_id hex>.json`: facts about an unpacked layer that would be
/// costly to recompute (walking the tree). Kept outside the layer dir, which is pure rootfs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct LayerInfo {
    /// Bytes of regular file content.
    pub(crate) size: u64,
}

impl LayerInfo {
    pub(crate) fn read(path: &Path) -> Result<LayerInfo, ImageError> {
        let bytes =
            fs::read(path).map_err(ImageError::io(format!("cannot read {}", path.display())))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Corrupt(format!("{}: {e}", path.display())))
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of one integer cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn short_name(diff_id_hex: &str) -> &str {
    &diff_id_hex[..diff_id_hex.len().min(SHORT_LEN)]
}

fn link_target(diff_id_hex: &str) -> PathBuf {
    Path::new("..").join("layers").join(diff_id_hex)
}

/// The path under which overlay should mount the layer directory `layer_dir`
/// (`<images>/layers/<hex>`): its short link `<images>/l/<12 hex>` when that link exists and
/// points to exactly this layer, else `layer_dir` itself.
///
/// Why: overlay's mount options must fit in one page (4095 bytes). With the full paths
/// (`/var/lib/carton/images/layers/` + 64 hex) about 40 layers fit; with the links, about 100
/// (docker caps images at 125 layers). The kernel follows the symlinks when it parses
/// `lowerdir=`; the mount itself is the same.
pub fn short_layer_path(layer_dir: &Path) -> PathBuf {
    let (Some(hex), Some(layers)) = (
        layer_dir.file_name().and_then(|n| n.to_str()),
        layer_dir.parent(),
    ) else {
        return layer_dir.to_path_buf();
    };
    let (Some(images), true) = (layers.parent(), is_sha256_hex(hex)) else {
        return layer_dir.to_path_buf();
    };
    let link = images.join(LINKS_DIR).join(short_name(hex));
    match fs::read_link(&link) {
        Ok(target) if target == link_target(hex) => link,
        _ => layer_dir.to_path_buf(),
    }
}
