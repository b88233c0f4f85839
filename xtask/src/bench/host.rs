//! The machine: installing the peers, describing it for the report, and checking that the
//! benchmark left nothing behind in its real namespaces.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use crate::util;

/// A program on $PATH (or in the sbin directories root's PATH may lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// What the benchmark needs beyond carton: (program, Debian package, what it is for).
const NEEDED: [(&str, &str, &str); 6] = [
    ("runc", "runc", "peer in rows 1, 3, 4"),
    ("crun", "crun", "peer in rows 1, 3, 4; podman's OCI runtime"),
    ("podman", "podman", "peer in rows 1–4"),
    ("hyperfine", "hyperfine", "cross-check of row 1's timings"),
    ("iperf3", "iperf3", "row 5"),
    ("conmon", "conmon", "podman's supervisor"),
];

/// podman's default network on Debian 12 without netavark: the CNI bridge plugin.
const CNI_BRIDGE: &str = "/usr/lib/cni/bridge";

/// The peers and helpers, each found or with the reason it is missing.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Programs {
    pub found: BTreeMap<String, Result<PathBuf, String>>,
}

impl Programs {
    pub fn get(&self, name: &str) -> Result<PathBuf, String> {
        self.found
            .get(name)
            .cloned()
            .unwrap_or_else(|| Err(format!("{name} was not looked for")))
    }
}

/// Installs (as root, with apt-get) whatever of runc, crun, podman, hyperfine, iperf3 and the
/// CNI plugins is missing; returns where each is, or why not.
pub fn ensure_programs(sh: &Shell) -> Programs {
    let mut packages: Vec<&str> = NEEDED
        .iter()
        .filter(|(prog, _, _)| find_program(prog).is_none())
        .map(|(_, pkg, _)| *pkg)
        .collect();
    if find_program("podman").is_some() && !Path::new(CNI_BRIDGE).exists() {
        packages.push("containernetworking-plugins");
    }
    let mut install_error = None;
    if !packages.is_empty() {
        let list = packages.join(" ");
        util::section(&format!(
            "Installing what the benchmark compares carton with: apt-get install {list}"
        ));
        for (prog, pkg, why) in NEEDED {
            if packages.contains(&pkg) {
                println!("  {prog} is missing ({why}): installing the Debian package {pkg}");
            }
        }
        let install = || {
            let packages = &packages;
            cmd!(
                sh,
                "apt-get install -y --no-install-recommends {packages...}"
            )
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()
        };
        if install().is_err() {
            println!("apt-get install failed: refreshing the package lists and retrying");
            let retried = cmd!(sh, "apt-get update -qq").run().and_then(|_| install());
            if let Err(e) = retried {
                install_error = Some(format!("apt-get install {list} failed: {e}"));
            }
        }
    }
    let mut found = BTreeMap::new();
    for (prog, pkg, _) in NEEDED {
        let r = find_program(prog).ok_or_else(|| match &install_error {
            Some(e) => format!("not installed ({e})"),
            None => format!("not installed (Debian package {pkg})"),
        });
        found.insert(prog.to_string(), r);
    }
    if let Ok(podman) = found.get("podman").cloned().unwrap_or(Err(String::new())) {
        let reason = if find_program("conmon").is_none() {
            Some("conmon is not installed".to_string())
        } else if !Path::new(CNI_BRIDGE).exists() {
            Some(format!("no CNI plugins ({CNI_BRIDGE} is missing)"))
        } else {
            None
        };
        found.insert(
            "podman".into(),
            match reason {
                Some(r) => Err(r),
                None => Ok(podman),
            },
        );
    }
    Programs { found }
}

/// The first line of `program --version` (or the given flag).
pub fn version(program: &Path, flag: &str) -> String {
    Command::new(program)
        .arg(flag)
        .output()
        .ok()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or_default().trim().to_string()
        })
        .unwrap_or_else(|| "?".into())
}

