//! The code the cloned child runs, up to the `execve` of the user's command: the container's
//! init ([`run`]), or a process joining a running container ([`run_joined`]). Every step either
//! succeeds or reports an [`InitFailure`] to the parent and exits; nothing is swallowed.

use std::convert::Infallible;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::capabilities;
use super::channel::{Channel, ToChild, ToParent};
use super::error::InitFailure;
use super::exec;
use super::hooks;
use super::in_root::RootDir;
use super::plan::{Plan, ProcessPlan};
use super::process::CgroupJoin;
use super::rootfs::{self, failure};
use super::seccomp;
use super::signals;
use super::stdio::{self, ChildStdio};

/// Runs the container's init in the child after clone; never returns.
///
/// `joining` says how the child gets into its cgroup: born in it, by moving itself, or moved
/// by the parent, which then says [`ToChild::CgroupJoined`].
pub fn run(
    plan: &Plan,
    joins: &[(OwnedFd, libc::c_int)],
    channel: &Channel,
    stdio: &ChildStdio,
    joining: CgroupJoin,
) -> ! {
    report_and_exit(
        channel,
        container_steps(plan, joins, channel, stdio, joining),
    )
}

/// Runs a process that joins a running container (`exec`): `namespaces` are fds of the
/// container init's namespaces (its pid namespace was joined by the parent before the clone).
pub fn run_joined(
    process: &ProcessPlan,
    namespaces: &[(OwnedFd, libc::c_int)],
    channel: &Channel,
    stdio: &ChildStdio,
    joining: CgroupJoin,
    die_with_parent: bool,
) -> ! {
    report_and_exit(
        channel,
        joined_steps(
            process,
            namespaces,
            channel,
            stdio,
            joining,
            die_with_parent,
        ),
    )
}

/// The `SelfMove` of [`CgroupJoin`]: this (single-threaded) child writes `0`, itself, into
/// each hierarchy's `tasks` file, before it allocates anything the cgroup should count.
fn move_into_cgroup(joining: CgroupJoin) -> Result<(), InitFailure> {
    if let CgroupJoin::SelfMove(tasks) = joining {
        for mut file in tasks {
            file.write_all(b"0")
                .map_err(|e| failure("cgroup", "join the container's cgroup", e))?;
        }
    }
    Ok(())
}

