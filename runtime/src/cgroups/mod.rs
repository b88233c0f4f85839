//! cgroups: one container ↔ one cgroup at `carton/<id>` in every hierarchy, behind one trait
//! with a v1 and a v2 backend. The layout is detected from /proc/self/mountinfo; hybrid hosts
//! (v1 controllers + an empty v2 tree) are managed as v1.
//!
//! - `layout` — detection;
//! - `resources` — the limits and their v1/v2 value mapping;
//! - `v1`, `v2` — the backends;
//! - `files` — control-file I/O;
//! - `freezer` — freeze and wait until frozen (both versions).

pub mod devices;
mod files;
mod freezer;
pub mod layout;
pub mod resources;
mod v1;
mod v2;

pub use layout::{Layout, V1Hierarchy};
pub use resources::{Resources, parse_cpu_list};

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup filesystem is mounted: resource limits cannot be applied")]
    NoCgroups,
    #[error("the {0} cgroup controller is not available on this host")]
    MissingController(String),
    #[error("{0} is not supported by carton")]
    Unsupported(String),
    #[error("invalid cgroup path {0:?}: it must be absolute and stay inside the hierarchy")]
    InvalidPath(String),
    #[error("cannot create cgroup {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("unexpected content in {path}: {text:?}")]
    Parse { path: PathBuf, text: String },
    #[error("cannot remove cgroup {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("cannot freeze cgroup {path}: {reason}")]
    Freeze { path: PathBuf, reason: String },
}

/// Usage counters of a container's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Total CPU time consumed, nanoseconds.
    pub cpu_usage_ns: u64,
    /// CFS periods in which the cgroup ran, and in how many it was throttled.
    pub cpu_periods: u64,
    pub cpu_throttled_periods: u64,
    /// Memory in use minus reclaimable page cache, as `docker stats` shows it.
    pub memory_usage: u64,
    /// The memory limit; `None` when unlimited.
    pub memory_limit: Option<u64>,
    pub pids: u64,
    pub pids_limit: Option<u64>,
    /// Bytes read from / written to block devices.
    pub io_read: u64,
    pub io_write: u64,
}

/// What the container sees at /sys/fs/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupView {
    /// A tmpfs with the container's own directory of each hierarchy bind-mounted under its
    /// name: (name, host directory).
    V1(Vec<(String, PathBuf)>),
    /// cgroup2 mounted from inside the container's cgroup namespace.
    V2,
}

/// How a new process (the init, an `exec`) enters the container's cgroup.
#[derive(Debug)]
pub enum Entry {
    /// Born in it: clone3(CLONE_INTO_CGROUP) with this directory (v2).
    CloneInto(OwnedFd),
    /// The child moves itself, writing `0` (itself) into each of these open `tasks` files
    /// (v1) before anything else. A thread that moves itself skips the global threadgroup
    /// lock, whose write side waits for an RCU grace period: 10–15 ms per container start on
    /// the machine this was measured on (`strace -T` of the write, pid vs `0`), the largest
    /// single cost of a `carton run` on cgroup v1.
    SelfMove(Vec<std::fs::File>),
    /// The parent writes the child's pid into `cgroup.procs` after the clone.
    ByParent,
}

/// One container's cgroup, whatever the cgroup version.
pub trait CgroupManager: std::fmt::Debug {
    /// Creates the cgroup (and its parents, enabling controllers / seeding cpusets on the
    /// way). Idempotent.
    fn create(&self) -> Result<(), CgroupError>;
    /// Writes the limits; a limit whose controller is absent is an error naming it.
    fn apply(&self, resources: &Resources) -> Result<(), CgroupError>;
    /// Moves a process in.
    fn add_process(&self, pid: i32) -> Result<(), CgroupError>;
    /// How a new process of the container gets in.
    fn entry(&self) -> Result<Entry, CgroupError>;
    /// What to mount inside the container.
    fn view(&self) -> CgroupView;
    fn stats(&self) -> Result<Stats, CgroupError>;
    /// How many times the OOM killer killed a process in this cgroup.
    fn oom_kills(&self) -> Result<u64, CgroupError>;
    /// Pids of the processes in the cgroup.
    fn pids(&self) -> Result<Vec<i32>, CgroupError>;
    fn exists(&self) -> bool;
    /// Freezes every process of the cgroup and returns once all are frozen (v1: freezer.state
    /// FROZEN; v2: cgroup.freeze 1 until cgroup.events says `frozen 1`). On failure the
    /// cgroup is left thawed.
    /// Restricts which devices the processes may create and open (v1: the devices controller;
    /// v2: an eBPF program attached to the cgroup).
    fn apply_devices(&self, rules: &[devices::DeviceRule]) -> Result<(), CgroupError>;
    fn freeze(&self) -> Result<(), CgroupError>;
    /// Whether the cgroup is frozen now (`pause`d).
    fn is_frozen(&self) -> bool;
    /// Lets the processes run again.
    fn thaw(&self) -> Result<(), CgroupError>;
    /// Removes the cgroup (it must be empty). Missing is fine.
    fn destroy(&self) -> Result<(), CgroupError>;
}

