//! The cgroup v2 backend: one directory in the unified hierarchy.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::files::{self, keyed};
use super::freezer::{FREEZE_TIMEOUT, Freezer};
use super::resources::{cpu_max, shares_to_weight, v2_bytes, v2_swap_max};
use super::{CgroupError, CgroupManager, CgroupView, Entry, Resources, Stats};

/// Controllers carton enables for its containers when the parent offers them.
const WANTED: &[&str] = &["cpu", "cpuset", "memory", "pids", "io"];

#[derive(Debug)]
pub struct V2Cgroup {
    mount_point: PathBuf,
    relative: PathBuf,
    dir: PathBuf,
}

impl V2Cgroup {
    pub fn new(mount_point: &Path, relative: &Path) -> V2Cgroup {
        V2Cgroup {
            mount_point: mount_point.to_path_buf(),
            relative: relative.to_path_buf(),
            dir: mount_point.join(relative),
        }
    }

    fn has_controller(&self, controller: &str) -> bool {
        files::read(&self.dir, "cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|x| x == controller))
    }

    fn require(&self, controller: &str) -> Result<&Path, CgroupError> {
        if self.has_controller(controller) {
            Ok(&self.dir)
        } else {
            Err(CgroupError::MissingController(controller.to_string()))
        }
    }
}

/// Enables in `dir`'s subtree every wanted controller that `dir` itself has.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let available = files::read(dir, "cgroup.controllers")?;
    let enabled = files::read(dir, "cgroup.subtree_control")?;
    let missing: Vec<String> = WANTED
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // One write enables all of them; if one is refused (e.g. a threaded subtree), enable the
    // others one by one and let `apply` name what is missing.
    if files::write(dir, "cgroup.subtree_control", &missing.join(" ")).is_err() {
        for controller in &missing {
            let _ = files::write(dir, "cgroup.subtree_control", controller);
        }
    }
    Ok(())
}

impl CgroupManager for V2Cgroup {
    fn create(&self) -> Result<(), CgroupError> {
        let mut current = self.mount_point.clone();
        for part in self.relative.components() {
            enable_controllers(&current)?;
            current.push(part);
            super::make_level(&current)?;
        }
        Ok(())
    }

