//! An uncompressed layer kept once: its unpacked directory plus a small record of the rest of
//! its tar stream (headers, padding, the end-of-archive blocks), from which `save` gives back
//! the exact bytes of the blob — docker's tar-split idea, in a format of our own.
//!
//! Why: storing the blob next to the unpacked files wrote every layer twice, and the second
//! write was what kept `import`, `load` and `commit` above the cost of `tar -x` (a build that
//! skipped the blob write took an import of 200 MiB from 1.27× to 1.05× of `tar -x`). It also
//! halves the disk an image takes.
//!
//! While the unpacker reads the stream, the [`Recorder`] sees every byte (through
//! [`Recording`], a reader wrapped around the stream) and every entry before it is unpacked
//! (through [`Recorder::observe`]): a regular file's data becomes a reference to the file the
//! unpacker writes (path and length); every other byte is copied into the record.
//!
//! A reference is only good while the file keeps its content, so the recorder watches for an
//! entry that would replace a referenced file, or a directory above one (a path written twice,
//! a file replaced by a directory or a link). Before such an entry is unpacked, the layer
//! falls back to a stored blob: the stream so far is rebuilt from the record and the files
//! (all still intact), and the rest of the stream is copied as it passes ("spilling").
//!
//! The record (`layers/<diff_id hex>.split`):
//!
//! ```text
//! "ctsplit1"  total length of the stream (u64 LE)
//! then segments:  'R' len (u64 LE) bytes      — bytes copied from the stream
//!                 'F' len (u64 LE) n (u32 LE) path (n bytes, below the layer root)
//!                                             — len bytes: the content of that file
//!                 'E'                         — the end
//! ```
//!
//! [`Reassembly`] reads it back as a stream. The files are opened beneath the layer root
//! without following any symlink, and a file shorter or longer than recorded is an error;
//! the reader of the stream checks its digest (a file changed behind carton's back fails the
//! save instead of spreading).

use super::ImageError;
use super::unpack::{Effect, Seen, open_beneath, open_layer_dir};
use nix::fcntl::OFlag;
use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

const MAGIC: &[u8; 8] = b"ctsplit1";
const RAW: u8 = b'R';
const FILE: u8 = b'F';
const END: u8 = b'E';
/// Raw bytes held before they are written out as a segment (a long symlink target or a pax
/// record is small; this bounds what an odd entry with data of its own costs in memory).
const PENDING_MAX: usize = 1 << 20;
/// Paths a record may name are shorter (PATH_MAX): a longer one, which the unpacker can still
/// create below a parent it opened, could not be reopened in one `openat2` (ENAMETOOLONG), so
/// such a file's data is copied into the record instead.
const PATH_MAX: u32 = 4096;

/// How a recorded layer's blob ended up stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// As the record: no blob file.
    Record,
    /// As a blob file (an entry replaced a recorded file: see the module comment).
    Blob,
}

/// Records one layer's tar stream as it is unpacked into `layer_dir`. Lives on the unpacker's
/// thread: the stream adapter and the observer share its state.
pub(crate) struct Recorder {
    state: Rc<RefCell<State>>,
}

/// The stream, as the tar reader reads it, with every byte shown to the recorder.
pub(crate) struct Recording<R> {
    inner: R,
    state: Rc<RefCell<State>>,
}

struct State {
    /// Bytes of the stream passed so far.
    pos: u64,
    layer_root: OwnedFd,
    record_path: PathBuf,
    blob_path: PathBuf,
    sink: Sink,
    /// A write failure met while bytes passed (a `Read` can only say "I/O error").
    failed: Option<ImageError>,
}

enum Sink {
    Record(Record),
    Blob(BufWriter<File>),
}

struct Record {
    out: BufWriter<File>,
    /// Stream bytes from offset `pending_at` on, not yet written as a segment.
    pending: Vec<u8>,
    pending_at: u64,
    /// Bytes before this offset are the data of a referenced file.
    data_end: u64,
    /// Referenced files, and every directory above one.
    files: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
}

