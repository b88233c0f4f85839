//! Path resolution confined to the container's root filesystem.
//!
//! An image is untrusted input: `/etc/hosts` in it may be a symlink to `/../../etc/shadow` of the
//! host. Every path inside the rootfs that carton creates or mounts onto is therefore resolved by
//! the kernel with `openat2(RESOLVE_IN_ROOT)`, which treats the rootfs as `/` for every symlink
//! and `..` on the way, and the mount then targets the resulting file descriptor through
//! `/proc/self/fd/N` — so no path is ever re-walked between the check and the use.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// The container's rootfs, held open.
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
}

impl RootDir {
    pub fn open(path: &Path) -> io::Result<RootDir> {
        let fd = open_plain(path, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)?;
        Ok(RootDir { fd })
    }

    /// Opens `path` (absolute or relative; interpreted inside the rootfs).
    pub fn open_path(&self, path: &Path, flags: i32) -> io::Result<OwnedFd> {
        openat2_in_root(self.fd.as_raw_fd(), &relative(path), flags, 0)
    }

    /// Creates every missing directory of `path` (mode 0755, like `mkdir -p`) and returns an
    /// O_PATH fd of the directory. A component that is a dangling symlink gets its target
    /// created — inside the rootfs, as docker does for a mount point an image links elsewhere.
    pub fn mkdir_all(&self, path: &Path) -> io::Result<OwnedFd> {
        self.mkdir_all_depth(path, 0)
    }

    fn mkdir_all_depth(&self, path: &Path, depth: u32) -> io::Result<OwnedFd> {
        // The kernel's own limit on nested symlinks.
        if depth > 40 {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let path = relative(path);
        let mut current = PathBuf::new();
        for component in path.components() {
            let Component::Normal(name) = component else {
                continue;
            };
            let parent = self.open_path(&current, libc::O_PATH | libc::O_DIRECTORY)?;
            let cname = cstring(Path::new(name))?;
            // SAFETY: mkdirat with a valid dirfd and NUL-terminated name.
            let rc = unsafe { libc::mkdirat(parent.as_raw_fd(), cname.as_ptr(), 0o755) };
            if rc != 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EEXIST) {
                    return Err(err);
                }
            }
            current.push(name);
            if self
                .open_path(&current, libc::O_PATH | libc::O_DIRECTORY)
                .is_err()
            {
                if let Some(target) = read_link_at(&parent, &cname) {
                    // Resolve the link as the container would: absolute from its root,
                    // relative from the link's directory (`..` is clamped by RESOLVE_IN_ROOT).
                    let dir = current.parent().map(Path::to_path_buf).unwrap_or_default();
                    let resolved = if target.is_absolute() {
                        target
                    } else {
                        lexically_join(&dir, &target)
                    };
                    self.mkdir_all_depth(&resolved, depth + 1)?;
                }
            }
        }
        self.open_path(&current, libc::O_PATH | libc::O_DIRECTORY)
    }

    /// Makes sure `path` exists as a regular file (creating parents and an empty file as
    /// needed) and returns an O_PATH fd of it: the mount point of a file bind mount.
    pub fn ensure_file(&self, path: &Path) -> io::Result<OwnedFd> {
        let path = relative(path);
        if let Some(parent) = path.parent() {
            self.mkdir_all(parent)?;
        }
        match self.open_path(&path, libc::O_PATH) {
            Ok(fd) => Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let created = openat2_in_root(
                    self.fd.as_raw_fd(),
                    &path,
                    libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW,
                    0o644,
                )?;
                drop(created);
                self.open_path(&path, libc::O_PATH)
            }
            Err(e) => Err(e),
        }
    }
}

/// The target of the symlink `name` in the directory `dir`, if it is one.
fn read_link_at(dir: &OwnedFd, name: &CString) -> Option<PathBuf> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: readlinkat into a local buffer; an O_PATH dirfd is accepted.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n <= 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// `dir/rel` with `.` and `..` folded, never climbing above the root.
fn lexically_join(dir: &Path, rel: &Path) -> PathBuf {
    let mut out: Vec<std::ffi::OsString> = dir
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out.iter().collect()
}

/// The `/proc/self/fd/N` path that lets mount(2) act on exactly the object an fd refers to.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Strips the leading `/` so a container path can be resolved relative to the root fd.
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect()
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn open_plain(path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn openat2_in_root(dirfd: RawFd, path: &Path, flags: i32, mode: u64) -> io::Result<OwnedFd> {
    let c = if path.as_os_str().is_empty() {
        CString::new(".").expect("no NUL")
    } else {
        cstring(path)?
    };
    // SAFETY: open_how is plain data; zero is a valid starting value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & libc::O_CREAT != 0 { mode } else { 0 };
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    loop {
        // SAFETY: openat2 with a valid dirfd, path and open_how of the size we pass.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: fresh fd.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let err = io::Error::last_os_error();
        // EAGAIN: a concurrent rename raced the lookup; the kernel asks us to retry.
        if !matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_cannot_leave_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        // An absolute link to a directory that exists on the host *and* in the rootfs.
        let host_dir = outside.path().to_path_buf();
        let inside_twin = root.path().join(host_dir.strip_prefix("/").unwrap());
        fs::create_dir_all(&inside_twin).unwrap();
        symlink(&host_dir, root.path().join("escape")).unwrap();
        symlink("../../../..", root.path().join("up")).unwrap();
        let dir = RootDir::open(root.path()).unwrap();

        dir.mkdir_all(Path::new("/escape/inner")).unwrap();
        dir.ensure_file(Path::new("up/etc/hosts")).unwrap();

        assert!(!host_dir.join("inner").exists());
        assert!(inside_twin.join("inner").is_dir());
        assert!(root.path().join("etc/hosts").is_file());
    }

    #[test]
    fn a_dangling_link_is_created_inside_not_outside() {
        let root = tempfile::tempdir().unwrap();
        symlink("/nowhere/at/all", root.path().join("dangling")).unwrap();
        symlink("../../../elsewhere", root.path().join("up")).unwrap();
        let dir = RootDir::open(root.path()).unwrap();
        dir.mkdir_all(Path::new("/dangling/x")).unwrap();
        dir.mkdir_all(Path::new("/up")).unwrap();
        assert!(!Path::new("/nowhere").exists());
        assert!(root.path().join("nowhere/at/all/x").is_dir());
        assert!(root.path().join("elsewhere").is_dir());
        // A loop is an error, not a hang.
        symlink("loop2", root.path().join("loop1")).unwrap();
        symlink("loop1", root.path().join("loop2")).unwrap();
        assert!(dir.mkdir_all(Path::new("/loop1/x")).is_err());
    }

    #[test]
    fn ensure_file_keeps_an_existing_file() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        fs::write(root.path().join("etc/hostname"), "old").unwrap();
        let dir = RootDir::open(root.path()).unwrap();
        dir.ensure_file(Path::new("/etc/hostname")).unwrap();
        assert_eq!(
            fs::read_to_string(root.path().join("etc/hostname")).unwrap(),
            "old"
        );
    }
}
