//! `stop`, `kill`, `start`, `restart`, `wait`: acting on containers that already exist.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill as send_signal};
use nix::unistd::Pid;

use super::create::Created;
use super::run::{RunMode, run_detached};
use super::update::read_spec;
use super::{ContainerError, remove};
use crate::state::{ContainerRecord, StateStore, Status};

/// How long carton waits for a container's owner to record its end once the process is gone.
const OWNER_GRACE: Duration = Duration::from_secs(10);

/// Parses `KILL`, `SIGKILL`, `kill` or `9`.
pub fn parse_signal(text: &str) -> Result<Signal, ContainerError> {
    let invalid = || ContainerError::InvalidInput(format!("invalid signal: {text}"));
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| invalid());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| invalid())
}

/// `stop`: SIGTERM, then SIGKILL after `grace`; returns once the container's end is recorded.
/// Stopping a container that does not run is not an error.
pub fn stop(states: &StateStore, reference: &str, grace: Duration) -> Result<(), ContainerError> {
    let record = states.resolve(reference)?;
    if !record.process_alive() {
        return settle(states, &record);
    }
    let _ = signal(&record, Signal::SIGTERM);
    if !wait_dead(&record, grace) {
        let _ = signal(&record, Signal::SIGKILL);
        wait_dead(&record, OWNER_GRACE);
    }
    settle(states, &record)
}

/// Sends `sig` to the container's init, then thaws its cgroup if it is frozen (a `commit`
/// that was killed mid-way leaves it so): a frozen process on cgroup v1 acts on no signal,
/// not even SIGKILL, until it is thawed.
pub(crate) fn signal(record: &ContainerRecord, sig: Signal) -> nix::Result<()> {
    send_signal(Pid::from_raw(record.pid.unwrap_or(0)), sig)?;
    if let Ok(cgroup) = crate::cgroups::open(
        &crate::cgroups::Layout::detect(),
        &super::cgroup_path(&record.id),
    ) && cgroup.is_frozen()
    {
        log::warn!(
            "container {} was frozen (an interrupted commit?): thawing it",
            record.short_id()
        );
        if let Err(e) = cgroup.thaw() {
            log::warn!("container {}: {e}", record.short_id());
        }
    }
    Ok(())
}

/// `kill`: sends `signal` to the container's init.
pub fn kill(states: &StateStore, reference: &str, signal: Signal) -> Result<(), ContainerError> {
    let record = states.resolve(reference)?;
    if !record.process_alive() {
        return Err(ContainerError::NotRunning(reference.to_string()));
    }
    self::signal(&record, signal)
        .map_err(|e| ContainerError::io(format!("send {signal} to {reference}"))(e.into()))
}

/// `start`: runs a created or exited container again, detached, with its own layer. A running
/// container is left alone.
pub fn start(states: &StateStore, reference: &str) -> Result<(), ContainerError> {
    let record = states.resolve(reference)?;
    if record.process_alive() {
        return Ok(());
    }
    // A previous run whose owner is still finishing up must be done first.
    settle(states, &record)?;
    let record = states.load(&record.id)?;
    let bundle = states.container_dir(&record.id);
    let spec = read_spec(&bundle.join("config.json"))?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let created = Created {
        record,
        spec,
        bundle,
    };
    run_detached(
        states,
        created,
        RunMode {
            terminal,
            interactive: false,
        },
    )
}

/// `wait`: blocks until the container is not running; returns its exit code.
pub fn wait(states: &StateStore, reference: &str) -> Result<i32, ContainerError> {
    // Registered under the lock its removers take: a `--rm` container that goes away while we
    // wait leaves its exit code in our waiter file.
    let (record, waiter) = {
        let _lock = states.global_lock()?;
        let record = states.resolve(reference)?;
        let waiter = states.register_waiter(&record.id)?;
        (record, waiter)
    };
    let removed = || waiter.exit_code().unwrap_or(255);
    loop {
        let current = match states.load(&record.id) {
            Ok(r) => r,
            Err(crate::state::StateError::NotFound(_)) => return Ok(removed()),
            Err(e) => return Err(e.into()),
        };
        if current.status != Status::Running {
            return Ok(current.exit_code.unwrap_or(0));
        }
        if !current.process_alive() {
            settle(states, &current)?;
            return match states.load(&record.id) {
                Ok(done) => Ok(done.exit_code.unwrap_or(255)),
                Err(crate::state::StateError::NotFound(_)) => Ok(removed()),
                Err(e) => Err(e.into()),
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Once the container's process is gone: waits for its owner to record the end (exit code,
/// OOM kill, cgroup removal), or — if the owner is gone too — reconciles the record itself.
pub(crate) fn settle(states: &StateStore, record: &ContainerRecord) -> Result<(), ContainerError> {
    let deadline = Instant::now() + OWNER_GRACE;
    loop {
        let current = match states.load(&record.id) {
            Ok(r) => r,
            Err(crate::state::StateError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if current.status != Status::Running {
            return Ok(());
        }
        if !current.owner_alive() || Instant::now() > deadline {
            let _lock = states.global_lock()?;
            let mut fresh = states.load(&record.id)?;
            if fresh.reconcile() {
                states.save(&fresh)?;
                remove::remove_cgroup(&fresh.id)?;
                crate::network::detach_all(states.root(), &fresh.id)?;
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the container's init is gone; false if it still runs after `limit`.
fn wait_dead(record: &ContainerRecord, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while record.process_alive() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("hup").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        for bad in ["NOSUCHSIG", "", "99", "SIG"] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }
}