impl Recorder {
    /// Starts a record at `record_path` (created, must not exist) for the layer unpacked into
    /// `layer_dir`; `blob_path` (must not exist) is where a spill puts the blob.
    pub(crate) fn new(
        layer_dir: &Path,
        record_path: &Path,
        blob_path: &Path,
    ) -> Result<Recorder, ImageError> {
        let layer_root = open_layer_dir(layer_dir)?;
        let mut out = BufWriter::with_capacity(64 * 1024, create_new(record_path)?);
        out.write_all(MAGIC)
            .and_then(|()| out.write_all(&0u64.to_le_bytes()))
            .map_err(ImageError::io(format!(
                "cannot write {}",
                record_path.display()
            )))?;
        Ok(Recorder {
            state: Rc::new(RefCell::new(State {
                pos: 0,
                layer_root,
                record_path: record_path.to_path_buf(),
                blob_path: blob_path.to_path_buf(),
                sink: Sink::Record(Record {
                    out,
                    pending: Vec::new(),
                    pending_at: 0,
                    data_end: 0,
                    files: HashSet::new(),
                    dirs: HashSet::new(),
                }),
                failed: None,
            })),
        })
    }

    /// The stream to read through (every byte of it must pass).
    pub(crate) fn wrap<R: Read>(&self, inner: R) -> Recording<R> {
        Recording {
            inner,
            state: Rc::clone(&self.state),
        }
    }

    /// An entry, before the unpacker acts on it.
    pub(crate) fn observe(&self, seen: &Seen) -> Result<(), ImageError> {
        self.state.borrow_mut().observe(seen)
    }

    /// The write failure that cut the stream, if one did: it explains the tar reader's error.
    pub(crate) fn take_failure(&self) -> Option<ImageError> {
        self.state.borrow_mut().failed.take()
    }

    /// Completes the record (or the spilled blob) once the whole stream has passed.
    pub(crate) fn finish(self) -> Result<Kept, ImageError> {
        let mut state = self.state.borrow_mut();
        if let Some(e) = state.failed.take() {
            return Err(e);
        }
        let pos = state.pos;
        let record_path = state.record_path.clone();
        let blob_path = state.blob_path.clone();
        match &mut state.sink {
            Sink::Record(record) => {
                let written = (|| {
                    record.flush_pending()?;
                    record.out.write_all(&[END])?;
                    record.out.flush()?;
                    record.out.get_ref().write_all_at(&pos.to_le_bytes(), 8)
                })();
                written.map_err(ImageError::io(format!(
                    "cannot write {}",
                    record_path.display()
                )))?;
                Ok(Kept::Record)
            }
            Sink::Blob(blob) => {
                blob.flush().map_err(ImageError::io(format!(
                    "cannot write {}",
                    blob_path.display()
                )))?;
                Ok(Kept::Blob)
            }
        }
    }
}

impl<R: Read> Read for Recording<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut state = self.state.borrow_mut();
        if let Err(e) = state.passed(&buf[..n]) {
            let message = e.to_string();
            state.failed = Some(e);
            return Err(io::Error::other(message));
        }
        Ok(n)
    }
}

impl State {
    fn passed(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        let start = self.pos;
        self.pos += bytes.len() as u64;
        match &mut self.sink {
            Sink::Record(record) => {
                // Bytes of a referenced file's data are not copied.
                let skip = record
                    .data_end
                    .saturating_sub(start)
                    .min(bytes.len() as u64);
                record.pending.extend_from_slice(&bytes[skip as usize..]);
                if record.pending.len() >= PENDING_MAX {
                    record.flush_pending().map_err(ImageError::io(format!(
                        "cannot write {}",
                        self.record_path.display()
                    )))?;
                }
                Ok(())
            }
            Sink::Blob(blob) => blob.write_all(bytes).map_err(ImageError::io(format!(
                "cannot write {}",
                self.blob_path.display()
            ))),
        }
    }