    fn apply(&self, r: &Resources) -> Result<(), CgroupError> {
        if let Some(memory) = r.memory {
            files::write(self.require("memory")?, "memory.max", &v2_bytes(memory))?;
        }
        if let Some(swap) = v2_swap_max(r.memory, r.memory_swap) {
            let dir = self.require("memory")?;
            if !dir.join("memory.swap.max").exists() {
                return Err(CgroupError::Unsupported(
                    "limiting swap on this kernel (swap accounting is disabled)".into(),
                ));
            }
            files::write(dir, "memory.swap.max", &swap)?;
        }
        if let Some(reservation) = r.memory_reservation {
            files::write(
                self.require("memory")?,
                "memory.low",
                &v2_bytes(reservation),
            )?;
        }
        if let Some(shares) = r.cpu_shares {
            files::write(
                self.require("cpu")?,
                "cpu.weight",
                &shares_to_weight(shares).to_string(),
            )?;
        }
        if let Some(max) = cpu_max(r.cpu_quota, r.cpu_period) {
            files::write(self.require("cpu")?, "cpu.max", &max)?;
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
        files::write(&self.dir, "cgroup.procs", &pid.to_string())
    }

    fn entry(&self) -> Result<Entry, CgroupError> {
        // Kernels before 6.2 (without the backport) give a task born in a cpuset with
        // CLONE_INTO_CGROUP its parent's CPUs and memory nodes instead of the cpuset's (fixed
        // upstream by "cgroup/cpuset: Make cpuset_fork() handle CLONE_INTO_CGROUP properly";
        // seen on Debian's 5.10). With a cpuset of its own, the child is moved in by a write
        // to cgroup.procs instead, which applies the cpuset.
        let restricted = |file: &str| {
            std::fs::read_to_string(self.dir.join(file)).is_ok_and(|v| !v.trim().is_empty())
        };
        if restricted("cpuset.cpus") || restricted("cpuset.mems") {
            return Ok(Entry::ByParent);
        }
        let path = std::ffi::CString::new(self.dir.as_os_str().as_bytes())
            .map_err(|_| CgroupError::InvalidPath(self.dir.display().to_string()))?;
        // SAFETY: open with a NUL-terminated path.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(CgroupError::Read {
                path: self.dir.clone(),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: fresh fd.
        Ok(Entry::CloneInto(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn view(&self) -> CgroupView {
        CgroupView::V2
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let mut stats = Stats::default();
        let cpu = files::read(&self.dir, "cpu.stat")?;
        stats.cpu_usage_ns = keyed(&cpu, "usage_usec").unwrap_or(0) * 1000;
        stats.cpu_periods = keyed(&cpu, "nr_periods").unwrap_or(0);
        stats.cpu_throttled_periods = keyed(&cpu, "nr_throttled").unwrap_or(0);
        if self.has_controller("memory") {
            let current = files::read_u64(&self.dir, "memory.current")?;
            let inactive =
                keyed(&files::read(&self.dir, "memory.stat")?, "inactive_file").unwrap_or(0);
            stats.memory_usage = current.saturating_sub(inactive);
            stats.memory_limit = files::read(&self.dir, "memory.max")?.trim().parse().ok();
        }
        if self.has_controller("pids") {
            stats.pids = files::read_u64(&self.dir, "pids.current")?;
            stats.pids_limit = files::read(&self.dir, "pids.max")?.trim().parse().ok();
        }
        if let Ok(io) = files::read(&self.dir, "io.stat") {
            // "MAJ:MIN rbytes=N wbytes=N rios=N …" per device.
            for word in io.split_whitespace() {
                if let Some(v) = word.strip_prefix("rbytes=") {
                    stats.io_read += v.parse::<u64>().unwrap_or(0);
                } else if let Some(v) = word.strip_prefix("wbytes=") {
                    stats.io_write += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
        Ok(stats)
    }

    fn oom_kills(&self) -> Result<u64, CgroupError> {
        if !self.dir.join("memory.events").exists() {
            return Ok(0);
        }
        Ok(keyed(&files::read(&self.dir, "memory.events")?, "oom_kill").unwrap_or(0))
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        if self.dir.exists() {
            files::procs(&self.dir)
        } else {
            Ok(Vec::new())
        }
    }

    fn exists(&self) -> bool {
        self.dir.exists()
    }

    fn apply_devices(&self, rules: &[super::devices::DeviceRule]) -> Result<(), CgroupError> {
        if rules.is_empty() {
            return Ok(());
        }
        super::devices::attach_v2(&self.dir, rules)
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        freezer(&self.dir).freeze(FREEZE_TIMEOUT)
    }

    fn is_frozen(&self) -> bool {
        (freezer(&self.dir).is_frozen)(&self.dir).unwrap_or(false)
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        freezer(&self.dir).thaw()
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        files::remove_dir(&self.dir)
    }
}

/// v2's freezer (Linux ≥ 5.2): cgroup.freeze, with the outcome in cgroup.events.
fn freezer(dir: &Path) -> Freezer<'_> {
    Freezer {
        dir,
        control: "cgroup.freeze",
        frozen: "1",
        thawed: "0",
        is_frozen: |dir| Ok(keyed(&files::read(dir, "cgroup.events")?, "frozen") == Some(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn read(dir: &Path, file: &str) -> String {
        fs::read_to_string(dir.join(file)).unwrap()
    }

    /// Plain directories standing in for cgroup2: controllers are offered by writing the
    /// cgroup.controllers files a kernel would show.
    fn fake_v2(root: &Path, controllers: &str) {
        fs::write(root.join("cgroup.controllers"), controllers).unwrap();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
    }

    #[test]
    fn controllers_are_enabled_on_the_way_down_and_limits_mapped() {
        let tmp = tempfile::tempdir().unwrap();
        fake_v2(tmp.path(), "cpuset cpu io memory hugetlb pids");
        let cg = V2Cgroup::new(tmp.path(), Path::new("carton/abc"));
        // The intermediate level exists with what the root delegated.
        fs::create_dir_all(tmp.path().join("carton")).unwrap();
        fake_v2(&tmp.path().join("carton"), "cpuset cpu io memory pids");
        cg.create().unwrap();
        assert_eq!(
            read(tmp.path(), "cgroup.subtree_control"),
            "+cpu +cpuset +memory +pids +io"
        );
        let leaf = tmp.path().join("carton/abc");
        fs::write(leaf.join("cgroup.controllers"), "cpuset cpu io memory pids").unwrap();
        fs::write(leaf.join("memory.swap.max"), "max").unwrap();
        cg.apply(&Resources {
            memory: Some(64 << 20),
            memory_swap: Some(96 << 20),
            memory_reservation: Some(32 << 20),
            cpu_shares: Some(512),
            cpu_quota: Some(150_000),
            cpu_period: Some(100_000),
            cpuset_cpus: Some("0".into()),
            pids_limit: Some(7),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(read(&leaf, "memory.max"), "67108864");
        assert_eq!(read(&leaf, "memory.swap.max"), "33554432");
        assert_eq!(read(&leaf, "memory.low"), "33554432");
        assert_eq!(read(&leaf, "cpu.weight"), "20");
        assert_eq!(read(&leaf, "cpu.max"), "150000 100000");
        assert_eq!(read(&leaf, "cpuset.cpus"), "0");
        assert_eq!(read(&leaf, "pids.max"), "7");
        assert_eq!(cg.view(), CgroupView::V2);
    }

    #[test]
    fn a_controller_the_parent_does_not_offer_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        fake_v2(tmp.path(), "memory");
        let cg = V2Cgroup::new(tmp.path(), Path::new("c"));
        cg.create().unwrap();
        fs::write(tmp.path().join("c/cgroup.controllers"), "memory").unwrap();
        let err = cg
            .apply(&Resources {
                pids_limit: Some(3),
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(err, CgroupError::MissingController(ref c) if c == "pids"));
    }

    #[test]
    fn freezing_waits_for_cgroup_events() {
        let tmp = tempfile::tempdir().unwrap();
        fake_v2(tmp.path(), "memory");
        let cg = V2Cgroup::new(tmp.path(), Path::new("c"));
        cg.create().unwrap();
        let leaf = tmp.path().join("c");
        fs::write(leaf.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        cg.freeze().unwrap();
        assert_eq!(read(&leaf, "cgroup.freeze"), "1");
        cg.thaw().unwrap();
        assert_eq!(read(&leaf, "cgroup.freeze"), "0");
    }
}
