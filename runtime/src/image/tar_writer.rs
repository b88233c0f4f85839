//! A streaming tar writer: POSIX ustar headers, with a PAX extended header in front of an entry
//! only when ustar cannot hold it (long names, big ids or sizes, xattrs). The `tar` crate's
//! builder writes GNU extensions and no PAX, and validates paths in ways a layer (names such as
//! `.wh.x`, raw bytes) must not be subjected to; this writer takes the bytes as given.
//!
//! Times are whole seconds in the ustar field, as docker writes layers: sub-second times would
//! cost a PAX header per entry and make layers of identical content differ.

use std::io::{self, BufWriter, Read, Write};

const BLOCK: usize = 512;
/// Buffer of the [`BufWriter`] a plain writer is wrapped in ([`buffered`]).
const COPY_BUF: usize = 256 * 1024;

/// Where a tar stream goes. File data is handed over by [`Sink::copy_from`], so that a sink
/// with a buffer of its own reads the file straight into it instead of through an
/// intermediate buffer (`perf` showed that copy at 9% of a commit).
pub(crate) trait Sink: Write {
    /// Copies up to `limit` bytes of `data` (fewer only at its end); returns how many.
    fn copy_from(&mut self, data: &mut dyn Read, limit: u64) -> io::Result<u64>;
}

impl Sink for Vec<u8> {
    fn copy_from(&mut self, data: &mut dyn Read, limit: u64) -> io::Result<u64> {
        data.take(limit).read_to_end(self).map(|n| n as u64)
    }
}

/// `io::copy` into a `BufWriter` reads straight into the writer's buffer.
impl<W: Write> Sink for BufWriter<W> {
    fn copy_from(&mut self, data: &mut dyn Read, limit: u64) -> io::Result<u64> {
        io::copy(&mut data.take(limit), self)
    }
}

/// Any writer as a [`Sink`], behind a 256 KiB buffer (`io::copy` to an unbuffered writer reads
/// 8 KiB at a time, a syscall each).
pub(crate) fn buffered<W: Write>(out: W) -> BufWriter<W> {
    BufWriter::with_capacity(COPY_BUF, out)
}

/// Largest value of an 8-byte octal field (uid, gid, mode) and of the 12-byte ones.
const MAX_OCTAL_8: u64 = 0o7_777_777;
const MAX_OCTAL_12: u64 = 0o77_777_777_777;

/// What an entry is, with what its type needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    /// A regular file of this many bytes (the data follows).
    File(u64),
    Symlink(Vec<u8>),
    /// A hard link to an earlier entry of the archive (its path).
    HardLink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// One archive member's header.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// Relative path, without `./` and without a trailing `/` (added for directories).
    pub(crate) path: Vec<u8>,
    pub(crate) kind: Kind,
    /// Permission bits with setuid/setgid/sticky.
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Seconds since the epoch.
    pub(crate) mtime: i64,
    /// (name, value), written as `SCHILY.xattr.<name>` PAX records.
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Writes members to `out`; [`TarWriter::finish`] adds the end-of-archive blocks.
pub(crate) struct TarWriter<W: Sink> {
    out: W,
    /// Bytes written (to pad and count).
    written: u64,
}

impl<W: Sink> TarWriter<W> {
    pub(crate) fn new(out: W) -> TarWriter<W> {
        TarWriter { out, written: 0 }
    }

