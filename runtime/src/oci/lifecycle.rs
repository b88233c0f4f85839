//! `start`, `state`, `kill`, `delete`, `pause`, `resume`, `ps`, `list`, `update`.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill as send_signal};
use nix::unistd::Pid;

use super::OciError;
use super::state::{Creator, Record, Status, Store, init_alive, state_json};
use crate::cgroups::{self, CgroupManager, Layout, Resources};
use crate::engine::hooks;

fn cgroup_of(record: &Record) -> Result<Option<Box<dyn CgroupManager>>, OciError> {
    match &record.cgroup_path {
        Some(path) => match cgroups::open(&Layout::detect(), path) {
            Ok(c) => Ok(Some(c)),
            Err(cgroups::CgroupError::NoCgroups) => Ok(None),
            Err(e) => Err(e.into()),
        },
        None => Ok(None),
    }
}

fn bad_status(record: &Record, status: Status, what: &str) -> OciError {
    OciError::BadStatus {
        id: record.id.clone(),
        status: status.as_str(),
        what: what.to_string(),
    }
}

fn hook_state(record: &Record, status: Status) -> hooks::HookState {
    hooks::HookState {
        oci_version: "1.2.0".into(),
        id: record.id.clone(),
        status: status.as_str().into(),
        pid: (status != Status::Stopped).then_some(record.pid),
        bundle: record.bundle.display().to_string(),
        annotations: record.annotations.clone(),
    }
}

