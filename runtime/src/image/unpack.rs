//! Writes tar entries beneath one layer directory. This is a security boundary: an archive is
//! untrusted input and nothing it says may create or change a file outside the layer.
//!
//! The kernel enforces it, not string checks alone. The layer root is held as a directory fd;
//! every entry's parent directory is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
//! | RESOLVE_NO_MAGICLINKS)`, so a path that climbs out or passes through a symlink (one the
//! archive planted earlier, absolute or relative) fails with ELOOP/EXDEV instead of being
//! followed. The final component is then created relative to that parent fd with `*at()` calls
//! that never follow it (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW, O_EXCL after removing what was there).
//! `..` components and absolute paths are refused up front with a clearer message.
//!
//! Directory metadata (mode, owner, xattrs, times) is applied in [`Unpacker::finish`], deepest
//! first, after all content exists: creating children would otherwise bump the mtimes, and a
//! read-only directory could not be filled.
//!
//! The layer directory is an overlay lower dir, so OCI whiteouts are written the way overlayfs
//! reads them (see `whiteout.rs`): `.wh.X` becomes a 0/0 character device `X` (unless this
//! layer itself has `X`: a layer's whiteouts only hide what is below it), `.wh..wh..opq` sets
//! `trusted.overlay.opaque=y` on its directory. `trusted.overlay.*` xattrs that an archive
//! carries are dropped: only these two conversions may speak to overlayfs.

use super::ImageError;
use super::digest::stream_error;
use super::whiteout::{self, OciName};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, fstatat,
    futimens, makedev, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tar::EntryType;

/// Unpacks the entries of one archive into a fresh layer directory.
pub(crate) struct Unpacker {
    root: OwnedFd,
    /// Directory metadata to apply at the end, keyed by path below the root ("" = the root).
    dirs: HashMap<PathBuf, Meta>,
    /// Bytes of regular file content written (the layer's size).
    size: u64,
    entries: u64,
    /// Without root, ownership, device nodes and privileged xattrs are best effort.
    privileged: bool,
    /// What a freshly created entry already has, so the calls that would set it again are
    /// skipped (a layer has thousands of files; each call is a syscall).
    fresh: Fresh,
    /// The last parent directory opened, reused while entries stay in one directory. Only
    /// this unpacker changes the tree, and every removal goes through `clear()`, which forgets
    /// it: the fd then still names the directory that the path resolves to.
    last_parent: Option<(PathBuf, Arc<OwnedFd>)>,
    buf: Vec<u8>,
}

/// The owner and permission bits the kernel gives a file this process creates.
struct Fresh {
    uid: u32,
    gid: u32,
    /// False when the layer root is set-group-ID: new entries would take its group instead.
    gid_known: bool,
    /// None when it cannot be read: every mode is then set explicitly.
    umask: Option<u32>,
}

impl Fresh {
    fn of(root: BorrowedFd) -> Result<Fresh, Errno> {
        let root_mode = fstat(root)?.st_mode;
        Ok(Fresh {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            gid_known: root_mode & libc::S_ISGID == 0,
            umask: current_umask(),
        })
    }

    /// Whether a new entry must be chowned to get the archive's owner.
    fn needs_owner(&self, meta: &Meta) -> bool {
        meta.uid != self.uid || meta.gid != self.gid || !self.gid_known
    }

    /// The mode to create a regular file with, and whether it must still be chmod-ed:
    /// special bits never come from creation (a chown would clear them), nor do bits the
    /// umask takes away.
    fn file_mode(&self, meta: &Meta) -> (Mode, bool) {
        let wanted = meta.mode & 0o7777;
        match self.umask {
            Some(umask) => {
                let created = wanted & 0o777 & !umask;
                (Mode::from_bits_truncate(created), created != wanted)
            }
            None => (Mode::from_bits_truncate(0o600), true),
        }
    }
}

