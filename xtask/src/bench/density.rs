//! Row 4: density. Start 100 detached `sleep` containers one after the other (the time for all
//! of them), then read each container's supervisor — the parent of its init: carton's
//! supervisor, podman's conmon — from /proc/<pid>/smaps_rollup: RSS, PSS (shared pages divided
//! among their users, so 100 supervisors sharing one binary show what each really costs),
//! anonymous memory. runc and crun `run -d` leave no supervisor: their start time is shown,
//! their memory is not applicable. With all of them running, `ps -a` is timed too (carton reads
//! every container's record and checks that its process lives; podman asks its database).

use std::time::Instant;

use serde_json::{Value, json};

use super::measure::{Invocation, Stats};
use super::report::{Better, Line, Role, Row};
use super::setup::{Bench, IMAGE, PODMAN_IMAGE};

#[derive(Default, Clone)]
struct Memory {
    rss: Vec<f64>,
    pss: Vec<f64>,
    anon: Vec<f64>,
    uss: Vec<f64>,
    /// Names of the supervisors seen (sanity check: "carton", "conmon").
    names: Vec<String>,
}

#[derive(Clone)]
struct Tool {
    name: &'static str,
    label: &'static str,
    command: String,
    /// Seconds for all N starts, one sample per round.
    totals: Vec<f64>,
    /// Milliseconds per start, all rounds.
    each: Vec<f64>,
    memory: Memory,
    /// Milliseconds per `ps -a` with all containers of the round running.
    ps: Vec<f64>,
    error: Option<String>,
}

/// `ps -a` samples per round.
const PS_SAMPLES: usize = 10;

