//! Results: rows of lines (carton, its peers, references), the targets of issue 8 checked
//! against them, and their rendering as markdown (target/bench/report.md, the README table) and
//! JSON (target/bench/report.json).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::measure::{Conditions, Stats};

#[derive(Serialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
}

#[derive(Serialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The carton line the row's ratios are computed from.
    Carton,
    /// A tool compared with carton: gets a ratio carton / peer.
    Peer,
    /// Shown for context (the floor, carton or podman without the row's feature).
    Reference,
}

#[derive(Serialize, Clone, Debug)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Measured { stats: Stats },
    Failed { reason: String },
    Missing { reason: String },
}

#[derive(Serialize, Clone, Debug)]
pub struct Line {
    pub tool: String,
    pub label: String,
    pub role: Role,
    pub command: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// carton's median / this line's median (peers only).
    pub ratio: Option<f64>,
    /// Anything else measured for this line (hyperfine's cross-check, per-container figures).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Value>,
}

impl Line {
    pub fn new(tool: &str, label: &str, role: Role, command: String, outcome: Outcome) -> Line {
        Line {
            tool: tool.into(),
            label: label.into(),
            role,
            command,
            outcome,
            ratio: None,
            extra: BTreeMap::new(),
        }
    }

    /// A line from a measurement result (Err = the tool failed).
    pub fn from_result(
        tool: &str,
        label: &str,
        role: Role,
        command: String,
        result: Result<Stats, String>,
    ) -> Line {
        let outcome = match result {
            Ok(stats) => Outcome::Measured { stats },
            Err(reason) => Outcome::Failed { reason },
        };
        Line::new(tool, label, role, command, outcome)
    }

    pub fn missing(tool: &str, label: &str, role: Role, reason: String) -> Line {
        Line::new(
            tool,
            label,
            role,
            String::new(),
            Outcome::Missing { reason },
        )
    }

