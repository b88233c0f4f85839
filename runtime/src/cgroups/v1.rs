//! The cgroup v1 backend: one directory per hierarchy.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::files::{self, keyed};
use super::freezer::{FREEZE_TIMEOUT, Freezer};
use super::{CgroupError, CgroupManager, CgroupView, Entry, Resources, Stats, V1Hierarchy};

/// Limits at or above this mean "unlimited" in v1 files (the kernel rounds i64::MAX down to a
/// page multiple).
const V1_UNLIMITED: u64 = 1 << 62;

#[derive(Debug)]
pub struct V1Cgroup {
    /// (hierarchy, the container's directory in it)
    dirs: Vec<(V1Hierarchy, PathBuf)>,
}

impl V1Cgroup {
    pub fn new(hierarchies: &[V1Hierarchy], relative: &Path) -> V1Cgroup {
        V1Cgroup {
            dirs: hierarchies
                .iter()
                .map(|h| (h.clone(), h.mount_point.join(relative)))
                .collect(),
        }
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(h, _)| h.has(controller))
            .map(|(_, d)| d.as_path())
    }

    fn require(&self, controller: &str) -> Result<&Path, CgroupError> {
        self.dir(controller)
            .ok_or_else(|| CgroupError::MissingController(controller.to_string()))
    }
}

