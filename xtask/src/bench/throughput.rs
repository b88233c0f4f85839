//! Row 5: container-to-container TCP throughput with iperf3 — two carton containers on
//! carton's default bridge vs two bare network namespaces joined by one hand-made veth pair,
//! and, as references, two bare namespaces joined by a plain Linux bridge (what any bridge
//! costs on this kernel, apart from what carton adds) and carton's containers again with the
//! bench namespace's br_netfilter switch off (what the iptables hooks on bridged frames cost).
//!
//! The busybox image has no iperf3, so the benchmark builds a second image: the busybox rootfs
//! plus the host's /usr/bin/iperf3 and the shared libraries `ldd` lists for it (the very same
//! binary runs on every side). Everything lives inside the bench network namespace; the bare
//! sides use namespaces held by `unshare --net sleep` processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xshell::cmd;

use super::measure::{Invocation, Stats};
use super::report::{Better, Line, Role, Row};
use super::setup::Bench;

const IPERF_IMAGE: &str = "bench-iperf";
const SERVER: &str = "bench-iperf-server";
const VETH_SERVER_IP: &str = "10.250.0.1";

pub fn row(b: &Bench, iperf3: Result<PathBuf, String>, reps: usize, seconds: u32) -> Row {
    let mut row = Row::new(
        "throughput",
        "5",
        &format!("TCP throughput between two containers, iperf3 -t {seconds}"),
        "Gbit/s",
        Better::Higher,
    );
    // (tool key, label, role): the carton line, the target's peer, and a reference that tells
    // the bridge's own cost from carton's.
    let lines: [(&str, &str, Role); 4] = [
        (
            "carton",
            "carton: two containers on the bridge carton0",
            Role::Carton,
        ),
        (
            "veth",
            "veth pair between two network namespaces (no bridge)",
            Role::Peer,
        ),
        (
            "bridge",
            "plain Linux bridge between two network namespaces (no carton, no firewall rules)",
            Role::Reference,
        ),
        (
            "carton-no-br-nf",
            "carton, with net.bridge.bridge-nf-call-iptables=0 in the bench namespace",
            Role::Reference,
        ),
    ];
    let iperf3 = match iperf3 {
        Ok(p) => p,
        Err(e) => {
            for (tool, label, role) in lines {
                row.lines
                    .push(Line::missing(tool, label, role, format!("iperf3: {e}")));
            }
            return row;
        }
    };

    let carton = CartonSide::start(b, &iperf3).map_err(|e| format!("{e:#}"));
    let veth = BareSide::start(&iperf3, Topology::Pair).map_err(|e| format!("{e:#}"));
    let bridge = BareSide::start(&iperf3, Topology::Bridge).map_err(|e| format!("{e:#}"));
    let mut samples: [Vec<f64>; 4] = Default::default();
    let mut errors: [Option<String>; 4] = [
        carton.as_ref().err().cloned(),
        veth.as_ref().err().cloned(),
        bridge.as_ref().err().cloned(),
        carton
            .as_ref()
            .err()
            .cloned()
            .or_else(|| BrNetfilter::read().err()),
    ];
    for rep in 0..reps {
        for k in 0..lines.len() {
            // Rotated each round, so that no side always runs first or last.
            let i = (rep + k) % lines.len();
            if errors[i].is_some() {
                continue;
            }
            let result = match i {
                0 => carton
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|s| s.measure(b, seconds)),
                1 => veth
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|s| s.measure(&iperf3, seconds)),
                3 => carton
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|s| BrNetfilter::off_during(|| s.measure(b, seconds))),
                _ => bridge
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|s| s.measure(&iperf3, seconds)),
            };
            match result {
                Ok(gbps) => {
                    println!("  {}: {gbps:.2} Gbit/s", lines[i].0);
                    samples[i].push(gbps);
                }
                Err(e) => {
                    println!("  {} failed: {e}", lines[i].0);
                    errors[i] = Some(e);
                }
            }
        }
    }
    let carton_client = carton
        .as_ref()
        .map(|s| s.client(b, seconds).display())
        .unwrap_or_default();
    let commands = [
        carton_client.clone(),
        veth.as_ref()
            .map(|s| s.client(&iperf3, seconds).display())
            .unwrap_or_default(),
        bridge
            .as_ref()
            .map(|s| s.client(&iperf3, seconds).display())
            .unwrap_or_default(),
        format!("{carton_client} (with {BR_NF_CALL_IPTABLES} = 0 around it)"),
    ];
    if let Ok(side) = carton {
        side.stop(b);
    }
    for side in [veth, bridge].into_iter().flatten() {
        side.stop();
    }
    for (i, ((tool, label, role), command)) in lines.into_iter().zip(commands).enumerate() {
        let result = match &errors[i] {
            Some(e) => Err(e.clone()),
            None => Stats::of(samples[i].clone()).ok_or_else(|| "no runs".to_string()),
        };
        row.lines
            .push(Line::from_result(tool, label, role, command, result));
    }
    row.compute_ratios();
    row.notes.push(format!(
        "{reps} run(s) each, rotating; one TCP stream; iperf3 is the host's binary, run in the \
         containers from a second image (busybox + iperf3 + the libraries ldd lists). The plain \
         bridge shows what any bridge costs against a bare veth pair on this kernel (with \
         br_netfilter every bridged frame walks the iptables hooks, rules or not), apart from \
         what carton adds. The last line runs carton's containers with the bench namespace's \
         br_netfilter switch off (a per-namespace sysctl, restored after each run): bridged \
         frames then skip the iptables hooks, which carton's rules (raw, filter, nat tables) \
         otherwise put on their path; carton itself never changes that host setting."
    ));
    row
}

