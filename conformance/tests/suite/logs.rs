//! Logs of detached containers: docker's json-file format in `<root>/containers/<id>/
//! container.log`, and `carton logs [-f] [--tail N] [-t]`: stdout lines to stdout, stderr lines
//! to stderr, in order; `-f` follows until the container exits.
//!
//! Only detached containers are logged (foreground containers are not recorded yet, so nothing
//! here runs in the foreground). Orders that cross the two streams are made deterministic by a
//! file handshake: the container writes the next line only after the test saw the previous one
//! in the log.

use std::collections::BTreeMap;
use std::process::Stdio;

use conformance::containers::{IDLE_UNTIL_TERM, LogEntry, SYNC_SH, parse_rfc3339};
use conformance::{Carton, DEADLINE, EXIT_CARTON_ERROR, lines, wait_within};
use predicates::prelude::*;
use rstest::rstest;

fn fixture() -> Option<Carton> {
    Carton::with_busybox()
}

/// `(stream, text)` of each entry.
fn streams(entries: &[LogEntry]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| (e.stream.clone(), e.log.clone()))
        .collect()
}

/// Texts of the entries of one stream, concatenated.
fn text_of(entries: &[LogEntry], stream: &str) -> String {
    entries
        .iter()
        .filter(|e| e.stream == stream)
        .map(|e| e.log.as_str())
        .collect()
}

