//! IPv4 networks (`10.88.0.0/16`): parsing, membership, and the addresses a network can hand
//! out — never its network or broadcast address.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// A network from an address and prefix length; host bits must be zero.
    pub fn new(address: Ipv4Addr, prefix: u8) -> Result<Ipv4Net, String> {
        if prefix > 32 {
            return Err(format!("prefix /{prefix} is longer than 32"));
        }
        let net = Ipv4Net {
            network: address,
            prefix,
        };
        if u32::from(address) & !net.mask() != 0 {
            return Err(format!(
                "{address}/{prefix} has host bits set (the network is {}/{prefix})",
                Ipv4Addr::from(u32::from(address) & net.mask())
            ));
        }
        Ok(net)
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & self.mask() == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The first usable host address (network + 1).
    pub fn first_host(&self) -> Option<Ipv4Addr> {
        self.hosts().next()
    }

    /// Usable host addresses, in order: all but the network and broadcast addresses.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        let start = u32::from(self.network) as u64 + 1;
        let end = u32::from(self.broadcast()) as u64; // exclusive
        (start..end).map(|a| Ipv4Addr::from(a as u32))
    }

    /// How many host addresses the network has.
    pub fn host_count(&self) -> u64 {
        (1u64 << (32 - self.prefix as u32)).saturating_sub(2)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    fn from_str(text: &str) -> Result<Ipv4Net, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR (expected e.g. 10.1.0.0/24)"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{text:?}: {address:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{text:?}: {prefix:?} is not a prefix length"))?;
        Ipv4Net::new(address, prefix)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let net: Ipv4Net = "10.88.0.0/16".parse().unwrap();
        assert_eq!(net.broadcast(), Ipv4Addr::new(10, 88, 255, 255));
        assert_eq!(net.first_host(), Some(Ipv4Addr::new(10, 88, 0, 1)));
        assert_eq!(net.host_count(), 65_534);
        for bad in [
            "10.88.0.1/16",
            "10.88.0.0",
            "10.88.0.0/33",
            "x/8",
            "10.0.0.0/x",
            "1.2.3/8",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_skip_network_and_broadcast() {
        let net: Ipv4Net = "192.0.2.0/30".parse().unwrap();
        let hosts: Vec<Ipv4Addr> = net.hosts().collect();
        assert_eq!(
            hosts,
            [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)]
        );
        let big: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        assert_eq!(big.hosts().nth(300), Some(Ipv4Addr::new(10, 0, 1, 45)));
    }

    #[test]
    fn overlap() {
        let a: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        let b: Ipv4Net = "10.1.0.0/16".parse().unwrap();
        let c: Ipv4Net = "192.168.0.0/16".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }
}
