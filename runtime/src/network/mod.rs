//! Bridge networking: named networks with their own bridge, subnet and address allocation;
//! per-container veth pairs configured over netlink; NAT, forwarding, isolation and published
//! ports through carton's own iptables chains.
//!
//! - `ipnet` — IPv4 CIDR arithmetic;
//! - `ports` — `-p` parsing and host-port checks;
//! - `store` — network definitions, their endpoints and address allocation
//!   (`networks/<name>.json`);
//! - `netlink` — the rtnetlink calls; `bridge` — the bridge device of a network;
//! - `firewall` — the iptables chains, regenerated from the store on every change;
//! - `attach` — connecting a container (allocate, veth, address, route) and disconnecting it;
//! - `manage` — `network create / ls / rm / inspect`.

mod attach;
mod bridge;
pub mod firewall;
pub mod ipnet;
pub mod manage;
pub mod netlink;
pub mod ports;
mod store;

pub use attach::{Attachment, VethRemoval, attach, configure_inside, detach, detach_all};
pub use ipnet::Ipv4Net;
pub use ports::{PortMapping, PortSpec, Protocol};
pub use store::{DEFAULT_NETWORK, NetworkRecord, NetworkStore};

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network with name {0} already exists")]
    Exists(String),
    #[error("invalid network name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-]+ are allowed")]
    InvalidName(String),
    #[error("network name {0:?} is reserved: --network {0} has its own meaning")]
    Reserved(String),
    #[error("invalid subnet: {0}")]
    InvalidSubnet(String),
    #[error("invalid gateway {gateway}: {reason}")]
    InvalidGateway { gateway: String, reason: String },
    #[error("subnet {subnet} overlaps with {other}")]
    Overlap { subnet: String, other: String },
    #[error("no free subnet left for a new network")]
    NoSubnet,
    #[error("network {0} has no free address left")]
    Exhausted(String),
    #[error("unsupported network driver {0:?}: carton has \"bridge\"")]
    Driver(String),
    #[error("network {name} is in use by container(s) {containers}")]
    InUse { name: String, containers: String },
    #[error("{0}")]
    Port(String),
    #[error("port {port}/{protocol} is already allocated on the host")]
    PortTaken { port: u16, protocol: Protocol },
    #[error("firewall: {0}")]
    Firewall(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

impl NetworkError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> NetworkError {
        move |source| NetworkError::Io {
            context: context.into(),
            source,
        }
    }
}