fn report_and_exit(channel: &Channel, result: Result<Infallible, InitFailure>) -> ! {
    let failure = match result {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    let code = failure.exit_code;
    let shown = failure.to_string();
    if channel.send_to_parent(&ToParent::Failed(failure)).is_err() {
        // Nobody listens any more (an OCI `create` returned long ago): the container's stderr
        // is where the failure can still be seen.
        eprintln!("carton: {shown}");
    }
    // SAFETY: _exit skips atexit handlers and stdio flushing that belong to the parent's copy
    // of this address space.
    unsafe { libc::_exit(code) }
}

fn container_steps(
    plan: &Plan,
    joins: &[(OwnedFd, libc::c_int)],
    channel: &Channel,
    stdio: &ChildStdio,
    joining: CgroupJoin,
) -> Result<Infallible, InitFailure> {
    move_into_cgroup(joining)?;
    // A container must not outlive the carton process that owns it (the foreground CLI or the
    // detached supervisor) — unless it is an OCI `create`, whose caller exits and leaves the
    // container to a shim. If the owner died before this line, the child never gets Go on the
    // channel and exits before exec.
    if !plan.options.detached_init {
        die_with_parent();
    }
    for (fd, kind) in joins {
        // SAFETY: setns with an fd of a namespace file.
        if unsafe { libc::setns(fd.as_raw_fd(), *kind) } != 0 {
            return Err(failure(
                "join namespace",
                namespace_name(*kind),
                io::Error::last_os_error(),
            ));
        }
    }
    if plan.cgroup_namespace {
        // The namespace's root is the cgroup the process sits in when unsharing: wait until
        // that is the container's own.
        if matches!(joining, CgroupJoin::FromParent) {
            match channel.recv_from_parent() {
                Ok(Some(ToChild::CgroupJoined)) => {}
                // SAFETY: carton went away or failed; nothing to report to.
                _ => unsafe { libc::_exit(125) },
            }
        }
        // SAFETY: unshare has no memory-safety preconditions.
        if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
            return Err(failure(
                "cgroup namespace",
                "unshare",
                io::Error::last_os_error(),
            ));
        }
    }
    if plan.new_network_namespace() {
        bring_loopback_up().map_err(|e| failure("network", "bring lo up", e))?;
    }
    if let Some(hostname) = &plan.hostname {
        if plan.new_uts_namespace() {
            nix::unistd::sethostname(hostname)
                .map_err(|e| failure("set hostname", hostname.clone(), io::Error::from(e)))?;
        }
    }
    if let Some(domain) = &plan.domainname {
        // Only with a UTS namespace of its own (checked by the plan).
        // SAFETY: setdomainname reads `len` bytes of a live buffer.
        if unsafe { libc::setdomainname(domain.as_ptr().cast(), domain.len()) } != 0 {
            return Err(failure(
                "set domainname",
                domain.clone(),
                io::Error::last_os_error(),
            ));
        }
    }
    // While the host's /proc is still ours: our pid as the runtime sees it (for hook states).
    let host_pid: Option<i32> = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse().ok());
    // The exec FIFO lives on the host: hold it (O_PATH) before the pivot hides it.
    let fifo = match &plan.options.exec_fifo {
        Some(path) => Some(
            open_path_fd(path).map_err(|e| failure("exec fifo", path.display().to_string(), e))?,
        ),
        None => None,
    };
    let mut before_pivot = || -> Result<(), InitFailure> {
        if !plan.has_create_hooks() {
            return Ok(());
        }
        channel
            .send_to_parent(&ToParent::HooksPoint)
            .map_err(|e| failure("hooks", "ask carton for the create-time hooks", e))?;
        match channel.recv_from_parent() {
            Ok(Some(ToChild::HooksDone)) => {}
            // SAFETY: carton failed its hooks or went away; it reports.
            _ => unsafe { libc::_exit(125) },
        }
        if let Some(list) = plan
            .hooks
            .as_ref()
            .and_then(|h| h.create_container().clone())
        {
            // Still part of create (runtime spec, runtime.md step 2): "creating", as runc says.
            hooks::run(&list, &plan.hook_state("creating", host_pid)).map_err(|e| InitFailure {
                step: "createContainer hooks".into(),
                message: e,
                errno: None,
                exit_code: 125,
            })?;
        }
        Ok(())
    };
    let prepared = rootfs::prepare(&plan.rootfs, &mut before_pivot)?;
    let release = Release {
        fifo,
        preserve_fds: plan.options.preserve_fds,
        start_hooks: plan
            .hooks
            .as_ref()
            .and_then(|h| h.start_container().clone())
            .unwrap_or_default(),
        // startContainer runs before the user's program: the container is still "created".
        state: plan.hook_state("created", host_pid),
    };
    finish(&plan.process, channel, stdio, prepared.console, &release)
}

/// What happens between Go and the exec of a container's process.
#[derive(Debug, Default)]
struct Release {
    /// OCI create: wait here (opening this FIFO for writing) until `start` reads it.
    fifo: Option<OwnedFd>,
    /// Descriptors 3..3+N stay open for the container's process.
    preserve_fds: u32,
    /// startContainer hooks, run inside the container.
    start_hooks: Vec<oci_spec::runtime::Hook>,
    state: hooks::HookState,
}

fn open_path_fd(path: &Path) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

