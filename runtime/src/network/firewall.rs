//! NAT and filtering with iptables, as docker does it: carton's rules live in chains of its own
//! (`CARTON-*`), reached by one jump from each built-in chain. The content of those chains is
//! always regenerated from carton's state — every network and every published port — and loaded
//! in one atomic `iptables-restore --noflush` batch, so a rule can never be left behind by a
//! crashed command: the next change rewrites the chains from the truth.
//!
//! Why iptables rather than nftables directly: it is what docker, podman (CNI/netavark's
//! default), ufw and firewalld's iptables backend use, so carton's rules sit beside theirs in
//! the same tables that administrators already inspect; on current distributions `iptables` is
//! the nft backend anyway. A batch costs one process, and only network changes and published
//! ports need one — a plain `run` on a bridge network adds no firewall work at all.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::NetworkError;
use super::ipnet::Ipv4Net;
use super::ports::{PortMapping, Protocol};

/// One network as the firewall sees it.
#[derive(Debug, Clone)]
pub struct NetworkRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub published: Vec<(Ipv4Addr, PortMapping)>,
}

const NAT_CHAINS: &[(&str, &str)] = &[
    ("PREROUTING", "CARTON-PREROUTING"),
    ("OUTPUT", "CARTON-OUTPUT"),
    ("POSTROUTING", "CARTON-POSTROUTING"),
];
const FILTER_CHAINS: &[(&str, &str)] = &[("FORWARD", "CARTON-FORWARD")];

/// The complete content of carton's chains for these networks, in iptables-restore format,
/// plus the jumps from built-in chains that `existing` (iptables-save output) lacks.
pub fn ruleset(networks: &[NetworkRules], existing: &str) -> String {
    let mut nat = String::from("*nat\n");
    for (_, chain) in NAT_CHAINS {
        nat.push_str(&format!(":{chain} - [0:0]\n"));
    }
    nat.push_str(":CARTON-DNAT - [0:0]\n");
    for (builtin, chain) in NAT_CHAINS {
        let jump = format!("-A {builtin} -j {chain}");
        if !existing.lines().any(|l| l.trim() == jump) {
            nat.push_str(&format!("-I {builtin} 1 -j {chain}\n"));
        }
    }
    nat.push_str("-A CARTON-PREROUTING -m addrtype --dst-type LOCAL -j CARTON-DNAT\n");
    nat.push_str("-A CARTON-OUTPUT -m addrtype --dst-type LOCAL -j CARTON-DNAT\n");

    let mut filter = String::from("*filter\n:CARTON-FORWARD - [0:0]\n:CARTON-ISOLATION - [0:0]\n");
    for (builtin, chain) in FILTER_CHAINS {
        let jump = format!("-A {builtin} -j {chain}");
        if !existing.lines().any(|l| l.trim() == jump) {
            filter.push_str(&format!("-I {builtin} 1 -j {chain}\n"));
        }
    }
    // Traffic between containers of one network first: it is most of the packets (with
    // br_netfilter every bridged frame walks FORWARD), and it needs neither the isolation
    // rules nor a conntrack lookup.
    for n in networks {
        filter.push_str(&format!(
            "-A CARTON-FORWARD -i {br} -o {br} -j ACCEPT\n",
            br = n.bridge
        ));
    }
    filter.push_str("-A CARTON-FORWARD -j CARTON-ISOLATION\n");

    for n in networks {
        let (br, subnet) = (&n.bridge, n.subnet);
        // Outbound: the subnet leaves through the host's address.
        nat.push_str(&format!(
            "-A CARTON-POSTROUTING -s {subnet} ! -o {br} -j MASQUERADE\n"
        ));
        // Published ports reached through 127.0.0.1: the reply must come back to the host.
        nat.push_str(&format!(
            "-A CARTON-POSTROUTING -s 127.0.0.0/8 -o {br} -j MASQUERADE\n"
        ));
        for (address, m) in &n.published {
            let dest = match m.host_ip {
                Some(ip) => format!(" -d {ip}/32"),
                None => String::new(),
            };
            nat.push_str(&format!(
                "-A CARTON-DNAT ! -i {br}{dest} -p {p} -m {p} --dport {hp} -j DNAT --to-destination {address}:{cp}\n",
                p = m.protocol,
                hp = m.host_port,
                cp = m.container_port,
            ));
            filter.push_str(&format!(
                "-A CARTON-FORWARD -d {address}/32 ! -i {br} -o {br} -p {p} -m {p} --dport {cp} -j ACCEPT\n",
                p = m.protocol,
                cp = m.container_port,
            ));
        }
        filter.push_str(&format!(
            "-A CARTON-FORWARD -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
        ));
        filter.push_str(&format!("-A CARTON-FORWARD -i {br} ! -o {br} -j ACCEPT\n"));
        // Different carton networks do not reach each other.
        for other in networks.iter().filter(|o| o.bridge != *br) {
            filter.push_str(&format!(
                "-A CARTON-ISOLATION -i {br} -o {} -j DROP\n",
                other.bridge
            ));
        }
    }
    nat.push_str("COMMIT\n");
    filter.push_str("COMMIT\n");
    nat + &filter
}

