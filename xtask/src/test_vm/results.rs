//! What a guest sends back on its results port (a virtio-serial port that QEMU writes to a host
//! file), and how it is judged against the list of tests the host expected to run.
//!
//! The stream (see vm/run-tests): text records, one per line, plus one binary-safe payload:
//!   carton-vm-results 1 | mark <name> <uptime> <epoch> | warn <text> | error <text>
//!   file junit <bytes>\n<bytes> | exit <code> | end
//! Nothing here reads the console: the console is only shown to people (and scanned for kernel
//! panics by `qemu`).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};

/// A test as nextest names it: binary id ("conformance::volumes") and test name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct TestId {
    pub binary: String,
    pub name: String,
}

impl std::fmt::Display for TestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.binary, self.name)
    }
}

/// A progress mark: the guest's uptime and wall clock when it passed a point.
#[derive(Clone, Debug)]
pub struct Mark {
    pub name: String,
    pub uptime: f64,
    pub epoch: f64,
}

/// The parsed stream. Counts rather than options, so that duplicates are visible.
#[derive(Default, Debug)]
pub struct Stream {
    pub header: bool,
    pub marks: Vec<Mark>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
    pub junit: Vec<Vec<u8>>,
    pub exits: Vec<i32>,
    pub ends: usize,
    /// Lines that are no record at all (a guest writing garbage is a failure, too).
    pub garbage: Vec<String>,
}

impl Stream {
    pub fn mark(&self, name: &str) -> Option<&Mark> {
        self.marks.iter().find(|m| m.name == name)
    }
}

/// Parses whatever the guest wrote so far; a truncated payload ends the parse (it shows up as a
/// missing `end`).
pub fn parse_stream(bytes: &[u8]) -> Stream {
    let mut stream = Stream::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            break; // a record still being written
        };
        let line = String::from_utf8_lossy(&rest[..nl]).into_owned();
        rest = &rest[nl + 1..];
        let (kind, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match kind {
            "carton-vm-results" if arg == "1" => stream.header = true,
            "mark" => {
                let parts: Vec<&str> = arg.split_whitespace().collect();
                match parts.as_slice() {
                    [name, uptime, epoch] => stream.marks.push(Mark {
                        name: name.to_string(),
                        uptime: uptime.parse().unwrap_or(f64::NAN),
                        epoch: epoch.parse().unwrap_or(f64::NAN),
                    }),
                    _ => stream.garbage.push(line.clone()),
                }
            }
            "warn" => stream.warnings.push(arg.to_string()),
            "error" => stream.errors.push(arg.to_string()),
            "exit" => match arg.trim().parse() {
                Ok(code) => stream.exits.push(code),
                Err(_) => stream.garbage.push(line.clone()),
            },
            "end" if arg.is_empty() => stream.ends += 1,
            "file" => {
                let Some(("junit", len)) = arg.split_once(' ') else {
                    stream.garbage.push(line.clone());
                    continue;
                };
                let Ok(len) = len.trim().parse::<usize>() else {
                    stream.garbage.push(line.clone());
                    continue;
                };
                if rest.len() < len {
                    break;
                }
                stream.junit.push(rest[..len].to_vec());
                rest = &rest[len..];
            }
            _ if line.trim().is_empty() => {}
            _ => stream.garbage.push(line.clone()),
        }
    }
    stream
}

/// How one test ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Passed,
    /// With the first lines of the failure message.
    Failed(String),
    /// With the reason the scenario printed (`SKIP: …`), or nextest's own skip message.
    Skipped(String),
}

/// One `<testcase>` of the JUnit report.
#[derive(Clone, Debug)]
pub struct TestResult {
    pub id: TestId,
    pub outcome: Outcome,
    /// Start time (seconds since the epoch, guest clock), from the `timestamp` attribute.
    pub started: Option<f64>,
}

/// Reads nextest's JUnit report: one `<testsuite>` per binary, one `<testcase>` per test run.
/// A scenario that skips passes and prints `SKIP: reason`, which the `vm` profile keeps
/// (`store-success-output`): that turns the pass into a skip with its reason.
pub fn parse_junit(xml: &[u8]) -> Result<Vec<TestResult>> {
    let text = std::str::from_utf8(xml).context("the JUnit report is not UTF-8")?;
    let doc = roxmltree::Document::parse(text).context("the JUnit report is not valid XML")?;
    let mut results = Vec::new();
    for suite in doc.descendants().filter(|n| n.has_tag_name("testsuite")) {
        let binary = suite.attribute("name").unwrap_or("?").to_string();
        for case in suite.children().filter(|n| n.has_tag_name("testcase")) {
            let name = case.attribute("name").unwrap_or("?").to_string();
            let child_text = |tag: &str| -> Option<String> {
                case.children().find(|n| n.has_tag_name(tag)).map(|n| {
                    let attr = n.attribute("message").unwrap_or("");
                    let body = n.text().unwrap_or("");
                    format!("{attr}\n{body}")
                })
            };
            let failure = child_text("failure").or_else(|| child_text("error"));
            let outcome = if let Some(message) = failure {
                Outcome::Failed(excerpt(&message))
            } else if let Some(message) = child_text("skipped") {
                Outcome::Skipped(excerpt(&message))
            } else {
                let output: String = ["system-err", "system-out"]
                    .iter()
                    .filter_map(|t| child_text(t))
                    .collect();
                match skip_reason(&output) {
                    Some(reason) => Outcome::Skipped(reason),
                    None => Outcome::Passed,
                }
            };
            results.push(TestResult {
                id: TestId {
                    binary: binary.clone(),
                    name,
                },
                outcome,
                started: case.attribute("timestamp").and_then(parse_timestamp),
            });
        }
    }
    Ok(results)
}