/// The process umask, from /proc/self/status: umask(2) can only read it by changing it,
/// which would race with other threads creating files.
fn current_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// What a tar header says about an entry's metadata.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// What an entry does to the layer, as an observer of [`Unpacker::add_observed`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Removes and replaces nothing (aufs metadata, a whiteout, an opaque marker).
    Nothing,
    /// A directory at the path: one already there is kept, anything else replaced.
    Directory,
    /// A regular file holding exactly the entry's data, replacing what was at the path.
    File,
    /// Anything else at the path (symlink, hard link, node, sparse file), replacing what was
    /// there.
    Other,
}

/// An entry about to be unpacked: where, what it does, and where its data lies in the tar
/// stream (`data_len` bytes from offset `data_at`).
pub(crate) struct Seen<'a> {
    pub(crate) path: &'a Path,
    pub(crate) effect: Effect,
    pub(crate) data_at: u64,
    pub(crate) data_len: u64,
}

/// How [`Unpacker::add_observed`] handles an entry: decided once, so that what the observer
/// is told is what is done.
enum Action {
    Aufs,
    Opaque,
    Whiteout(Vec<u8>),
    Directory,
    /// A file, link or node at the path, by the entry's type.
    Create,
}

impl Action {
    fn of(kind: EntryType, raw: &[u8], path: &Path) -> Action {
        if path
            .iter()
            .any(|c| whiteout::classify(c.as_bytes()) == OciName::AufsMeta)
        {
            return Action::Aufs;
        }
        if let Some(name) = path.file_name() {
            match whiteout::classify(name.as_bytes()) {
                OciName::Opaque => return Action::Opaque,
                OciName::Whiteout(target) => return Action::Whiteout(target.to_vec()),
                OciName::Plain | OciName::AufsMeta => {}
            }
        }
        // Pre-POSIX archives mark directories as regular files whose name ends in '/'.
        if kind.is_dir() || (kind == EntryType::Regular && raw.ends_with(b"/")) {
            return Action::Directory;
        }
        Action::Create
    }

    fn effect(&self, kind: EntryType) -> Effect {
        match self {
            Action::Aufs | Action::Opaque | Action::Whiteout(_) => Effect::Nothing,
            Action::Directory => Effect::Directory,
            Action::Create if matches!(kind, EntryType::Regular | EntryType::Continuous) => {
                Effect::File
            }
            Action::Create => Effect::Other,
        }
    }
}

/// An entry's name for messages (lossy UTF-8 of the archive's bytes).
type Shown<'a> = &'a str;

impl Unpacker {
    /// `layer_dir` must be an empty directory that only this unpacker writes to.
    pub(crate) fn new(layer_dir: &Path) -> Result<Unpacker, ImageError> {
        let root = open_layer_dir(layer_dir)?;
        let fresh = Fresh::of(root.as_fd()).map_err(|e| ImageError::Io {
            context: format!("cannot inspect layer directory {}", layer_dir.display()),
            source: e.into(),
        })?;
        Ok(Unpacker {
            root,
            dirs: HashMap::new(),
            size: 0,
            entries: 0,
            privileged: nix::unistd::geteuid().is_root(),
            fresh,
            last_parent: None,
            buf: vec![0; 128 * 1024],
        })
    }

