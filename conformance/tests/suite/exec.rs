//! `exec` into a running detached container: the command runs in the container's namespaces
//! (mount, pid, net, ipc, uts) and cgroup, as a child inside its pid namespace, with the
//! container's environment, working directory and user unless `-e`, `-w`, `-u` say otherwise;
//! carton returns its exit code. `-i` passes stdin, `-t` gives it a terminal, `-d` detaches.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use conformance::cgroup::{self, Version};
use conformance::containers::{IDLE_UNTIL_TERM, SYNC_SH};
use conformance::pty::{Pty, termios_diff};
use conformance::{Carton, DEADLINE, host, lines, parse_env, unique};
use rstest::rstest;

fn fixture() -> Option<Carton> {
    Carton::with_busybox()
}

/// A running container named `name`, idle until stopped; extra `run` flags before the image.
#[track_caller]
fn idle(ct: &Carton, name: &str, flags: &[&str]) -> String {
    let mut args = vec!["--name", name];
    args.extend_from_slice(flags);
    args.extend(["busybox", "sh", "-c", IDLE_UNTIL_TERM]);
    ct.run_detached(&args)
}

/// `carton exec <args…>`: asserts success, returns stdout.
#[track_caller]
fn exec_ok(ct: &Carton, args: &[&str]) -> String {
    ct.cmd().arg("exec").args(args).stdout_ok()
}

/// carton returns the exec'd command's exit code: its own, 127 (not found), 126 (not
/// executable), 128+N (killed by a signal).
#[rstest]
#[case::success(&["true"], 0)]
#[case::failure(&["false"], 1)]
#[case::exit_code(&["sh", "-c", "exit 7"], 7)]
#[case::not_found(&["nosuchcommand"], 127)]
#[case::not_executable(&["/etc/passwd"], 126)]
#[case::killed(&["sh", "-c", "kill -9 $$"], 137)]
fn exec_returns_the_exit_code(#[case] command: &[&str], #[case] code: i32) {
    let Some(ct) = fixture() else { return };
    idle(&ct, "box", &[]);
    let mut args = vec!["exec", "box"];
    args.extend_from_slice(command);
    ct.cmd().args(&args).assert().code(code);
    assert_eq!(
        ct.state("box")["Running"],
        true,
        "exec stopped the container"
    );
    ct.finish();
}

#[test]
fn exec_keeps_stdout_and_stderr_apart() {
    let Some(ct) = fixture() else { return };
    idle(&ct, "box", &[]);
    ct.cmd()
        .args(["exec", "box", "sh", "-c", "echo to-out; echo to-err >&2"])
        .assert()
        .success()
        .stdout("to-out\n")
        .stderr("to-err\n");
    ct.finish();
}

