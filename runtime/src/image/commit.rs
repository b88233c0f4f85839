//! Commit: a container's upper directory becomes a new layer on top of its image.
//!
//! Three steps, so that the caller can keep the container still (frozen) for the middle one
//! only:
//! 1. [`ImageStore::begin_commit`] checks everything that does not need the layer (reference,
//!    `--change` instructions, the parent's manifest) — bad input fails before anything is
//!    frozen or written;
//! 2. [`Commit::read_layer`] streams the upper directory as an OCI layer: a walker thread writes
//!    the tar (overlay whiteouts → OCI whiteouts) into a pipe, and this thread runs it through
//!    the same pipeline as `import` — hashed, recorded as the blob, and unpacked (OCI
//!    whiteouts → overlay whiteouts) into the layer directory that containers of the new image
//!    will mount. One read of the upper, never a whole layer in memory, and the unpacked layer
//!    is exactly what a `load` of the blob would produce;
//! 3. [`Commit::finish`] writes config and manifest and installs it all (see `install.rs`).
//!
//! A commit of an unchanged container adds a history entry marked `empty_layer` and no layer,
//! as docker does.

use super::archive::{BlobPaths, Imported, import_layer};
use super::changes::apply_changes;
use super::install::{Batch, LayerBlob, install_batch, stage_image, sync_staged};
use super::layer_tar::{Omit, TreeKind, open_tree_root, write_tree};
use super::layout::{LayerInfo, Staging};
use super::pipe::pipe;
use super::reference::normalize_reference;
use super::store::{parse_json, sha256_hex_of, to_json};
use super::{Image, ImageError, ImageStore};
use crate::state::Timestamp;
use oci_spec::image::{Config, History, ImageConfiguration, ImageManifest, MediaType};
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// What to commit, besides the layer.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// The container's image.
    pub parent: Image,
    /// The container's runtime configuration (Cmd, Env, WorkingDir, User…), before `changes`.
    pub config: Config,
    /// `--change` instructions.
    pub changes: Vec<String>,
    /// `-m`: the history entry's comment.
    pub comment: Option<String>,
    /// `-a`: the image's and the history entry's author.
    pub author: Option<String>,
    /// The history entry's "created by" (the container's command).
    pub created_by: String,
    /// `REPO[:TAG]` to name the new image.
    pub reference: Option<String>,
}

/// A commit in progress (see the module documentation).
pub struct Commit<'a> {
    store: &'a ImageStore,
    staging: Staging,
    config: ImageConfiguration,
    history: History,
    reference: Option<String>,
    parent_layers: Vec<LayerBlob>,
    /// The parent's unpacked layers, bottom first.
    parent_dirs: Vec<PathBuf>,
    layer: Option<Imported>,
}

impl ImageStore {
    /// Step 1: validates the request and prepares the new image's config.
    pub fn begin_commit(&self, request: CommitRequest) -> Result<Commit<'_>, ImageError> {
        let reference = request
            .reference
            .as_deref()
            .map(normalize_reference)
            .transpose()?;
        let mut config = request.parent.config.clone();
        config.set_config(Some(request.config));
        apply_changes(&mut config, &request.changes)?;
        let created = Timestamp::now().to_rfc3339();
        config.set_created(Some(created.clone()));
        if request.author.is_some() {
            config.set_author(request.author.clone());
        }
        let mut history = History::default();
        history.set_created(Some(created));
        history.set_created_by(Some(request.created_by));
        history.set_comment(request.comment.filter(|c| !c.is_empty()));
        history.set_author(request.author);
        let parent_layers = self.layer_blobs(&request.parent)?;
        let parent_dirs = request.parent.layers.clone();
        Ok(Commit {
            store: self,
            staging: Staging::new(&self.layout.tmp_dir())?,
            config,
            history,
            reference,
            parent_layers,
            parent_dirs,
            layer: None,
        })
    }

    /// The layer blobs of `image`'s manifest, bottom first.
    fn layer_blobs(&self, image: &Image) -> Result<Vec<LayerBlob>, ImageError> {
        let loaded = self.loaded()?;
        let entry = loaded
            .iter()
            .find(|l| l.image.id == image.id)
            .ok_or_else(|| ImageError::NotFound(image.id.clone()))?;
        let hex = entry
            .manifests
            .first()
            .ok_or_else(|| ImageError::Corrupt(format!("image {} has no manifest", image.id)))?;
        let manifest: ImageManifest = parse_json(&self.layout.read_blob(hex)?, hex)?;
        manifest.layers().iter().map(layer_blob).collect()
    }
}

/// A manifest's layer descriptor as the store keeps it.
pub(crate) fn layer_blob(d: &oci_spec::image::Descriptor) -> Result<LayerBlob, ImageError> {
    let hex = sha256_hex_of(d.digest())
        .ok_or_else(|| ImageError::Corrupt(format!("unsupported layer digest {}", d.digest())))?;
    Ok(LayerBlob {
        hex,
        size: d.size(),
        gzip: is_gzip_layer(d.media_type()),
    })
}

/// gzip layer media types, OCI's and docker's.
pub(crate) fn is_gzip_layer(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => true,
        MediaType::Other(other) => other == "application/vnd.docker.image.rootfs.diff.tar.gzip",
        _ => false,
    }
}

