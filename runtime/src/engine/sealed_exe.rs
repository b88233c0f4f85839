//! Running from a copy of carton's own binary that cannot be written, for the commands whose
//! processes stay visible inside a container while they still run carton's code: `exec` (its
//! child enters the container's pid namespace before it execs the command) and
//! `carton-runtime create` / `exec` (the init waits for `start` inside the container).
//!
//! A process in the container that holds CAP_SYS_PTRACE (`--cap-add SYS_PTRACE`,
//! `--privileged`) may open /proc/<pid>/exe of such a process, keep the fd, and reopen it for
//! writing once carton has exited: that overwrites the host's carton binary (CVE-2019-5736).
//! Non-dumpable children stop containers without that capability; this stops the rest: the
//! command re-executes itself, once, from a binary that no reopen can write.
//!
//! - First choice (Linux 5.12+): a read-only bind mount of the binary that belongs to no mount
//!   namespace (`open_tree(OPEN_TREE_CLONE)` + `mount_setattr(MOUNT_ATTR_RDONLY)`), executed
//!   through its fd. Nothing is copied and no namespace changes; a reopen for writing fails
//!   with EROFS, and a detached mount cannot be remounted from inside a container.
//! - Before 5.12 (no mount_setattr): the same read-only bind mount made with the old mount
//!   API inside a private mount namespace that the process enters and leaves again (setns back
//!   to its own), keeping only the fd; the namespace and the mount vanish from every table.
//! - Otherwise: a memfd holding a copy of the binary, sealed against writes, growth and shrink
//!   (what runc did for years; the copy costs milliseconds for a release binary, far more for a
//!   debug one).
//!
//! A binary that already lives on a read-only mount (or a sealed memfd) is left as it is. `carton
//! run` does not need any of this (its init is alone in its pid namespace until it execs the
//! user's command) and keeps its start-up cost.

use nix::errno::Errno;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

#[derive(Debug, thiserror::Error)]
pub enum SealedExeError {
    #[error("cannot make a read-only copy of carton's binary ({step}): {source}")]
    Copy {
        step: &'static str,
        source: io::Error,
    },
    #[error("cannot re-execute carton from its read-only copy: {0}")]
    Exec(Errno),
}

fn copy_error(step: &'static str) -> impl FnOnce(io::Error) -> SealedExeError {
    move |source| SealedExeError::Copy { step, source }
}

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Returns when this process runs from a binary nobody can write through /proc/<pid>/exe;
/// otherwise makes such a copy and re-executes itself from it with the same arguments and
/// environment (and does not return on success).
pub fn ensure() -> Result<(), SealedExeError> {
    let exe = File::open("/proc/self/exe").map_err(copy_error("open /proc/self/exe"))?;
    if is_read_only(&exe) || is_sealed(&exe) {
        restore_name();
        return Ok(());
    }
    let copy = match read_only_mount() {
        Ok(fd) => fd,
        Err(e) => {
            log::debug!("no detached read-only mount of carton's binary ({e}); old mount API");
            match read_only_mount_old_api()? {
                Ok(fd) => fd,
                Err(e) => {
                    log::debug!("no read-only bind mount of carton's binary ({e}); sealed memfd");
                    sealed_copy(&exe)?
                }
            }
        }
    };
    drop(exe);
    reexec(&copy)
}

