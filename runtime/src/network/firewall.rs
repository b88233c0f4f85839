//! NAT and filtering with iptables, as docker does it: carton's rules live in chains of its own
//! (`CARTON-*`), reached by one jump from each built-in chain. The content of those chains is
//! always regenerated from carton's state — every network and every published port — and loaded
//! in one atomic `iptables-restore --noflush` batch, so a rule can never be left behind by a
//! crashed command: the next change rewrites the chains from the truth. When no network is
//! left, the truth is "nothing of carton": the chains and the jumps to them are removed, in one
//! batch as well.
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
    pub gateway: Ipv4Addr,
    pub published: Vec<(Ipv4Addr, PortMapping)>,
}

const NAT_CHAINS: &[(&str, &str)] = &[
    ("PREROUTING", "CARTON-PREROUTING"),
    ("OUTPUT", "CARTON-OUTPUT"),
    ("POSTROUTING", "CARTON-POSTROUTING"),
];
const FILTER_CHAINS: &[(&str, &str)] = &[("FORWARD", "CARTON-FORWARD")];
const RAW_CHAINS: &[(&str, &str)] = &[("PREROUTING", "CARTON-PREROUTING")];

/// Every chain [`ruleset`] declares, by table: what [`teardown`] removes.
const OWN_CHAINS: &[(&str, &[&str])] = &[
    (
        "nat",
        &[
            "CARTON-PREROUTING",
            "CARTON-OUTPUT",
            "CARTON-POSTROUTING",
            "CARTON-DNAT",
        ],
    ),
    ("filter", &["CARTON-FORWARD", "CARTON-ISOLATION"]),
    ("raw", &["CARTON-PREROUTING"]),
];

/// The complete content of carton's chains for these networks, in iptables-restore format,
/// plus the jumps from built-in chains that `existing` (iptables-save output) lacks.
pub fn ruleset(networks: &[NetworkRules], existing: &str) -> String {
    let mut nat = String::from("*nat\n");
    for (_, chain) in NAT_CHAINS {
        nat.push_str(&format!(":{chain} - [0:0]\n"));
    }
    nat.push_str(":CARTON-DNAT - [0:0]\n");
    nat.push_str(&missing_jumps(existing, "nat", NAT_CHAINS));
    nat.push_str("-A CARTON-PREROUTING -m addrtype --dst-type LOCAL -j CARTON-DNAT\n");
    nat.push_str("-A CARTON-OUTPUT -m addrtype --dst-type LOCAL -j CARTON-DNAT\n");

    // Connections between containers of one network are not tracked: with br_netfilter every
    // bridged frame would otherwise pay a conntrack lookup (and fill the host's conntrack
    // table) for traffic that is never translated. Traffic to the gateway stays tracked: it is
    // how a container reaches a published port through the host (DNAT, then the hairpin
    // masquerade, whose replies come back to the gateway).
    let mut raw = String::from("*raw\n");
    for (_, chain) in RAW_CHAINS {
        raw.push_str(&format!(":{chain} - [0:0]\n"));
    }
    raw.push_str(&missing_jumps(existing, "raw", RAW_CHAINS));
    for n in networks {
        raw.push_str(&format!(
            "-A CARTON-PREROUTING -i {br} -d {gw}/32 -j RETURN\n\
             -A CARTON-PREROUTING -i {br} -s {subnet} -d {subnet} -j CT --notrack\n",
            br = n.bridge,
            gw = n.gateway,
            subnet = n.subnet,
        ));
    }
    raw.push_str("COMMIT\n");

    let mut filter = String::from("*filter\n:CARTON-FORWARD - [0:0]\n:CARTON-ISOLATION - [0:0]\n");
    filter.push_str(&missing_jumps(existing, "filter", FILTER_CHAINS));
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
    // A published port is published to every network: a connection that a DNAT rule sent to
    // a container of another network is not isolation's business (docker's userland proxy
    // gives the same reach).
    filter.push_str("-A CARTON-ISOLATION -m conntrack --ctstate DNAT -j RETURN\n");

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
        // Hairpin: a container reaching a published port of its own network through the host
        // address. Without the masquerade the server would answer the client directly over
        // the bridge, past the NAT that has to undo the DNAT (unless br_netfilter happens to
        // be on).
        nat.push_str(&format!(
            "-A CARTON-POSTROUTING -s {subnet} -o {br} -m conntrack --ctstate DNAT -j MASQUERADE\n"
        ));
        for (address, m) in &n.published {
            let dest = match m.host_ip {
                Some(ip) => format!(" -d {ip}/32"),
                None => String::new(),
            };
            nat.push_str(&format!(
                "-A CARTON-DNAT{dest} -p {p} -m {p} --dport {hp} -j DNAT --to-destination {address}:{cp}\n",
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
    nat + &filter + &raw
}

/// `-I BUILTIN 1 -j CHAIN` for each (builtin, chain) whose jump `existing` (iptables-save
/// output) lacks in `table` — looked for in that table only: raw and nat both have a
/// CARTON-PREROUTING.
fn missing_jumps(existing: &str, table: &str, chains: &[(&str, &str)]) -> String {
    let section = table_section(existing, table);
    chains
        .iter()
        .filter(|(builtin, chain)| !section.contains(&format!("-A {builtin} -j {chain}").as_str()))
        .map(|(builtin, chain)| format!("-I {builtin} 1 -j {chain}\n"))
        .collect()
}

/// The iptables-restore batch that removes carton's chains and every rule outside them that
/// jumps to one (the jumps from built-in chains, and any an administrator added), as far as
/// `existing` (iptables-save output) has them; `None` when it has nothing of carton's.
/// Chains are flushed before any is deleted: carton's chains jump to each other.
pub fn teardown(existing: &str) -> Option<String> {
    let mut batch = String::new();
    for (table, own) in OWN_CHAINS {
        let section = table_section(existing, table);
        let chains: Vec<&str> = own
            .iter()
            .copied()
            .filter(|chain| section.iter().any(|l| declares(l, chain)))
            .collect();
        let jumps: Vec<&str> = section
            .iter()
            .copied()
            .filter(|l| jumps_into(l, own))
            .collect();
        if chains.is_empty() && jumps.is_empty() {
            continue;
        }
        batch.push_str(&format!("*{table}\n"));
        for jump in jumps {
            // iptables-save prints a rule as `-A CHAIN spec`; `-D CHAIN spec` deletes it.
            batch.push_str(&format!("-D{}\n", &jump["-A".len()..]));
        }
        for op in ["-F", "-X"] {
            for chain in &chains {
                batch.push_str(&format!("{op} {chain}\n"));
            }
        }
        batch.push_str("COMMIT\n");
    }
    (!batch.is_empty()).then_some(batch)
}

/// The lines of `table` in iptables-save output, between `*table` and its `COMMIT`.
fn table_section<'a>(save: &'a str, table: &str) -> Vec<&'a str> {
    let header = format!("*{table}");
    save.lines()
        .map(str::trim)
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| *l != "COMMIT")
        .collect()
}

