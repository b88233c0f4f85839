//! [`ImageStore`]: import, list, resolve and remove images, and collect unreferenced blobs
//! and layers.
//!
//! Crash safety comes from ordering: content is staged under `tmp/`, synced, then moved into
//! its content-addressed place, and only then does `index.json` (replaced atomically) point to
//! it. A crash leaves at most unreferenced content, which the next garbage collection removes;
//! the index never names something that is not complete on disk. All moves into place, index
//! changes and garbage collection happen under `locks/images.lock`.

use super::archive::{BlobPaths, import_layer};
use super::changes::apply_changes;
use super::digest::is_sha256_hex;
use super::install::{
    Batch, LayerBlob, add_to_index, install_batch, ref_name, stage_image, sync_staged,
};
use super::layout::{
    LayerInfo, Layout, RECORD_EXT, Staging, remove_tree, sweep_stale_staging, sync_dir,
};
use super::pipe::Chunked;
use super::reference::{IdQuery, normalize_reference, parse_id};
use super::{Image, ImageError, Removal};
use crate::state::Timestamp;
use oci_spec::image::{
    Descriptor, Digest, History, ImageConfiguration, ImageIndex, ImageManifest, MediaType, RootFs,
};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The image store of one state root.
#[derive(Debug, Clone)]
pub struct ImageStore {
    pub(crate) layout: Layout,
}

/// An image as loaded from the index, with the manifests that carry it (usually one).
pub(crate) struct Loaded {
    pub(crate) image: Image,
    /// Hex digests of the manifests naming this image's config.
    pub(crate) manifests: Vec<String>,
}

/// How a reference matched an image: docker untags for a name and deletes for an id.
pub(crate) enum Matched {
    Name(String),
    Id,
}

impl ImageStore {
    /// Opens (creating if missing) the store in `<state_root>/images/`.
    pub fn open(state_root: &Path) -> Result<ImageStore, ImageError> {
        // Layer paths handed out are used as overlay lowerdirs: make them absolute even for
        // a relative --root.
        let state_root = std::path::absolute(state_root).map_err(ImageError::io(format!(
            "cannot resolve {}",
            state_root.display()
        )))?;
        let layout = Layout::new(&state_root);
        layout.ensure()?;
        Ok(ImageStore { layout })
    }

    /// Imports a rootfs tarball (plain or gzip) as a one-layer image, optionally tagged.
    /// On any error the store is left exactly as it was.
    pub fn import(
        &self,
        archive: impl Read,
        reference: Option<&str>,
        changes: &[String],
    ) -> Result<Image, ImageError> {
        // Everything that can be checked without the input is checked before reading it.
        let reference = reference.map(normalize_reference).transpose()?;
        let mut config = ImageConfiguration::default();
        apply_changes(&mut config, changes)?;

        let staging = Staging::new(&self.layout.tmp_dir())?;
        let (batch, staged) = stage_import(&staging, archive, config, reference)?;
        let _lock = self.layout.lock()?;
        install_batch(&self.layout, &batch)?;
        let mut image = self.image_from_config(staged.id, staged.config)?;
        image.references = staged.references;
        Ok(image)
    }

    /// Names the image `source` resolves to `target` (`docker tag`). If `target` named
    /// another image, it moves.
    pub fn tag(&self, source: &str, target: &str) -> Result<Image, ImageError> {
        let target = normalize_reference(target)?;
        let _lock = self.layout.lock()?;
        let mut index = self.layout.read_index()?;
        let mut loaded = self.images_in(&index)?;
        let (i, _) = find(&loaded, source)?;
        let mut image = loaded.swap_remove(i);
        if !image.image.references.contains(&target) {
            let descriptor = index
                .manifests()
                .iter()
                .find(|d| manifest_hex(d).as_ref() == image.manifests.first())
                .cloned()
                .ok_or_else(|| {
                    ImageError::Corrupt(format!("image {} left the index", image.image.id))
                })?;
            add_to_index(&mut index, descriptor, Some(&target));
            self.layout.write_index(&index)?;
            image.image.references.push(target);
        }
        Ok(image.image)
    }

