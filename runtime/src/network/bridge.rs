//! The bridge device of a network: created with the gateway address when the first container
//! (or `network create`) needs it, deleted by `network rm`.

use super::netlink::Netlink;
use super::store::NetworkRecord;
use super::{NetworkError, firewall};

/// Makes sure the network's bridge exists, carries the gateway address and is up. Returns
/// true when it had to be created (then the firewall needs its rules).
pub fn ensure(network: &NetworkRecord) -> Result<bool, NetworkError> {
    let mut nl = Netlink::open().map_err(NetworkError::io("open netlink"))?;
    if nl
        .link_index(&network.bridge)
        .map_err(NetworkError::io("look up bridge"))?
        .is_some()
    {
        return Ok(false);
    }
    let context = |what: &str| format!("{what} bridge {}", network.bridge);
    match nl.create_bridge(&network.bridge) {
        Ok(()) => {}
        // Another carton created it a moment ago.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(false),
        Err(e) => return Err(NetworkError::io(context("create"))(e)),
    }
    let index = nl
        .link_index(&network.bridge)
        .map_err(NetworkError::io(context("look up")))?
        .ok_or_else(|| NetworkError::Firewall(format!("bridge {} vanished", network.bridge)))?;
    let configured = nl
        .add_address(index, network.gateway, network.subnet.prefix())
        .or_else(|e| {
            if e.raw_os_error() == Some(libc::EEXIST) {
                Ok(())
            } else {
                Err(e)
            }
        })
        .and_then(|()| nl.set_up(index));
    if let Err(e) = configured {
        let _ = nl.delete_link(index);
        return Err(NetworkError::io(context("configure"))(e));
    }
    firewall::enable_forwarding(&network.bridge)?;
    Ok(true)
}

/// Deletes the bridge if it exists.
pub fn delete(name: &str) -> Result<(), NetworkError> {
    let mut nl = Netlink::open().map_err(NetworkError::io("open netlink"))?;
    if let Some(index) = nl
        .link_index(name)
        .map_err(NetworkError::io("look up bridge"))?
    {
        nl.delete_link(index)
            .map_err(NetworkError::io(format!("delete bridge {name}")))?;
    }
    Ok(())
}
