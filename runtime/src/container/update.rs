//! `update`: new limits for a container — written to its live cgroup when it runs, and into its
//! config.json so that they hold for its next start and show in `inspect`.

use std::fs;

use oci_spec::runtime::Spec;

use super::limits::{HostFacts, LimitFlags};
use super::{ContainerError, cgroup_path, spec};
use crate::cgroups::{self, Layout, Resources};
use crate::state::{self, StateStore};

/// Returns the container's id.
pub fn update(
    states: &StateStore,
    reference: &str,
    flags: &LimitFlags,
) -> Result<String, ContainerError> {
    // Looked up under the lock that a start holds while it marks the container running and
    // compares config.json with what it started from: either the record says running here
    // (and this writes the cgroup), or that start finds this config.json.
    let _lock = states.global_lock()?;
    let record = states.resolve(reference)?;
    let path = states.container_dir(&record.id).join("config.json");
    let mut spec = read_spec(&path)?;
    let current = current_resources(&spec)?;
    let change = flags.to_update(&HostFacts::read(), &current)?;
    let merged = change.merged_over(&current);

    if record.process_alive() {
        let cgroup = cgroups::open(&Layout::detect(), &cgroup_path(&record.id))?;
        // Everything is rewritten: v1 needs memory and memory+swap written in an order that
        // depends on both values.
        cgroup.apply(&merged)?;
    }
    if let Some(linux) = spec.linux_mut() {
        // The device allow-list is not a limit `update` changes: keep it as it was.
        let devices = linux.resources().as_ref().and_then(|r| r.devices().clone());
        let mut resources = spec::oci_resources(&merged)?;
        resources.set_devices(devices);
        linux.set_resources(Some(resources));
    }
    state::write_json_atomic(&path, &spec).map_err(ContainerError::io("write config.json"))?;
    Ok(record.id)
}

pub(crate) fn read_spec(path: &std::path::Path) -> Result<Spec, ContainerError> {
    let bytes = fs::read(path).map_err(ContainerError::io(format!("read {}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ContainerError::Spec(format!("{}: {e}", path.display())))
}

/// The limits recorded in a container's spec.
pub(crate) fn current_resources(spec: &Spec) -> Result<Resources, ContainerError> {
    match spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        Some(r) => Ok(Resources::from_oci(r)?),
        None => Ok(Resources::default()),
    }
}
