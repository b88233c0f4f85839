//! The single pass over an imported archive. The input is read exactly once (it may be a
//! pipe): every raw byte is copied to the staged blob and hashed (blob digest); gzip is
//! detected by magic and decompressed; the uncompressed stream is hashed (diff_id) while the
//! tar entries are unpacked as they stream by.
//!
//! ```text
//! input ─▶ TeeHasher ─(raw)─▶ [gzip] ─▶ HashingReader ─(tar)─▶ tar::Archive ─▶ Unpacker
//!             └─▶ blob file + sha256          └─▶ sha256 (diff_id)
//! ```
//!
//! The archive must be complete: the tar reader treats end of input as a normal end, so
//! reaching it before the end-of-archive block (or inside an entry's data) is reported as a
//! truncated archive here.

use super::ImageError;
use super::digest::{HashingReader, TeeHasher, stream_error};
use super::unpack::Unpacker;
use flate2::read::MultiGzDecoder;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Read};
use std::path::Path;

/// What one pass produced (everything staged, nothing installed yet).
#[derive(Debug)]
pub(crate) struct Imported {
    /// sha256 hex of the raw input: the layer blob's name.
    pub(crate) blob_hex: String,
    pub(crate) blob_size: u64,
    pub(crate) gzip: bool,
    /// sha256 hex of the uncompressed tar: the layer's identity (rootfs.diff_ids).
    pub(crate) diff_id_hex: String,
    /// Bytes of regular file content in the layer.
    pub(crate) unpacked_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
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

/// Streams `input` into `blob_path` (created, must not exist) and unpacks it into
/// `layer_dir` (an existing empty directory). Nothing outside those two paths is written.
pub(crate) fn import_layer(
    input: impl Read,
    blob_path: &Path,
    layer_dir: &Path,
) -> Result<Imported, ImageError> {
    let blob = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(blob_path)
        .map_err(ImageError::io(format!(
            "cannot create {}",
            blob_path.display()
        )))?;
    let mut tee = TeeHasher::new(input, BufWriter::with_capacity(256 * 1024, blob));

    // Peek at the magic bytes through the tee (so they are stored and hashed), then put
    // them back in front of the rest of the stream.
    let mut prefix = [0u8; MAGIC_LEN];
    let mut filled = 0;
    while filled < MAGIC_LEN {
        match tee.read(&mut prefix[filled..]) {
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

    let mut unpacker = Unpacker::new(layer_dir)?;
    let diff_id_hex = {
        let raw = io::Cursor::new(&prefix[..filled]).chain(&mut tee);
        let tar_stream: Box<dyn Read + '_> = match compression {
            // Multi-member: `cat a.gz b.gz` is one valid gzip stream, as for gzip(1).
            Compression::Gzip => Box::new(MultiGzDecoder::new(raw)),
            Compression::None => Box::new(raw),
        };
        let mut hashing = HashingReader::new(tar_stream);
        let mut archive = tar::Archive::new(&mut hashing);
        let mut seen_entry = false;
        for entry in archive.entries().map_err(stream_error)? {
            let mut entry = entry.map_err(|e| header_error(e, seen_entry))?;
            seen_entry = true;
            unpacker.add(&mut entry)?;
        }
        if hashing.eof_seen() {
            return Err(ImageError::InvalidArchive(
                "unexpected end of file: the end-of-archive marker is missing (truncated?)".into(),
            ));
        }
        if unpacker.entries() == 0 {
            return Err(ImageError::InvalidArchive(
                "the archive has no entries".into(),
            ));
        }
        hashing.finish()?
    };
    let (blob_hex, blob_size, writer) = tee.finish()?;
    writer.into_inner().map_err(|e| {
        ImageError::io(format!("cannot write {}", blob_path.display()))(e.into_error())
    })?;
    let unpacked_size = unpacker.finish()?;
    Ok(Imported {
        blob_hex,
        blob_size,
        gzip: compression == Compression::Gzip,
        diff_id_hex,
        unpacked_size,
    })
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