fn joined_steps(
    process: &ProcessPlan,
    namespaces: &[(OwnedFd, libc::c_int)],
    channel: &Channel,
    stdio: &ChildStdio,
    joining: CgroupJoin,
    die: bool,
) -> Result<Infallible, InitFailure> {
    move_into_cgroup(joining)?;
    if die {
        die_with_parent();
    }
    // The mount namespace last: after it, paths are the container's.
    for (fd, kind) in namespaces {
        // SAFETY: setns with an fd of a namespace file.
        if unsafe { libc::setns(fd.as_raw_fd(), *kind) } != 0 {
            return Err(failure(
                "join namespace",
                namespace_name(*kind),
                io::Error::last_os_error(),
            ));
        }
    }
    let console = if matches!(stdio, ChildStdio::Terminal) {
        let root = RootDir::open(Path::new("/")).map_err(|e| failure("open pty", "open /", e))?;
        let (master, slave, _) = rootfs::open_pty(&root)?;
        Some((master, slave))
    } else {
        None
    };
    finish(process, channel, stdio, console, &Release::default())
}

/// The steps every process takes once its namespaces and filesystem are in place: stdio,
/// limits and cwd as root, the Ready/Go handshake, the user switch, and exec.
fn finish(
    process: &ProcessPlan,
    channel: &Channel,
    stdio: &ChildStdio,
    console: Option<(OwnedFd, OwnedFd)>,
    release: &Release,
) -> Result<Infallible, InitFailure> {
    // SAFETY: setsid has no preconditions; it fails only if we already lead a group.
    unsafe { libc::setsid() };
    match (stdio, console) {
        (ChildStdio::Terminal, Some((master, slave))) => {
            channel
                .send_to_parent(&ToParent::Console(master))
                .map_err(|e| failure("console", "send pty master to carton", e))?;
            for target in 0..3 {
                stdio::dup_onto(slave.as_raw_fd(), target)
                    .map_err(|e| failure("console", "attach stdio to the pty", e))?;
            }
            // SAFETY: TIOCSCTTY on our own fd 0, a pty slave, as session leader.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
                return Err(failure(
                    "console",
                    "set controlling terminal",
                    io::Error::last_os_error(),
                ));
            }
        }
        (ChildStdio::Terminal, None) => {
            return Err(failure(
                "console",
                "a terminal was requested but no console was created",
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        (other, _) => stdio::attach_child(other).map_err(|e| failure("stdio", "attach", e))?,
    }
    // From here on only stdio and the sync channel are open: nothing inherited from the host
    // (a directory fd a caller leaked, say) can be reached — not even through a working
    // directory of /proc/self/fd/N (CVE-2024-21626). The channel is close-on-exec; its
    // closing at exec tells the parent that exec worked.
    let mut keep = vec![channel.as_raw_fd()];
    keep.extend(release.fifo.as_ref().map(|f| f.as_raw_fd()));
    keep.extend((0..release.preserve_fds).map(|i| 3 + i as libc::c_int));
    close_fds_except(&keep).map_err(|e| failure("close fds", "close inherited descriptors", e))?;

    prepare_process(process)?;

    channel
        .send_to_parent(&ToParent::Ready)
        .map_err(|e| failure("sync", "report ready", e))?;
    match channel.recv_from_parent() {
        Ok(Some(ToChild::Go)) => {}
        // carton went away or failed its own set-up: it will not collect us; just stop.
        // SAFETY: _exit never returns and needs nothing.
        _ => unsafe { libc::_exit(125) },
    }
    let mut _started_signal: Option<OwnedFd> = None;
    if let Some(fifo) = &release.fifo {
        // OCI create ends here for the caller; `start` opens the FIFO for reading, which
        // completes this open, and reads the byte.
        let _ = channel.send_to_parent(&ToParent::Created);
        // Held open (close-on-exec) until the user's program replaces us: `start` waits for
        // that EOF, so its poststart hooks run after the program started (runtime spec).
        _started_signal =
            Some(wait_for_start(fifo).map_err(|e| failure("exec fifo", "wait for start", e))?);
    }
    if !release.start_hooks.is_empty() {
        hooks::run(&release.start_hooks, &release.state).map_err(|e| InitFailure {
            step: "startContainer hooks".into(),
            message: e,
            errno: None,
            exit_code: 125,
        })?;
    }

    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it while carton still
    // has it (the profile must then allow the few calls below, as docker's does).
    if let (Some(program), false) = (&process.seccomp, process.no_new_privileges) {
        seccomp::install(program).map_err(|e| failure("seccomp", "install the filter", e))?;
    }
    if let Some(caps) = &process.capabilities {
        capabilities::drop_bounding(caps)
            .map_err(|e| failure("capabilities", "drop the bounding set", e))?;
    }
    // Read while still root: the user may not be allowed to read /etc/passwd.
    let env = env_with_home(&process.env, process.uid);
    switch_user(process)?;
    if let Some(caps) = &process.capabilities {
        capabilities::set(caps).map_err(|e| failure("capabilities", "set capabilities", e))?;
    }
    if process.no_new_privileges {
        // SAFETY: prctl with constant arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(failure("no_new_privs", "prctl", io::Error::last_os_error()));
        }
        if let Some(program) = &process.seccomp {
            seccomp::install(program).map_err(|e| failure("seccomp", "install the filter", e))?;
        }
    }
    signals::reset_for_exec();
    Err(exec::exec(&process.args, &env))
}

/// The environment with HOME added when the spec has none, as runc does: the user's home from
/// the container's /etc/passwd, else "/". (containerd's default spec and Kubernetes' CRI leave
/// HOME out; programs such as shells and git expect it.)
fn env_with_home(env: &[String], uid: u32) -> Vec<String> {
    let mut env = env.to_vec();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = home_of(uid).unwrap_or_else(|| "/".to_string());
        env.push(format!("HOME={home}"));
    }
    env
}

