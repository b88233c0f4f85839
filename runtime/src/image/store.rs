//! [`ImageStore`]: import, list, resolve and remove images, and collect unreferenced blobs
//! and layers.
//!
//! Crash safety comes from ordering: content is staged under `tmp/`, synced, then moved into
//! its content-addressed place, and only then does `index.json` (replaced atomically) point to
//! it. A crash leaves at most unreferenced content, which the next garbage collection removes;
//! the index never names something that is not complete on disk. All moves into place, index
//! changes and garbage collection happen under `locks/images.lock`.

use super::archive::{Imported, import_layer};
use super::changes::apply_changes;
use super::digest::{is_sha256_hex, sha256_hex};
use super::layout::{
    LayerInfo, Layout, Staging, install, remove_tree, sweep_stale_staging, sync_dir,
};
use super::reference::{IdQuery, normalize_reference, parse_id};
use super::{Image, ImageError, Removal};
use crate::state::Timestamp;
use oci_spec::image::{
    ANNOTATION_REF_NAME, Descriptor, Digest, History, ImageConfiguration, ImageIndex,
    ImageManifest, ImageManifestBuilder, MediaType, RootFs,
};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The image store of one state root.
#[derive(Debug, Clone)]
pub struct ImageStore {
    layout: Layout,
}

/// An image as loaded from the index, with the manifests that carry it (usually one).
struct Loaded {
    image: Image,
    manifests: Vec<String>,
}

