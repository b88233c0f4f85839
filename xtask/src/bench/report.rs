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

    /// The middle half (first to third quartile) of the per-round ratios carton / `peer`.
    /// Only for rows whose tools take turns round by round, so that sample i of each line
    /// comes from round i; `None` when the counts differ (a line that failed part-way) or
    /// there are fewer than four rounds. A slow spell of the machine hits both sides of a
    /// round alike, so this spread says how far the row's verdict can be trusted.
    pub fn round_ratio_quartiles(&self, peer: &str) -> Option<(f64, f64)> {
        let samples = |tool: &str, role: Role| {
            self.lines
                .iter()
                .find(|l| l.tool == tool && l.role == role)
                .and_then(|l| match &l.outcome {
                    Outcome::Measured { stats } => Some(&stats.samples),
                    _ => None,
                })
        };
        let carton = samples("carton", Role::Carton)?;
        let other = samples(peer, Role::Peer)?;
        if carton.len() != other.len() || carton.len() < 4 || other.iter().any(|v| *v <= 0.0) {
            return None;
        }
        let mut ratios: Vec<f64> = carton.iter().zip(other).map(|(c, o)| c / o).collect();
        ratios.sort_by(f64::total_cmp);
        let at = |q: f64| ratios[(q * (ratios.len() - 1) as f64).round() as usize];
        Some((at(0.25), at(0.75)))
    }

    /// carton / `peer` (medians), as [`Row::compute_ratios`] left it.
    pub fn peer_ratio(&self, peer: &str) -> Option<f64> {
        self.lines
            .iter()
            .find(|l| l.tool == peer && l.role == Role::Peer)
            .and_then(|l| l.ratio)
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
    /// The middle half of the per-round ratios, for ratio targets of rows measured round by
    /// round.
    pub rounds: Option<String>,
    /// The target lies inside that middle half: this run cannot tell met from missed.
    pub on_the_line: bool,
}

/// The targets of issue 8, checked against whatever rows were run.
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let find = |n: &str| rows.iter().find(|r| r.number == n);
    let x = |v: f64| format!("{v:.2}×");
    let ms = |digits: usize| move |v: f64| format!("{v:.digits$} ms");
    let mut out = Vec::new();
    if let Some(r) = find("1") {
        out.push(ratio_target(
            r,
            "crun",
            "start-to-exit, carton / crun",
            "≤ 1.0",
            &|v| v <= 1.0,
        ));
        out.push(ratio_target(
            r,
            "podman",
            "start-to-exit, carton / podman",
            "≤ 0.1",
            &|v| v <= 0.1,
        ));
        // Issue 10: carton's OCI runtime against crun, both running the same bundle.
        let runtime_vs_crun = r
            .median_of("carton-runtime", Role::Peer)
            .zip(r.median_of("crun", Role::Peer))
            .filter(|(_, crun)| *crun > 0.0)
            .map(|(runtime, crun)| runtime / crun);
        out.push(Target::of(
            "1",
            "run of the same bundle, carton-runtime / crun",
            "≤ 1.0",
            runtime_vs_crun,
            &|v| v <= 1.0,
            &x,
        ));
    }
    if let Some(r) = find("2") {
        out.push(ratio_target(
            r,
            "podman",
            "with networking, carton / podman",
            "≤ 0.1",
            &|v| v <= 0.1,
        ));
        out.push(Target::of(
            "2",
            "networking adds (carton bridge − carton none, medians)",
            "≤ 5 ms",
            r.carton_minus_reference("carton"),
            &|v| v <= 5.0,
            &ms(1),
        ));
    }
    if let Some(r) = find("3c") {
        out.push(Target::of(
            "3c",
            "a cgroup's life adds (3c carton − no cgroup, medians)",
            "≤ 1 ms",
            r.carton_minus_reference("fork"),
            &|v| v <= 1.0,
            &ms(2),
        ));
    }
    if let Some(r) = find("4b") {
        // Per-container figures, not rounds: no spread of per-round ratios here.
        out.push(Target::of(
            "4b",
            "supervisor RSS, carton / conmon",
            "< 1.0",
            r.peer_ratio("podman"),
            &|v| v < 1.0,
            &x,
        ));
    }
    if let Some(r) = find("5") {
        out.push(ratio_target(
            r,
            "veth",
            "TCP throughput, carton bridge / veth pair",
            "≥ 0.9",
            &|v| v >= 0.9,
        ));
    }
    for (n, what) in [
        ("6a", "commit / tar -c | tar -x"),
        ("6b", "import / tar -x"),
        ("6c", "load / tar -x"),
    ] {
        if let Some(r) = find(n) {
            out.push(ratio_target(r, "tar", what, "≤ 1.2", &|v| v <= 1.2));
        }
    }
    out
}