    /// Number of entries unpacked so far (global PAX headers do not count).
    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    /// Creates one entry (reading its data from the archive), telling `observe` what it is about to do first (the tar-split
    /// recorder of `split.rs` must act before an entry replaces anything).
    pub(crate) fn add_observed<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        observe: &mut dyn FnMut(&Seen) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Archive-wide defaults (usually just a comment such as git's commit id).
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let path = clean_path(&raw).map_err(|reason| escapes(&shown, reason))?;
        let meta = read_meta(entry, &shown)?;
        self.entries += 1;

        let action = Action::of(kind, &raw, &path);
        observe(&Seen {
            path: &path,
            effect: action.effect(kind),
            data_at: entry.raw_file_position(),
            data_len: entry.size(),
        })?;
        match action {
            Action::Aufs => {
                log::debug!("skipping aufs metadata entry {shown:?}");
                return Ok(());
            }
            Action::Opaque => return self.opaque(&path, &shown),
            Action::Whiteout(target) => return self.whiteout(&path, &target, &shown),
            Action::Directory => return self.directory(path, meta, &shown),
            Action::Create => {}
        }
        let Some(name) = path.file_name().map(OsStr::to_os_string) else {
            return Err(ImageError::InvalidArchive(format!(
                "entry {shown:?} would replace the layer root with a non-directory"
            )));
        };
        let parent = self.parent_dir(&path, &shown)?;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, parent.as_fd(), &name, &path, &meta, &shown)
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| {
                    ImageError::InvalidArchive(format!("symlink {shown:?} has no target"))
                })?;
                let target = target.into_owned();
                self.symlink(parent.as_fd(), &name, &path, &target, &meta, &shown)
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().ok_or_else(|| {
                    ImageError::InvalidArchive(format!("hard link {shown:?} has no target"))
                })?;
                let target = target.into_owned();
                self.hard_link(parent.as_fd(), &name, &path, &target, &shown)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let header = entry.header();
                let device = |n: io::Result<Option<u32>>| {
                    n.map(Option::unwrap_or_default).map_err(|e| {
                        ImageError::InvalidArchive(format!(
                            "entry {shown:?}: bad device number: {e}"
                        ))
                    })
                };
                let dev = makedev(
                    device(header.device_major())?.into(),
                    device(header.device_minor())?.into(),
                );
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                self.node(parent.as_fd(), &name, &path, sflag, dev, &meta, &shown)
            }
            other => Err(ImageError::InvalidArchive(format!(
                "entry {shown:?} has an unsupported type {:?}",
                other.as_byte() as char
            ))),
        }
    }

    /// Applies the deferred directory metadata, deepest first; returns the content size.
    pub(crate) fn finish(mut self) -> Result<u64, ImageError> {
        let mut dirs: Vec<(PathBuf, Meta)> = std::mem::take(&mut self.dirs).into_iter().collect();
        dirs.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
        for (path, meta) in dirs {
            let shown = path.to_string_lossy();
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = match open_beneath(self.root.as_fd(), &path, flags) {
                Ok(fd) => fd,
                // A later entry replaced the directory; its metadata no longer applies.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                Err(e) => return Err(resolve_error(e, &shown)),
            };
            // Created owner-only (0700) by directory() or 0755 by parent_dir().
            self.apply_to_fd(fd.as_fd(), &meta, true, &shown)?;
        }
        Ok(self.size)
    }

    /// `.wh.X`: a 0/0 character device `X` next to it, unless this layer already has `X`.
    fn whiteout(&mut self, path: &Path, target: &[u8], shown: Shown) -> Result<(), ImageError> {
        if target.is_empty() || target == b"." || target == b".." {
            return Err(ImageError::InvalidArchive(format!(
                "whiteout {shown:?} does not name a file"
            )));
        }
        let parent = self.parent_dir(path, shown)?;
        let target = OsStr::from_bytes(target);
        match fstatat(parent.as_fd(), target, AtFlags::AT_SYMLINK_NOFOLLOW) {
            // An entry of this very layer: whiteouts only hide the layers below.
            Ok(_) => return Ok(()),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(fs_error("inspect", shown)(e)),
        }
        match mknodat(parent.as_fd(), target, SFlag::S_IFCHR, Mode::empty(), 0) {
            Ok(()) => Ok(()),
            Err(Errno::EPERM) if !self.privileged => {
                log::warn!("skipping whiteout {shown:?}: creating it needs privileges");
                Ok(())
            }
            Err(e) => Err(fs_error("create whiteout", shown)(e)),
        }
    }

    /// `.wh..wh..opq`: its directory hides everything the layers below have in it.
    fn opaque(&mut self, path: &Path, shown: Shown) -> Result<(), ImageError> {
        // Creates the directory if the archive did not list it (yet).
        self.parent_dir(path, shown)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd =
            open_beneath(self.root.as_fd(), dir, flags).map_err(|e| resolve_error(e, shown))?;
        if dir.as_os_str().is_empty() {
            // overlayfs never looks at the opaque flag of a layer's root.
            log::warn!("opaque marker {shown:?} at the layer root cannot hide the layers below");
        }
        let key = CString::new(whiteout::OPAQUE_XATTR).unwrap_or_default();
        let value = whiteout::OPAQUE_VALUE;
        // SAFETY: NUL-terminated key, valid value slice, live fd.
        let rc = unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        xattr_result(rc, &key, self.privileged, shown)
    }

    fn directory(&mut self, path: PathBuf, meta: Meta, shown: Shown) -> Result<(), ImageError> {
        if let Some(name) = path.file_name().map(OsStr::to_os_string) {
            let parent = self.parent_dir(&path, shown)?;
            // Owner-only until finish() applies the archive's mode.
            let mkdir = || {
                mkdirat(
                    parent.as_fd(),
                    name.as_os_str(),
                    Mode::from_bits_truncate(0o700),
                )
            };
            match mkdir() {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    if !self.clear(parent.as_fd(), &name, &path, true, shown)? {
                        mkdir().map_err(fs_error("create directory", shown))?;
                    }
                }
                Err(e) => return Err(fs_error("create directory", shown)(e)),
            }
        }
        // A repeated directory entry updates the metadata: the last one wins.
        self.dirs.insert(path, meta);
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: BorrowedFd,
        name: &OsStr,
        path: &Path,
        meta: &Meta,
        shown: Shown,
    ) -> Result<(), ImageError> {
        let (mode, chmod) = self.fresh.file_mode(meta);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = self
            .create_at(parent, name, path, shown, || {
                openat(parent, name, flags, mode)
            })?
            .map_err(fs_error("create file", shown))?;
        let mut file = File::from(fd);
        let mut written: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(stream_error(e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(fs_error("write file", shown))?;
            written += n as u64;
        }
        // The tar reader stops quietly at end of input: a short entry means a cut archive.
        if written != entry.size() {
            return Err(ImageError::InvalidArchive(format!(
                "unexpected end of file in the data of {shown:?} ({written} of {} bytes)",
                entry.size()
            )));
        }
        self.size += written;
        self.apply_to_fd(file.as_fd(), meta, chmod, shown)
    }

    fn symlink(
        &mut self,
        parent: BorrowedFd,
        name: &OsStr,
        path: &Path,
        target: &[u8],
        meta: &Meta,
        shown: Shown,
    ) -> Result<(), ImageError> {
        // The target is data for the container's view of its rootfs; it is never followed here.
        self.create_at(parent, name, path, shown, || {
            symlinkat(OsStr::from_bytes(target), parent, name)
        })?
        .map_err(fs_error("create symlink", shown))?;
        self.apply_at(parent, name, meta, false, shown)
    }

    fn hard_link(
        &mut self,
        parent: BorrowedFd,
        name: &OsStr,
        path: &Path,
        target: &[u8],
        shown: Shown,
    ) -> Result<(), ImageError> {
        let target_shown = String::from_utf8_lossy(target).into_owned();
        let target_path = clean_path(target).map_err(|reason| {
            escapes(
                shown,
                &format!("its hard link target {target_shown:?}: {reason}"),
            )
        })?;
        // O_PATH|O_NOFOLLOW: a link to a symlink links the symlink itself, never its target.
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let target_fd = open_beneath(self.root.as_fd(), &target_path, flags).map_err(|e| match e {
            Errno::ELOOP | Errno::EXDEV => escapes(
                shown,
                &format!("its hard link target {target_shown:?} goes through a symlink or leaves the layer"),
            ),
            Errno::ENOENT | Errno::ENOTDIR => ImageError::InvalidArchive(format!(
                "hard link {shown:?} points to {target_shown:?}, which is not in the archive before it"
            )),
            e => fs_error("open hard link target", shown)(e),
        })?;
        let target_stat =
            fstat(target_fd.as_fd()).map_err(fs_error("stat hard link target", shown))?;
        if is_dir(&target_stat) {
            return Err(ImageError::InvalidArchive(format!(
                "hard link {shown:?} points to the directory {target_shown:?}"
            )));
        }
        if let Ok(existing) = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            if existing.st_dev == target_stat.st_dev && existing.st_ino == target_stat.st_ino {
                return Ok(());
            }
        }
        self.clear(parent, name, path, false, shown)?;
        // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; without it, link through the fd's
        // /proc magic link (the documented way for O_PATH descriptors).
        match linkat(target_fd.as_fd(), "", parent, name, AtFlags::AT_EMPTY_PATH) {
            Ok(()) => Ok(()),
            Err(Errno::ENOENT | Errno::EPERM) => {
                let proc_path = format!("/proc/self/fd/{}", target_fd.as_raw_fd());
                linkat(
                    AT_FDCWD,
                    proc_path.as_str(),
                    parent,
                    name,
                    AtFlags::AT_SYMLINK_FOLLOW,
                )
                .map_err(fs_error("create hard link", shown))
            }
            Err(e) => Err(fs_error("create hard link", shown)(e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        parent: BorrowedFd,
        name: &OsStr,
        path: &Path,
        kind: SFlag,
        dev: u64,
        meta: &Meta,
        shown: Shown,
    ) -> Result<(), ImageError> {
        let mknod = || mknodat(parent, name, kind, Mode::from_bits_truncate(0o600), dev);
        match self.create_at(parent, name, path, shown, mknod)? {
            Ok(()) => {}
            Err(Errno::EPERM) if !self.privileged && kind != SFlag::S_IFIFO => {
                log::warn!("skipping device node {shown:?}: creating devices needs root");
                return Ok(());
            }
            Err(e) => return Err(fs_error("create device node", shown)(e)),
        }
        self.apply_at(parent, name, meta, true, shown)
    }

    /// Metadata of a symlink or node, by name relative to its parent, never following it.
    fn apply_at(
        &self,
        parent: BorrowedFd,
        name: &OsStr,
        meta: &Meta,
        chmod: bool,
        shown: Shown,
    ) -> Result<(), ImageError> {
        if self.fresh.needs_owner(meta) {
            let owner = fchownat(
                parent,
                name,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            tolerate_unprivileged(owner, self.privileged)
                .map_err(fs_error("change owner of", shown))?;
        }
        if chmod {
            // The name was created by us a moment ago in a private staging tree, and it is not
            // a symlink, so following is harmless (AT_SYMLINK_NOFOLLOW is unsupported here).
            fchmodat(parent, name, mode_of(meta), FchmodatFlags::FollowSymlink)
                .map_err(fs_error("change mode of", shown))?;
        }
        if !meta.xattrs.is_empty() {
            // There is no fd-relative lsetxattr before Linux 6.13: name the entry through
            // the parent fd's magic link, and let lsetxattr not follow the final component.
            let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
            path.extend_from_slice(name.as_bytes());
            let path = CString::new(path).map_err(|_| {
                ImageError::InvalidArchive(format!("entry {shown:?} has a NUL byte in its name"))
            })?;
            for (key, value) in &meta.xattrs {
                // SAFETY: both strings are NUL-terminated and the value slice is valid.
                let rc = unsafe {
                    libc::lsetxattr(
                        path.as_ptr(),
                        key.as_ptr(),
                        value.as_ptr().cast(),
                        value.len(),
                        0,
                    )
                };
                xattr_result(rc, key, self.privileged, shown)?;
            }
        }
        utimensat(
            parent,
            name,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(fs_error("set times of", shown))
    }

    /// Makes room for a new entry at `parent/name`. An existing directory is kept when
    /// `keep_dir` (a directory entry over a directory only updates metadata) and removed with
    /// its content otherwise; anything else is unlinked. Returns whether a directory was kept.
    fn clear(
        &mut self,
        parent: BorrowedFd,
        name: &OsStr,
        path: &Path,
        keep_dir: bool,
        shown: Shown,
    ) -> Result<bool, ImageError> {
        let stat = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(fs_error("inspect", shown)(e)),
        };
        if !(keep_dir && is_dir(&stat)) {
            self.last_parent = None;
        }
        if !is_dir(&stat) {
            unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                .map_err(fs_error("replace", shown))?;
            self.size = self.size.saturating_sub(freed_bytes(&stat));
            return Ok(false);
        }
        if keep_dir {
            return Ok(true);
        }
        let freed = remove_all_at(parent, name).map_err(fs_error("replace directory", shown))?;
        self.size = self.size.saturating_sub(freed);
        self.dirs.retain(|dir, _| !dir.starts_with(path));
        Ok(false)
    }

    /// Creates an entry with `make`; when the name is taken, clears it (see [`Self::clear`])
    /// and tries once more. Trying first saves a lookup per entry in the common case.
    fn create_at<T>(
        &mut self,
        parent: BorrowedFd,
        name: &OsStr,
        path: &Path,
        shown: Shown,
        make: impl Fn() -> nix::Result<T>,
    ) -> Result<nix::Result<T>, ImageError> {
        match make() {
            Err(Errno::EEXIST) => {
                self.clear(parent, name, path, false, shown)?;
                Ok(make())
            }
            other => Ok(other),
        }
    }

    /// The parent directory of `path` beneath the root (see `last_parent`).
    fn parent_dir(&mut self, path: &Path, shown: Shown) -> Result<Arc<OwnedFd>, ImageError> {
        let parent = path.parent().unwrap_or(Path::new(""));
        if let Some((last, fd)) = &self.last_parent {
            if last == parent {
                return Ok(Arc::clone(fd));
            }
        }
        let fd = Arc::new(self.open_parent(parent, shown)?);
        self.last_parent = Some((parent.to_path_buf(), Arc::clone(&fd)));
        Ok(fd)
    }

    /// Opens `parent` beneath the root, creating missing directories (archives may omit
    /// them) with mode 0755 as tar does.
    fn open_parent(&self, parent: &Path, shown: Shown) -> Result<OwnedFd, ImageError> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        match open_beneath(self.root.as_fd(), parent, flags) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(resolve_error(e, shown)),
        }
        let mut dir = open_beneath(self.root.as_fd(), Path::new(""), flags)
            .map_err(|e| resolve_error(e, shown))?;
        for component in parent.iter() {
            let next = match open_beneath(dir.as_fd(), Path::new(component), flags) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(dir.as_fd(), component, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(fs_error("create parent directory of", shown)(e)),
                    }
                    // mkdir's mode passed through the umask; make it exactly 0755.
                    fchmodat(
                        dir.as_fd(),
                        component,
                        Mode::from_bits_truncate(0o755),
                        FchmodatFlags::FollowSymlink,
                    )
                    .map_err(fs_error("create parent directory of", shown))?;
                    open_beneath(dir.as_fd(), Path::new(component), flags)
                        .map_err(|e| resolve_error(e, shown))?
                }
                Err(e) => return Err(resolve_error(e, shown)),
            };
            dir = next;
        }
        Ok(dir)
    }
}