pub fn rows(b: &Bench, containers: usize, rounds: usize) -> Vec<Row> {
    let sleep = ["sleep", "1000000"];
    let mut tools = vec![
        tool(
            "carton",
            "carton run -d --network none",
            Ok(b.carton()
                .args(["run", "-d", "--network", "none", IMAGE])
                .args(sleep)),
        ),
        tool(
            "podman",
            "podman run -d --network none (conmon)",
            b.podman().map(|p| {
                p.args(["run", "-d", "--network", "none", PODMAN_IMAGE])
                    .args(sleep)
            }),
        ),
        tool(
            "crun",
            "crun run -d (no supervisor)",
            b.crun()
                .map(|c| c.args(["run", "-d", "--bundle", "<bundle>", "<id>"])),
        ),
        tool(
            "runc",
            "runc run -d (no supervisor)",
            b.runc()
                .map(|c| c.args(["run", "-d", "--bundle", "<bundle>", "<id>"])),
        ),
    ];

    for round in 0..rounds {
        for k in 0..tools.len() {
            let i = (round + k) % tools.len();
            if tools[i].error.is_some() {
                continue;
            }
            println!(
                "  round {} of {rounds}: {} × {containers}",
                round + 1,
                tools[i].name
            );
            if let Err(e) = one_round(b, &mut tools[i], containers) {
                println!("  {} failed: {e}", tools[i].name);
                tools[i].error = Some(e);
            }
        }
    }

    let mut start = Row::new(
        "density",
        "4a",
        &format!("start {containers} detached sleeping containers, one after the other"),
        "s",
        Better::Lower,
    );
    let mut rss = Row::new(
        "density",
        "4b",
        "supervisor RSS per container",
        "MiB",
        Better::Lower,
    );
    let mut pss = Row::new(
        "density",
        "4c",
        "supervisor PSS per container",
        "MiB",
        Better::Lower,
    );
    for t in &tools {
        let role = if t.name == "carton" {
            Role::Carton
        } else {
            Role::Peer
        };
        let result = match &t.error {
            Some(e) => Err(e.clone()),
            None => Stats::of(t.totals.clone()).ok_or_else(|| "no rounds".to_string()),
        };
        let mut line = Line::from_result(t.name, t.label, role, t.command.clone(), result);
        if let Some(each) = Stats::of(t.each.clone()) {
            line.extra.insert(
                "per_container_ms".into(),
                json!({"median": each.median, "min": each.min, "max": each.max, "n": each.n}),
            );
        }
        start.lines.push(line);
        if t.name == "crun" || t.name == "runc" {
            continue;
        }
        let label = if t.name == "carton" {
            "carton supervisor"
        } else {
            "conmon (podman)"
        };
        for (row, samples) in [(&mut rss, &t.memory.rss), (&mut pss, &t.memory.pss)] {
            let result = match &t.error {
                Some(e) => Err(e.clone()),
                None => Stats::of(samples.clone()).ok_or_else(|| "no supervisor found".to_string()),
            };
            let mut line = Line::from_result(t.name, label, role, t.command.clone(), result);
            if let (Some(anon), Some(uss)) = (
                Stats::of(t.memory.anon.clone()),
                Stats::of(t.memory.uss.clone()),
            ) {
                line.extra
                    .insert("anonymous_mib_median".into(), json!(anon.median));
                line.extra
                    .insert("uss_mib_median".into(), json!(uss.median));
            }
            let mut names = t.memory.names.clone();
            names.sort();
            names.dedup();
            line.extra.insert("process_names".into(), json!(names));
            row.lines.push(line);
        }
    }
    let mut ps = Row::new(
        "density",
        "4d",
        &format!("`ps -a` with {containers} running containers"),
        "ms",
        Better::Lower,
    );
    for t in tools
        .iter()
        .filter(|t| t.name == "carton" || t.name == "podman")
    {
        let role = if t.name == "carton" {
            Role::Carton
        } else {
            Role::Peer
        };
        let result = match &t.error {
            Some(e) => Err(e.clone()),
            None => Stats::of(t.ps.clone()).ok_or_else(|| "no sample".to_string()),
        };
        let command = format!("{} ps -a", t.name);
        ps.lines.push(Line::from_result(
            t.name,
            &command,
            role,
            command.clone(),
            result,
        ));
    }
    ps.notes.push(format!(
        "{PS_SAMPLES} runs per round, while the round's {containers} containers run; stdout \
         discarded"
    ));
    for row in [&mut start, &mut rss, &mut pss, &mut ps] {
        row.compute_ratios();
    }
    let each = |name: &str| {
        start
            .lines
            .iter()
            .find(|l| l.tool == name)
            .and_then(|l| l.extra.get("per_container_ms"))
            .and_then(|v| v["median"].as_f64())
    };
    let per: Vec<String> = ["carton", "podman", "crun", "runc"]
        .iter()
        .filter_map(|n| each(n).map(|m| format!("{n} {m:.1} ms")))
        .collect();
    start.notes.push(format!(
        "{rounds} round(s) per tool, tools in rotated order; median per container: {}. \
         Containers are removed (untimed) after each round.",
        per.join(", ")
    ));
    let mem_note = |t: &Tool| -> Option<String> {
        let anon = Stats::of(t.memory.anon.clone())?;
        let uss = Stats::of(t.memory.uss.clone())?;
        Some(format!(
            "{} anonymous {:.2} MiB, private (USS) {:.2} MiB",
            t.name, anon.median, uss.median
        ))
    };
    let mems: Vec<String> = tools.iter().filter_map(mem_note).collect();
    if !mems.is_empty() {
        rss.notes.push(format!(
            "read from /proc/<supervisor>/smaps_rollup with all {containers} containers of the tool \
             running (medians): {}",
            mems.join("; ")
        ));
    }
    pss.notes.push("runc and crun leave no supervisor process (`run -d` reparents the container), so they have no memory line.".into());
    vec![start, rss, pss, ps]
}

fn tool(name: &'static str, label: &'static str, inv: Result<Invocation, String>) -> Tool {
    Tool {
        name,
        label,
        command: inv.as_ref().map(Invocation::display).unwrap_or_default(),
        totals: Vec::new(),
        each: Vec::new(),
        memory: Memory::default(),
        ps: Vec::new(),
        error: inv.err(),
    }
}

/// Starts `n` containers with the tool, records the times and supervisor memory, removes them.
fn one_round(b: &Bench, t: &mut Tool, n: usize) -> Result<(), String> {
    let log = b.logs.join(format!("density-{}.stderr", t.name));
    let mut ids: Vec<String> = Vec::new();
    let mut invocations = Vec::new();
    for i in 0..n {
        let id = format!("bench-{}-d{i}", t.name);
        let inv = match t.name {
            "carton" => {
                b.carton()
                    .args(["run", "-d", "--network", "none", IMAGE, "sleep", "1000000"])
            }
            "podman" => b.podman()?.args([
                "run",
                "-d",
                "--network",
                "none",
                PODMAN_IMAGE,
                "sleep",
                "1000000",
            ]),
            "crun" | "runc" => {
                let dir = b.work.join("bundles").join(&id);
                b.write_bundle(
                    &dir,
                    &b.spec_plain,
                    &["sleep", "1000000"],
                    &format!("/carton/{id}"),
                )
                .map_err(|e| format!("writing the bundle: {e:#}"))?;
                let base = if t.name == "crun" {
                    b.crun()?
                } else {
                    b.runc()?
                };
                base.args(["run", "-d", "--bundle"]).arg(dir).arg(&id)
            }
            _ => unreachable!(),
        };
        invocations.push((id, inv));
    }
    let round_start = Instant::now();
    let mut result = Ok(());
    for (id, inv) in &invocations {
        let started = Instant::now();
        match run_detached(inv, &log) {
            Ok(out) => {
                t.each.push(started.elapsed().as_secs_f64() * 1e3);
                ids.push(match t.name {
                    "carton" | "podman" => out.trim().to_string(),
                    _ => id.clone(),
                });
            }
            Err(e) => {
                result = Err(format!("start {} failed: {e}", ids.len() + 1));
                break;
            }
        }
    }
    let total = round_start.elapsed().as_secs_f64();
    if result.is_ok() {
        t.totals.push(total);
        if (t.name == "carton" || t.name == "podman")
            && let Err(e) = read_supervisors(b, t, &ids).and_then(|()| time_ps(b, t, &log))
        {
            result = Err(e);
        }
    }
    remove_all(b, t.name, &ids);
    result
}

