//! The container's filesystem view, built by the init inside its new mount namespace:
//! private propagation, the rootfs (overlay or bind), the spec's mounts, /dev, the console,
//! pivot_root, masked and read-only paths.
//!
//! Everything here runs in the child before exec. Because the mount namespace is the
//! container's own and `/` is made private first, nothing mounted here is ever visible on the
//! host, and all of it disappears with the container's last process: a killed carton cannot
//! leak a mount.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libc::c_ulong;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use super::error::InitFailure;
use super::in_root::{RootDir, fd_path};
use super::mount_options;
use crate::cgroups::CgroupView;

/// What the init needs to know to build the filesystem view.
#[derive(Debug)]
pub struct RootfsPlan {
    /// Absolute path of the rootfs directory (the mount point of the overlay).
    pub rootfs: PathBuf,
    /// Bundle directory: relative mount sources are resolved against it.
    pub bundle: PathBuf,
    /// overlayfs data (`lowerdir=…,upperdir=…,workdir=…`) when carton's storage provides the
    /// rootfs; `None` means `rootfs` is a ready directory to bind-mount (plain OCI bundles).
    pub overlay: Option<String>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<LinuxDevice>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub readonly_root: bool,
    /// Propagation applied to `/` before anything is mounted (default: recursive private).
    pub root_propagation: c_ulong,
    /// Allocate the console pty inside the container's /dev/pts.
    pub terminal: bool,
    /// What a mount of type `cgroup` shows: filled in once the container's cgroup exists.
    pub cgroup_view: Option<CgroupView>,
    /// `linux.sysctl`, written under /proc/sys before it is made read-only.
    pub sysctl: Vec<(String, String)>,
    /// Move the rootfs onto / and chroot, instead of pivot_root.
    pub no_pivot: bool,
}

/// Result of the filesystem set-up.
#[derive(Debug)]
pub struct Prepared {
    /// (master, slave) of the console when `terminal` was asked for.
    pub console: Option<(OwnedFd, OwnedFd)>,
}

type StepResult<T> = Result<T, InitFailure>;

pub(crate) fn failure(
    step: impl Into<String>,
    message: impl Into<String>,
    err: io::Error,
) -> InitFailure {
    InitFailure {
        step: step.into(),
        message: message.into(),
        errno: err.raw_os_error(),
        exit_code: 125,
    }
}

/// Builds the mount tree and pivots into it. `before_pivot` runs once everything is mounted,
/// while the host's tree is still reachable (createContainer hooks).
pub fn prepare(
    plan: &RootfsPlan,
    before_pivot: &mut dyn FnMut() -> StepResult<()>,
) -> StepResult<Prepared> {
    mount_raw(None, Path::new("/"), None, plan.root_propagation, None)
        .map_err(|e| failure("make / private", "mount propagation of /", e))?;

    match &plan.overlay {
        Some(data) => mount_raw(
            Some("overlay"),
            &plan.rootfs,
            Some("overlay"),
            0,
            Some(data),
        )
        .map_err(|e| {
            failure(
                "mount rootfs",
                format!("overlay on {}", plan.rootfs.display()),
                e,
            )
        })?,
        None => mount_raw(
            Some(&plan.rootfs.to_string_lossy()),
            &plan.rootfs,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .map_err(|e| failure("mount rootfs", format!("bind {}", plan.rootfs.display()), e))?,
    }
    let root = RootDir::open(&plan.rootfs)
        .map_err(|e| failure("open rootfs", plan.rootfs.display().to_string(), e))?;

    for mount in &plan.mounts {
        if mount.typ().as_deref() == Some("cgroup") {
            mount_cgroup(&root, mount, plan.cgroup_view.as_ref())?;
        } else {
            mount_one(&root, &plan.bundle, mount)?;
        }
    }
    let dev_is_tmpfs = plan
        .mounts
        .iter()
        .any(|m| m.destination() == Path::new("/dev"));
    if dev_is_tmpfs {
        create_devices(&root, &plan.devices)?;
        create_dev_links(&root)?;
    }
    let console = if plan.terminal {
        Some(create_console(&root)?)
    } else {
        None
    };
    before_pivot()?;
    if plan.no_pivot {
        move_root(&plan.rootfs)?;
    } else {
        pivot_root(&plan.rootfs)?;
    }

    for (key, value) in &plan.sysctl {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| failure("sysctl", format!("{key}={value}"), e))?;
    }
    for path in &plan.masked_paths {
        mask_path(Path::new(path))?;
    }
    for path in &plan.readonly_paths {
        make_readonly(Path::new(path))?;
    }
    if plan.readonly_root {
        mount_raw(
            None,
            Path::new("/"),
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            None,
        )
        .map_err(|e| failure("make rootfs read-only", "remount /", e))?;
    }
    Ok(Prepared { console })
}