    /// All images, newest first.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let index = self.layout.read_index()?;
        Ok(self
            .images_in(&index)?
            .into_iter()
            .map(|l| l.image)
            .collect())
    }

    /// Finds an image by `name[:tag]`, full id (`sha256:<hex>` or bare hex) or unique id
    /// prefix. A name is tried before an id prefix, as docker does.
    pub fn resolve(&self, reference: &str) -> Result<Image, ImageError> {
        let index = self.layout.read_index()?;
        let mut loaded = self.images_in(&index)?;
        let (i, _) = find(&loaded, reference)?;
        Ok(loaded.swap_remove(i).image)
    }

    /// `rmi` of one reference. A name is untagged, and the image deleted when no reference
    /// is left. An id deletes the image (untagging all its names), which needs `force` when
    /// more than one name refers to it. `force` does not delete an image through a name that
    /// other names still share (docker's behaviour). Content no image needs any more is
    /// garbage-collected. Whether containers use the image is the caller's business.
    pub fn remove(&self, reference: &str, force: bool) -> Result<Vec<Removal>, ImageError> {
        let _lock = self.layout.lock()?;
        let mut index = self.layout.read_index()?;
        let loaded = self.images_in(&index)?;
        let (i, matched) = find(&loaded, reference)?;
        let target = &loaded[i];
        let image = &target.image;

        let mut removals = Vec::new();
        let delete = match matched {
            Matched::Name(name) => {
                remove_descriptors(&mut index, |_, r| r == Some(name.as_str()));
                removals.push(Removal::Untagged(name));
                image.references.len() <= 1
            }
            Matched::Id => {
                if image.references.len() > 1 && !force {
                    return Err(ImageError::MultipleReferences {
                        short_id: image.short_id().to_string(),
                    });
                }
                removals.extend(image.references.iter().cloned().map(Removal::Untagged));
                true
            }
        };
        if delete {
            remove_descriptors(&mut index, |hex, _| {
                target.manifests.iter().any(|m| m == hex)
            });
            removals.push(Removal::Deleted(image.id.clone()));
        }
        self.layout.write_index(&index)?;
        // The removal is committed; anything the collection misses is only unreferenced
        // content that the next collection retries.
        if let Err(e) = self.collect_garbage(&index) {
            log::warn!("image garbage collection incomplete: {e}");
        }
        Ok(removals)
    }

    /// Every image named by the index (with the manifests naming it), newest first.
    pub(crate) fn loaded(&self) -> Result<Vec<Loaded>, ImageError> {
        let index = self.layout.read_index()?;
        self.images_in(&index)
    }

    /// Loads every image named by the index, merging manifests that share a config.
    fn images_in(&self, index: &ImageIndex) -> Result<Vec<Loaded>, ImageError> {
        let mut images: Vec<Loaded> = Vec::new();
        let mut by_manifest: HashMap<String, usize> = HashMap::new();
        for descriptor in index.manifests() {
            let Some(hex) = manifest_hex(descriptor) else {
                log::debug!("ignoring index entry {}", descriptor.digest());
                continue;
            };
            let reference = ref_name(descriptor).map(str::to_string);
            let slot = match by_manifest.get(&hex) {
                Some(&slot) => slot,
                None => {
                    let (id, config) = self.load_manifest(&hex)?;
                    let slot = match images.iter().position(|l| l.image.id == id) {
                        Some(slot) => {
                            images[slot].manifests.push(hex.clone());
                            slot
                        }
                        None => {
                            images.push(Loaded {
                                image: self.image_from_config(id, config)?,
                                manifests: vec![hex.clone()],
                            });
                            images.len() - 1
                        }
                    };
                    by_manifest.insert(hex, slot);
                    slot
                }
            };
            let references = &mut images[slot].image.references;
            if let Some(reference) = reference {
                if !references.contains(&reference) {
                    references.push(reference);
                }
            }
        }
        // Newest first; unparsable dates last; ties in a stable order.
        images.sort_by(|a, b| {
            let created = |l: &Loaded| {
                l.image
                    .config
                    .created()
                    .as_deref()
                    .and_then(Timestamp::parse_rfc3339)
            };
            created(b)
                .cmp(&created(a))
                .then_with(|| a.image.id.cmp(&b.image.id))
        });
        Ok(images)
    }

    /// Reads a manifest and its config: (image id, config).
    pub(crate) fn load_manifest(
        &self,
        hex: &str,
    ) -> Result<(String, ImageConfiguration), ImageError> {
        let manifest: ImageManifest = parse_json(&self.layout.read_blob(hex)?, hex)?;
        let config_hex = sha256_hex_of(manifest.config().digest()).ok_or_else(|| {
            ImageError::Corrupt(format!("manifest sha256:{hex} has a bad config digest"))
        })?;
        let config: ImageConfiguration =
            parse_json(&self.layout.read_blob(&config_hex)?, &config_hex)?;
        Ok((format!("sha256:{config_hex}"), config))
    }

    pub(crate) fn image_from_config(
        &self,
        id: String,
        config: ImageConfiguration,
    ) -> Result<Image, ImageError> {
        let mut layers = Vec::new();
        let mut size = 0;
        for diff_id in config.rootfs().diff_ids() {
            let hex = diff_id
                .strip_prefix("sha256:")
                .filter(|h| is_sha256_hex(h))
                .ok_or_else(|| {
                    ImageError::Corrupt(format!("image {id} has a bad diff_id {diff_id:?}"))
                })?;
            layers.push(self.layout.layer_dir(hex));
            // A missing sidecar must not make the whole store unlistable (nor un-removable).
            match LayerInfo::read(&self.layout.layer_sidecar(hex)) {
                Ok(info) => size += info.size,
                Err(e) => log::warn!("size of layer {hex} unknown: {e}"),
            }
        }
        Ok(Image {
            id,
            references: Vec::new(),
            config,
            layers,
            size,
        })
    }

    /// Removes blobs and unpacked layers that no image in `index` needs, and stale staging
    /// directories. Call with the lock held. Nothing is removed if any image cannot be read:
    /// when unsure what is referenced, keep everything.
    fn collect_garbage(&self, index: &ImageIndex) -> Result<(), ImageError> {
        let mut blobs = HashSet::new();
        let mut layers = HashSet::new();
        for descriptor in index.manifests() {
            let Some(hex) = manifest_hex(descriptor) else {
                // Something we do not understand (e.g. a nested index): keep all content.
                return Ok(());
            };
            let manifest: ImageManifest = parse_json(&self.layout.read_blob(&hex)?, &hex)?;
            blobs.insert(hex);
            for layer in manifest.layers() {
                let Some(hex) = sha256_hex_of(layer.digest()) else {
                    continue;
                };
                // A plain layer's blob may be kept as its layer's record: keep the layer.
                if !self.layout.blob_path(&hex).exists() {
                    layers.insert(hex.clone());
                }
                blobs.insert(hex);
            }
            let config_hex = sha256_hex_of(manifest.config().digest())
                .ok_or_else(|| ImageError::Corrupt("manifest with a bad config digest".into()))?;
            let config: ImageConfiguration =
                parse_json(&self.layout.read_blob(&config_hex)?, &config_hex)?;
            blobs.insert(config_hex);
            for diff_id in config.rootfs().diff_ids() {
                layers.extend(diff_id.strip_prefix("sha256:").map(str::to_string));
            }
        }

        for name in dir_names(&self.layout.blobs_dir())? {
            if is_sha256_hex(&name) && !blobs.contains(&name) {
                let path = self.layout.blob_path(&name);
                fs::remove_file(&path)
                    .map_err(ImageError::io(format!("cannot remove {}", path.display())))?;
            }
        }
        let trash = Staging::new(&self.layout.tmp_dir())?;
        for name in dir_names(&self.layout.layers_dir())? {
            let (hex, beside) = match name.rsplit_once('.') {
                Some((hex, ext)) if ext == "json" || ext == RECORD_EXT => (hex, true),
                _ => (name.as_str(), false),
            };
            if !is_sha256_hex(hex) || layers.contains(hex) {
                continue;
            }
            let path = self.layout.layers_dir().join(&name);
            if beside {
                // Sidecars and records go after their directory (below), or now if orphaned.
                if !self.layout.layer_dir(hex).exists() {
                    remove_tree(&path)
                        .map_err(ImageError::io(format!("cannot remove {}", path.display())))?;
                }
                continue;
            }
            // Out of layers/ in one atomic step, so a crash mid-removal never leaves a
            // half-deleted directory that a later import would take for a complete layer.
            fs::rename(&path, trash.path().join(&name))
                .map_err(ImageError::io(format!("cannot remove {}", path.display())))?;
            for beside in [
                self.layout.layer_sidecar(hex),
                self.layout.layer_record(hex),
            ] {
                remove_tree(&beside).map_err(ImageError::io(format!(
                    "cannot remove {}",
                    beside.display()
                )))?;
            }
        }
        sync_dir(&self.layout.layers_dir())?;
        sync_dir(&self.layout.blobs_dir())?;
        drop(trash);
        self.layout.remove_dangling_links()?;
        sweep_stale_staging(&self.layout.tmp_dir())
    }
}