    fn observe(&mut self, seen: &Seen) -> Result<(), ImageError> {
        let Sink::Record(record) = &mut self.sink else {
            return Ok(());
        };
        if record.would_lose_data(seen) {
            return self.spill();
        }
        // A file's data is referenced when nothing of it has passed yet (the tar reader has
        // just read the headers before it); otherwise it is simply copied like any other byte.
        let reopenable = seen.path.as_os_str().len() < PATH_MAX as usize;
        if seen.effect == Effect::File
            && seen.data_len > 0
            && self.pos == seen.data_at
            && reopenable
        {
            record.reference(seen).map_err(ImageError::io(format!(
                "cannot write {}",
                self.record_path.display()
            )))?;
        }
        Ok(())
    }

    /// Turns the record into the blob: the stream so far rebuilt from the record and the
    /// files, then every byte still to come.
    fn spill(&mut self) -> Result<(), ImageError> {
        let Sink::Record(record) = &mut self.sink else {
            return Ok(());
        };
        log::debug!(
            "an entry replaces a recorded file: storing the layer blob at {}",
            self.blob_path.display()
        );
        let record_error = ImageError::io(format!("cannot write {}", self.record_path.display()));
        record.out.flush().map_err(record_error)?;
        let blob_error = || ImageError::io(format!("cannot write {}", self.blob_path.display()));
        let mut blob = BufWriter::with_capacity(256 * 1024, create_new(&self.blob_path)?);
        let (mut replay, _) = Reassembly::open_at(&self.record_path, &self.layer_root, false)?;
        let rebuilt =
            io::copy(&mut replay, &mut blob).map_err(|e| reassembly_error(e, blob_error()))?;
        if rebuilt != record.pending_at {
            return Err(ImageError::Corrupt(format!(
                "rebuilding the layer blob gave {rebuilt} bytes instead of {}",
                record.pending_at
            )));
        }
        blob.write_all(&record.pending).map_err(blob_error())?;
        let _ = std::fs::remove_file(&self.record_path);
        self.sink = Sink::Blob(blob);
        Ok(())
    }
}

impl Record {
    /// Whether unpacking `seen` could remove a referenced file (it or a directory above it):
    /// what is at its path is replaced unless both are directories.
    fn would_lose_data(&self, seen: &Seen) -> bool {
        match seen.effect {
            Effect::Nothing => false,
            Effect::Directory => self.files.contains(seen.path),
            Effect::File | Effect::Other => {
                self.files.contains(seen.path) || self.dirs.contains(seen.path)
            }
        }
    }