fn mount_one(root: &RootDir, bundle: &Path, mount: &Mount) -> StepResult<()> {
    let destination = mount.destination();
    let step = format!("mount {}", destination.display());
    let options = mount_options::parse(mount.options().as_deref().unwrap_or_default());
    let fs_type = mount.typ().as_deref().unwrap_or("none");
    let is_bind = options.is_bind() || fs_type == "bind";

    let source: Option<PathBuf> = mount.source().as_ref().map(|s| {
        if is_bind && s.is_relative() {
            bundle.join(s)
        } else {
            s.clone()
        }
    });

    // The mount point: a directory, unless a file is bind-mounted.
    let source_is_file = is_bind
        && source
            .as_deref()
            .is_some_and(|s| s.metadata().is_ok_and(|m| !m.is_dir()));
    let created = if source_is_file {
        root.ensure_file(destination)
    } else {
        root.mkdir_all(destination)
    };
    let target = created.map_err(|e| failure(&step, "create mount point", e))?;

    let mut flags = options.flags;
    if is_bind {
        flags = libc::MS_BIND | (flags & libc::MS_REC);
        if let Some(src) = &source {
            src.metadata()
                .map_err(|e| failure(&step, format!("bind source {}", src.display()), e))?;
        }
    }
    let data = (!options.data.is_empty()).then_some(options.data.as_str());
    let source_str = source.as_ref().map(|s| s.to_string_lossy().into_owned());
    mount_raw(
        source_str.as_deref(),
        &fd_path(&target),
        (!is_bind).then_some(fs_type),
        flags,
        data,
    )
    .map_err(|e| {
        failure(
            &step,
            format!("{fs_type} from {}", source_str.as_deref().unwrap_or("none")),
            e,
        )
    })?;

    // The fd still names the covered directory; reopen to reach the new mount's root.
    let mounted = root
        .open_path(destination, libc::O_PATH)
        .map_err(|e| failure(&step, "reopen mount point", e))?;
    if options.needs_bind_remount() {
        mount_raw(
            None,
            &fd_path(&mounted),
            None,
            libc::MS_BIND | libc::MS_REMOUNT | options.flags & !libc::MS_REC,
            None,
        )
        .map_err(|e| failure(&step, "remount bind with its options", e))?;
    }
    for flag in &options.propagation {
        mount_raw(None, &fd_path(&mounted), None, *flag, None)
            .map_err(|e| failure(&step, "set propagation", e))?;
    }
    Ok(())
}

