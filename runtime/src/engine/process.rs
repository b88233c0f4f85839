//! Creating the container's init: clone into new namespaces, let host-side set-up run while the
//! child builds its rootfs, release it, and observe its exec through the sync channel.

use std::fs::File;
use std::os::fd::OwnedFd;

use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::channel::{self, ToChild, ToParent};
use super::error::EngineError;
use super::init::{self, ChildStdio};
use super::plan::Plan;
use super::signals;
use crate::cgroups::CgroupManager;

/// How the container's stdio relates to carton's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// The container writes straight to carton's stdout/stderr; reads carton's stdin only when
    /// `stdin` is true (`-i`), /dev/null otherwise.
    Inherit { stdin: bool },
    /// A pty inside the container (`-t`); carton gets the master and proxies it.
    Terminal,
}

/// A container whose user process has been exec'd.
#[derive(Debug)]
pub struct Started {
    pub pid: Pid,
    /// The pty master when [`Stdio::Terminal`] was asked for.
    pub console: Option<OwnedFd>,
    /// The container's cgroup, for OOM checks and removal once it has exited.
    pub cgroup: Option<Box<dyn CgroupManager>>,
    /// carton's signal mask before the watched signals were blocked.
    pub(crate) saved_mask: SigSet,
}

/// Clones the init with the plan's namespaces and runs it up to the exec of the user's
/// process. `host_setup` runs in the parent between the clone and the exec (the place for
/// cgroups and network plumbing): it gets the child's pid; if it fails, the child is killed.
/// `on_console` receives the pty master before the exec, e.g. to size it.
///
/// The watched signals stay blocked on success; [`super::foreground`] reads them.
pub fn start(
    plan: &Plan,
    cgroup: Option<&dyn CgroupManager>,
    stdio: Stdio,
    host_setup: &mut dyn FnMut(Pid) -> Result<(), String>,
    on_console: &mut dyn FnMut(&OwnedFd),
) -> Result<Started, EngineError> {
    let (parent_end, child_end) =
        channel::pair().map_err(EngineError::os("create sync channel"))?;
    let child_stdio = match stdio {
        Stdio::Terminal => ChildStdio::Terminal,
        Stdio::Inherit { stdin: true } => ChildStdio::Inherit { null_stdin: None },
        Stdio::Inherit { stdin: false } => ChildStdio::Inherit {
            null_stdin: Some(OwnedFd::from(
                File::open("/dev/null").map_err(EngineError::os("open /dev/null"))?,
            )),
        },
    };
    let saved_mask = signals::block_watched().map_err(|e| EngineError::Os {
        context: "block signals",
        source: e.into(),
    })?;

    // On cgroup v2 the child is born in its cgroup (clone3 CLONE_INTO_CGROUP): no window in
    // which it runs uncounted, and no write to cgroup.procs afterwards.
    let cgroup_fd = match cgroup.map(|c| c.clone_into()).transpose() {
        Ok(fd) => fd.flatten(),
        Err(e) => {
            signals::restore_mask(&saved_mask);
            return Err(e.into());
        }
    };
    let (rc, in_cgroup) = match clone_child(plan.clone_flags, cgroup_fd.as_ref()) {
        Ok(result) => result,
        Err(e) => {
            signals::restore_mask(&saved_mask);
            return Err(e);
        }
    };
    if rc == 0 {
        drop(parent_end);
        init::run(plan, &child_end, &child_stdio, in_cgroup);
    }
    let pid = Pid::from_raw(rc as libc::pid_t);
    drop(child_end);
    drop(child_stdio);

    let fail = move |err: EngineError| {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        signals::restore_mask(&saved_mask);
        err
    };

    if let (Some(cgroup), false) = (cgroup, in_cgroup) {
        if let Err(e) = cgroup.add_process(pid.as_raw()) {
            return Err(fail(e.into()));
        }
        if plan.cgroup_namespace {
            if let Err(e) = parent_end.send_to_child(&ToChild::CgroupJoined) {
                return Err(fail(EngineError::Os {
                    context: "tell container init it joined its cgroup",
                    source: e,
                }));
            }
        }
    }
    if let Err(message) = host_setup(pid) {
        return Err(fail(EngineError::Setup(message)));
    }

    let mut console = None;
    loop {
        match parent_end.recv_from_child() {
            Ok(Some(ToParent::Console(fd))) => {
                on_console(&fd);
                console = Some(fd);
            }
            Ok(Some(ToParent::Ready)) => break,
            Ok(Some(ToParent::Failed(failure))) => return Err(fail(EngineError::Init(failure))),
            Ok(None) => return Err(fail(init_died(pid))),
            Err(e) => {
                return Err(fail(EngineError::Os {
                    context: "read from container init",
                    source: e,
                }));
            }
        }
    }
    if let Err(e) = parent_end.send_to_child(&ToChild::Go) {
        return Err(fail(EngineError::Os {
            context: "release container init",
            source: e,
        }));
    }
    // End-of-file now means the exec succeeded (the channel is close-on-exec); a message means
    // it failed.
    match parent_end.recv_from_child() {
        Ok(None) => Ok(Started {
            pid,
            console,
            cgroup: None,
            saved_mask,
        }),
        Ok(Some(ToParent::Failed(failure))) => Err(fail(EngineError::Init(failure))),
        Ok(Some(other)) => Err(fail(EngineError::Setup(format!(
            "unexpected message from container init after release: {other:?}"
        )))),
        Err(e) => Err(fail(EngineError::Os {
            context: "read from container init",
            source: e,
        })),
    }
}

/// Layout of `struct clone_args` (linux/sched.h), up to the `cgroup` field (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Creates the child, fork-like (no new stack: the child continues on a copy of this one —
/// sound because carton is single-threaded here). Returns the raw result (0 in the child) and
/// whether the child was placed in `cgroup` at birth.
fn clone_child(
    flags: libc::c_ulong,
    cgroup: Option<&OwnedFd>,
) -> Result<(libc::c_long, bool), EngineError> {
    if let Some(fd) = cgroup {
        let args = CloneArgs {
            flags: flags | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: std::os::fd::AsRawFd::as_raw_fd(fd) as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 with a valid clone_args of the size passed; without a stack it behaves
        // like fork.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if rc >= 0 {
            return Ok((rc, true));
        }
        let err = std::io::Error::last_os_error();
        // Kernels before 5.7 know no CLONE_INTO_CGROUP (E2BIG/EINVAL), before 5.3 no clone3
        // (ENOSYS): fall back to clone + a write to cgroup.procs.
        if !matches!(
            err.raw_os_error(),
            Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
        ) {
            return Err(EngineError::Os {
                context: "clone the container init into its cgroup",
                source: err,
            });
        }
    }
    // SAFETY: see above.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if rc < 0 {
        return Err(EngineError::last_os("clone the container init"));
    }
    Ok((rc, false))
}

fn init_died(pid: Pid) -> EngineError {
    let status = match waitpid(pid, None) {
        Ok(status) => format!("{status:?}"),
        Err(e) => e.to_string(),
    };
    EngineError::InitDied(status)
}