impl CgroupManager for V1Cgroup {
    fn create(&self) -> Result<(), CgroupError> {
        for (hierarchy, dir) in &self.dirs {
            // The parents (`carton/`) exist after the first container: the container's own
            // directory is tried first, and the walk from the root only runs when that fails.
            match fs::create_dir(dir) {
                Ok(()) => seed_cpuset(hierarchy, dir)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => create_levels(hierarchy, dir)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => seed_cpuset(hierarchy, dir)?,
                Err(source) => {
                    return Err(CgroupError::Create {
                        path: dir.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    fn apply(&self, r: &Resources) -> Result<(), CgroupError> {
        if r.memory.is_some() || r.memory_swap.is_some() || r.memory_reservation.is_some() {
            let dir = self.require("memory")?;
            if let Some(memory) = r.memory {
                set_memory(dir, memory, r.memory_swap)?;
            } else if let Some(swap) = r.memory_swap {
                write_swap(dir, swap)?;
            }
            if let Some(reservation) = r.memory_reservation {
                files::write(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
            }
        }
        if r.cpu_shares.is_some() || r.cpu_quota.is_some() || r.cpu_period.is_some() {
            let dir = self.require("cpu")?;
            if let Some(shares) = r.cpu_shares {
                files::write(dir, "cpu.shares", &shares.to_string())?;
            }
            // The period first: a quota is checked against the period in place.
            if let Some(period) = r.cpu_period {
                files::write(dir, "cpu.cfs_period_us", &period.to_string())?;
            }
            if let Some(quota) = r.cpu_quota {
                files::write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if let Some(cpus) = &r.cpuset_cpus {
            files::write(self.require("cpuset")?, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = &r.cpuset_mems {
            files::write(self.require("cpuset")?, "cpuset.mems", mems)?;
        }
        if let Some(limit) = r.pids_limit {
            let value = if limit > 0 {
                limit.to_string()
            } else {
                "max".into()
            };
            files::write(self.require("pids")?, "pids.max", &value)?;
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for (_, dir) in &self.dirs {
            files::write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    fn entry(&self) -> Result<Entry, CgroupError> {
        self.dirs
            .iter()
            .map(|(_, dir)| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("tasks"))
                    .map_err(|source| CgroupError::Write {
                        path: dir.join("tasks"),
                        value: "0".into(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()
            .map(Entry::SelfMove)
    }

    fn view(&self) -> CgroupView {
        CgroupView::V1(
            self.dirs
                .iter()
                .map(|(h, dir)| (h.name(), dir.clone()))
                .collect(),
        )
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let mut stats = Stats::default();
        if let Some(dir) = self.dir("cpuacct") {
            stats.cpu_usage_ns = files::read_u64(dir, "cpuacct.usage")?;
        }
        if let Some(dir) = self.dir("cpu") {
            let text = files::read(dir, "cpu.stat")?;
            stats.cpu_periods = keyed(&text, "nr_periods").unwrap_or(0);
            stats.cpu_throttled_periods = keyed(&text, "nr_throttled").unwrap_or(0);
        }
        if let Some(dir) = self.dir("memory") {
            let usage = files::read_u64(dir, "memory.usage_in_bytes")?;
            let inactive =
                keyed(&files::read(dir, "memory.stat")?, "total_inactive_file").unwrap_or(0);
            stats.memory_usage = usage.saturating_sub(inactive);
            let limit = files::read_u64(dir, "memory.limit_in_bytes")?;
            stats.memory_limit = (limit < V1_UNLIMITED).then_some(limit);
        }
        if let Some(dir) = self.dir("pids") {
            stats.pids = files::read_u64(dir, "pids.current")?;
            stats.pids_limit = files::read(dir, "pids.max")?.trim().parse().ok();
        }
        if let Some(dir) = self.dir("blkio") {
            // "MAJ:MIN Read N" lines; absent on kernels without the throttle files.
            if let Ok(text) = files::read(dir, "blkio.throttle.io_service_bytes") {
                for line in text.lines() {
                    let parts: Vec<&str> = line.split_whitespace().collect();
                    if let [_, op, value] = parts.as_slice() {
                        let value: u64 = value.parse().unwrap_or(0);
                        match *op {
                            "Read" => stats.io_read += value,
                            "Write" => stats.io_write += value,
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(stats)
    }

    fn oom_kills(&self) -> Result<u64, CgroupError> {
        let Some(dir) = self.dir("memory") else {
            return Ok(0);
        };
        Ok(keyed(&files::read(dir, "memory.oom_control")?, "oom_kill").unwrap_or(0))
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        // Every process is in every hierarchy; any one lists them all.
        match self.dirs.first() {
            Some((_, dir)) if dir.exists() => files::procs(dir),
            _ => Ok(Vec::new()),
        }
    }

    fn exists(&self) -> bool {
        self.dirs.iter().any(|(_, d)| d.exists())
    }

    fn apply_devices(&self, rules: &[super::devices::DeviceRule]) -> Result<(), CgroupError> {
        if rules.is_empty() {
            return Ok(());
        }
        super::devices::apply_v1(self.require("devices")?, rules)
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        freezer(self.require("freezer")?).freeze(FREEZE_TIMEOUT)
    }

    fn is_frozen(&self) -> bool {
        self.require("freezer")
            .is_ok_and(|d| (freezer(d).is_frozen)(d).unwrap_or(false))
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        freezer(self.require("freezer")?).thaw()
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        let mut first_error = None;
        for (_, dir) in &self.dirs {
            if let Err(e) = files::remove_dir(dir) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Creates `dir` one level at a time from the hierarchy's root, seeding each new level's
/// cpuset on the way down.
fn create_levels(hierarchy: &V1Hierarchy, dir: &Path) -> Result<(), CgroupError> {
    let relative = dir.strip_prefix(&hierarchy.mount_point).unwrap_or(dir);
    let mut current = hierarchy.mount_point.clone();
    for part in relative.components() {
        current.push(part);
        if super::make_level(&current)? {
            seed_cpuset(hierarchy, &current)?;
        }
    }
    Ok(())
}

/// A new v1 cpuset starts empty, and attaching a task to an empty cpuset fails with ENOSPC
/// (mydocker #66): an empty directory gets its parent's CPUs and memory nodes, the parent
/// first if it is empty too (left so by someone else, or by a carton killed mid-way).
fn seed_cpuset(hierarchy: &V1Hierarchy, dir: &Path) -> Result<(), CgroupError> {
    if !hierarchy.has("cpuset") || dir == hierarchy.mount_point {
        return Ok(());
    }
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if files::read(dir, file)?.trim().is_empty() {
            let mut inherited = files::read(parent, file)?;
            if inherited.trim().is_empty() {
                seed_cpuset(hierarchy, parent)?;
                inherited = files::read(parent, file)?;
            }
            files::write(dir, file, inherited.trim())?;
        }
    }
    Ok(())
}

/// v1's freezer: freezer.state goes THAWED → FREEZING → FROZEN.
fn freezer(dir: &Path) -> Freezer<'_> {
    Freezer {
        dir,
        control: "freezer.state",
        frozen: "FROZEN",
        thawed: "THAWED",
        is_frozen: |dir| Ok(files::read(dir, "freezer.state")?.trim() == "FROZEN"),
    }
}

/// v1 insists that memory.memsw.limit_in_bytes ≥ memory.limit_in_bytes at every moment, so
/// the order of the two writes depends on whether the limits grow or shrink.
fn set_memory(dir: &Path, memory: i64, swap: Option<i64>) -> Result<(), CgroupError> {
    let write_memory = || files::write(dir, "memory.limit_in_bytes", &memory.to_string());
    match swap {
        None => write_memory(),
        Some(swap) => {
            let current_swap = files::read_u64(dir, "memory.memsw.limit_in_bytes").ok();
            let growing = swap == -1 || current_swap.is_none_or(|c| (swap as u64) >= c);
            if growing {
                write_swap(dir, swap)?;
                write_memory()
            } else {
                write_memory()?;
                write_swap(dir, swap)
            }
        }
    }
}

fn write_swap(dir: &Path, swap: i64) -> Result<(), CgroupError> {
    if !dir.join("memory.memsw.limit_in_bytes").exists() {
        return Err(CgroupError::Unsupported(
            "limiting swap on this kernel (swap accounting is disabled)".into(),
        ));
    }
    files::write(dir, "memory.memsw.limit_in_bytes", &swap.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::V1Hierarchy;

    /// A v1 "hierarchy" made of plain directories: enough to check which file gets which
    /// value, without root or a cgroup filesystem.
    fn hierarchy(root: &Path, controllers: &[&str]) -> V1Hierarchy {
        let mount_point = root.join(controllers.join(","));
        fs::create_dir_all(&mount_point).unwrap();
        if controllers.contains(&"cpuset") {
            fs::write(mount_point.join("cpuset.cpus"), "0-3\n").unwrap();
            fs::write(mount_point.join("cpuset.mems"), "0\n").unwrap();
        }
        V1Hierarchy {
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            mount_point,
        }
    }

    fn read(dir: &Path, file: &str) -> String {
        fs::read_to_string(dir.join(file)).unwrap()
    }

    #[test]
    fn cpusets_are_seeded_from_the_parent_on_the_way_down() {
        let tmp = tempfile::tempdir().unwrap();
        let cpuset = hierarchy(tmp.path(), &["cpuset"]);
        // Plain directories start without the files a real cpuset dir has (empty).
        let cg = V1Cgroup::new(std::slice::from_ref(&cpuset), Path::new("carton/abc"));
        // Pre-create the empty files the kernel would show.
        for dir in ["carton", "carton/abc"] {
            fs::create_dir_all(cpuset.mount_point.join(dir)).unwrap();
            fs::write(cpuset.mount_point.join(dir).join("cpuset.cpus"), "").unwrap();
            fs::write(cpuset.mount_point.join(dir).join("cpuset.mems"), "").unwrap();
        }
        cg.create().unwrap();
        let leaf = cpuset.mount_point.join("carton/abc");
        assert_eq!(read(&leaf, "cpuset.cpus"), "0-3");
        assert_eq!(read(&leaf, "cpuset.mems"), "0");
        let parent = cpuset.mount_point.join("carton");
        assert_eq!(read(&parent, "cpuset.cpus"), "0-3");
    }

    #[test]
    fn limits_go_to_their_files() {
        let tmp = tempfile::tempdir().unwrap();
        let hierarchies = [
            hierarchy(tmp.path(), &["cpu", "cpuacct"]),
            hierarchy(tmp.path(), &["memory"]),
            hierarchy(tmp.path(), &["pids"]),
        ];
        let cg = V1Cgroup::new(&hierarchies, Path::new("carton/abc"));
        cg.create().unwrap();
        let memory = hierarchies[1].mount_point.join("carton/abc");
        fs::write(
            memory.join("memory.memsw.limit_in_bytes"),
            "9223372036854771712",
        )
        .unwrap();
        cg.apply(&Resources {
            memory: Some(64 << 20),
            memory_swap: Some(128 << 20),
            memory_reservation: Some(32 << 20),
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            pids_limit: Some(-1),
            ..Default::default()
        })
        .unwrap();
        let cpu = hierarchies[0].mount_point.join("carton/abc");
        assert_eq!(read(&memory, "memory.limit_in_bytes"), "67108864");
        assert_eq!(read(&memory, "memory.memsw.limit_in_bytes"), "134217728");
        assert_eq!(read(&memory, "memory.soft_limit_in_bytes"), "33554432");
        assert_eq!(read(&cpu, "cpu.shares"), "512");
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
        let pids = hierarchies[2].mount_point.join("carton/abc");
        assert_eq!(read(&pids, "pids.max"), "max");
        assert_eq!(
            cg.view(),
            CgroupView::V1(vec![
                ("cpu,cpuacct".into(), cpu.clone()),
                ("memory".into(), memory.clone()),
                ("pids".into(), pids.clone()),
            ])
        );
    }

    #[test]
    fn a_missing_controller_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = V1Cgroup::new(&[hierarchy(tmp.path(), &["memory"])], Path::new("carton/x"));
        cg.create().unwrap();
        let err = cg
            .apply(&Resources {
                pids_limit: Some(5),
                ..Default::default()
            })
            .unwrap_err();
        assert!(
            matches!(err, CgroupError::MissingController(ref c) if c == "pids"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "the pids cgroup controller is not available on this host"
        );
    }

    #[test]
    fn swap_without_accounting_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = V1Cgroup::new(&[hierarchy(tmp.path(), &["memory"])], Path::new("carton/x"));
        cg.create().unwrap();
        let err = cg
            .apply(&Resources {
                memory: Some(64 << 20),
                memory_swap: Some(128 << 20),
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(err, CgroupError::Unsupported(_)), "{err}");
    }

    #[test]
    fn freezing_goes_through_the_freezer_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let hierarchies = [
            hierarchy(tmp.path(), &["memory"]),
            hierarchy(tmp.path(), &["freezer"]),
        ];
        let cg = V1Cgroup::new(&hierarchies, Path::new("carton/abc"));
        cg.create().unwrap();
        let dir = hierarchies[1].mount_point.join("carton/abc");
        // A plain file echoes what is written: FROZEN reads back at once.
        cg.freeze().unwrap();
        assert_eq!(read(&dir, "freezer.state"), "FROZEN");
        cg.thaw().unwrap();
        assert_eq!(read(&dir, "freezer.state"), "THAWED");
        let without = V1Cgroup::new(&hierarchies[..1], Path::new("carton/abc"));
        assert!(
            matches!(without.freeze(), Err(CgroupError::MissingController(c)) if c == "freezer")
        );
    }
}
