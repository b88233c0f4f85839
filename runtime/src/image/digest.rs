//! sha256 helpers, [`HashingReader`] (the uncompressed tar stream of an import: diff_id, and
//! whether the stream ended) and [`HashingWriter`] (a blob as it is written).

use super::ImageError;
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

/// Lowercase hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// True for exactly 64 lowercase hex characters (a sha256 digest as the store writes it).
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Classifies an error met while reading an archive's content (bad gzip, bad tar header,
/// short data): the archive is invalid. Failures of the input itself are reported by the
/// stage that reads it, before this one sees a cut stream.
pub(crate) fn stream_error(e: io::Error) -> ImageError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        let detail = e.to_string();
        if detail.contains("end of file") {
            ImageError::InvalidArchive(detail)
        } else {
            ImageError::InvalidArchive(format!("unexpected end of file ({detail})"))
        }
    } else {
        ImageError::InvalidArchive(e.to_string())
    }
}

/// Hashes what passes through and remembers whether the stream ended: the tar parser stops
/// silently at end of input, so "ended before the end-of-archive block" must be seen here.
pub(crate) struct HashingReader<R> {
    inner: R,
    /// None when the caller already knows the digest (an uncompressed layer is its own diff).
    hasher: Option<Sha256>,
    eof_seen: bool,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Some(Sha256::new()),
            eof_seen: false,
        }
    }

    /// Watches for the end of the stream without hashing; `finish` then returns "".
    pub(crate) fn without_hash(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: None,
            eof_seen: false,
        }
    }

    pub(crate) fn eof_seen(&self) -> bool {
        self.eof_seen
    }

    /// Reads the rest of the stream (tar padding after the end-of-archive block, gzip
    /// trailer and CRC check) and returns the digest hex of everything that passed.
    pub(crate) fn finish(mut self) -> Result<String, ImageError> {
        io::copy(&mut self, &mut io::sink()).map_err(stream_error)?;
        Ok(self.hasher.map(|h| hex(&h.finalize())).unwrap_or_default())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof_seen = true;
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Hashes what is written through it, counting the bytes: the digest of a blob as it is
/// being written.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// (digest hex, length, the writer).
    pub(crate) fn finish(self) -> (String, u64, W) {
        (hex(&self.hasher.finalize()), self.len, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_sha256_hex(&sha256_hex(b"x")));
        assert!(!is_sha256_hex("E3B0"));
    }

    #[test]
    fn content_errors_are_the_archive_s() {
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "short read");
        assert!(
            matches!(stream_error(eof), ImageError::InvalidArchive(m) if m.contains("end of file"))
        );
        assert!(matches!(
            stream_error(io::Error::other("bad header")),
            ImageError::InvalidArchive(_)
        ));
    }
}