    /// The raw bytes up to the file's data, then a reference to the file for the data.
    fn reference(&mut self, seen: &Seen) -> io::Result<()> {
        self.flush_pending()?;
        let path = seen.path.as_os_str().as_bytes();
        self.out.write_all(&[FILE])?;
        self.out.write_all(&seen.data_len.to_le_bytes())?;
        self.out.write_all(&(path.len() as u32).to_le_bytes())?;
        self.out.write_all(path)?;
        self.data_end = seen.data_at + seen.data_len;
        self.pending_at = self.data_end;
        self.files.insert(seen.path.to_path_buf());
        for dir in seen.path.ancestors().skip(1) {
            if !self.dirs.insert(dir.to_path_buf()) {
                break;
            }
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.out.write_all(&[RAW])?;
        self.out
            .write_all(&(self.pending.len() as u64).to_le_bytes())?;
        self.out.write_all(&self.pending)?;
        self.pending_at += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

/// A recorded layer's tar stream, read back from its record and its unpacked files.
pub(crate) struct Reassembly {
    record: BufReader<File>,
    layer_root: OwnedFd,
    part: Part,
    /// False while a spill replays a record still being written (it has no end yet).
    complete: bool,
}

enum Part {
    /// Between segments: the next one is read from the record.
    Next,
    Raw(u64),
    File {
        file: File,
        left: u64,
        path: PathBuf,
    },
    Done,
}

impl Reassembly {
    /// Opens the record of a layer unpacked in `layer_dir`: the stream and its length.
    pub(crate) fn open(
        record_path: &Path,
        layer_dir: &Path,
    ) -> Result<(Reassembly, u64), ImageError> {
        Reassembly::open_at(record_path, &open_layer_dir(layer_dir)?, true)
    }

    /// `complete`: false for a record still being written (read up to where it is so far).
    fn open_at(
        record_path: &Path,
        layer_root: &OwnedFd,
        complete: bool,
    ) -> Result<(Reassembly, u64), ImageError> {
        let read_error = || ImageError::io(format!("cannot read {}", record_path.display()));
        let mut record =
            BufReader::with_capacity(64 * 1024, File::open(record_path).map_err(read_error())?);
        let mut header = [0u8; 16];
        record.read_exact(&mut header).map_err(read_error())?;
        let (magic, total) = header.split_at(8);
        if magic != MAGIC {
            return Err(ImageError::Corrupt(format!(
                "{} is not a layer record",
                record_path.display()
            )));
        }
        let total = u64::from_le_bytes(total.try_into().unwrap_or_default());
        let layer_root = layer_root
            .try_clone()
            .map_err(ImageError::io("cannot open the layer directory"))?;
        let reassembly = Reassembly {
            record,
            layer_root,
            part: Part::Next,
            complete,
        };
        Ok((reassembly, total))
    }

    /// Reads the next segment's head from the record.
    fn next_part(&mut self) -> io::Result<Part> {
        let mut tag = [0u8; 1];
        if self.record.read(&mut tag)? == 0 {
            return if self.complete {
                Err(bad_record("it ends before its end mark"))
            } else {
                Ok(Part::Done)
            };
        }
        match tag[0] {
            RAW => Ok(Part::Raw(read_u64(&mut self.record)?)),
            FILE => {
                let left = read_u64(&mut self.record)?;
                let mut n = [0u8; 4];
                self.record.read_exact(&mut n)?;
                let n = u32::from_le_bytes(n);
                if n == 0 || n >= PATH_MAX {
                    return Err(bad_record("a file reference has a bad path length"));
                }
                let mut path = vec![0u8; n as usize];
                self.record.read_exact(&mut path)?;
                let path = PathBuf::from(OsStr::from_bytes(&path));
                let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let fd = open_beneath(self.layer_root.as_fd(), &path, flags)
                    .map_err(|e| changed(&path, &format!("cannot be opened ({e})")))?;
                Ok(Part::File {
                    file: File::from(fd),
                    left,
                    path,
                })
            }
            END => Ok(Part::Done),
            _ => Err(bad_record("it has an unknown segment")),
        }
    }
}

impl Read for Reassembly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match &mut self.part {
                Part::Next => {
                    self.part = self.next_part().map_err(|e| match e.kind() {
                        io::ErrorKind::UnexpectedEof => bad_record("it ends inside a segment"),
                        _ => e,
                    })?
                }
                Part::Done => return Ok(0),
                Part::Raw(0) => self.part = Part::Next,
                Part::Raw(left) => {
                    let want = (*left).min(buf.len() as u64) as usize;
                    let n = self.record.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(bad_record("it ends inside a segment"));
                    }
                    *left -= n as u64;
                    return Ok(n);
                }
                Part::File {
                    file,
                    left: 0,
                    path,
                } => {
                    let mut probe = [0u8; 1];
                    if file.read(&mut probe)? != 0 {
                        return Err(changed(path, "is longer than when it was stored"));
                    }
                    self.part = Part::Next;
                }
                Part::File { file, left, path } => {
                    let want = (*left).min(buf.len() as u64) as usize;
                    let n = file.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(changed(path, "is shorter than when it was stored"));
                    }
                    *left -= n as u64;
                    return Ok(n);
                }
            }
        }
    }
}

/// An error of a [`Reassembly`] as the store reports it: the layer cannot be given back (a
/// damaged record, a changed file) unless it is a failure of `otherwise`'s kind (a write).
pub(crate) fn reassembly_error(
    e: io::Error,
    otherwise: impl FnOnce(io::Error) -> ImageError,
) -> ImageError {
    if e.kind() == io::ErrorKind::InvalidData {
        ImageError::Corrupt(e.to_string())
    } else {
        otherwise(e)
    }
}

fn bad_record(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("a layer record is damaged: {what}"),
    )
}

fn changed(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the layer file {} {what}: the layer was changed behind carton's back",
            path.display()
        ),
    )
}