/// Whether an iptables-save line declares `chain` (`:CHAIN POLICY [counters]`).
fn declares(line: &str, chain: &str) -> bool {
    line.strip_prefix(':')
        .and_then(|rest| rest.split_whitespace().next())
        == Some(chain)
}

/// Whether an iptables-save line is a rule of a chain not in `own` whose target is in `own`.
fn jumps_into(line: &str, own: &[&str]) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["-A", chain, spec @ ..] if !own.contains(chain) => spec
            .windows(2)
            .any(|w| matches!(w[0], "-j" | "--jump" | "-g" | "--goto") && own.contains(&w[1])),
        _ => false,
    }
}

/// Makes the firewall say what `networks` need: carton's chains rewritten for them, or — with
/// no network left — carton's chains and jumps removed. Callers hold `locks/network.lock`, so
/// no other carton changes the chains between the look (iptables-save) and the batch.
pub fn apply(networks: &[NetworkRules]) -> Result<(), NetworkError> {
    let save = tool("iptables-save")?;
    let existing = run(Command::new(&save), None)?;
    let batch = if networks.is_empty() {
        match teardown(&existing) {
            Some(batch) => batch,
            None => return Ok(()),
        }
    } else {
        ruleset(networks, &existing)
    };
    let restore = tool("iptables-restore")?;
    let mut cmd = Command::new(restore);
    cmd.args(["--noflush", "--wait"]);
    run(cmd, Some(&batch)).map(drop)
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
        let subnet: Ipv4Net = subnet.parse().unwrap();
        NetworkRules {
            bridge: bridge.into(),
            gateway: subnet.hosts().next().unwrap(),
            subnet,
            published,
        }
    }

    #[test]
    fn jumps_are_added_once() {
        let fresh = ruleset(&[], "");
        assert_eq!(
            fresh
                .matches("-I PREROUTING 1 -j CARTON-PREROUTING")
                .count(),
            2,
            "nat and raw: {fresh}"
        );
        assert!(fresh.contains("-I FORWARD 1 -j CARTON-FORWARD"));
        let existing = "*nat\n-A PREROUTING -j CARTON-PREROUTING\n-A OUTPUT -j CARTON-OUTPUT\n\
                        -A POSTROUTING -j CARTON-POSTROUTING\nCOMMIT\n\
                        *filter\n-A FORWARD -j CARTON-FORWARD\nCOMMIT\n\
                        *raw\n-A PREROUTING -j CARTON-PREROUTING\nCOMMIT\n";
        let again = ruleset(&[], existing);
        assert!(!again.contains("-I "), "{again}");
        assert!(again.contains(":CARTON-DNAT - [0:0]"));
        // A jump in one table does not stand for the same jump in another.
        let only_raw = ruleset(&[], "*raw\n-A PREROUTING -j CARTON-PREROUTING\nCOMMIT\n");
        let nat = table_section(&only_raw, "nat");
        assert!(
            nat.contains(&"-I PREROUTING 1 -j CARTON-PREROUTING"),
            "{only_raw}"
        );
        assert!(
            !table_section(&only_raw, "raw")
                .iter()
                .any(|l| l.starts_with("-I "))
        );
    }

    #[test]
    fn traffic_inside_a_network_is_not_tracked_but_traffic_to_its_gateway_is() {
        let rules = ruleset(&[network("carton0", "10.88.0.0/16", vec![])], "");
        let raw = table_section(&rules, "raw");
        let chain: Vec<&str> = raw
            .iter()
            .copied()
            .filter(|l| l.starts_with("-A CARTON-PREROUTING"))
            .collect();
        assert_eq!(
            chain,
            [
                "-A CARTON-PREROUTING -i carton0 -d 10.88.0.1/32 -j RETURN",
                "-A CARTON-PREROUTING -i carton0 -s 10.88.0.0/16 -d 10.88.0.0/16 -j CT --notrack",
            ]
        );
    }

    /// iptables-save output with carton's chains as `ruleset` leaves them for no network,
    /// plus an administrator's rules (one of which jumps to carton's chain).
    const SAVED: &str = "\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:CARTON-FORWARD - [0:0]
