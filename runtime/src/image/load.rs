//! `load`: the images of a docker-archive or oci-archive into the store, all or nothing.
//!
//! 1. the archive is indexed in place (a plain tar file) or read once into staging (a stream,
//!    or gzip) — `load_archive`;
//! 2. its manifests are read (`load_formats`) and every promise checked: each blob's content
//!    against its digest and size, each layer's uncompressed content against the config's
//!    diff_id. A layer new to the store goes through the same pipeline as `import` (hashed,
//!    unpacked by the same confined unpacker, its blob recorded or stored, on two threads);
//!    one the store already has is only hashed (and stored, unless the store holds its blob);
//! 3. the configs are stored byte for byte (an image keeps its id) with an OCI manifest for
//!    them, and everything is installed in one batch (`install.rs`).
//!
//! Any failure before the install leaves the store untouched: everything lived in staging.

use super::archive::{BlobPaths, detect_prefix, diff_id_of, import_layer, unpack_blob};
use super::digest::{HashingWriter, is_sha256_hex};
use super::install::{Batch, LayerBlob, StagedLayer, install_batch, stage_image, sync_staged};
use super::layout::{LayerInfo, Staging};
use super::load_archive::{ArchiveFiles, Member, Source};
use super::load_formats::{Blob, Planned, check_promise, plan, verified_bytes};
use super::pipe::Chunked;
use super::{ImageError, ImageStore};
use oci_spec::image::ImageConfiguration;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An image `load` installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// `sha256:<hex>` of its config.
    pub id: String,
    /// The names it got (empty: untagged).
    pub references: Vec<String>,
}

/// Where a load stages what it makes.
struct Work<'a> {
    files: &'a ArchiveFiles,
    layers_dir: PathBuf,
    blobs_dir: PathBuf,
    batch: Batch,
    /// diff_ids unpacked by this load.
    unpacked: HashSet<String>,
    /// Members already proven: member key → (blob, diff_id).
    proven: HashMap<String, (LayerBlob, String)>,
    /// Layer blobs staged so far (names their staged files).
    staged: usize,
}

impl ImageStore {
    /// Loads every image of the archive `input` (plain or gzip tar), read once as a stream.
    pub fn load(&self, input: impl Read) -> Result<Vec<LoadedImage>, ImageError> {
        let staging = Staging::new(&self.layout.tmp_dir())?;
        let files_dir = staging.path().join("files");
        fs::create_dir(&files_dir).map_err(ImageError::io("cannot create the staging area"))?;
        let files = ArchiveFiles::read(input, &files_dir)?;
        self.load_from(&staging, &files)
    }

    /// Loads every image of the archive file `file`. A plain tar is read in place — its
    /// layers stream from it into the store, as in an import — anything else as a stream.
    pub fn load_file(&self, file: File) -> Result<Vec<LoadedImage>, ImageError> {
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        let mut magic = [0u8; 6];
        let n = file.read_at(&mut magic, 0).unwrap_or(0);
        let plain = n > 0
            && matches!(detect_prefix(&magic[..n]), Ok(c) if c == super::archive::Compression::None);
        if !regular || !plain {
            if regular {
                // The whole file, wherever its offset was left.
                io::Seek::rewind(&mut &file)
                    .map_err(ImageError::io("cannot read the archive input"))?;
            }
            return self.load(file);
        }
        let staging = Staging::new(&self.layout.tmp_dir())?;
        let files = ArchiveFiles::index(file)?;
        self.load_from(&staging, &files)
    }