/// Kernel, CPUs, memory, cgroup layout, file system of the bench directory.
pub fn describe_machine(bench_dir: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    m.insert(
        "kernel".into(),
        read("/proc/sys/kernel/osrelease").trim().to_string(),
    );
    m.insert(
        "cpus".into(),
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into()),
    );
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    m.insert("cpu_model".into(), model);
    let mem_kb: f64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    m.insert(
        "memory".into(),
        format!("{:.1} GiB", mem_kb / 1024.0 / 1024.0),
    );
    m.insert("cgroup_mode".into(), cgroup_mode());
    let virt = if cpuinfo.contains(" hypervisor") {
        "a virtual machine"
    } else {
        "bare metal"
    };
    m.insert("virtualization".into(), virt.into());
    m.insert("bench_fs".into(), fs_type(bench_dir));
    let os = read("/etc/os-release");
    let pretty = os
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .unwrap_or("?")
        .trim_matches('"')
        .to_string();
    m.insert("os".into(), pretty);
    m
}

/// v1, v2 or hybrid, from the mounts under /sys/fs/cgroup.
pub fn cgroup_mode() -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v1 = false;
    let mut unified = false;
    let mut v2_root = false;
    for l in info.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some(point) = f.get(4) else { continue };
        let fstype = l
            .split(" - ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next());
        match fstype {
            Some("cgroup2") if *point == "/sys/fs/cgroup" => v2_root = true,
            Some("cgroup2") => unified = true,
            Some("cgroup") => v1 = true,
            _ => {}
        }
    }
    match (v2_root, v1, unified) {
        (true, _, _) => "v2 (unified)".into(),
        (false, true, true) => "hybrid (v1 controllers + cgroup2 on /sys/fs/cgroup/unified)".into(),
        (false, true, false) => "v1".into(),
        _ => "none found".into(),
    }
}

/// The file system type of the mount holding `path` (the longest mount point prefix).
pub fn fs_type(path: &Path) -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut best: (usize, String) = (0, "?".into());
    for l in info.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some(point) = f.get(4) else { continue };
        let fstype = l
            .split(" - ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("?");
        if path.starts_with(point) && point.len() >= best.0 {
            best = (point.len(), fstype.to_string());
        }
    }
    best.1
}

/// What the benchmark could leave behind in the machine's real namespaces.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct HostState {
    pub carton0: bool,
    pub carton_rules: usize,
    pub cni_rules: usize,
    pub links: BTreeSet<String>,
    /// cgroup directories */carton and */libpod_parent and those below them.
    pub cgroups: BTreeSet<String>,
    /// mounts whose source or target mentions carton, podman or the bench directory.
    pub mounts: BTreeSet<String>,
    pub paths: BTreeSet<String>,
}

pub fn host_state(bench_dir: &Path) -> HostState {
    let mut s = HostState::default();
    let links = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    s.links = links;
    s.carton0 = s.links.contains("carton0");
    if let Ok(out) = Command::new("iptables-save").output() {
        let text = String::from_utf8_lossy(&out.stdout);
        s.carton_rules = text.lines().filter(|l| l.contains("CARTON")).count();
        s.cni_rules = text.lines().filter(|l| l.contains("CNI-")).count();
    }
    for hier in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for parent in ["carton", "libpod_parent"] {
            let dir = hier.path().join(parent);
            if dir.is_dir() {
                s.cgroups.insert(dir.display().to_string());
            }
            collect_dirs(&dir, &mut s.cgroups, 0);
        }
    }
    let bench = bench_dir.display().to_string();
    for l in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        if l.contains("carton")
            || l.contains("podman")
            || l.contains(&bench)
            || l.contains("/run/netns")
        {
            let f: Vec<&str> = l.split_whitespace().collect();
            s.mounts.insert(f.get(4).copied().unwrap_or(l).to_string());
        }
    }
    for p in [
        "/var/lib/cni",
        "/run/netns",
        "/run/runc",
        "/var/lib/containers/storage",
    ] {
        if Path::new(p).exists() {
            s.paths.insert(p.into());
        }
    }
    s
}

fn collect_dirs(dir: &Path, out: &mut BTreeSet<String>, depth: usize) {
    if depth > 3 {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.insert(e.path().display().to_string());
            collect_dirs(&e.path(), out, depth + 1);
        }
    }
}