fn read_u64(input: &mut impl Read) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    input.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

fn create_new(path: &Path) -> Result<File, ImageError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(ImageError::io(format!("cannot create {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::super::digest::sha256_hex;
    use super::super::testutil::{Tar, layer_blob};
    use super::super::{ImageError, ImageStore};
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    use std::fs;
    use std::path::PathBuf;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: ImageStore,
        images: PathBuf,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = ImageStore::open(&dir.path().join("state")).unwrap();
            let images = dir.path().join("state/images");
            Fixture {
                _dir: dir,
                store,
                images,
            }
        }

        /// Imports `tar` and says how its blob is kept: true for a record, false for a file.
        fn import(&self, tar: &[u8], name: &str) -> bool {
            self.store.import(tar, Some(name), &[]).unwrap();
            let hex = sha256_hex(tar);
            let file = self.images.join("blobs/sha256").join(&hex).exists();
            let record = self.images.join(format!("layers/{hex}.split")).exists();
            assert!(
                file != record,
                "kept exactly one way (file {file}, record {record})"
            );
            assert!(
                layer_blob(&self.store, &hex) == tar,
                "given back byte for byte"
            );
            record
        }

        fn layer(&self, tar: &[u8]) -> PathBuf {
            self.images.join("layers").join(sha256_hex(tar))
        }

        fn save(&self, name: &str) -> Result<Vec<u8>, ImageError> {
            let mut out = Vec::new();
            self.store.save(&[name.to_string()], &mut out).map(|()| out)
        }
    }

    #[test]
    fn a_plain_layer_is_kept_as_a_record_whatever_its_entries() {
        let f = Fixture::new();
        let long = format!("deep/{}/file", "d".repeat(120));
        let mut tar = Tar::new();
        tar.dir("deep", 0o755)
            .file("empty", b"", 0o644)
            .file("one", b"1", 0o644)
            .file("block", &[7u8; 512], 0o644)
            .file("big", &vec![0xa5u8; 70_000], 0o755)
            .symlink("link", "one")
            .hardlink("hard", "big")
            .pax(&[("path", b"pax/named"), ("mtime", b"1600000000.5")])
            .file("ignored-name", b"pax data", 0o644)
            .long(&long, b"long-named data");
        let mut bytes = tar.finish();
        // GNU tar pads to its 10 KiB record; some writers add more.
        bytes.resize(bytes.len().div_ceil(10240) * 10240 + 10240, 0);
        assert!(f.import(&bytes, "all:1"), "kept as a record");
        assert_eq!(
            fs::read(f.layer(&bytes).join("pax/named")).unwrap(),
            b"pax data"
        );
        let record = fs::metadata(
            f.images
                .join(format!("layers/{}.split", sha256_hex(&bytes))),
        );
        assert!(
            record.unwrap().len() < bytes.len() as u64 / 2,
            "the record holds no file data"
        );
        f.save("all:1").unwrap();
    }

    /// Adds entries to an archive.
    type Build = fn(&mut Tar) -> &mut Tar;

    #[test]
    fn an_entry_that_replaces_a_recorded_file_makes_it_a_blob_file() {
        let cases: [(&str, Build); 4] = [
            ("a path written twice", |t| {
                t.file("a", b"first", 0o644).file("a", b"second", 0o644)
            }),
            ("a file replaced by a directory", |t| {
                t.file("a", b"file", 0o644)
                    .dir("a", 0o755)
                    .file("a/b", b"inner", 0o644)
            }),
            ("a directory of files replaced by a symlink", |t| {
                t.file("d/x", b"inner", 0o644).symlink("d", "elsewhere")
            }),
            ("a file replaced by a hard link", |t| {
                t.file("a", b"a", 0o644)
                    .file("b", b"b", 0o644)
                    .hardlink("a", "b")
            }),
        ];
        for (case, build) in cases {
            let f = Fixture::new();
            let mut tar = Tar::new();
            tar.file("before", b"recorded before the replacement", 0o644);
            build(&mut tar).file("after", b"copied after it", 0o644);
            let bytes = tar.finish();
            assert!(!f.import(&bytes, "spilled:1"), "{case}: a blob file");
            f.save("spilled:1").unwrap();
        }
        // The last writer wins in the layer, as with tar -x.
        let f = Fixture::new();
        let bytes = Tar::new()
            .file("a", b"first", 0o644)
            .file("a", b"second", 0o644)
            .finish();
        f.import(&bytes, "twice:1");
        assert_eq!(fs::read(f.layer(&bytes).join("a")).unwrap(), b"second");
    }

    #[test]
    fn entries_that_keep_recorded_files_keep_the_record() {
        let f = Fixture::new();
        let bytes = Tar::new()
            .file("d/x", b"inner", 0o644)
            .dir("d", 0o700) // a directory stated after its content: kept
            .file("d/.wh.gone", b"", 0o644)
            .file("d/.wh..wh..opq", b"", 0o644)
            .hardlink("y", "d/x")
            .file("empty", b"", 0o644)
            .file("empty", b"", 0o644) // no data: nothing referenced
            .finish();
        assert!(f.import(&bytes, "kept:1"));
    }

    /// Archives drawn from a few paths, so that entries keep colliding: files of all sizes,
    /// directories, symlinks, hard links, whiteouts, in random order. Whatever the archive,
    /// the plain import (recorded, maybe spilled) gives back its exact bytes and unpacks the
    /// same tree as the gzip import of it (which records nothing), or both refuse it.
    #[test]
    fn random_archives_come_back_byte_for_byte_and_unpack_as_without_recording() {
        use super::super::testutil::{gzip, snapshot};
        const PATHS: [&str; 7] = ["a", "b", "d", "d/a", "d/e", "d/e/f", "d/.wh.a"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            // xorshift64*: enough to vary the archives, the same every run.
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        };
        let (mut recorded, mut spilled, mut refused) = (0, 0, 0);
        for _ in 0..120 {
            let mut tar = Tar::new();
            for _ in 0..1 + next(8) {
                let path = PATHS[next(PATHS.len())];
                let data = vec![b'x' + next(3) as u8; [0, 1, 511, 512, 513, 3000][next(6)]];
                match next(5) {
                    0 => tar.dir(path, 0o755),
                    1 => tar.symlink(path, PATHS[next(PATHS.len())]),
                    2 => tar.hardlink(path, PATHS[next(PATHS.len())]),
                    _ => tar.file(path, &data, 0o644),
                };
            }
            let bytes = tar.finish();
            let (plain, zipped) = (Fixture::new(), Fixture::new());
            let outcome = (
                plain.store.import(&bytes[..], Some("r:1"), &[]),
                zipped.store.import(&gzip(&bytes)[..], Some("r:1"), &[]),
            );
            match outcome {
                (Ok(_), Ok(_)) => {}
                (Err(_), Err(_)) => {
                    refused += 1;
                    continue;
                }
                (a, b) => panic!("plain {:?}, gzip {:?}", a.err(), b.err()),
            }
            let hex = sha256_hex(&bytes);
            assert!(
                layer_blob(&plain.store, &hex) == bytes,
                "given back byte for byte"
            );
            assert_eq!(
                snapshot(&plain.layer(&bytes)),
                snapshot(&zipped.layer(&bytes))
            );
            if plain.images.join(format!("layers/{hex}.split")).exists() {
                recorded += 1;
            } else {
                spilled += 1;
            }
        }
        // The draw covers all three outcomes (a change of seed must keep that true).
        assert!(
            recorded > 10 && spilled > 10 && refused > 0,
            "{recorded} {spilled} {refused}"
        );
    }

    #[test]
    fn a_changed_layer_file_fails_the_save_and_says_why() {
        let f = Fixture::new();
        let bytes = Tar::new()
            .file("a", b"the original content", 0o644)
            .finish();
        f.import(&bytes, "changed:1");
        let file = f.layer(&bytes).join("a");

        fs::write(&file, b"the modified content").unwrap();
        let err = f.save("changed:1").unwrap_err().to_string();
        assert!(err.contains("does not match its digest"), "{err}");

        fs::write(&file, b"short").unwrap();
        let err = f.save("changed:1").unwrap_err().to_string();
        assert!(err.contains("is shorter than when it was stored"), "{err}");

        fs::write(&file, b"the original content, and more").unwrap();
        let err = f.save("changed:1").unwrap_err().to_string();
        assert!(err.contains("is longer than when it was stored"), "{err}");

        fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &file).unwrap();
        let err = f.save("changed:1").unwrap_err().to_string();
        assert!(err.contains("layer file a cannot be opened"), "{err}");
    }

    #[test]
    fn a_store_with_blob_files_from_before_records_still_saves() {
        let f = Fixture::new();
        let bytes = Tar::new().file("a", b"content", 0o644).finish();
        f.import(&bytes, "old:1");
        let hex = sha256_hex(&bytes);
        let record = f.images.join(format!("layers/{hex}.split"));
        fs::remove_file(&record).unwrap();
        fs::write(f.images.join("blobs/sha256").join(&hex), &bytes).unwrap();
        let saved = f.save("old:1").unwrap();
        assert!(!saved.is_empty());
        assert!(layer_blob(&f.store, &hex) == bytes);
    }

    #[test]
    fn a_loaded_layer_the_store_has_unpacked_is_stored_once() {
        use super::super::testutil::{gzip, snapshot};
        let bytes = Tar::new().file("a", b"content", 0o644).finish();
        let source = Fixture::new();
        source.import(&bytes, "src:1");
        let archive = source.save("src:1").unwrap();
        let load = |f: &Fixture| {
            let mut file = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut file, &archive).unwrap();
            f.store.load_file(file).unwrap();
        };

        // The layer and its blob (as a record) are there: loading adds only the image.
        let f = Fixture::new();
        f.import(&bytes, "mine:1");
        let layers = snapshot(&f.images.join("layers"));
        let blob_files = snapshot(&f.images.join("blobs/sha256")).len();
        load(&f);
        assert_eq!(snapshot(&f.images.join("layers")), layers);
        assert_eq!(
            snapshot(&f.images.join("blobs/sha256")).len(),
            blob_files + 2,
            "the loaded image's config and manifest, no layer blob"
        );

        // The layer is there from a gzip blob: the plain blob is stored, as a file.
        let f = Fixture::new();
        f.store
            .import(&gzip(&bytes)[..], Some("zipped:1"), &[])
            .unwrap();
        load(&f);
        let hex = sha256_hex(&bytes);
        assert!(f.images.join("blobs/sha256").join(&hex).is_file());
        assert!(layer_blob(&f.store, &hex) == bytes);
        f.save("src:1").unwrap();
    }

    #[test]
    fn a_file_whose_path_is_too_long_to_reopen_is_copied_into_the_record() {
        let f = Fixture::new();
        // A parent path under PATH_MAX, the file's own path over it.
        let parent = vec!["d".repeat(249); 16].join("/");
        let path = format!("{parent}/{}", "f".repeat(200));
        assert!(parent.len() < 4096 && path.len() > 4096);
        let bytes = Tar::new().long(&path, b"deep data").finish();
        assert!(f.import(&bytes, "deep:1"), "kept as a record");
        // Read as the unpacker wrote it: the parent first, then the file relative to it.
        let layer = fs::File::open(f.layer(&bytes)).unwrap();
        let open = |dir: &fs::File, path: &str| -> fs::File {
            let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
            nix::fcntl::openat(dir, path, flags, Mode::empty())
                .unwrap()
                .into()
        };
        let file = open(&open(&layer, &parent), &"f".repeat(200));
        assert_eq!(std::io::read_to_string(file).unwrap(), "deep data");
        f.save("deep:1").unwrap();
    }

    #[test]
    fn rmi_removes_the_record_with_its_layer() {
        let f = Fixture::new();
        let bytes = Tar::new().file("a", b"content", 0o644).finish();
        f.import(&bytes, "gone:1");
        f.store.remove("gone:1", false).unwrap();
        let left: Vec<_> = fs::read_dir(f.images.join("layers")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