/// Reads the archive into `staging` as a one-layer image (config and manifest included).
/// Needs no lock: nothing outside the staging directory is touched.
fn stage_import(
    staging: &Staging,
    archive: impl Read,
    mut config: ImageConfiguration,
    reference: Option<String>,
) -> Result<(Batch, Image), ImageError> {
    let dir = staging.path();
    let blob = BlobPaths::staged(dir, "blob");
    let layer_dir = dir.join("layer");
    // The layer root is the container's `/`: 0755 unless the archive says otherwise (its
    // `./` entry), whatever our umask.
    fs::create_dir(&layer_dir)
        .and_then(|()| fs::set_permissions(&layer_dir, fs::Permissions::from_mode(0o755)))
        .map_err(ImageError::io(format!(
            "cannot create {}",
            layer_dir.display()
        )))?;
    let layer = import_layer(Chunked::new(archive), &blob, &layer_dir, false)?;

    let created = Timestamp::now().to_rfc3339();
    complete_config(&mut config, &layer.diff_id_hex, &created);
    let config_bytes = to_json(&config)?;
    let sidecar = dir.join("layer.json");
    let info = LayerInfo {
        size: layer.unpacked_size,
    };
    fs::write(&sidecar, info.to_bytes()).map_err(ImageError::io(format!(
        "cannot write {}",
        sidecar.display()
    )))?;
    let mut batch = Batch::default();
    batch.add_layer(&layer, &blob, layer_dir, sidecar);
    let blobs = [LayerBlob {
        hex: layer.blob_hex.clone(),
        size: layer.blob_size,
        gzip: layer.gzip,
    }];
    let staged = stage_image(
        &mut batch,
        dir,
        "image",
        &config_bytes,
        &blobs,
        reference.into_iter().collect(),
    )?;
    sync_staged(dir)?;
    let image = Image {
        id: format!("sha256:{}", staged.config_hex),
        references: staged.references,
        config,
        layers: Vec::new(),
        size: layer.unpacked_size,
    };
    Ok((batch, image))
}