    fn load_from(
        &self,
        staging: &Staging,
        files: &ArchiveFiles,
    ) -> Result<Vec<LoadedImage>, ImageError> {
        let dir = staging.path();
        let mut work = Work {
            files,
            layers_dir: dir.join("layers"),
            blobs_dir: dir.join("blobs"),
            batch: Batch::default(),
            unpacked: HashSet::new(),
            proven: HashMap::new(),
            staged: 0,
        };
        for d in [&work.layers_dir, &work.blobs_dir] {
            fs::create_dir(d).map_err(ImageError::io(format!("cannot create {}", d.display())))?;
        }
        let planned = plan(files)?;
        let mut loaded = Vec::new();
        for (n, image) in planned.iter().enumerate() {
            let (config_bytes, diff_ids) = read_config(files, image)?;
            let mut blobs = Vec::new();
            for (blob, diff_id) in image.layers.iter().zip(&diff_ids) {
                let member = files.get(&blob.path)?;
                let layer = match work.proven.get(&member.key()) {
                    Some((layer, proven)) if proven == diff_id => layer.clone(),
                    Some(_) => return Err(mismatch(diff_id, "another diff_id")),
                    None => {
                        let layer = self.layer(&mut work, member, blob, diff_id)?;
                        work.proven
                            .insert(member.key(), (layer.clone(), diff_id.clone()));
                        layer
                    }
                };
                check_promise(blob, &layer.hex, layer.size)?;
                blobs.push(layer);
            }
            let staged = stage_image(
                &mut work.batch,
                dir,
                &format!("image{n}"),
                &config_bytes,
                &blobs,
                image.references.clone(),
            )?;
            loaded.push(LoadedImage {
                id: format!("sha256:{}", staged.config_hex),
                references: staged.references,
            });
        }
        sync_staged(dir)?;
        let _lock = self.layout.lock()?;
        install_batch(&self.layout, &work.batch)?;
        Ok(loaded)
    }

    /// Proves that `member` is the layer `diff_id` names and stages its blob (and, if the
    /// store does not have that layer yet, its unpacked directory).
    fn layer(
        &self,
        work: &mut Work<'_>,
        member: &Member,
        promised: &Blob,
        diff_id: &str,
    ) -> Result<LayerBlob, ImageError> {
        let have = self.layout.layer_dir(diff_id).is_dir() || work.unpacked.contains(diff_id);
        let input = work.files.open(member)?;
        let blob = BlobPaths::staged(&work.blobs_dir, &work.staged.to_string());
        work.staged += 1;
        let new_dir = |work: &Work<'_>| -> Result<PathBuf, ImageError> {
            let target = work.layers_dir.join(diff_id);
            fs::create_dir(&target)
                .and_then(|()| fs::set_permissions(&target, fs::Permissions::from_mode(0o755)))
                .map_err(ImageError::io(format!(
                    "cannot create {}",
                    target.display()
                )))?;
            Ok(target)
        };
        // (blob hex, staged blob file or record, gzip, actual diff_id, unpacked (dir, size))
        let (hex, staged_blob, gzip, actual, unpacked) = match (&member.source, have) {
            (Source::Staged { path, sha256 }, true) => {
                let (digest, gzip) = diff_id_of(input)?;
                let actual = digest.unwrap_or_else(|| sha256.clone());
                (
                    sha256.clone(),
                    Staged::Blob(path.clone()),
                    gzip,
                    actual,
                    None,
                )
            }
            (Source::Staged { path, sha256 }, false) => {
                let target = new_dir(work)?;
                let u = unpack_blob(input, sha256, &target)?;
                let size = u.unpacked_size;
                (
                    sha256.clone(),
                    Staged::Blob(path.clone()),
                    u.gzip,
                    u.diff_id_hex,
                    Some((target, size)),
                )
            }
            (Source::InArchive { .. }, true) => {
                // Read in place: a copy is staged only when the store lacks the blob (it
                // usually has it, maybe as the layer's record: a shared base layer).
                let hex = hash_of(input)?;
                let (digest, gzip) = diff_id_of(work.files.open(member)?)?;
                let actual = digest.unwrap_or_else(|| hex.clone());
                let staged = if self.layout.has_blob(&hex) {
                    Staged::InStore
                } else {
                    if copy_hashing(work.files.open(member)?, &blob.file)? != hex {
                        return Err(ImageError::InvalidArchive(
                            "the archive changed while it was read".into(),
                        ));
                    }
                    Staged::Blob(blob.file)
                };
                (hex, staged, gzip, actual, None)
            }
            (Source::InArchive { .. }, false) => {
                let target = new_dir(work)?;
                let imported = import_layer(Chunked::new(input), &blob, &target, false)?;
                let size = imported.unpacked_size;
                let staged = match imported.record {
                    true => Staged::Record(blob.record),
                    false => Staged::Blob(blob.file),
                };
                (
                    imported.blob_hex,
                    staged,
                    imported.gzip,
                    imported.diff_id_hex,
                    Some((target, size)),
                )
            }
        };
        // The blob's own digest first: a wrong one is the more specific complaint.
        check_promise(promised, &hex, member.size)?;
        if actual != diff_id {
            return Err(mismatch(diff_id, &format!("sha256:{actual}")));
        }
        let record = match staged_blob {
            Staged::Blob(path) => {
                work.batch.blobs.push((hex.clone(), path));
                None
            }
            Staged::Record(path) => Some(path),
            Staged::InStore => None,
        };
        if let Some((dir, size)) = unpacked {
            let sidecar = work.layers_dir.join(format!("{diff_id}.json"));
            fs::write(&sidecar, LayerInfo { size }.to_bytes()).map_err(ImageError::io(format!(
                "cannot write {}",
                sidecar.display()
            )))?;
            work.batch.layers.push(StagedLayer {
                diff_id_hex: diff_id.to_string(),
                dir,
                sidecar,
                record,
            });
            work.unpacked.insert(diff_id.to_string());
        }
        Ok(LayerBlob {
            hex,
            size: member.size,
            gzip,
        })
    }
}