/// `carton logs <args…>`, asserting success; returns (stdout, stderr).
#[track_caller]
fn logs(ct: &Carton, args: &[&str]) -> (String, String) {
    let assert = ct.cmd().arg("logs").args(args).assert().success();
    let out = assert.get_output();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The log file is docker's json-file: complete lines, one object each with `log` (the text
/// with its newline), `stream` and an RFC 3339 `time` no earlier than the container's creation,
/// per-stream order kept; `inspect`'s LogPath names it.
#[test]
fn log_file_is_docker_json_file() {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached([
        "--name",
        "json",
        "busybox",
        "sh",
        "-c",
        "echo out-one; echo err-one >&2; printf 'two words\\n'; echo err-two >&2",
    ]);
    let state = ct.wait_exited(&id);
    assert_eq!(state["ExitCode"], 0, "{state}");

    let path = ct.log_path(&id);
    let raw =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(raw.ends_with('\n'), "last log line incomplete: {raw:?}");
    let entries = ct.log_entries(&id);
    assert_eq!(entries.len(), raw.lines().count());
    assert_eq!(text_of(&entries, "stdout"), "out-one\ntwo words\n", "{raw}");
    assert_eq!(text_of(&entries, "stderr"), "err-one\nerr-two\n", "{raw}");
    for e in &entries {
        assert!(e.log.ends_with('\n'), "{e:?}");
        assert_eq!(e.log.matches('\n').count(), 1, "one line per entry: {e:?}");
    }
    let created = parse_rfc3339(ct.inspect(&id)["Created"].as_str().unwrap_or_default())
        .expect("Created is RFC 3339");
    for stream in ["stdout", "stderr"] {
        let times: Vec<i128> = entries
            .iter()
            .filter(|e| e.stream == stream)
            .map(|e| e.nanos)
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{raw}");
        assert!(
            times.iter().all(|t| *t >= created),
            "a line older than the container: {raw}"
        );
    }
    let log_path = ct.inspect(&id)["LogPath"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        std::path::Path::new(&log_path).canonicalize().ok(),
        path.canonicalize().ok(),
        "LogPath {log_path:?}"
    );
    ct.finish();
}

/// `logs` of an exited container: every stdout line on stdout and every stderr line on stderr,
/// each stream complete and in order.
#[test]
fn logs_keep_the_streams_apart_and_in_order() {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached([
        "busybox",
        "sh",
        "-c",
        "i=1; while [ $i -le 100 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done",
    ]);
    ct.wait_exited(&id);
    let (stdout, stderr) = logs(&ct, &[&id]);
    let expected =
        |prefix: &str| -> String { (1..=100).map(|i| format!("{prefix}{i}\n")).collect() };
    assert_eq!(stdout, expected("out"));
    assert_eq!(stderr, expected("err"));
    ct.finish();
}

/// The order across streams is kept, in the log file and in `logs` (stdout and stderr written to
/// one file show the container's order).
#[test]
fn log_keeps_the_order_across_streams() {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script =
        format!("{SYNC_SH} echo a-out; w 1; echo b-err >&2; w 2; echo c-out; w 3; echo d-err >&2");
    let id = ct.run_detached(["-v", &hs.volume(), "busybox", "sh", "-c", &script]);
    for (step, line) in [("1", "a-out"), ("2", "b-err"), ("3", "c-out")] {
        ct.wait_for_log(&id, line);
        hs.release(step);
    }
    ct.wait_exited(&id);
    let entries = ct.log_entries(&id);
    let expected: Vec<(String, String)> = [
        ("stdout", "a-out\n"),
        ("stderr", "b-err\n"),
        ("stdout", "c-out\n"),
        ("stderr", "d-err\n"),
    ]
    .iter()
    .map(|(s, l)| (s.to_string(), l.to_string()))
    .collect();
    assert_eq!(streams(&entries), expected);
    assert!(
        entries.windows(2).all(|w| w[0].nanos <= w[1].nanos),
        "{entries:?}"
    );

    // Both of carton's streams into one file: the interleaving must survive.
    let merged_path = ct.path("merged.txt");
    let file = std::fs::File::create(&merged_path).unwrap();
    let mut cmd = ct.cmd();
    cmd.args(["logs", &id]);
    let mut child = cmd
        .to_std()
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("spawn carton logs");
    let status = wait_within(&mut child, DEADLINE, "`carton logs`");
    assert!(status.success(), "{status}");
    assert_eq!(
        std::fs::read_to_string(&merged_path).unwrap(),
        "a-out\nb-err\nc-out\nd-err\n"
    );
    ct.finish();
}

/// `logs -t`: each line is prefixed with its RFC 3339 timestamp and a space — the time the log
/// recorded for that line.
#[test]
fn logs_timestamps() {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached(["busybox", "sh", "-c", "echo one; echo two >&2; echo three"]);
    ct.wait_exited(&id);
    let recorded: BTreeMap<String, i128> = ct
        .log_entries(&id)
        .into_iter()
        .map(|e| (e.log.trim_end().to_string(), e.nanos))
        .collect();
    for flag in ["-t", "--timestamps"] {
        let (stdout, stderr) = logs(&ct, &[flag, &id]);
        for (out, texts) in [(&stdout, &["one", "three"][..]), (&stderr, &["two"][..])] {
            let got: Vec<(i128, String)> = out
                .lines()
                .map(|l| {
                    let (ts, text) = l
                        .split_once(' ')
                        .unwrap_or_else(|| panic!("no timestamp in {l:?}"));
                    let t = parse_rfc3339(ts)
                        .unwrap_or_else(|| panic!("{ts:?} is not an RFC 3339 timestamp"));
                    (t, text.to_string())
                })
                .collect();
            let got_texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
            assert_eq!(got_texts, texts, "{flag}: {out:?}");
            for (t, text) in &got {
                assert_eq!(
                    Some(t),
                    recorded.get(text),
                    "{flag}: the timestamp of {text:?} differs from the log's"
                );
            }
        }
    }
    ct.finish();
}

/// `--tail N` prints the last N lines; `--tail all` and a large N print everything; 0 nothing.
#[rstest]
#[case::three("3", 3)]
#[case::one("1", 1)]
#[case::zero("0", 0)]
#[case::all("all", 10)]
#[case::more_than_there_are("100", 10)]
fn logs_tail(#[case] tail: &str, #[case] count: usize) {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached([
        "busybox",
        "sh",
        "-c",
        "i=1; while [ $i -le 10 ]; do echo line$i; i=$((i+1)); done",
    ]);
    ct.wait_exited(&id);
    let (stdout, stderr) = logs(&ct, &["--tail", tail, &id]);
    let expected: String = (11 - count..=10)
        .filter(|i| *i >= 1)
        .map(|i| format!("line{i}\n"))
        .collect();
    assert_eq!(stdout, expected, "--tail {tail}");
    assert_eq!(stderr, "");
    ct.finish();
}

/// `--tail` counts the lines of both streams together, in the log's order.
#[test]
fn logs_tail_counts_both_streams() {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached([
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done",
    ]);
    ct.wait_exited(&id);
    let entries = ct.log_entries(&id);
    assert_eq!(entries.len(), 10, "{entries:?}");
    let last = &entries[entries.len() - 3..];
    let (stdout, stderr) = logs(&ct, &["--tail", "3", &id]);
    assert_eq!(stdout, text_of(last, "stdout"));
    assert_eq!(stderr, text_of(last, "stderr"));
    ct.finish();
}

