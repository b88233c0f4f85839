//! The first pass of `load`: which files the outer archive holds, and where their bytes are.
//!
//! - [`ArchiveFiles::index`] — a plain tar in a regular file (`load -i FILE`): the member
//!   headers are read and their data skipped (seeked over); a member's bytes are later read in
//!   place, so a layer streams straight from the archive into the store, exactly like an
//!   import. The archive is read once for the layers, not copied first.
//! - [`ArchiveFiles::read`] — anything that cannot be read twice (stdin, a gzip'ed archive):
//!   read once, every regular file copied into staging and hashed on the way.
//!
//! Nothing here uses an archive path as a file system path: staged files get numbered names
//! (`<n>`), and archive paths are only keys of a map. An entry that climbs out (`../x`) or is
//! absolute is refused all the same, as is a link whose target would, because a well-formed
//! image archive never has one. Symlinks matter: docker's legacy format stores a layer that
//! two images share once, with `<id2>/layer.tar -> ../<id1>/layer.tar`.

use super::ImageError;
use super::archive::{Compression, detect_prefix};
use super::digest::{HashingReader, HashingWriter, stream_error};
use flate2::read::MultiGzDecoder;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tar::EntryType;

/// Metadata files (manifests, configs, indexes) are read into memory; no real one is near this.
const MAX_JSON: u64 = 32 << 20;
/// Symlink hops followed when resolving an archive path.
const MAX_HOPS: usize = 16;
const BLOCK: u64 = 512;

/// Where a member's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// Copied into staging; its sha256 was computed on the way.
    Staged { path: PathBuf, sha256: String },
    /// In the indexed archive file, from this offset.
    InArchive { offset: u64 },
}

/// A regular file of the archive.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) source: Source,
    pub(crate) size: u64,
}

impl Member {
    /// Identifies the bytes (two names may link to the same member).
    pub(crate) fn key(&self) -> String {
        match &self.source {
            Source::Staged { path, .. } => path.display().to_string(),
            Source::InArchive { offset } => format!("@{offset}"),
        }
    }
}

/// The archive's files by (cleaned) path.
#[derive(Debug, Default)]
pub(crate) struct ArchiveFiles {
    /// The archive itself, for in-place members.
    archive: Option<File>,
    files: HashMap<String, Member>,
    /// Symlinks (target resolved against the link's directory) and hard links.
    links: HashMap<String, String>,
}

impl ArchiveFiles {
    /// Indexes a plain (uncompressed) tar file without copying it.
    pub(crate) fn index(file: File) -> Result<ArchiveFiles, ImageError> {
        let len = file
            .metadata()
            .map_err(ImageError::io("cannot read the archive input"))?
            .len();
        if len == 0 {
            return Err(ImageError::InvalidArchive("the input is empty".into()));
        }
        // The tar reader goes from the file's current offset (a caller may have peeked).
        io::Seek::rewind(&mut &file).map_err(ImageError::io("cannot read the archive input"))?;
        let mut out = ArchiveFiles::default();
        // Where the last member's data ends (padded): the end-of-archive marker must follow.
        let mut end = 0u64;
        {
            let mut archive = tar::Archive::new(&file);
            for entry in archive.entries_with_seek().map_err(stream_error)? {
                let entry = entry.map_err(|e| out.entry_error(e))?;
                let offset = entry.raw_file_position();
                let size = entry.size();
                if offset.checked_add(size).is_none_or(|e| e > len) {
                    return Err(ImageError::InvalidArchive(format!(
                        "unexpected end of file in the data of {:?} (truncated?)",
                        String::from_utf8_lossy(&entry.path_bytes())
                    )));
                }
                end = (offset + size).div_ceil(BLOCK) * BLOCK;
                out.record(&entry, || {
                    Ok(Member {
                        source: Source::InArchive { offset },
                        size,
                    })
                })?;
            }
        }
        // The tar reader stops quietly at end of input: a missing marker means a cut archive.
        let mut marker = [0u8; BLOCK as usize];
        let complete = end + BLOCK <= len
            && file.read_exact_at(&mut marker, end).is_ok()
            && marker.iter().all(|b| *b == 0);
        if !complete {
            return Err(ImageError::InvalidArchive(
                "unexpected end of file: the end-of-archive marker is missing (truncated?)".into(),
            ));
        }
        out.archive = Some(file);
        out.check_not_empty()?;
        Ok(out)
    }