/// The home directory of `uid` in the container's /etc/passwd. The file belongs to the
/// container: only a regular file is read (a FIFO there must not block the init), and at most
/// 1 MiB of it.
fn home_of(uid: u32) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/etc/passwd")
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(1 << 20).read_to_string(&mut text).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 7 && fields[2].parse() == Ok(uid) && !fields[5].is_empty())
            .then(|| fields[5].to_string())
    })
}

/// Blocks until `start` opens the exec FIFO, then tells it, by one byte, that the init goes on.
fn wait_for_start(fifo: &OwnedFd) -> io::Result<OwnedFd> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", fifo.as_raw_fd()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: reopening our own O_PATH fd through /proc for writing; blocks until a reader.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor, owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: write one byte from a static buffer.
    if unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Closes every descriptor above 2 but those in `keep`. close_range(2) does it in a few
/// calls (Linux 5.9+; its CLOSE_RANGE_CLOEXEC flag would need 5.11); older kernels get a walk
/// of /proc/self/fd.
fn close_fds_except(keep: &[libc::c_int]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&fd| fd > 2)
        .map(|&fd| fd as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let close_range = |first: u32, last: u32| -> io::Result<()> {
        if first > last {
            return Ok(());
        }
        // SAFETY: close_range on our own descriptor table.
        if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    let mut first = 3u32;
    let mut result = Ok(());
    for &fd in &keep {
        result = result.and_then(|()| close_range(first, fd - 1));
        first = fd + 1;
    }
    result = result.and_then(|()| close_range(first, u32::MAX));
    match result {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            let fds: Vec<u32> = std::fs::read_dir("/proc/self/fd")?
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|&fd: &u32| fd > 2 && !keep.contains(&fd))
                .collect();
            for fd in fds {
                // SAFETY: closing descriptors of our own table (the directory fd of the walk
                // is already closed; EBADF for it is harmless).
                unsafe { libc::close(fd as libc::c_int) };
            }
            Ok(())
        }
        other => other,
    }
}

fn die_with_parent() {
    // SAFETY: prctl has no memory-safety preconditions.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
}

fn namespace_name(kind: libc::c_int) -> &'static str {
    match kind {
        libc::CLONE_NEWNS => "mnt",
        libc::CLONE_NEWNET => "net",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWPID => "pid",
        _ => "namespace",
    }
}

