//! The engine: an OCI runtime spec in, an isolated running process out.
//!
//! It never looks at CLI flags — `carton run` builds a spec and a bundle directory, and so will
//! the OCI runtime front end later. Flow (DESIGN.md §3):
//! 1. [`plan`] reads and validates the spec (unsupported features are refused);
//! 2. [`process::start`] clones the init into new namespaces with a sync [`channel`];
//!    the child ([`init`]) builds its filesystem ([`rootfs`]), console and process state, says
//!    Ready and waits; the parent runs the host-side set-up hook, says Go; the child execs
//!    ([`exec`]) and the channel's close-on-exec end tells the parent it worked;
//! 3. [`foreground::wait`] relays signals and the console until the container exits.

pub mod capabilities;
mod channel;
mod error;
mod exec;
pub mod foreground;
pub mod hooks;
pub(crate) mod in_root;
mod init;
mod mount_options;
mod plan;
mod process;
mod rootfs;
pub mod sealed_exe;
pub mod seccomp;
mod signals;
mod stdio;
mod terminal;

pub use error::{EngineError, InitFailure};
pub use exec::DEFAULT_PATH;
pub use foreground::{Attach, ExitStatus, OutputSink, Stream, ToCartonStdio};
pub use plan::{OVERLAY_ANNOTATION, Plan, ProcessPlan, StartOptions};
pub use process::{StartEvents, Started, Target, spawn_and_reap};
pub use stdio::Stdio;

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{Process, Spec};

use crate::cgroups::{self, Layout};

/// Starts the container described by `spec` (bundle directory `bundle`) up to the exec of its
/// process (or, with `options.exec_fifo`, up to its wait for `start`). `events` is called at
/// the points where the host side has work (see [`StartEvents`]); a console is given the
/// caller's window size unless `events` handles it.
pub fn start(
    spec: &Spec,
    bundle: &Path,
    stdio: Stdio,
    options: &StartOptions,
    events: &mut dyn StartEvents,
) -> Result<Started, EngineError> {
    let mut plan = Plan::from_spec(spec, bundle)?;
    plan.options = options.clone();
    plan.rootfs.no_pivot = options.no_pivot;
    if (stdio == Stdio::Terminal) != plan.process.terminal {
        return Err(EngineError::InvalidSpec(
            "process.terminal does not match the requested stdio".into(),
        ));
    }
    let cgroup = match &plan.cgroup {
        Some(wanted) => {
            let cgroup = cgroups::open(&Layout::detect(), &wanted.path)?;
            let made = cgroup
                .create()
                .and_then(|()| cgroup.apply(&wanted.resources))
                .and_then(|()| cgroup.apply_devices(&wanted.devices));
            if let Err(e) = made {
                let _ = cgroup.destroy();
                return Err(e.into());
            }
            plan.rootfs.cgroup_view = Some(cgroup.view());
            Some(cgroup)
        }
        None => None,
    };
    let started = process::start(&plan, cgroup.as_deref(), stdio, events);
    match started {
        Ok(mut started) => {
            started.cgroup = cgroup;
            Ok(started)
        }
        Err(e) => {
            if let Some(cgroup) = cgroup {
                let _ = cgroup.destroy();
            }
            Err(e)
        }
    }
}

/// Runs `process` inside the running container whose init is `init_pid` (`exec`): in its
/// namespaces and in the cgroup at `cgroup_path`. With `detached` the process does not die
/// with carton and nobody waits for it.
pub fn exec(
    init_pid: i32,
    process: &Process,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
    cgroup_path: Option<&str>,
    stdio: Stdio,
    detached: bool,
) -> Result<Started, EngineError> {
    exec_with(
        init_pid,
        process,
        seccomp,
        cgroup_path,
        stdio,
        detached,
        &mut SizeConsole,
    )
}

/// [`exec`] with the caller's handling of the console (a console socket, for the OCI runtime).
pub fn exec_with(
    init_pid: i32,
    process: &Process,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
    cgroup_path: Option<&str>,
    stdio: Stdio,
    detached: bool,
    events: &mut dyn StartEvents,
) -> Result<Started, EngineError> {
    let mut plan = ProcessPlan::from_process(process, false)?;
    plan.seccomp = seccomp.map(seccomp::compile).transpose()?;
    if (stdio == Stdio::Terminal) != plan.terminal {
        return Err(EngineError::InvalidSpec(
            "process.terminal does not match the requested stdio".into(),
        ));
    }
    let target = Target::open(init_pid)?;
    let cgroup = match cgroup_path {
        Some(path) => Some(cgroups::open(&Layout::detect(), path)?),
        None => None,
    };
    process::join(&target, &plan, cgroup.as_deref(), stdio, detached, events)
}

/// Gives a console carton's own window size: what `run -t` and `exec -t` want.
#[derive(Debug, Default)]
pub struct SizeConsole;

impl StartEvents for SizeConsole {
    fn console(&mut self, master: &OwnedFd) -> Result<(), String> {
        terminal::copy_window_size(master.as_fd());
        Ok(())
    }
}
