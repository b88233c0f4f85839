//! A directory tree as a tar stream: a container's `upper/` as an OCI layer (commit), or a
//! flattened rootfs (export).
//!
//! The walk is fd-based: every directory is opened relative to its parent with O_NOFOLLOW, names
//! are never resolved from the root again, and symlinks are archived as links, never followed.
//! Entries are sorted by name so that the same tree always gives the same bytes (and the same
//! digest). Files are streamed through a fixed buffer, never held in memory.
//!
//! What is kept: type, permission bits (with setuid/setgid/sticky), owner, mtime (seconds),
//! symlink targets, hard links (the second name of an inode becomes a link to the first),
//! device numbers, and xattrs except overlayfs' own. Sockets cannot be archived and are skipped,
//! as GNU tar does.

use super::ImageError;
use super::tar_writer::{Kind, Member, Sink, TarWriter, buffered};
use super::whiteout;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstatat};
use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// How to read the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TreeKind {
    /// An overlayfs upper directory: whiteouts and opaque directories become OCI whiteouts.
    OverlayUpper,
    /// A plain tree (a merged rootfs): taken as it is.
    Plain,
}

/// What a walk wrote.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TreeStats {
    /// Members written (PAX headers not counted).
    pub(crate) entries: u64,
    /// Bytes of regular file content.
    pub(crate) content: u64,
}

/// Paths (relative, e.g. `etc/hosts`) to leave out of a tree.
#[derive(Debug, Clone, Default)]
pub(crate) struct Omit {
    /// Left out with everything below them.
    pub(crate) skip: HashSet<Vec<u8>>,
    /// Directories written only if something below them is: an upper directory that overlay
    /// copied up merely to hold a skipped placeholder, its metadata unchanged.
    pub(crate) unless_needed: HashSet<Vec<u8>>,
}

/// Writes the tree below `root` (not the root itself) to `out` as a complete tar archive.
pub(crate) fn write_tree<W: Sink>(
    root: BorrowedFd,
    out: W,
    kind: TreeKind,
    omit: &Omit,
) -> Result<(W, TreeStats), ImageError> {
    let mut walker = Walker {
        tar: TarWriter::new(out),
        kind,
        omit,
        pending: Vec::new(),
        links: HashMap::new(),
        stats: TreeStats::default(),
    };
    let root = reopen_dir(root, c".", "the tree root")?;
    walker.dir(root.as_fd(), &[])?;
    let out = walker
        .tar
        .finish()
        .map_err(ImageError::io("cannot write the archive"))?;
    Ok((out, walker.stats))
}

struct Walker<'a, W: Sink> {
    tar: TarWriter<W>,
    kind: TreeKind,
    omit: &'a Omit,
    /// Headers of `unless_needed` directories being walked, written before their first child.
    pending: Vec<Member>,
    /// (dev, ino) of multiply-linked inodes → the path they were first archived under.
    links: HashMap<(u64, u64), Vec<u8>>,
    stats: TreeStats,
}

