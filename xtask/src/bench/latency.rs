//! Rows 1–3: start-to-exit latency of a container running `true` — plain (`--network none`),
//! with networking (each tool's default network), and with a 64 MiB memory limit. Every case of
//! a row is run interleaved with the others; row 1 is cross-checked with hyperfine.

use std::path::Path;

use serde_json::json;

use super::measure::{self, Case, Invocation, Stats};
use super::report::{Better, Line, Role, Row};
use super::setup::{Bench, IMAGE, PODMAN_IMAGE};

const WARMUP: usize = 3;

/// One planned line: either a case to time, or a peer that cannot run (and why).
enum Plan {
    Run {
        tool: &'static str,
        label: &'static str,
        role: Role,
        case: Box<Case>,
    },
    Missing {
        tool: &'static str,
        label: &'static str,
        role: Role,
        reason: String,
    },
}

fn run(
    tool: &'static str,
    label: &'static str,
    role: Role,
    key: &str,
    inv: Invocation,
    after_failure: Option<Invocation>,
) -> Plan {
    Plan::Run {
        tool,
        label,
        role,
        case: Box::new(Case {
            key: key.into(),
            inv,
            after_failure,
        }),
    }
}

fn peer(
    tool: &'static str,
    label: &'static str,
    role: Role,
    key: &str,
    inv: Result<Invocation, String>,
    after_failure: Option<Invocation>,
) -> Plan {
    match inv {
        Ok(inv) => run(tool, label, role, key, inv, after_failure),
        Err(reason) => Plan::Missing {
            tool,
            label,
            role,
            reason,
        },
    }
}

/// runc/crun `run` of a bundle with a fixed container id (runs are sequential, and `run`
/// deletes the container when it exits), and `delete -f` of it after a failure.
fn runtime_case(
    b: &Bench,
    tool: &'static str,
    label: &'static str,
    inv: Result<Invocation, String>,
    bundle: &str,
    spec: &serde_json::Value,
) -> Plan {
    bundle_case(b, tool, tool, label, Role::Peer, inv, bundle, spec)
}

/// [`runtime_case`] with the case's key and role.
#[allow(clippy::too_many_arguments)]
fn bundle_case(
    b: &Bench,
    tool: &'static str,
    key: &str,
    label: &'static str,
    role: Role,
    inv: Result<Invocation, String>,
    bundle: &str,
    spec: &serde_json::Value,
) -> Plan {
    let id = format!("bench-{key}");
    let inv = inv.and_then(|inv| {
        let dir = b.work.join("bundles").join(bundle);
        b.write_bundle(&dir, spec, &["true"], &format!("/carton/{id}"))
            .map_err(|e| format!("writing the bundle: {e:#}"))?;
        Ok((inv.clone().args(["run", "--bundle"]).arg(dir).arg(&id), inv))
    });
    match inv {
        Ok((run_inv, base)) => run(
            tool,
            label,
            role,
            key,
            run_inv,
            Some(base.args(["delete", "-f"]).arg(&id)),
        ),
        Err(reason) => Plan::Missing {
            tool,
            label,
            role,
            reason,
        },
    }
}

fn floor() -> Plan {
    run(
        "floor",
        "unshare --fork --pid --mount --uts --ipc --net /bin/true (floor)",
        Role::Reference,
        "floor",
        Invocation::new("unshare").args([
            "--fork",
            "--pid",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "/bin/true",
        ]),
        None,
    )
}

