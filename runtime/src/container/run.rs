//! Running a created container in the foreground: start it through the engine, record its pid,
//! wait, record how it ended, and remove it when `--rm` asked for that.

use super::ContainerError;
use super::create::Created;
use crate::engine::{self, Attach, Stdio};
use crate::state::{StateStore, Status, Timestamp, process_start_time};

/// How the user is attached to a foreground container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunMode {
    /// `-t`
    pub terminal: bool,
    /// `-i`
    pub interactive: bool,
}

/// Starts `created` and waits for it. Returns the container's exit code (128+N for a
/// signal). A container that could not start stays `Created` (as docker leaves it) unless it
/// was created with `--rm`.
pub fn run_foreground(
    states: &StateStore,
    created: Created,
    mode: RunMode,
) -> Result<i32, ContainerError> {
    let stdio = if mode.terminal {
        Stdio::Terminal
    } else {
        Stdio::Inherit {
            stdin: mode.interactive,
        }
    };
    let id = created.record.id.clone();
    // The record says "running" before the user's process can print anything, so whoever
    // sees its output and then runs `ps` sees it running.
    let mut mark_running = |pid: nix::unistd::Pid| {
        let pid = pid.as_raw();
        // The record may be gone if `rm -f` raced us; the container still runs to its end.
        let _ = states.update(&id, |r| {
            r.status = Status::Running;
            r.pid = Some(pid);
            r.pid_start_time = process_start_time(pid);
            r.started_at = Some(Timestamp::now());
            r.oom_killed = false;
        });
        Ok(())
    };
    let started = match engine::start(&created.spec, &created.bundle, stdio, &mut mark_running) {
        Ok(started) => started,
        Err(e) => {
            if created.record.auto_remove {
                let _ = states.remove_dir(&id);
            } else {
                // Never started: docker leaves such a container "Created".
                let _ = states.update(&id, |r| {
                    r.status = Status::Created;
                    r.pid = None;
                    r.pid_start_time = None;
                    r.started_at = None;
                });
            }
            return Err(e.into());
        }
    };

    let mut started = started;
    let cgroup = started.cgroup.take();
    let waited = engine::foreground::wait(
        started,
        Attach {
            stdin: mode.interactive,
        },
    );
    let code = match &waited {
        Ok(status) => Some(status.code),
        Err(_) => None,
    };
    // The container is gone: read what its cgroup remembers, then remove the cgroup.
    let oom_killed = cgroup
        .as_ref()
        .is_some_and(|c| c.oom_kills().is_ok_and(|n| n > 0));
    let cleanup = cgroup.map(|c| c.destroy()).transpose();
    if created.record.auto_remove {
        states.remove_dir(&id)?;
    } else {
        let _ = states.update(&id, |r| {
            r.status = Status::Exited;
            r.pid = None;
            r.pid_start_time = None;
            r.exit_code = Some(code.unwrap_or(255));
            r.oom_killed = oom_killed;
            r.finished_at = Some(Timestamp::now());
        });
    }
    if let Err(e) = cleanup {
        log::warn!("container {}: {e}", created.record.short_id());
    }
    Ok(waited?.code)
}
