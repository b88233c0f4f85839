//! Network definitions and their live endpoints, one JSON file per network under
//! `<root>/networks/`, changed under `locks/network.lock`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::NetworkError;
use super::firewall::NetworkRules;
use super::ipnet::Ipv4Net;
use super::ports::PortMapping;
use crate::state::{self, LockGuard, Timestamp};

/// The network `run` joins unless told otherwise (docker's name).
pub const DEFAULT_NETWORK: &str = "bridge";
/// Its bridge device.
const DEFAULT_BRIDGE: &str = "carton0";

/// A container's place on a network while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub container_name: String,
    pub address: Ipv4Addr,
    pub host_veth: String,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

/// An address whose container is gone while the kernel has not yet removed its veth (it does
/// so when the container's network namespace dies, a few milliseconds after the last
/// process). The address is not handed out again until the veth is gone: the dying `eth0`
/// could still answer for it on the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draining {
    pub address: Ipv4Addr,
    pub host_veth: String,
    pub since: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub name: String,
    pub id: String,
    pub driver: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub bridge: String,
    pub created: Timestamp,
    /// container id → endpoint
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub draining: Vec<Draining>,
}

impl NetworkRecord {
    /// The lowest free address for `container` (neither in use nor draining).
    pub fn allocate(&self, container: &str) -> Option<Ipv4Addr> {
        if let Some(e) = self.endpoints.get(container) {
            return Some(e.address);
        }
        self.subnet.hosts().find(|a| {
            *a != self.gateway
                && !self.endpoints.values().any(|e| e.address == *a)
                && !self.draining.iter().any(|d| d.address == *a)
        })
    }

    pub fn rules(&self) -> NetworkRules {
        NetworkRules {
            bridge: self.bridge.clone(),
            subnet: self.subnet,
            gateway: self.gateway,
            published: self
                .endpoints
                .values()
                .flat_map(|e| e.ports.iter().map(move |p| (e.address, *p)))
                .collect(),
        }
    }
}

/// Where [`NetworkStore::get_or_default`] found a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// In the store.
    Stored,
    /// Nowhere yet: the default network, drafted for its first container.
    Drafted,
}

#[derive(Debug, Clone)]
pub struct NetworkStore {
    dir: PathBuf,
    lock: PathBuf,
}

/// Candidates for networks created without `--subnet` (the default one included): /16s that
/// rarely collide with home, office or docker networks; the first one free on this host wins.
const SUBNET_POOL: &[&str] = &[
    "10.89.0.0/16",
    "10.90.0.0/16",
    "10.91.0.0/16",
    "10.92.0.0/16",
    "10.93.0.0/16",
    "10.94.0.0/16",
    "10.95.0.0/16",
    "10.96.0.0/16",
    "10.97.0.0/16",
    "10.98.0.0/16",
    "172.30.0.0/16",
    "172.31.0.0/16",
];

impl NetworkStore {
    pub fn new(root: &Path) -> NetworkStore {
        NetworkStore {
            dir: root.join("networks"),
            lock: root.join("locks").join("network.lock"),
        }
    }

