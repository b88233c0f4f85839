//! Test helpers: archives built in memory (including hostile ones the `tar` builder would
//! refuse to write), and tree snapshots to prove that a failed import changed nothing.

use super::digest::sha256_hex;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

/// Default mtime of test entries: 2020-09-13T12:26:40Z.
pub(crate) const MTIME: u64 = 1_600_000_000;

/// One archive member, with header fields written verbatim (no path validation).
pub(crate) struct Spec<'a> {
    pub(crate) path: &'a [u8],
    pub(crate) kind: EntryType,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: u64,
    pub(crate) link: &'a [u8],
    pub(crate) data: &'a [u8],
    pub(crate) device: (u32, u32),
}

impl<'a> Spec<'a> {
    pub(crate) fn new(path: &'a str, kind: EntryType) -> Spec<'a> {
        let mode = if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        };
        Spec {
            path: path.as_bytes(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: MTIME,
            link: b"",
            data: b"",
            device: (0, 0),
        }
    }
}

/// An archive under construction.
pub(crate) struct Tar {
    builder: tar::Builder<Vec<u8>>,
}

impl Tar {
    pub(crate) fn new() -> Tar {
        Tar {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    /// Appends a ustar header whose name and link fields hold exactly the given bytes.
    pub(crate) fn raw(&mut self, spec: Spec) -> &mut Tar {
        assert!(
            spec.path.len() <= 100 && spec.link.len() <= 100,
            "use long() for long names"
        );
        let mut header = Header::new_ustar();
        header.set_entry_type(spec.kind);
        header.set_size(spec.data.len() as u64);
        header.set_mode(spec.mode);
        header.set_uid(spec.uid);
        header.set_gid(spec.gid);
        header.set_mtime(spec.mtime);
        header.set_device_major(spec.device.0).unwrap();
        header.set_device_minor(spec.device.1).unwrap();
        let bytes = header.as_mut_bytes();
        bytes[..100].fill(0);
        bytes[..spec.path.len()].copy_from_slice(spec.path);
        bytes[157..257].fill(0);
        bytes[157..157 + spec.link.len()].copy_from_slice(spec.link);
        header.set_cksum();
        self.builder.append(&header, spec.data).unwrap();
        self
    }

    pub(crate) fn dir(&mut self, path: &str, mode: u32) -> &mut Tar {
        self.raw(Spec {
            mode,
            ..Spec::new(path, EntryType::Directory)
        })
    }

    pub(crate) fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Tar {
        self.raw(Spec {
            mode,
            data,
            ..Spec::new(path, EntryType::Regular)
        })
    }

    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> &mut Tar {
        self.raw(Spec {
            mode: 0o777,
            link: target.as_bytes(),
            ..Spec::new(path, EntryType::Symlink)
        })
    }

    pub(crate) fn hardlink(&mut self, path: &str, target: &str) -> &mut Tar {
        self.raw(Spec {
            link: target.as_bytes(),
            ..Spec::new(path, EntryType::Link)
        })
    }

    /// A member with a name longer than the header holds (GNU long name record).
    pub(crate) fn long(&mut self, path: &str, data: &[u8]) -> &mut Tar {
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(MTIME);
        self.builder.append_data(&mut header, path, data).unwrap();
        self
    }

    /// A PAX extended header ('x') describing the next member.
    pub(crate) fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tar {
        let mut data = Vec::new();
        for (key, value) in records {
            data.extend(pax_record(key, value));
        }
        self.raw(Spec {
            data: &data,
            ..Spec::new("././@PaxHeader", EntryType::XHeader)
        })
    }

    /// The complete archive (with its two zero end blocks).
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        self.builder.finish().unwrap();
        self.builder.get_ref().clone()
    }

    /// The members written so far, without the end-of-archive blocks.
    pub(crate) fn unterminated(&self) -> Vec<u8> {
        self.builder.get_ref().clone()
    }
}

/// `"<len> key=value\n"` where len counts the whole record, its own digits included.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Every path below `root` (not following symlinks) with its type, mode, owner, size and
/// content digest or link target: equal snapshots mean byte-identical trees.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, path: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let meta = fs::symlink_metadata(path).unwrap();
    let kind = meta.file_type();
    let detail = if kind.is_file() {
        format!("file {}", sha256_hex(&fs::read(path).unwrap()))
    } else if kind.is_symlink() {
        format!("symlink -> {}", fs::read_link(path).unwrap().display())
    } else if kind.is_dir() {
        "dir".to_string()
    } else {
        format!("special rdev={}", meta.rdev())
    };
    let rel = path.strip_prefix(root).unwrap().to_path_buf();
    out.insert(
        rel,
        format!(
            "{detail} mode={:o} owner={}:{} size={}",
            meta.permissions().mode(),
            meta.uid(),
            meta.gid(),
            if kind.is_dir() { 0 } else { meta.len() }
        ),
    );
    if kind.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            walk(root, &entry.unwrap().path(), out);
        }
    }
}

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn pax_record_lengths_count_themselves() {
    let record = pax_record("path", b"x");
    assert_eq!(record, b"9 path=x\n");
    assert_eq!(record.len(), 9);
    let long = pax_record("k", &[b'v'; 95]);
    assert_eq!(long.len().to_string(), String::from_utf8_lossy(&long[..3]));
}

/// The bytes of a layer blob in `store`, whichever way it is kept (file or record).
pub(crate) fn layer_blob(store: &super::ImageStore, hex: &str) -> Vec<u8> {
    let (mut stream, size) = store.layout.open_layer_blob(hex).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut bytes).unwrap();
    assert_eq!(
        bytes.len() as u64,
        size,
        "layer blob {hex}: its recorded length"
    );
    bytes
}