/// Limits, cwd and the like: done as root, before the user switch.
fn prepare_process(process: &ProcessPlan) -> Result<(), InitFailure> {
    for &(resource, soft, hard) in &process.rlimits {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            let err = io::Error::last_os_error();
            let hint = if err.raw_os_error() == Some(libc::EPERM) {
                " (raising a hard limit above carton's own needs CAP_SYS_RESOURCE)"
            } else {
                ""
            };
            return Err(failure(
                "set rlimits",
                format!("{} to {soft}:{hard}{hint}", rlimit_name(resource)),
                err,
            ));
        }
    }
    if let Some(adj) = process.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| failure("oom_score_adj", adj.to_string(), e))?;
    }
    // docker creates a missing working directory for a container (not for exec); after
    // pivot_root, paths resolve inside the container only.
    if process.create_cwd {
        std::fs::create_dir_all(&process.cwd).map_err(|e| {
            failure(
                "set working directory",
                process.cwd.display().to_string(),
                e,
            )
        })?;
    }
    std::env::set_current_dir(&process.cwd).map_err(|e| {
        failure(
            "set working directory",
            process.cwd.display().to_string(),
            e,
        )
    })?;
    // The working directory must lie inside the container's root: the kernel reports one
    // outside it as "(unreachable)".
    let inside = std::env::current_dir().is_ok_and(|d| d.is_absolute());
    if !inside {
        return Err(failure(
            "set working directory",
            format!("{} is outside the container", process.cwd.display()),
            io::Error::from_raw_os_error(libc::EPERM),
        ));
    }
    if let Some(mask) = process.umask {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    Ok(())
}

fn rlimit_name(resource: libc::__rlimit_resource_t) -> String {
    let name = match resource {
        libc::RLIMIT_AS => "RLIMIT_AS",
        libc::RLIMIT_CORE => "RLIMIT_CORE",
        libc::RLIMIT_CPU => "RLIMIT_CPU",
        libc::RLIMIT_DATA => "RLIMIT_DATA",
        libc::RLIMIT_FSIZE => "RLIMIT_FSIZE",
        libc::RLIMIT_LOCKS => "RLIMIT_LOCKS",
        libc::RLIMIT_MEMLOCK => "RLIMIT_MEMLOCK",
        libc::RLIMIT_MSGQUEUE => "RLIMIT_MSGQUEUE",
        libc::RLIMIT_NICE => "RLIMIT_NICE",
        libc::RLIMIT_NOFILE => "RLIMIT_NOFILE",
        libc::RLIMIT_NPROC => "RLIMIT_NPROC",
        libc::RLIMIT_RSS => "RLIMIT_RSS",
        libc::RLIMIT_RTPRIO => "RLIMIT_RTPRIO",
        libc::RLIMIT_RTTIME => "RLIMIT_RTTIME",
        libc::RLIMIT_SIGPENDING => "RLIMIT_SIGPENDING",
        libc::RLIMIT_STACK => "RLIMIT_STACK",
        other => return format!("resource {other}"),
    };
    name.to_string()
}

fn switch_user(process: &ProcessPlan) -> Result<(), InitFailure> {
    let step = "switch user";
    let who = format!("{}:{}", process.uid, process.gid);
    // SAFETY: plain credential syscalls with valid arguments.
    unsafe {
        if libc::setgroups(
            process.additional_gids.len(),
            process.additional_gids.as_ptr(),
        ) != 0
        {
            return Err(failure(
                step,
                format!("setgroups for {who}"),
                io::Error::last_os_error(),
            ));
        }
        if libc::setresgid(process.gid, process.gid, process.gid) != 0 {
            return Err(failure(
                step,
                format!("setgid {who}"),
                io::Error::last_os_error(),
            ));
        }
        if libc::setresuid(process.uid, process.uid, process.uid) != 0 {
            return Err(failure(
                step,
                format!("setuid {who}"),
                io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// A new network namespace starts with `lo` down; programs expect 127.0.0.1 to work.
fn bring_loopback_up() -> io::Result<()> {
    // SAFETY: a datagram socket is only used for interface ioctls and closed on drop.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd owned here.
    let sock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain data; the name fits IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: interface ioctls with a valid ifreq.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
