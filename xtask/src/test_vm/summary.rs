//! The end of a run: one row per leg (kernel × cgroup → passed / failed / skipped, times), the
//! reasons behind every failure and skip, printed and written to target/vm/summary.{md,json}.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::results::Verdict;
use crate::util;

/// One leg's outcome.
#[derive(Serialize)]
pub struct LegReport {
    pub leg: String,
    pub kernel: String,
    /// Package and version, or path.
    pub kernel_origin: String,
    pub release: String,
    pub cgroup: String,
    pub ok: bool,
    /// The first reason it failed, for the table.
    pub reason: Option<String>,
    pub verdict: Verdict,
    pub duration_s: f64,
    /// QEMU start → `booted` mark (host clock).
    pub boot_s: Option<f64>,
    /// The guest kernel's own uptime at the `booted` mark (excludes firmware and kernel loading).
    pub guest_uptime_at_boot_s: Option<f64>,
    /// QEMU start → start of the first test.
    pub first_test_s: Option<f64>,
    pub console_log: PathBuf,
}

/// The whole run.
#[derive(Serialize)]
pub struct RunReport {
    pub accel: String,
    pub accel_note: String,
    pub smp: u32,
    pub memory_mib: u32,
    pub jobs: usize,
    pub duration_s: f64,
    pub legs: Vec<LegReport>,
}

fn secs(d: Option<f64>) -> String {
    d.map_or_else(|| "-".into(), |s| format!("{s:.1}s"))
}

pub fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// One line for a failure: Rust's "thread … panicked at FILE:LINE:COL:" is followed by the
/// message that says what went wrong, so show both.
fn failure_line(msg: &str) -> String {
    let mut lines = msg.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("").to_string();
    match first.find("panicked at ") {
        Some(at) => {
            let location = first[at + "panicked at ".len()..].trim_end_matches(':');
            // The report repeats the panic line (message attribute, then the test's stderr);
            // the lines after it say what went wrong: keep a few, on one line.
            let what: Vec<&str> = lines
                .filter(|l| !l.contains("panicked at "))
                .take_while(|l| *l != "stack backtrace:")
                .take(3)
                .collect();
            let what: String = what.join(" | ").chars().take(240).collect();
            format!("{what} ({location})")
        }
        None => first,
    }
}

/// The table, as markdown (also readable as plain text).
pub fn markdown(run: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# carton VM tier\n\naccel: {} ({}), {} vCPUs and {} MiB per guest, {} legs in parallel, \
         total {}\n",
        run.accel,
        run.accel_note,
        run.smp,
        run.memory_mib,
        run.jobs,
        duration_text(Duration::from_secs_f64(run.duration_s))
    );
    let _ = writeln!(
        out,
        "| kernel | cgroup | result | passed | failed | skipped | missing | boot | first test | duration |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for leg in &run.legs {
        let v = &leg.verdict;
        let _ = writeln!(
            out,
            "| {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            leg.kernel,
            leg.release,
            leg.cgroup,
            if leg.ok { "PASS" } else { "FAIL" },
            v.passed,
            v.failed,
            v.skipped,
            v.missing.len(),
            secs(leg.boot_s),
            secs(leg.first_test_s),
            duration_text(Duration::from_secs_f64(leg.duration_s)),
        );
    }
    for leg in &run.legs {
        let v = &leg.verdict;
        let has_notes = !leg.ok || !v.skips.is_empty() || !v.warnings.is_empty();
        if !has_notes {
            continue;
        }
        let _ = writeln!(
            out,
            "\n## {} × {}: {}",
            leg.kernel, leg.cgroup, leg.kernel_origin
        );
        if let Some(reason) = &leg.reason {
            let _ = writeln!(out, "\n**failed:** {reason}");
        }
        for p in &v.problems {
            let _ = writeln!(out, "- problem: {p}");
        }
        for (test, msg) in &v.failures {
            let _ = writeln!(out, "- FAIL {test}: {}", failure_line(msg));
        }
        for test in &v.missing {
            let _ = writeln!(out, "- MISSING (no result) {test}");
        }
        for test in v.duplicates.iter().chain(&v.unexpected) {
            let _ = writeln!(out, "- DUPLICATE/UNEXPECTED {test}");
        }
        for (test, reason) in &v.skips {
            let _ = writeln!(out, "- SKIP {test}: {reason}");
        }
        for w in &v.warnings {
            let _ = writeln!(out, "- warning: {w}");
        }
        if !leg.ok {
            let _ = writeln!(out, "- console log: {}", leg.console_log.display());
        }
    }
    out
}

/// Prints the table and writes target/vm/summary.md and summary.json; returns their paths.
pub fn write(run: &RunReport) -> Result<(PathBuf, PathBuf)> {
    let md = markdown(run);
    println!("\n{md}");
    let dir = util::target_dir().join("vm");
    std::fs::create_dir_all(&dir)?;
    let md_path = dir.join("summary.md");
    let json_path = dir.join("summary.json");
    std::fs::write(&md_path, &md)?;
    std::fs::write(&json_path, serde_json::to_string_pretty(run)? + "\n")?;
    Ok((md_path, json_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_one_row_per_leg_and_lists_skips() {
        let mut verdict = Verdict {
            passed: 3,
            skipped: 1,
            ..Verdict::default()
        };
        verdict
            .skips
            .push(("conformance::limits memory".into(), "no swap".into()));
        let run = RunReport {
            accel: "tcg".into(),
            accel_note: "KVM probe failed".into(),
            smp: 2,
            memory_mib: 2048,
            jobs: 2,
            duration_s: 75.0,
            legs: vec![LegReport {
                leg: "6.1-v2".into(),
                kernel: "6.1".into(),
                kernel_origin: "linux-image-6.1.0-50-amd64 6.1.176-1 (bookworm)".into(),
                release: "6.1.0-50-amd64".into(),
                cgroup: "v2".into(),
                ok: true,
                reason: None,
                verdict,
                duration_s: 61.2,
                boot_s: Some(3.1),
                guest_uptime_at_boot_s: Some(2.5),
                first_test_s: Some(4.8),
                console_log: "target/vm/runs/6.1-v2/console.log".into(),
            }],
        };
        let md = markdown(&run);
        assert!(
            md.contains(
                "| 6.1 (6.1.0-50-amd64) | v2 | PASS | 3 | 0 | 1 | 0 | 3.1s | 4.8s | 1m01s |"
            ),
            "{md}"
        );
        assert!(
            md.contains("- SKIP conformance::limits memory: no swap"),
            "{md}"
        );
        assert!(md.contains("total 1m15s"), "{md}");
    }

    #[test]
    fn failure_lines_show_the_panic_message() {
        let msg = "thread 'x' (183) panicked at conformance/src/lib.rs:83:9:\n\
                   thread 'x' (183) panicked at conformance/src/lib.rs:83:9:\n\
                   prerequisite missing: no static busybox\nstack backtrace:\n   0: x";
        assert_eq!(
            failure_line(msg),
            "prerequisite missing: no static busybox (conformance/src/lib.rs:83:9)"
        );
        assert_eq!(failure_line("test timed out"), "test timed out");
    }
}