/// Differences between two snapshots, as sentences (empty: nothing left behind).
pub fn leftovers(before: &HostState, after: &HostState) -> Vec<String> {
    let mut out = Vec::new();
    if after.carton0 && !before.carton0 {
        out.push("the bridge carton0 appeared in the real network namespace".into());
    }
    if after.carton_rules > before.carton_rules {
        out.push(format!(
            "iptables CARTON rules: {} before, {} after",
            before.carton_rules, after.carton_rules
        ));
    }
    if after.cni_rules > before.cni_rules {
        out.push(format!(
            "iptables CNI rules: {} before, {} after",
            before.cni_rules, after.cni_rules
        ));
    }
    let new = |a: &BTreeSet<String>, b: &BTreeSet<String>| -> Vec<String> {
        b.difference(a).cloned().collect()
    };
    for l in new(&before.links, &after.links) {
        out.push(format!("new network interface {l}"));
    }
    for c in new(&before.cgroups, &after.cgroups) {
        out.push(format!("new cgroup {c}"));
    }
    for m in new(&before.mounts, &after.mounts) {
        out.push(format!("new mount on {m}"));
    }
    for p in new(&before.paths, &after.paths) {
        out.push(format!("new path {p}"));
    }
    out
}

/// Processes still in the network namespace `net_id` (the bench namespace): their pids.
pub fn processes_in_netns(net_id: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| super::ns::ns_id(*pid, "net").as_deref() == Some(net_id))
        .collect()
}

/// After the inner process is gone (finished, failed or interrupted): kills whatever still runs
/// in a cgroup the benchmark made, and removes those cgroups. They are recognised by name only:
/// `carton/bench-*` (the runc/crun bundles), `carton/<id>` for the ids in the benchmark's carton
/// root and `libpod_parent/libpod-<id>` for those in its podman storage. Nothing else is
/// touched (other users of carton or podman on this machine keep theirs). Returns what it did.
pub fn reap(work: &Path) -> Vec<String> {
    let ids = |dir: PathBuf| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() >= 12 && n.chars().all(|c| c.is_ascii_hexdigit()))
            .collect()
    };
    let carton_ids = ids(work.join("carton").join("containers"));
    let podman_ids = ids(work.join("podman/storage/overlay-containers"));
    let ours = |parent: &str, name: &str| match parent {
        "carton" => name.starts_with("bench-") || carton_ids.contains(name),
        _ => name
            .strip_prefix("libpod-")
            .is_some_and(|id| podman_ids.contains(id)),
    };
    let mut done = Vec::new();
    for hier in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for parent in ["carton", "libpod_parent"] {
            for e in std::fs::read_dir(hier.path().join(parent))
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.file_type().is_ok_and(|t| t.is_dir()) && ours(parent, &name) {
                    done.extend(remove_cgroup(&e.path()));
                }
            }
        }
    }
    done
}

/// Kills the processes of `dir` (and its sub-cgroups), then removes them, deepest first.
fn remove_cgroup(dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            done.extend(remove_cgroup(&e.path()));
        }
    }
    for _ in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            done.push(format!("killed process {pid} left in {}", dir.display()));
            // SAFETY: kill(2) of a process in a cgroup only the benchmark creates.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => done.push(format!("removed the cgroup {}", dir.display())),
        Err(e) => done.push(format!(
            "could not remove the cgroup {}: {e}",
            dir.display()
        )),
    }
    done
}

/// The parents the runtimes create on first use and never remove — `carton` and podman's
/// `libpod_parent` with its `conmon` — in each hierarchy: removed when they did not exist
/// before the run (`before`), and only with rmdir, which fails on a cgroup that has processes
/// or children (someone else's containers), so nothing anyone uses is touched.
pub fn remove_new_parents(before: &HostState) -> Vec<String> {
    // "libpod_parent/conmon" -> (hierarchies it was removed from, errors)
    let mut removed: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut kept = Vec::new();
    for hier in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for dir in ["libpod_parent/conmon", "libpod_parent", "carton"] {
            let path = hier.path().join(dir);
            let name = path.display().to_string();
            if path.is_dir() && !before.cgroups.contains(&name) {
                match std::fs::remove_dir(&path) {
                    Ok(()) => removed
                        .entry(dir)
                        .or_default()
                        .push(hier.file_name().to_string_lossy().into_owned()),
                    Err(e) => kept.push(format!("kept the cgroup {name}: {e}")),
                }
            }
        }
    }
    let mut done: Vec<String> = removed
        .into_iter()
        .map(|(dir, mut hiers)| {
            hiers.sort();
            format!(
                "removed the cgroup {dir} (made during the run) from {}",
                hiers.join(", ")
            )
        })
        .collect();
    done.extend(kept);
    done
}