/// Whether the file lies on a read-only mount.
fn is_read_only(file: &File) -> bool {
    nix::sys::statvfs::fstatvfs(file)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Whether the file is a memfd carrying our seals.
fn is_sealed(file: &File) -> bool {
    // SAFETY: fcntl on a valid fd; F_GET_SEALS fails with EINVAL on files that are not memfds.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// A read-only bind mount of the running binary, attached nowhere: its fd is all there is.
fn read_only_mount() -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: u64 = 1;
    /// The kernel's `struct mount_attr`.
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let path = c"/proc/self/exe";
    // SAFETY: open_tree with a NUL-terminated path; it returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on our detached mount's fd with a valid, sized struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// A read-only bind mount of the running binary made with mount(2): in a private mount
/// namespace of this (still single-threaded) process, which it leaves again before returning.
/// The inner error means "not possible here, try the next way"; the outer one that the process
/// could not return to its own mount namespace, after which it must not go on.
fn read_only_mount_old_api() -> Result<io::Result<OwnedFd>, SealedExeError> {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, setns, unshare};
    let own_namespace = match File::open("/proc/self/ns/mnt") {
        Ok(file) => file,
        Err(e) => return Ok(Err(e)),
    };
    let path = match std::fs::read_link("/proc/self/exe") {
        // Replaced or deleted since it started ("… (deleted)"): nothing to bind by name.
        Ok(path) if path.is_file() => path,
        Ok(_) => return Ok(Err(io::ErrorKind::NotFound.into())),
        Err(e) => return Ok(Err(e)),
    };
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
        return Ok(Err(e.into()));
    }
    let made = (|| -> nix::Result<OwnedFd> {
        // Private first: the bind must not propagate to the mounts this copy came from.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )?;
        mount(
            Some(&path),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        mount(
            None::<&str>,
            &path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )?;
        nix::fcntl::open(
            &path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
    })();
    // Back to the namespace it came from, whatever happened: the fd keeps the mount alive.
    setns(&own_namespace, CloneFlags::CLONE_NEWNS).map_err(|e| SealedExeError::Copy {
        step: "return to its own mount namespace",
        source: e.into(),
    })?;
    Ok(made.map_err(io::Error::from))
}

fn sealed_copy(exe: &File) -> Result<OwnedFd, SealedExeError> {
    let memfd = memfd("carton")?;
    let size = exe.metadata().map_err(copy_error("stat"))?.len();
    let mut copied: u64 = 0;
    while copied < size {
        let left = usize::try_from(size - copied).unwrap_or(usize::MAX);
        // SAFETY: both fds are valid; a null offset uses (and advances) exe's file position.
        let n = unsafe {
            libc::sendfile(
                memfd.as_raw_fd(),
                exe.as_raw_fd(),
                std::ptr::null_mut(),
                left,
            )
        };
        match n {
            n if n > 0 => copied += n as u64,
            0 => {
                return Err(SealedExeError::Copy {
                    step: "copy",
                    source: io::ErrorKind::UnexpectedEof.into(),
                });
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(SealedExeError::Copy {
                        step: "copy",
                        source: e,
                    });
                }
            }
        }
    }
    // SAFETY: fcntl on a valid memfd made with MFD_ALLOW_SEALING.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(copy_error("seal")(io::Error::last_os_error()));
    }
    Ok(memfd)
}

/// A memfd that may be sealed and executed. MFD_EXEC (Linux 6.3+) keeps it executable where
/// vm.memfd_noexec would make memfds non-executable by default; older kernels refuse the
/// unknown flag, and there every memfd is executable anyway.
fn memfd(name: &str) -> Result<OwnedFd, SealedExeError> {
    const MFD_EXEC: libc::c_uint = 0x10;
    let name = CString::new(name).unwrap_or_default();
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    for flags in [base | MFD_EXEC, base] {
        // SAFETY: a NUL-terminated name and plain flags.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: memfd_create returned a new fd that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if Errno::last() != Errno::EINVAL {
            break;
        }
    }
    Err(copy_error("memfd_create")(io::Error::last_os_error()))
}

fn reexec(memfd: &OwnedFd) -> Result<(), SealedExeError> {
    let to_c =
        |s: OsString| CString::new(s.into_vec()).map_err(|_| SealedExeError::Exec(Errno::EINVAL));
    let args: Vec<CString> = std::env::args_os().map(to_c).collect::<Result<_, _>>()?;
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            to_c(kv)
        })
        .collect::<Result<_, _>>()?;
    let err = nix::unistd::execveat(memfd, c"", &args, &env, nix::fcntl::AtFlags::AT_EMPTY_PATH)
        .unwrap_err();
    Err(SealedExeError::Exec(err))
}

/// After an exec through a file descriptor the kernel names the process after the fd number;
/// give it back the name it was started with (what `ps` and `pgrep` show).
fn restore_name() {
    let Some(arg0) = std::env::args_os().next() else {
        return;
    };
    let base = std::path::Path::new(&arg0)
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    if let Ok(name) = CString::new(base) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string (the kernel keeps 15 bytes).
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old-API way, in a forked child (unshare needs a single-threaded process, and a test
    /// runs among threads): it must hand back an fd on a read-only mount of the test binary and
    /// leave the child in the mount namespace it started in.
    #[test]
    fn the_old_mount_api_gives_a_read_only_binary_and_returns_home() {
        if !nix::unistd::geteuid().is_root() {
            println!("SKIP the_old_mount_api_gives_a_read_only_binary_and_returns_home: not root");
            return;
        }
        let before = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        // SAFETY: the child only makes syscalls and exits with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = match read_only_mount_old_api() {
                    Ok(Ok(fd)) => {
                        let file = File::from(fd);
                        let read_only = nix::sys::statvfs::fstatvfs(&file).is_ok_and(|s| {
                            s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
                        });
                        let home = std::fs::read_link("/proc/self/ns/mnt").ok() == Some(before);
                        match (read_only, home) {
                            (true, true) => 0,
                            (false, _) => 2,
                            (_, false) => 3,
                        }
                    }
                    Ok(Err(_)) => 4,
                    Err(_) => 5,
                };
                // SAFETY: leaving the forked child without running the test harness's code.
                unsafe { libc::_exit(code) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "2: not read-only, 3: not back home, 4: not possible, 5: stuck outside"
                );
            }
        }
    }
}