    /// Appends one member. For a file, `data` must yield at least `size` bytes; exactly `size`
    /// are written (a file that shrank while being read is an error, not a short entry).
    pub(crate) fn append(
        &mut self,
        member: &Member,
        data: Option<&mut dyn Read>,
    ) -> io::Result<()> {
        let mut path = member.path.clone();
        if member.kind == Kind::Dir && !path.ends_with(b"/") {
            path.push(b'/');
        }
        let size = match member.kind {
            Kind::File(size) => size,
            _ => 0,
        };
        let link: &[u8] = match &member.kind {
            Kind::Symlink(target) | Kind::HardLink(target) => target,
            _ => b"",
        };

        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let (name, prefix) = match split_ustar_name(&path) {
            Some(parts) => parts,
            None => {
                pax.push((b"path".to_vec(), path.clone()));
                (truncate(&path, 100), &b""[..])
            }
        };
        if link.len() > 100 {
            pax.push((b"linkpath".to_vec(), link.to_vec()));
        }
        for (key, id) in [("uid", member.uid), ("gid", member.gid)] {
            if u64::from(id) > MAX_OCTAL_8 {
                pax.push((key.as_bytes().to_vec(), id.to_string().into_bytes()));
            }
        }
        if size > MAX_OCTAL_12 {
            pax.push((b"size".to_vec(), size.to_string().into_bytes()));
        }
        if member.mtime < 0 || member.mtime as u64 > MAX_OCTAL_12 {
            pax.push((b"mtime".to_vec(), member.mtime.to_string().into_bytes()));
        }
        for (key, value) in &member.xattrs {
            pax.push(([b"SCHILY.xattr.", key.as_slice()].concat(), value.clone()));
        }
        if !pax.is_empty() {
            self.pax_header(&pax)?;
        }

        let mut header = [0u8; BLOCK];
        put(&mut header[0..100], name);
        octal(&mut header[100..108], u64::from(member.mode & 0o7777));
        octal(
            &mut header[108..116],
            clamp(u64::from(member.uid), MAX_OCTAL_8),
        );
        octal(
            &mut header[116..124],
            clamp(u64::from(member.gid), MAX_OCTAL_8),
        );
        octal(&mut header[124..136], clamp(size, MAX_OCTAL_12));
        octal(
            &mut header[136..148],
            clamp(member.mtime.max(0) as u64, MAX_OCTAL_12),
        );
        header[156] = match member.kind {
            Kind::File(_) => b'0',
            Kind::HardLink(_) => b'1',
            Kind::Symlink(_) => b'2',
            Kind::Char(..) => b'3',
            Kind::Block(..) => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        };
        put(&mut header[157..257], truncate(link, 100));
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        if let Kind::Char(major, minor) | Kind::Block(major, minor) = member.kind {
            octal(&mut header[329..337], u64::from(major));
            octal(&mut header[337..345], u64::from(minor));
        }
        put(&mut header[345..500], prefix);
        checksum(&mut header);
        self.write(&header)?;

        if size > 0 {
            let data = data.ok_or_else(|| io::Error::other("a file member needs its data"))?;
            let copied = self.out.copy_from(data, size)?;
            self.written += copied;
            if copied != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} shrank while being archived ({copied} of {size} bytes)",
                        String::from_utf8_lossy(&member.path)
                    ),
                ));
            }
            self.pad()?;
        }
        Ok(())
    }

    /// Writes the two zero blocks that end an archive and returns the sink.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.write(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn pax_header(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
        let mut data = Vec::new();
        for (key, value) in records {
            data.extend(pax_record(key, value));
        }
        let mut header = [0u8; BLOCK];
        put(&mut header[0..100], b"././@PaxHeader");
        octal(&mut header[100..108], 0o644);
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], data.len() as u64);
        octal(&mut header[136..148], 0);
        header[156] = b'x';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        checksum(&mut header);
        self.write(&header)?;
        self.write(&data)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.written % BLOCK as u64) as usize;
        if rem != 0 {
            self.write(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }
}

/// ustar holds a path as `prefix/name` with name ≤ 100 and prefix ≤ 155 bytes, split at a '/'.
fn split_ustar_name(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((path, b""));
    }
    if path.len() > 256 {
        return None;
    }
    // The split point must leave a non-empty name of at most 100 bytes; a trailing '/' (of a
    // directory) stays with the name.
    let search_end = path.len().saturating_sub(1);
    (0..search_end)
        .rev()
        .filter(|&i| path[i] == b'/')
        .find(|&i| i <= 155 && path.len() - i - 1 <= 100 && i > 0)
        .map(|i| (&path[i + 1..], &path[..i]))
}

/// `"<len> key=value\n"` where len counts the whole record, its own digits included.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut record = format!("{len} ").into_bytes();
    record.extend_from_slice(key);
    record.push(b'=');
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