    pub fn median(&self) -> Option<f64> {
        match &self.outcome {
            Outcome::Measured { stats } => Some(stats.median),
            _ => None,
        }
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Row {
    /// The --only name of the measurement this row belongs to.
    pub key: String,
    /// "1", "4b", … as in the issue.
    pub number: String,
    pub title: String,
    pub unit: String,
    pub better: Better,
    pub lines: Vec<Line>,
    pub conditions: Option<Conditions>,
    pub notes: Vec<String>,
}

impl Row {
    pub fn new(key: &str, number: &str, title: &str, unit: &str, better: Better) -> Row {
        Row {
            key: key.into(),
            number: number.into(),
            title: title.into(),
            unit: unit.into(),
            better,
            lines: Vec::new(),
            conditions: None,
            notes: Vec::new(),
        }
    }

    /// Fills in carton / peer for every peer line.
    pub fn compute_ratios(&mut self) {
        let carton = self
            .lines
            .iter()
            .find(|l| l.role == Role::Carton)
            .and_then(Line::median);
        for line in &mut self.lines {
            line.ratio = match (line.role, carton, line.median()) {
                (Role::Peer, Some(c), Some(p)) if p > 0.0 => Some(c / p),
                _ => None,
            };
        }
    }

    /// The carton line's median minus that of the reference line of `tool`: what the row's
    /// feature adds.
    pub fn carton_minus_reference(&self, tool: &str) -> Option<f64> {
        self.median_of("carton", Role::Carton)
            .zip(self.median_of(tool, Role::Reference))
            .map(|(with, without)| with - without)
    }

    pub fn median_of(&self, tool: &str, role: Role) -> Option<f64> {
        self.lines
            .iter()
            .find(|l| l.tool == tool && l.role == role)
            .and_then(Line::median)
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Target {
    pub row: String,
    pub what: String,
    pub wanted: String,
    pub measured: Option<String>,
    /// None: not measurable in this run (a line failed or was not run).
    pub met: Option<bool>,
}

/// The targets of issue 8, checked against whatever rows were run.
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let find = |n: &str| rows.iter().find(|r| r.number == n);
    let ratio = |row: &Row, tool: &str| {
        row.lines
            .iter()
            .find(|l| l.tool == tool && l.role == Role::Peer)
            .and_then(|l| l.ratio)
    };
    let mut out = Vec::new();
    let mut check = |row: &str,
                     what: &str,
                     wanted: &str,
                     value: Option<f64>,
                     ok: &dyn Fn(f64) -> bool,
                     fmt: &dyn Fn(f64) -> String| {
        out.push(Target {
            row: row.into(),
            what: what.into(),
            wanted: wanted.into(),
            measured: value.map(fmt),
            met: value.map(ok),
        });
    };
    let x = |v: f64| format!("{v:.2}×");
    if let Some(r) = find("1") {
        check(
            "1",
            "start-to-exit, carton / crun",
            "≤ 1.0",
            ratio(r, "crun"),
            &|v| v <= 1.0,
            &x,
        );
        check(
            "1",
            "start-to-exit, carton / podman",
            "≤ 0.1",
            ratio(r, "podman"),
            &|v| v <= 0.1,
            &x,
        );
        // Issue 10: carton's OCI runtime against crun, both running the same bundle.
        let runtime_vs_crun = r
            .median_of("carton-runtime", Role::Peer)
            .zip(r.median_of("crun", Role::Peer))
            .filter(|(_, crun)| *crun > 0.0)
            .map(|(runtime, crun)| runtime / crun);
        check(
            "1",
            "run of the same bundle, carton-runtime / crun",
            "≤ 1.0",
            runtime_vs_crun,
            &|v| v <= 1.0,
            &x,
        );
    }
    if let Some(r) = find("2") {
        check(
            "2",
            "with networking, carton / podman",
            "≤ 0.1",
            ratio(r, "podman"),
            &|v| v <= 0.1,
            &x,
        );
        let delta = r.carton_minus_reference("carton");
        check(
            "2",
            "networking adds (carton bridge − carton none, medians)",
            "≤ 5 ms",
            delta,
            &|v| v <= 5.0,
            &|v| format!("{v:.1} ms"),
        );
    }
    if let Some(r) = find("3c") {
        let delta = r.carton_minus_reference("fork");
        check(
            "3c",
            "a cgroup's life adds (3c carton − no cgroup, medians)",
            "≤ 1 ms",
            delta,
            &|v| v <= 1.0,
            &|v| format!("{v:.2} ms"),
        );
    }
    if let Some(r) = find("4b") {
        check(
            "4b",
            "supervisor RSS, carton / conmon",
            "< 1.0",
            ratio(r, "podman"),
            &|v| v < 1.0,
            &x,
        );
    }
    if let Some(r) = find("5") {
        check(
            "5",
            "TCP throughput, carton bridge / veth pair",
            "≥ 0.9",
            ratio(r, "veth"),
            &|v| v >= 0.9,
            &x,
        );
    }
    for (n, what) in [
        ("6a", "commit / tar -c | tar -x"),
        ("6b", "import / tar -x"),
        ("6c", "load / tar -x"),
    ] {
        if let Some(r) = find(n) {
            check(n, what, "≤ 1.2", ratio(r, "tar"), &|v| v <= 1.2, &x);
        }
    }
    out
}

#[derive(Serialize, Clone, Debug)]
pub struct Report {
    pub started: String,
    pub finished: String,
    pub mode: String,
    pub machine: BTreeMap<String, String>,
    pub tools: BTreeMap<String, String>,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

fn num(v: f64, unit: &str) -> String {
    match unit {
        "ms" if v < 10.0 => format!("{v:.2}"),
        "ms" => format!("{v:.1}"),
        // Row 6's sub-second times: two digits would hide a 5% difference.
        "s" if v < 1.0 => format!("{v:.3}"),
        _ if v >= 100.0 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let get = |k: &str| m.get(k).map(String::as_str).unwrap_or("?");
        let _ = writeln!(
            md,
            "Run of {} ({} mode), finished {}.\n",
            self.started, self.mode, self.finished
        );
        let _ = writeln!(
            md,
            "Machine: {}; kernel {}; {} CPUs ({}); {} RAM; cgroups {}; carton's --root on {}; \
             1-minute load {} at the start.\n",
            get("virtualization"),
            get("kernel"),
            get("cpus"),
            get("cpu_model"),
            get("memory"),
            get("cgroup_mode"),
            get("bench_fs"),
            get("load_at_start"),
        );
        let tools: Vec<String> = self.tools.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(md, "Tools: {}.\n", tools.join("; "));

        md.push_str("| # | Measurement | Tool | Median | Min | Max | n | carton / tool | Load (1 min) before → after, other CPU |\n");
        md.push_str("|---|---|---|--:|--:|--:|--:|--:|---|\n");
        for row in &self.rows {
            let cond = row
                .conditions
                .as_ref()
                .map(|c| {
                    format!(
                        "{:.2} → {:.2}, {:.2} cores{}",
                        c.load_before,
                        c.load_after,
                        c.other_cpu_cores,
                        if c.not_quiet { " (not quiet)" } else { "" }
                    )
                })
                .unwrap_or_default();
            for (i, line) in row.lines.iter().enumerate() {
                let (first, measurement) = if i == 0 {
                    (
                        row.number.clone(),
                        format!(
                            "{} ({}, {} is better)",
                            row.title,
                            row.unit,
                            match row.better {
                                Better::Lower => "lower",
                                Better::Higher => "higher",
                            }
                        ),
                    )
                } else {
                    (String::new(), String::new())
                };
                let label = match line.role {
                    Role::Carton => format!("**{}**", line.label),
                    _ => line.label.clone(),
                };
                let (median, min, max, n) = match &line.outcome {
                    Outcome::Measured { stats } => (
                        num(stats.median, &row.unit),
                        num(stats.min, &row.unit),
                        num(stats.max, &row.unit),
                        stats.n.to_string(),
                    ),
                    Outcome::Failed { reason } => (
                        format!("failed: {}", short(reason)),
                        String::new(),
                        String::new(),
                        String::new(),
                    ),
                    Outcome::Missing { reason } => (
                        format!("not run: {}", short(reason)),
                        String::new(),
                        String::new(),
                        String::new(),
                    ),
                };
                let ratio = line.ratio.map(|r| format!("{r:.2}")).unwrap_or_default();
                let c = if i == 0 { cond.clone() } else { String::new() };
                let (measurement, label) = (cell(&measurement), cell(&label));
                let _ = writeln!(
                    md,
                    "| {first} | {measurement} | {label} | {median} | {min} | {max} | {n} | {ratio} | {c} |"
                );
            }
        }

        md.push_str("\nTargets (issue 8; the benchmark measures, it does not assert):\n\n");
        md.push_str("| Row | Target | Wanted | Measured | Met |\n|---|---|---|---|---|\n");
        for t in &self.targets {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                t.row,
                cell(&t.what),
                t.wanted,
                t.measured.as_deref().unwrap_or("—"),
                met
            );
        }

        let notes: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| r.notes.iter().map(move |n| format!("{}: {n}", r.number)))
            .chain(self.notes.iter().cloned())
            .collect();
        if !notes.is_empty() {
            md.push_str("\nNotes:\n");
            for n in notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        md
    }
}

/// Text for a markdown table cell: a `|` would end the cell (e.g. "tar -c | tar -x").
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn short(reason: &str) -> String {
    let one = reason.replace(['|', '\n'], " ");
    if one.chars().count() > 120 {
        format!("{}…", one.chars().take(120).collect::<String>())
    } else {
        one
    }
}
