//! Bridge networking (issue 6): "bridge connectivity" and "port mapping" scenarios, network
//! management, and refused input.
//!
//! Every scenario runs in the fixture's own network namespace, which plays the host
//! (`conformance::netns`): carton's bridges, veths, iptables chains and sysctls live and die
//! with it. A "remote" host is a second namespace joined by a veth, with an address from
//! 198.51.100.0/24 and no route back to any container subnet (`conformance::remote`). No packet
//! is ever addressed to anything outside this machine.
//!
//! How things are observed: addresses and routes from inside the container (`ip` through
//! `exec` or in a foreground `run`), and from `inspect` / `network inspect`; host ends of veths
//! from the container's `eth0@ifN` peer index and `ip -o link` in the fixture; firewall state from
//! `iptables-save` in the fixture; reachability with real traffic (busybox httpd, wget, ping,
//! and sockets the test opens inside a namespace). A container signals "my server is listening"
//! through a file handshake, so positive checks need no retry loop, and negative checks
//! ("cannot reach") are made only after the same server was shown reachable by another path.
//! Nothing asserts on timing.
//!
//! busybox-static 1.35's `wget -T` crashes (SIGSEGV, on the host as well), so client timeouts
//! come from busybox `timeout` instead.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use conformance::containers::{Handshake, IDLE_UNTIL_TERM, SYNC_SH};
use conformance::netns::TestNetns;
use conformance::remote::{self, RemoteHost};
use conformance::{
    Carton, CartonCmd, DEADLINE, EXIT_CARTON_ERROR, is_hex, lines, skip, unique, wait_within,
};
use rstest::rstest;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Fixture and helpers
// ---------------------------------------------------------------------------------------------

/// A fixture with busybox, or `None` (after `SKIP: …`) when the machine cannot run network
/// scenarios: no `ip`, or no working `iptables-save` in a fresh namespace.
fn fixture() -> Option<Carton> {
    let ct = Carton::with_busybox()?;
    for (tool, args) in [("ip", &["-o", "link"][..]), ("iptables-save", &[][..])] {
        let (ok, out) = ct.netns().command(tool, args);
        if !ok {
            skip(&format!(
                "`{tool}` does not work in a network namespace: {}",
                out.trim()
            ));
            return None;
        }
    }
    Some(ct)
}

/// The web server of these scenarios (run as `sh -c SCRIPT TOKEN`): serves TOKEN at `/` on
/// port 80 (busybox httpd binds before it daemonizes, so `s ready` means "listening"), then
/// idles until SIGTERM, on which it exits 0.
const WEB_SH: &str = "mkdir -p /www; echo \"$0\" > /www/index.html; trap 'exit 0' TERM; \
                      httpd -p 80 -h /www || exit 3; s ready; sleep 1000 & wait";

/// A detached web server serving `token` (see [`WEB_SH`]), with extra `run` flags; returns its
/// id and handshake once it listens.
#[track_caller]
fn web(ct: &Carton, flags: &[&str], token: &str) -> (String, Handshake) {
    let hs = ct.handshake();
    let mut args: Vec<String> = vec!["-v".into(), hs.volume()];
    args.extend(flags.iter().map(|s| s.to_string()));
    args.extend([
        "busybox".into(),
        "sh".into(),
        "-c".into(),
        format!("{SYNC_SH} {WEB_SH}"),
        token.into(),
    ]);
    let id = ct.run_detached(&args);
    hs.wait_for("ready");
    (id, hs)
}

/// A detached container idling until stopped, with extra `run` flags; returns its id.
#[track_caller]
fn idle(ct: &Carton, flags: &[&str]) -> String {
    let mut args: Vec<&str> = flags.to_vec();
    args.extend(["busybox", "sh", "-c", IDLE_UNTIL_TERM]);
    ct.run_detached(&args)
}

/// `carton exec <container> <command…>` (not asserted).
#[track_caller]
fn exec(ct: &Carton, container: &str, command: &[&str]) -> Output {
    ct.cmd().arg("exec").arg(container).args(command).output()
}

