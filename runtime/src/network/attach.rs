//! Connecting a container to a network and disconnecting it.
//!
//! In three steps around the clone: [`attach`] (before it) reserves the address and host ports
//! under the network lock and makes sure bridge and rules exist; [`configure_inside`] (while the
//! new init prepares its rootfs) creates the veth pair with `eth0` directly in the container's
//! network namespace and gives it address and default route; [`detach`] (when the container is
//! gone, or to roll back) releases all of it. Each step undoes its own partial work on failure.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::netlink::{LinkEvents, Netlink};
use super::ports::{self, PortMapping, PortSpec};
use super::store::{Draining, Endpoint, NetworkRecord, NetworkStore, Origin};
use super::{NetworkError, bridge, firewall};
use crate::state::Timestamp;

/// What a running container has on its network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub network_id: String,
    pub bridge: String,
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    pub host_veth: String,
    pub ports: Vec<PortMapping>,
}

/// Reserves an address and the published ports for `container` on `network` (the default
/// network is created on first use), and makes sure the bridge and the firewall rules exist.
/// A refusal (no address, a port taken) or a failure leaves the network as it was: a default
/// network this attach would have created is not stored, its bridge not left.
pub fn attach(
    root: &Path,
    network: &str,
    container: &str,
    container_name: &str,
    publish: &[PortSpec],
) -> Result<Attachment, NetworkError> {
    let store = NetworkStore::new(root);
    let _lock = store.lock()?;
    let (mut record, origin) = store.get_or_default(network)?;
    reap_draining(&mut record);
    let address = record
        .allocate(container)
        .ok_or_else(|| NetworkError::Exhausted(record.name.clone()))?;

    let all = store.list()?;
    let mut rules: Vec<firewall::NetworkRules> = all.iter().map(|n| n.rules()).collect();
    let mut mappings = Vec::new();
    for spec in publish {
        // Published ports hold no socket: the kernel alone cannot tell they are taken.
        let taken_by_carton = |port: u16, mappings: &[PortMapping]| {
            firewall::port_in_use(&rules, spec.host_ip, port, spec.protocol)
                || mappings
                    .iter()
                    .any(|m| m.host_port == port && m.protocol == spec.protocol)
        };
        let host_port = match spec.host_port {
            Some(port) => port,
            None => ports::pick_free_port(spec.host_ip, spec.protocol, |port| {
                taken_by_carton(port, &mappings)
            })
            .ok_or_else(|| NetworkError::Port("no free host port left to publish on".into()))?,
        };
        if taken_by_carton(host_port, &mappings)
            || !ports::host_port_free(spec.host_ip, host_port, spec.protocol)
        {
            return Err(NetworkError::PortTaken {
                port: host_port,
                protocol: spec.protocol,
            });
        }
        mappings.push(PortMapping {
            host_ip: spec.host_ip,
            host_port,
            container_port: spec.container_port,
            protocol: spec.protocol,
        });
    }

    let host_veth = format!("vc{}", &container[..container.len().min(12)]);
    record.endpoints.insert(
        container.to_string(),
        Endpoint {
            container_name: container_name.to_string(),
            address,
            host_veth: host_veth.clone(),
            ports: mappings.clone(),
        },
    );
    // The first save of a drafted default network: from here on it exists.
    store.save(&record)?;

    if let Err(e) = wire(&record, &mut rules, !mappings.is_empty()) {
        match origin {
            Origin::Drafted => {
                let _ = store.delete(&record.name);
            }
            Origin::Stored => {
                record.endpoints.remove(container);
                let _ = store.save(&record);
            }
        }
        return Err(e);
    }
    Ok(Attachment {
        network: record.name.clone(),
        network_id: record.id.clone(),
        bridge: record.bridge.clone(),
        address,
        gateway: record.gateway,
        prefix: record.subnet.prefix(),
        host_veth,
        ports: mappings,
    })
}

/// Makes sure the bridge of `record` exists and, when it had to be created or the container
/// publishes ports, rewrites the firewall with `record`'s rules in `rules`. A bridge it created
/// is deleted again when the firewall cannot be written: nothing is left half-wired.
fn wire(
    record: &NetworkRecord,
    rules: &mut Vec<firewall::NetworkRules>,
    publishes: bool,
) -> Result<(), NetworkError> {
    let created = bridge::ensure(record)?;
    if !created && !publishes {
        return Ok(());
    }
    if let Some(slot) = rules.iter_mut().find(|r| r.bridge == record.bridge) {
        *slot = record.rules();
    } else {
        rules.push(record.rules());
    }
    let applied = firewall::apply(rules);
    if applied.is_err() && created {
        let _ = bridge::delete(&record.bridge);
    }
    applied
}

