//! The host's cgroup layout as the scenarios need it: where a container's cgroup lives on the
//! host, where the same file appears inside the container, and which version a file belongs
//! to. Kept independent of carton's own detection code, so the suites check it rather than
//! repeat it.

use std::path::{Path, PathBuf};

/// The cgroup version that carries the controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// v1 if any controller hierarchy is mounted (hybrid hosts count as v1), v2 if only cgroup2 is,
/// `None` without cgroups.
pub fn version() -> Option<Version> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut v2 = false;
    for line in info.lines() {
        let Some((_, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut parts = right.split(' ');
        match parts.next() {
            Some("cgroup") => {
                let opts = parts.nth(1).unwrap_or("");
                if opts
                    .split(',')
                    .any(|o| !o.starts_with("name=") && o != "rw" && o != "ro")
                {
                    return Some(Version::V1);
                }
            }
            Some("cgroup2") => v2 = true,
            _ => {}
        }
    }
    v2.then_some(Version::V2)
}

/// A limit or counter file, named for both versions.
#[derive(Debug, Clone, Copy)]
pub struct File {
    /// (v1 controller directory, v1 file)
    pub v1: (&'static str, &'static str),
    pub v2: &'static str,
}

pub const MEMORY_LIMIT: File = File {
    v1: ("memory", "memory.limit_in_bytes"),
    v2: "memory.max",
};
pub const MEMORY_SWAP: File = File {
    v1: ("memory", "memory.memsw.limit_in_bytes"),
    v2: "memory.swap.max",
};
pub const MEMORY_RESERVATION: File = File {
    v1: ("memory", "memory.soft_limit_in_bytes"),
    v2: "memory.low",
};
pub const PIDS_MAX: File = File {
    v1: ("pids", "pids.max"),
    v2: "pids.max",
};
pub const CPUSET_CPUS: File = File {
    v1: ("cpuset", "cpuset.cpus"),
    v2: "cpuset.cpus",
};
pub const CPUSET_MEMS: File = File {
    v1: ("cpuset", "cpuset.mems"),
    v2: "cpuset.mems",
};
/// v1 holds the quota alone (`-1` or microseconds), v2 `cpu.max` quota and period together.
pub const CPU_QUOTA: File = File {
    v1: ("cpu", "cpu.cfs_quota_us"),
    v2: "cpu.max",
};
pub const CPU_PERIOD: File = File {
    v1: ("cpu", "cpu.cfs_period_us"),
    v2: "cpu.max",
};
/// v1 shares (2–262144, default 1024), v2 weight (1–10000, default 100).
pub const CPU_WEIGHT: File = File {
    v1: ("cpu", "cpu.shares"),
    v2: "cpu.weight",
};
pub const CPU_STAT: File = File {
    v1: ("cpu", "cpu.stat"),
    v2: "cpu.stat",
};

/// Where the v1 hierarchy holding `controller` is mounted on the host (co-mounted controllers
/// such as `cpu,cpuacct` included).
pub fn v1_mount(controller: &str) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut parts = right.split(' ');
        if parts.next()? != "cgroup" {
            return None;
        }
        let opts = parts.nth(1)?;
        if !opts.split(',').any(|o| o == controller) {
            return None;
        }
        left.split(' ').nth(4).map(PathBuf::from)
    })
}

fn v2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        left.split(' ').nth(4).map(PathBuf::from)
    })
}

/// The host path of `file` in the cgroup of container `id`.
pub fn host_path(id: &str, file: File) -> Option<PathBuf> {
    match version()? {
        Version::V1 => Some(v1_mount(file.v1.0)?.join("carton").join(id).join(file.v1.1)),
        Version::V2 => Some(v2_mount()?.join("carton").join(id).join(file.v2)),
    }
}

/// The path of `file` inside the container (its read-only /sys/fs/cgroup view). v1
/// directories are named after the host's hierarchy mount points.
pub fn container_path(file: File) -> Option<String> {
    match version()? {
        Version::V1 => {
            let mount = v1_mount(file.v1.0)?;
            let name = mount.file_name()?.to_string_lossy().into_owned();
            Some(format!("/sys/fs/cgroup/{name}/{}", file.v1.1))
        }
        Version::V2 => Some(format!("/sys/fs/cgroup/{}", file.v2)),
    }
}

/// Mount points of every cgroup hierarchy (v1 controllers, named ones, cgroup2).
pub fn roots() -> Vec<PathBuf> {
    crate::host::mountinfo()
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| left.split(' ').nth(4).map(PathBuf::from))?
        })
        .collect()
}

/// Every directory of container `id`'s cgroup that exists on the host.
pub fn existing_dirs(id: &str) -> Vec<PathBuf> {
    roots()
        .into_iter()
        .map(|r| r.join("carton").join(id))
        .filter(|d| d.is_dir())
        .collect()
}