/// The exec'd process is in the init's mount, pid, net, ipc and uts namespaces (the links of
/// /proc/self/ns inside match the init's on the host), sees the container's files and hostname.
#[test]
fn exec_joins_the_container_namespaces() {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script = format!(
        "{SYNC_SH} echo in-the-layer > /marker; trap 'exit 0' TERM; s ready; sleep 1000 & wait"
    );
    let id = ct.run_detached([
        "--name",
        "ns",
        "--hostname",
        "inside-box",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    hs.wait_for("ready");
    let init = ct.init_process(&id);
    for ns in ["mnt", "pid", "net", "ipc", "uts"] {
        let expected = init
            .ns_link(ns)
            .unwrap_or_else(|| panic!("readlink /proc/{}/ns/{ns}", init.pid));
        assert_ne!(
            expected,
            host::ns_link(ns),
            "the container shares the host's {ns} ns"
        );
        let inside = exec_ok(&ct, &["ns", "readlink", &format!("/proc/self/ns/{ns}")]);
        assert_eq!(
            inside.trim(),
            expected,
            "{ns} namespace of the exec'd process"
        );
    }
    assert_eq!(exec_ok(&ct, &["ns", "hostname"]).trim(), "inside-box");
    assert_eq!(exec_ok(&ct, &["ns", "cat", "/marker"]), "in-the-layer\n");
    ct.finish();
}

/// `ps` run by exec lists the container's PID 1 (its command) and itself, with the small pids of
/// the container's pid namespace — nothing of the host.
#[test]
fn exec_sees_the_container_pid1() {
    let Some(ct) = fixture() else { return };
    let marker = unique("pid1-marker");
    let script = format!(": {marker}; {IDLE_UNTIL_TERM}");
    ct.run_detached(["--name", "pidns", "busybox", "sh", "-c", &script]);
    let out = exec_ok(&ct, &["pidns", "ps", "-o", "pid,args"]);
    let rows: BTreeMap<i32, String> = lines(&out)
        .iter()
        .skip(1)
        .filter_map(|l| {
            let (pid, args) = l.split_once(char::is_whitespace)?;
            Some((pid.trim().parse().ok()?, args.trim().to_string()))
        })
        .collect();
    assert!(
        rows.get(&1).is_some_and(|a| a.contains(&marker)),
        "PID 1 is not the container's command:\n{out}"
    );
    let ps = rows
        .iter()
        .find(|(_, a)| a.starts_with("ps "))
        .unwrap_or_else(|| panic!("the exec'd ps is not listed:\n{out}"));
    assert_ne!(*ps.0, 1, "{out}");
    assert!(
        rows.len() <= 6 && rows.keys().all(|p| (1..100).contains(p)),
        "more than the container's processes are visible:\n{out}"
    );
    ct.finish();
}

/// The exec'd process sits in the container's cgroup: on v1 in the very cgroups (paths with the
/// container id) of the init; on v2, with a cgroup namespace, at its root `0::/`.
#[test]
fn exec_joins_the_container_cgroup() {
    let Some(version) = cgroup::version() else {
        conformance::skip("no cgroup filesystem");
        return;
    };
    let Some(ct) = fixture() else { return };
    let id = idle(&ct, "cg", &[]);
    let init = ct.init_process(&id);
    let inside = exec_ok(&ct, &["cg", "cat", "/proc/self/cgroup"]);
    match version {
        Version::V2 => assert_eq!(lines(&inside), ["0::/"], "{inside}"),
        Version::V1 => {
            let init_cgroups = init.cgroup().expect("init's /proc/<pid>/cgroup");
            let containers: Vec<&str> = init_cgroups.lines().filter(|l| l.contains(&id)).collect();
            assert!(!containers.is_empty(), "{init_cgroups}");
            for line in containers {
                assert!(
                    inside.lines().any(|l| l == line),
                    "the exec'd process is not in {line:?}:\n{inside}"
                );
            }
        }
    }
    ct.finish();
}

/// By default the exec'd process has the container's environment, working directory and user.
#[test]
fn exec_defaults_to_the_containers_env_cwd_and_user() {
    let Some(ct) = fixture() else { return };
    idle(&ct, "dflt", &["-e", "FOO=bar", "-w", "/tmp", "-u", "1000"]);
    let out = exec_ok(&ct, &["dflt", "sh", "-c", "echo foo=$FOO; pwd; id -u"]);
    assert_eq!(lines(&out), ["foo=bar", "/tmp", "1000"]);
    ct.finish();
}

/// `-e` adds and overrides variables, `-w` sets the working directory, `-u` the user.
#[test]
fn exec_flags_set_env_cwd_and_user() {
    let Some(ct) = fixture() else { return };
    idle(&ct, "flags", &["-e", "FOO=bar", "-e", "KEEP=me"]);
    let env = parse_env(&exec_ok(
        &ct,
        &["-e", "BAZ=qux", "-e", "FOO=override", "flags", "env"],
    ));
    assert_eq!(env.get("BAZ").map(String::as_str), Some("qux"), "{env:?}");
    assert_eq!(
        env.get("FOO").map(String::as_str),
        Some("override"),
        "{env:?}"
    );
    assert_eq!(env.get("KEEP").map(String::as_str), Some("me"), "{env:?}");
    assert!(env.contains_key("PATH"), "{env:?}");

    assert_eq!(exec_ok(&ct, &["flags", "pwd"]), "/\n");
    assert_eq!(exec_ok(&ct, &["-w", "/tmp", "flags", "pwd"]), "/tmp\n");
    assert_eq!(exec_ok(&ct, &["flags", "id", "-u"]), "0\n");
    assert_eq!(exec_ok(&ct, &["-u", "1000", "flags", "id", "-u"]), "1000\n");
    // The container's own environment is unchanged by an exec's -e.
    let again = parse_env(&exec_ok(&ct, &["flags", "env"]));
    assert_eq!(again.get("FOO").map(String::as_str), Some("bar"));
    assert!(!again.contains_key("BAZ"), "{again:?}");
    ct.finish();
}

/// `-i` passes carton's stdin to the command; without it the command's stdin is not carton's.
#[test]
fn exec_interactive_passes_stdin() {
    let Some(ct) = fixture() else { return };
    idle(&ct, "in", &[]);
    ct.cmd()
        .args(["exec", "-i", "in", "cat"])
        .write_stdin("hello\nworld\n")
        .assert()
        .success()
        .stdout("hello\nworld\n");
    ct.cmd()
        .args(["exec", "-i", "in", "sh", "-c", "read x; echo got-$x"])
        .write_stdin("abc\n")
        .assert()
        .success()
        .stdout("got-abc\n");
    ct.cmd()
        .args(["exec", "in", "cat"])
        .write_stdin("not-for-you\n")
        .assert()
        .success()
        .stdout("");
    ct.finish();
}

/// `-t` gives the command a terminal; carton's own terminal is restored afterwards; the exit
/// code comes through. With `-it` typed input reaches the command.
#[test]
fn exec_tty() {
    let Some(ct) = fixture() else { return };
    idle(&ct, "tty", &[]);

    let pty = Pty::open(24, 80);
    let before = pty.termios();
    let mut cmd = ct.cmd();
    cmd.args([
        "exec",
        "-t",
        "tty",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo tty-yes; exit 3",
    ]);
    let mut run = pty.spawn(cmd.to_std());
    let (status, out) = run.wait();
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(lines(&out).iter().any(|l| l == "tty-yes"), "{out:?}");
    let diff = termios_diff(&before, &run.termios());
    assert!(diff.is_empty(), "terminal not restored: {diff:?}");

    let pty = Pty::open(24, 80);
    let mut cmd = ct.cmd();
    cmd.args(["exec", "-it", "tty", "sh", "-c", "read x; echo got-$x"]);
    let mut run = pty.spawn(cmd.to_std());
    run.write(b"abc\n");
    run.read_until("got-abc");
    let (status, out) = run.wait();
    assert_eq!(status.code(), Some(0), "{out}");
    ct.finish();
}

/// `exec -d` returns at once while the command keeps running inside the container.
#[test]
fn exec_detached() {
    let Some(ct) = fixture() else { return };
    idle(&ct, "bg", &[]);
    let script = "echo hi > /tmp/from-exec-d; sleep 1000";
    ct.cmd()
        .args(["exec", "-d", "bg", "sh", "-c", script])
        .assert()
        .success();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = ct
            .cmd()
            .args(["exec", "bg", "cat", "/tmp/from-exec-d"])
            .output();
        if String::from_utf8_lossy(&out.stdout) == "hi\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the detached exec never wrote its file: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ps = exec_ok(&ct, &["bg", "ps", "-o", "args"]);
    assert!(
        ps.contains("sleep 1000") && ps.lines().filter(|l| l.contains("sleep 1000")).count() >= 2,
        "the detached command is not running in the container:\n{ps}"
    );
    // rm -f (in finish) must take it down with the container: no cgroup may be left.
    ct.finish();
}