    /// Reads the whole archive (plain or gzip) into `dir` (an existing empty directory).
    pub(crate) fn read(input: impl Read, dir: &Path) -> Result<ArchiveFiles, ImageError> {
        let mut input = input;
        let mut prefix = [0u8; 6];
        let mut filled = 0;
        while filled < prefix.len() {
            match input.read(&mut prefix[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ImageError::io("cannot read the archive input")(e)),
            }
        }
        if filled == 0 {
            return Err(ImageError::InvalidArchive("the input is empty".into()));
        }
        let raw = io::Cursor::new(prefix[..filled].to_vec()).chain(input);
        let stream: Box<dyn Read> = match detect_prefix(&prefix[..filled])? {
            Compression::Gzip => Box::new(MultiGzDecoder::new(raw)),
            Compression::None => Box::new(raw),
        };
        let mut watched = HashingReader::without_hash(stream);
        let mut archive = tar::Archive::new(&mut watched);
        let mut out = ArchiveFiles::default();
        let mut buf = vec![0u8; 256 * 1024];
        let mut staged = 0usize;
        for entry in archive.entries().map_err(stream_error)? {
            let mut entry = entry.map_err(|e| out.entry_error(e))?;
            let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = dir.join(staged.to_string());
            let kind = entry.header().entry_type();
            if matches!(kind, EntryType::Regular | EntryType::Continuous) {
                staged += 1;
            }
            let member = |entry: &mut tar::Entry<'_, _>| stage(entry, &path, &shown, &mut buf);
            out.record_with(&mut entry, member)?;
        }
        if watched.eof_seen() {
            return Err(ImageError::InvalidArchive(
                "unexpected end of file: the end-of-archive marker is missing (truncated?)".into(),
            ));
        }
        watched.finish()?;
        out.check_not_empty()?;
        Ok(out)
    }

    /// A bad first header means the input is not an archive at all.
    fn entry_error(&self, e: io::Error) -> ImageError {
        if self.files.is_empty() && self.links.is_empty() {
            ImageError::InvalidArchive(format!(
                "the input is not an image archive (tar, plain or gzip): {}",
                stream_error(e)
            ))
        } else {
            stream_error(e)
        }
    }

    fn check_not_empty(&self) -> Result<(), ImageError> {
        if self.files.is_empty() {
            return Err(ImageError::InvalidArchive(
                "the archive holds no files".into(),
            ));
        }
        Ok(())
    }

