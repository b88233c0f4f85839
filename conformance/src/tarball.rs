//! Hand-built tar archives, byte by byte, so that tests can produce what well-behaved writers
//! refuse to: entries named `../x` or `/x`, symlinks followed by entries written through them,
//! archives cut in the middle of a header or of a file's data.
//!
//! Format: old GNU tar (magic `ustar  \0`), names and link targets longer than 100 bytes as GNU
//! `././@LongLink` records (types `L` and `K`), which GNU tar, bsdtar and the `tar` crate read.

use std::io::Write;

const BLOCK: usize = 512;

/// Where an entry landed in the archive, for truncation tests.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    /// Offset of the entry's (last) header block.
    pub header: usize,
    /// Offset of its data.
    pub data: usize,
    /// Length of its data (unpadded).
    pub len: usize,
}

#[derive(Default)]
pub struct TarBuilder {
    buf: Vec<u8>,
}

impl TarBuilder {
    pub fn new() -> TarBuilder {
        TarBuilder::default()
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> Placed {
        self.entry(path, b'5', mode, "", &[])
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Placed {
        self.entry(path, b'0', mode, "", data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Placed {
        self.entry(path, b'2', 0o777, target, &[])
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> Placed {
        self.entry(path, b'1', 0o644, target, &[])
    }

    /// Bytes so far (without the end-of-archive marker).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The archive with its end-of-archive marker (two zero blocks).
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&[0u8; 2 * BLOCK]);
        self.buf
    }

    fn entry(&mut self, path: &str, typeflag: u8, mode: u32, link: &str, data: &[u8]) -> Placed {
        if path.len() > 100 {
            self.long_record(b'L', path);
        }
        if link.len() > 100 {
            self.long_record(b'K', link);
        }
        let header = self.buf.len();
        self.buf
            .extend_from_slice(&header_block(path, typeflag, mode, link, data.len()));
        let data_at = self.buf.len();
        self.push_padded(data);
        Placed {
            header,
            data: data_at,
            len: data.len(),
        }
    }

    fn long_record(&mut self, typeflag: u8, name: &str) {
        let mut payload = name.as_bytes().to_vec();
        payload.push(0);
        self.buf.extend_from_slice(&header_block(
            "././@LongLink",
            typeflag,
            0o644,
            "",
            payload.len(),
        ));
        self.push_padded(&payload);
    }

    fn push_padded(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let rem = data.len() % BLOCK;
        if rem != 0 {
            self.buf.extend(std::iter::repeat_n(0u8, BLOCK - rem));
        }
    }
}

fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal in `width - 1` digits followed by NUL.
fn octal(field: &mut [u8], value: u64) {
    let s = format!("{value:0width$o}", width = field.len() - 1);
    put(field, s.as_bytes());
    field[field.len() - 1] = 0;
}

fn header_block(path: &str, typeflag: u8, mode: u32, link: &str, size: usize) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    put(&mut h[0..100], path.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0); // uid
    octal(&mut h[116..124], 0); // gid
    octal(&mut h[124..136], size as u64);
    octal(&mut h[136..148], 946_684_800); // mtime: 2000-01-01
    h[156] = typeflag;
    put(&mut h[157..257], link.as_bytes());
    put(&mut h[257..265], b"ustar  \0");
    put(&mut h[265..297], b"root");
    put(&mut h[297..329], b"root");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    put(&mut h[148..156], s.as_bytes());
    h
}

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

/// Deterministic bytes that are neither a tar archive nor a gzip stream (xorshift; never a
/// zero block, which a tar reader would take for an end-of-archive marker).
pub fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x as u8) | 0x01
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn tar_crate_reads_what_we_write() {
        let mut b = TarBuilder::new();
        b.dir("etc", 0o755);
        b.file("etc/hello", 0o600, b"hello world\n");
        b.symlink("link", "/somewhere/else");
        let long = format!("{}/file", "d".repeat(150));
        b.file(&long, 0o644, b"x");
        let long_target = "t/".repeat(80);
        b.symlink("longlink", &long_target);
        let bytes = b.finish();
        assert_eq!(bytes.len() % BLOCK, 0);

        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mode = e.header().mode().unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            seen.push((path, link, mode, data));
        }
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[1].0, "etc/hello");
        assert_eq!(seen[1].2, 0o600);
        assert_eq!(seen[1].3, b"hello world\n");
        assert_eq!(seen[2].1.as_deref(), Some("/somewhere/else"));
        assert_eq!(seen[3].0, long);
        assert_eq!(seen[4].1.as_deref(), Some(long_target.as_str()));
    }

    #[test]
    fn hostile_names_are_kept_verbatim() {
        let mut b = TarBuilder::new();
        b.file("../x", 0o644, b"x");
        b.file("/abs", 0o644, b"y");
        let bytes = b.finish();
        let mut archive = tar::Archive::new(&bytes[..]);
        let names: Vec<Vec<u8>> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().into_owned())
            .collect();
        assert_eq!(names, [b"../x".to_vec(), b"/abs".to_vec()]);
    }

    #[test]
    fn garbage_is_not_an_archive() {
        let g = garbage(4096, 7);
        assert!(g.iter().all(|&b| b != 0));
        assert_ne!(&g[..2], &[0x1f, 0x8b]);
        let mut archive = tar::Archive::new(&g[..]);
        let first = archive.entries().unwrap().next();
        assert!(
            matches!(first, Some(Err(_))),
            "garbage parsed as a tar entry"
        );
    }

    #[test]
    fn gzip_round_trip() {
        let z = gzip(b"abc");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abc");
    }
}
