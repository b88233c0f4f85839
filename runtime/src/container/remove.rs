//! Listing (with reconciliation) and removal of containers, and the image-in-use rule of `rmi`.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{ContainerError, cgroup_path};
use crate::cgroups::{self, CgroupError, Layout};
use crate::image::{ImageStore, Removal};
use crate::state::{ContainerRecord, StateStore};

/// Every container, with records of vanished processes brought up to date first, so `ps`
/// never shows a dead container as running.
pub fn list(states: &StateStore) -> Result<Vec<ContainerRecord>, ContainerError> {
    let mut records = states.list()?;
    for record in &mut records {
        if record.reconcile() {
            let _lock = states.global_lock()?;
            // Re-read under the lock: the owner may have written the real exit code meanwhile.
            if let Ok(mut fresh) = states.load(&record.id) {
                if fresh.reconcile() {
                    states.save(&fresh)?;
                    // Its owner died without cleaning up: the cgroup is empty and orphaned.
                    if let Err(e) = remove_cgroup(&fresh.id) {
                        log::warn!("container {}: {e}", fresh.short_id());
                    }
                }
                *record = fresh;
            }
        }
    }
    Ok(records)
}

/// `rm [-f] C`: a running container is refused unless `force`, which kills it first.
pub fn remove(states: &StateStore, reference: &str, force: bool) -> Result<(), ContainerError> {
    let mut record = states.resolve(reference)?;
    record.reconcile();
    if record.process_alive() {
        if !force {
            return Err(ContainerError::Running(reference.to_string()));
        }
        if let Some(pid) = record.pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            wait_gone(&record, Duration::from_secs(10))?;
        }
    }
    remove_cgroup(&record.id)?;
    let _lock = states.global_lock()?;
    states.remove_dir(&record.id)?;
    Ok(())
}

/// Removes the container's cgroup if one is left (normally its owner removed it at exit).
pub fn remove_cgroup(id: &str) -> Result<(), ContainerError> {
    match cgroups::open(&Layout::detect(), &cgroup_path(id)) {
        Ok(cgroup) => Ok(cgroup.destroy()?),
        Err(CgroupError::NoCgroups) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn wait_gone(record: &ContainerRecord, limit: Duration) -> Result<(), ContainerError> {
    let deadline = Instant::now() + limit;
    while record.process_alive() {
        if Instant::now() > deadline {
            return Err(ContainerError::InvalidInput(format!(
                "container {} did not die within {limit:?} of SIGKILL",
                record.short_id()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
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
