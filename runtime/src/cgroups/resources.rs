//! The limits carton applies, and how each maps onto v1 and v2 files (DESIGN.md §6).

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};

use super::CgroupError;

/// CPU period docker uses for `--cpus` (100 ms).
pub const DEFAULT_CPU_PERIOD: u64 = 100_000;

/// Limits of one container. `None` leaves the kernel's default (unlimited) in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Bytes.
    pub memory: Option<i64>,
    /// Memory + swap in bytes, docker's `--memory-swap`; -1 = unlimited swap.
    pub memory_swap: Option<i64>,
    /// Soft limit in bytes.
    pub memory_reservation: Option<i64>,
    pub cpu_shares: Option<u64>,
    /// Microseconds per period; -1 = unlimited.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// -1 = unlimited.
    pub pids_limit: Option<i64>,
}

impl Resources {
    /// Reads the parts of an OCI `linux.resources` that carton implements; anything else set
    /// there is refused with the name of the field.
    pub fn from_oci(oci: &LinuxResources) -> Result<Resources, CgroupError> {
        let unsupported = |what: &str| Err(CgroupError::Unsupported(what.to_string()));
        // `devices` (the allow-list) is read by `devices::DeviceRule::from_oci`: it is applied
        // once when the cgroup is made, never by `update`.
        if oci.block_io().is_some() {
            return unsupported("linux.resources.blockIO");
        }
        if oci
            .hugepage_limits()
            .as_ref()
            .is_some_and(|h| !h.is_empty())
        {
            return unsupported("linux.resources.hugepageLimits");
        }
        if oci.network().is_some() || oci.rdma().is_some() {
            return unsupported("linux.resources.network / rdma");
        }
        if oci.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return unsupported("linux.resources.unified");
        }
        let mut r = Resources::default();
        if let Some(memory) = oci.memory() {
            refuse_memory_extras(memory)?;
            r.memory = memory.limit();
            r.memory_swap = memory.swap();
            r.memory_reservation = memory.reservation();
        }
        if let Some(cpu) = oci.cpu() {
            refuse_cpu_extras(cpu)?;
            r.cpu_shares = cpu.shares();
            r.cpu_quota = cpu.quota();
            r.cpu_period = cpu.period();
            r.cpuset_cpus = cpu.cpus().clone().filter(|s| !s.is_empty());
            r.cpuset_mems = cpu.mems().clone().filter(|s| !s.is_empty());
        }
        if let Some(pids) = oci.pids() {
            r.pids_limit = Some(pids.limit());
        }
        Ok(r)
    }

    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    /// Controllers (v1 names) these limits need.
    pub fn needed_controllers(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.memory.is_some() || self.memory_swap.is_some() || self.memory_reservation.is_some()
        {
            out.push("memory");
        }
        if self.cpu_shares.is_some() || self.cpu_quota.is_some() || self.cpu_period.is_some() {
            out.push("cpu");
        }
        if self.cpuset_cpus.is_some() || self.cpuset_mems.is_some() {
            out.push("cpuset");
        }
        if self.pids_limit.is_some() {
            out.push("pids");
        }
        out
    }

    /// Fills the fields `update` did not mention from the current limits.
    pub fn merged_over(&self, current: &Resources) -> Resources {
        Resources {
            memory: self.memory.or(current.memory),
            memory_swap: self.memory_swap.or(current.memory_swap),
            memory_reservation: self.memory_reservation.or(current.memory_reservation),
            cpu_shares: self.cpu_shares.or(current.cpu_shares),
            cpu_quota: self.cpu_quota.or(current.cpu_quota),
            cpu_period: self.cpu_period.or(current.cpu_period),
            cpuset_cpus: self.cpuset_cpus.clone().or(current.cpuset_cpus.clone()),
            cpuset_mems: self.cpuset_mems.clone().or(current.cpuset_mems.clone()),
            pids_limit: self.pids_limit.or(current.pids_limit),
        }
    }
}

/// The memory settings carton does not write. Values that ask for what happens anyway pass:
/// hierarchical accounting (v2 always has it and recent v1 kernels no longer offer anything
/// else; carton never writes memory.use_hierarchy), and no check before an update.
fn refuse_memory_extras(memory: &LinuxMemory) -> Result<(), CgroupError> {
    let unsupported = |what: &str| Err(CgroupError::Unsupported(what.to_string()));
    if memory.kernel().is_some()
        || memory.kernel_tcp().is_some()
        || memory.swappiness().is_some()
        || memory.disable_oom_killer().is_some()
    {
        return unsupported(
            "linux.resources.memory (kernel, kernelTCP, swappiness, disableOOMKiller)",
        );
    }
    if memory.use_hierarchy() == Some(false) {
        return unsupported("linux.resources.memory.useHierarchy = false");
    }
    if memory.check_before_update() == Some(true) {
        return unsupported("linux.resources.memory.checkBeforeUpdate");
    }
    Ok(())
}

/// The cpu settings carton does not write. 0 is the kernel's default for idle and burst.
fn refuse_cpu_extras(cpu: &LinuxCpu) -> Result<(), CgroupError> {
    let unsupported = |what: &str| Err(CgroupError::Unsupported(what.to_string()));
    if cpu.realtime_period().is_some() || cpu.realtime_runtime().is_some() {
        return unsupported("linux.resources.cpu realtime settings");
    }
    if cpu.idle().is_some_and(|idle| idle != 0) {
        return unsupported("linux.resources.cpu.idle");
    }
    if cpu.burst().is_some_and(|burst| burst != 0) {
        return unsupported("linux.resources.cpu.burst");
    }
    Ok(())
}