fn truncate(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

fn clamp(value: u64, max: u64) -> u64 {
    if value > max { 0 } else { value }
}

fn put(field: &mut [u8], bytes: &[u8]) {
    field[..bytes.len()].copy_from_slice(bytes);
}

/// Zero-padded octal with a NUL terminator, filling the field.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

fn checksum(header: &mut [u8; BLOCK]) {
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(path: &str, kind: Kind) -> Member {
        Member {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            xattrs: Vec::new(),
        }
    }

    /// (path, type, size, link, xattrs, data)
    type ReadBack = (String, u8, u64, String, Vec<String>, Vec<u8>);

    /// Reads an archive back with the `tar` crate.
    fn read_back(bytes: &[u8]) -> Vec<ReadBack> {
        let mut archive = tar::Archive::new(bytes);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            let kind = entry.header().entry_type().as_byte();
            let size = entry.size();
            let mut xattrs = Vec::new();
            if let Some(ext) = entry.pax_extensions().unwrap() {
                for e in ext {
                    let e = e.unwrap();
                    if let Some(k) = e.key().unwrap().strip_prefix("SCHILY.xattr.") {
                        xattrs.push(format!("{k}={}", String::from_utf8_lossy(e.value_bytes())));
                    }
                }
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            out.push((path, kind, size, link, xattrs, data));
        }
        out
    }

    #[test]
    fn members_round_trip_through_a_reader() {
        let mut w = TarWriter::new(Vec::new());
        w.append(&member("etc", Kind::Dir), None).unwrap();
        let mut data: &[u8] = b"root:x:0:0\n";
        w.append(&member("etc/passwd", Kind::File(11)), Some(&mut data))
            .unwrap();
        w.append(
            &member("etc/pw", Kind::HardLink(b"etc/passwd".to_vec())),
            None,
        )
        .unwrap();
        w.append(&member("bin/sh", Kind::Symlink(b"busybox".to_vec())), None)
            .unwrap();
        w.append(&member("dev/null", Kind::Char(1, 3)), None)
            .unwrap();
        w.append(&member(".wh.gone", Kind::File(0)), None).unwrap();
        let mut x = member("cap", Kind::File(0));
        x.xattrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
        w.append(&x, None).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % BLOCK, 0);
        let back = read_back(&bytes);
        let summary: Vec<(&str, u8, u64, &str)> = back
            .iter()
            .map(|(p, k, s, l, _, _)| (p.as_str(), *k, *s, l.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("etc/", b'5', 0, ""),
                ("etc/passwd", b'0', 11, ""),
                ("etc/pw", b'1', 0, "etc/passwd"),
                ("bin/sh", b'2', 0, "busybox"),
                ("dev/null", b'3', 0, ""),
                (".wh.gone", b'0', 0, ""),
                ("cap", b'0', 0, ""),
            ]
        );
        assert_eq!(back[1].5, b"root:x:0:0\n");
        assert_eq!(back[6].4, ["user.k=v"]);
    }

    #[test]
    fn long_names_links_and_ids_use_ustar_prefix_or_pax() {
        let mid = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let long = format!("{}/{}", "a".repeat(150), "b".repeat(150));
        let mut w = TarWriter::new(Vec::new());
        w.append(&member(&mid, Kind::File(0)), None).unwrap();
        w.append(&member(&long, Kind::File(0)), None).unwrap();
        w.append(&member("l", Kind::Symlink(long.clone().into_bytes())), None)
            .unwrap();
        let mut big = member("big-ids", Kind::File(0));
        big.uid = 4_000_000_000;
        big.gid = 3_000_000;
        w.append(&big, None).unwrap();
        let bytes = w.finish().unwrap();
        let back = read_back(&bytes);
        assert_eq!(back[0].0, mid);
        assert_eq!(back[1].0, long);
        assert_eq!(back[2].3, long);
        // Only the entries that need it carry a PAX header: 4 members + 2 PAX headers.
        let mut archive = tar::Archive::new(&bytes[..]);
        let raw = archive.entries().unwrap().raw(true).count();
        assert_eq!(
            raw, 7,
            "mid-length name fits ustar's prefix; long name, long link, big ids need PAX"
        );
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut entry = archive.entries().unwrap().nth(3).unwrap().unwrap();
        // The reader applies the PAX records over the (zeroed) ustar fields.
        assert_eq!(entry.header().uid().unwrap(), 4_000_000_000);
        assert_eq!(entry.header().gid().unwrap(), 3_000_000);
        let ext: Vec<String> = entry
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|e| e.unwrap().key().unwrap().to_string())
            .collect();
        assert_eq!(ext, ["uid", "gid"]);
    }

    #[test]
    fn a_file_that_shrank_is_an_error() {
        let mut w = TarWriter::new(Vec::new());
        let mut data: &[u8] = b"abc";
        let err = w
            .append(&member("f", Kind::File(10)), Some(&mut data))
            .unwrap_err();
        assert!(err.to_string().contains("shrank"), "{err}");
    }

    #[test]
    fn ustar_split_keeps_the_name_short() {
        assert_eq!(split_ustar_name(b"a/b"), Some((&b"a/b"[..], &b""[..])));
        let p = format!("{}/{}", "x".repeat(101), "y");
        let (name, prefix) = split_ustar_name(p.as_bytes()).unwrap();
        assert_eq!((name, prefix.len()), (&b"y"[..], 101));
        assert!(
            split_ustar_name("z".repeat(150).as_bytes()).is_none(),
            "no slash"
        );
        assert_eq!(pax_record(b"path", b"x"), b"9 path=x\n");
    }
}