/// Cleans an archive path into components below the layer root: `./` and empty components
/// are dropped; `..` and absolute paths are refused (the reason is returned).
fn clean_path(raw: &[u8]) -> Result<PathBuf, &'static str> {
    if raw.starts_with(b"/") {
        return Err("it is an absolute path");
    }
    let mut path = PathBuf::new();
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("it has a '..' component"),
            name => path.push(OsStr::from_bytes(name)),
        }
    }
    Ok(path)
}

/// openat2 confined to `dir`: no `..` out of it, no symlinks, no /proc magic links.
/// The layer directory as the anchor of `*at()` calls and [`open_beneath`] (an O_PATH fd).
pub(crate) fn open_layer_dir(layer_dir: &Path) -> Result<OwnedFd, ImageError> {
    nix::fcntl::open(
        layer_dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ImageError::Io {
        context: format!("cannot open layer directory {}", layer_dir.display()),
        source: e.into(),
    })
}

pub(crate) fn open_beneath(dir: BorrowedFd, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let how = OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    loop {
        match openat2(dir, path, how) {
            // EAGAIN: a concurrent rename raced the lookup; the kernel asks us to retry.
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            other => return other,
        }
    }
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, shown: Shown) -> Result<Meta, ImageError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        ImageError::InvalidArchive(format!("entry {shown:?}: bad {what}: {e}"))
    };
    let header = entry.header();
    let mode = header.mode().map_err(|e| bad("mode", &e))? & 0o7777;
    let uid = header.uid().map_err(|e| bad("uid", &e))?;
    let gid = header.gid().map_err(|e| bad("gid", &e))?;
    let uid = u32::try_from(uid).map_err(|e| bad("uid", &e))?;
    let gid = u32::try_from(gid).map_err(|e| bad("gid", &e))?;
    let seconds = header.mtime().map_err(|e| bad("mtime", &e))?;
    let mut mtime = TimeSpec::new(i64::try_from(seconds).unwrap_or(i64::MAX), 0);
    let mut xattrs = Vec::new();
    if let Some(extensions) = entry.pax_extensions().map_err(stream_error)? {
        for extension in extensions {
            let extension = extension.map_err(|e| bad("PAX record", &e))?;
            let Ok(key) = extension.key() else { continue };
            if key == "mtime" {
                // PAX keeps sub-second precision that the octal header field cannot hold.
                if let Some(t) = extension.value().ok().and_then(parse_pax_time) {
                    mtime = t;
                }
            } else if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if !whiteout::is_portable_xattr(name.as_bytes()) {
                    log::warn!("dropping xattr {name:?} of {shown:?}: reserved for overlayfs");
                    continue;
                }
                let name = CString::new(name).map_err(|e| bad("xattr name", &e))?;
                xattrs.push((name, extension.value_bytes().to_vec()));
            }
        }
    }
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    })
}

