//! `network create / ls / rm / inspect`.

use std::path::Path;

use serde_json::{Value, json};

use super::store::{NetworkRecord, NetworkStore};
use super::{NetworkError, bridge, firewall};

/// Defines a network and brings up its bridge and rules.
pub fn create(
    root: &Path,
    name: &str,
    driver: &str,
    subnet: Option<&str>,
    gateway: Option<&str>,
) -> Result<NetworkRecord, NetworkError> {
    let store = NetworkStore::new(root);
    let _lock = store.lock()?;
    let record = store.define(name, driver, subnet, gateway)?;
    let wired = bridge::ensure(&record).and_then(|_| {
        let rules: Vec<_> = store.list()?.iter().map(|n| n.rules()).collect();
        firewall::apply(&rules)
    });
    if let Err(e) = wired {
        // Nothing half-created: no record, no bridge.
        let _ = bridge::delete(&record.bridge);
        let _ = store.delete(&record.name);
        return Err(e);
    }
    Ok(record)
}

/// Removes a network: refused while `users` (containers configured with it) is not empty or
/// a container still has an endpoint on it.
pub fn remove(root: &Path, reference: &str, users: &[String]) -> Result<String, NetworkError> {
    let store = NetworkStore::new(root);
    let _lock = store.lock()?;
    let record = store.get(reference)?;
    let mut attached: Vec<String> = record
        .endpoints
        .values()
        .map(|e| e.container_name.clone())
        .collect();
    attached.extend(users.iter().cloned());
    attached.sort();
    attached.dedup();
    if !attached.is_empty() {
        return Err(NetworkError::InUse {
            name: record.name.clone(),
            containers: attached.join(", "),
        });
    }
    bridge::delete(&record.bridge)?;
    store.delete(&record.name)?;
    let rules: Vec<_> = store.list()?.iter().map(|n| n.rules()).collect();
    firewall::apply(&rules)?;
    Ok(record.name)
}

pub fn list(root: &Path) -> Result<Vec<NetworkRecord>, NetworkError> {
    NetworkStore::new(root).list()
}

pub fn get(root: &Path, reference: &str) -> Result<NetworkRecord, NetworkError> {
    NetworkStore::new(root).get(reference)
}

/// docker's `network inspect` shape.
pub fn inspect(record: &NetworkRecord) -> Value {
    let containers: serde_json::Map<String, Value> = record
        .endpoints
        .iter()
        .map(|(id, e)| {
            (
                id.clone(),
                json!({
                    "Name": e.container_name,
                    "IPv4Address": format!("{}/{}", e.address, record.subnet.prefix()),
                    "Ports": e.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                }),
            )
        })
        .collect();
    json!({
        "Name": record.name,
        "Id": record.id,
        "Created": record.created.to_rfc3339(),
        "Driver": record.driver,
        "Scope": "local",
        "IPAM": {"Driver": "default", "Config": [{"Subnet": record.subnet.to_string(), "Gateway": record.gateway.to_string()}]},
        "Options": {"com.docker.network.bridge.name": record.bridge},
        "Containers": containers,
    })
}
