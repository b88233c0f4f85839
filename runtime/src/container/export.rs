//! `export C`: the container's root file system, flattened (image layers + its own changes,
//! deletions applied), as one tar — what `docker export` writes. Mounts inside the container
//! (/proc, /dev, volumes, the /etc files carton binds) are not part of it.
//!
//! The host's mount table never changes, whatever the container's state:
//! - running: the overlay is mounted inside the container's mount namespace only. carton
//!   briefly joins that namespace, takes a detached copy of its root mount alone (open_tree
//!   with OPEN_TREE_CLONE, no AT_RECURSIVE: no submounts) and returns to its own;
//! - stopped: carton unshares a private mount namespace, mounts a read-only overlay there with
//!   the container's `upper/` as the topmost lower layer (no upper, no work dir: nothing is
//!   written), opens it and returns to the host namespace — the private namespace dies at
//!   once, and the open descriptor keeps the (now detached) mount readable.
//!
//! Either way the tree is then read through a file descriptor, with the same walker as commit.
//! Both steps change carton's own mount namespace, which needs a single-threaded process: the
//! CLI is one when it exports.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};

use super::ContainerError;
use super::update::read_spec;
use crate::engine::OVERLAY_ANNOTATION;
use crate::state::StateStore;

pub fn export(states: &StateStore, reference: &str, out: impl Write) -> Result<(), ContainerError> {
    let record = states.resolve(reference)?;
    let root = match record.pid {
        Some(pid) if record.process_alive() => live_root(pid)?,
        _ => stopped_root(&states.container_dir(&record.id))?,
    };
    crate::image::write_rootfs_tar(root.as_fd(), out)?;
    Ok(())
}

/// A detached copy of a running container's root mount.
fn live_root(pid: i32) -> Result<OwnedFd, ContainerError> {
    let target = File::open(format!("/proc/{pid}/ns/mnt"))
        .map_err(ContainerError::io("open the container's mount namespace"))?;
    in_mount_namespace(|| {
        setns(target.as_fd(), CloneFlags::CLONE_NEWNS)
            .map_err(|e| ContainerError::io("join the container's mount namespace")(e.into()))?;
        // SAFETY: open_tree with a NUL-terminated path; the result is a new fd we own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                c"/".as_ptr(),
                (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(ContainerError::io(
                "copy the container's root mount (open_tree)",
            )(io::Error::last_os_error()));
        }
        // SAFETY: open_tree returned a fresh descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    })
}

/// A read-only overlay of a stopped container's layers and upper dir, mounted in a throwaway
/// namespace.
fn stopped_root(bundle: &Path) -> Result<OwnedFd, ContainerError> {
    let spec = read_spec(&bundle.join("config.json"))?;
    let data = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(OVERLAY_ANNOTATION))
        .and_then(|d| crate::storage::read_only_view(d))
        .ok_or_else(|| {
            ContainerError::Spec(format!(
                "{}: no overlay rootfs to export (annotation {OVERLAY_ANNOTATION})",
                bundle.display()
            ))
        })?;
    let mount_point = bundle.join("merged");
    in_mount_namespace(|| {
        unshare(CloneFlags::CLONE_NEWNS)
            .map_err(|e| ContainerError::io("unshare a mount namespace")(e.into()))?;
        // Nothing done in here may propagate back to the host's mounts.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| ContainerError::io("make / private")(e.into()))?;
        mount(
            Some("overlay"),
            &mount_point,
            Some("overlay"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(|e| ContainerError::io(format!("mount the overlay ({data})"))(e.into()))?;
        let path = CString::new(mount_point.as_os_str().as_bytes())
            .map_err(|_| ContainerError::InvalidInput("bad container path".into()))?;
        nix::fcntl::open(
            path.as_c_str(),
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| ContainerError::io("open the overlay")(e.into()))
    })
}

/// Runs `f` (which may switch carton to another mount namespace) and always switches back to
/// the namespace carton started in, whatever `f` did.
fn in_mount_namespace<T>(
    f: impl FnOnce() -> Result<T, ContainerError>,
) -> Result<T, ContainerError> {
    let home = File::open("/proc/self/ns/mnt")
        .map_err(ContainerError::io("open carton's mount namespace"))?;
    let result = f();
    if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNS) {
        // Staying in a foreign namespace would make every later path wrong: stop here.
        log::error!(
            "cannot return to carton's mount namespace (fd {}): {e}",
            home.as_raw_fd()
        );
        std::process::exit(crate::cli::EXIT_CARTON_ERROR);
    }
    result
}