/// Reads a number from a cgroup file; "max" reads as `None`.
pub fn read_limit(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// A `key value` entry of a flat-keyed file such as cpu.stat.
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Total CPU time of the container's cgroup in nanoseconds, from the cgroup's own counter.
pub fn cpu_usage_ns(id: &str) -> Option<u64> {
    match version()? {
        Version::V1 => {
            let path = v1_mount("cpuacct")?
                .join("carton")
                .join(id)
                .join("cpuacct.usage");
            read_limit(&path)
        }
        Version::V2 => {
            let text =
                std::fs::read_to_string(v2_mount()?.join("carton").join(id).join("cpu.stat"))
                    .ok()?;
            keyed(&text, "usage_usec").map(|us| us * 1000)
        }
    }
}

/// Whether the kernel can limit a cgroup's swap: v1 swap accounting (memsw files), v2 a
/// `memory.swap.max` in non-root cgroups (the root has none).
pub fn swap_limit_supported() -> bool {
    match version() {
        Some(Version::V1) => {
            v1_mount("memory").is_some_and(|m| m.join("memory.memsw.limit_in_bytes").exists())
        }
        Some(Version::V2) => v2_mount()
            .and_then(|m| std::fs::read_dir(m).ok())
            .is_some_and(|dir| {
                dir.filter_map(Result::ok)
                    .any(|e| e.path().join("memory.swap.max").exists())
            }),
        None => false,
    }
}

/// The CPU limit of container `id` as its cgroup holds it, in v2's `cpu.max` form on both
/// versions: `"<quota> <period>"`, `"max <period>"` when unlimited (v1's `-1`).
pub fn cpu_max(id: &str) -> Option<String> {
    match version()? {
        Version::V1 => {
            let read = |file| std::fs::read_to_string(host_path(id, file)?).ok();
            let quota = read(CPU_QUOTA)?.trim().to_string();
            let period = read(CPU_PERIOD)?.trim().to_string();
            let quota = if quota == "-1" { "max".into() } else { quota };
            Some(format!("{quota} {period}"))
        }
        Version::V2 => std::fs::read_to_string(host_path(id, CPU_QUOTA)?)
            .ok()
            .map(|s| s.trim().to_string()),
    }
}

/// The shell command that prints, inside a container, what [`cpu_max`] reads on the host.
pub fn cpu_max_inside() -> Option<String> {
    match version()? {
        Version::V1 => Some(format!(
            "q=$(cat {}); [ \"$q\" = -1 ] && q=max; echo \"$q $(cat {})\"",
            container_path(CPU_QUOTA)?,
            container_path(CPU_PERIOD)?
        )),
        Version::V2 => Some(format!("cat {}", container_path(CPU_QUOTA)?)),
    }
}

/// The value of [`CPU_WEIGHT`] that `--cpu-shares shares` must give: the shares on v1, runc's
/// weight on v2 (1 + (shares − 2) × 9999 / 262142, shares clamped to 2–262144), computed
/// here so the scenarios do not take carton's word for the conversion.
pub fn expected_weight(shares: u64) -> u64 {
    match version() {
        Some(Version::V2) => 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142,
        _ => shares,
    }
}

/// The weight file's value when no shares were given: 1024 shares on v1, weight 100 on v2.
pub fn default_weight() -> u64 {
    match version() {
        Some(Version::V2) => 100,
        _ => 1024,
    }
}

/// Whether the host has an active swap device.
pub fn host_has_swap() -> bool {
    std::fs::read_to_string("/proc/swaps").is_ok_and(|s| s.lines().count() > 1)
}

/// Whether the controller exists on this host (v1 hierarchy mounted, or listed by cgroup2).
pub fn has_controller(controller: &str) -> bool {
    // v2 has no cpuacct: CPU usage is always in cpu.stat (see `cpu_usage_ns`).
    if controller == "cpuacct" && version() == Some(Version::V2) {
        return true;
    }
    match version() {
        Some(Version::V1) => v1_mount(controller).is_some(),
        Some(Version::V2) => v2_mount()
            .and_then(|m| std::fs::read_to_string(m.join("cgroup.controllers")).ok())
            .is_some_and(|c| c.split_whitespace().any(|x| x == controller)),
        None => false,
    }
}

/// [`has_controller`], or a skip saying which controller is missing (a kernel may lack one
/// entirely: Debian's 6.12 has no v1 interface for memory or cpuset).
pub fn controller_or_skip(controller: &str) -> bool {
    let present = has_controller(controller);
    if !present {
        crate::skip(&format!(
            "the {controller} cgroup controller is not available"
        ));
    }
    present
}

/// Best-effort clean-up of cgroup directories a container left behind (after they were reported):
/// kills the processes in them, then removes them, children first.
pub fn kill_and_remove(dirs: &[PathBuf]) {
    for dir in dirs {
        let mut tree: Vec<PathBuf> = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&d) {
                stack.extend(
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            tree.push(d);
        }
        for d in &tree {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            // A frozen process (a failed freeze scenario) dies only once thawed (v1).
            let _ = std::fs::write(d.join("freezer.state"), "THAWED");
            let _ = std::fs::write(d.join("cgroup.freeze"), "0");
        }
        // Deepest first; killed processes take a moment to leave the cgroup.
        tree.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for d in &tree {
            while std::fs::remove_dir(d).is_err()
                && d.exists()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}