/// How a reference matched an image: docker untags for a name and deletes for an id.
enum Matched {
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
        let staged = stage_import(&staging, archive, config)?;
        let _lock = self.layout.lock()?;
        self.install_import(&staged, reference.as_deref())?;
        Ok(Image {
            id: format!("sha256:{}", staged.config_hex),
            references: reference.into_iter().collect(),
            config: staged.config,
            layers: vec![self.layout.layer_dir(&staged.layer.diff_id_hex)],
            size: staged.layer.unpacked_size,
        })
    }

    /// Moves staged content into place and names it in the index; with the lock held.
    /// Anything moved is taken back out if a later step fails.
    fn install_import(&self, staged: &Staged, reference: Option<&str>) -> Result<(), ImageError> {
        let mut rollback = Rollback::default();
        let diff = &staged.layer.diff_id_hex;
        rollback.install(&staged.blob, &self.layout.blob_path(&staged.layer.blob_hex))?;
        let layer_dir = self.layout.layer_dir(diff);
        let sidecar = self.layout.layer_sidecar(diff);
        if !layer_dir.exists() {
            // The sidecar goes first: a layer directory in place implies its sidecar is. One
            // already there without its directory is debris of an interrupted GC: replaced.
            rollback.replace(&staged.sidecar, &sidecar)?;
            rollback.install(&staged.layer_dir, &layer_dir)?;
        } else if !sidecar.exists() {
            rollback.install(&staged.sidecar, &sidecar)?;
        }
        // Otherwise the identical layer is already unpacked: the staged copy is dropped
        // with the staging directory.
        rollback.install(
            &staged.config_blob,
            &self.layout.blob_path(&staged.config_hex),
        )?;
        rollback.install(
            &staged.manifest_blob,
            &self.layout.blob_path(&staged.manifest_hex),
        )?;
        sync_dir(&self.layout.blobs_dir())?;
        sync_dir(&self.layout.layers_dir())?;

        let mut index = self.layout.read_index()?;
        let descriptor = Descriptor::new(
            MediaType::ImageManifest,
            staged.manifest_size,
            sha256_digest(&staged.manifest_hex)?,
        );
        add_to_index(&mut index, descriptor, reference);
        self.layout.write_index(&index)?;
        rollback.commit();
        Ok(())
    }

    /// Names the image `source` resolves to `target` (`docker tag`). If `target` named
    /// another image, it moves.
    pub fn tag(&self, source: &str, target: &str) -> Result<Image, ImageError> {
        let target = normalize_reference(target)?;
        let _lock = self.layout.lock()?;
        let mut index = self.layout.read_index()?;
        let mut loaded = self.load(&index)?;
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
        Ok(self.load(&index)?.into_iter().map(|l| l.image).collect())
    }

    /// Finds an image by `name[:tag]`, full id (`sha256:<hex>` or bare hex) or unique id
    /// prefix. A name is tried before an id prefix, as docker does.
    pub fn resolve(&self, reference: &str) -> Result<Image, ImageError> {
        let index = self.layout.read_index()?;
        let mut loaded = self.load(&index)?;
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
        let loaded = self.load(&index)?;
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

    /// Loads every image named by the index, merging manifests that share a config.
    fn load(&self, index: &ImageIndex) -> Result<Vec<Loaded>, ImageError> {
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
    fn load_manifest(&self, hex: &str) -> Result<(String, ImageConfiguration), ImageError> {
        let manifest: ImageManifest = parse_json(&self.layout.read_blob(hex)?, hex)?;
        let config_hex = sha256_hex_of(manifest.config().digest()).ok_or_else(|| {
            ImageError::Corrupt(format!("manifest sha256:{hex} has a bad config digest"))
        })?;
        let config: ImageConfiguration =
            parse_json(&self.layout.read_blob(&config_hex)?, &config_hex)?;
        Ok((format!("sha256:{config_hex}"), config))
    }

    fn image_from_config(
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
                blobs.extend(sha256_hex_of(layer.digest()));
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
            let hex = name.strip_suffix(".json").unwrap_or(&name);
            if !is_sha256_hex(hex) || layers.contains(hex) {
                continue;
            }
            let path = self.layout.layers_dir().join(&name);
            if name.ends_with(".json") {
                // Sidecars go after their directory (below), or now if orphaned.
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
            let sidecar = self.layout.layer_sidecar(hex);
            remove_tree(&sidecar).map_err(ImageError::io(format!(
                "cannot remove {}",
                sidecar.display()
            )))?;
        }
        sync_dir(&self.layout.layers_dir())?;
        sync_dir(&self.layout.blobs_dir())?;
        drop(trash);
        sweep_stale_staging(&self.layout.tmp_dir())
    }
}

/// An import, complete and synced in its staging directory, not yet visible in the store.
struct Staged {
    layer: Imported,
    config: ImageConfiguration,
    config_hex: String,
    manifest_hex: String,
    manifest_size: u64,
    blob: PathBuf,
    layer_dir: PathBuf,
    sidecar: PathBuf,
    config_blob: PathBuf,
    manifest_blob: PathBuf,
}

/// Reads the archive into `staging` and writes the config, manifest and layer sidecar next
/// to it. Needs no lock: nothing outside the staging directory is touched.
fn stage_import(
    staging: &Staging,
    archive: impl Read,
    mut config: ImageConfiguration,
) -> Result<Staged, ImageError> {
    let dir = staging.path();
    let blob = dir.join("blob");
    let layer_dir = dir.join("layer");
    // The layer root is the container's `/`: 0755 unless the archive says otherwise (its
    // `./` entry), whatever our umask.
    fs::create_dir(&layer_dir)
        .and_then(|()| fs::set_permissions(&layer_dir, fs::Permissions::from_mode(0o755)))
        .map_err(ImageError::io(format!(
            "cannot create {}",
            layer_dir.display()
        )))?;
    let layer = import_layer(archive, &blob, &layer_dir)?;

    let created = Timestamp::now().to_rfc3339();
    complete_config(&mut config, &layer, &created);
    let config_bytes = to_json(&config)?;
    let config_hex = sha256_hex(&config_bytes);
    let manifest = build_manifest(&layer, &config_hex, config_bytes.len() as u64)?;
    let manifest_bytes = to_json(&manifest)?;
    let info = LayerInfo {
        size: layer.unpacked_size,
    };
    let staged = Staged {
        config_hex,
        manifest_hex: sha256_hex(&manifest_bytes),
        manifest_size: manifest_bytes.len() as u64,
        blob,
        layer_dir,
        sidecar: dir.join("layer.json"),
        config_blob: dir.join("config"),
        manifest_blob: dir.join("manifest"),
        layer,
        config,
    };
    for (path, bytes) in [
        (&staged.config_blob, config_bytes),
        (&staged.manifest_blob, manifest_bytes),
        (&staged.sidecar, info.to_bytes()),
    ] {
        fs::write(path, bytes)
            .map_err(ImageError::io(format!("cannot write {}", path.display())))?;
    }
    // One syncfs for the whole staged tree instead of an fsync per unpacked file: the content
    // must be on disk before the index can point to it.
    File::open(dir)
        .and_then(|d| nix::unistd::syncfs(&d).map_err(std::io::Error::from))
        .map_err(ImageError::io("cannot sync the staged import"))?;
    Ok(staged)
}

/// Finds the image `reference` names: full id, then name, then unique id prefix.
fn find(images: &[Loaded], reference: &str) -> Result<(usize, Matched), ImageError> {
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
fn complete_config(config: &mut ImageConfiguration, imported: &Imported, created: &str) {
    config.set_created(Some(created.to_string()));
    let mut rootfs = RootFs::default();
    rootfs.set_diff_ids(vec![format!("sha256:{}", imported.diff_id_hex)]);
    config.set_rootfs(rootfs);
    let mut history = History::default();
    history.set_created(Some(created.to_string()));
    history.set_created_by(Some("carton import".to_string()));
    config.set_history(Some(vec![history]));
}

fn build_manifest(
    imported: &Imported,
    config_hex: &str,
    config_size: u64,
) -> Result<ImageManifest, ImageError> {
    let layer_type = if imported.gzip {
        MediaType::ImageLayerGzip
    } else {
        MediaType::ImageLayer
    };
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            sha256_digest(config_hex)?,
        ))
        .layers(vec![Descriptor::new(
            layer_type,
            imported.blob_size,
            sha256_digest(&imported.blob_hex)?,
        )])
        .build()
        .map_err(|e| ImageError::Corrupt(format!("cannot build the manifest: {e}")))
}

