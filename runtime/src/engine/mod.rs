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
pub(crate) mod in_root;
mod init;
mod mount_options;
mod plan;
mod process;
mod rootfs;
pub mod seccomp;
mod signals;
mod stdio;
mod terminal;

pub use error::{EngineError, InitFailure};
pub use exec::DEFAULT_PATH;
pub use foreground::{Attach, ExitStatus, OutputSink, Stream, ToCartonStdio};
pub use plan::{OVERLAY_ANNOTATION, Plan, ProcessPlan};
pub use process::{Started, Target};
pub use stdio::Stdio;

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::unistd::Pid;
use oci_spec::runtime::{Process, Spec};

use crate::cgroups::{self, Layout};

/// Starts the container described by `spec` (bundle directory `bundle`) up to the exec of its
/// process. See [`process::start`] for `host_setup`.
pub fn start(
    spec: &Spec,
    bundle: &Path,
    stdio: Stdio,
    host_setup: &mut dyn FnMut(Pid) -> Result<(), String>,
) -> Result<Started, EngineError> {
    let mut plan = Plan::from_spec(spec, bundle)?;
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
    let started = process::start(
        &plan,
        cgroup.as_deref(),
        stdio,
        host_setup,
        &mut |console: &OwnedFd| terminal::copy_window_size(console.as_fd()),
    );
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
    process::join(
        &target,
        &plan,
        cgroup.as_deref(),
        stdio,
        detached,
        &mut |console: &OwnedFd| terminal::copy_window_size(console.as_fd()),
    )
}