:CARTON-ISOLATION - [0:0]
:ADMIN - [0:0]
-A FORWARD -j CARTON-FORWARD
-A FORWARD -s 192.0.2.0/24 -j ACCEPT
-A ADMIN -i eth9 -j CARTON-FORWARD
-A CARTON-FORWARD -j CARTON-ISOLATION
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CARTON-DNAT - [0:0]
:CARTON-OUTPUT - [0:0]
:CARTON-POSTROUTING - [0:0]
:CARTON-PREROUTING - [0:0]
-A PREROUTING -j CARTON-PREROUTING
-A OUTPUT -j CARTON-OUTPUT
-A POSTROUTING -j CARTON-POSTROUTING
-A POSTROUTING -s 192.0.2.0/24 -j MASQUERADE
-A CARTON-OUTPUT -m addrtype --dst-type LOCAL -j CARTON-DNAT
-A CARTON-PREROUTING -m addrtype --dst-type LOCAL -j CARTON-DNAT
COMMIT
";

    #[test]
    fn teardown_removes_jumps_then_flushes_then_deletes_chains() {
        let batch = teardown(SAVED).expect("carton's chains are there");
        let expected = "\
*nat
-D PREROUTING -j CARTON-PREROUTING
-D OUTPUT -j CARTON-OUTPUT
-D POSTROUTING -j CARTON-POSTROUTING
-F CARTON-PREROUTING
-F CARTON-OUTPUT
-F CARTON-POSTROUTING
-F CARTON-DNAT
-X CARTON-PREROUTING
-X CARTON-OUTPUT
-X CARTON-POSTROUTING
-X CARTON-DNAT
COMMIT
*filter
-D FORWARD -j CARTON-FORWARD
-D ADMIN -i eth9 -j CARTON-FORWARD
-F CARTON-FORWARD
-F CARTON-ISOLATION
-X CARTON-FORWARD
-X CARTON-ISOLATION
COMMIT
";
        assert_eq!(batch, expected);
    }

    #[test]
    fn teardown_without_carton_chains_is_nothing() {
        assert_eq!(teardown(""), None);
        let foreign: String = SAVED
            .lines()
            .filter(|l| !l.contains("CARTON"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(teardown(&foreign), None);
        // A half-gone state (a jump without its chain, a chain without its jump) is still
        // cleaned up as far as it exists.
        let jump_only = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j CARTON-FORWARD\nCOMMIT\n";
        assert_eq!(
            teardown(jump_only).as_deref(),
            Some("*filter\n-D FORWARD -j CARTON-FORWARD\nCOMMIT\n")
        );
    }

    #[test]
    fn teardown_knows_every_chain_ruleset_declares() {
        let rules = ruleset(&[network("carton0", "10.88.0.0/16", vec![])], "");
        let mut table = "";
        for line in rules.lines() {
            if let Some(name) = line.strip_prefix('*') {
                table = name;
            } else if let Some(rest) = line.strip_prefix(':') {
                let chain = rest.split_whitespace().next().unwrap();
                let own = OWN_CHAINS.iter().find(|(t, _)| *t == table).unwrap().1;
                assert!(
                    own.contains(&chain),
                    "{chain} of {table} unknown to teardown"
                );
            }
        }
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
            "-A CARTON-DNAT -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.2:80"
        ));
        assert!(rules.contains(
            "-A CARTON-DNAT -d 127.0.0.1/32 -p udp -m udp --dport 5353 -j DNAT --to-destination 10.89.0.2:53"
        ));
        assert!(rules.contains("-A CARTON-ISOLATION -i carton0 -o carton1 -j DROP"));
        assert!(rules.contains(
            "-A CARTON-POSTROUTING -s 10.88.0.0/16 -o carton0 -m conntrack --ctstate DNAT -j MASQUERADE"
        ));
        let isolation = rules
            .lines()
            .filter(|l| l.starts_with("-A CARTON-ISOLATION"))
            .collect::<Vec<_>>();
        assert_eq!(
            isolation.first(),
            Some(&"-A CARTON-ISOLATION -m conntrack --ctstate DNAT -j RETURN"),
            "published ports first: {isolation:?}"
        );
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