/// /sys/fs/cgroup inside the container: the container's own cgroup, read-only. On v2 that is
/// a cgroup2 mount made from inside the cgroup namespace; on v1 a tmpfs holding bind mounts of
/// the container's directory in each hierarchy (what docker shows on v1 hosts).
fn mount_cgroup(root: &RootDir, mount: &Mount, view: Option<&CgroupView>) -> StepResult<()> {
    let destination = mount.destination();
    let step = format!("mount {}", destination.display());
    let Some(view) = view else {
        return Err(failure(
            &step,
            "a cgroup mount needs linux.cgroupsPath",
            io::Error::from_raw_os_error(libc::EINVAL),
        ));
    };
    let options = mount_options::parse(mount.options().as_deref().unwrap_or_default());
    let flags = options.flags | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let target = root
        .mkdir_all(destination)
        .map_err(|e| failure(&step, "create mount point", e))?;
    match view {
        CgroupView::V2 => mount_raw(
            Some("cgroup2"),
            &fd_path(&target),
            Some("cgroup2"),
            flags,
            None,
        )
        .map_err(|e| failure(&step, "cgroup2", e)),
        CgroupView::V1(dirs) => {
            mount_raw(
                Some("tmpfs"),
                &fd_path(&target),
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some("mode=755"),
            )
            .map_err(|e| failure(&step, "tmpfs", e))?;
            for (name, host_dir) in dirs {
                let inside = destination.join(name);
                let point = root
                    .mkdir_all(&inside)
                    .map_err(|e| failure(&step, format!("create {}", inside.display()), e))?;
                mount_raw(
                    Some(&host_dir.to_string_lossy()),
                    &fd_path(&point),
                    None,
                    libc::MS_BIND,
                    None,
                )
                .map_err(|e| failure(&step, format!("bind {}", host_dir.display()), e))?;
                let mounted = root
                    .open_path(&inside, libc::O_PATH)
                    .map_err(|e| failure(&step, "reopen", e))?;
                mount_raw(
                    None,
                    &fd_path(&mounted),
                    None,
                    libc::MS_BIND | libc::MS_REMOUNT | flags,
                    None,
                )
                .map_err(|e| failure(&step, format!("remount {name}"), e))?;
            }
            let mounted = root
                .open_path(destination, libc::O_PATH)
                .map_err(|e| failure(&step, "reopen", e))?;
            mount_raw(
                None,
                &fd_path(&mounted),
                None,
                libc::MS_REMOUNT | flags,
                Some("mode=755"),
            )
            .map_err(|e| failure(&step, "remount tmpfs", e))
        }
    }
}

/// The devices every container gets (OCI runtime spec, "Default Devices").
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

fn create_devices(root: &RootDir, extra: &[LinuxDevice]) -> StepResult<()> {
    for (path, major, minor) in DEFAULT_DEVICES {
        if extra.iter().any(|d| d.path() == Path::new(path)) {
            continue;
        }
        mknod_in_root(
            root,
            Path::new(path),
            libc::S_IFCHR | 0o666,
            *major,
            *minor,
            0,
            0,
        )?;
    }
    for device in extra {
        let kind = match device.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(failure(
                    "create devices",
                    format!("{}: type 'a' is not a device node", device.path().display()),
                    io::Error::from_raw_os_error(libc::EINVAL),
                ));
            }
        };
        let mode = kind | device.file_mode().unwrap_or(0o666);
        mknod_in_root(
            root,
            device.path(),
            mode,
            device.major() as u64,
            device.minor() as u64,
            device.uid().unwrap_or(0),
            device.gid().unwrap_or(0),
        )?;
    }
    Ok(())
}