/// `1700000000.123456789` (fraction optional) → TimeSpec; None when malformed.
fn parse_pax_time(value: &str) -> Option<TimeSpec> {
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: i64 = digits.parse().ok()?;
    // A negative time with a fraction means "secs - fraction" (e.g. -1.5).
    if secs < 0 && nanos > 0 {
        return Some(TimeSpec::new(secs - 1, 1_000_000_000 - nanos));
    }
    Some(TimeSpec::new(secs, nanos))
}

impl Unpacker {
    /// Owner, then mode (chown clears setuid bits), then xattrs (chown drops
    /// security.capability), then times (last, as everything before may touch them). Owner
    /// and mode are left alone where creation already gave them (`chmod` false: the mode).
    fn apply_to_fd(
        &self,
        fd: BorrowedFd,
        meta: &Meta,
        chmod: bool,
        shown: Shown,
    ) -> Result<(), ImageError> {
        if self.fresh.needs_owner(meta) {
            let owner = nix::unistd::fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            );
            tolerate_unprivileged(owner, self.privileged)
                .map_err(fs_error("change owner of", shown))?;
        }
        if chmod {
            fchmod(fd, mode_of(meta)).map_err(fs_error("change mode of", shown))?;
        }
        set_xattrs_and_times(fd, meta, self.privileged, shown)
    }
}

