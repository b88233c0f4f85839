//! The one way content enters the store: a [`Batch`] staged under `tmp/` (complete and synced)
//! is moved into its content-addressed places and then named in `index.json`, all under
//! `locks/images.lock`. Import, commit and load all end here.
//!
//! Crash safety comes from ordering: the index, replaced atomically, is written last, so it
//! never names something that is not complete on disk; a crash leaves at most unreferenced
//! content, which the next garbage collection removes. An error (or a panic) before the index
//! is written takes everything this batch moved back out again ([`Rollback`]): the store is
//! then exactly as before, with no orphan blob and no half-installed layer.

use super::ImageError;
use super::archive::{BlobPaths, Imported};
use super::digest::sha256_hex;
use super::layout::{Layout, install, remove_tree, sync_dir};
use oci_spec::image::{
    ANNOTATION_REF_NAME, Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest,
    ImageManifestBuilder, MediaType,
};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Content staged for the store and the index entries that will name it.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// (digest hex, staged file): layer blobs, configs, manifests.
    pub(crate) blobs: Vec<(String, PathBuf)>,
    /// Unpacked layers new to the store.
    pub(crate) layers: Vec<StagedLayer>,
    /// Images to name in the index, in order.
    pub(crate) images: Vec<BatchImage>,
}

#[derive(Debug)]
pub(crate) struct StagedLayer {
    pub(crate) diff_id_hex: String,
    pub(crate) dir: PathBuf,
    pub(crate) sidecar: PathBuf,
    /// The layer's blob as a tar-split record (then there is no blob file to install).
    pub(crate) record: Option<PathBuf>,
}

impl Batch {
    /// Adds a layer that [`import_layer`] staged: its unpacked directory (with `sidecar`) and
    /// its blob, the file or the record of `blob`, whichever the import kept.
    ///
    /// [`import_layer`]: super::archive::import_layer
    pub(crate) fn add_layer(
        &mut self,
        layer: &Imported,
        blob: &BlobPaths,
        dir: PathBuf,
        sidecar: PathBuf,
    ) {
        if !layer.record {
            self.blobs.push((layer.blob_hex.clone(), blob.file.clone()));
        }
        self.layers.push(StagedLayer {
            diff_id_hex: layer.diff_id_hex.clone(),
            dir,
            sidecar,
            record: layer.record.then(|| blob.record.clone()),
        });
    }
}

/// One image of a batch: its manifest, what it needs present, and its names.
#[derive(Debug, Clone)]
pub(crate) struct BatchImage {
    pub(crate) manifest_hex: String,
    pub(crate) manifest_size: u64,
    pub(crate) config_hex: String,
    /// Blobs the manifest refers to (config and layers).
    pub(crate) blobs: Vec<String>,
    /// The config's diff_ids (hex): each needs its unpacked directory.
    pub(crate) diff_ids: Vec<String>,
    /// Normalised `name:tag` references; empty for an untagged image.
    pub(crate) references: Vec<String>,
}

/// A layer blob as a manifest lists it.
#[derive(Debug, Clone)]
pub(crate) struct LayerBlob {
    pub(crate) hex: String,
    pub(crate) size: u64,
    pub(crate) gzip: bool,
}