/// `start`: releases the init waiting on its exec FIFO, then runs the poststart hooks.
pub fn start(store: &Store, id: &str) -> Result<(), OciError> {
    let record = store.load(id)?;
    let status = store.status(&record);
    if status != Status::Created {
        return Err(bad_status(
            &record,
            status,
            "only a created container can be started",
        ));
    }
    let fifo = store.fifo(id);
    let path = std::ffi::CString::new(fifo.to_string_lossy().as_bytes())
        .map_err(|_| OciError::InvalidId(id.to_string()))?;
    // Non-blocking: the open must not hang if the init died meanwhile. Opening for reading
    // completes the init's blocked open for writing; the init then writes one byte.
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(OciError::io("open the exec fifo")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got_byte = false;
    loop {
        let mut byte = [0u8; 1];
        // SAFETY: read into a local buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        if n == 1 {
            got_byte = true;
        } else if n == 0 && got_byte {
            // EOF: the init's end closed at exec (or the init died; `state` tells): the
            // user's program has started, after the startContainer hooks.
            break;
        }
        if !got_byte && store.status(&record) == Status::Stopped {
            return Err(bad_status(
                &record,
                Status::Stopped,
                "its init died before it could start",
            ));
        }
        if Instant::now() > deadline {
            return Err(OciError::io("wait for the init to take the start")(
                std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = std::fs::remove_file(&fifo);
    if !record.poststart.is_empty() {
        // A failing poststart hook is reported but does not stop the container (runtime spec).
        if let Err(e) = hooks::run(&record.poststart, &hook_state(&record, Status::Running)) {
            log::warn!("{e}");
        }
    }
    Ok(())
}

/// `state`: the OCI state document.
pub fn state(store: &Store, id: &str) -> Result<serde_json::Value, OciError> {
    let record = store.load(id)?;
    let status = store.status(&record);
    Ok(state_json(&record, status))
}

/// `kill [--all] ID SIGNAL`.
pub fn kill(store: &Store, id: &str, signal: Signal, all: bool) -> Result<(), OciError> {
    let record = store.load(id)?;
    let status = store.status(&record);
    match status {
        Status::Stopped => {
            return Err(bad_status(&record, status, "there is no process to signal"));
        }
        // Runtime spec: only a created or running container takes signals.
        Status::Creating => {
            return Err(bad_status(&record, status, "wait for create to finish"));
        }
        _ => {}
    }
    if all {
        if let Some(cgroup) = cgroup_of(&record)? {
            for pid in cgroup.pids()? {
                let _ = send_signal(Pid::from_raw(pid), signal);
            }
            return Ok(());
        }
    }
    send_signal(Pid::from_raw(record.pid), signal)
        .map_err(|e| OciError::io(format!("send {signal} to {id}"))(e.into()))
}

/// `delete [--force] ID`: the cgroup and the state go, the poststop hooks run.
pub fn delete(store: &Store, id: &str, force: bool) -> Result<(), OciError> {
    let record = match store.load(id) {
        Ok(r) => r,
        // A create that died half-way leaves a directory without state: deleting it is fine.
        Err(OciError::Corrupt(_)) if force => return store.remove(id),
        // `delete --force` of what is already gone succeeds, as with runc: shims call it to be
        // sure, after a delete of their own.
        Err(OciError::NotFound(_)) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let status = store.status(&record);
    let cgroup = cgroup_of(&record)?;
    match status {
        Status::Stopped if record.creating.is_none() => {}
        // A created container never ran its user's program, and a half-created one's create
        // died (its init may still wait): deleting them is allowed.
        Status::Stopped | Status::Created => kill_everything(&record, cgroup.as_deref()),
        Status::Creating if force => {
            stop_creator(&record);
            kill_everything(&record, cgroup.as_deref());
        }
        Status::Creating => {
            return Err(bad_status(
                &record,
                status,
                "wait for create to finish, or use --force",
            ));
        }
        _ if force => {
            if status == Status::Paused {
                if let Some(c) = cgroup.as_deref() {
                    let _ = c.thaw();
                }
            }
            kill_everything(&record, cgroup.as_deref());
        }
        _ => {
            return Err(bad_status(&record, status, "stop it first, or use --force"));
        }
    }
    if let Some(cgroup) = cgroup {
        cgroup.destroy()?;
    }
    if !record.poststop.is_empty() {
        if let Err(e) = hooks::run(&record.poststop, &hook_state(&record, Status::Stopped)) {
            log::warn!("{e}");
        }
    }
    store.remove(id)
}

/// SIGKILL to the init and everything in its cgroup, and a bounded wait for them to go. The
/// init is signalled only while its pid still names it (never pid 0: that is our own group).
fn kill_everything(record: &Record, cgroup: Option<&dyn CgroupManager>) {
    if init_alive(record) {
        let _ = send_signal(Pid::from_raw(record.pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let members = cgroup.and_then(|c| c.pids().ok()).unwrap_or_default();
        for pid in &members {
            let _ = send_signal(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        if (members.is_empty() && !init_alive(record)) || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `delete --force` during create: the create process goes first, so that it cannot go on to
/// write the final record or start more of the container; bounded wait for it to die.
fn stop_creator(record: &Record) {
    let Some(creator) = record.creating.filter(Creator::alive) else {
        return;
    };
    let _ = send_signal(Pid::from_raw(creator.pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while creator.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn pause(store: &Store, id: &str) -> Result<(), OciError> {
    let record = store.load(id)?;
    let status = store.status(&record);
    if status != Status::Running && status != Status::Created {
        return Err(bad_status(
            &record,
            status,
            "only a running container can be paused",
        ));
    }
    cgroup_of(&record)?
        .ok_or_else(|| bad_status(&record, status, "it has no cgroup to freeze"))?
        .freeze()?;
    Ok(())
}

pub fn resume(store: &Store, id: &str) -> Result<(), OciError> {
    let record = store.load(id)?;
    let status = store.status(&record);
    if status != Status::Paused {
        return Err(bad_status(
            &record,
            status,
            "only a paused container can be resumed",
        ));
    }
    cgroup_of(&record)?
        .ok_or_else(|| bad_status(&record, status, "it has no cgroup"))?
        .thaw()?;
    Ok(())
}

/// The pids in the container's cgroup.
pub fn pids(store: &Store, id: &str) -> Result<Vec<i32>, OciError> {
    let record = store.load(id)?;
    match cgroup_of(&record)? {
        Some(c) => Ok(c.pids()?),
        None if store.status(&record) != Status::Stopped => Ok(vec![record.pid]),
        None => Ok(Vec::new()),
    }
}

/// Every container with its status.
pub fn list(store: &Store) -> Result<Vec<(Record, Status)>, OciError> {
    let mut out = Vec::new();
    for id in store.ids()? {
        if let Ok(record) = store.load(&id) {
            let status = store.status(&record);
            out.push((record, status));
        }
    }
    Ok(out)
}

/// `update --resources FILE|-`: OCI `linux.resources` JSON applied to the live cgroup.
pub fn update(store: &Store, id: &str, resources_json: &[u8]) -> Result<(), OciError> {
    let record = store.load(id)?;
    let oci: oci_spec::runtime::LinuxResources = serde_json::from_slice(resources_json)
        .map_err(|e| OciError::InvalidConfig(format!("resources are not valid JSON: {e}")))?;
    let resources = Resources::from_oci(&oci)?;
    let cgroup = cgroup_of(&record)?
        .ok_or_else(|| bad_status(&record, store.status(&record), "it has no cgroup to update"))?;
    cgroup.apply(&resources)?;
    Ok(())
}

/// Reads `--resources FILE`, `-` meaning stdin.
pub fn read_resources(source: &str) -> Result<Vec<u8>, OciError> {
    let mut bytes = Vec::new();
    if source == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(OciError::io("read resources from stdin"))?;
    } else {
        bytes = std::fs::read(source).map_err(OciError::io(format!("read {source}")))?;
    }
    Ok(bytes)
}
