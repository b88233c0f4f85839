//! Row 5: container-to-container TCP throughput with iperf3 — two carton containers on
//! carton's default bridge vs two bare network namespaces joined by one hand-made veth pair.
//!
//! The busybox image has no iperf3, so the benchmark builds a second image: the busybox rootfs
//! plus the host's /usr/bin/iperf3 and the shared libraries `ldd` lists for it (the very same
//! binary runs on both sides). Everything lives inside the bench network namespace; the veth
//! side uses two more namespaces held by `unshare --net sleep` processes.

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
    let carton_label = "carton: two containers on the bridge carton0";
    let veth_label = "veth pair between two network namespaces (no bridge)";
    let iperf3 = match iperf3 {
        Ok(p) => p,
        Err(e) => {
            row.lines.push(Line::missing(
                "carton",
                carton_label,
                Role::Carton,
                format!("iperf3: {e}"),
            ));
            row.lines.push(Line::missing(
                "veth",
                veth_label,
                Role::Peer,
                format!("iperf3: {e}"),
            ));
            return row;
        }
    };

    let carton = match CartonSide::start(b, &iperf3) {
        Ok(side) => Ok(side),
        Err(e) => Err(format!("{e:#}")),
    };
    let veth = match VethSide::start(&iperf3) {
        Ok(side) => Ok(side),
        Err(e) => Err(format!("{e:#}")),
    };
    let mut samples: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut errors: [Option<String>; 2] =
        [carton.as_ref().err().cloned(), veth.as_ref().err().cloned()];
    for rep in 0..reps {
        for k in 0..2 {
            let i = (rep + k) % 2;
            if errors[i].is_some() {
                continue;
            }
            let result = match i {
                0 => carton
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|s| s.measure(b, seconds)),
                _ => veth
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|s| s.measure(&iperf3, seconds)),
            };
            match result {
                Ok(gbps) => {
                    println!("  {}: {gbps:.2} Gbit/s", ["carton", "veth"][i]);
                    samples[i].push(gbps);
                }
                Err(e) => {
                    println!("  {} failed: {e}", ["carton", "veth"][i]);
                    errors[i] = Some(e);
                }
            }
        }
    }
    let command_carton = carton
        .as_ref()
        .map(|s| s.client(b, seconds).display())
        .unwrap_or_default();
    let command_veth = veth
        .as_ref()
        .map(|s| s.client(&iperf3, seconds).display())
        .unwrap_or_default();
    if let Ok(side) = carton {
        side.stop(b);
    }
    if let Ok(side) = veth {
        side.stop();
    }
    let result = |i: usize| match &errors[i] {
        Some(e) => Err(e.clone()),
        None => Stats::of(samples[i].clone()).ok_or_else(|| "no runs".to_string()),
    };
    row.lines.push(Line::from_result(
        "carton",
        carton_label,
        Role::Carton,
        command_carton,
        result(0),
    ));
    row.lines.push(Line::from_result(
        "veth",
        veth_label,
        Role::Peer,
        command_veth,
        result(1),
    ));
    row.compute_ratios();
    row.notes.push(format!(
        "{reps} run(s) each, alternating; one TCP stream; iperf3 is the host's binary, run in the \
         containers from a second image (busybox + iperf3 + the libraries ldd lists)."
    ));
    row
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

struct VethSide {
    holders: Vec<Child>,
    server: Option<Child>,
}

impl VethSide {
    fn start(iperf3: &Path) -> Result<VethSide> {
        let mut side = VethSide {
            holders: Vec::new(),
            server: None,
        };
        for _ in 0..2 {
            side.holders.push(
                Command::new("unshare")
                    .args(["--net", "sleep", "infinity"])
                    .stdin(Stdio::null())
                    .spawn()
                    .context("unshare --net sleep")?,
            );
        }
        // Let unshare reach its exec of sleep (the namespace exists from then on).
        let (a, c) = (side.holders[0].id(), side.holders[1].id());
        for pid in [a, c] {
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
        ip(&[
            "link", "add", "bench-va", "type", "veth", "peer", "name", "bench-vb",
        ])?;
        ip(&["link", "set", "bench-va", "netns", &a])?;
        ip(&["link", "set", "bench-vb", "netns", &c])?;
        inside(
            &a,
            &[
                "addr",
                "add",
                &format!("{VETH_SERVER_IP}/24"),
                "dev",
                "bench-va",
            ],
        )?;
        inside(&c, &["addr", "add", "10.250.0.2/24", "dev", "bench-vb"])?;
        for (pid, dev) in [(&a, "bench-va"), (&c, "bench-vb")] {
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

impl Drop for VethSide {
    fn drop(&mut self) {
        for child in self.server.iter_mut().chain(self.holders.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