/// Writes the config and an OCI manifest for it into `dir` (as `<name>.config`,
/// `<name>.manifest`) and returns the image's batch entry; the blobs are added to `batch`.
/// `config_bytes` is stored exactly as given: its digest is the image id.
pub(crate) fn stage_image(
    batch: &mut Batch,
    dir: &Path,
    name: &str,
    config_bytes: &[u8],
    layers: &[LayerBlob],
    references: Vec<String>,
) -> Result<BatchImage, ImageError> {
    let config: ImageConfiguration = serde_json::from_slice(config_bytes)
        .map_err(|e| ImageError::InvalidArchive(format!("invalid image config: {e}")))?;
    let config_hex = sha256_hex(config_bytes);
    let manifest = build_manifest(&config_hex, config_bytes.len() as u64, layers)?;
    let manifest_bytes = serde_json::to_vec(&manifest)
        .map_err(|e| ImageError::Corrupt(format!("cannot serialise the manifest: {e}")))?;
    let manifest_hex = sha256_hex(&manifest_bytes);
    let config_path = dir.join(format!("{name}.config"));
    let manifest_path = dir.join(format!("{name}.manifest"));
    for (path, bytes) in [
        (&config_path, config_bytes),
        (&manifest_path, &manifest_bytes),
    ] {
        fs::write(path, bytes)
            .map_err(ImageError::io(format!("cannot write {}", path.display())))?;
    }
    batch.blobs.push((config_hex.clone(), config_path));
    batch.blobs.push((manifest_hex.clone(), manifest_path));
    let diff_ids = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| d.strip_prefix("sha256:").unwrap_or(d).to_string())
        .collect();
    let mut blobs = vec![config_hex.clone()];
    blobs.extend(layers.iter().map(|l| l.hex.clone()));
    let image = BatchImage {
        manifest_hex,
        manifest_size: manifest_bytes.len() as u64,
        config_hex,
        blobs,
        diff_ids,
        references,
    };
    batch.images.push(image.clone());
    Ok(image)
}

/// An OCI image manifest for a config and its layer blobs.
pub(crate) fn build_manifest(
    config_hex: &str,
    config_size: u64,
    layers: &[LayerBlob],
) -> Result<ImageManifest, ImageError> {
    let layers = layers
        .iter()
        .map(|l| {
            let media_type = if l.gzip {
                MediaType::ImageLayerGzip
            } else {
                MediaType::ImageLayer
            };
            Ok(Descriptor::new(media_type, l.size, sha256_digest(&l.hex)?))
        })
        .collect::<Result<Vec<_>, ImageError>>()?;
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            sha256_digest(config_hex)?,
        ))
        .layers(layers)
        .build()
        .map_err(|e| ImageError::Corrupt(format!("cannot build the manifest: {e}")))
}

pub(crate) fn sha256_digest(hex: &str) -> Result<Digest, ImageError> {
    Digest::from_str(&format!("sha256:{hex}"))
        .map_err(|e| ImageError::Corrupt(format!("invalid digest sha256:{hex}: {e}")))
}

/// Syncs everything staged below `dir` in one syncfs: the content must be on disk before the
/// index can point to it, and one syncfs is much cheaper than an fsync per unpacked file.
pub(crate) fn sync_staged(dir: &Path) -> Result<(), ImageError> {
    fs::File::open(dir)
        .and_then(|d| nix::unistd::syncfs(&d).map_err(std::io::Error::from))
        .map_err(ImageError::io("cannot sync the staged content"))
}

/// Moves the batch into place and names its images. Call with the store lock held.
pub(crate) fn install_batch(layout: &Layout, batch: &Batch) -> Result<(), ImageError> {
    let mut rollback = Rollback::default();
    for (hex, staged) in &batch.blobs {
        // Already stored, maybe as a layer's record: the staged copy goes with staging.
        if !layout.has_blob(hex) {
            rollback.install(staged, &layout.blob_path(hex))?;
        }
    }
    for layer in &batch.layers {
        let dir = layout.layer_dir(&layer.diff_id_hex);
        let sidecar = layout.layer_sidecar(&layer.diff_id_hex);
        let record = layout.layer_record(&layer.diff_id_hex);
        if !dir.exists() {
            // The sidecar and record go first: a layer directory in place implies they are.
            // One already there without its directory is debris of an interrupted GC:
            // replaced.
            rollback.replace(&layer.sidecar, &sidecar)?;
            if let Some(staged) = &layer.record {
                rollback.replace(staged, &record)?;
            }
            rollback.install(&layer.dir, &dir)?;
        } else {
            if !sidecar.exists() {
                rollback.install(&layer.sidecar, &sidecar)?;
            }
            // The layer is there (from a gzip blob, say) but its plain blob is not yet: the
            // record refers to files identical to the staged ones (same diff_id, same tar).
            if let Some(staged) = &layer.record {
                rollback.install(staged, &record)?;
            }
        }
        // Otherwise an identical layer is already there: the staged copy goes with staging.
    }
    // What the images need must be here now: a parent layer or a shared blob could have been
    // collected by an `rmi` since the batch was staged.
    for image in &batch.images {
        for hex in &image.blobs {
            if !layout.has_blob(hex) {
                return Err(ImageError::Corrupt(format!(
                    "blob sha256:{hex} disappeared from the store (removed meanwhile?)"
                )));
            }
        }
        for hex in &image.diff_ids {
            if !layout.layer_dir(hex).is_dir() {
                return Err(ImageError::Corrupt(format!(
                    "layer sha256:{hex} is not in the store (removed meanwhile?)"
                )));
            }
        }
    }
    sync_dir(&layout.blobs_dir())?;
    sync_dir(&layout.layers_dir())?;
    for image in &batch.images {
        for hex in &image.diff_ids {
            layout.ensure_short_link(hex)?;
        }
    }

    let mut index = layout.read_index()?;
    for image in &batch.images {
        let descriptor = Descriptor::new(
            MediaType::ImageManifest,
            image.manifest_size,
            sha256_digest(&image.manifest_hex)?,
        );
        if image.references.is_empty() {
            let listed = index
                .manifests()
                .iter()
                .any(|d| d.digest() == descriptor.digest());
            if !listed {
                add_to_index(&mut index, descriptor.clone(), None);
            }
        }
        for reference in &image.references {
            add_to_index(&mut index, descriptor.clone(), Some(reference));
        }
    }
    layout.write_index(&index)?;
    rollback.commit();
    Ok(())
}