/// How a load staged a layer's blob.
enum Staged {
    Blob(PathBuf),
    /// As the record of the layer it unpacked (`split.rs`).
    Record(PathBuf),
    /// Not staged: the store holds it already.
    InStore,
}

fn mismatch(diff_id: &str, actual: &str) -> ImageError {
    ImageError::InvalidArchive(format!(
        "a layer's content ({actual}) does not match the diff_id sha256:{diff_id} its image config names"
    ))
}

/// The sha256 hex of what `input` holds.
fn hash_of(mut input: impl Read) -> Result<String, ImageError> {
    let mut hashing = HashingWriter::new(io::sink());
    io::copy(&mut input, &mut hashing).map_err(ImageError::io("cannot read the archive"))?;
    Ok(hashing.finish().0)
}

/// Copies `input` into a new file at `path`; returns the sha256 hex of what was copied.
fn copy_hashing(mut input: impl Read, path: &Path) -> Result<String, ImageError> {
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(ImageError::io(format!("cannot create {}", path.display())))?;
    let mut writer = HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, file));
    io::copy(&mut input, &mut writer)
        .map_err(ImageError::io(format!("cannot write {}", path.display())))?;
    let (hex, _, writer) = writer.finish();
    writer
        .into_inner()
        .map_err(|e| ImageError::io(format!("cannot write {}", path.display()))(e.into_error()))?;
    Ok(hex)
}

/// The config's bytes (checked against its promised digest) and its diff_ids (hex), which
/// must pair up with the manifest's layers.
fn read_config(
    files: &ArchiveFiles,
    image: &Planned,
) -> Result<(Vec<u8>, Vec<String>), ImageError> {
    let bytes = verified_bytes(files, &image.config)?;
    let config: ImageConfiguration = serde_json::from_slice(&bytes).map_err(|e| {
        ImageError::InvalidArchive(format!("invalid image config {}: {e}", image.config.path))
    })?;
    let diff_ids = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| {
            d.strip_prefix("sha256:")
                .filter(|h| is_sha256_hex(h))
                .map(str::to_string)
                .ok_or_else(|| {
                    ImageError::InvalidArchive(format!("unsupported diff_id {d:?} in the config"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if diff_ids.len() != image.layers.len() {
        return Err(ImageError::InvalidArchive(format!(
            "the manifest lists {} layers but the config {} diff_ids",
            image.layers.len(),
            diff_ids.len()
        )));
    }
    Ok((bytes, diff_ids))
}