impl<W: Sink> Walker<'_, W> {
    /// Archives the children of the directory `dir` (whose path in the archive is `prefix`).
    fn dir(&mut self, dir: BorrowedFd, prefix: &[u8]) -> Result<(), ImageError> {
        for name in sorted_names(dir, prefix)? {
            let path = join(prefix, name.to_bytes());
            if self.omit.skip.contains(&path) {
                continue;
            }
            let shown = String::from_utf8_lossy(&path).into_owned();
            let stat = match fstatat(dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                // Gone since the listing (only possible in a live tree): not part of it.
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(fs_error("inspect", &shown)(e)),
            };
            self.entry(dir, &name, path, &stat, &shown)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        parent: BorrowedFd,
        name: &CStr,
        path: Vec<u8>,
        stat: &FileStat,
        shown: &str,
    ) -> Result<(), ImageError> {
        let format = stat.st_mode & libc::S_IFMT;
        let upper = self.kind == TreeKind::OverlayUpper;
        if upper && whiteout::is_overlay_whiteout(stat.st_mode, stat.st_rdev) {
            // Overlay marks a deletion with a 0/0 device; OCI with an empty `.wh.` file.
            let mut member = member_of(stat, Kind::File(0), Vec::new());
            member.path = join(parent_of(&path), &whiteout::whiteout_name(name.to_bytes()));
            member.mode = 0o600;
            return self.append(&member, None, shown);
        }
        match format {
            libc::S_IFDIR => {
                let fd = reopen_dir(parent, name, shown)?;
                let (xattrs, opaque) = xattrs(XattrSource::Fd(fd.as_fd()), shown)?;
                let mut member = member_of(stat, Kind::Dir, xattrs);
                member.path = path.clone();
                if !opaque && self.omit.unless_needed.contains(&path) {
                    let depth = self.pending.len();
                    self.pending.push(member);
                    self.dir(fd.as_fd(), &path)?;
                    // Still pending: nothing below was written, so neither is the directory.
                    self.pending.truncate(depth);
                    return Ok(());
                }
                self.append(&member, None, shown)?;
                if upper && opaque {
                    // Right after its directory, before any child: the spec's order.
                    let mut marker = member_of(stat, Kind::File(0), Vec::new());
                    marker.path = join(&path, whiteout::OPAQUE_MARKER);
                    marker.mode = 0o600;
                    self.append(&marker, None, shown)?;
                }
                self.dir(fd.as_fd(), &path)
            }
            libc::S_IFSOCK => {
                log::warn!("skipping socket {shown:?}: sockets cannot be archived");
                Ok(())
            }
            _ => {
                if stat.st_nlink > 1 {
                    let key = (stat.st_dev, stat.st_ino);
                    if let Some(first) = self.links.get(&key) {
                        let mut member = member_of(stat, Kind::HardLink(first.clone()), Vec::new());
                        member.path = path;
                        return self.append(&member, None, shown);
                    }
                    self.links.insert(key, path.clone());
                }
                self.non_dir(parent, name, path, stat, shown)
            }
        }
    }

    fn non_dir(
        &mut self,
        parent: BorrowedFd,
        name: &CStr,
        path: Vec<u8>,
        stat: &FileStat,
        shown: &str,
    ) -> Result<(), ImageError> {
        let major = || libc::major(stat.st_rdev);
        let minor = || libc::minor(stat.st_rdev);
        let kind = match stat.st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                let fd = openat(
                    parent,
                    name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
                    Mode::empty(),
                )
                .map_err(fs_error("open", shown))?;
                let (xattrs, _) = xattrs(XattrSource::Fd(fd.as_fd()), shown)?;
                let size = stat.st_size as u64;
                let mut member = member_of(stat, Kind::File(size), xattrs);
                member.path = path;
                let mut file = File::from(fd);
                self.stats.content += size;
                return self.append(&member, Some(&mut file), shown);
            }
            libc::S_IFLNK => {
                let target = nix::fcntl::readlinkat(parent, name)
                    .map_err(fs_error("read symlink", shown))?;
                Kind::Symlink(target.as_bytes().to_vec())
            }
            libc::S_IFCHR => Kind::Char(major(), minor()),
            libc::S_IFBLK => Kind::Block(major(), minor()),
            libc::S_IFIFO => Kind::Fifo,
            other => {
                return Err(ImageError::Io {
                    context: format!("cannot archive {shown:?}"),
                    source: io::Error::other(format!("unknown file type {other:o}")),
                });
            }
        };
        let (xattrs, _) = xattrs(XattrSource::At(parent, name), shown)?;
        let mut member = member_of(stat, kind, xattrs);
        member.path = path;
        self.append(&member, None, shown)
    }

    fn append(
        &mut self,
        member: &Member,
        data: Option<&mut dyn io::Read>,
        shown: &str,
    ) -> Result<(), ImageError> {
        for parent in std::mem::take(&mut self.pending) {
            self.stats.entries += 1;
            self.tar.append(&parent, None).map_err(|e| ImageError::Io {
                context: format!("cannot archive {shown:?}"),
                source: e,
            })?;
        }
        self.stats.entries += 1;
        self.tar.append(member, data).map_err(|e| ImageError::Io {
            context: format!("cannot archive {shown:?}"),
            source: e,
        })
    }
}

fn member_of(stat: &FileStat, kind: Kind, xattrs: Xattrs) -> Member {
    Member {
        path: Vec::new(),
        kind,
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid,
        gid: stat.st_gid,
        mtime: stat.st_mtime,
        xattrs,
    }
}

/// Opens `name` below `parent` as a readable directory, never following a symlink.
fn reopen_dir(parent: BorrowedFd, name: &CStr, shown: &str) -> Result<OwnedFd, ImageError> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(fs_error("open directory", shown))
}

/// The directory's entry names (without `.` and `..`), sorted bytewise.
fn sorted_names(dir: BorrowedFd, prefix: &[u8]) -> Result<Vec<CString>, ImageError> {
    let shown = String::from_utf8_lossy(prefix).into_owned();
    let fd = reopen_dir(dir, c".", &shown)?;
    let mut listing = nix::dir::Dir::from_fd(fd).map_err(fs_error("list", &shown))?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(fs_error("list", &shown))?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// xattrs as (name, value), sorted by name.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Where to read xattrs from: an open fd, or a name relative to a directory fd (for symlinks
/// and device nodes, which must not be opened).
enum XattrSource<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a CStr),
}

