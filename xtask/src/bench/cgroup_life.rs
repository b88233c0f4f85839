//! Row 3c: what making and removing a container's cgroup costs — carton's own cgroup code,
//! timed in this process around a child that enters the cgroup the way a container's init does
//! and exits. `carton run` has no mode without a cgroup (and carton-runtime gives a bundle
//! without `linux.cgroupsPath` a default one), so the difference cannot be taken between two
//! runs; it is taken here, between the same child's life with and without the cgroup.
//!
//! Three lines, interleaved round by round:
//! - carton: create the cgroup (parents, cpusets seeded), write a 64 MiB limit and the default
//!   device rules, open the entry, child in and out, remove — what `run -m 64m` does with it;
//! - the cgroup alone: the same without the limit and the device rules;
//! - no cgroup: the child alone, the floor both are measured against.

use std::time::Instant;

use carton::cgroups::{self, CgroupManager, Layout, Resources, devices};
use carton::engine;

use super::measure::Stats;
use super::report::{Better, Line, Role, Row};
use super::setup::Bench;

const WARMUP: usize = 5;

/// What one cycle does with the cgroup.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cycle {
    /// A cgroup with a memory limit and the device rules.
    Limited,
    /// A cgroup without limits.
    Bare,
    /// No cgroup.
    Floor,
}

pub fn row(b: &Bench) -> Row {
    let mut row = Row::new(
        "cgroup",
        "3c",
        "a container's cgroup made and removed around its init (carton's code, in process)",
        "ms",
        Better::Lower,
    );
    let layout = Layout::detect();
    let cycles = [
        (
            Cycle::Limited,
            "carton",
            "cgroup with -m 64m and device rules: create, apply, child in, remove",
            Role::Carton,
        ),
        (
            Cycle::Bare,
            "carton",
            "cgroup without limits: create, child in, remove",
            Role::Reference,
        ),
        (
            Cycle::Floor,
            "fork",
            "no cgroup: the child alone (fork, exit, wait)",
            Role::Reference,
        ),
    ];
    let rounds = b.runs.max(20) * 2;
    println!(
        "  {} cases × ({WARMUP} warm-up + {rounds}) cycles, interleaved, layout {}",
        cycles.len(),
        layout.describe()
    );
    let mut samples: Vec<Result<Vec<f64>, String>> = vec![Ok(Vec::new()); cycles.len()];
    for round in 0..WARMUP + rounds {
        for (i, (cycle, ..)) in cycles.iter().enumerate() {
            let Ok(list) = &mut samples[i] else { continue };
            let path = format!("/carton/bench-cgroup-life-{}-{i}", std::process::id());
            match time_cycle(&layout, &path, *cycle) {
                Ok(ms) if round >= WARMUP => list.push(ms),
                Ok(_) => {}
                Err(e) => samples[i] = Err(e),
            }
        }
    }
    for ((cycle, tool, label, role), result) in cycles.iter().zip(samples) {
        let result = result.and_then(|s| Stats::of(s).ok_or_else(|| "no samples".to_string()));
        let command = match cycle {
            Cycle::Floor => "carton::engine::spawn_and_reap(None)".to_string(),
            _ => "carton::cgroups + carton::engine::spawn_and_reap, in process".to_string(),
        };
        row.lines
            .push(Line::from_result(tool, label, *role, command, result));
    }
    row.notes.push(format!(
        "Each cycle is timed with a monotonic clock in this process (cgroup layout: {}); the \
         child enters the cgroup as carton's init does (born in it on v2, moving itself on v1). \
         What the cgroup adds to a run is the carton line minus the no-cgroup line.",
        layout.describe()
    ));
    row
}

/// One cycle, in milliseconds; the cgroup is removed also when a step fails.
fn time_cycle(layout: &Layout, path: &str, cycle: Cycle) -> Result<f64, String> {
    let started = Instant::now();
    if cycle == Cycle::Floor {
        engine::spawn_and_reap(None).map_err(|e| e.to_string())?;
        return Ok(started.elapsed().as_secs_f64() * 1e3);
    }
    let cgroup = cgroups::open(layout, path).map_err(|e| e.to_string())?;
    let lived = live(cgroup.as_ref(), cycle);
    let removed = cgroup.destroy();
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    lived?;
    removed.map_err(|e| format!("removing {path}: {e}"))?;
    Ok(elapsed)
}

fn live(cgroup: &dyn CgroupManager, cycle: Cycle) -> Result<(), String> {
    cgroup.create().map_err(|e| e.to_string())?;
    if cycle == Cycle::Limited {
        let limits = Resources {
            memory: Some(64 << 20),
            ..Resources::default()
        };
        cgroup.apply(&limits).map_err(|e| e.to_string())?;
        cgroup
            .apply_devices(&devices::default_rules())
            .map_err(|e| e.to_string())?;
    }
    let entry = cgroup.entry().map_err(|e| e.to_string())?;
    engine::spawn_and_reap(Some((cgroup, &entry))).map_err(|e| e.to_string())
}
