//! The single pass over an imported archive. The input is read exactly once (it may be a
//! pipe) and hashed (the blob digest); its first bytes tell gzip from a plain tar; the
//! uncompressed stream is hashed (diff_id) while the tar entries are unpacked as they stream
//! by. A gzip blob is copied to a file as it passes; a plain one is kept as the unpacked files
//! plus a tar-split record of the rest, which the unpacker's thread writes (`split.rs`).
//!
//! ```text
//!  this thread                │ unpacker thread
//!  input ─▶ chunk ─▶ sha256 ──pipe─▶ [gzip] ─▶ HashingReader ─▶ tar ─▶ Unpacker
//!                      │         └─▶ [plain: Recording]   └─▶ sha256 (diff_id, if gzip)
//!                      └─channel─▶ [gzip: blob file] (blob writer thread)
//! ```
//!
//! The stages run on their own threads (scoped: all are joined before this returns, and
//! nothing forks meanwhile), sharing each chunk without copying it: hashing, storing the blob
//! and creating the layer's files overlap, which is what makes an import cost about what
//! `tar -x` costs. (With the blob written by the hashing thread, that thread was the longest
//! stage: `perf record` showed it at 59% of an import's samples.) An uncompressed layer is its
//! own diff, so it is hashed once.
//!
//! The archive must be complete: the tar reader treats end of input as a normal end, so
//! reaching it before the end-of-archive block (or inside an entry's data) is reported as a
//! truncated archive here.

use super::ImageError;
use super::digest::{HashingReader, hex, stream_error};
use super::pipe::{Chunk, ChunkSource, DEPTH, pipe};
use super::split::{Kept, Recorder};
use super::unpack::Unpacker;
use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

/// What one pass produced (everything staged, nothing installed yet).
#[derive(Debug)]
pub(crate) struct Imported {
    /// sha256 hex of the raw input: the layer blob's name.
    pub(crate) blob_hex: String,
    pub(crate) blob_size: u64,
    pub(crate) gzip: bool,
    /// Whether the blob was kept as its tar-split record ([`BlobPaths::record`]) rather than
    /// as a file ([`BlobPaths::file`]).
    pub(crate) record: bool,
    /// sha256 hex of the uncompressed tar: the layer's identity (rootfs.diff_ids).
    pub(crate) diff_id_hex: String,
    /// Bytes of regular file content in the layer.
    pub(crate) unpacked_size: u64,
    /// Entries in the archive (0 for an empty layer).
    pub(crate) entries: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
}

/// [`detect`] for other readers of possibly compressed archives.
pub(crate) fn detect_prefix(prefix: &[u8]) -> Result<Compression, ImageError> {
    detect(prefix)
}

/// Longest magic number we look at (xz's).
const MAGIC_LEN: usize = 6;

/// Identifies the compression from the first bytes. Only gzip is supported; other known
/// compressors get a specific error rather than a confusing tar checksum failure.
fn detect(prefix: &[u8]) -> Result<Compression, ImageError> {
    const KNOWN: [(&[u8], &str); 4] = [
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (b"BZh", "bzip2"),
        (&[0x04, 0x22, 0x4d, 0x18], "lz4"),
    ];
    if prefix.starts_with(&[0x1f, 0x8b]) {
        return Ok(Compression::Gzip);
    }
    match KNOWN.iter().find(|(magic, _)| prefix.starts_with(magic)) {
        Some((_, name)) => Err(ImageError::UnsupportedCompression(name)),
        None => Ok(Compression::None),
    }
}

/// Where [`import_layer`] may put a layer's blob: one of the two is created.
pub(crate) struct BlobPaths {
    /// The blob file (a compressed layer, or a plain one that could not be recorded).
    pub(crate) file: PathBuf,
    /// The tar-split record of a plain layer (`split.rs`).
    pub(crate) record: PathBuf,
}

impl BlobPaths {
    /// `<dir>/<name>` and `<dir>/<name>.split`, in a staging directory.
    pub(crate) fn staged(dir: &Path, name: &str) -> BlobPaths {
        BlobPaths {
            file: dir.join(name),
            record: dir.join(format!("{name}.split")),
        }
    }
}