/// The portable xattrs (sorted by name) and whether overlay marks the directory opaque.
fn xattrs(source: XattrSource, shown: &str) -> Result<(Xattrs, bool), ImageError> {
    // No fd-relative l*xattr before Linux 6.13: name the entry through the parent's magic
    // link, and let the l* calls not follow the final component.
    let path = match &source {
        XattrSource::Fd(_) => None,
        XattrSource::At(parent, name) => {
            let mut p = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
            p.extend_from_slice(name.to_bytes());
            Some(CString::new(p).map_err(|_| fs_error("read xattrs of", shown)(Errno::EINVAL))?)
        }
    };
    let list = |buf: &mut [u8]| -> isize {
        // SAFETY: the buffer is valid for its length; the fd and path are live.
        unsafe {
            match (&source, &path) {
                (XattrSource::Fd(fd), _) => {
                    libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                }
                (_, Some(p)) => libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
                _ => -1,
            }
        }
    };
    let get = |key: &CStr, buf: &mut [u8]| -> isize {
        // SAFETY: as above; the key is NUL-terminated.
        unsafe {
            match (&source, &path) {
                (XattrSource::Fd(fd), _) => libc::fgetxattr(
                    fd.as_raw_fd(),
                    key.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                ),
                (_, Some(p)) => {
                    libc::lgetxattr(p.as_ptr(), key.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                }
                _ => -1,
            }
        }
    };
    let names = match sized_read(|buf| list(buf)) {
        Ok(names) => names,
        Err(Errno::ENOTSUP) => return Ok((Vec::new(), false)),
        Err(e) => return Err(fs_error("list xattrs of", shown)(e)),
    };
    let mut out = Vec::new();
    let mut opaque = false;
    for key in names.split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let key_c =
            CString::new(key).map_err(|_| fs_error("read xattrs of", shown)(Errno::EINVAL))?;
        let value = match sized_read(|buf| get(&key_c, buf)) {
            Ok(value) => value,
            // Removed between list and get.
            Err(Errno::ENODATA) => continue,
            Err(e) => return Err(fs_error("read xattrs of", shown)(e)),
        };
        if key == whiteout::OPAQUE_XATTR.as_bytes() {
            opaque = whiteout::is_opaque_value(&value);
        }
        if whiteout::is_portable_xattr(key) {
            out.push((key.to_vec(), value));
        }
    }
    out.sort();
    Ok((out, opaque))
}

/// Calls a list/get xattr function with a growing buffer until the value fits.
fn sized_read(mut call: impl FnMut(&mut [u8]) -> isize) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; 256];
    loop {
        let n = call(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        match Errno::last() {
            Errno::ERANGE if buf.len() < (1 << 20) => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            e => return Err(e),
        }
    }
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    if prefix.is_empty() {
        name.to_vec()
    } else {
        [prefix, b"/", name].concat()
    }
}

fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

fn fs_error<'a>(action: &'static str, shown: &'a str) -> impl FnOnce(Errno) -> ImageError + 'a {
    move |e| ImageError::Io {
        context: format!("cannot {action} {shown:?}"),
        source: e.into(),
    }
}

/// Writes the tree below `root` as a flattened rootfs archive (`export`): taken as it is,
/// mounts below it not being part of the tree a detached mount shows.
pub fn write_rootfs_tar<W: Write>(root: BorrowedFd, out: W) -> Result<(), ImageError> {
    write_tree(root, buffered(out), TreeKind::Plain, &Omit::default()).map(|_| ())
}

/// Opens a directory to walk (for callers holding a path).
pub(crate) fn open_tree_root(path: &std::path::Path) -> Result<OwnedFd, ImageError> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ImageError::Io {
        context: format!("cannot open {}", path.display()),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn members(bytes: &[u8]) -> Vec<(String, char, String)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e.link_name().unwrap().map(|l| l.display().to_string());
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type().as_byte() as char,
                    link.unwrap_or_default(),
                )
            })
            .collect()
    }

    fn walk(root: &std::path::Path, kind: TreeKind, omit: &Omit) -> Vec<(String, char, String)> {
        let fd = open_tree_root(root).unwrap();
        let (bytes, _) = write_tree(fd.as_fd(), Vec::new(), kind, omit).unwrap();
        members(&bytes)
    }

    #[test]
    fn an_upper_dir_becomes_a_sorted_oci_layer() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/hosts"), b"").unwrap();
        fs::create_dir_all(root.join("b")).unwrap();
        fs::write(root.join("b/z"), b"z").unwrap();
        fs::hard_link(root.join("b/z"), root.join("b/a")).unwrap();
        std::os::unix::fs::symlink("z", root.join("b/link")).unwrap();
        // Overlay's deletion mark; creating it needs no privilege since Linux 5.8.
        let whiteout = nix::sys::stat::mknod(
            &root.join("b/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            Mode::empty(),
            0,
        )
        .is_ok();

        let omit = Omit {
            skip: HashSet::from([b"etc/hosts".to_vec()]),
            unless_needed: HashSet::from([b"etc".to_vec()]),
        };
        let got = walk(root, TreeKind::OverlayUpper, &omit);
        let mut expected = vec![
            ("b/".to_string(), '5', String::new()),
            ("b/a".into(), '0', String::new()),
        ];
        if whiteout {
            expected.push(("b/.wh.gone".into(), '0', String::new()));
        }
        expected.extend([
            ("b/link".to_string(), '2', "z".to_string()),
            ("b/z".into(), '1', "b/a".into()),
        ]);
        assert_eq!(
            got, expected,
            "in the upper's name order; hard link to the first name; etc/ left out"
        );

        // A plain tree keeps everything as it is (a device stays a device).
        let plain = walk(root, TreeKind::Plain, &Omit::default());
        assert!(plain.iter().any(|m| m.0 == "etc/hosts"));
        if whiteout {
            assert!(plain.iter().any(|m| m.0 == "b/gone" && m.1 == '3'));
        }
    }
}