const BR_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// The bench namespace's br_netfilter switch (per network namespace on current kernels).
struct BrNetfilter;

impl BrNetfilter {
    fn read() -> Result<String, String> {
        std::fs::read_to_string(BR_NF_CALL_IPTABLES)
            .map(|v| v.trim().to_string())
            .map_err(|e| {
                format!(
                    "{BR_NF_CALL_IPTABLES}: {e} (br_netfilter is not loaded: bridged frames skip \
                     iptables already, the carton line shows that case)"
                )
            })
    }

    /// Runs `f` with bridged frames kept out of the iptables hooks, then restores the switch.
    fn off_during(f: impl FnOnce() -> Result<f64, String>) -> Result<f64, String> {
        let before = Self::read()?;
        let set = |v: &str| {
            std::fs::write(BR_NF_CALL_IPTABLES, v)
                .map_err(|e| format!("writing {v} to {BR_NF_CALL_IPTABLES}: {e}"))
        };
        set("0")?;
        let result = f();
        set(&before)?;
        result
    }
}

/// Parses iperf3 -J output: the receiver's rate in Gbit/s.
fn gbps(json: &str) -> Result<f64, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("iperf3 JSON: {e}"))?;
    if let Some(err) = v["error"].as_str() {
        return Err(format!("iperf3: {err}"));
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .ok_or_else(|| "iperf3 JSON without end.sum_received.bits_per_second".into())
}

