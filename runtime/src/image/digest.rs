//! sha256 helpers and the two hashing readers of the single-pass import:
//! [`TeeHasher`] sees the raw input (blob digest, and a copy into the blob file) and
//! [`HashingReader`] sees the uncompressed tar stream (diff_id).
//!
//! Errors of the input itself and of the blob file travel through the tar and gzip decoders
//! as `io::Error`s; they are tagged ([`StreamFailure`]) so that [`stream_error`] can tell them
//! apart from malformed content, which is the archive's fault.

use super::ImageError;
use sha2::{Digest as _, Sha256};
use std::fmt;
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

/// Which side of the pipeline failed, when it was not the archive's content.
#[derive(Debug)]
enum StreamFailure {
    ReadInput(io::Error),
    WriteBlob(io::Error),
}

impl fmt::Display for StreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The context ("cannot read the archive input") is added by `stream_error`.
        match self {
            StreamFailure::ReadInput(e) | StreamFailure::WriteBlob(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StreamFailure {}

fn tagged(kind: io::ErrorKind, failure: StreamFailure) -> io::Error {
    io::Error::new(kind, failure)
}

/// Classifies an error met while reading the archive: our own I/O failures keep their cause,
/// everything else (bad gzip, bad tar header, short data) is an invalid archive.
pub(crate) fn stream_error(e: io::Error) -> ImageError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<StreamFailure>())
    {
        Some(StreamFailure::ReadInput(_)) => ImageError::Io {
            context: "cannot read the archive input".into(),
            source: e,
        },
        Some(StreamFailure::WriteBlob(_)) => ImageError::Io {
            context: "cannot write the layer blob".into(),
            source: e,
        },
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            let detail = e.to_string();
            if detail.contains("end of file") {
                ImageError::InvalidArchive(detail)
            } else {
                ImageError::InvalidArchive(format!("unexpected end of file ({detail})"))
            }
        }
        None => ImageError::InvalidArchive(e.to_string()),
    }
}

/// Passes the raw input through while copying it into `sink` and hashing it: the blob is
/// stored and digested in the same single read of the input.
pub(crate) struct TeeHasher<R, W> {
    source: R,
    sink: W,
    hasher: Sha256,
    len: u64,
}

impl<R: Read, W: Write> TeeHasher<R, W> {
    pub(crate) fn new(source: R, sink: W) -> Self {
        TeeHasher {
            source,
            sink,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Reads whatever the consumer left unread, then returns (digest hex, length, sink).
    pub(crate) fn finish(mut self) -> Result<(String, u64, W), ImageError> {
        io::copy(&mut self, &mut io::sink()).map_err(stream_error)?;
        Ok((hex(&self.hasher.finalize()), self.len, self.sink))
    }
}

impl<R: Read, W: Write> Read for TeeHasher<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.source.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(tagged(e.kind(), StreamFailure::ReadInput(e))),
            }
        };
        self.sink
            .write_all(&buf[..n])
            .map_err(|e| tagged(e.kind(), StreamFailure::WriteBlob(e)))?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Hashes what passes through and remembers whether the stream ended: the tar parser stops
/// silently at end of input, so "ended before the end-of-archive block" must be seen here.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    eof_seen: bool,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
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
        Ok(hex(&self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof_seen = true;
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
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
    fn tee_copies_and_hashes_everything_even_unread() {
        let data = b"hello world".to_vec();
        let mut tee = TeeHasher::new(&data[..], Vec::new());
        let mut first = [0u8; 5];
        tee.read_exact(&mut first).unwrap();
        let (digest, len, sink) = tee.finish().unwrap();
        assert_eq!(digest, sha256_hex(&data));
        assert_eq!(len, data.len() as u64);
        assert_eq!(sink, data);
    }

    #[test]
    fn input_failures_are_not_blamed_on_the_archive() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let mut tee = TeeHasher::new(Failing, Vec::new());
        let err = stream_error(tee.read(&mut [0u8; 4]).unwrap_err());
        assert!(matches!(err, ImageError::Io { .. }), "{err}");
        assert!(matches!(
            stream_error(io::Error::other("bad header")),
            ImageError::InvalidArchive(_)
        ));
    }
}