fn mknod_in_root(
    root: &RootDir,
    path: &Path,
    mode: u32,
    major: u64,
    minor: u64,
    uid: u32,
    gid: u32,
) -> StepResult<()> {
    let step = format!("create device {}", path.display());
    let parent = root
        .mkdir_all(path.parent().unwrap_or(Path::new("/")))
        .map_err(|e| failure(&step, "create parent", e))?;
    let name = cname(path.file_name().map(Path::new).unwrap_or(path));
    // An O_PATH fd cannot be used with mknodat directly; go through its /proc path.
    let dir = open_dir(&fd_path(&parent)).map_err(|e| failure(&step, "open parent", e))?;
    // SAFETY: plain syscalls on a valid dirfd and NUL-terminated name.
    unsafe {
        libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0);
        // umask would strip bits from 0666; fchmodat afterwards sets them exactly.
        if libc::mknodat(
            dir.as_raw_fd(),
            name.as_ptr(),
            mode,
            libc::makedev(major as u32, minor as u32),
        ) != 0
        {
            return Err(failure(&step, "mknod", io::Error::last_os_error()));
        }
        if libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode & 0o7777, 0) != 0 {
            return Err(failure(&step, "chmod", io::Error::last_os_error()));
        }
        if libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        ) != 0
        {
            return Err(failure(&step, "chown", io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn create_dev_links(root: &RootDir) -> StepResult<()> {
    let dev = root
        .open_path(Path::new("/dev"), libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| failure("create /dev links", "open /dev", e))?;
    let dir = open_dir(&fd_path(&dev)).map_err(|e| failure("create /dev links", "open /dev", e))?;
    let has_pts = root
        .open_path(Path::new("/dev/pts/ptmx"), libc::O_PATH)
        .is_ok();
    let mut links = vec![
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    if has_pts {
        links.push(("ptmx", "pts/ptmx"));
    }
    for (name, target) in links {
        let (cname_, ctarget) = (cname(Path::new(name)), cname(Path::new(target)));
        // SAFETY: plain syscalls with NUL-terminated strings and a valid dirfd.
        unsafe {
            libc::unlinkat(dir.as_raw_fd(), cname_.as_ptr(), 0);
            if libc::symlinkat(ctarget.as_ptr(), dir.as_raw_fd(), cname_.as_ptr()) != 0 {
                return Err(failure(
                    "create /dev links",
                    format!("/dev/{name} -> {target}"),
                    io::Error::last_os_error(),
                ));
            }
        }
    }
    Ok(())
}

/// Opens a new pty in the container's own devpts instance and binds its slave to
/// /dev/console. The master goes to carton; the slave becomes the container's stdio.
fn create_console(root: &RootDir) -> StepResult<(OwnedFd, OwnedFd)> {
    let step = "create console";
    let (master, slave, number) = open_pty(root)?;
    let console = root
        .ensure_file(Path::new("/dev/console"))
        .map_err(|e| failure(step, "create /dev/console", e))?;
    let pts = root
        .open_path(&PathBuf::from(format!("/dev/pts/{number}")), libc::O_PATH)
        .map_err(|e| failure(step, "open pty slave path", e))?;
    mount_raw(
        Some(&fd_path(&pts).to_string_lossy()),
        &fd_path(&console),
        None,
        libc::MS_BIND,
        None,
    )
    .map_err(|e| failure(step, "bind pty to /dev/console", e))?;
    Ok((master, slave))
}

/// A new pty from the devpts instance at `<root>/dev/pts`: (master, slave, number).
pub(crate) fn open_pty(root: &RootDir) -> StepResult<(OwnedFd, OwnedFd, u32)> {
    let step = "open pty";
    let master = root
        .open_path(Path::new("/dev/pts/ptmx"), libc::O_RDWR | libc::O_NOCTTY)
        .map_err(|e| failure(step, "open /dev/pts/ptmx (is /dev/pts mounted?)", e))?;
    let mut unlock: libc::c_int = 0;
    let mut number: libc::c_uint = 0;
    // SAFETY: pty ioctls on the master fd with correctly typed arguments.
    let slave = unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) != 0 {
            return Err(failure(step, "unlock pty", io::Error::last_os_error()));
        }
        if libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) != 0 {
            return Err(failure(step, "pty number", io::Error::last_os_error()));
        }
        // TIOCGPTPEER opens the slave through the master, without a path lookup that a
        // hostile /dev could redirect.
        let fd = libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(failure(step, "open pty slave", io::Error::last_os_error()));
        }
        OwnedFd::from_raw_fd(fd)
    };
    Ok((master, slave, number))
}