/// Adds an index entry for `descriptor`'s manifest: named `reference`, or untagged. A
/// reference that named another image moves here; that image keeps an untagged entry if
/// nothing else names it (a dangling image, as in docker). An untagged entry of this manifest
/// is dropped once it has a name.
pub(crate) fn add_to_index(
    index: &mut ImageIndex,
    mut descriptor: Descriptor,
    reference: Option<&str>,
) {
    let mut manifests = index.manifests().clone();
    descriptor.set_annotations(None);
    let already = |d: &Descriptor| d.digest() == descriptor.digest() && ref_name(d) == reference;
    if reference.is_some() && manifests.iter().any(already) {
        // Named so already: leave the index (and its order) as it is.
        return;
    }
    if let Some(reference) = reference {
        let moved: Vec<Descriptor> = manifests
            .iter()
            .filter(|d| ref_name(d) == Some(reference))
            .cloned()
            .collect();
        manifests.retain(|d| {
            let untagged_here = d.digest() == descriptor.digest() && ref_name(d).is_none();
            ref_name(d) != Some(reference) && !untagged_here
        });
        for mut old in moved {
            let still_listed = manifests.iter().any(|d| d.digest() == old.digest());
            if !still_listed && old.digest() != descriptor.digest() {
                old.set_annotations(None);
                manifests.push(old);
            }
        }
        descriptor.set_annotations(Some(HashMap::from([(
            ANNOTATION_REF_NAME.to_string(),
            reference.to_string(),
        )])));
    }
    manifests.push(descriptor);
    index.set_manifests(manifests);
    index.set_media_type(Some(MediaType::ImageIndex));
}

pub(crate) fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .map(String::as_str)
}

/// Content moved into the store by a batch that has not reached the index yet. Dropped
/// without [`Rollback::commit`] (an error, a panic), it removes that content again so that the
/// store is exactly as before.
#[derive(Default)]
struct Rollback {
    added: Vec<PathBuf>,
    committed: bool,
}

impl Rollback {
    /// Moves `staged` to `target` unless `target` already exists.
    fn install(&mut self, staged: &Path, target: &Path) -> Result<(), ImageError> {
        if install(staged, target)? {
            self.added.push(target.to_path_buf());
        }
        Ok(())
    }

    /// Moves `staged` over `target` (a leftover that may or may not exist).
    fn replace(&mut self, staged: &Path, target: &Path) -> Result<(), ImageError> {
        fs::rename(staged, target).map_err(ImageError::io(format!(
            "cannot move {} to {}",
            staged.display(),
            target.display()
        )))?;
        self.added.push(target.to_path_buf());
        Ok(())
    }

    fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for path in self.added.iter().rev() {
            if let Err(e) = remove_tree(path) {
                log::warn!("cannot roll back {}: {e}", path.display());
            }
        }
    }
}