    /// Records one entry whose data the caller does not need to read.
    fn record<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        member: impl FnOnce() -> Result<Member, ImageError>,
    ) -> Result<(), ImageError> {
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        self.add(&shown, kind, link, member)
    }

    /// Records one entry, letting `member` read its data (staging).
    fn record_with<'a, R: Read>(
        &mut self,
        entry: &mut tar::Entry<'a, R>,
        member: impl FnOnce(&mut tar::Entry<'a, R>) -> Result<Member, ImageError>,
    ) -> Result<(), ImageError> {
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        self.add(&shown, kind, link, || member(entry))
    }

    fn add(
        &mut self,
        shown: &str,
        kind: EntryType,
        link: Option<String>,
        member: impl FnOnce() -> Result<Member, ImageError>,
    ) -> Result<(), ImageError> {
        if kind.is_pax_global_extensions() || kind.is_dir() {
            return Ok(());
        }
        let path = clean(shown, "")?;
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let member = member()?;
                self.links.remove(&path);
                self.files.insert(path, member);
            }
            EntryType::Symlink | EntryType::Link => {
                let target = link.ok_or_else(|| {
                    ImageError::InvalidArchive(format!("link {shown:?} has no target"))
                })?;
                // A symlink is relative to its directory, a hard link to the archive root.
                let base = if kind == EntryType::Symlink {
                    parent(&path)
                } else {
                    ""
                };
                let resolved = clean(&target, base).map_err(|_| ImageError::Escapes {
                    path: shown.to_string(),
                    reason: format!("its link target {target:?} leaves the archive"),
                })?;
                self.files.remove(&path);
                self.links.insert(path, resolved);
            }
            _ => log::debug!("ignoring archive entry {shown:?} of type {kind:?}"),
        }
        Ok(())
    }

    /// Whether the archive has `name` (after links).
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.get(name).is_ok()
    }

    /// The member at `name`, following links inside the archive.
    pub(crate) fn get(&self, name: &str) -> Result<&Member, ImageError> {
        let mut current = clean(name, "")?;
        for _ in 0..MAX_HOPS {
            if let Some(file) = self.files.get(&current) {
                return Ok(file);
            }
            match self.links.get(&current) {
                Some(target) => current = target.clone(),
                None => {
                    return Err(ImageError::InvalidArchive(format!(
                        "the archive has no {name:?}, which its manifest names"
                    )));
                }
            }
        }
        Err(ImageError::InvalidArchive(format!(
            "{name:?} is a chain of more than {MAX_HOPS} links"
        )))
    }

    /// The member's bytes, as a stream.
    pub(crate) fn open(&self, member: &Member) -> Result<Box<dyn Read + Send + '_>, ImageError> {
        match (&member.source, &self.archive) {
            (Source::Staged { path, .. }, _) => Ok(Box::new(
                File::open(path)
                    .map_err(ImageError::io(format!("cannot read {}", path.display())))?,
            )),
            (Source::InArchive { offset }, Some(file)) => Ok(Box::new(Region {
                file,
                pos: *offset,
                end: offset + member.size,
            })),
            (Source::InArchive { .. }, None) => Err(ImageError::Corrupt(
                "an in-place member without its archive".into(),
            )),
        }
    }

    /// Reads and parses a (small) JSON file of the archive.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, ImageError> {
        let bytes = self.bytes(name)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::InvalidArchive(format!("{name}: {e}")))
    }

    /// The content of a (small) file of the archive.
    pub(crate) fn bytes(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let member = self.get(name)?;
        if member.size > MAX_JSON {
            return Err(ImageError::InvalidArchive(format!(
                "{name} is {} bytes, too large for image metadata",
                member.size
            )));
        }
        let mut bytes = Vec::with_capacity(member.size as usize);
        self.open(member)?
            .read_to_end(&mut bytes)
            .map_err(ImageError::io(format!(
                "cannot read {name} from the archive"
            )))?;
        Ok(bytes)
    }
}

/// Copies an entry's data into `path`, hashing it.
fn stage<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &Path,
    shown: &str,
    buf: &mut [u8],
) -> Result<Member, ImageError> {
    let size = entry.size();
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(ImageError::io(format!("cannot create {}", path.display())))?;
    let mut writer = HashingWriter::new(BufWriter::with_capacity(256 * 1024, file));
    let mut copied = 0u64;
    loop {
        let n = match entry.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(e)),
        };
        io::Write::write_all(&mut writer, &buf[..n])
            .map_err(ImageError::io(format!("cannot write {}", path.display())))?;
        copied += n as u64;
    }
    if copied != size {
        return Err(ImageError::InvalidArchive(format!(
            "unexpected end of file in the data of {shown:?} ({copied} of {size} bytes)"
        )));
    }
    let (sha256, _, writer) = writer.finish();
    writer
        .into_inner()
        .map_err(|e| ImageError::io(format!("cannot write {}", path.display()))(e.into_error()))?;
    Ok(Member {
        source: Source::Staged {
            path: path.to_path_buf(),
            sha256,
        },
        size,
    })
}

/// A member's data inside the archive file, read with pread (no shared file offset).
struct Region<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = (self.end - self.pos).min(buf.len() as u64) as usize;
        if left == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..left], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive file shrank while being read",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// `path` (relative to `base`, both inside the archive) as a normalised archive path: no
