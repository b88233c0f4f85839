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

    // A raw clone without a new stack behaves like fork(2) with namespace flags: the child
    // continues on a copy of this stack. carton is single-threaded here (no runtime, no
    // pools), which is what makes this sound.
    // SAFETY: see above; the child only runs init::run, which never returns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            plan.clone_flags | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if rc < 0 {
        let err = EngineError::last_os("clone the container init");
        signals::restore_mask(&saved_mask);
        return Err(err);
    }
    if rc == 0 {
        drop(parent_end);
        init::run(plan, &child_end, &child_stdio);
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

fn init_died(pid: Pid) -> EngineError {
    let status = match waitpid(pid, None) {
        Ok(status) => format!("{status:?}"),
        Err(e) => e.to_string(),
    };
    EngineError::InitDied(status)
}