/// Adds an index entry for `descriptor`'s manifest: named `reference`, or untagged. A
/// reference that named another image moves here; that image keeps an untagged entry if
/// nothing else names it (a dangling image, as in docker). An untagged entry of this manifest
/// is dropped once it has a name.
fn add_to_index(index: &mut ImageIndex, mut descriptor: Descriptor, reference: Option<&str>) {
    let mut manifests = index.manifests().clone();
    descriptor.set_annotations(None);
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

/// Drops the index entries for which `pred(manifest hex, ref name)` holds.
fn remove_descriptors(index: &mut ImageIndex, pred: impl Fn(&str, Option<&str>) -> bool) {
    let mut manifests = index.manifests().clone();
    manifests.retain(|d| {
        let hex = manifest_hex(d).unwrap_or_default();
        !pred(&hex, ref_name(d))
    });
    index.set_manifests(manifests);
}

fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .map(String::as_str)
}

/// The hex of an index entry that is an image manifest stored by sha256.
fn manifest_hex(descriptor: &Descriptor) -> Option<String> {
    if *descriptor.media_type() != MediaType::ImageManifest {
        return None;
    }
    sha256_hex_of(descriptor.digest())
}

fn sha256_hex_of(digest: &Digest) -> Option<String> {
    let text = digest.to_string();
    let hex = text.strip_prefix("sha256:")?;
    is_sha256_hex(hex).then(|| hex.to_string())
}

fn sha256_digest(hex: &str) -> Result<Digest, ImageError> {
    Digest::from_str(&format!("sha256:{hex}"))
        .map_err(|e| ImageError::Corrupt(format!("invalid digest sha256:{hex}: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value)
        .map_err(|e| ImageError::Corrupt(format!("cannot serialise JSON: {e}")))
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], hex: &str) -> Result<T, ImageError> {
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

/// Content moved into the store by an import that has not reached the index yet. Dropped
/// without [`Rollback::commit`] (an error, a panic), it removes that content again so that the
/// store is exactly as before the import.
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