fn pivot_root(rootfs: &Path) -> StepResult<()> {
    let step = "pivot_root";
    let new_root = open_dir(rootfs).map_err(|e| failure(step, rootfs.display().to_string(), e))?;
    // SAFETY: plain syscalls; "." after fchdir is the new root. Stacking the old root under the
    // new one with pivot_root(".", ".") avoids needing a put_old directory in the image.
    unsafe {
        if libc::fchdir(new_root.as_raw_fd()) != 0 {
            return Err(failure(step, "chdir to rootfs", io::Error::last_os_error()));
        }
        let dot = c".";
        if libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) != 0 {
            return Err(failure(step, "pivot_root", io::Error::last_os_error()));
        }
    }
    // The old root is now stacked on ".": make sure unmounting it cannot propagate anywhere.
    mount_raw(
        None,
        Path::new("."),
        None,
        libc::MS_SLAVE | libc::MS_REC,
        None,
    )
    .map_err(|e| failure(step, "make old root a slave", e))?;
    // SAFETY: plain syscalls with static strings.
    unsafe {
        if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(failure(step, "detach old root", io::Error::last_os_error()));
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(failure(step, "chdir /", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// `--no-pivot`: the rootfs is moved onto / and chrooted into (for roots on ramfs, where
/// pivot_root is refused). Weaker than pivot_root: the old root stays reachable to a process
/// that can escape a chroot, so it is only done when asked.
fn move_root(rootfs: &Path) -> StepResult<()> {
    let step = "move rootfs to /";
    let dir = open_dir(rootfs).map_err(|e| failure(step, rootfs.display().to_string(), e))?;
    // SAFETY: plain syscalls with static strings and a valid fd.
    unsafe {
        if libc::fchdir(dir.as_raw_fd()) != 0 {
            return Err(failure(step, "chdir to rootfs", io::Error::last_os_error()));
        }
    }
    mount_raw(Some("."), Path::new("/"), None, libc::MS_MOVE, None)
        .map_err(|e| failure(step, "mount --move", e))?;
    // SAFETY: as above.
    unsafe {
        if libc::chroot(c".".as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
            return Err(failure(step, "chroot", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Hides a path: /dev/null over a file, an empty read-only tmpfs over a directory.
fn mask_path(path: &Path) -> StepResult<()> {
    let step = format!("mask {}", path.display());
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failure(&step, "stat", e)),
    };
    let result = if meta.is_dir() {
        mount_raw(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            libc::MS_RDONLY,
            Some("size=0,mode=755"),
        )
    } else {
        mount_raw(Some("/dev/null"), path, None, libc::MS_BIND, None)
    };
    result.map_err(|e| failure(&step, "mount over it", e))
}

fn make_readonly(path: &Path) -> StepResult<()> {
    let step = format!("make {} read-only", path.display());
    match mount_raw(
        Some(&path.to_string_lossy()),
        path,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    ) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failure(&step, "bind", e)),
    }
    mount_raw(
        None,
        path,
        None,
        libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        None,
    )
    .map_err(|e| failure(&step, "remount read-only", e))
}

fn cname(path: &Path) -> CString {
    // Paths in a spec never contain NUL (serde would have refused the JSON string otherwise
    // only via explicit escapes); fall back to an impossible name rather than panic.
    CString::new(path.as_os_str().as_bytes()).unwrap_or_else(|_| c"\u{1}invalid".to_owned())
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cname(path);
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// mount(2) with optional strings.
pub(crate) fn mount_raw(
    source: Option<&str>,
    target: &Path,
    fs_type: Option<&str>,
    flags: c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let to_c = |s: &str| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let source = source.map(to_c).transpose()?;
    let fs_type = fs_type.map(to_c).transpose()?;
    let data = data.map(to_c).transpose()?;
    let target = cname(target);
    // SAFETY: every pointer is either null or a NUL-terminated string alive for the call.
    let rc = unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fs_type.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