    /// Serialises allocation, port choice and firewall rewrites across carton processes.
    pub fn lock(&self) -> Result<LockGuard, NetworkError> {
        LockGuard::exclusive(&self.lock).map_err(NetworkError::io("lock networks"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub fn list(&self) -> Result<Vec<NetworkRecord>, NetworkError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NetworkError::io("read networks")(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(NetworkError::io("read networks"))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = fs::read(&path)
                    .map_err(NetworkError::io(format!("read {}", path.display())))?;
                let record: NetworkRecord =
                    serde_json::from_slice(&bytes).map_err(|e| NetworkError::Io {
                        context: format!("parse {}", path.display()),
                        source: io::Error::new(io::ErrorKind::InvalidData, e),
                    })?;
                out.push(record);
            }
        }
        out.sort_by_key(|n| n.created);
        Ok(out)
    }

    /// A network by name, full id or unique id prefix.
    pub fn get(&self, reference: &str) -> Result<NetworkRecord, NetworkError> {
        let all = self.list()?;
        if let Some(n) = all.iter().find(|n| n.name == reference) {
            return Ok(n.clone());
        }
        let by_id: Vec<&NetworkRecord> =
            all.iter().filter(|n| n.id.starts_with(reference)).collect();
        match by_id.as_slice() {
            [one] if !reference.is_empty() => Ok((*one).clone()),
            _ => Err(NetworkError::NotFound(reference.to_string())),
        }
    }

    pub fn save(&self, record: &NetworkRecord) -> Result<(), NetworkError> {
        fs::create_dir_all(&self.dir).map_err(NetworkError::io("create networks dir"))?;
        state::write_json_atomic(&self.path(&record.name), record)
            .map_err(NetworkError::io(format!("write network {}", record.name)))
    }

    pub fn delete(&self, name: &str) -> Result<(), NetworkError> {
        match fs::remove_file(self.path(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetworkError::io(format!("remove network {name}"))(e)),
        }
    }

    /// Defines a new network and saves it (the caller holds the lock). Without a subnet, the
    /// first free one of the pool is used; without a gateway, the subnet's first host address.
    pub fn define(
        &self,
        name: &str,
        driver: &str,
        subnet: Option<&str>,
        gateway: Option<&str>,
    ) -> Result<NetworkRecord, NetworkError> {
        self.define_beside(name, driver, subnet, gateway, &host_routes())
    }

    /// [`NetworkStore::define`] with the host's routes given (tests pass their own).
    fn define_beside(
        &self,
        name: &str,
        driver: &str,
        subnet: Option<&str>,
        gateway: Option<&str>,
        routes: &[Ipv4Net],
    ) -> Result<NetworkRecord, NetworkError> {
        let record = self.draft_beside(name, driver, subnet, gateway, routes)?;
        self.save(&record)?;
        Ok(record)
    }

    /// A new network as [`NetworkStore::define_beside`] would define it, not saved yet.
    fn draft_beside(
        &self,
        name: &str,
        driver: &str,
        subnet: Option<&str>,
        gateway: Option<&str>,
        routes: &[Ipv4Net],
    ) -> Result<NetworkRecord, NetworkError> {
        if state::validate_name(name).is_err() {
            return Err(NetworkError::InvalidName(name.to_string()));
        }
        // `--network host|none` never mean a bridge network: such a network could not be used.
        if matches!(name, "host" | "none" | "default") {
            return Err(NetworkError::Reserved(name.to_string()));
        }
        if driver != "bridge" {
            return Err(NetworkError::Driver(driver.to_string()));
        }
        let existing = self.list()?;
        if existing.iter().any(|n| n.name == name) {
            return Err(NetworkError::Exists(name.to_string()));
        }
        let taken: Vec<(Ipv4Net, String)> = existing
            .iter()
            .map(|n| (n.subnet, format!("network {}", n.name)))
            .chain(
                routes
                    .iter()
                    .map(|r| (*r, format!("a route of this host ({r})"))),
            )
            .collect();
        let subnet = match subnet {
            Some(text) => {
                let subnet: Ipv4Net = text.parse().map_err(NetworkError::InvalidSubnet)?;
                if subnet.prefix() > 30 {
                    return Err(NetworkError::InvalidSubnet(format!(
                        "{subnet} is too small: a network needs at least a /30"
                    )));
                }
                if let Some((_, other)) = taken.iter().find(|(t, _)| t.overlaps(&subnet)) {
                    return Err(NetworkError::Overlap {
                        subnet: subnet.to_string(),
                        other: other.clone(),
                    });
                }
                subnet
            }
            None => SUBNET_POOL
                .iter()
                .map(|s| s.parse::<Ipv4Net>().expect("valid pool entry"))
                .find(|c| !taken.iter().any(|(t, _)| t.overlaps(c)))
                .ok_or(NetworkError::NoSubnet)?,
        };
        let gateway = match gateway {
            Some(text) => {
                let gateway: Ipv4Addr = text.parse().map_err(|_| NetworkError::InvalidGateway {
                    gateway: text.to_string(),
                    reason: "not an IPv4 address".into(),
                })?;
                if !subnet.contains(gateway)
                    || gateway == subnet.network()
                    || gateway == subnet.broadcast()
                {
                    return Err(NetworkError::InvalidGateway {
                        gateway: text.to_string(),
                        reason: format!("not a host address of {subnet}"),
                    });
                }
                gateway
            }
            None => subnet.first_host().ok_or(NetworkError::NoSubnet)?,
        };
        let id = state::generate_id();
        let bridge = if name == DEFAULT_NETWORK {
            DEFAULT_BRIDGE.to_string()
        } else {
            format!("cbr-{}", &id[..10])
        };
        let record = NetworkRecord {
            name: name.to_string(),
            id,
            driver: driver.to_string(),
            subnet,
            gateway,
            bridge,
            created: Timestamp::now(),
            endpoints: BTreeMap::new(),
            draining: Vec::new(),
        };
        Ok(record)
    }

    /// The named network (the caller holds the lock). The default network is drafted on first
    /// use but not saved — the `Origin` says so: the caller saves it once its container is
    /// attached, so a refused `run` leaves no network behind.
    pub fn get_or_default(&self, name: &str) -> Result<(NetworkRecord, Origin), NetworkError> {
        match self.get(name) {
            Err(NetworkError::NotFound(_)) if name == DEFAULT_NETWORK => {
                let draft =
                    self.draft_beside(DEFAULT_NETWORK, "bridge", None, None, &host_routes())?;
                Ok((draft, Origin::Drafted))
            }
            other => other.map(|record| (record, Origin::Stored)),
        }
    }
}

/// The IPv4 routes of this host (its connected networks included), default route excluded,
/// from /proc/net/route.
fn host_routes() -> Vec<Ipv4Net> {
    let Ok(text) = fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // The kernel prints the network-order bytes as a host-order number.
            let dest = u32::from(Ipv4Addr::from(
                u32::from_str_radix(f.get(1)?, 16).ok()?.to_ne_bytes(),
            ));
            let mask = u32::from(Ipv4Addr::from(
                u32::from_str_radix(f.get(7)?, 16).ok()?.to_ne_bytes(),
            ));
            let prefix = mask.count_ones() as u8;
            (prefix > 0).then(|| Ipv4Net::new(Ipv4Addr::from(dest & mask), prefix).ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    impl NetworkStore {
        /// As `define`, on a host without routes.
        fn define_alone(
            &self,
            name: &str,
            driver: &str,
            subnet: Option<&str>,
            gateway: Option<&str>,
        ) -> Result<NetworkRecord, NetworkError> {
            self.define_beside(name, driver, subnet, gateway, &[])
        }
    }

    #[test]
    fn host_routes_are_avoided() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        let routes = ["10.89.0.0/16".parse().unwrap()];
        let auto = store
            .define_beside("auto", "bridge", None, None, &routes)
            .unwrap();
        assert_eq!(auto.subnet.to_string(), "10.90.0.0/16");
        assert!(matches!(
            store.define_beside("clash", "bridge", Some("10.89.1.0/24"), None, &routes),
            Err(NetworkError::Overlap { .. })
        ));
    }

    #[test]
    fn define_validates_and_picks_free_subnets() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        let a = store
            .define_alone("net-a", "bridge", Some("192.0.2.0/24"), None)
            .unwrap();
        assert_eq!(a.gateway, Ipv4Addr::new(192, 0, 2, 1));
        assert!(a.bridge.starts_with("cbr-") && a.bridge.len() <= 15);
        assert!(matches!(
            store.define_alone("net-a", "bridge", None, None),
            Err(NetworkError::Exists(_))
        ));
        assert!(matches!(
            store.define_alone("net-b", "bridge", Some("192.0.2.128/25"), None),
            Err(NetworkError::Overlap { .. })
        ));
        assert!(matches!(
            store.define_alone(
                "net-c",
                "bridge",
                Some("198.51.100.0/24"),
                Some("203.0.113.1")
            ),
            Err(NetworkError::InvalidGateway { .. })
        ));
        assert!(matches!(
            store.define_alone(
                "net-c",
                "bridge",
                Some("198.51.100.0/24"),
                Some("198.51.100.255")
            ),
            Err(NetworkError::InvalidGateway { .. })
        ));
        assert!(matches!(
            store.define_alone("net-d", "overlay", None, None),
            Err(NetworkError::Driver(_))
        ));
        assert!(matches!(
            store.define_alone("bad name", "bridge", None, None),
            Err(NetworkError::InvalidName(_))
        ));
        assert!(matches!(
            store.define_alone("net-e", "bridge", Some("10.0.0.1/8"), None),
            Err(NetworkError::InvalidSubnet(_))
        ));
        let (default, origin) = store.get_or_default(DEFAULT_NETWORK).unwrap();
        assert_eq!(origin, Origin::Drafted);
        assert_eq!(default.bridge, DEFAULT_BRIDGE);
        assert!(!default.subnet.overlaps(&a.subnet));
        assert_eq!(store.get(&a.id[..6]).unwrap().name, "net-a");
        // Drafted, not saved: only the caller's save makes it exist.
        assert_eq!(store.list().unwrap().len(), 1);
        store.save(&default).unwrap();
        let (again, origin) = store.get_or_default(DEFAULT_NETWORK).unwrap();
        assert_eq!((again.id, origin), (default.id, Origin::Stored));
        assert_eq!(store.list().unwrap().len(), 2);
    }