/// Rewrites carton's chains for `networks` (an empty list leaves them empty, jumps in place).
pub fn apply(networks: &[NetworkRules]) -> Result<(), NetworkError> {
    let save = tool("iptables-save")?;
    let existing = run(Command::new(&save), None)?;
    let rules = ruleset(networks, &existing);
    let restore = tool("iptables-restore")?;
    let mut cmd = Command::new(restore);
    cmd.args(["--noflush", "--wait"]);
    run(cmd, Some(&rules)).map(drop)
}

/// Enables routing between the bridge and the outside, and lets 127.0.0.1 be translated to a
/// container address (per bridge).
pub fn enable_forwarding(bridge: &str) -> Result<(), NetworkError> {
    for (path, value) in [
        ("/proc/sys/net/ipv4/ip_forward".to_string(), "1"),
        (
            format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
            "1",
        ),
    ] {
        std::fs::write(&path, value).map_err(|source| NetworkError::Io {
            context: format!("write {path}"),
            source,
        })?;
    }
    Ok(())
}

fn tool(name: &str) -> Result<PathBuf, NetworkError> {
    let path_var = std::env::var("PATH").unwrap_or_default();
    path_var
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| NetworkError::Firewall(format!("{name} not found: install iptables")))
}

fn run(mut cmd: Command, input: Option<&str>) -> Result<String, NetworkError> {
    let shown = format!("{cmd:?}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| NetworkError::Firewall(format!("cannot run {shown}: {e}")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| NetworkError::Firewall(format!("{shown}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetworkError::Firewall(format!("{shown}: {e}")))?;
    if !out.status.success() {
        return Err(NetworkError::Firewall(format!(
            "{shown} failed: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            input.map(|i| format!("\nrules:\n{i}")).unwrap_or_default()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a protocol's traffic to `port` is published by any of `networks` on `host_ip`.
pub fn port_in_use(
    networks: &[NetworkRules],
    host_ip: Option<Ipv4Addr>,
    port: u16,
    protocol: Protocol,
) -> bool {
    networks.iter().flat_map(|n| &n.published).any(|(_, m)| {
        m.host_port == port
            && m.protocol == protocol
            && (m.host_ip.is_none() || host_ip.is_none() || m.host_ip == host_ip)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(
        bridge: &str,
        subnet: &str,
        published: Vec<(Ipv4Addr, PortMapping)>,
    ) -> NetworkRules {
        NetworkRules {
            bridge: bridge.into(),
            subnet: subnet.parse().unwrap(),
            published,
        }
    }

    #[test]
    fn jumps_are_added_once() {
        let fresh = ruleset(&[], "");
        assert!(fresh.contains("-I PREROUTING 1 -j CARTON-PREROUTING"));
        assert!(fresh.contains("-I FORWARD 1 -j CARTON-FORWARD"));
        let existing = "-A PREROUTING -j CARTON-PREROUTING\n-A OUTPUT -j CARTON-OUTPUT\n\
                        -A POSTROUTING -j CARTON-POSTROUTING\n-A FORWARD -j CARTON-FORWARD\n";
        let again = ruleset(&[], existing);
        assert!(!again.contains("-I "), "{again}");
        assert!(again.contains(":CARTON-DNAT - [0:0]"));
    }

    #[test]
    fn networks_and_ports_become_rules() {
        let web = PortMapping {
            host_ip: None,
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
        };
        let dns = PortMapping {
            host_ip: Some(Ipv4Addr::LOCALHOST),
            host_port: 5353,
            container_port: 53,
            protocol: Protocol::Udp,
        };
        let rules = ruleset(
            &[
                network(
                    "carton0",
                    "10.88.0.0/16",
                    vec![(Ipv4Addr::new(10, 88, 0, 2), web)],
                ),
                network(
                    "carton1",
                    "10.89.0.0/16",
                    vec![(Ipv4Addr::new(10, 89, 0, 2), dns)],
                ),
            ],
            "",
        );
        assert!(rules.contains("-A CARTON-POSTROUTING -s 10.88.0.0/16 ! -o carton0 -j MASQUERADE"));
        assert!(rules.contains(
            "-A CARTON-DNAT ! -i carton0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.2:80"
        ));
        assert!(rules.contains(
            "-A CARTON-DNAT ! -i carton1 -d 127.0.0.1/32 -p udp -m udp --dport 5353 -j DNAT --to-destination 10.89.0.2:53"
        ));
        assert!(rules.contains("-A CARTON-ISOLATION -i carton0 -o carton1 -j DROP"));
        assert!(rules.contains("-A CARTON-ISOLATION -i carton1 -o carton0 -j DROP"));
        assert!(rules.ends_with("COMMIT\n"));
        let networks = [network(
            "carton0",
            "10.88.0.0/16",
            vec![(Ipv4Addr::new(10, 88, 0, 2), web)],
        )];
        assert!(port_in_use(&networks, None, 8080, Protocol::Tcp));
        assert!(port_in_use(
            &networks,
            Some(Ipv4Addr::LOCALHOST),
            8080,
            Protocol::Tcp
        ));
        assert!(!port_in_use(&networks, None, 8080, Protocol::Udp));
    }
}