pub fn start(b: &Bench) -> Row {
    let mut row = Row::new("start", "1", "start-to-exit of `true`", "ms", Better::Lower);
    let plans = vec![
        floor(),
        run(
            "carton",
            "carton run --rm --network none",
            Role::Carton,
            "carton",
            b.carton()
                .args(["run", "--rm", "--network", "none", IMAGE, "true"]),
            None,
        ),
        runtime_case(
            b,
            "crun",
            "crun run (bundle)",
            b.crun(),
            "crun-start",
            &b.spec_plain,
        ),
        runtime_case(
            b,
            "runc",
            "runc run (bundle)",
            b.runc(),
            "runc-start",
            &b.spec_plain,
        ),
        runtime_case(
            b,
            "carton-runtime",
            "carton-runtime run (bundle; carton's OCI runtime)",
            Ok(b.carton_runtime()),
            "carton-runtime-start",
            &b.spec_plain,
        ),
        peer(
            "podman",
            "podman run --rm --network none",
            Role::Peer,
            "podman",
            b.podman()
                .map(|p| p.args(["run", "--rm", "--network", "none", PODMAN_IMAGE, "true"])),
            None,
        ),
    ];
    let invocations: Vec<(&'static str, Invocation)> = plans
        .iter()
        .filter_map(|p| match p {
            Plan::Run { tool, case, .. } => Some((*tool, case.inv.clone())),
            Plan::Missing { .. } => None,
        })
        .collect();
    measure_row(b, &mut row, plans);
    hyperfine_cross_check(b, &mut row, &invocations);
    row.notes.push(
        "runc and crun run an OCI bundle of the same rootfs whose config.json is carton's own \
         spec for this container (same namespaces, mounts, capabilities, seccomp profile, \
         masked paths); none of the three has a network but loopback."
            .into(),
    );
    row
}

pub fn network(b: &Bench) -> Row {
    let mut row = Row::new(
        "network",
        "2",
        "start-to-exit of `true`, default network",
        "ms",
        Better::Lower,
    );
    let plans = vec![
        run(
            "carton",
            "carton run --rm (bridge carton0)",
            Role::Carton,
            "carton-bridge",
            b.carton().args(["run", "--rm", IMAGE, "true"]),
            None,
        ),
        run(
            "carton",
            "carton run --rm --network none (reference)",
            Role::Reference,
            "carton-none",
            b.carton()
                .args(["run", "--rm", "--network", "none", IMAGE, "true"]),
            None,
        ),
        peer(
            "podman",
            "podman run --rm (default network)",
            Role::Peer,
            "podman-default",
            b.podman()
                .map(|p| p.args(["run", "--rm", PODMAN_IMAGE, "true"])),
            None,
        ),
        peer(
            "podman",
            "podman run --rm --network none (reference)",
            Role::Reference,
            "podman-none",
            b.podman()
                .map(|p| p.args(["run", "--rm", "--network", "none", PODMAN_IMAGE, "true"])),
            None,
        ),
    ];
    measure_row(b, &mut row, plans);
    for tool in ["carton", "podman"] {
        if let (Some(with), Some(without)) = (
            row.lines
                .iter()
                .find(|l| l.tool == tool && l.role != Role::Reference)
                .and_then(Line::median),
            row.median_of(tool, Role::Reference),
        ) {
            row.notes.push(format!(
                "{tool}: the network adds {:.1} ms (median with − median without, interleaved)",
                with - without
            ));
        }
    }
    row.notes.push(
        "runc and crun set up no network of their own (their callers do), so they have no \
         line here. Bridges, veths and NAT rules live in the benchmark's own network namespace."
            .into(),
    );
    row
}

pub fn memory(b: &Bench) -> Row {
    let mut row = Row::new(
        "memory",
        "3",
        "start-to-exit of `true` with a 64 MiB memory limit",
        "ms",
        Better::Lower,
    );
    let plans = vec![
        run(
            "carton",
            "carton run --rm --network none -m 64m",
            Role::Carton,
            "carton-mem",
            b.carton().args([
                "run",
                "--rm",
                "--network",
                "none",
                "-m",
                "64m",
                IMAGE,
                "true",
            ]),
            None,
        ),
        run(
            "carton",
            "carton run --rm --network none (reference, no limit)",
            Role::Reference,
            "carton-none",
            b.carton()
                .args(["run", "--rm", "--network", "none", IMAGE, "true"]),
            None,
        ),
        runtime_case(
            b,
            "crun",
            "crun run (bundle with the limit)",
            b.crun(),
            "crun-mem",
            &b.spec_memory,
        ),
        runtime_case(
            b,
            "runc",
            "runc run (bundle with the limit)",
            b.runc(),
            "runc-mem",
            &b.spec_memory,
        ),
        peer(
            "podman",
            "podman run --rm --network none -m 64m",
            Role::Peer,
            "podman-mem",
            b.podman().map(|p| {
                p.args([
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "-m",
                    "64m",
                    PODMAN_IMAGE,
                    "true",
                ])
            }),
            None,
        ),
    ];
    measure_row(b, &mut row, plans);
    row
}

/// Row 3b: what a container's limits, device rules and /sys/fs/cgroup view add to a run —
/// carton-runtime running one bundle with them and without (no linux.resources, no cgroup
/// mount), interleaved. Both have a cgroup (carton-runtime, like runc, would give a bundle
/// without linux.cgroupsPath a default one), so this row does NOT measure making and removing
/// the cgroup itself.
pub fn cgroup(b: &Bench) -> Row {
    let mut row = Row::new(
        "cgroup",
        "3b",
        "start-to-exit of `true`, with and without limits, device rules and cgroup view",
        "ms",
        Better::Lower,
    );
    // The reference: no limits or device rules, no cgroup mount (the cgroup itself stays).
    let mut bare = b.spec_plain.clone();
    if let Some(linux) = bare["linux"].as_object_mut() {
        linux.remove("resources");
    }
    if let Some(mounts) = bare["mounts"].as_array_mut() {
        mounts.retain(|m| m["type"] != "cgroup");
    }
    let plans = vec![
        bundle_case(
            b,
            "carton-runtime",
            "carton-runtime-cgroup",
            "carton-runtime run (bundle with linux.cgroupsPath)",
            Role::Carton,
            Ok(b.carton_runtime()),
            "carton-runtime-cgroup",
            &b.spec_plain,
        ),
        bundle_case(
            b,
            "carton-runtime",
            "carton-runtime-no-cgroup",
            "carton-runtime run (same bundle without resources or cgroup mount; still a cgroup)",
            Role::Reference,
            Ok(b.carton_runtime()),
            "carton-runtime-no-cgroup",
            &bare,
        ),
    ];
    measure_row(b, &mut row, plans);
    row.notes.push(
        "Both lines run carton's OCI runtime on the same rootfs and spec; the reference's spec \
         has no linux.resources (device rules included) and no cgroup mount, but both have a \
         cgroup: the difference is what the limits, the device rules and the view cost, not the \
         cgroup's creation and removal."
            .into(),
    );
    row
}

fn measure_row(b: &Bench, row: &mut Row, plans: Vec<Plan>) {
    let owned: Vec<Case> = plans
        .iter()
        .filter_map(|p| match p {
            Plan::Run { case, .. } => Some((**case).clone()),
            Plan::Missing { .. } => None,
        })
        .collect();
    println!(
        "  {} cases × ({WARMUP} warm-up + {}) runs, interleaved",
        owned.len(),
        b.runs
    );
    let mut results = measure::interleaved(&row.key, &owned, WARMUP, b.runs, &b.logs).into_iter();
    for plan in plans {
        let line = match plan {
            Plan::Run {
                tool,
                label,
                role,
                case,
            } => {
                let result = results.next().expect("one result per case");
                Line::from_result(tool, label, role, case.inv.display(), result)
            }
            Plan::Missing {
                tool,
                label,
                role,
                reason,
            } => Line::missing(tool, label, role, reason),
        };
        row.lines.push(line);
    }
}

/// Row 1 again, each measured line timed by hyperfine (`-N`, no shell) instead of this
/// harness — not interleaved, so only a check that the harness's own timing adds nothing.
fn hyperfine_cross_check(b: &Bench, row: &mut Row, invocations: &[(&'static str, Invocation)]) {
    let Some(hyperfine) = super::host::find_program("hyperfine") else {
        row.notes
            .push("hyperfine is not installed: no cross-check of the timings.".into());
        return;
    };
    let runs = b.runs.clamp(5, 20);
    println!("  cross-check with hyperfine ({runs} runs per tool, not interleaved)");
    let mut agree = Vec::new();
    for line in &mut row.lines {
        if line.median().is_none() {
            continue;
        }
        let Some((_, inv)) = invocations.iter().find(|(t, _)| *t == line.tool) else {
            continue;
        };
        let json = b.logs.join(format!("start-hyperfine-{}.json", line.tool));
        let mut hf = inv.clone();
        hf.program = hyperfine.clone().into();
        hf.args = vec![
            "-N".into(),
            "--style".into(),
            "none".into(),
            "--warmup".into(),
            WARMUP.to_string().into(),
            "--runs".into(),
            runs.to_string().into(),
            "--export-json".into(),
            json.clone().into(),
            inv.display().into(),
        ];
        let result = hf.output().and_then(|_| read_hyperfine(&json));
        match result {
            Ok(stats) => {
                agree.push(format!("{} {:.1} ms", line.tool, stats.median));
                line.extra.insert(
                    "hyperfine_ms".into(),
                    json!({"median": stats.median, "min": stats.min, "max": stats.max, "n": stats.n}),
                );
            }
            Err(e) => {
                line.extra.insert("hyperfine_error".into(), json!(e));
            }
        }
    }
    if !agree.is_empty() {
        row.notes.push(format!(
            "hyperfine -N medians (same commands, {runs} runs each, one tool after the other): {}",
            agree.join(", ")
        ));
    }
}

fn read_hyperfine(path: &Path) -> Result<Stats, String> {
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
    )
    .map_err(|e| e.to_string())?;
    let times: Vec<f64> = v["results"][0]["times"]
        .as_array()
        .ok_or("hyperfine JSON without results[0].times")?
        .iter()
        .filter_map(|t| t.as_f64().map(|s| s * 1e3))
        .collect();
    Stats::of(times).ok_or_else(|| "hyperfine recorded no times".into())
}