    #[test]
    fn allocation_skips_gateway_and_used_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        let mut n = store
            .define_alone("net-n", "bridge", Some("192.0.2.0/29"), Some("192.0.2.2"))
            .unwrap();
        assert_eq!(n.allocate("x"), Some(Ipv4Addr::new(192, 0, 2, 1)));
        n.endpoints.insert(
            "x".into(),
            Endpoint {
                container_name: "x".into(),
                address: Ipv4Addr::new(192, 0, 2, 1),
                host_veth: "v".into(),
                ports: vec![],
            },
        );
        assert_eq!(n.allocate("x"), Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(n.allocate("y"), Some(Ipv4Addr::new(192, 0, 2, 3)));
    }

    #[test]
    fn large_networks_allocate_beyond_the_first_256() {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::new(dir.path());
        let mut n = store
            .define_alone("big", "bridge", Some("10.0.0.0/16"), None)
            .unwrap();
        let mut last = None;
        for i in 0..600 {
            let id = format!("c{i}");
            let address = n.allocate(&id).unwrap();
            n.endpoints.insert(
                id.clone(),
                Endpoint {
                    container_name: id,
                    address,
                    host_veth: String::new(),
                    ports: vec![],
                },
            );
            last = Some(address);
        }
        // .0 is the network, .1 the gateway: 600 containers end at 10.0.2.89.
        assert_eq!(last, Some(Ipv4Addr::new(10, 0, 2, 89)));
        let broadcast = Ipv4Addr::new(10, 0, 255, 255);
        assert!(!n.endpoints.values().any(|e| e.address == broadcast));
    }

    #[test]
    fn host_routes_are_read() {
        // Whatever this host has, every entry parses into a valid network.
        for route in host_routes() {
            assert!(route.prefix() > 0);
        }
    }
}