fn set_xattrs_and_times(
    fd: BorrowedFd,
    meta: &Meta,
    privileged: bool,
    shown: Shown,
) -> Result<(), ImageError> {
    for (key, value) in &meta.xattrs {
        // SAFETY: the key is NUL-terminated and the value slice is valid for its length.
        let rc = unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        xattr_result(rc, key, privileged, shown)?;
    }
    futimens(fd, &meta.mtime, &meta.mtime).map_err(fs_error("set times of", shown))
}

fn mode_of(meta: &Meta) -> Mode {
    Mode::from_bits_truncate(meta.mode)
}

/// Without root, chown to other ids fails with EPERM: keep the unpacker's own ids then.
fn tolerate_unprivileged(result: nix::Result<()>, privileged: bool) -> nix::Result<()> {
    match result {
        Err(Errno::EPERM) if !privileged => Ok(()),
        other => other,
    }
}

/// A filesystem without xattr support (ENOTSUP) loses them with a warning, as does a
/// privileged namespace (security.*, trusted.*) when we are not root; anything else fails.
fn xattr_result(
    rc: libc::c_int,
    key: &CString,
    privileged: bool,
    shown: Shown,
) -> Result<(), ImageError> {
    if rc == 0 {
        return Ok(());
    }
    match Errno::last() {
        Errno::ENOTSUP => {
            log::warn!("dropping xattr {key:?} of {shown:?}: the filesystem does not support it");
            Ok(())
        }
        Errno::EPERM if !privileged => {
            log::warn!("dropping xattr {key:?} of {shown:?}: setting it needs root");
            Ok(())
        }
        e => Err(fs_error("set xattr of", shown)(e)),
    }
}