impl Target {
    fn of(
        row: &str,
        what: &str,
        wanted: &str,
        value: Option<f64>,
        ok: &dyn Fn(f64) -> bool,
        fmt: &dyn Fn(f64) -> String,
    ) -> Target {
        Target {
            row: row.into(),
            what: what.into(),
            wanted: wanted.into(),
            measured: value.map(fmt),
            met: value.map(ok),
            rounds: None,
            on_the_line: false,
        }
    }
}

/// A target on the ratio carton / `peer` of a row whose tools take turns round by round,
/// with the spread of the per-round ratios.
fn ratio_target(
    row: &Row,
    peer: &str,
    what: &str,
    wanted: &str,
    ok: &dyn Fn(f64) -> bool,
) -> Target {
    let value = row.peer_ratio(peer);
    let quartiles = row.round_ratio_quartiles(peer);
    Target {
        rounds: quartiles.map(|(lo, hi)| format!("{lo:.2}–{hi:.2}")),
        on_the_line: quartiles.is_some_and(|(lo, hi)| ok(lo) != ok(hi)),
        ..Target::of(&row.number, what, wanted, value, ok, &|v| {
            format!("{v:.2}×")
        })
    }
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

        md.push_str(
            "\nTargets (issue 8; the benchmark measures, it does not assert). Middle half of the \
             rounds: the first to third quartile of carton / peer taken round by round (both \
             lines of a round ran back to back); \"on the line\": the target lies inside it, \
             so this run alone cannot tell met from missed.\n\n",
        );
        md.push_str(
            "| Row | Target | Wanted | Measured | Middle half of the rounds | Met |\n\
             |---|---|---|---|---|---|\n",
        );
        for t in &self.targets {
            let met = match (t.met, t.on_the_line) {
                (Some(true), false) => "yes",
                (Some(false), false) => "**no**",
                (Some(true), true) => "yes, on the line",
                (Some(false), true) => "**no**, on the line",
                (None, _) => "not measured",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                t.row,
                cell(&t.what),
                t.wanted,
                t.measured.as_deref().unwrap_or("—"),
                t.rounds.as_deref().unwrap_or(""),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row_with(carton: Vec<f64>, peer: Vec<f64>) -> Row {
        let mut row = Row::new("layers", "6b", "import", "s", Better::Lower);
        for (tool, role, samples) in [("carton", Role::Carton, carton), ("tar", Role::Peer, peer)] {
            let stats = Stats::of(samples).unwrap();
            row.lines.push(Line::from_result(
                tool,
                tool,
                role,
                String::new(),
                Ok(stats),
            ));
        }
        row.compute_ratios();
        row
    }

    #[test]
    fn round_ratios_pair_samples_of_the_same_round() {
        // A slow spell in round 2 hits both lines; per round the ratio stays 1.1 to 1.3.
        let row = row_with(vec![1.1, 1.2, 2.6, 1.3, 1.2], vec![1.0, 1.0, 2.0, 1.0, 1.0]);
        let (lo, hi) = row.round_ratio_quartiles("tar").unwrap();
        assert!(
            (lo - 1.2).abs() < 1e-9 && (hi - 1.3).abs() < 1e-9,
            "{lo} {hi}"
        );
    }

    #[test]
    fn no_round_spread_when_a_line_stopped_early_or_has_few_rounds() {
        assert!(
            row_with(vec![1.0; 5], vec![1.0; 4])
                .round_ratio_quartiles("tar")
                .is_none()
        );
        assert!(
            row_with(vec![1.0; 3], vec![1.0; 3])
                .round_ratio_quartiles("tar")
                .is_none()
        );
    }

    #[test]
    fn a_target_inside_the_middle_half_is_on_the_line() {
        let clear = targets(&[row_with(vec![1.0, 1.05, 1.1, 1.0], vec![1.0; 4])]);
        assert_eq!((clear[0].met, clear[0].on_the_line), (Some(true), false));
        // Median ratio 1.21: missed, but the rounds go from 1.15 to 1.27.
        let close = targets(&[row_with(vec![1.1, 1.15, 1.27, 1.3], vec![1.0; 4])]);
        assert_eq!(close[0].met, Some(false), "{close:?}");
        assert!(close[0].on_the_line);
        assert_eq!(close[0].rounds.as_deref(), Some("1.15–1.27"));
    }
}