/// The reason of the first `SKIP: reason` line a test printed.
pub fn skip_reason(output: &str) -> Option<String> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("SKIP:"))
        .map(|r| r.trim().to_string())
}

/// The first non-empty lines of a message, for a summary.
fn excerpt(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .take(6)
        .collect();
    lines.join("\n")
}

/// Seconds since the epoch of an RFC 3339 timestamp as nextest writes them
/// ("2026-11-30T00:42:51.948+00:00", or with a `Z`).
pub fn parse_timestamp(ts: &str) -> Option<f64> {
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (clock, offset) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (
            c,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    };
    let mut t = clock.split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let ss: f64 = t.next()?.parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 - offset) as f64 + ss)
}

/// The verdict on one leg's results.
#[derive(Default, Debug, serde::Serialize)]
pub struct Verdict {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Expected tests without a result.
    pub missing: Vec<String>,
    /// Tests with more than one result, or a result nobody expected.
    pub duplicates: Vec<String>,
    pub unexpected: Vec<String>,
    /// Failing tests with an excerpt of their message.
    pub failures: Vec<(String, String)>,
    /// Skipped tests with their reason.
    pub skips: Vec<(String, String)>,
    /// Why the leg failed, beyond the lists above (exit status, protocol problems…).
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    /// nextest's exit status in the guest.
    pub exit: Option<i32>,
    /// Guest wall-clock start of the first test, when known.
    #[serde(skip)]
    pub first_test_epoch: Option<f64>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
            && self.failed == 0
            && self.missing.is_empty()
            && self.duplicates.is_empty()
            && self.unexpected.is_empty()
    }
}

/// Judges a complete stream against the expected tests: every expected test exactly once, no
/// other test, one report, one exit status of 0, and the `end` record.
pub fn judge(stream: &Stream, expected: &BTreeSet<TestId>) -> Verdict {
    let mut v = Verdict {
        warnings: stream.warnings.clone(),
        ..Verdict::default()
    };
    if !stream.header {
        v.problems
            .push("the results port carried no `carton-vm-results 1` header".into());
    }
    for e in &stream.errors {
        v.problems.push(format!("the guest reported: {e}"));
    }
    for g in &stream.garbage {
        v.problems
            .push(format!("unreadable record on the results port: {g:?}"));
    }
    match stream.ends {
        1 => {}
        0 => v
            .problems
            .push("the results stream has no `end` record: the guest stopped early".into()),
        n => v.problems.push(format!("{n} `end` records")),
    }
    match stream.exits.as_slice() {
        [0] => {}
        [code] => v
            .problems
            .push(format!("nextest exited with status {code}")),
        [] => v.problems.push("no exit status from the guest".into()),
        many => v
            .problems
            .push(format!("{} exit statuses: {many:?}", many.len())),
    }
    v.exit = stream.exits.first().copied();
    let results: Vec<TestResult> = match stream.junit.as_slice() {
        [one] => match parse_junit(one) {
            Ok(r) => r,
            Err(e) => {
                v.problems.push(format!("{e:#}"));
                Vec::new()
            }
        },
        [] => {
            v.problems.push("no JUnit report from the guest".into());
            Vec::new()
        }
        many => {
            v.problems
                .push(format!("{} JUnit reports instead of one", many.len()));
            Vec::new()
        }
    };

    let mut seen: BTreeMap<&TestId, usize> = BTreeMap::new();
    for r in &results {
        *seen.entry(&r.id).or_default() += 1;
        if !expected.contains(&r.id) {
            v.unexpected.push(r.id.to_string());
        }
        match &r.outcome {
            Outcome::Passed => v.passed += 1,
            Outcome::Failed(msg) => {
                v.failed += 1;
                v.failures.push((r.id.to_string(), msg.clone()));
            }
            Outcome::Skipped(reason) => {
                v.skipped += 1;
                v.skips.push((r.id.to_string(), reason.clone()));
            }
        }
    }
    for (id, n) in &seen {
        if *n > 1 {
            v.duplicates.push(format!("{id} ({n} results)"));
        }
    }
    if !stream.junit.is_empty() {
        for id in expected {
            if !seen.contains_key(id) {
                v.missing.push(id.to_string());
            }
        }
    } else {
        v.missing = expected.iter().map(|id| id.to_string()).collect();
    }
    v.first_test_epoch = results
        .iter()
        .filter_map(|r| r.started)
        .min_by(|a, b| a.total_cmp(b));
    v
}