/// `carton exec`, asserting success; returns stdout.
#[track_caller]
fn exec_ok(ct: &Carton, container: &str, command: &[&str]) -> String {
    let out = exec(ct, container, command);
    assert!(
        out.status.success(),
        "`carton exec {container} {}` failed ({})\nstdout: {}\nstderr: {}",
        command.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text(out: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// An IPv4 network as `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Subnet {
    base: u32,
    prefix: u8,
}

impl Subnet {
    #[track_caller]
    fn parse(text: &str) -> Subnet {
        let (addr, prefix) = text
            .split_once('/')
            .unwrap_or_else(|| panic!("{text:?} is not in CIDR form"));
        let addr: Ipv4Addr = addr
            .parse()
            .unwrap_or_else(|_| panic!("{text:?}: bad address"));
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .unwrap_or_else(|| panic!("{text:?}: bad prefix length"));
        let subnet = Subnet {
            base: u32::from(addr),
            prefix,
        };
        assert_eq!(
            subnet.base & subnet.mask(),
            subnet.base,
            "{text:?} has host bits set: not a network address"
        );
        subnet
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.base
    }

    fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base | !self.mask())
    }

    /// The `n`-th address of the subnet (0 = the network address).
    fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + n)
    }

    fn overlaps(&self, other: &Subnet) -> bool {
        let mask = self.mask() & other.mask();
        self.base & mask == other.base & mask
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

/// A network as `network inspect` describes it.
#[derive(Debug, Clone)]
struct Net {
    raw: Value,
    id: String,
    subnet: Subnet,
    gateway: Ipv4Addr,
    bridge: String,
}

impl Net {
    /// Container id → (Name, IPv4Address) of `Containers`.
    fn containers(&self) -> Vec<(String, String, String)> {
        self.raw["Containers"]
            .as_object()
            .unwrap_or_else(|| panic!("Containers is not an object: {}", self.raw))
            .iter()
            .map(|(id, c)| {
                (
                    id.clone(),
                    c["Name"].as_str().unwrap_or_default().to_string(),
                    c["IPv4Address"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

/// `network inspect NAME` (one object), or the failed command's output.
fn try_network(ct: &Carton, name: &str) -> Result<Net, String> {
    let out = ct.cmd().args(["network", "inspect", name]).output();
    if !out.status.success() {
        return Err(text(&out));
    }
    let all: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "`network inspect {name}` printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let raw = match all.as_array().map(Vec::as_slice) {
        Some([one]) => one.clone(),
        _ => {
            return Err(format!(
                "`network inspect {name}`: not an array of one: {all}"
            ));
        }
    };
    let config = &raw["IPAM"]["Config"][0];
    let field = |v: &Value, what: &str| -> Result<String, String> {
        v.as_str()
            .map(String::from)
            .ok_or_else(|| format!("`network inspect {name}` lacks {what}: {raw}"))
    };
    let id = field(&raw["Id"], "Id")?;
    let subnet = Subnet::parse(&field(&config["Subnet"], "IPAM.Config[0].Subnet")?);
    let gateway = field(&config["Gateway"], "IPAM.Config[0].Gateway")?
        .parse()
        .map_err(|_| format!("bad gateway in {raw}"))?;
    let bridge = field(
        &raw["Options"]["com.docker.network.bridge.name"],
        "Options.\"com.docker.network.bridge.name\"",
    )?;
    Ok(Net {
        id,
        subnet,
        gateway,
        bridge,
        raw,
    })
}

#[track_caller]
fn network(ct: &Carton, name: &str) -> Net {
    try_network(ct, name).unwrap_or_else(|e| panic!("`network inspect {name}`: {e}"))
}

/// `network create ARGS…`: asserts it prints a 64-hex id and nothing else; returns the id.
#[track_caller]
fn network_create(ct: &Carton, args: &[&str]) -> String {
    let out = ct.cmd().args(["network", "create"]).args(args).stdout_ok();
    let id = out.trim_end_matches('\n');
    assert!(
        is_hex(id, 64),
        "`network create {}` must print the 64-hex id, printed {out:?}",
        args.join(" ")
    );
    id.to_string()
}

/// `NetworkSettings.IPAddress` of a container, which must be set.
#[track_caller]
fn address_of(ct: &Carton, container: &str) -> Ipv4Addr {
    let settings = &ct.inspect(container)["NetworkSettings"];
    settings["IPAddress"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{container} has no NetworkSettings.IPAddress: {settings}"))
}

/// `inet a.b.c.d/len` entries of `ip addr` output.
fn inet_addresses(text: &str) -> Vec<(Ipv4Addr, u8)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "inet")
        .filter_map(|w| {
            let (a, p) = w[1].split_once('/')?;
            Some((a.parse().ok()?, p.parse().ok()?))
        })
        .collect()
}

/// The IPv4 address of `eth0` as the container itself sees it (exactly one).
#[track_caller]
fn eth0_of(ct: &Carton, container: &str) -> (Ipv4Addr, u8) {
    let out = exec_ok(
        ct,
        container,
        &["ip", "-o", "-4", "addr", "show", "dev", "eth0"],
    );
    match inet_addresses(&out).as_slice() {
        [one] => *one,
        other => panic!("eth0 of {container} should have one IPv4 address, has {other:?}: {out}"),
    }
}

/// The fixture-side end of the container's `eth0`, found through its peer index
/// (`eth0@ifN` inside, `N: name@…` on the host): not through any naming convention.
#[track_caller]
fn host_end_of(ct: &Carton, container: &str) -> String {
    let inside = exec_ok(ct, container, &["ip", "-o", "link", "show", "dev", "eth0"]);
    let peer: u32 = inside
        .split_once("eth0@if")
        .and_then(|(_, rest)| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("`ip -o link show dev eth0` in {container}: {inside:?}"));
    let host = remote::ip(ct.netns(), &["-o", "link"]).unwrap_or_else(|e| panic!("{e}"));
    host.lines()
        .find_map(|l| {
            let (index, rest) = l.split_once(": ")?;
            (index.trim().parse::<u32>().ok()? == peer).then(|| {
                rest.split(['@', ':'])
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
        })
        .unwrap_or_else(|| panic!("no interface with index {peer} on the host:\n{host}"))
}

/// `ip -o link show dev NAME` in the fixture, or None when there is no such interface.
fn host_link(ct: &Carton, name: &str) -> Option<String> {
    remote::ip(ct.netns(), &["-o", "link", "show", "dev", name]).ok()
}

/// The veths of the fixture's namespace (by link type, not by name), but the remote host's.
#[track_caller]
fn veths(ct: &Carton) -> Vec<String> {
    let out = remote::ip(ct.netns(), &["-o", "link", "show", "type", "veth"])
        .unwrap_or_else(|e| panic!("{e}"));
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or_default().to_string())
        .filter(|n| !n.starts_with("rhost"))
        .collect()
}

/// How long carton leaves a finished foreground container's veth to the kernel before it
/// removes it itself (`KERNEL_REMOVAL_GRACE` in runtime/src/network/attach.rs).
const VETH_GRACE: Duration = Duration::from_secs(2);

/// [`veths`] once the kernel has had the time to remove those of finished foreground
/// containers: carton leaves them to the kernel, which removes them with the container's
/// network namespace a few milliseconds after its last process (see
/// `foreground_container_leaves_its_veth_to_the_kernel_and_its_address_waits`).
#[track_caller]
fn veths_settled(ct: &Carton) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = veths(ct);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a first container in the foreground (which creates the default network) and waits
/// until the kernel has removed its veth, so that a scenario's "before" is settled.
#[track_caller]
fn first_container(ct: &Carton) {
    ct.run_ok(["--rm", "busybox", "true"]);
    let left = veths_settled(ct);
    assert!(
        left.is_empty(),
        "veths left by a finished container: {left:?}"
    );
}

/// `iptables-save` in the fixture, without comments and counters.
#[track_caller]
fn iptables(ct: &Carton) -> String {
    let (ok, out) = ct.netns().command("iptables-save", &[]);
    assert!(ok, "iptables-save failed: {out}");
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(i)) => &l[..i],
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Whether `line` contains `word` as a whole token (not as part of a longer address, port or
/// name: `10.89.0.2` does not match in `10.89.0.20`).
fn mentions(line: &str, word: &str) -> bool {
    let part = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.');
    line.match_indices(word).any(|(i, _)| {
        !part(line[..i].chars().next_back()) && !part(line[i + word.len()..].chars().next())
    })
}

/// The lines of `rules` that mention any of `words`.
fn rules_mentioning(rules: &str, words: &[&str]) -> Vec<String> {
    rules
        .lines()
        .filter(|l| words.iter().any(|w| mentions(l, w)))
        .map(String::from)
        .collect()
}

/// A published-port rule for `host_port` → `address:container_port` (the DNAT).
fn dnat_rules(rules: &str, host_port: u16, address: Ipv4Addr, container_port: u16) -> Vec<String> {
    let to = format!("{address}:{container_port}");
    rules
        .lines()
        .filter(|l| l.contains("DNAT") && mentions(l, &to) && mentions(l, &host_port.to_string()))
        .map(String::from)
        .collect()
}

/// What "nothing half-created" is checked against: the fixture's interfaces, its firewall,
/// every network carton lists (with its containers) and the network records on disk.
#[derive(Debug, PartialEq, Eq)]
struct NetState {
    interfaces: Vec<String>,
    rules: String,
    networks: String,
    inspect: Vec<Value>,
    records: Vec<String>,
}

#[track_caller]
fn net_state(ct: &Carton) -> NetState {
    let names: Vec<String> = lines(&ct.cmd().args(["network", "ls", "-q"]).stdout_ok());
    let mut inspect: Vec<Value> = names
        .iter()
        .map(|n| network(ct, n).raw)
        .map(|mut v| {
            // `Created` of a network is not state that a refused command could change.
            v.as_object_mut().map(|o| o.remove("Created"));
            v
        })
        .collect();
    inspect.sort_by_key(|v| v["Name"].to_string());
    let mut records: Vec<String> = std::fs::read_dir(ct.root().join("networks"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    records.sort();
    NetState {
        interfaces: ct.netns().interfaces(),
        rules: iptables(ct),
        networks: ct.cmd().args(["network", "ls"]).stdout_ok(),
        inspect,
        records,
    }
}

#[track_caller]
fn assert_same_net_state(before: &NetState, after: &NetState, what: &str) {
    assert_eq!(
        before.interfaces, after.interfaces,
        "{what}: interfaces of the host changed"
    );
    assert_eq!(
        before.records, after.records,
        "{what}: network records changed"
    );
    assert_eq!(
        before.networks, after.networks,
        "{what}: `network ls` changed"
    );
    assert_eq!(
        before.inspect, after.inspect,
        "{what}: `network inspect` changed (an allocation left?)"
    );
    if before.rules != after.rules {
        panic!(
            "{what}: the firewall changed\n{}",
            conformance::host::line_diff(&before.rules, &after.rules)
        );
    }
}

/// Runs `carton ARGS` expecting exit 125 with a `carton: ` message naming one of `messages`,
/// nothing on stdout, and no change to the network state; returns stderr.
#[track_caller]
fn assert_refused(ct: &Carton, args: &[&str], messages: &[&str]) -> String {
    let before = net_state(ct);
    let containers = ct.container_ids();
    let out = ct.cmd().args(args).output();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let what = format!("`carton {}`", args.join(" "));
    assert_eq!(
        out.status.code(),
        Some(EXIT_CARTON_ERROR),
        "{what} must exit 125\n{}",
        text(&out)
    );
    assert!(
        stderr.contains("carton: ") && messages.iter().any(|m| stderr.contains(m)),
        "{what}: stderr should be a `carton: ` message naming one of {messages:?}: {stderr:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "{what} printed on stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_same_net_state(&before, &net_state(ct), &what);
    // No new container is running (a refused `run` may leave a Created one, as docker does).
    let running: Vec<String> = ct
        .ps_rows(&["--no-trunc"])
        .into_iter()
        .map(|r| r.id)
        .filter(|id| !containers.contains(id))
        .collect();
    assert!(
        running.is_empty(),
        "{what}: containers running: {running:?}"
    );
    stderr
}

/// Asserts `GET /` on `to` from inside `ns` answers with `token` in the body.
#[track_caller]
fn assert_serves(ns: &TestNetns, to: SocketAddrV4, token: &str, what: &str) {
    match remote::http_get(ns, to, Duration::from_secs(10)) {
        Ok(resp) if resp.starts_with("HTTP/1.") && resp.contains(token) => {}
        Ok(resp) => panic!("{what}: GET http://{to}/ answered without {token:?}: {resp:?}"),
        Err(e) => panic!("{what}: GET http://{to}/ failed: {e}"),
    }
}

fn localhost(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

/// The single mapping of `NetworkSettings.Ports[key]` as (HostIp, HostPort).
#[track_caller]
fn port_binding(ct: &Carton, container: &str, key: &str) -> (String, String) {
    let settings = &ct.inspect(container)["NetworkSettings"];
    let b = &settings["Ports"][key][0];
    match (b["HostIp"].as_str(), b["HostPort"].as_str()) {
        (Some(ip), Some(port)) => (ip.to_string(), port.to_string()),
        _ => panic!("NetworkSettings.Ports[{key:?}] is not [{{HostIp, HostPort}}]: {settings}"),
    }
}

/// Ends a scenario: removes every container, then fails when carton left anything of them on
/// the network — a veth, an allocation in any network, a DNAT rule — and finally runs the
/// harness's own leak checks ([`Carton::finish`]).
#[track_caller]
fn finish(ct: Carton) {
    let ids = ct.container_ids();
    if !ids.is_empty() {
        ct.cmd().args(["rm", "-f"]).args(&ids).assert().success();
    }
    let left = veths_settled(&ct);
    assert!(
        left.is_empty(),
        "veths left after every container was removed: {left:?}"
    );
    for name in lines(&ct.cmd().args(["network", "ls", "-q"]).stdout_ok()) {
        let net = network(&ct, &name);
        assert!(
            net.containers().is_empty(),
            "network {name} still lists containers after every container was removed: {}",
            net.raw
        );
    }
    let rules = iptables(&ct);
    let dnat: Vec<&str> = rules
        .lines()
        .filter(|l| l.contains("--to-destination"))
        .collect();
    assert!(
        dnat.is_empty(),
        "DNAT rules left after every container was removed: {dnat:#?}"
    );
    ct.finish();
}

// ---------------------------------------------------------------------------------------------
// Bridge connectivity
// ---------------------------------------------------------------------------------------------

/// A container on the default network gets `eth0` with an address of the network's subnet —
/// the lowest one after the gateway, never the network address, the broadcast or the gateway —
/// a default route via the gateway, and `lo` up. `inspect`, `network inspect` and the host side
/// (a veth on the network's bridge, the bridge holding the gateway address) agree.
#[test]
fn bridged_container_gets_an_address_in_the_subnet_and_a_default_route() {
    let Some(ct) = fixture() else { return };
    let id = idle(&ct, &["--name", "first"]);
    let net = network(&ct, "bridge");
    assert!(
        net.subnet.contains(net.gateway),
        "gateway outside the subnet: {:?}",
        net.raw
    );
    assert_eq!(
        net.gateway,
        net.subnet.nth(1),
        "the gateway is the subnet's first host address"
    );

    let (ip, prefix) = eth0_of(&ct, "first");
    assert!(
        net.subnet.contains(ip),
        "eth0 has {ip}, not in {}",
        net.subnet
    );
    assert_eq!(prefix, net.subnet.prefix, "eth0's prefix length");
    assert!(
        ![net.subnet.network(), net.subnet.broadcast(), net.gateway].contains(&ip),
        "eth0 got a reserved address {ip} of {}",
        net.subnet
    );
    assert_eq!(
        ip,
        net.subnet.nth(2),
        "the first container gets the lowest free address after the gateway"
    );

    let routes = exec_ok(&ct, "first", &["ip", "-4", "route", "show"]);
    assert!(
        routes.lines().any(
            |l| l.split_whitespace().collect::<Vec<_>>()[..].starts_with(&[
                "default",
                "via",
                &net.gateway.to_string(),
                "dev",
                "eth0"
            ])
        ),
        "no default route via {} dev eth0:\n{routes}",
        net.gateway
    );
    let lo = exec_ok(&ct, "first", &["ip", "-o", "link", "show", "dev", "lo"]);
    assert!(
        lo.contains(",UP") || lo.contains("<UP"),
        "lo is not up: {lo}"
    );

    let inspect = ct.inspect("first");
    let settings = &inspect["NetworkSettings"];
    assert_eq!(settings["IPAddress"], ip.to_string(), "{settings}");
    assert_eq!(settings["IPPrefixLen"], net.subnet.prefix, "{settings}");
    assert_eq!(settings["Gateway"], net.gateway.to_string(), "{settings}");
    let on_bridge = &settings["Networks"]["bridge"];
    assert_eq!(on_bridge["NetworkID"], net.id, "{settings}");
    assert_eq!(on_bridge["IPAddress"], ip.to_string(), "{settings}");
    assert_eq!(inspect["HostConfig"]["NetworkMode"], "bridge");

    let listed = net.containers();
    assert_eq!(
        listed,
        [(id.clone(), "first".into(), format!("{ip}/{prefix}"))],
        "`network inspect bridge` Containers"
    );

    let host_end = host_end_of(&ct, "first");
    let link = host_link(&ct, &host_end).expect("host end listed");
    assert!(
        mentions(&link, &net.bridge) && link.contains("master"),
        "the host end {host_end} is not on the bridge {}: {link}",
        net.bridge
    );
    assert!(
        link.contains(",UP") || link.contains("<UP"),
        "host end down: {link}"
    );
    let bridge_addr = remote::ip(
        ct.netns(),
        &["-o", "-4", "addr", "show", "dev", &net.bridge],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        inet_addresses(&bridge_addr),
        [(net.gateway, net.subnet.prefix)],
        "the bridge carries the gateway address"
    );
    // The host reaches the container directly.
    let busybox = ct.busybox().display().to_string();
    let (ok, out) = ct
        .netns()
        .command(&busybox, &["ping", "-c", "1", "-W", "10", &ip.to_string()]);
    assert!(ok, "the host cannot ping the container at {ip}: {out}");
    finish(ct);
}

/// Two containers on one network ping each other and talk TCP (busybox httpd and wget), in
/// both directions.
#[test]
fn containers_on_one_network_ping_each_other_and_talk_tcp() {
    let Some(ct) = fixture() else { return };
    let (token_a, token_b) = (unique("web-a"), unique("web-b"));
    web(&ct, &["--name", "web-a"], &token_a);
    web(&ct, &["--name", "web-b"], &token_b);
    let (ip_a, ip_b) = (address_of(&ct, "web-a"), address_of(&ct, "web-b"));
    assert_ne!(ip_a, ip_b);
    for (from, to, token) in [("web-a", ip_b, &token_b), ("web-b", ip_a, &token_a)] {
        let out = exec(&ct, from, &["ping", "-c", "1", "-W", "10", &to.to_string()]);
        assert!(
            out.status.success(),
            "{from} cannot ping {to}: {}",
            text(&out)
        );
        let url = format!("http://{to}/");
        let out = exec(&ct, from, &["timeout", "20", "wget", "-q", "-O", "-", &url]);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(token.as_str()),
            "{from}: wget {url} should print {token:?}: {}",
            text(&out)
        );
    }
    finish(ct);
}

/// Connections between containers of one network are not tracked by the host's conntrack
/// (with br_netfilter every bridged frame would pay for a lookup, and fill the table, for
/// traffic that is never translated), while a connection to a published port through the
/// gateway — DNAT and the hairpin masquerade — is tracked, and works.
#[test]
fn traffic_inside_a_network_is_not_tracked_but_published_ports_are() {
    let Some(ct) = fixture() else { return };
    // The table through procfs where the kernel has it, else through ctnetlink (Debian's
    // kernels leave /proc/net/nf_conntrack out). Both print `src=… dst=… dport=…` per line.
    let read_table = || {
        let (ok, table) = ct.netns().command("cat", &["/proc/net/nf_conntrack"]);
        if ok {
            return Ok(table);
        }
        match ct.netns().command("conntrack", &["-L"]) {
            (true, table) => Ok(table),
            (false, err) => Err(format!(
                "no /proc/net/nf_conntrack ({table}) and conntrack -L failed: {err}"
            )),
        }
    };
    if let Err(e) = read_table() {
        return skip(&format!(
            "cannot read the host's connection table (install conntrack): {e}"
        ));
    }
    let token = unique("tracked");
    web(&ct, &["--name", "server", "-p", "8080:80"], &token);
    web(&ct, &["--name", "client"], &unique("client"));
    let (server, client) = (address_of(&ct, "server"), address_of(&ct, "client"));
    let gateway = network(&ct, "bridge").gateway;
    for url in [
        format!("http://{server}/"),
        format!("http://{gateway}:8080/"),
    ] {
        let out = exec_ok(
            &ct,
            "client",
            &["timeout", "20", "wget", "-q", "-O", "-", &url],
        );
        assert!(out.contains(&token), "wget {url}: {out}");
    }
    let table = read_table().unwrap();
    // Original direction first on each line: `src=A dst=B sport=… dport=…`.
    let original = |line: &str| -> (String, String, String) {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_default()
                .to_string()
        };
        (field("src="), field("dst="), field("dport="))
    };
    let entries: Vec<(String, String, String)> = table.lines().map(original).collect();
    let (client, server, gateway) = (client.to_string(), server.to_string(), gateway.to_string());
    assert!(
        !entries
            .iter()
            .any(|(src, dst, _)| (src == &client && dst == &server)
                || (src == &server && dst == &client)),
        "a connection inside the network was tracked:\n{table}"
    );
    assert!(
        entries
            .iter()
            .any(|(src, dst, dport)| src == &client && dst == &gateway && dport == "8080"),
        "the connection to the published port through the gateway was not tracked:\n{table}"
    );
    finish(ct);
}

/// Containers on two different carton networks cannot reach each other (ping and TCP time
/// out or are refused), although each server is up (the host reaches both) and each container
/// reaches its own gateway.
#[test]
fn containers_on_different_networks_cannot_reach_each_other() {
    let Some(ct) = fixture() else { return };
    network_create(&ct, &["--subnet", "172.28.1.0/24", "left"]);
    network_create(&ct, &["--subnet", "172.28.2.0/24", "right"]);
    let (token_a, token_b) = (unique("left"), unique("right"));
    web(&ct, &["--name", "web-a", "--network", "left"], &token_a);
    web(&ct, &["--name", "web-b", "--network", "right"], &token_b);
    let (ip_a, ip_b) = (address_of(&ct, "web-a"), address_of(&ct, "web-b"));
    let (left, right) = (network(&ct, "left"), network(&ct, "right"));
    assert!(left.subnet.contains(ip_a) && right.subnet.contains(ip_b));

    // Both servers answer (so a failure below is the isolation, not a dead server).
    assert_serves(
        ct.netns(),
        SocketAddrV4::new(ip_a, 80),
        &token_a,
        "host → a",
    );
    assert_serves(
        ct.netns(),
        SocketAddrV4::new(ip_b, 80),
        &token_b,
        "host → b",
    );

    for (from, own_gateway, other) in [
        ("web-a", left.gateway, ip_b),
        ("web-b", right.gateway, ip_a),
    ] {
        let gw = own_gateway.to_string();
        let out = exec(&ct, from, &["ping", "-c", "1", "-W", "10", &gw]);
        assert!(
            out.status.success(),
            "{from} cannot ping its own gateway {gw}: {}",
            text(&out)
        );
        let other = other.to_string();
        let out = exec(
            &ct,
            from,
            &["timeout", "5", "ping", "-c", "1", "-W", "3", &other],
        );
        assert!(
            !out.status.success(),
            "{from} pings {other} on another network: {}",
            text(&out)
        );
        let url = format!("http://{other}/");
        let out = exec(&ct, from, &["timeout", "5", "wget", "-q", "-O", "-", &url]);
        assert!(
            !out.status.success(),
            "{from} fetches {url} from another network: {}",
            text(&out)
        );
    }
    finish(ct);
}

/// A container reaches a remote host (its own namespace, 198.51.100.2/24, no route back to the
/// container's subnet) through NAT: the remote sees the host's address (198.51.100.1) as the
/// source, answers it, and the container gets the answer. ICMP goes through too.
#[test]
fn container_reaches_a_remote_host_through_nat() {
    let Some(ct) = fixture() else { return };
    let remote = RemoteHost::connect(&ct);
    let routes = remote::ip(remote.netns(), &["-4", "route", "show"]).unwrap();
    assert!(
        lines(&routes)
            .iter()
            .all(|l| l.starts_with("198.51.100.0/24 ")),
        "the remote host must have no route beyond its link:\n{routes}"
    );
    let listener = remote.listen_tcp(80);
    let token = unique("nat");
    let url = format!("http://{}/{token}", remote.addr());
    let mut client = ct.run([
        "--name", "client", "busybox", "timeout", "20", "wget", "-q", "-O", "-", &url,
    ]);
    let running = client.spawn();

    let (conn, peer) = match remote::accept_within(&listener, DEADLINE) {
        Ok(accepted) => accepted,
        Err(e) => {
            let outcome = running.wait_result().map(|out| text(&out));
            panic!("the remote host got no connection from the container: {e}\nclient: {outcome:?}")
        }
    };
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request = String::new();
    reader.read_line(&mut request).unwrap();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
    }
    let reply = format!("reply-{token}");
    (&conn)
        .write_all(
            format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{reply}\n").as_bytes(),
        )
        .unwrap();
    drop(reader);
    drop(conn);
    let out = running.wait();

    assert!(
        request.starts_with(&format!("GET /{token} ")),
        "unexpected request: {request:?}"
    );
    assert_eq!(
        peer.ip(),
        remote.host_addr(),
        "the remote host must see the host's address as the source (MASQUERADE), saw {peer}"
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&reply),
        "the container did not get the remote host's answer: {}",
        text(&out)
    );
    let net = network(&ct, "bridge");
    let rules = iptables(&ct);
    assert!(
        rules.lines().any(|l| l.contains("MASQUERADE")
            && mentions(l, &net.subnet.to_string())
            && mentions(l, &net.bridge)),
        "no MASQUERADE rule for {} leaving other than {}:\n{rules}",
        net.subnet,
        net.bridge
    );

    let out = ct
        .run([
            "--rm",
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "10",
            &remote.addr().to_string(),
        ])
        .output();
    assert!(
        out.status.success(),
        "the container cannot ping the remote host: {}",
        text(&out)
    );
    finish(ct);
}

// ---------------------------------------------------------------------------------------------
// Port mapping
// ---------------------------------------------------------------------------------------------

/// Where a published port is reached from.
#[derive(Debug, Clone, Copy)]
enum From {
    /// The remote host, to the host's address 198.51.100.1 (PREROUTING).
    RemoteHost,
    /// The host itself, to its own address 198.51.100.1 (OUTPUT).
    HostAddress,
    /// The host itself, to 127.0.0.1 (OUTPUT, route_localnet).
    Localhost,
    /// Another container of the same network, to the host's address (hairpin: out to the
    /// host, DNAT, back into the bridge).
    OtherContainer,
    /// A container of another carton network, to the host's address (published ports are
    /// published to every network; isolation only stops direct traffic).
    OtherNetwork,
}

/// `-p 8080:80` (or with a host IP) is reachable from the remote host, from the host's own
/// address and from 127.0.0.1; `ps`, `inspect` and the firewall show the mapping.
#[rstest]
#[case::from_remote_host(From::RemoteHost)]
#[case::from_host_address(From::HostAddress)]
#[case::from_localhost(From::Localhost)]
#[case::from_another_container(From::OtherContainer)]
#[case::from_another_network(From::OtherNetwork)]
fn published_port_is_reachable(#[case] from: From) {
    let Some(ct) = fixture() else { return };
    let remote = RemoteHost::connect(&ct);
    let token = unique("published");
    let (id, _hs) = web(&ct, &["--name", "web", "-p", "8080:80"], &token);
    let ip = address_of(&ct, "web");
    // The server itself is up: reached directly on the bridge.
    assert_serves(
        ct.netns(),
        SocketAddrV4::new(ip, 80),
        &token,
        "host → container:80",
    );

    let row = ct.ps_row("web").expect("web in ps");
    assert_eq!(row.ports, "0.0.0.0:8080->80/tcp", "ps PORTS: {row:?}");
    assert_eq!(
        port_binding(&ct, &id, "80/tcp"),
        ("0.0.0.0".into(), "8080".into())
    );
    let bindings = &ct.inspect(&id)["HostConfig"]["PortBindings"]["80/tcp"][0];
    assert_eq!(bindings["HostPort"], "8080", "HostConfig.PortBindings");
    let rules = iptables(&ct);
    assert!(
        !dnat_rules(&rules, 8080, ip, 80).is_empty(),
        "no DNAT rule for 8080 → {ip}:80:\n{rules}"
    );

    match from {
        From::RemoteHost => assert_serves(
            remote.netns(),
            SocketAddrV4::new(remote.host_addr(), 8080),
            &token,
            "remote host → host:8080",
        ),
        From::HostAddress => assert_serves(
            ct.netns(),
            SocketAddrV4::new(remote.host_addr(), 8080),
            &token,
            "host → its own address:8080",
        ),
        From::Localhost => {
            assert_serves(ct.netns(), localhost(8080), &token, "host → 127.0.0.1:8080")
        }
        From::OtherContainer | From::OtherNetwork => {
            let client = match from {
                From::OtherContainer => idle(&ct, &["--name", "client"]),
                _ => {
                    network_create(&ct, &["elsewhere"]);
                    let client = idle(&ct, &["--name", "client", "--network", "elsewhere"]);
                    // Isolation still holds for direct traffic.
                    let direct = format!("http://{ip}:80/");
                    let out = exec(
                        &ct,
                        &client,
                        &["timeout", "5", "wget", "-q", "-O", "-", &direct],
                    );
                    assert!(
                        !out.status.success(),
                        "another network reached the container directly: {}",
                        text(&out)
                    );
                    client
                }
            };
            let url = format!("http://{}:8080/", remote.host_addr());
            let out = exec(
                &ct,
                &client,
                &["timeout", "20", "wget", "-q", "-O", "-", &url],
            );
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&token),
                "{from:?} → host:8080 did not reach the server: {}\n{}",
                text(&out),
                iptables(&ct)
            );
        }
    }
    finish(ct);
}

/// A UDP mapping (`-p 5353:53/udp`): a datagram sent to port 5353 — by the remote host to the
/// host's address, by the host to its own address, by the host to 127.0.0.1 — arrives on port
/// 53 in the container's network namespace, and the answer comes back from the address it was
/// sent to. (The receiving socket is opened by the test inside the container's namespace:
/// busybox-static's `nc` has no `-u` and busybox has no UDP server applet here.)
#[rstest]
#[case::from_remote_host(From::RemoteHost)]
#[case::from_host_address(From::HostAddress)]
#[case::from_localhost(From::Localhost)]
fn published_udp_port_carries_datagrams_both_ways(#[case] from: From) {
    let Some(ct) = fixture() else { return };
    let remote_host = RemoteHost::connect(&ct);
    let id = idle(&ct, &["--name", "dns", "-p", "5353:53/udp"]);
    let pid = ct.state(&id)["Pid"].as_i64().expect("Pid") as i32;
    let inside = remote::in_netns_of(pid, || UdpSocket::bind("0.0.0.0:53"))
        .expect("bind UDP port 53 in the container's namespace");
    let (sender_netns, published) = match from {
        From::RemoteHost => (
            remote_host.netns(),
            SocketAddrV4::new(remote_host.host_addr(), 5353),
        ),
        From::HostAddress => (ct.netns(), SocketAddrV4::new(remote_host.host_addr(), 5353)),
        From::Localhost => (ct.netns(), localhost(5353)),
        From::OtherContainer | From::OtherNetwork => {
            unreachable!("the UDP cases send from the host's side")
        }
    };
    let host = remote::udp_bind(sender_netns, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        .expect("bind the sender's UDP socket");

    let row = ct.ps_row("dns").expect("dns in ps");
    assert_eq!(row.ports, "0.0.0.0:5353->53/udp", "ps PORTS: {row:?}");
    assert_eq!(
        port_binding(&ct, &id, "53/udp"),
        ("0.0.0.0".into(), "5353".into())
    );

    let token = unique("udp");
    let (got, source) = remote::udp_exchange(&host, published, token.as_bytes(), &inside, DEADLINE)
        .unwrap_or_else(|e| panic!("{from:?} → {published}/udp: {e}\n{}", iptables(&ct)));
    assert_eq!(String::from_utf8_lossy(&got), token);

    let answer = format!("ack-{token}");
    inside.send_to(answer.as_bytes(), source).unwrap();
    host.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from_addr) = host
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no answer from the container through the mapping: {e}"));
    assert_eq!(String::from_utf8_lossy(&buf[..n]), answer);
    assert_eq!(
        from_addr,
        SocketAddr::V4(published),
        "the answer must come from the published address"
    );
    finish(ct);
}

/// `-p 80` picks a free host port: `inspect` and `ps` show it, and it reaches the server.
#[test]
fn publish_without_host_port_picks_a_free_port() {
    let Some(ct) = fixture() else { return };
    let token = unique("auto");
    let (id, _hs) = web(&ct, &["--name", "auto", "-p", "80"], &token);
    let (host_ip, port) = port_binding(&ct, &id, "80/tcp");
    assert_eq!(host_ip, "0.0.0.0");
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .unwrap_or_else(|| panic!("HostPort {port:?} is not a port number"));
    let row = ct.ps_row("auto").expect("auto in ps");
    assert_eq!(row.ports, format!("0.0.0.0:{port}->80/tcp"), "{row:?}");
    assert_serves(
        ct.netns(),
        localhost(port),
        &token,
        "host → 127.0.0.1:<picked>",
    );
    finish(ct);
}

/// `-p 80` never picks a port that another container publishes (carton's DNAT rules hold no
/// socket, so the kernel's idea of a free port is not enough). To make the case certain, the
/// fixture's ephemeral range is narrowed to two ports (a per-namespace sysctl) and the port
/// the kernel hands out for a bind to port 0 is published by a first container: a second
/// `-p 80` must get the other port.
#[test]
fn publish_without_host_port_skips_ports_other_containers_publish() {
    let Some(ct) = fixture() else { return };
    let (ok, out) = ct.netns().command(
        "sh",
        &[
            "-c",
            "echo 40000 40001 > /proc/sys/net/ipv4/ip_local_port_range",
        ],
    );
    assert!(ok, "narrow the ephemeral port range: {out}");
    let probed: BTreeSet<u16> = ct.netns().run(|| {
        (0..8)
            .map(|_| {
                TcpListener::bind("0.0.0.0:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .expect("bind port 0")
            })
            .collect()
    });
    // This kernel picks one port every time (odd first): publish that one. (Where the pick is
    // random, the test still passes for a correct carton.)
    let taken = *probed.iter().next_back().expect("a port");
    let free = if taken == 40000 { 40001 } else { 40000 };
    idle(&ct, &["--name", "holder", "-p", &format!("{taken}:80")]);
    let out = ct
        .run([
            "-d",
            "--name",
            "picker",
            "-p",
            "80",
            "busybox",
            "sh",
            "-c",
            IDLE_UNTIL_TERM,
        ])
        .output();
    assert!(
        out.status.success(),
        "`run -p 80` with port {free} free (and {taken} published by another container) \
         failed: {}",
        text(&out)
    );
    let (_, port) = port_binding(&ct, "picker", "80/tcp");
    assert_eq!(port, free.to_string(), "the only free port of the range");
    finish(ct);
}

/// Which host address a `-p IP:HOST:CTR` names.
#[derive(Debug, Clone, Copy)]
enum HostIp {
    /// `127.0.0.1`: reachable from the host through 127.0.0.1 only.
    Loopback,
    /// The host's address on the remote link: from the remote host and the host itself.
    HostAddress,
    /// `0.0.0.0`, spelled out: every address, as without an IP.
    Unspecified,
}

/// `-p IP:8080:80` publishes on that host address only: reachable where it should be, refused
/// elsewhere; `ps` and `inspect` show the address.
#[rstest]
#[case::loopback(HostIp::Loopback)]
#[case::host_address(HostIp::HostAddress)]
#[case::unspecified(HostIp::Unspecified)]
fn published_port_on_a_host_address(#[case] which: HostIp) {
    let Some(ct) = fixture() else { return };
    let remote = RemoteHost::connect(&ct);
    let ip = match which {
        HostIp::Loopback => Ipv4Addr::LOCALHOST,
        HostIp::HostAddress => remote.host_addr(),
        HostIp::Unspecified => Ipv4Addr::UNSPECIFIED,
    };
    let token = unique("on-ip");
    let spec = format!("{ip}:8080:80");
    let (id, _hs) = web(&ct, &["--name", "web", "-p", &spec], &token);
    assert_eq!(
        ct.ps_row("web").unwrap().ports,
        format!("{ip}:8080->80/tcp")
    );
    assert_eq!(
        port_binding(&ct, &id, "80/tcp"),
        (ip.to_string(), "8080".into())
    );

    let from_remote = SocketAddrV4::new(remote.host_addr(), 8080);
    let (remote_ok, own_ok, local_ok) = match which {
        HostIp::Loopback => (false, false, true),
        HostIp::HostAddress => (true, true, false),
        HostIp::Unspecified => (true, true, true),
    };
    let paths = [
        (
            remote.netns(),
            from_remote,
            remote_ok,
            "remote host → host:8080",
        ),
        (
            ct.netns(),
            from_remote,
            own_ok,
            "host → its own address:8080",
        ),
        (
            ct.netns(),
            localhost(8080),
            local_ok,
            "host → 127.0.0.1:8080",
        ),
    ];
    for (ns, to, reachable, what) in paths {
        if reachable {
            assert_serves(ns, to, &token, &format!("{what} with -p {spec}"));
        } else {
            let got = remote::http_get(ns, to, Duration::from_secs(5));
            assert!(
                !got.as_ref().is_ok_and(|r| r.contains(&token)),
                "{what} must not reach the container published on {ip} only: {got:?}"
            );
        }
    }
    finish(ct);
}

/// Several `-p` on one container: every mapping works, `ps` lists them all, and `inspect`
/// lists both host ports of the container port published twice.
#[test]
fn several_mappings_on_one_container() {
    let Some(ct) = fixture() else { return };
    let token = unique("multi");
    let (id, _hs) = web(
        &ct,
        &[
            "--name",
            "multi",
            "-p",
            "8080:80",
            "-p",
            "8081:80",
            "-p",
            "5353:53/udp",
        ],
        &token,
    );
    assert_serves(ct.netns(), localhost(8080), &token, "127.0.0.1:8080");
    assert_serves(ct.netns(), localhost(8081), &token, "127.0.0.1:8081");
    let row = ct.ps_row("multi").unwrap();
    let shown: BTreeSet<&str> = row.ports.split(", ").collect();
    assert_eq!(
        shown,
        BTreeSet::from([
            "0.0.0.0:8080->80/tcp",
            "0.0.0.0:8081->80/tcp",
            "0.0.0.0:5353->53/udp"
        ]),
        "ps PORTS: {:?}",
        row.ports
    );
    let inspect = ct.inspect(&id);
    for (section, key) in [("NetworkSettings", "Ports"), ("HostConfig", "PortBindings")] {
        let bindings = &inspect[section][key]["80/tcp"];
        let ports: BTreeSet<&str> = bindings
            .as_array()
            .map(|a| a.iter().filter_map(|b| b["HostPort"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            ports,
            BTreeSet::from(["8080", "8081"]),
            "{section}.{key}[\"80/tcp\"] must list both host ports: {}",
            inspect[section][key]
        );
    }
    finish(ct);
}

/// With the FORWARD policy at DROP (as on hosts running docker or a firewall), carton's own
/// FORWARD rules still let a container reach the remote host through NAT and let the remote
/// host reach a published port.
#[test]
fn forward_policy_drop_still_forwards_carton_traffic() {
    let Some(ct) = fixture() else { return };
    let (ok, out) = ct.netns().command("iptables", &["-P", "FORWARD", "DROP"]);
    assert!(ok, "iptables -P FORWARD DROP: {out}");
    let remote = RemoteHost::connect(&ct);
    let token = unique("drop");
    web(&ct, &["--name", "web", "-p", "8080:80"], &token);
    assert_serves(
        remote.netns(),
        SocketAddrV4::new(remote.host_addr(), 8080),
        &token,
        "remote host → published port with FORWARD policy DROP",
    );
    let out = ct
        .run([
            "--rm",
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "10",
            &remote.addr().to_string(),
        ])
        .output();
    assert!(
        out.status.success(),
        "container → remote host with FORWARD policy DROP: {}",
        text(&out)
    );
    let rules = iptables(&ct);
    assert!(
        rules.contains(":FORWARD DROP"),
        "the policy was changed back:\n{rules}"
    );
    finish(ct);
}

// ---------------------------------------------------------------------------------------------
// host and none
// ---------------------------------------------------------------------------------------------

/// `--network host`: the fixture's namespace and all its interfaces (a carton bridge
/// included); no veth, no address allocated anywhere.
#[test]
fn network_host_shares_the_fixture_interfaces() {
    let Some(ct) = fixture() else { return };
    network_create(&ct, &["--subnet", "172.28.3.0/24", "side"]);
    let before = ct.netns().interfaces();
    assert!(
        before.len() > 1,
        "the fixture should have a bridge: {before:?}"
    );
    let out = ct.run_ok([
        "--name",
        "hostmode",
        "--network",
        "host",
        "busybox",
        "sh",
        "-c",
        "readlink /proc/self/ns/net; cat /proc/net/dev",
    ]);
    let (ns, dev) = out.split_once('\n').expect("two parts");
    assert_eq!(
        ns.trim(),
        ct.netns().id(),
        "not the fixture's network namespace"
    );
    let seen: Vec<String> = conformance::host::interfaces_in_proc_net_dev(dev)
        .into_iter()
        .collect();
    assert_eq!(seen, before, "interfaces seen with --network host");
    assert_eq!(
        ct.netns().interfaces(),
        before,
        "interfaces changed on the host"
    );
    let inspect = ct.inspect("hostmode");
    assert_eq!(inspect["HostConfig"]["NetworkMode"], "host");
    assert_eq!(inspect["NetworkSettings"]["IPAddress"], "", "{inspect}");
    assert!(network(&ct, "side").containers().is_empty());
    finish(ct);
}

/// `--network none`: only `lo`, up; nothing on the host side; no allocation.
#[test]
fn network_none_has_only_loopback() {
    let Some(ct) = fixture() else { return };
    let before = ct.netns().interfaces();
    let id = idle(&ct, &["--name", "nonet", "--network", "none"]);
    let out = exec_ok(
        &ct,
        "nonet",
        &[
            "sh",
            "-c",
            "cat /proc/net/dev; echo ---; ip -o link show lo",
        ],
    );
    let (dev, lo) = out.split_once("---").unwrap();
    let seen = conformance::host::interfaces_in_proc_net_dev(dev);
    assert_eq!(seen, BTreeSet::from(["lo".to_string()]), "{dev}");
    assert!(
        lo.contains(",UP") || lo.contains("<UP"),
        "lo is not up: {lo}"
    );
    assert_eq!(
        ct.netns().interfaces(),
        before,
        "interfaces appeared on the host"
    );
    let inspect = ct.inspect(&id);
    assert_eq!(inspect["HostConfig"]["NetworkMode"], "none");
    assert_eq!(inspect["NetworkSettings"]["IPAddress"], "", "{inspect}");
    assert_eq!(ct.ps_row("nonet").unwrap().ports, "");
    finish(ct);
}

// ---------------------------------------------------------------------------------------------
// Release and reuse
// ---------------------------------------------------------------------------------------------

/// After `rm -f` of a running container with a published port: its veth is gone, no rule
/// mentions its address, port or veth, `network inspect` no longer lists it, the other
/// container is untouched — and its address is handed out again to the next container.
#[test]
fn rm_releases_veth_rules_and_address() {
    let Some(ct) = fixture() else { return };
    let token = unique("gone");
    let (gone, _hs) = web(&ct, &["--name", "gone", "-p", "8080:80"], &token);
    let stays = idle(&ct, &["--name", "stays", "-p", "9090:90"]);
    let (ip, veth) = (address_of(&ct, "gone"), host_end_of(&ct, "gone"));
    let (ip_stays, veth_stays) = (address_of(&ct, "stays"), host_end_of(&ct, "stays"));
    let before = iptables(&ct);
    assert!(
        !rules_mentioning(&before, &[&ip.to_string()]).is_empty(),
        "{before}"
    );
    assert_serves(ct.netns(), localhost(8080), &token, "before rm");

    ct.cmd().args(["rm", "-f", "gone"]).assert().success();

    assert_eq!(host_link(&ct, &veth), None, "veth {veth} left after rm");
    let rules = iptables(&ct);
    let left = rules_mentioning(&rules, &[&ip.to_string(), "8080", &veth, &gone[..12]]);
    assert!(left.is_empty(), "rules left after rm: {left:#?}\n{rules}");
    let listed: Vec<String> = network(&ct, "bridge")
        .containers()
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(
        listed,
        std::slice::from_ref(&stays),
        "network inspect after rm"
    );
    assert!(
        host_link(&ct, &veth_stays).is_some(),
        "the other container's veth went too"
    );
    assert!(
        !dnat_rules(&rules, 9090, ip_stays, 90).is_empty(),
        "the other container's rule went too:\n{rules}"
    );

    idle(&ct, &["--name", "next"]);
    assert_eq!(
        address_of(&ct, "next"),
        ip,
        "the released address {ip} is handed out again (lowest free)"
    );
    assert_eq!(eth0_of(&ct, "next").0, ip);
    finish(ct);
}

/// A foreground `run` returns without waiting for the kernel to remove the container's veth
/// (it goes with the container's network namespace); until it is gone its address is not
/// handed out, since the dying `eth0` could still answer for it. When something else keeps
/// that namespace alive — here the test holds it open, as a stray fd or `ip netns attach`
/// would — carton removes the veth itself once its grace period ([`VETH_GRACE`]) is over, and
/// the address is free again.
#[test]
fn foreground_container_leaves_its_veth_to_the_kernel_and_its_address_waits() {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script = format!("{SYNC_SH} s ready; w go");
    let volume = hs.volume();
    let fg = ct
        .cmd()
        .args(["run", "--rm", "--name", "fg", "-v", &volume])
        .args(["busybox", "sh", "-c", &script])
        .spawn();
    hs.wait_for("ready");
    let (ip, veth) = (address_of(&ct, "fg"), host_end_of(&ct, "fg"));
    let init = ct.init_process("fg");
    let held = std::fs::File::open(format!("/proc/{}/ns/net", init.pid))
        .unwrap_or_else(|e| panic!("open the network namespace of {init}: {e}"));
    // carton starts the grace period after this (when the container is gone) and before
    // `fg` exits: the two instants bound it from both sides.
    let released = Instant::now();
    hs.release("go");
    let out = fg.wait();
    let exited = Instant::now();
    assert!(out.status.success(), "fg: {}", text(&out));
    assert!(
        host_link(&ct, &veth).is_some(),
        "veth {veth} is gone although its namespace is held open"
    );

    idle(&ct, &["--name", "next"]);
    let next = address_of(&ct, "next");
    if next == ip {
        assert_eq!(
            host_link(&ct, &veth),
            None,
            "{ip} was handed out again while its old veth {veth} is still on the bridge"
        );
    }
    if released.elapsed() < VETH_GRACE {
        // `next` was placed within the grace period: the address had to wait.
        assert_ne!(
            next, ip,
            "{ip} was handed out again within the grace period"
        );
        assert!(
            host_link(&ct, &veth).is_some(),
            "veth {veth} was removed within its grace period"
        );
    } else {
        eprintln!("this machine took over {VETH_GRACE:?} to start `next`: grace not observed");
    }
    std::thread::sleep(VETH_GRACE.saturating_sub(exited.elapsed()) + Duration::from_millis(200));
    idle(&ct, &["--name", "third"]);
    assert_eq!(
        host_link(&ct, &veth),
        None,
        "veth {veth} outlived its grace period and carton did not remove it"
    );
    if next != ip {
        assert_eq!(
            address_of(&ct, "third"),
            ip,
            "{ip} is free again (lowest free) once its veth is gone"
        );
        assert_eq!(eth0_of(&ct, "third").0, ip);
    }
    drop(held);

    // Without anyone holding the namespace, the kernel removes the veth by itself.
    let out = ct
        .cmd()
        .args(["run", "--rm", "--name", "brief", "busybox", "true"])
        .output();
    assert!(out.status.success(), "brief: {}", text(&out));
    ct.cmd()
        .args(["rm", "-f", "next", "third"])
        .assert()
        .success();
    let left = veths_settled(&ct);
    assert!(left.is_empty(), "veths left: {left:?}");
    finish(ct);
}

/// `network rm`: the bridge is deleted and no rule mentions it or its subnet; other networks'
/// rules stay. Once the last network is removed (the default one too), nothing of carton is
/// left in the firewall: no rule, no `CARTON-*` chain, no jump to one from a built-in chain —
/// and the next container creates the default network, chains and jumps again.
#[test]
fn network_rm_leaves_no_bridge_and_no_rule() {
    let Some(ct) = fixture() else { return };
    network_create(&ct, &["--subnet", "172.28.4.0/24", "tmp"]);
    let net = network(&ct, "tmp");
    let keep = unique("keep");
    web(&ct, &["--name", "keep", "-p", "8080:80"], &keep);
    let token = unique("tmp");
    web(
        &ct,
        &["--name", "tmpweb", "--network", "tmp", "-p", "8081:80"],
        &token,
    );
    assert_serves(
        ct.netns(),
        localhost(8081),
        &token,
        "tmp network's published port",
    );
    assert!(
        host_link(&ct, &net.bridge).is_some(),
        "no bridge {}",
        net.bridge
    );

    ct.cmd().args(["rm", "-f", "tmpweb"]).assert().success();
    let out = ct.cmd().args(["network", "rm", "tmp"]).stdout_ok();
    assert_eq!(lines(&out), ["tmp"], "network rm prints the reference");

    assert_eq!(
        host_link(&ct, &net.bridge),
        None,
        "bridge {} left",
        net.bridge
    );
    let rules = iptables(&ct);
    let subnet = net.subnet.to_string();
    let left = rules_mentioning(&rules, &[&net.bridge, &subnet, "8081"]);
    assert!(
        left.is_empty(),
        "rules left after network rm: {left:#?}\n{rules}"
    );
    let names = ct.cmd().args(["network", "ls"]).stdout_ok();
    assert!(!names.contains(" tmp "), "still listed:\n{names}");
    assert!(
        try_network(&ct, "tmp").is_err(),
        "network inspect still finds it"
    );
    // The default network and its published port are untouched.
    assert_serves(
        ct.netns(),
        localhost(8080),
        &keep,
        "default network after network rm",
    );

    ct.cmd().args(["rm", "-f", "keep"]).assert().success();
    let default = network(&ct, "bridge");
    let out = ct.cmd().args(["network", "rm", "bridge"]).stdout_ok();
    assert_eq!(lines(&out), ["bridge"], "network rm prints the reference");
    assert!(
        lines(&ct.cmd().args(["network", "ls", "-q"]).stdout_ok()).is_empty(),
        "networks listed after the last one was removed"
    );
    assert_eq!(
        host_link(&ct, &default.bridge),
        None,
        "bridge {} left",
        default.bridge
    );
    let rules = iptables(&ct);
    let left = rules_mentioning(&rules, &["CARTON"]);
    assert!(
        left.is_empty(),
        "carton's chains or jumps left after the last network was removed: {left:#?}\n{rules}"
    );
    // The next container brings the default network, its chains and its jumps back.
    let again = unique("again");
    web(&ct, &["--name", "again", "-p", "8080:80"], &again);
    assert_serves(
        ct.netns(),
        localhost(8080),
        &again,
        "the default network created again",
    );
    finish(ct);
}

/// 20 containers started at once (`run -d`, in parallel, the default network created by
/// whichever comes first) get 20 distinct addresses of the subnet, none reserved; each `eth0`
/// has the address carton reports.
#[test]
fn twenty_parallel_containers_get_distinct_addresses() {
    let Some(ct) = fixture() else { return };
    const N: usize = 20;
    let barrier = Arc::new(Barrier::new(N));
    let cmds: Vec<CartonCmd> = (0..N)
        .map(|_| {
            let mut cmd = ct.run(["-d", "busybox", "sh", "-c", IDLE_UNTIL_TERM]);
            cmd.timeout(DEADLINE * 4);
            cmd
        })
        .collect();
    let threads: Vec<_> = cmds
        .into_iter()
        .map(|mut cmd| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                cmd.try_output()
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut failures = Vec::new();
    for t in threads {
        match t.join().expect("thread") {
            Ok(out) if out.status.success() => {
                ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
            Ok(out) => failures.push(text(&out)),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "parallel runs failed:\n{}",
        failures.join("\n---\n")
    );
    let net = network(&ct, "bridge");
    let mut addresses = BTreeSet::new();
    for id in &ids {
        let ip = address_of(&ct, id);
        assert!(net.subnet.contains(ip), "{ip} not in {}", net.subnet);
        assert!(
            ![net.subnet.network(), net.subnet.broadcast(), net.gateway].contains(&ip),
            "reserved address {ip} handed out"
        );
        assert_eq!(
            eth0_of(&ct, id).0,
            ip,
            "eth0 of {id} disagrees with inspect"
        );
        addresses.insert(ip);
    }
    assert_eq!(
        addresses.len(),
        N,
        "addresses are not distinct: {addresses:?}"
    );
    let listed: BTreeSet<String> = net.containers().into_iter().map(|c| c.2).collect();
    let expected: BTreeSet<String> = addresses
        .iter()
        .map(|ip| format!("{ip}/{}", net.subnet.prefix))
        .collect();
    assert_eq!(listed, expected, "network inspect disagrees");
    assert_eq!(veths(&ct).len(), N, "veths on the host: {:?}", veths(&ct));
    finish(ct);
}

/// A /29 network (gateway .1) hands out .2 to .6 in order, never the network or broadcast
/// address, then refuses the next container with exit 125 and nothing half-created.
#[test]
fn small_subnet_is_used_up_without_network_or_broadcast_address() {
    let Some(ct) = fixture() else { return };
    network_create(&ct, &["--subnet", "172.28.6.0/29", "tiny"]);
    let net = network(&ct, "tiny");
    assert_eq!(net.gateway, net.subnet.nth(1));
    let mut got = Vec::new();
    for _ in 0..5 {
        let id = idle(&ct, &["--network", "tiny"]);
        got.push(address_of(&ct, &id));
    }
    let expected: Vec<Ipv4Addr> = (2..=6).map(|n| net.subnet.nth(n)).collect();
    assert_eq!(got, expected, "addresses handed out in /29");
    let stderr = assert_refused(
        &ct,
        &[
            "run",
            "-d",
            "--network",
            "tiny",
            "busybox",
            "sh",
            "-c",
            IDLE_UNTIL_TERM,
        ],
        &["address"],
    );
    eprintln!("exhausted: {stderr}");
    finish(ct);
}

/// `stop` releases the container's address, rules and veth (another container may take the
/// address); `start` puts it back on the network with a fresh, unique address, its veth and
/// its published port, which works again.
#[test]
fn stop_releases_rules_and_address_and_start_reattaches() {
    let Some(ct) = fixture() else { return };
    let token = unique("restart");
    let (id, hs) = web(&ct, &["--name", "web", "-p", "8080:80"], &token);
    let ip = address_of(&ct, "web");
    let veth = host_end_of(&ct, "web");
    assert_serves(ct.netns(), localhost(8080), &token, "before stop");

    ct.cmd().args(["stop", "web"]).assert().success();
    ct.wait_exited("web");
    assert_eq!(host_link(&ct, &veth), None, "veth {veth} left after stop");
    let rules = iptables(&ct);
    let left = rules_mentioning(&rules, &[&ip.to_string(), "8080"]);
    assert!(left.is_empty(), "rules left after stop: {left:#?}\n{rules}");
    assert!(
        network(&ct, "bridge").containers().is_empty(),
        "a stopped container keeps its allocation"
    );
    assert_eq!(
        ct.ps_row("web").unwrap().ports,
        "",
        "PORTS of a stopped container"
    );
    let settings = &ct.inspect(&id)["NetworkSettings"];
    assert_eq!(
        settings["IPAddress"], "",
        "a stopped container has no address: {settings}"
    );

    // The address is free: the next container gets it.
    idle(&ct, &["--name", "taker"]);
    assert_eq!(
        address_of(&ct, "taker"),
        ip,
        "the released address is handed out again"
    );

    std::fs::remove_file(hs.dir().join("ready")).unwrap();
    ct.cmd().args(["start", "web"]).assert().success();
    hs.wait_for("ready");
    let again = address_of(&ct, "web");
    let net = network(&ct, "bridge");
    assert!(net.subnet.contains(again));
    assert_ne!(
        again, ip,
        "start handed out the address another container holds"
    );
    assert_eq!(eth0_of(&ct, "web").0, again);
    assert_eq!(ct.ps_row("web").unwrap().ports, "0.0.0.0:8080->80/tcp");
    let rules = iptables(&ct);
    assert!(
        !dnat_rules(&rules, 8080, again, 80).is_empty(),
        "no DNAT 8080 → {again}:80 after start:\n{rules}"
    );
    assert_serves(ct.netns(), localhost(8080), &token, "after start");
    assert_serves(
        ct.netns(),
        SocketAddrV4::new(again, 80),
        &token,
        "host → container after start",
    );
    let hosts = exec_ok(&ct, "web", &["cat", "/etc/hosts"]);
    let last = hosts
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        last.starts_with(&format!("{again}\t")),
        "/etc/hosts after start must name the new address {again}:\n{hosts}"
    );
    finish(ct);
}

/// `start` of a stopped container whose host port another container took meanwhile is
/// refused (125, the port named); the other container's mapping keeps working and the refused
/// one holds no address.
#[test]
fn start_refuses_a_host_port_taken_meanwhile() {
    let Some(ct) = fixture() else { return };
    let (first, second) = (unique("first"), unique("second"));
    web(&ct, &["--name", "first", "-p", "8080:80"], &first);
    ct.cmd().args(["stop", "first"]).assert().success();
    web(&ct, &["--name", "second", "-p", "8080:80"], &second);
    let ip = address_of(&ct, "second");
    let before = net_state(&ct);
    let out = ct.cmd().args(["start", "first"]).output();
    assert_eq!(out.status.code(), Some(EXIT_CARTON_ERROR), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("8080"),
        "the message should name the port: {}",
        text(&out)
    );
    assert_same_net_state(&before, &net_state(&ct), "after the refused start");
    assert_eq!(ct.state("first")["Running"], false);
    assert_serves(
        ct.netns(),
        localhost(8080),
        &second,
        "the second container's mapping",
    );
    assert_eq!(address_of(&ct, "second"), ip);
    finish(ct);
}

/// A container that fails to start (its command does not exist: 127) releases what its start
/// reserved: address, published port rules and veth; the port is then free for another one.
#[rstest]
#[case::foreground(false)]
#[case::detached(true)]
fn failed_start_releases_address_and_ports(#[case] detached: bool) {
    let Some(ct) = fixture() else { return };
    first_container(&ct);
    let before = net_state(&ct);
    let mut args = vec!["run"];
    if detached {
        args.push("-d");
    }
    args.extend(["-p", "8080:80", "busybox", "nosuchcommand"]);
    let out = ct.cmd().args(&args).output();
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert_same_net_state(&before, &net_state(&ct), "after the failed start");
    let token = unique("after");
    web(&ct, &["-p", "8080:80"], &token);
    assert_serves(
        ct.netns(),
        localhost(8080),
        &token,
        "the port after the failed start",
    );
    finish(ct);
}

/// When a container's supervisor is killed (SIGKILL: no clean-up of its own), the container
/// dies with it; `rm` then releases its veth, rules and address like any other.
#[test]
fn rm_after_the_supervisor_died_releases_everything() {
    let Some(ct) = fixture() else { return };
    let token = unique("orphan");
    let (id, _hs) = web(&ct, &["--name", "orphan", "-p", "8080:80"], &token);
    let ip = address_of(&ct, "orphan");
    let init = ct.init_process(&id);
    let supervisor = conformance::containers::supervisor_of(&init);
    assert!(supervisor.signal(nix::sys::signal::Signal::SIGKILL));
    assert!(
        init.wait_dead(DEADLINE),
        "the container outlived its supervisor"
    );
    ct.cmd().args(["rm", "-f", "orphan"]).assert().success();
    assert!(veths(&ct).is_empty(), "veths left: {:?}", veths(&ct));
    let rules = iptables(&ct);
    let left = rules_mentioning(&rules, &[&ip.to_string(), "8080"]);
    assert!(left.is_empty(), "rules left: {left:#?}");
    assert!(network(&ct, "bridge").containers().is_empty());
    let again = unique("again");
    web(&ct, &["--name", "again", "-p", "8080:80"], &again);
    assert_eq!(
        address_of(&ct, "again"),
        ip,
        "the address is handed out again"
    );
    assert_serves(
        ct.netns(),
        localhost(8080),
        &again,
        "the port is free again",
    );
    finish(ct);
}

// ---------------------------------------------------------------------------------------------
// Network management
// ---------------------------------------------------------------------------------------------

/// One row of `network ls`.
#[derive(Debug, PartialEq, Eq)]
struct NetRow {
    id: String,
    name: String,
    driver: String,
    subnet: String,
    bridge: String,
}

#[track_caller]
fn network_ls(ct: &Carton) -> Vec<NetRow> {
    let out = ct.cmd().args(["network", "ls"]).stdout_ok();
    let mut rows = out.lines();
    let header = rows.next().unwrap_or_default();
    let starts: Vec<usize> = ["NETWORK ID", "NAME", "DRIVER", "SUBNET", "BRIDGE"]
        .iter()
        .map(|c| {
            header
                .find(c)
                .unwrap_or_else(|| panic!("`network ls` header lacks {c:?}: {header:?}"))
        })
        .collect();
    rows.filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cell = |i: usize| {
                let end = starts.get(i + 1).copied().unwrap_or(l.len()).min(l.len());
                l.get(starts[i].min(l.len())..end)
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            NetRow {
                id: cell(0),
                name: cell(1),
                driver: cell(2),
                subnet: cell(3),
                bridge: cell(4),
            }
        })
        .collect()
}

/// `network create` (explicit subnet and gateway; and from the pool), `ls`, `ls -q`,
/// `inspect` of several, a container on it, then `network rm` of both: every view agrees at
/// each step, and the bridge comes and goes with the network.
#[test]
fn network_create_ls_inspect_rm_round_trip() {
    let Some(ct) = fixture() else { return };
    let alpha_id = network_create(
        &ct,
        &[
            "--driver",
            "bridge",
            "--subnet",
            "172.28.5.0/24",
            "--gateway",
            "172.28.5.254",
            "alpha",
        ],
    );
    let beta_id = network_create(&ct, &["beta"]);
    let (alpha, beta) = (network(&ct, "alpha"), network(&ct, "beta"));

    assert_eq!(alpha.id, alpha_id);
    assert_eq!(alpha.raw["Name"], "alpha");
    assert_eq!(alpha.raw["Driver"], "bridge");
    assert_eq!(alpha.raw["Scope"], "local");
    assert_eq!(alpha.subnet.to_string(), "172.28.5.0/24");
    assert_eq!(alpha.gateway, Ipv4Addr::new(172, 28, 5, 254));
    assert!(alpha.containers().is_empty());
    assert_eq!(beta.id, beta_id);
    assert!(
        !beta.subnet.overlaps(&alpha.subnet),
        "pool subnet {} overlaps",
        beta.subnet
    );
    assert_eq!(
        beta.gateway,
        beta.subnet.nth(1),
        "default gateway = first host address"
    );
    assert_ne!(alpha.bridge, beta.bridge);

    let rows = network_ls(&ct);
    for (net, name) in [(&alpha, "alpha"), (&beta, "beta")] {
        let expected = NetRow {
            id: net.id[..12].to_string(),
            name: name.into(),
            driver: "bridge".into(),
            subnet: net.subnet.to_string(),
            bridge: net.bridge.clone(),
        };
        assert!(
            rows.contains(&expected),
            "`network ls` lacks {expected:?}: {rows:?}"
        );
        let addr = remote::ip(
            ct.netns(),
            &["-o", "-4", "addr", "show", "dev", &net.bridge],
        )
        .unwrap_or_else(|e| panic!("bridge of {name}: {e}"));
        assert_eq!(inet_addresses(&addr), [(net.gateway, net.subnet.prefix)]);
    }
    let quiet = lines(&ct.cmd().args(["network", "ls", "-q"]).stdout_ok());
    assert!(
        quiet.contains(&alpha.id[..12].to_string()) && quiet.contains(&beta.id[..12].to_string())
    );
    let both: Value = serde_json::from_str(
        &ct.cmd()
            .args(["network", "inspect", "alpha", "beta"])
            .stdout_ok(),
    )
    .expect("JSON");
    let names: Vec<&str> = both
        .as_array()
        .expect("array")
        .iter()
        .map(|n| n["Name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);

    let cid = idle(&ct, &["--name", "member", "--network", "alpha"]);
    let settings = &ct.inspect(&cid)["NetworkSettings"];
    let ip = address_of(&ct, &cid);
    assert!(alpha.subnet.contains(ip) && ip != alpha.gateway, "{ip}");
    assert_eq!(
        settings["Networks"]["alpha"]["NetworkID"], alpha_id,
        "{settings}"
    );
    assert_eq!(settings["Gateway"], "172.28.5.254");
    let routes = exec_ok(&ct, "member", &["ip", "-4", "route", "show"]);
    assert!(
        routes.contains("default via 172.28.5.254 dev eth0"),
        "{routes}"
    );
    assert_eq!(
        network(&ct, "alpha").containers(),
        [(cid.clone(), "member".into(), format!("{ip}/24"))]
    );
    ct.cmd().args(["rm", "-f", "member"]).assert().success();

    let out = ct
        .cmd()
        .args(["network", "rm", "alpha", "beta"])
        .stdout_ok();
    assert_eq!(lines(&out), ["alpha", "beta"]);
    let rows = network_ls(&ct);
    assert!(
        rows.iter().all(|r| r.name != "alpha" && r.name != "beta"),
        "still listed: {rows:?}"
    );
    let out = ct.cmd().args(["network", "inspect", "alpha"]).output();
    assert_eq!(out.status.code(), Some(EXIT_CARTON_ERROR), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("alpha"),
        "{}",
        text(&out)
    );
    for net in [&alpha, &beta] {
        assert_eq!(
            host_link(&ct, &net.bridge),
            None,
            "bridge {} left",
            net.bridge
        );
    }
    finish(ct);
}

/// Networks created in parallel without `--subnet` get distinct, non-overlapping subnets of
/// the pool and distinct bridges, all present.
#[test]
fn parallel_network_creates_get_distinct_subnets() {
    let Some(ct) = fixture() else { return };
    const N: usize = 4;
    let barrier = Arc::new(Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let mut cmd = ct.cmd();
            cmd.args(["network", "create", &format!("par{i}")]);
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                cmd.try_output()
            })
        })
        .collect();
    for t in threads {
        let out = t.join().expect("thread").unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{}", text(&out));
    }
    let nets: Vec<Net> = (0..N).map(|i| network(&ct, &format!("par{i}"))).collect();
    for (i, a) in nets.iter().enumerate() {
        assert!(
            host_link(&ct, &a.bridge).is_some(),
            "bridge {} missing",
            a.bridge
        );
        for b in &nets[i + 1..] {
            assert!(
                !a.subnet.overlaps(&b.subnet),
                "{} overlaps {}",
                a.subnet,
                b.subnet
            );
            assert_ne!(a.bridge, b.bridge);
        }
    }
    finish(ct);
}

/// How the container of [`network_rm_is_refused_while_a_container_uses_it`] uses the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Running,
    Stopped,
    /// Stopped, configured with `--network <id prefix>` rather than the name (docker accepts
    /// either, and so does carton's `run`).
    StoppedById,
}

/// `network rm` is refused (125, "in use", the container named) while a container is
/// configured with the network, running or stopped, and changes nothing; once the container is
/// removed it succeeds.
#[rstest]
#[case::running(Use::Running)]
#[case::stopped(Use::Stopped)]
#[case::stopped_by_id(Use::StoppedById)]
fn network_rm_is_refused_while_a_container_uses_it(#[case] how: Use) {
    let Some(ct) = fixture() else { return };
    let id = network_create(&ct, &["--subnet", "172.28.8.0/24", "busy"]);
    let token = unique("busy");
    match how {
        Use::Running => {
            web(&ct, &["--name", "user", "--network", "busy"], &token);
        }
        Use::Stopped => {
            ct.run_ok(["--name", "user", "--network", "busy", "busybox", "true"]);
        }
        Use::StoppedById => {
            ct.run_ok(["--name", "user", "--network", &id[..12], "busybox", "true"]);
        }
    }
    if how != Use::Running {
        // The foreground run left its veth to the kernel: let it go before comparing.
        let left = veths_settled(&ct);
        assert!(
            left.is_empty(),
            "veths left by a finished container: {left:?}"
        );
    }
    let stderr = assert_refused(&ct, &["network", "rm", "busy"], &["in use"]);
    assert!(
        stderr.contains("user"),
        "the message should name the container: {stderr:?}"
    );
    if how == Use::Running {
        let ip = address_of(&ct, "user");
        assert_serves(
            ct.netns(),
            SocketAddrV4::new(ip, 80),
            &token,
            "after the refusal",
        );
    } else {
        // The container can still be started on its network.
        ct.cmd().args(["start", "user"]).assert().success();
        ct.wait_exited("user");
    }
    ct.cmd().args(["rm", "-f", "user"]).assert().success();
    ct.cmd().args(["network", "rm", "busy"]).assert().success();
    assert!(try_network(&ct, "busy").is_err());
    finish(ct);
}

// ---------------------------------------------------------------------------------------------
// /etc/hosts and /etc/resolv.conf
// ---------------------------------------------------------------------------------------------

/// /etc/hosts of a bridged container has localhost and ends with `<ip>\t<hostname> <name>`
/// (the hostname defaults to the 12-hex short id); with `--hostname`, the line starts with
/// the address and that hostname and also names the container.
#[rstest]
#[case::default_hostname(None)]
#[case::explicit_hostname(Some("box1"))]
fn etc_hosts_names_the_container(#[case] hostname: Option<&str>) {
    let Some(ct) = fixture() else { return };
    let mut args = vec!["--name", "named"];
    if let Some(h) = hostname {
        args.extend(["--hostname", h]);
    }
    args.extend([
        "busybox",
        "sh",
        "-c",
        "cat /etc/hosts; echo ---; hostname; echo ---; ip -o -4 addr show dev eth0",
    ]);
    let out = ct.run_ok(&args);
    let parts: Vec<&str> = out.split("---\n").collect();
    let [hosts, name_out, addr] = parts[..] else {
        panic!("unexpected output: {out:?}");
    };
    let id = ct.only_container_id();
    let expected_hostname = hostname.map_or(id[..12].to_string(), String::from);
    assert_eq!(name_out.trim(), expected_hostname);
    let [(ip, _)] = inet_addresses(addr)[..] else {
        panic!("eth0: {addr:?}");
    };
    assert!(
        hosts
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["127.0.0.1", "localhost"]),
        "no localhost line:\n{hosts}"
    );
    let last = hosts
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default();
    match hostname {
        None => assert_eq!(last, format!("{ip}\t{expected_hostname} named"), "{hosts}"),
        Some(h) => {
            assert!(
                last.starts_with(&format!("{ip}\t{h} ")),
                "last line {last:?}:\n{hosts}"
            );
            assert!(last.split_whitespace().any(|w| w == "named"), "{last:?}");
        }
    }
    finish(ct);
}

/// Runs `carton run ARGS` in a private mount namespace (inside the fixture's network
/// namespace) where /etc/resolv.conf is `resolv`: carton reads the host's resolvers from there.
/// The real /etc/resolv.conf is never touched; the mount vanishes with the namespace.
fn run_with_resolv_conf(ct: &Carton, resolv: &str, args: &[&str]) -> Output {
    let fake = ct.path(&unique("resolv.conf"));
    std::fs::write(&fake, resolv).unwrap();
    let (stdout, stderr) = (ct.path(&unique("stdout")), ct.path(&unique("stderr")));
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"")
        .arg(&fake)
        .arg(ct.bin())
        .arg("--root")
        .arg(ct.root())
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap());
    ct.netns().apply(&mut cmd);
    let mut child = cmd.spawn().expect("spawn unshare");
    let status = wait_within(
        &mut child,
        DEADLINE,
        "carton run with a private resolv.conf",
    );
    Output {
        status,
        stdout: std::fs::read(&stdout).unwrap(),
        stderr: std::fs::read(&stderr).unwrap(),
    }
}

/// /etc/resolv.conf of a bridged container is the host's without loopback nameservers (they
/// cannot be reached from another network namespace); with `--network host` it is the host's
/// as it is. The host's file is played by a bind mount in a private mount namespace, so the
/// case with loopback resolvers is tested whatever this machine has.
#[rstest]
#[case::bridge("bridge")]
#[case::host("host")]
fn resolv_conf_is_the_hosts_without_loopback_nameservers(#[case] mode: &str) {
    let Some(ct) = fixture() else { return };
    let host_resolv = "# written by the test\nsearch example.test\nnameserver 127.0.0.53\n\
                       nameserver 198.51.100.53\nnameserver ::1\nnameserver 127.0.1.1\n\
                       nameserver 203.0.113.53\noptions ndots:2 edns0\n";
    let out = run_with_resolv_conf(
        &ct,
        host_resolv,
        &[
            "--rm",
            "--network",
            mode,
            "busybox",
            "cat",
            "/etc/resolv.conf",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let expected = if mode == "host" {
        host_resolv.to_string()
    } else {
        "# written by the test\nsearch example.test\nnameserver 198.51.100.53\n\
         nameserver 203.0.113.53\noptions ndots:2 edns0\n"
            .to_string()
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected,
        "resolv.conf with --network {mode}"
    );
    finish(ct);
}

/// And with this machine's real /etc/resolv.conf (read, never changed): the same rule.
#[test]
fn resolv_conf_follows_the_real_hosts_file() {
    let Some(ct) = fixture() else { return };
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let expected: String = host
        .lines()
        .filter(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            !(w.first() == Some(&"nameserver")
                && w.get(1)
                    .is_some_and(|a| a.starts_with("127.") || *a == "::1"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let out = ct.run_ok(["--rm", "busybox", "cat", "/etc/resolv.conf"]);
    assert_eq!(out, expected, "host's /etc/resolv.conf was:\n{host}");
    finish(ct);
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

/// Set-up of a refused `network create`.
#[derive(Debug, Clone, Copy)]
enum Before {
    Nothing,
    /// `network create --subnet 172.28.0.0/16 other`
    OtherNetwork,
    /// The default network, created by a first container.
    DefaultNetwork,
}

/// Refused `network create`: exit 125, a clear message, and nothing created (no record, no
/// bridge, no rule). `{default}` stands for a /24 inside the default network's subnet.
#[rstest]
#[case::subnet_with_host_bits(Before::Nothing, &["--subnet", "10.0.0.1/8", "newnet"], &["subnet"])]
#[case::subnet_garbage(Before::Nothing, &["--subnet", "abc", "newnet"], &["subnet"])]
#[case::subnet_bad_prefix(Before::Nothing, &["--subnet", "10.0.0.0/33", "newnet"], &["subnet"])]
#[case::overlaps_other_network(Before::OtherNetwork, &["--subnet", "172.28.5.0/24", "newnet"], &["overlap"])]
#[case::contains_other_network(Before::OtherNetwork, &["--subnet", "172.0.0.0/8", "newnet"], &["overlap"])]
#[case::overlaps_default_network(Before::DefaultNetwork, &["--subnet", "{default}", "newnet"], &["overlap"])]
#[case::gateway_outside(Before::Nothing, &["--subnet", "172.28.9.0/24", "--gateway", "172.28.10.1", "newnet"], &["gateway"])]
#[case::gateway_is_broadcast(Before::Nothing, &["--subnet", "172.28.9.0/24", "--gateway", "172.28.9.255", "newnet"], &["gateway"])]
#[case::gateway_garbage(Before::Nothing, &["--subnet", "172.28.9.0/24", "--gateway", "xyz", "newnet"], &["gateway"])]
#[case::duplicate_name(Before::OtherNetwork, &["other"], &["already exists"])]
#[case::unknown_driver(Before::Nothing, &["--driver", "overlay", "newnet"], &["overlay"])]
#[case::invalid_name(Before::Nothing, &["bad/name"], &["bad/name"])]
#[case::reserved_name_host(Before::Nothing, &["host"], &["host"])]
#[case::reserved_name_none(Before::Nothing, &["none"], &["none"])]
fn bad_network_create_is_refused(
    #[case] before: Before,
    #[case] args: &[&str],
    #[case] messages: &[&str],
) {
    let Some(ct) = fixture() else { return };
    let mut default = String::new();
    match before {
        Before::Nothing => {}
        Before::OtherNetwork => {
            network_create(&ct, &["--subnet", "172.28.0.0/16", "other"]);
        }
        Before::DefaultNetwork => {
            first_container(&ct);
            default = format!("{}/24", network(&ct, "bridge").subnet.nth(5 << 8));
        }
    }
    let mut full = vec!["network", "create"];
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{default}", &default))
        .collect();
    full.extend(args.iter().map(String::as_str));
    assert_refused(&ct, &full, messages);
    finish(ct);
}

/// Refused `run`: exit 125, a clear message, no container running, and no veth, rule,
/// allocation or network record left. The default network exists beforehand (a first
/// container), so any change would show.
#[rstest]
#[case::unknown_network(&["--network", "nosuch"], &["nosuch"])]
#[case::host_port_out_of_range(&["-p", "70000:80"], &["70000"])]
#[case::container_port_out_of_range(&["-p", "8080:70000"], &["70000"])]
#[case::port_garbage(&["-p", "abc"], &["abc"])]
#[case::unknown_protocol(&["-p", "8080:80/sctp"], &["sctp"])]
#[case::publish_with_network_none(&["--network", "none", "-p", "8080:80"], &["none"])]
fn bad_run_is_refused(#[case] flags: &[&str], #[case] messages: &[&str]) {
    let Some(ct) = fixture() else { return };
    first_container(&ct);
    let before = ct.container_ids();
    for detached in [false, true] {
        let mut args = vec!["run"];
        if detached {
            args.push("-d");
        }
        args.extend_from_slice(flags);
        args.extend(["busybox", "sh", "-c", IDLE_UNTIL_TERM]);
        assert_refused(&ct, &args, messages);
        assert_eq!(
            ct.container_ids(),
            before,
            "a container was created by the refused run"
        );
    }
    finish(ct);
}

/// A host port already published by another container is refused (125, the port named),
/// nothing of the second container is set up, and the first one's mapping still works.
#[test]
fn host_port_taken_by_another_container_is_refused() {
    let Some(ct) = fixture() else { return };
    let token = unique("owner");
    web(&ct, &["--name", "owner", "-p", "8080:80"], &token);
    assert_refused(
        &ct,
        &[
            "run",
            "-d",
            "--name",
            "second",
            "-p",
            "8080:80",
            "busybox",
            "sh",
            "-c",
            IDLE_UNTIL_TERM,
        ],
        &["8080"],
    );
    // Also on a specific host address: 0.0.0.0:8080 covers it.
    assert_refused(
        &ct,
        &[
            "run",
            "-d",
            "-p",
            "127.0.0.1:8080:81",
            "busybox",
            "sh",
            "-c",
            IDLE_UNTIL_TERM,
        ],
        &["8080"],
    );
    // The same host port twice in one container.
    assert_refused(
        &ct,
        &[
            "run",
            "-d",
            "-p",
            "8081:80",
            "-p",
            "8081:81",
            "busybox",
            "sh",
            "-c",
            IDLE_UNTIL_TERM,
        ],
        &["8081"],
    );
    assert_serves(
        ct.netns(),
        localhost(8080),
        &token,
        "the first mapping after the refusals",
    );
    finish(ct);
}

/// A host port held by a socket on the host (opened by the test in the fixture's namespace
/// and kept open) is refused, for TCP and UDP; nothing is set up.
#[rstest]
#[case::tcp("tcp")]
#[case::udp("udp")]
fn host_port_taken_by_a_host_socket_is_refused(#[case] protocol: &str) {
    let Some(ct) = fixture() else { return };
    first_container(&ct);
    let (port, _held): (u16, Box<dyn std::any::Any + Send>) = if protocol == "tcp" {
        let l = ct.netns().run(|| TcpListener::bind("0.0.0.0:0")).unwrap();
        (l.local_addr().unwrap().port(), Box::new(l))
    } else {
        let s = ct.netns().run(|| UdpSocket::bind("0.0.0.0:0")).unwrap();
        (s.local_addr().unwrap().port(), Box::new(s))
    };
    let spec = format!("{port}:80/{protocol}");
    assert_refused(
        &ct,
        &[
            "run",
            "-d",
            "-p",
            &spec,
            "busybox",
            "sh",
            "-c",
            IDLE_UNTIL_TERM,
        ],
        &[&port.to_string()],
    );
    // The same port of the other protocol is free.
    let other = if protocol == "tcp" { "udp" } else { "tcp" };
    let free = ct.run_detached([
        "-p",
        &format!("{port}:80/{other}"),
        "busybox",
        "sh",
        "-c",
        IDLE_UNTIL_TERM,
    ]);
    assert_eq!(
        port_binding(&ct, &free, &format!("80/{other}")).1,
        port.to_string()
    );
    finish(ct);
}

/// How a first `run` is made to fail at its attach, before any network exists.
#[derive(Debug, Clone, Copy)]
enum AttachRefusal {
    /// The host port is held by a socket on the host.
    HostSocket,
    /// The container asks for the same host port twice.
    SamePortTwice,
}

/// A refused first `run` on a fresh root (no container ever ran, so no network exists yet)
/// leaves nothing behind: no default network record, no bridge `carton0`, and no rule, chain
/// or jump of carton's in the firewall — the run failed before its network was needed.
#[rstest]
#[case::host_socket(AttachRefusal::HostSocket)]
#[case::same_port_twice(AttachRefusal::SamePortTwice)]
fn refused_first_run_creates_no_default_network(#[case] refusal: AttachRefusal) {
    let Some(ct) = fixture() else { return };
    let listener = ct.netns().run(|| TcpListener::bind("0.0.0.0:0")).unwrap();
    let held = listener.local_addr().unwrap().port().to_string();
    let (publish, port) = match refusal {
        AttachRefusal::HostSocket => (vec!["-p".to_string(), format!("{held}:80")], held),
        AttachRefusal::SamePortTwice => (
            ["-p", "8081:80", "-p", "8081:81"]
                .map(String::from)
                .to_vec(),
            "8081".to_string(),
        ),
    };
    for detached in [false, true] {
        let mut args = vec!["run"];
        if detached {
            args.push("-d");
        }
        args.extend(publish.iter().map(String::as_str));
        args.extend(["busybox", "sh", "-c", IDLE_UNTIL_TERM]);
        assert_refused(&ct, &args, &[&port]);

        let record = ct.root().join("networks").join("bridge.json");
        assert!(
            !record.exists(),
            "the refused run left the default network's record {}",
            record.display()
        );
        assert_eq!(
            host_link(&ct, "carton0"),
            None,
            "the refused run left bridge carton0"
        );
        let rules = iptables(&ct);
        let ours = rules_mentioning(&rules, &["CARTON"]);
        assert!(
            ours.is_empty(),
            "the refused run left carton's firewall: {ours:#?}"
        );
    }
    drop(listener);
    finish(ct);
}