/// runc's conversion of v1 shares [2, 262144] to v2 weight [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// `cpu.max` content: "<quota> <period>" or "max <period>".
pub fn cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    if quota.is_none() && period.is_none() {
        return None;
    }
    let period = period.unwrap_or(DEFAULT_CPU_PERIOD);
    Some(match quota {
        Some(q) if q > 0 => format!("{q} {period}"),
        _ => format!("max {period}"),
    })
}

/// v2 `memory.swap.max`: docker's memory-swap is memory + swap, v2 limits swap alone.
pub fn v2_swap_max(memory: Option<i64>, memory_swap: Option<i64>) -> Option<String> {
    match (memory, memory_swap) {
        (_, Some(-1)) => Some("max".into()),
        (Some(m), Some(total)) => Some((total - m).max(0).to_string()),
        _ => None,
    }
}

/// A byte limit as v2 writes it: -1 (or less) is "max".
pub fn v2_bytes(value: i64) -> String {
    if value < 0 {
        "max".into()
    } else {
        value.to_string()
    }
}

/// Parses a cpuset list ("0-2,4") into the ids it names.
pub fn parse_cpu_list(list: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in list.trim().split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("invalid list {list:?}"));
        }
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u32, u32) = (
            a.parse().map_err(|_| format!("invalid list {list:?}"))?,
            b.parse().map_err(|_| format!("invalid list {list:?}"))?,
        );
        if a > b || b - a > 65_536 {
            return Err(format!("invalid range {part:?} in {list:?}"));
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(512), 20);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 100);
    }

    #[test]
    fn cpu_max_lines() {
        assert_eq!(
            cpu_max(Some(50_000), Some(100_000)).as_deref(),
            Some("50000 100000")
        );
        assert_eq!(cpu_max(Some(50_000), None).as_deref(), Some("50000 100000"));
        assert_eq!(cpu_max(Some(-1), None).as_deref(), Some("max 100000"));
        assert_eq!(cpu_max(None, None), None);
    }

    #[test]
    fn swap_is_total_minus_memory_on_v2() {
        assert_eq!(v2_swap_max(Some(100), Some(300)).as_deref(), Some("200"));
        assert_eq!(v2_swap_max(Some(100), Some(-1)).as_deref(), Some("max"));
        assert_eq!(v2_swap_max(Some(100), Some(100)).as_deref(), Some("0"));
        assert_eq!(v2_swap_max(Some(100), None), None);
        assert_eq!(v2_bytes(-1), "max");
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-2,4").unwrap(), [0, 1, 2, 4]);
        assert_eq!(parse_cpu_list("1").unwrap(), [1]);
        assert_eq!(parse_cpu_list("3,1,1").unwrap(), [1, 3]);
        for bad in ["", "a", "2-1", "1,,2", "-1"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn oci_resources_are_read_and_extras_refused() {
        let oci: LinuxResources = serde_json::from_str(
            r#"{"memory": {"limit": 67108864, "swap": -1}, "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"}, "pids": {"limit": 10}}"#,
        )
        .unwrap();
        let r = Resources::from_oci(&oci).unwrap();
        assert_eq!(r.memory, Some(67_108_864));
        assert_eq!(r.memory_swap, Some(-1));
        assert_eq!(r.cpuset_cpus.as_deref(), Some("0"));
        assert_eq!(r.needed_controllers(), ["memory", "cpu", "cpuset", "pids"]);
        let blkio: LinuxResources = serde_json::from_str(r#"{"blockIO": {"weight": 10}}"#).unwrap();
        assert!(Resources::from_oci(&blkio).is_err());
    }

    #[test]
    fn cpu_and_memory_extras_are_refused_unless_they_ask_for_the_default() {
        let read = |json: &str| {
            let oci: LinuxResources = serde_json::from_str(json).unwrap();
            Resources::from_oci(&oci)
        };
        for (json, named) in [
            (r#"{"cpu": {"idle": 1}}"#, "cpu.idle"),
            (r#"{"cpu": {"burst": 1000}}"#, "cpu.burst"),
            (
                r#"{"memory": {"checkBeforeUpdate": true}}"#,
                "memory.checkBeforeUpdate",
            ),
            (
                r#"{"memory": {"useHierarchy": false}}"#,
                "memory.useHierarchy",
            ),
        ] {
            match read(json) {
                Err(CgroupError::Unsupported(m)) => assert!(m.contains(named), "{json}: {m}"),
                other => panic!("{json} was not refused: {other:?}"),
            }
        }
        let defaults = read(
            r#"{"cpu": {"idle": 0, "burst": 0, "shares": 2}, "memory": {"limit": 1048576, "useHierarchy": true, "checkBeforeUpdate": false}}"#,
        )
        .unwrap();
        assert_eq!(defaults.memory, Some(1_048_576));
        assert_eq!(defaults.cpu_shares, Some(2));
    }

    #[test]
    fn update_keeps_unmentioned_limits() {
        let current = Resources {
            memory: Some(1),
            pids_limit: Some(5),
            ..Default::default()
        };
        let change = Resources {
            pids_limit: Some(9),
            ..Default::default()
        };
        let merged = change.merged_over(&current);
        assert_eq!((merged.memory, merged.pids_limit), (Some(1), Some(9)));
    }
}