/// Streams `input` into the layer blob and unpacks it into `layer_dir` (an existing empty
/// directory). A gzip blob is stored as a file; a plain tar is stored as its record, or as a
/// file when it cannot be (`Imported::record`). Nothing outside those paths is written. An
/// archive without entries is refused unless `allow_empty` (an unchanged commit).
pub(crate) fn import_layer(
    mut input: impl ChunkSource,
    blob: &BlobPaths,
    layer_dir: &Path,
    allow_empty: bool,
) -> Result<Imported, ImageError> {
    let read_error = || ImageError::io("cannot read the archive input");
    // The compression is known from the first bytes, before any stage starts: it decides
    // whether the blob is written as it passes (gzip) or recorded by the unpacker (plain).
    let mut first = Vec::new();
    let mut prefix = Vec::with_capacity(MAGIC_LEN);
    while prefix.len() < MAGIC_LEN {
        let Some(chunk) = input.next_chunk().map_err(read_error())? else {
            break;
        };
        let take = (MAGIC_LEN - prefix.len()).min(chunk.len());
        prefix.extend_from_slice(&chunk[..take]);
        first.push(chunk);
    }
    if prefix.is_empty() {
        return Err(ImageError::InvalidArchive("the input is empty".into()));
    }
    let compression = detect(&prefix)?;
    let blob_file = match compression {
        Compression::Gzip => Some(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&blob.file)
                .map_err(ImageError::io(format!(
                    "cannot create {}",
                    blob.file.display()
                )))?,
        ),
        Compression::None => None,
    };
    let mut unpacker = Unpacker::new(layer_dir)?;
    let (mut to_unpacker, from_reader) = pipe();
    let (to_blob, for_blob) = sync_channel::<Chunk>(DEPTH);
    std::thread::scope(|scope| {
        let unpacking = scope.spawn(move || {
            if compression == Compression::Gzip {
                // The blob writer keeps the blob: nothing to record.
                let (diff_id, entries) =
                    unpack_tar(from_reader, compression, &mut unpacker, allow_empty, None)?;
                return Ok::<_, ImageError>((diff_id, entries, unpacker.finish()?, false));
            }
            let recorder = Recorder::new(layer_dir, &blob.record, &blob.file)?;
            let stream = recorder.wrap(from_reader);
            let unpacked = unpack_tar(
                stream,
                compression,
                &mut unpacker,
                allow_empty,
                Some(&recorder),
            );
            // A failed write of the record or a spilled blob explains a cut stream.
            if let Some(e) = recorder.take_failure() {
                return Err(e);
            }
            let (diff_id, entries) = unpacked?;
            let size = unpacker.finish()?;
            let recorded = recorder.finish()? == Kept::Record;
            Ok((diff_id, entries, size, recorded))
        });
        let storing = scope.spawn(move || {
            let Some(mut file) = blob_file else {
                return Ok::<_, ImageError>(());
            };
            // Dropping the receiver on failure stops the reader's sends.
            for chunk in for_blob {
                file.write_all(&chunk).map_err(ImageError::io(format!(
                    "cannot write {}",
                    blob.file.display()
                )))?;
            }
            Ok(())
        });
        let to_blob = (compression == Compression::Gzip).then_some(to_blob);
        let read = (|| {
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut first = first.into_iter();
            loop {
                let chunk = match first.next() {
                    Some(chunk) => chunk,
                    None => match input.next_chunk().map_err(read_error())? {
                        Some(chunk) => chunk,
                        None => break,
                    },
                };
                hasher.update(&chunk[..]);
                size += chunk.len() as u64;
                // A stage that stopped says why when it is joined.
                let stored = to_blob
                    .as_ref()
                    .is_none_or(|b| b.send(chunk.clone()).is_ok());
                if !stored || to_unpacker.send_chunk(chunk).is_err() {
                    break;
                }
            }
            Ok::<_, ImageError>((hex(&hasher.finalize()), size))
        })();
        drop(to_blob);
        drop(to_unpacker);
        let stored = storing
            .join()
            .unwrap_or_else(|_| Err(ImageError::Corrupt("the blob writer panicked".into())));
        let unpacked = unpacking
            .join()
            .unwrap_or_else(|_| Err(ImageError::Corrupt("the unpacker panicked".into())));
        // A failed read or write explains a cut stream, not the other way round.
        let (blob_hex, blob_size) = read?;
        stored?;
        let (diff_id_hex, entries, unpacked_size, recorded) = unpacked?;
        Ok(Imported {
            // Uncompressed, the blob is the tar stream: one hash serves as both digests.
            diff_id_hex: diff_id_hex.unwrap_or_else(|| blob_hex.clone()),
            blob_hex,
            blob_size,
            gzip: compression == Compression::Gzip,
            record: recorded,
            unpacked_size,
            entries,
        })
    })
}

/// What unpacking a blob that is already stored (a loaded archive's layer) found.
#[derive(Debug)]
pub(crate) struct Unpacked {
    pub(crate) diff_id_hex: String,
    pub(crate) gzip: bool,
    pub(crate) unpacked_size: u64,
}