/// `.`, no empty components, `..` applied. Refuses absolute paths and climbing above the root.
pub(crate) fn clean(path: &str, base: &str) -> Result<String, ImageError> {
    let escapes = |reason: &str| ImageError::Escapes {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    if path.starts_with('/') {
        return Err(escapes("it is an absolute path"));
    }
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(escapes("it climbs out of the archive with '..'"));
                }
            }
            name => parts.push(name),
        }
    }
    Ok(parts.join("/"))
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_are_cleaned_and_confined() {
        assert_eq!(clean("./manifest.json", "").unwrap(), "manifest.json");
        assert_eq!(clean("blobs//sha256/./x", "").unwrap(), "blobs/sha256/x");
        assert_eq!(clean("../abc/layer.tar", "def").unwrap(), "abc/layer.tar");
        assert!(clean("../x", "").is_err());
        assert!(clean("a/../../x", "").is_err());
        assert!(clean("/etc/passwd", "").is_err());
        assert!(matches!(
            clean("../../x", "a"),
            Err(ImageError::Escapes { .. })
        ));
    }

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str, kind: EntryType) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(kind);
        b.append_link(&mut h, path, target).unwrap();
    }

    /// The archive both ways: read into staging, and indexed in place.
    fn both(bytes: &[u8]) -> Vec<Result<ArchiveFiles, ImageError>> {
        let dir = tempfile::tempdir().unwrap();
        let staged = ArchiveFiles::read(bytes, dir.path());
        let mut file = tempfile::tempfile().unwrap();
        io::Write::write_all(&mut file, bytes).unwrap();
        let indexed = ArchiveFiles::index(file);
        // The staged files must outlive the check: keep the directory.
        std::mem::forget(dir);
        vec![staged, indexed]
    }

    #[test]
    fn files_are_found_through_links_in_both_modes() {
        let bytes = archive(|b| {
            add(b, "one/layer.tar", b"layer bytes");
            link(b, "two/layer.tar", "../one/layer.tar", EntryType::Symlink);
            link(b, "three/layer.tar", "two/layer.tar", EntryType::Link);
            add(b, "manifest.json", b"[]");
        });
        for files in both(&bytes) {
            let files = files.unwrap();
            let one = files.get("one/layer.tar").unwrap();
            assert_eq!(files.bytes("one/layer.tar").unwrap(), b"layer bytes");
            if let Source::Staged { sha256, .. } = &one.source {
                assert_eq!(sha256, &super::super::digest::sha256_hex(b"layer bytes"));
            }
            assert_eq!(files.get("./two/layer.tar").unwrap().key(), one.key());
            assert_eq!(files.get("three/layer.tar").unwrap().key(), one.key());
            assert!(files.contains("manifest.json"));
            let err = files.get("blobs/sha256/missing").unwrap_err().to_string();
            assert!(err.contains("has no"), "{err}");
            let parsed: Vec<u8> = files.json("manifest.json").unwrap();
            assert!(parsed.is_empty());
        }
    }

    #[test]
    fn escaping_links_and_cut_archives_are_refused_in_both_modes() {
        let evil = archive(|b| {
            add(b, "a", b"x");
            link(b, "evil", "../../etc/passwd", EntryType::Symlink);
        });
        for result in both(&evil) {
            let err = result.unwrap_err();
            assert!(matches!(err, ImageError::Escapes { .. }), "{err}");
        }
        let whole = archive(|b| add(b, "big", &[7u8; 4096]));
        // Cut in the data, or right before the end-of-archive marker.
        for cut in [1024, whole.len() - 1024] {
            for result in both(&whole[..cut]) {
                let err = result.unwrap_err();
                assert!(
                    matches!(err, ImageError::InvalidArchive(_)),
                    "cut at {cut}: {err}"
                );
            }
        }
        for result in both(b"not a tar at all, just text......") {
            let err = result.unwrap_err();
            assert!(matches!(err, ImageError::InvalidArchive(_)), "{err}");
        }
    }
}