/// The cgroup at `path` (e.g. `/carton/<id>`, relative to each hierarchy's root).
pub fn open(layout: &Layout, path: &str) -> Result<Box<dyn CgroupManager>, CgroupError> {
    let relative = relative_path(path)?;
    match layout {
        Layout::V1 { hierarchies, .. } => Ok(Box::new(v1::V1Cgroup::new(hierarchies, &relative))),
        Layout::V2 { mount_point } => Ok(Box::new(v2::V2Cgroup::new(mount_point, &relative))),
        Layout::None => Err(CgroupError::NoCgroups),
    }
}

/// `/carton/abc` → `carton/abc`; refuses `..` and empty paths.
/// Makes one cgroup directory: `true` when it was made now, `false` when it already existed
/// (a parent shared with other containers).
fn make_level(dir: &std::path::Path) -> Result<bool, CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::Create {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn relative_path(path: &str) -> Result<PathBuf, CgroupError> {
    let trimmed = path.trim_start_matches('/');
    let valid = !trimmed.is_empty()
        && trimmed
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if valid {
        Ok(PathBuf::from(trimmed))
    } else {
        Err(CgroupError::InvalidPath(path.to_string()))
    }
}

/// Whether the host can limit swap (v1: swap accounting files; v2: the swap controller
/// interface of the memory controller, which only non-root cgroups show, and only when swap
/// accounting is on).
pub fn supports_swap_limit(layout: &Layout) -> bool {
    match layout {
        Layout::V1 { hierarchies, .. } => hierarchies
            .iter()
            .find(|h| h.has("memory"))
            .is_some_and(|h| h.mount_point.join("memory.memsw.limit_in_bytes").exists()),
        Layout::V2 { mount_point } => {
            let own = std::fs::read_to_string("/proc/self/cgroup")
                .ok()
                .and_then(|text| v2_own_path(&text))
                .map(|relative| mount_point.join(relative));
            // The root cgroup has no memory.swap.max: look at a child of it instead.
            let children = std::fs::read_dir(mount_point)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path());
            own.into_iter()
                .chain(children)
                .filter(|dir| dir != mount_point && dir.is_dir())
                .any(|dir| dir.join("memory.swap.max").exists())
        }
        Layout::None => false,
    }
}

/// This process's cgroup below the cgroup2 root, from /proc/self/cgroup's `0::/path` line.
fn v2_own_path(proc_self_cgroup: &str) -> Option<PathBuf> {
    let path = proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?;
    Some(PathBuf::from(path.trim().trim_start_matches('/')))
}

/// Whether the host offers `controller` (a v1 hierarchy has it, or the v2 root lists it).
pub fn has_controller(layout: &Layout, controller: &str) -> bool {
    match layout {
        Layout::V1 { hierarchies, .. } => hierarchies.iter().any(|h| h.has(controller)),
        Layout::V2 { mount_point } => {
            std::fs::read_to_string(mount_point.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|x| x == controller))
        }
        Layout::None => false,
    }
}

/// Whether the host has any active swap device.
pub fn host_has_swap() -> bool {
    std::fs::read_to_string("/proc/swaps").is_ok_and(|s| s.lines().count() > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_v2_cgroup_is_read_from_proc_self_cgroup() {
        let hybrid =
            "12:pids:/user.slice\n1:name=systemd:/user.slice\n0::/user.slice/session-1.scope\n";
        assert_eq!(
            v2_own_path(hybrid),
            Some(PathBuf::from("user.slice/session-1.scope"))
        );
        assert_eq!(v2_own_path("0::/\n"), Some(PathBuf::new()));
        assert_eq!(v2_own_path("3:cpu:/x\n"), None);
    }

    #[test]
    fn paths_stay_inside_the_hierarchy() {
        assert_eq!(
            relative_path("/carton/abc").unwrap(),
            PathBuf::from("carton/abc")
        );
        for bad in ["", "/", "/carton/../..", "a//b", "./x"] {
            assert!(relative_path(bad).is_err(), "{bad:?}");
        }
    }
}
