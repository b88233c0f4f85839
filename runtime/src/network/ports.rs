//! Port mappings: `-p [IP:][HOST:]CTR[/tcp|udp]` parsing, and finding or checking host ports.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One `-p` as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// Host address to listen on; `None` = every address of the host.
    pub host_ip: Option<Ipv4Addr>,
    /// `None` = pick a free port when the container starts.
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub protocol: Protocol,
}

/// A mapping in force: the host port is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortMapping {
    /// docker's PORTS column: `0.0.0.0:8080->80/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
            self.container_port,
            self.protocol
        )
    }
}

impl PortSpec {
    pub fn parse(text: &str) -> Result<PortSpec, String> {
        let invalid = |why: &str| format!("invalid port mapping {text:?}: {why}");
        let (ports, protocol) = match text.rsplit_once('/') {
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some((_, other)) => return Err(invalid(&format!("unknown protocol {other:?}"))),
            None => (text, Protocol::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c] => (None, None, *c),
            [h, c] => (None, Some(*h), *c),
            [ip, h, c] => (Some(*ip), Some(*h), *c),
            _ => return Err(invalid("expected [IP:][HOST:]CONTAINER[/tcp|udp]")),
        };
        let port = |p: &str, what: &str| -> Result<u16, String> {
            match p.parse::<u32>() {
                Ok(n) if (1..=65_535).contains(&n) => Ok(n as u16),
                _ => Err(invalid(&format!(
                    "{what} port {p:?} is not a number in 1-65535"
                ))),
            }
        };
        let host_ip = match ip {
            None | Some("") => None,
            Some(ip) => {
                let ip = ip
                    .parse::<Ipv4Addr>()
                    .map_err(|_| invalid(&format!("{ip:?} is not an IPv4 address")))?;
                // 0.0.0.0 means every address of the host, as when no address is given.
                (!ip.is_unspecified()).then_some(ip)
            }
        };
        let host_port = match host {
            None | Some("") => None,
            Some(h) => Some(port(h, "host")?),
        };
        Ok(PortSpec {
            host_ip,
            host_port,
            container_port: port(container, "container")?,
            protocol,
        })
    }
}

/// Whether a host socket can bind the port now (nothing else listens on it). The probe
/// socket is closed at once.
pub fn host_port_free(ip: Option<Ipv4Addr>, port: u16, protocol: Protocol) -> bool {
    let addr = SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
    match protocol {
        Protocol::Tcp => TcpListener::bind(addr).is_ok(),
        Protocol::Udp => UdpSocket::bind(addr).is_ok(),
    }
}

/// A free host port from the kernel's ephemeral range that `taken` does not claim (ports
/// carton publishes hold no socket, so the kernel alone cannot know them). The search starts
/// at a random place in the range, as the kernel's own choice would.
pub fn pick_free_port(
    ip: Option<Ipv4Addr>,
    protocol: Protocol,
    taken: impl Fn(u16) -> bool,
) -> Option<u16> {
    let (low, high) = ephemeral_range();
    let span = u32::from(high - low) + 1;
    let mut seed = [0u8; 4];
    crate::state::fill_random(&mut seed);
    let start = u32::from_le_bytes(seed) % span;
    (0..span)
        .map(|i| low + ((start + i) % span) as u16)
        .find(|&port| !taken(port) && host_port_free(ip, port, protocol))
}

/// net.ipv4.ip_local_port_range (32768–60999 when unreadable).
fn ephemeral_range() -> (u16, u16) {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut parts = text
        .split_whitespace()
        .filter_map(|p| p.parse::<u16>().ok());
    match (parts.next(), parts.next()) {
        (Some(low), Some(high)) if low <= high && low > 0 => (low, high),
        _ => (32_768, 60_999),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let p = PortSpec::parse("8080:80").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol),
            (Some(8080), 80, Protocol::Tcp)
        );
        let p = PortSpec::parse("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p.protocol, Protocol::Udp);
        let p = PortSpec::parse("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (None, 80));
        let p = PortSpec::parse("127.0.0.1::80").unwrap();
        assert_eq!((p.host_ip, p.host_port), (Some(Ipv4Addr::LOCALHOST), None));
        let p = PortSpec::parse("0.0.0.0:8080:80").unwrap();
        assert_eq!((p.host_ip, p.host_port), (None, Some(8080)));
    }

    #[test]
    fn rejects() {
        for bad in [
            "abc",
            "70000:80",
            "80:0",
            "80:80/sctp",
            "1:2:3:4",
            "x.y:1:2",
            "",
            "8080:",
        ] {
            assert!(PortSpec::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn display_like_docker() {
        let m = PortMapping {
            host_ip: None,
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
        };
        assert_eq!(m.to_string(), "0.0.0.0:8080->80/tcp");
    }

    #[test]
    fn free_ports() {
        let port = pick_free_port(Some(Ipv4Addr::LOCALHOST), Protocol::Tcp, |_| false).unwrap();
        assert!(port > 0);
        let (low, high) = ephemeral_range();
        assert!((low..=high).contains(&port));
        let other =
            pick_free_port(Some(Ipv4Addr::LOCALHOST), Protocol::Tcp, |p| p == port).unwrap();
        assert_ne!(other, port);
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken = held.local_addr().unwrap().port();
        assert!(!host_port_free(
            Some(Ipv4Addr::LOCALHOST),
            taken,
            Protocol::Tcp
        ));
    }
}
