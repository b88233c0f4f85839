//! The namespaces the benchmark runs in, so that it never touches the machine's own network,
//! mount table or state directories:
//!
//! - **the bench namespace** (network + mount): the outer `cargo xtask bench` re-executes itself
//!   in a fresh network namespace and a private mount namespace. carton's bridge, veths, iptables
//!   chains and sysctls, podman's CNI bridge and rules, and the hand-made veth pairs of the
//!   throughput row all live and die with it; a fresh tmpfs on `/run` there holds what runc,
//!   crun and podman keep in `/run` (as on a normal host, where `/run` is a tmpfs), and the
//!   layer row gets its own tmpfs;
//! - **the v1 namespace** (mount only, entered with setns): a copy of the bench namespace where
//!   `/sys/fs/cgroup/unified` is unmounted (crun 1.8.1 refuses the hybrid layout: "cgroups in
//!   hybrid mode not supported") and a tmpfs covers `/var/lib` (where podman and the CNI plugins
//!   write outside their configured directories: the blob-info cache, host-local IPAM). crun and
//!   podman run there; carton and runc run in the bench namespace with the machine's own
//!   layout (both manage a hybrid host through its v1 hierarchies).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

/// Makes `cmd` start in a new network namespace and a new mount namespace whose mounts are all
/// private (nothing it mounts propagates back to the machine). Used for the inner bench process.
pub fn spawn_in_bench_namespaces(cmd: &mut Command) {
    // SAFETY: unshare and mount are async-signal-safe system calls; they run in the child between
    // fork and exec and only change that child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            let root = c"/";
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `mount -t tmpfs -o OPTIONS tmpfs TARGET` (inside the bench namespace only).
pub fn mount_tmpfs(target: &Path, options: &str) -> Result<()> {
    let target_c = cstring(target)?;
    let data = CString::new(options)?;
    // SAFETY: plain mount(2) with valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target_c.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("mounting a tmpfs on {}", target.display()));
    }
    Ok(())
}

/// Lazily unmounts `target` (end of the layer row); errors are reported, not fatal.
pub fn unmount(target: &Path) -> Result<()> {
    let target_c = cstring(target)?;
    // SAFETY: umount2 with a valid path.
    if unsafe { libc::umount2(target_c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("unmounting {}", target.display()));
    }
    Ok(())
}

fn cstring(path: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).context("path with a NUL byte")
}

/// Whether this mount namespace has a cgroup2 file system on /sys/fs/cgroup/unified (the
/// hybrid layout crun refuses).
pub fn has_unified_mount() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(4) == Some(&"/sys/fs/cgroup/unified") && l.contains(" - cgroup2 ")
        })
}

/// A mount namespace held open by an fd; commands enter it with setns before exec.
#[derive(Clone)]
pub struct MountNs {
    fd: Arc<OwnedFd>,
    /// The directory commands start in after entering (setns resets the working directory).
    cwd: Arc<CString>,
    pub description: String,
}

impl MountNs {
    /// The v1 namespace (see the module doc): a copy of the current mount namespace without
    /// the unified hierarchy, with a tmpfs on /var/lib. Made by a short-lived helper process
    /// (so this process's own namespace never changes) whose namespace we keep by fd.
    pub fn v1_only(cwd: &Path) -> Result<MountNs> {
        let unmount_unified = has_unified_mount();
        let mut helper = Command::new("sleep");
        helper
            .arg("infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: async-signal-safe system calls in the child between fork and exec.
        unsafe {
            helper.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if unmount_unified
                    && libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/var/lib".as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    c"mode=755".as_ptr().cast(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // spawn() returns once the exec succeeded, so the helper's namespace is complete.
        let mut child = helper
            .spawn()
            .context("creating the v1 mount namespace for crun and podman")?;
        let opened = File::open(format!("/proc/{}/ns/mnt", child.id()));
        let _ = child.kill();
        let _ = child.wait();
        let fd = OwnedFd::from(opened.context("opening the helper's mount namespace")?);
        let description = if unmount_unified {
            "private mount namespace without /sys/fs/cgroup/unified (cgroup v1 only), \
             tmpfs on /var/lib"
        } else {
            "private mount namespace, tmpfs on /var/lib"
        };
        Ok(MountNs {
            fd: Arc::new(fd),
            cwd: Arc::new(cstring(cwd)?),
            description: description.into(),
        })
    }

    /// Makes `cmd` enter this namespace (and then `cwd`) before exec.
    pub fn apply(&self, cmd: &mut Command) {
        let fd = self.fd.clone();
        let cwd = self.cwd.clone();
        // SAFETY: setns and chdir are async-signal-safe; the child is single-threaded.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::chdir(cwd.as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// `ip link set lo up` in the current network namespace (a fresh one has lo down).
pub fn loopback_up() -> Result<()> {
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context("running ip")?;
    if !status.success() {
        bail!("ip link set lo up failed");
    }
    Ok(())
}

/// The inode of `/proc/<pid>/ns/<kind>` (e.g. `net:[4026532281]`), to find processes left in
/// a namespace.
pub fn ns_id(pid: u32, kind: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|p: PathBuf| p.display().to_string())
}