/// Unpacks the layer blob `input` (plain or gzip) into `layer_dir`; `blob_hex` is its
/// already-known digest (the diff_id when it is not compressed).
pub(crate) fn unpack_blob(
    mut input: impl Read,
    blob_hex: &str,
    layer_dir: &Path,
) -> Result<Unpacked, ImageError> {
    let (prefix, compression) = peek(&mut input)?;
    let mut unpacker = Unpacker::new(layer_dir)?;
    let raw = io::Cursor::new(prefix).chain(input);
    let (diff_id_hex, _) = unpack_tar(raw, compression, &mut unpacker, false, None)?;
    Ok(Unpacked {
        diff_id_hex: diff_id_hex.unwrap_or_else(|| blob_hex.to_string()),
        gzip: compression == Compression::Gzip,
        unpacked_size: unpacker.finish()?,
    })
}

/// The diff_id (sha256 of the uncompressed stream) of a layer blob and whether it is gzip;
/// None for the digest when the blob is not compressed (it is then its own diff_id).
pub(crate) fn diff_id_of(mut input: impl Read) -> Result<(Option<String>, bool), ImageError> {
    let (prefix, compression) = peek(&mut input)?;
    let raw = io::Cursor::new(prefix).chain(input);
    match compression {
        Compression::None => Ok((None, false)),
        Compression::Gzip => {
            let hashing = HashingReader::new(MultiGzDecoder::new(raw));
            Ok((Some(hashing.finish()?), true))
        }
    }
}

/// Reads the first bytes (through whatever the reader does with them) to identify the
/// compression; returns them to be put back in front of the rest.
fn peek(input: &mut impl Read) -> Result<(Vec<u8>, Compression), ImageError> {
    let mut prefix = [0u8; MAGIC_LEN];
    let mut filled = 0;
    while filled < MAGIC_LEN {
        match input.read(&mut prefix[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(e)),
        }
    }
    if filled == 0 {
        return Err(ImageError::InvalidArchive("the input is empty".into()));
    }
    let compression = detect(&prefix[..filled])?;
    Ok((prefix[..filled].to_vec(), compression))
}

/// Decompresses, walks the tar entries into `unpacker` and checks the archive is complete.
/// Returns the diff_id (None when the stream is not compressed: the caller's blob digest is
/// the same hash) and the number of entries.
fn unpack_tar(
    raw: impl Read,
    compression: Compression,
    unpacker: &mut Unpacker,
    allow_empty: bool,
    recorder: Option<&Recorder>,
) -> Result<(Option<String>, u64), ImageError> {
    let tar_stream: Box<dyn Read + '_> = match compression {
        // Multi-member: `cat a.gz b.gz` is one valid gzip stream, as for gzip(1).
        Compression::Gzip => Box::new(MultiGzDecoder::new(raw)),
        Compression::None => Box::new(raw),
    };
    let mut hashing = match compression {
        Compression::Gzip => HashingReader::new(tar_stream),
        Compression::None => HashingReader::without_hash(tar_stream),
    };
    let mut archive = tar::Archive::new(&mut hashing);
    let mut seen_entry = false;
    for entry in archive.entries().map_err(stream_error)? {
        let mut entry = entry.map_err(|e| header_error(e, seen_entry))?;
        seen_entry = true;
        unpacker.add_observed(&mut entry, &mut |seen| match recorder {
            Some(recorder) => recorder.observe(seen),
            None => Ok(()),
        })?;
    }
    if hashing.eof_seen() {
        return Err(ImageError::InvalidArchive(
            "unexpected end of file: the end-of-archive marker is missing (truncated?)".into(),
        ));
    }
    if unpacker.entries() == 0 && !allow_empty {
        return Err(ImageError::InvalidArchive(
            "the archive has no entries".into(),
        ));
    }
    let entries = unpacker.entries();
    let digest = hashing.finish()?;
    Ok((
        (compression == Compression::Gzip).then_some(digest),
        entries,
    ))
}

/// A bad first header means the input is not a tar at all; the tar reader's own message
/// (which quotes the garbage it tried to parse) only helps once something was recognised.
fn header_error(e: io::Error, seen_entry: bool) -> ImageError {
    match stream_error(e) {
        ImageError::InvalidArchive(detail) if !seen_entry => ImageError::InvalidArchive(format!(
            "the input is not a tar archive, plain or gzip-compressed ({})",
            detail.chars().take(60).collect::<String>()
        )),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_compression_by_magic() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]).unwrap(), Compression::Gzip);
        assert_eq!(detect(b"bin/").unwrap(), Compression::None);
        assert_eq!(detect(b"x").unwrap(), Compression::None);
        for (magic, name) in [
            (&[0xfd, b'7', b'z', b'X', b'Z', 0][..], "xz"),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0, 0][..], "zstd"),
            (&b"BZh91AY"[..], "bzip2"),
        ] {
            let err = detect(magic).unwrap_err();
            assert!(
                matches!(err, ImageError::UnsupportedCompression(n) if n == name),
                "{err}"
            );
            assert!(err.to_string().contains("archive"));
        }
    }
}