/// `logs` of a running container prints what was logged so far and returns.
#[test]
fn logs_of_a_running_container_return() {
    let Some(ct) = fixture() else { return };
    let script = format!("echo before; echo before-err >&2; {IDLE_UNTIL_TERM}");
    let id = ct.run_detached(["--name", "live", "busybox", "sh", "-c", &script]);
    ct.wait_for_log(&id, "before-err");
    ct.wait_for_log(&id, "before\n");
    let (stdout, stderr) = logs(&ct, &["live"]);
    assert_eq!(stdout, "before\n");
    assert_eq!(stderr, "before-err\n");
    assert_eq!(ct.state("live")["Running"], true);
    ct.finish();
}

/// `logs -f` on a running container prints the lines so far, keeps following while the
/// container runs, prints later lines, and returns when the container exits.
#[test]
fn logs_follow_returns_when_the_container_exits() {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script = format!("{SYNC_SH} echo first; echo first-err >&2; s printed; w go; echo second");
    let id = ct.run_detached([
        "--name",
        "follow",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    hs.wait_for("printed");
    let mut follow = ct.cmd().args(["logs", "-f", "follow"]).spawn();
    follow.wait_for_stdout("first\n");
    assert!(
        follow.try_wait().is_none(),
        "`logs -f` returned while the container still runs"
    );
    hs.release("go");
    follow
        .assert()
        .success()
        .stdout("first\nsecond\n")
        .stderr("first-err\n");
    assert_eq!(ct.state(&id)["Status"], "exited");
    ct.finish();
}

/// `logs -f` of a container that already exited prints everything and returns.
#[test]
fn logs_follow_of_an_exited_container_returns() {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached(["busybox", "sh", "-c", "echo done; echo done-err >&2"]);
    ct.wait_exited(&id);
    ct.cmd()
        .args(["logs", "-f", &id])
        .assert()
        .success()
        .stdout("done\n")
        .stderr("done-err\n");
    ct.finish();
}

/// `logs -f` of a container that is stopped from outside returns too.
#[test]
fn logs_follow_returns_when_the_container_is_killed() {
    let Some(ct) = fixture() else { return };
    let script = format!("echo up; {IDLE_UNTIL_TERM}");
    let id = ct.run_detached(["--name", "doomed", "busybox", "sh", "-c", &script]);
    let mut follow = ct.cmd().args(["logs", "-f", "doomed"]).spawn();
    follow.wait_for_stdout("up\n");
    ct.cmd().args(["kill", "doomed"]).assert().success();
    follow.assert().success().stdout("up\n");
    assert_eq!(ct.state(&id)["ExitCode"], 137);
    ct.finish();
}

/// `run -d -t`: the console output is logged as stream stdout, and `logs` prints it on stdout.
#[test]
fn logs_of_a_tty_container_are_stdout() {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached([
        "-t",
        "busybox",
        "sh",
        "-c",
        "echo on-tty; echo err-on-tty >&2; test -t 1 && echo is-a-tty",
    ]);
    ct.wait_exited(&id);
    let entries = ct.log_entries(&id);
    assert!(
        entries.iter().all(|e| e.stream == "stdout"),
        "a tty has one stream: {entries:?}"
    );
    let text: String = entries.iter().map(|e| e.log.as_str()).collect();
    assert_eq!(
        lines(&text),
        ["on-tty", "err-on-tty", "is-a-tty"],
        "{entries:?}"
    );
    let (stdout, stderr) = logs(&ct, &[&id]);
    assert_eq!(lines(&stdout), ["on-tty", "err-on-tty", "is-a-tty"]);
    assert_eq!(stderr, "");
    ct.finish();
}

/// `logs` of an unknown container fails cleanly.
#[test]
fn logs_of_an_unknown_container_fail() {
    let Some(ct) = fixture() else { return };
    ct.cmd()
        .args(["logs", "nosuchcontainer"])
        .assert()
        .code(EXIT_CARTON_ERROR)
        .stderr(predicate::str::contains("No such container"));
    ct.finish();
}
