//! The content-addressed image store: an OCI image layout under `<root>/images/`, plus the
//! unpacked layers that containers use as overlay lower directories.
//!
//! ```text
//! images/oci-layout                  {"imageLayoutVersion":"1.0.0"}
//! images/index.json                  one manifest descriptor per reference (ref.name = "repo:tag");
//!                                    an untagged image keeps one descriptor without the annotation
//! images/blobs/sha256/<hex>          gzip layer blobs (as imported/loaded), config and
//!                                    manifest JSON; a plain tar layer's blob only when it
//!                                    could not be recorded (see `split.rs`)
//! images/layers/<diff_id hex>/       the unpacked layer in overlay format (whiteouts are 0/0
//!                                    devices, opaque dirs carry trusted.overlay.opaque=y)
//! images/layers/<diff_id hex>.json   sidecar with facts about the layer (unpacked size)
//! images/layers/<diff_id hex>.split  a plain layer's blob as a tar-split record: the bytes
//!                                    that are not file data, references for the rest
//! images/l/<12 hex>                  short symlink → ../layers/<diff_id hex>, for mount options
//! images/tmp/<random>/               staging of in-progress work and garbage collection
//! ```
//!
//! An image is a manifest (config + layer blobs, bottom first); images share layers, which are
//! stored and unpacked once. Everything enters through a staged, synced batch that is moved
//! into place under the store lock and named in index.json last (`install.rs`): a failed
//! import, commit or load leaves the store exactly as it was.
//!
//! Files, one job each:
//! - `reference.rs`: `name[:tag]` validation and normalisation, id forms.
//! - `changes.rs`: `--change` instructions (CMD, ENV, …) applied to an image config.
//! - `digest.rs`: sha256 helpers and the hashing readers/writers of the streaming pipelines.
//! - `archive.rs`: compression detection and the layer pipeline (hash, unpack, and store the
//!   blob or record it); `pipe.rs`: the in-process pipe between its threads.
//! - `split.rs`: a plain layer's blob as a record beside its unpacked files, and its
//!   reassembly for `save`.
//! - `unpack.rs`: writing tar entries beneath a layer directory, kernel-enforced (openat2);
//!   OCI whiteouts become overlay whiteouts.
//! - `whiteout.rs`: the overlay ⇄ OCI whiteout rules, in one place.
//! - `tar_writer.rs`: ustar/PAX output; `layer_tar.rs`: a directory tree (an upper dir, or a
//!   merged rootfs) as a tar stream, overlay whiteouts becoming OCI whiteouts.
//! - `layout.rs`: paths, blobs, index.json, staging directories, short links, tree removal.
//! - `install.rs`: staged batches into the store (rollback on failure), manifests, index.
//! - `store.rs`: [`ImageStore`]: import, tag, list, resolve, remove, garbage collection.
//! - `commit.rs`: a container's upper dir as a new layer on its image.
//! - `history.rs`: `history` rows; `inspect.rs`: docker-shaped JSON.
//! - `save.rs`: images → an OCI layout archive with docker's manifest.json alongside.
//! - `load_archive.rs`, `load_formats.rs`, `load.rs`: docker-archive / oci-archive → store.

mod archive;
mod changes;
mod commit;
mod digest;
mod history;
mod inspect;
mod install;
mod layer_tar;
mod layout;
mod load;
mod load_archive;
mod load_formats;
mod pipe;
mod reference;
mod save;
mod split;
mod store;
mod tar_writer;
mod unpack;
mod whiteout;

#[cfg(test)]
mod layer_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use changes::apply_changes;
pub use commit::{Commit, CommitRequest};
pub use history::HistoryRow;
pub use inspect::inspect;
pub use layer_tar::write_rootfs_tar;
pub use layout::short_layer_path;
pub use load::LoadedImage;
pub use reference::normalize_reference;
pub use store::ImageStore;
pub use whiteout::layer_hides;

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the image store. The CLI prints these as they are.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No image matches the reference (docker's wording, which scripts grep for).
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("image reference {reference:?} is ambiguous: it matches {count} images")]
    Ambiguous { reference: String, count: usize },
    #[error("invalid reference format {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// The input is not a complete, well-formed tar archive (or gzip of one).
    #[error("invalid archive: {0}")]
    InvalidArchive(String),
    #[error("unsupported archive compression: {0} (carton imports plain or gzip-compressed tar)")]
    UnsupportedCompression(&'static str),
    /// A tar entry would be written outside the layer directory: the security boundary held.
    #[error("layer entry {path:?} escapes the layer: {reason}")]
    Escapes { path: String, reason: String },
    #[error("invalid change {change:?}: {reason}")]
    InvalidChange { change: String, reason: String },
    /// docker's refusal to delete by id an image that several references still name.
    #[error(
        "conflict: unable to delete {short_id} (must be forced) - image is referenced in multiple repositories"
    )]
    MultipleReferences { short_id: String },
    /// Something in the store does not match what the store itself wrote.
    #[error("image store is corrupt: {0}")]
    Corrupt(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
        move |source| ImageError::Io {
            context: context.into(),
            source,
        }
    }
}

/// One image of the store, as `images`, `inspect` and `run` need it.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:<64 hex>`: the digest of the config blob (docker's image id).
    pub id: String,
    /// `repo:tag` references naming this image; empty for an untagged (dangling) image.
    pub references: Vec<String>,
    pub config: oci_spec::image::ImageConfiguration,
    /// Absolute paths of the unpacked layer directories, bottom layer first.
    pub layers: Vec<PathBuf>,
    /// Bytes of unpacked content (regular file data), summed over the layers.
    pub size: u64,
}

impl Image {
    /// The 12 hex characters docker shows in `IMAGE ID` columns.
    pub fn short_id(&self) -> &str {
        let hex = self.id.strip_prefix("sha256:").unwrap_or(&self.id);
        &hex[..hex.len().min(12)]
    }

    /// When the image was created (RFC 3339), as recorded in its config.
    pub fn created(&self) -> Option<String> {
        self.config.created().clone()
    }
}

/// One step of `rmi`, in the order it happened; printed as `Untagged: …` / `Deleted: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Untagged(String),
    Deleted(String),
}