/// Removes `parent/name` and everything below it, through fds only (never following
/// links). Returns the content bytes freed (see [`freed_bytes`]).
fn remove_all_at(parent: BorrowedFd, name: &OsStr) -> io::Result<u64> {
    let stat = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if !is_dir(&stat) {
        unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)?;
        return Ok(freed_bytes(&stat));
    }
    let fd = openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let dir_fd = fd.try_clone()?;
    let mut dir = nix::dir::Dir::from_fd(fd)?;
    let mut children = Vec::new();
    for entry in dir.iter() {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            children.push(name);
        }
    }
    let mut freed = 0;
    for child in children {
        freed += remove_all_at(dir_fd.as_fd(), OsStr::from_bytes(child.as_bytes()))?;
    }
    unlinkat(parent, name, UnlinkatFlags::RemoveDir)?;
    Ok(freed)
}

/// Content bytes that unlinking this file takes out of the layer's size: a regular file's
/// size if this was its last link (the size counts each inode once, at its first link).
fn freed_bytes(stat: &FileStat) -> u64 {
    let regular = stat.st_mode & libc::S_IFMT == libc::S_IFREG;
    if regular && stat.st_nlink == 1 {
        stat.st_size as u64
    } else {
        0
    }
}

fn is_dir(stat: &FileStat) -> bool {
    stat.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn escapes(shown: Shown, reason: &str) -> ImageError {
    ImageError::Escapes {
        path: shown.to_string(),
        reason: reason.to_string(),
    }
}

/// Errors of resolving an entry's parent beneath the root.
fn resolve_error(e: Errno, shown: Shown) -> ImageError {
    match e {
        Errno::ELOOP | Errno::EXDEV => {
            escapes(shown, "its path goes through a symlink or leaves the layer")
        }
        Errno::ENOTDIR => ImageError::InvalidArchive(format!(
            "entry {shown:?} is below a path that is not a directory"
        )),
        Errno::ENOSYS => ImageError::Io {
            context: "openat2 is unavailable (carton needs Linux 5.6 or newer)".into(),
            source: e.into(),
        },
        e => fs_error("open the parent directory of", shown)(e),
    }
}

fn fs_error<'a, E: Into<io::Error>>(
    action: &'static str,
    shown: Shown<'a>,
) -> impl FnOnce(E) -> ImageError + 'a {
    move |e| ImageError::Io {
        context: format!("cannot {action} layer entry {shown:?}"),
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_paths() {
        assert_eq!(clean_path(b"./a/b").unwrap(), Path::new("a/b"));
        assert_eq!(clean_path(b"a//./b/").unwrap(), Path::new("a/b"));
        assert_eq!(clean_path(b"./").unwrap(), Path::new(""));
        assert_eq!(clean_path(b"..a/b..").unwrap(), Path::new("..a/b.."));
        assert!(clean_path(b"../x").is_err());
        assert!(clean_path(b"a/../../x").is_err());
        assert!(clean_path(b"a/..").is_err());
        assert!(clean_path(b"/abs").is_err());
    }

    #[test]
    fn parses_pax_times() {
        let t = parse_pax_time("1700000000.5").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (1_700_000_000, 500_000_000));
        let t = parse_pax_time("42").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (42, 0));
        let t = parse_pax_time("-1.5").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (-2, 500_000_000));
        assert!(parse_pax_time("soon").is_none());
        assert!(parse_pax_time("1.x").is_none());
    }
}
