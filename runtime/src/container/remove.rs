//! Listing (with reconciliation) and removal of containers, and the image-in-use rule of `rmi`.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::lifecycle::settle;
use super::{ContainerError, cgroup_path};
use crate::cgroups::{self, CgroupError, Layout};
use crate::image::{ImageStore, Removal};
use crate::state::{ContainerRecord, StateError, StateStore, Status};

/// How long `ps` gives a live owner to record the end of a container whose process just died.
const OWNER_CATCH_UP: Duration = Duration::from_millis(300);

/// Every container, and the errors of unreadable records. Records of vanished processes are
/// brought up to date first, so `ps` never shows a dead container as running.
pub fn list(
    states: &StateStore,
) -> Result<(Vec<ContainerRecord>, Vec<StateError>), ContainerError> {
    let (mut records, broken) = states.list_checked()?;
    for record in &mut records {
        if record.status == Status::Running && !record.process_alive() {
            *record = catch_up(states, record)?;
        }
    }
    Ok((records, broken))
}

/// A running record whose process is gone: let its owner finish the record, or do it.
fn catch_up(
    states: &StateStore,
    record: &ContainerRecord,
) -> Result<ContainerRecord, ContainerError> {
    let deadline = Instant::now() + OWNER_CATCH_UP;
    loop {
        let current = match states.load(&record.id) {
            Ok(r) => r,
            Err(StateError::NotFound(_)) => return Ok(record.clone()),
            Err(e) => return Err(e.into()),
        };
        if current.status != Status::Running {
            return Ok(current);
        }
        if !current.owner_alive() {
            let _lock = states.global_lock()?;
            let mut fresh = states.load(&record.id)?;
            if fresh.reconcile() {
                states.save(&fresh)?;
                // Its owner died without cleaning up: the cgroup is empty and orphaned.
                if let Err(e) = remove_cgroup(&fresh.id) {
                    log::warn!("container {}: {e}", fresh.short_id());
                }
                if let Err(e) = crate::network::detach_all(states.root(), &fresh.id) {
                    log::warn!("container {}: {e}", fresh.short_id());
                }
            }
            return Ok(fresh);
        }
        if Instant::now() > deadline {
            // The owner is alive but slow: show the truth (not running) without writing it.
            let mut shown = current;
            shown.status = Status::Exited;
            shown.pid = None;
            return Ok(shown);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `rm [-f] C`: a running container is refused unless `force`, which kills it first. A
/// container whose record is unreadable can be removed with `force` (by id).
pub fn remove(states: &StateStore, reference: &str, force: bool) -> Result<(), ContainerError> {
    let record = match states.resolve(reference) {
        Ok(record) => record,
        Err(StateError::Corrupt { id, .. }) if force => {
            kill_cgroup_members(&id);
            remove_cgroup(&id)?;
            crate::network::detach_all(states.root(), &id)?;
            let _lock = states.global_lock()?;
            states.remove_dir(&id)?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if record.process_alive() {
        if !force {
            return Err(ContainerError::Running(reference.to_string()));
        }
        let _ = super::lifecycle::signal(&record, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while record.process_alive() {
            if Instant::now() > deadline {
                return Err(ContainerError::InvalidInput(format!(
                    "container {} did not die within 10s of SIGKILL",
                    record.short_id()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Let the owner record the end and release what it holds before the directory goes.
    settle(states, &record)?;
    kill_cgroup_members(&record.id);
    remove_cgroup(&record.id)?;
    crate::network::detach_all(states.root(), &record.id)?;
    let _lock = states.global_lock()?;
    if let Ok(Some(code)) = states.load(&record.id).map(|r| r.exit_code) {
        states.tell_waiters(&record.id, code);
    }
    states.remove_dir(&record.id)?;
    Ok(())
}

/// Kills whatever still runs in the container's cgroup (processes of a container whose record
/// was lost), and waits briefly for them to go.
fn kill_cgroup_members(id: &str) {
    let Ok(cgroup) = cgroups::open(&Layout::detect(), &cgroup_path(id)) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = cgroup.pids().unwrap_or_default();
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes the container's cgroup if one is left (normally its owner removed it at exit).
pub fn remove_cgroup(id: &str) -> Result<(), ContainerError> {
    match cgroups::open(&Layout::detect(), &cgroup_path(id)) {
        Ok(cgroup) => Ok(cgroup.destroy()?),
        Err(CgroupError::NoCgroups) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `rmi`: refused while any container (running or not) was created from the image, since its
/// layers are that container's lower directories.
pub fn remove_image(
    states: &StateStore,
    reference: &str,
    force: bool,
) -> Result<Vec<Removal>, ContainerError> {
    let images = ImageStore::open(states.root())?;
    let _lock = states.global_lock()?;
    let image = images.resolve(reference)?;
    // Untagging one of several names leaves the image (and its layers) in place.
    let only_untags = image.references.len() > 1
        && image
            .references
            .iter()
            .any(|r| crate::image::normalize_reference(reference).is_ok_and(|n| &n == r));
    let user = states.list()?.into_iter().find(|r| r.image_id == image.id);
    if let (Some(user), false) = (user, only_untags) {
        return Err(ContainerError::ImageInUse {
            image: reference.to_string(),
            container: user.short_id().to_string(),
            image_id: image.short_id().to_string(),
        });
    }
    Ok(images.remove(reference, force)?)
}
