//! `stats`: usage of running containers from their cgroups (CPU, memory, pids, block I/O) and
//! network namespaces (bytes through every interface but `lo`).

use std::time::Instant;

use super::{ContainerError, cgroup_path};
use crate::cgroups::{self, Layout};
use crate::state::ContainerRecord;

/// One reading of a container's counters.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub cgroup: cgroups::Stats,
    pub net_rx: u64,
    pub net_tx: u64,
}

/// What `docker stats` shows for one container.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub cpu_percent: f64,
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub memory_percent: f64,
    pub net_rx: u64,
    pub net_tx: u64,
    pub io_read: u64,
    pub io_write: u64,
    pub pids: u64,
}

pub fn sample(layout: &Layout, record: &ContainerRecord) -> Result<Sample, ContainerError> {
    let cgroup = cgroups::open(layout, &cgroup_path(&record.id))?.stats()?;
    let (net_rx, net_tx) = record.pid.map(network_bytes).unwrap_or((0, 0));
    Ok(Sample {
        at: Instant::now(),
        cgroup,
        net_rx,
        net_tx,
    })
}

/// CPU % over the interval between two samples (100% = one CPU busy, as docker counts).
pub fn usage(before: &Sample, after: &Sample, host_memory: u64) -> Usage {
    let wall = after.at.duration_since(before.at).as_nanos() as f64;
    let cpu = after
        .cgroup
        .cpu_usage_ns
        .saturating_sub(before.cgroup.cpu_usage_ns) as f64;
    let cpu_percent = if wall > 0.0 { cpu / wall * 100.0 } else { 0.0 };
    let memory_limit = after
        .cgroup
        .memory_limit
        .map_or(host_memory, |l| l.min(host_memory));
    let memory_usage = after.cgroup.memory_usage;
    let memory_percent = if memory_limit > 0 {
        memory_usage as f64 / memory_limit as f64 * 100.0
    } else {
        0.0
    };
    Usage {
        cpu_percent,
        memory_usage,
        memory_limit,
        memory_percent,
        net_rx: after.net_rx,
        net_tx: after.net_tx,
        io_read: after.cgroup.io_read,
        io_write: after.cgroup.io_write,
        pids: after.cgroup.pids,
    }
}

/// MemTotal of the host, in bytes.
pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Received and sent bytes over the container's interfaces, `lo` excluded.
fn network_bytes(pid: i32) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/dev")) else {
        return (0, 0);
    };
    parse_net_dev(&text)
}

fn parse_net_dev(text: &str) -> (u64, u64) {
    let mut rx = 0;
    let mut tx = 0;
    for line in text.lines().skip(2) {
        let Some((name, values)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = values
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        if fields.len() >= 9 {
            rx += fields[0];
            tx += fields[8];
        }
    }
    (rx, tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let start = Instant::now();
        let before = Sample {
            at: start,
            cgroup: cgroups::Stats::default(),
            net_rx: 0,
            net_tx: 0,
        };
        let after = Sample {
            at: start + Duration::from_secs(1),
            cgroup: cgroups::Stats {
                cpu_usage_ns: 500_000_000,
                memory_usage: 25,
                memory_limit: Some(100),
                pids: 3,
                ..Default::default()
            },
            net_rx: 0,
            net_tx: 0,
        };
        let u = usage(&before, &after, 1000);
        assert!((u.cpu_percent - 50.0).abs() < 1e-9);
        assert_eq!((u.memory_limit, u.pids), (100, 3));
        assert!((u.memory_percent - 25.0).abs() < 1e-9);
        // Unlimited: the host's memory is the limit.
        let mut unlimited = after.clone();
        unlimited.cgroup.memory_limit = None;
        assert_eq!(usage(&before, &unlimited, 1000).memory_limit, 1000);
    }

    #[test]
    fn net_dev_skips_loopback() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 2000 5 0 0 0 0 0 0 3000 6 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(text), (2000, 3000));
    }
}