/// Times `ps -a` of carton or podman [`PS_SAMPLES`] times.
fn time_ps(b: &Bench, t: &mut Tool, log: &std::path::Path) -> Result<(), String> {
    let inv = match t.name {
        "carton" => b.carton(),
        _ => b.podman()?,
    }
    .args(["ps", "-a"]);
    for _ in 0..PS_SAMPLES {
        let took = inv.time(log)?;
        t.ps.push(took.as_secs_f64() * 1e3);
    }
    Ok(())
}

/// Runs a detached start: stdout is the id for carton and podman; an error carries stderr.
/// stdout goes to a file, not a pipe: `runc/crun run -d` hand their own stdio to the container,
/// which keeps it open while it sleeps (a pipe would never reach end-of-file).
fn run_detached(inv: &Invocation, log: &std::path::Path) -> Result<String, String> {
    let stderr = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let out_path = log.with_extension("stdout");
    let stdout = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let status = inv
        .command()
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .map_err(|e| e.to_string())?;
    if status.success() {
        std::fs::read_to_string(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))
    } else {
        Err(format!("{status}: {}", super::measure::tail(log)))
    }
}

/// For each container: its init pid (inspect), the init's parent (the supervisor), and the
/// supervisor's smaps_rollup.
fn read_supervisors(b: &Bench, t: &mut Tool, ids: &[String]) -> Result<(), String> {
    let inspect = match t.name {
        "carton" => b.carton().arg("inspect").args(ids),
        _ => b.podman()?.arg("inspect").args(ids),
    };
    let json: Value =
        serde_json::from_str(&inspect.output()?).map_err(|e| format!("inspect output: {e}"))?;
    let items = json.as_array().ok_or("inspect did not print an array")?;
    for item in items {
        let pid = item["State"]["Pid"]
            .as_u64()
            .ok_or("inspect without State.Pid")?;
        let ppid = parent_of(pid as u32).ok_or_else(|| format!("no parent for pid {pid}"))?;
        let name = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
        let rollup = std::fs::read_to_string(format!("/proc/{ppid}/smaps_rollup"))
            .map_err(|e| format!("/proc/{ppid}/smaps_rollup: {e}"))?;
        let field = |k: &str| -> f64 {
            rollup
                .lines()
                .find(|l| l.starts_with(&format!("{k}:")))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        t.memory.rss.push(field("Rss"));
        t.memory.pss.push(field("Pss"));
        t.memory.anon.push(field("Anonymous"));
        t.memory
            .uss
            .push(field("Private_Clean") + field("Private_Dirty"));
        t.memory.names.push(name.trim().to_string());
    }
    Ok(())
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid …: comm may contain spaces and parentheses, so split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Removes the round's containers (untimed): one command for carton and podman, one per
/// container for runc and crun.
fn remove_all(b: &Bench, tool: &str, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let result = match tool {
        "carton" => b.carton().args(["rm", "-f"]).args(ids).output().map(|_| ()),
        "podman" => b.podman().and_then(|p| {
            p.args(["rm", "-f", "-t", "0"])
                .args(ids)
                .output()
                .map(|_| ())
        }),
        _ => {
            let base = if tool == "crun" { b.crun() } else { b.runc() };
            ids.iter().try_for_each(|id| {
                base.clone()
                    .and_then(|c| c.args(["delete", "-f"]).arg(id).output().map(|_| ()))
            })
        }
    };
    if let Err(e) = result {
        println!("  removing the {tool} containers failed: {e}");
    }
}