/// Finds the image `reference` names: full id, then name, then unique id prefix.
pub(crate) fn find(images: &[Loaded], reference: &str) -> Result<(usize, Matched), ImageError> {
    let id = parse_id(reference);
    if let Some(IdQuery::Full(hex)) = &id {
        let full = format!("sha256:{hex}");
        return match images.iter().position(|l| l.image.id == full) {
            Some(i) => Ok((i, Matched::Id)),
            None => Err(ImageError::NotFound(reference.to_string())),
        };
    }
    if let Ok(name) = normalize_reference(reference) {
        if let Some(i) = images
            .iter()
            .position(|l| l.image.references.contains(&name))
        {
            return Ok((i, Matched::Name(name)));
        }
    }
    if let Some(IdQuery::Prefix(prefix)) = &id {
        let full = format!("sha256:{prefix}");
        let matches: Vec<usize> = (0..images.len())
            .filter(|&i| images[i].image.id.starts_with(&full))
            .collect();
        return match matches.as_slice() {
            [i] => Ok((*i, Matched::Id)),
            [] => Err(ImageError::NotFound(reference.to_string())),
            many => Err(ImageError::Ambiguous {
                reference: reference.to_string(),
                count: many.len(),
            }),
        };
    }
    Err(ImageError::NotFound(reference.to_string()))
}

/// Fills in what an import knows only after reading the archive.
fn complete_config(config: &mut ImageConfiguration, diff_id_hex: &str, created: &str) {
    config.set_created(Some(created.to_string()));
    let mut rootfs = RootFs::default();
    rootfs.set_diff_ids(vec![format!("sha256:{diff_id_hex}")]);
    config.set_rootfs(rootfs);
    let mut history = History::default();
    history.set_created(Some(created.to_string()));
    history.set_created_by(Some("carton import".to_string()));
    config.set_history(Some(vec![history]));
}

/// Drops the index entries for which `pred(manifest hex, ref name)` holds.
fn remove_descriptors(index: &mut ImageIndex, pred: impl Fn(&str, Option<&str>) -> bool) {
    let mut manifests = index.manifests().clone();
    manifests.retain(|d| {
        let hex = manifest_hex(d).unwrap_or_default();
        !pred(&hex, ref_name(d))
    });
    index.set_manifests(manifests);
}

/// The hex of an index entry that is an image manifest stored by sha256.
pub(crate) fn manifest_hex(descriptor: &Descriptor) -> Option<String> {
    if *descriptor.media_type() != MediaType::ImageManifest {
        return None;
    }
    sha256_hex_of(descriptor.digest())
}

pub(crate) fn sha256_hex_of(digest: &Digest) -> Option<String> {
    let text = digest.to_string();
    let hex = text.strip_prefix("sha256:")?;
    is_sha256_hex(hex).then(|| hex.to_string())
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value)
        .map_err(|e| ImageError::Corrupt(format!("cannot serialise JSON: {e}")))
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    hex: &str,
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ImageError::Corrupt(format!("blob sha256:{hex}: {e}")))
}

fn dir_names(dir: &Path) -> Result<Vec<String>, ImageError> {
    let mut names = Vec::new();
    let entries =
        fs::read_dir(dir).map_err(ImageError::io(format!("cannot read {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(ImageError::io(format!("cannot read {}", dir.display())))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}