/// Creates the veth pair (host end on the bridge, `eth0` in the namespace of `pid`) and gives
/// `eth0` its address and default route.
pub fn configure_inside(attachment: &Attachment, pid: i32) -> Result<(), NetworkError> {
    let netns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(NetworkError::io("open the container's network namespace"))?;
    let mut host = Netlink::open().map_err(NetworkError::io("open netlink"))?;
    let io = |what: &'static str| NetworkError::io(what);
    host.create_veth(&attachment.host_veth, "eth0", netns.as_raw_fd(), None)
        .map_err(io("create the veth pair"))?;
    let result = (|| {
        let veth = host
            .link_index(&attachment.host_veth)
            .map_err(io("look up the veth"))?
            .ok_or_else(|| NetworkError::Firewall("the host end of the veth vanished".into()))?;
        let bridge = host
            .link_index(&attachment.bridge)
            .map_err(io("look up the bridge"))?
            .ok_or_else(|| {
                NetworkError::Firewall(format!("bridge {} vanished", attachment.bridge))
            })?;
        host.set_master(veth, bridge)
            .map_err(io("attach the veth to the bridge"))?;
        host.set_up(veth).map_err(io("bring the veth up"))?;

        let mut inside =
            Netlink::open_in(netns.as_raw_fd()).map_err(io("open netlink in the container"))?;
        let eth0 = inside
            .link_index("eth0")
            .map_err(io("look up eth0"))?
            .ok_or_else(|| NetworkError::Firewall("eth0 missing in the container".into()))?;
        inside
            .add_address(eth0, attachment.address, attachment.prefix)
            .map_err(io("give eth0 its address"))?;
        inside.set_up(eth0).map_err(io("bring eth0 up"))?;
        inside
            .add_default_route(attachment.gateway, eth0)
            .map_err(io("add the default route"))?;
        Ok(())
    })();
    if result.is_err() {
        if let Ok(Some(index)) = host.link_index(&attachment.host_veth) {
            let _ = host.delete_link(index);
        }
    }
    result
}

/// What [`detach`] does about a veth the kernel has not removed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VethRemoval {
    /// Return only when it is gone: for `stop`, `rm` and supervisors, where nobody waits on
    /// the milliseconds and the caller promises the host is clean when it returns.
    Wait,
    /// Leave it to the kernel and keep its address out of use until it is gone: for the
    /// foreground `run`, whose user waits for the exit code.
    LeaveToKernel,
}

/// Releases what `container` holds on `network`: its address, its published ports (rules
/// rewritten) and its veth, as `removal` says.
pub fn detach(
    root: &Path,
    network: &str,
    container: &str,
    removal: VethRemoval,
) -> Result<(), NetworkError> {
    let store = NetworkStore::new(root);
    let _lock = store.lock()?;
    let mut record = match store.get(network) {
        Ok(r) => r,
        Err(NetworkError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let Some(endpoint) = record.endpoints.remove(container) else {
        return Ok(());
    };
    match removal {
        VethRemoval::Wait => {
            store.save(&record)?;
            remove_veth(&endpoint.host_veth);
        }
        VethRemoval::LeaveToKernel => {
            if veth_exists(&endpoint.host_veth) {
                record.draining.push(Draining {
                    address: endpoint.address,
                    host_veth: endpoint.host_veth.clone(),
                    since: Timestamp::now(),
                });
            }
            store.save(&record)?;
        }
    }
    if !endpoint.ports.is_empty() {
        let rules: Vec<firewall::NetworkRules> = store.list()?.iter().map(|n| n.rules()).collect();
        firewall::apply(&rules)?;
    }
    Ok(())
}

/// How long the kernel gets to remove a veth whose container namespace has died before carton
/// removes it itself. The kernel needs a grace period or two (~25 ms here, far more in a
/// software-emulated VM); a namespace that someone else keeps alive (an open fd, `ip netns
/// attach`) never lets it go.
const KERNEL_REMOVAL_GRACE: Duration = Duration::from_secs(2);

fn veth_exists(name: &str) -> bool {
    Netlink::open()
        .and_then(|mut nl| nl.link_index(name))
        .map_or(true, |index| index.is_some())
}

/// Forgets the draining addresses whose veth the kernel has removed, and removes the veths
/// that outlived the grace period (their namespace is kept alive by someone else).
fn reap_draining(record: &mut NetworkRecord) {
    if record.draining.is_empty() {
        return;
    }
    let Ok(mut nl) = Netlink::open() else { return };
    record
        .draining
        .retain(|d| match nl.link_index(&d.host_veth) {
            Ok(None) => false,
            Ok(Some(index)) if d.since.elapsed() > KERNEL_REMOVAL_GRACE => {
                nl.delete_link(index).is_err()
            }
            _ => true,
        });
}

/// Makes sure the host end of a container's veth is gone when this returns.
///
/// When the last process of a container exits, its network namespace dies and the kernel
/// removes `eth0` and with it the host end, in a worker, a few milliseconds later. Deleting the
/// link from here instead costs an `rcu_barrier` in the caller (13 ms per container on the
/// benchmark machine, measured with `perf record -e sched:sched_switch -g`: carton blocked in
/// `rtnl_dellink → netdev_run_todo → rcu_barrier`), so carton waits for the kernel's
/// notification and deletes the link only when it is still there after the grace period.
fn remove_veth(name: &str) {
    let Ok(mut nl) = Netlink::open() else { return };
    // Subscribed before looking, so a removal between the look and the wait is not missed.
    let events = LinkEvents::subscribe();
    let Ok(Some(index)) = nl.link_index(name) else {
        return;
    };
    let removed_by_kernel = events
        .and_then(|e| e.wait_deleted(index, KERNEL_REMOVAL_GRACE))
        .unwrap_or(false);
    if !removed_by_kernel {
        if let Ok(Some(index)) = nl.link_index(name) {
            let _ = nl.delete_link(index);
        }
    }
}

/// [`detach`] from every network that still lists `container` (for `rm` and for containers
/// whose owner died before cleaning up).
pub fn detach_all(root: &Path, container: &str) -> Result<(), NetworkError> {
    let store = NetworkStore::new(root);
    let networks: Vec<String> = store
        .list()?
        .into_iter()
        .filter(|n| n.endpoints.contains_key(container))
        .map(|n| n.name)
        .collect();
    for network in networks {
        detach(root, &network, container, VethRemoval::Wait)?;
    }
    Ok(())
}