impl Commit<'_> {
    /// Step 2: reads `upper` (an overlay upper directory) into the staged layer, leaving out
    /// `mount_points` (absolute paths in the container): what lies there in `upper/` is a
    /// placeholder the runtime created to mount on (`/etc/hosts` of an image without one),
    /// hidden from the container by its mount, so not part of what it changed. This is the only
    /// step during which the container's files must not change.
    pub fn read_layer(&mut self, upper: &Path, mount_points: &[PathBuf]) -> Result<(), ImageError> {
        let omit = placeholders(upper, &self.parent_dirs, mount_points);
        let dir = self.staging.path();
        let blob = BlobPaths::staged(dir, "blob");
        let layer_dir = dir.join("layer");
        fs::create_dir(&layer_dir)
            .and_then(|()| fs::set_permissions(&layer_dir, fs::Permissions::from_mode(0o755)))
            .map_err(ImageError::io(format!(
                "cannot create {}",
                layer_dir.display()
            )))?;
        let root = open_tree_root(upper)?;
        let (to_import, from_walker) = pipe();
        let walker = std::thread::spawn(move || {
            write_tree(root.as_fd(), to_import, TreeKind::OverlayUpper, &omit).map(|_| ())
        });
        // The reader end is consumed (and dropped) here, so a failing import never leaves the
        // walker blocked on a full pipe.
        let imported = import_layer(from_walker, &blob, &layer_dir, true);
        let walked = walker
            .join()
            .unwrap_or_else(|_| Err(ImageError::Corrupt("the layer walker panicked".into())));
        // The walker's failure explains the unpacker's (a cut stream), not the other way round.
        walked?;
        self.layer = Some(imported?);
        Ok(())
    }

    /// Step 3: writes the config and manifest and installs the image.
    pub fn finish(mut self) -> Result<Image, ImageError> {
        let layer = self
            .layer
            .take()
            .ok_or_else(|| ImageError::Corrupt("commit without its layer".into()))?;
        let dir = self.staging.path().to_path_buf();
        let mut batch = Batch::default();
        let mut layers = self.parent_layers.clone();
        if layer.entries == 0 {
            self.history.set_empty_layer(Some(true));
        } else {
            let sidecar = dir.join("layer.json");
            let info = LayerInfo {
                size: layer.unpacked_size,
            };
            fs::write(&sidecar, info.to_bytes()).map_err(ImageError::io(format!(
                "cannot write {}",
                sidecar.display()
            )))?;
            batch.add_layer(
                &layer,
                &BlobPaths::staged(&dir, "blob"),
                dir.join("layer"),
                sidecar,
            );
            layers.push(LayerBlob {
                hex: layer.blob_hex.clone(),
                size: layer.blob_size,
                gzip: layer.gzip,
            });
            self.config
                .rootfs_mut()
                .diff_ids_mut()
                .push(format!("sha256:{}", layer.diff_id_hex));
        }
        let mut history = self.config.history().clone().unwrap_or_default();
        history.push(self.history.clone());
        self.config.set_history(Some(history));
        let config_bytes = to_json(&self.config)?;
        let staged = stage_image(
            &mut batch,
            &dir,
            "image",
            &config_bytes,
            &layers,
            self.reference.clone().into_iter().collect(),
        )?;
        sync_staged(&dir)?;
        {
            let _lock = self.store.layout.lock()?;
            install_batch(&self.store.layout, &batch)?;
        }
        let mut image = self
            .store
            .image_from_config(format!("sha256:{}", staged.config_hex), self.config)?;
        image.references = staged.references;
        Ok(image)
    }
}

/// What to leave out of a commit because the runtime, not the container, put it in `upper/`:
/// the mount points (empty files and directories created to mount on, hidden by their
/// mounts), and the directories overlay copied up only to hold them — those whose mode and
/// owner are still those of the parent layers — unless something else below them changed.
fn placeholders(upper: &Path, lower: &[PathBuf], mount_points: &[PathBuf]) -> Omit {
    let mut omit = Omit::default();
    for point in mount_points {
        let parts: Vec<&std::ffi::OsStr> = point
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        if parts.is_empty() {
            continue;
        }
        omit.skip.insert(
            parts
                .iter()
                .map(|p| p.as_bytes())
                .collect::<Vec<_>>()
                .join(&b'/'),
        );
        for depth in 1..parts.len() {
            let relative: PathBuf = parts[..depth].iter().collect();
            if unchanged_dir(upper, lower, &relative) {
                omit.unless_needed
                    .insert(relative.as_os_str().as_bytes().to_vec());
            }
        }
    }
    omit
}

/// Whether `upper/relative` is a directory with the mode and owner of the topmost parent
/// layer that has it (never following symlinks).
fn unchanged_dir(upper: &Path, lower: &[PathBuf], relative: &Path) -> bool {
    let Ok(mine) = fs::symlink_metadata(upper.join(relative)) else {
        return false;
    };
    let below = lower
        .iter()
        .rev()
        .find_map(|layer| fs::symlink_metadata(layer.join(relative)).ok());
    match below {
        Some(theirs) => {
            mine.is_dir()
                && theirs.is_dir()
                && mine.mode() == theirs.mode()
                && (mine.uid(), mine.gid()) == (theirs.uid(), theirs.gid())
        }
        None => false,
    }
}