/// Client runs with a few retries while the server comes up.
fn run_client(inv: &Invocation) -> Result<f64, String> {
    let mut last = String::new();
    for _ in 0..10 {
        match inv.output() {
            Ok(out) => return gbps(&out),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(last)
}

struct CartonSide {
    server_ip: String,
}

impl CartonSide {
    fn start(b: &Bench, iperf3: &Path) -> Result<CartonSide> {
        let tar = build_iperf_rootfs(b, iperf3)?;
        let sh = &b.sh;
        let carton = &b.carton;
        let root = &b.carton_root;
        cmd!(sh, "{carton} --root {root} import {tar} {IPERF_IMAGE}")
            .quiet()
            .ignore_stdout()
            .run()
            .context("carton import of the iperf3 image")?;
        cmd!(
            sh,
            "{carton} --root {root} run -d --name {SERVER} {IPERF_IMAGE} iperf3 -s"
        )
        .quiet()
        .ignore_stdout()
        .run()
        .context("starting the iperf3 server container")?;
        let inspect = cmd!(sh, "{carton} --root {root} inspect {SERVER}")
            .quiet()
            .read()?;
        let v: Value = serde_json::from_str(&inspect)?;
        let ip = v[0]["NetworkSettings"]["IPAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if ip.is_empty() {
            bail!("the server container has no IP address (inspect: NetworkSettings.IPAddress)");
        }
        Ok(CartonSide { server_ip: ip })
    }

    fn client(&self, b: &Bench, seconds: u32) -> Invocation {
        b.carton()
            .args(["run", "--rm", IPERF_IMAGE, "iperf3", "-J", "-t"])
            .arg(seconds.to_string())
            .arg("-c")
            .arg(&self.server_ip)
    }

    fn measure(&self, b: &Bench, seconds: u32) -> Result<f64, String> {
        run_client(&self.client(b, seconds))
    }

    fn stop(self, b: &Bench) {
        let _ = b.carton().args(["rm", "-f", SERVER]).output();
        let _ = b.carton().args(["rmi", IPERF_IMAGE]).output();
    }
}

/// busybox rootfs + iperf3 + its libraries, as a tarball in the work directory.
fn build_iperf_rootfs(b: &Bench, iperf3: &Path) -> Result<PathBuf> {
    let sh = &b.sh;
    let dir = b.work.join("iperf-rootfs");
    let tar = b.work.join("iperf-rootfs.tar");
    std::fs::create_dir_all(&dir)?;
    let busybox_tar = &b.busybox_tar;
    cmd!(sh, "tar -C {dir} -xf {busybox_tar}").quiet().run()?;
    let ldd = cmd!(sh, "ldd {iperf3}").quiet().read()?;
    let mut files: Vec<PathBuf> = vec![iperf3.to_path_buf()];
    for line in ldd.lines() {
        // "libx.so => /lib/…/libx.so (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line
            .split("=>")
            .nth(1)
            .unwrap_or(line)
            .split_whitespace()
            .next()
            .unwrap_or_default();
        if path.starts_with('/') {
            files.push(PathBuf::from(path));
        }
    }
    for f in &files {
        let dest = dir.join(f.strip_prefix("/").unwrap_or(f));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Follows symlinks (ld-linux, versioned sonames): the image gets plain files.
        std::fs::copy(f, &dest).with_context(|| format!("copying {}", f.display()))?;
    }
    cmd!(
        sh,
        "tar --numeric-owner --owner=0 --group=0 -C {dir} -cf {tar} ."
    )
    .quiet()
    .run()?;
    Ok(tar)
}

/// How the two bare namespaces of a reference line are joined.
#[derive(Clone, Copy, PartialEq)]
enum Topology {
    /// One veth pair, end to end.
    Pair,
    /// A veth from each to a bridge in a third namespace, as carton joins containers.
    Bridge,
}

struct BareSide {
    holders: Vec<Child>,
    server: Option<Child>,
}

impl BareSide {
    fn start(iperf3: &Path, topology: Topology) -> Result<BareSide> {
        let mut side = BareSide {
            holders: Vec::new(),
            server: None,
        };
        // Server, client, and (for the bridge) the namespace that holds the bridge.
        let namespaces = match topology {
            Topology::Pair => 2,
            Topology::Bridge => 3,
        };
        for _ in 0..namespaces {
            side.holders.push(
                Command::new("unshare")
                    .args(["--net", "sleep", "infinity"])
                    .stdin(Stdio::null())
                    .spawn()
                    .context("unshare --net sleep")?,
            );
        }
        // Let unshare reach its exec of sleep (the namespace exists from then on).
        let pids: Vec<u32> = side.holders.iter().map(Child::id).collect();
        let (a, c) = (pids[0], pids[1]);
        for &pid in &pids {
            for _ in 0..100 {
                if super::ns::ns_id(pid, "net") != super::ns::ns_id(std::process::id(), "net") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let (a, c) = (a.to_string(), c.to_string());
        let ip = |args: &[&str]| -> Result<()> {
            let st = Command::new("ip").args(args).status()?;
            if !st.success() {
                bail!("ip {} failed", args.join(" "));
            }
            Ok(())
        };
        let inside = |pid: &str, args: &[&str]| -> Result<()> {
            let st = Command::new("nsenter")
                .args(["-t", pid, "-n", "ip"])
                .args(args)
                .status()?;
            if !st.success() {
                bail!("ip {} (in namespace of {pid}) failed", args.join(" "));
            }
            Ok(())
        };
        // Interface names differ per topology: both reference sides exist at once.
        let (server_dev, client_dev) = match topology {
            Topology::Pair => {
                ip(&[
                    "link", "add", "bench-va", "type", "veth", "peer", "name", "bench-vb",
                ])?;
                ip(&["link", "set", "bench-va", "netns", &a])?;
                ip(&["link", "set", "bench-vb", "netns", &c])?;
                ("bench-va", "bench-vb")
            }
            Topology::Bridge => {
                let h = pids[2].to_string();
                inside(&h, &["link", "add", "bench-br", "type", "bridge"])?;
                inside(&h, &["link", "set", "bench-br", "up"])?;
                for (end, port, pid) in [("bench-ba", "bench-ha", &a), ("bench-bb", "bench-hb", &c)]
                {
                    ip(&["link", "add", end, "type", "veth", "peer", "name", port])?;
                    ip(&["link", "set", end, "netns", pid])?;
                    ip(&["link", "set", port, "netns", &h])?;
                    inside(&h, &["link", "set", port, "master", "bench-br"])?;
                    inside(&h, &["link", "set", port, "up"])?;
                }
                ("bench-ba", "bench-bb")
            }
        };
        inside(
            &a,
            &[
                "addr",
                "add",
                &format!("{VETH_SERVER_IP}/24"),
                "dev",
                server_dev,
            ],
        )?;
        inside(&c, &["addr", "add", "10.250.0.2/24", "dev", client_dev])?;
        for (pid, dev) in [(&a, server_dev), (&c, client_dev)] {
            inside(pid, &["link", "set", dev, "up"])?;
            inside(pid, &["link", "set", "lo", "up"])?;
        }
        side.server = Some(
            Command::new("nsenter")
                .args(["-t", &a, "-n"])
                .arg(iperf3)
                .arg("-s")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .context("starting the iperf3 server")?,
        );
        Ok(side)
    }

    fn client(&self, iperf3: &Path, seconds: u32) -> Invocation {
        Invocation::new("nsenter")
            .args(["-t", &self.holders[1].id().to_string(), "-n"])
            .arg(iperf3)
            .args(["-J", "-t", &seconds.to_string(), "-c", VETH_SERVER_IP])
    }

    fn measure(&self, iperf3: &Path, seconds: u32) -> Result<f64, String> {
        run_client(&self.client(iperf3, seconds))
    }

    fn stop(mut self) {
        for child in self.server.iter_mut().chain(self.holders.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BareSide {
    fn drop(&mut self) {
        for child in self.server.iter_mut().chain(self.holders.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