/// Fails unless `bytes` holds a complete stream with a `probe` mark (the accel probe).
pub fn probe_ok(bytes: &[u8]) -> Result<()> {
    let stream = parse_stream(bytes);
    if stream.header && stream.mark("probe").is_some() {
        return Ok(());
    }
    match stream.errors.first() {
        Some(e) => bail!("the probe guest reported: {e}"),
        None => bail!("the probe guest never reached userspace"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JUNIT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="3">
  <testsuite name="conformance::volumes" tests="3">
    <testcase name="ok" classname="conformance::volumes" timestamp="2026-11-30T00:42:51.948+00:00" time="0.5"/>
    <testcase name="skips" classname="conformance::volumes" timestamp="2026-11-30T00:42:52.000+00:00" time="0.1">
      <system-err>SKIP: no cgroup v2 at /sys/fs/cgroup
</system-err>
    </testcase>
    <testcase name="breaks" classname="conformance::volumes" timestamp="2026-11-30T01:42:50.000+01:00" time="0.2">
      <failure message="test failed" type="test failure">assertion failed: x == y</failure>
    </testcase>
  </testsuite>
</testsuites>"#;

    fn id(name: &str) -> TestId {
        TestId {
            binary: "conformance::volumes".into(),
            name: name.into(),
        }
    }

    fn stream_with(junit: &str, exit: i32) -> Vec<u8> {
        let mut s = format!(
            "carton-vm-results 1\nmark init 1.5 100.0\nmark booted 2.0 100.5\nfile junit {}\n",
            junit.len()
        )
        .into_bytes();
        s.extend_from_slice(junit.as_bytes());
        s.extend_from_slice(format!("exit {exit}\nend\n").as_bytes());
        s
    }

    #[test]
    fn stream_round_trip() {
        let s = parse_stream(&stream_with(JUNIT, 100));
        assert!(s.header);
        assert_eq!(s.marks.len(), 2);
        assert_eq!(s.mark("booted").unwrap().uptime, 2.0);
        assert_eq!(s.junit.len(), 1);
        assert_eq!(s.exits, [100]);
        assert_eq!(s.ends, 1);
        assert!(s.garbage.is_empty(), "{:?}", s.garbage);
    }

    #[test]
    fn truncated_stream_has_no_end() {
        let full = stream_with(JUNIT, 0);
        let s = parse_stream(&full[..full.len() / 2]);
        assert_eq!(s.ends, 0);
        assert!(s.junit.is_empty());
    }

    #[test]
    fn junit_outcomes_and_skip_reasons() {
        let r = parse_junit(JUNIT.as_bytes()).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].outcome, Outcome::Passed);
        assert_eq!(
            r[1].outcome,
            Outcome::Skipped("no cgroup v2 at /sys/fs/cgroup".into())
        );
        assert!(matches!(&r[2].outcome, Outcome::Failed(m) if m.contains("x == y")));
        // Same instant expressed in two offsets.
        assert!((r[2].started.unwrap() - (r[0].started.unwrap() - 1.948)).abs() < 1e-6);
    }

    #[test]
    fn judge_counts_and_finds_missing_and_duplicates() {
        let expected: BTreeSet<TestId> = [id("ok"), id("skips"), id("breaks"), id("lost")].into();
        let v = judge(&parse_stream(&stream_with(JUNIT, 100)), &expected);
        assert_eq!((v.passed, v.failed, v.skipped), (1, 1, 1));
        assert_eq!(v.missing, ["conformance::volumes lost"]);
        assert!(!v.ok());
        assert!(v.problems.iter().any(|p| p.contains("status 100")));

        let twice = JUNIT.replace(
            "<testcase name=\"breaks\"",
            "<testcase name=\"ok\" timestamp=\"x\"/><testcase name=\"breaks\"",
        );
        let v = judge(&parse_stream(&stream_with(&twice, 0)), &expected);
        assert_eq!(v.duplicates, ["conformance::volumes ok (2 results)"]);
    }

    #[test]
    fn judge_accepts_a_clean_run() {
        let junit = JUNIT.replace(
            r#"<failure message="test failed" type="test failure">assertion failed: x == y</failure>"#,
            "",
        );
        let expected: BTreeSet<TestId> = [id("ok"), id("skips"), id("breaks")].into();
        let v = judge(&parse_stream(&stream_with(&junit, 0)), &expected);
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.passed, v.failed, v.skipped), (2, 0, 1));
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(
            parse_timestamp("2000-03-01T00:00:00+00:00"),
            Some(951_868_800.0)
        );
        assert_eq!(
            parse_timestamp("2000-03-01T01:00:00+01:00"),
            Some(951_868_800.0)
        );
        assert_eq!(parse_timestamp("garbage"), None);
    }
}
