//! Detached containers and their lifecycle: `run -d`, the per-container supervisor, `ps`
//! telling the truth, `stop`, `kill`, `start`, `restart`, `wait`, `inspect`, `rm`, `--rm`, 20
//! containers at once and a name race. Logs are in `logs.rs`, `exec` in `exec.rs`, refused
//! input in `detached_errors.rs`.
//!
//! Nothing here asserts on timing. A scenario that needs the container to have reached a point
//! uses a file handshake (`conformance::containers::Handshake`); "eventually" is a poll bounded by
//! the suite's DEADLINE.
//!
//! Leak checks: besides `finish()` (no container directory, cgroup, mount, or process holding
//! the root), scenarios record the container's init (`State.Pid`, checked to be a pid-namespace
//! init in the container's cgroup) and its supervisor (the init's parent) by pid *and* start
//! time, and check both are gone afterwards.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use conformance::cgroup;
use conformance::containers::{
    IDLE_UNTIL_TERM, PsRow, SYNC_SH, StatusKind, docker_command_cell, parse_rfc3339, supervisor_of,
};
use conformance::host::Process;
use conformance::pty::Pty;
use conformance::{Carton, DEADLINE, EXIT_CARTON_ERROR, host, is_hex, lines, skip};
use nix::sys::signal::Signal;
use predicates::prelude::*;
use rstest::rstest;
use serde_json::Value;

fn fixture() -> Option<Carton> {
    Carton::with_busybox()
}

/// `State.<key>` as nanoseconds since the epoch.
#[track_caller]
fn time_of(state: &Value, key: &str) -> i128 {
    let text = state[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string: {state}"));
    parse_rfc3339(text).unwrap_or_else(|| panic!("{key} {text:?} is not RFC 3339: {state}"))
}

/// Asserts that nothing of container `id` is left: no record, no directory, no cgroup, and the
/// given processes (its init, its supervisor) are dead.
#[track_caller]
fn assert_removed(ct: &Carton, id: &str, processes: &[Process]) {
    assert!(
        !ct.container_ids().iter().any(|i| i == id),
        "container {id} is still listed"
    );
    let dir = ct.root().join("containers").join(id);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert_eq!(
        cgroup::existing_dirs(id),
        Vec::<std::path::PathBuf>::new(),
        "cgroup of {id} left behind"
    );
    for p in processes {
        assert!(
            !p.is_alive(),
            "{p} is still alive after the container was removed"
        );
    }
    assert_eq!(
        host::mount_lines_mentioning(ct.root()),
        Vec::<String>::new(),
        "mount left"
    );
}

/// `run -d` prints the full id and nothing else, returns while the container runs, and leaves
/// no process holding carton's stdout/stderr (the harness fails a command whose pipes stay open
/// after it exited). The container is listed as Up; `State.Pid` is its init on the host.
#[test]
fn run_detached_prints_the_id_and_the_container_runs() {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached(["--name", "web", "busybox", "sh", "-c", IDLE_UNTIL_TERM]);

    // Returned "as soon as the container runs": running now, not later.
    let state = ct.state("web");
    assert_eq!(state["Status"], "running", "{state}");
    assert_eq!(state["Running"], true, "{state}");
    let init = ct.init_process(&id);
    assert!(init.is_alive());
    assert_ne!(
        init.pid,
        std::process::id() as i32,
        "State.Pid is the test process"
    );

    assert_eq!(ct.container_ids(), std::slice::from_ref(&id));
    assert_eq!(
        lines(&ct.cmd().args(["ps", "-q"]).stdout_ok()),
        [&id[..12]],
        "`ps -q` shows the short id of the running container"
    );
    let row = ct.ps_row("web").expect("web in ps -a");
    assert_eq!(row.id, id);
    assert_eq!(row.kind(), StatusKind::Up, "{row:?}");
    assert_eq!(row.image, "busybox");
    let running = ct.ps_rows(&["--no-trunc"]);
    assert_eq!(
        running.len(),
        1,
        "`ps` lists the running container: {running:?}"
    );

    let supervisor = supervisor_of(&init);
    ct.cmd().args(["rm", "-f", "web"]).assert().success();
    assert_removed(&ct, &id, &[init, supervisor]);
    ct.finish();
}

/// A command that cannot start: `run -d` exits 127/126 with the reason on stderr and prints no
/// id; the container stays listed as Created (or is gone with --rm), and no process is left.
#[rstest]
#[case::not_found(&["nosuchcommand"], 127, Some("not found"), false)]
#[case::not_executable(&["/etc/passwd"], 126, None, false)]
#[case::not_found_rm(&["nosuchcommand"], 127, Some("not found"), true)]
fn run_detached_start_failure(
    #[case] command: &[&str],
    #[case] code: i32,
    #[case] message: Option<&str>,
    #[case] rm: bool,
) {
    let Some(ct) = fixture() else { return };
    let mut args = vec!["-d", "--name", "broken"];
    if rm {
        args.push("--rm");
    }
    args.push("busybox");
    args.extend_from_slice(command);
    let assert = ct.run(&args).assert().code(code);
    let out = assert.get_output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.trim().is_empty(), "no message on stderr");
    if let Some(message) = message {
        assert!(
            stderr.contains(message),
            "stderr lacks {message:?}: {stderr}"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.split_whitespace().any(|w| is_hex(w, 64)),
        "an id was printed for a container that did not start: {stdout:?}"
    );

    if rm {
        assert_eq!(ct.container_ids(), Vec::<String>::new(), "--rm left it");
    } else {
        let row = ct.ps_row("broken").expect("the container is still listed");
        assert_eq!(row.kind(), StatusKind::Created, "{row:?}");
        let state = ct.state("broken");
        assert_eq!(state["Status"], "created", "{state}");
        assert_eq!(state["Running"], false, "{state}");
        assert_eq!(state["Pid"], 0, "{state}");
        assert!(ct.ps_rows(&["--no-trunc"]).is_empty(), "listed as running");
    }
    ct.assert_no_processes_left(&[]);
    ct.finish();
}

/// `true` when `range` (whole seconds a cell may stand for) and `lo..=hi` overlap, allowing one
/// second either way for rounding and for the wall clock carton reads against the test's
/// monotonic one.
fn overlaps(range: &std::ops::RangeInclusive<u64>, lo: u64, hi: u64) -> bool {
    *range.start() <= hi + 1 && range.end() + 1 >= lo
}

/// `ps` cells as docker prints them. COMMAND: the arguments joined by spaces, cut to 19
/// characters and an ellipsis when longer than 20, quoted as a Go string (inner `"` escaped);
/// whole with `--no-trunc`, which also shows 64-hex ids. CREATED `N seconds ago` and STATUS
/// `Up N seconds` / `Exited (3) N seconds ago` agree with the test's own clock. PORTS lists the
/// published ports of a running container, and nothing once it has exited. Newest first.
#[test]
fn ps_shows_command_created_status_and_ports() {
    let Some(ct) = fixture() else { return };
    let (iptables, out) = ct.netns().command("iptables-save", &[]);
    if !iptables {
        skip(&format!(
            "`iptables-save` does not work in a network namespace, -p cannot be used: {}",
            out.trim()
        ));
        return;
    }
    let hs = ct.handshake();
    let long_command = format!("sh -c {IDLE_UNTIL_TERM}");
    let exiting = format!("{SYNC_SH} s ready; w go; echo \"done\"; exit 3");
    let exiting_command = format!("sh -c {exiting}");
    let twenty_command = "sleep 10000000000000"; // exactly 20 characters: not cut
    assert_eq!(twenty_command.len(), 20);

    let before_runs = Instant::now();
    let long = ct.run_detached([
        "--name",
        "long",
        "-p",
        "8080:80",
        "busybox",
        "sh",
        "-c",
        IDLE_UNTIL_TERM,
    ]);
    let twenty = ct.run_detached([
        "--name",
        "twenty",
        "--network",
        "none",
        "busybox",
        "sleep",
        "10000000000000",
    ]);
    let exiter = ct.run_detached([
        "--name",
        "exiter",
        "-p",
        "127.0.0.1:8081:81/udp",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &exiting,
    ]);
    let after_runs = Instant::now();
    hs.wait_for("ready");
    // Time passes (not a synchronisation): CREATED must then read "N seconds ago", N >= 2.
    std::thread::sleep(Duration::from_secs(2));

    let rows = ct.ps_rows(&[]);
    let seen = Instant::now();
    let names: Vec<&str> = rows.iter().map(|r| r.names.as_str()).collect();
    assert_eq!(
        names,
        ["exiter", "twenty", "long"],
        "newest first: {rows:?}"
    );
    let row = |name: &str| -> &PsRow { rows.iter().find(|r| r.names == name).unwrap() };
    for (name, id, command) in [
        ("long", &long, long_command.as_str()),
        ("twenty", &twenty, twenty_command),
        ("exiter", &exiter, exiting_command.as_str()),
    ] {
        let r = row(name);
        assert_eq!(r.id, id[..12], "{r:?}");
        assert_eq!(r.image, "busybox", "{r:?}");
        assert_eq!(r.command, docker_command_cell(command, true), "{r:?}");
        assert_eq!(r.kind(), StatusKind::Up, "{r:?}");
        // Created between `before_runs` and `after_runs`; listed just before `seen`.
        let created = r.created_secs();
        let (lo, hi) = (
            seen.duration_since(after_runs).as_secs().saturating_sub(1),
            seen.duration_since(before_runs).as_secs(),
        );
        assert!(lo >= 1, "the sleep above did not happen?");
        assert!(
            overlaps(&created, lo, hi),
            "CREATED {:?} is not between {lo} and {hi} seconds ago: {r:?}",
            r.created
        );
        let up = r.status_secs().unwrap_or_else(|| panic!("{r:?}"));
        assert!(
            up.start() <= created.end(),
            "Up for longer than it exists: {r:?}"
        );
    }
    assert_eq!(row("long").command, "\"sh -c trap 'exit 0'…\"");
    assert_eq!(row("long").ports, "0.0.0.0:8080->80/tcp");
    assert_eq!(row("twenty").ports, "");
    assert_eq!(row("exiter").ports, "127.0.0.1:8081->81/udp");

    hs.release("go");
    let released = Instant::now();
    ct.wait_exited("exiter");
    let all = ct.ps_rows(&["-a", "--no-trunc"]);
    let seen = Instant::now();
    assert_eq!(all.len(), 3, "{all:?}");
    for (name, id, command) in [
        ("long", &long, long_command.as_str()),
        ("twenty", &twenty, twenty_command),
        ("exiter", &exiter, exiting_command.as_str()),
    ] {
        let r = all.iter().find(|r| r.names == name).unwrap();
        assert_eq!(&r.id, id, "--no-trunc shows the full id: {r:?}");
        assert_eq!(r.command, docker_command_cell(command, false), "{r:?}");
        r.created_secs();
    }
    let exited = all.iter().find(|r| r.names == "exiter").unwrap();
    assert_eq!(
        exited.command,
        format!("\"sh -c {}\"", exiting.replace('"', "\\\"")),
        "{exited:?}"
    );
    assert_eq!(exited.kind(), StatusKind::Exited(3), "{exited:?}");
    let ago = exited.status_secs().unwrap();
    assert!(
        overlaps(&ago, 0, seen.duration_since(released).as_secs()),
        "exited {:?}, but it was released {:?} before: {exited:?}",
        exited.status,
        seen.duration_since(released)
    );
    assert_eq!(
        exited.ports, "",
        "an exited container publishes nothing: {exited:?}"
    );
    let running = ct.ps_rows(&["--no-trunc"]);
    let running: Vec<(&str, &str)> = running
        .iter()
        .map(|r| (r.names.as_str(), r.id.as_str()))
        .collect();
    assert_eq!(
        running,
        [("twenty", twenty.as_str()), ("long", long.as_str())]
    );
    ct.finish();
}

/// The supervisor keeps no descriptor it inherited from whoever ran `carton run -d`: a pipe
/// passed to carton as an extra fd reads EOF once carton has exited (a caller waiting for EOF on
/// such a pipe — a CI runner, a test harness, `make`'s jobserver — would otherwise hang for as
/// long as the container runs). carton's stdout and stderr are checked by every `run_detached`.
#[test]
fn supervisor_keeps_no_inherited_descriptor() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let Some(ct) = fixture() else { return };
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe2");
    let stdout_path = ct.path("run-d.stdout");
    let mut cmd = ct
        .run([
            "-d",
            "--name",
            "fds",
            "busybox",
            "sh",
            "-c",
            IDLE_UNTIL_TERM,
        ])
        .to_std();
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(ct.path("run-d.stderr")).unwrap());
    let raw = write_end.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; it gives the child the write end as fd 7, without
    // close-on-exec, as a shell's `7>&…` would.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn carton run -d");
    drop(write_end);
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`carton run -d` did not return within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let id = std::fs::read_to_string(&stdout_path)
        .unwrap()
        .trim()
        .to_string();
    assert!(is_hex(&id, 64), "{id:?}");
    ct.init_process(&id);

    let mut pfd = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&read_end),
        nix::poll::PollFlags::POLLIN,
    )];
    let ready = nix::poll::poll(
        &mut pfd,
        nix::poll::PollTimeout::from(u16::try_from(DEADLINE.as_millis()).unwrap_or(u16::MAX)),
    )
    .expect("poll");
    let hung_up = ready == 1
        && pfd[0]
            .revents()
            .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP));
    if !hung_up {
        let inode = std::fs::read_link(format!("/proc/self/fd/{}", read_end.as_raw_fd()))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let holders: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid != std::process::id() as i32)
            .filter(|pid| {
                std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
                    d.filter_map(Result::ok).any(|fd| {
                        std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == inode)
                    })
                })
            })
            .filter_map(Process::of)
            .map(|p| p.to_string())
            .collect();
        panic!(
            "the caller's fd 7 ({inode}) is still open {DEADLINE:?} after `carton run -d` \
             returned, held by {holders:?}"
        );
    }
    ct.finish();
}

/// The supervisor is immune to the terminal closing: `run -d` from a terminal whose session
/// then ends (carton was the session leader; the terminal is closed afterwards) leaves the
/// container and its supervisor running, and a later `stop` is recorded normally.
#[test]
fn detached_container_survives_its_terminal_closing() {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script =
        format!("{SYNC_SH} trap 'exit 0' TERM; s ready; w ping; s pong; sleep 1000 & wait");
    let cmd = ct.run([
        "-d",
        "--name",
        "hup",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    let mut tty = Pty::open(24, 80).spawn(cmd.to_std());
    let (status, out) = tty.wait();
    assert_eq!(status.code(), Some(0), "{out}");
    let id = lines(&out)
        .into_iter()
        .find(|l| is_hex(l, 64))
        .unwrap_or_else(|| panic!("no id on the terminal: {out:?}"));
    hs.wait_for("ready");
    let init = ct.init_process(&id);
    let supervisor = supervisor_of(&init);
    drop(tty); // hang up: the terminal is gone

    // A round trip through the container: any SIGHUP was delivered long before.
    hs.release("ping");
    hs.wait_for("pong");
    assert!(
        supervisor.is_alive(),
        "the supervisor died with the terminal"
    );
    assert!(init.is_alive(), "the container died with the terminal");
    assert_eq!(ct.ps_row("hup").map(|r| r.kind()), Some(StatusKind::Up));

    ct.cmd()
        .args(["stop", "-t", "30", "hup"])
        .timeout(DEADLINE * 2)
        .assert()
        .success();
    let state = ct.state("hup");
    assert_eq!(state["ExitCode"], 0, "{state}");
    ct.finish();
}

/// When the container exits by itself the supervisor records it (Exited (3), FinishedAt),
/// removes the cgroup, and exits too: it exists only while its container runs.
#[test]
fn supervisor_records_the_exit_and_goes_away() {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script = format!("{SYNC_SH} s ready; w go; exit 3");
    let id = ct.run_detached([
        "--name",
        "short",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    hs.wait_for("ready");
    let init = ct.init_process(&id);
    let supervisor = supervisor_of(&init);
    assert!(supervisor.is_alive());
    assert!(
        !cgroup::existing_dirs(&id).is_empty(),
        "a running container has a cgroup"
    );

    hs.release("go");
    let state = ct.wait_exited(&id);
    assert_eq!(state["ExitCode"], 3, "{state}");
    assert_eq!(state["Running"], false, "{state}");
    assert_eq!(state["Pid"], 0, "{state}");
    assert_eq!(state["OOMKilled"], false, "{state}");
    assert!(
        time_of(&state, "FinishedAt") >= time_of(&state, "StartedAt"),
        "{state}"
    );
    assert!(
        supervisor.wait_dead(DEADLINE),
        "the supervisor outlived its container: {supervisor}"
    );
    assert!(!init.is_alive());
    assert_eq!(
        cgroup::existing_dirs(&id),
        Vec::<std::path::PathBuf>::new(),
        "the cgroup of an exited container is left"
    );
    assert_eq!(
        ct.ps_row("short").map(|r| r.kind()),
        Some(StatusKind::Exited(3))
    );
    assert!(ct.ps_rows(&["--no-trunc"]).is_empty());
    assert!(
        ct.root().join("containers").join(&id).is_dir(),
        "an exited container without --rm is kept"
    );
    ct.assert_no_processes_left(&[&id]);
    ct.finish();
}

/// The init killed from outside (kill -9 on the host): once it is gone `ps` never shows it Up,
/// and the exit is recorded as 137.
#[test]
fn ps_shows_exited_after_the_init_is_killed_from_outside() {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached(["--name", "victim", "busybox", "sleep", "1000"]);
    let init = ct.init_process(&id);
    let supervisor = supervisor_of(&init);

    assert!(init.signal(Signal::SIGKILL));
    assert!(
        init.wait_reaped(DEADLINE),
        "nobody reaped the killed init {init}"
    );
    let row = ct.ps_row("victim").expect("victim still listed");
    assert!(
        matches!(row.kind(), StatusKind::Exited(_)),
        "the init is gone but ps says {:?}",
        row.status
    );
    assert!(
        !ct.ps_rows(&["--no-trunc"]).iter().any(|r| r.id == id),
        "`ps` lists a dead container as running"
    );
    let state = ct.wait_for_state(&id, "exited with 137", |s| {
        s["Status"] == "exited" && s["ExitCode"] == 137
    });
    assert_eq!(state["Running"], false, "{state}");
    assert_eq!(state["Pid"], 0, "{state}");
    assert_eq!(
        ct.ps_row("victim").map(|r| r.kind()),
        Some(StatusKind::Exited(signal_code(Signal::SIGKILL)))
    );
    assert!(
        supervisor.wait_dead(DEADLINE),
        "{supervisor} outlived its container"
    );
    ct.cmd()
        .args(["rm", "victim"])
        .assert()
        .success()
        .stdout("victim\n");
    assert_removed(&ct, &id, &[init, supervisor]);
    ct.finish();
}

fn signal_code(sig: Signal) -> i32 {
    conformance::signal_exit_code(sig)
}

/// The supervisor SIGKILLed: the container dies with it, `ps -a` shows it Exited (never Up),
/// and `rm -f` removes everything (directory, cgroup, processes).
#[test]
fn killed_supervisor_takes_the_container_down_and_rm_f_cleans_up() {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached(["--name", "orphan", "busybox", "sh", "-c", IDLE_UNTIL_TERM]);
    let init = ct.init_process(&id);
    let supervisor = supervisor_of(&init);

    assert!(supervisor.signal(Signal::SIGKILL));
    assert!(
        supervisor.wait_dead(DEADLINE),
        "SIGKILL did not kill {supervisor}"
    );
    assert!(
        init.wait_dead(DEADLINE),
        "the container's init {init} outlived its supervisor"
    );
    // Orphaned, the dead init is reaped by the host's PID 1 (or a subreaper).
    assert!(
        init.wait_reaped(DEADLINE),
        "the container's init {init} died but nobody reaped it"
    );
    let row = ct.ps_row("orphan").expect("orphan still listed");
    assert!(
        matches!(row.kind(), StatusKind::Exited(_)),
        "the container died with its supervisor but ps -a says {:?}",
        row.status
    );
    assert!(
        !ct.ps_rows(&["--no-trunc"]).iter().any(|r| r.id == id),
        "`ps` lists it as running"
    );
    let state = ct.state("orphan");
    assert_eq!(state["Running"], false, "{state}");
    assert_eq!(state["Status"], "exited", "{state}");

    ct.cmd()
        .args(["rm", "-f", "orphan"])
        .assert()
        .success()
        .stdout("orphan\n");
    assert_removed(&ct, &id, &[init, supervisor]);
    ct.assert_no_processes_left(&[&id]);
    ct.finish();
}

/// `stop` sends SIGTERM to PID 1: a PID 1 that traps it and exits 0 is recorded as Exited (0),
/// and `stop` returns only once the container has stopped.
#[test]
fn stop_lets_a_pid1_that_traps_term_exit_cleanly() {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script = format!("{SYNC_SH} trap 'exit 0' TERM; s ready; sleep 1000 & wait");
    let id = ct.run_detached([
        "--name",
        "polite",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    hs.wait_for("ready");
    let init = ct.init_process(&id);

    ct.cmd()
        .args(["stop", "-t", "30", "polite"])
        .timeout(DEADLINE * 2)
        .assert()
        .success()
        .stdout("polite\n");
    // No polling: stop has returned, so the container has stopped.
    assert!(!init.is_alive(), "{init} still runs after stop returned");
    let state = ct.state("polite");
    assert_eq!(state["Status"], "exited", "{state}");
    assert_eq!(state["Running"], false, "{state}");
    assert_eq!(state["ExitCode"], 0, "TERM trapped, exit 0: {state}");
    assert_eq!(
        ct.ps_row("polite").map(|r| r.kind()),
        Some(StatusKind::Exited(0))
    );
    ct.finish();
}

/// A PID 1 that ignores SIGTERM is SIGKILLed after the grace period: Exited (137).
#[rstest]
#[case::shell_ignoring_term(true)]
#[case::init_without_handler(false)]
fn stop_kills_a_pid1_that_ignores_term(#[case] shell: bool) {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script = format!("{SYNC_SH} trap '' TERM; s ready; sleep 1000 & wait");
    let mut args = vec!["--name", "stubborn", "busybox"];
    let volume = hs.volume();
    if shell {
        args.splice(0..0, ["-v", volume.as_str()]);
        args.extend(["sh", "-c", &script]);
    } else {
        // A process that is PID 1 of its namespace without a TERM handler ignores TERM.
        args.extend(["sleep", "1000"]);
    }
    let id = ct.run_detached(&args);
    if shell {
        hs.wait_for("ready");
    }
    let init = ct.init_process(&id);

    ct.cmd()
        .args(["stop", "-t", "1", "stubborn"])
        .timeout(DEADLINE * 2)
        .assert()
        .success()
        .stdout("stubborn\n");
    assert!(!init.is_alive(), "{init} survived stop");
    let state = ct.state("stubborn");
    assert_eq!(state["Status"], "exited", "{state}");
    assert_eq!(state["ExitCode"], signal_code(Signal::SIGKILL), "{state}");
    assert_eq!(
        ct.ps_row("stubborn").map(|r| r.kind()),
        Some(StatusKind::Exited(137))
    );
    ct.finish();
}

/// `stop` without `-t` gives the default grace of 10 s: a PID 1 that ignores SIGTERM is
/// SIGKILLed after it (Exited (137), and `stop` took at least ~9 s — a lower bound only), while
/// one that handles SIGTERM ends with its own exit code, never reaching the SIGKILL.
#[test]
fn stop_without_t_waits_the_default_grace() {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let stubborn = format!("{SYNC_SH} trap '' TERM; sleep 1000 & s stubborn; wait");
    let polite = format!("{SYNC_SH} trap 'exit 7' TERM; sleep 1000 & s polite; wait");
    let mut ids = Vec::new();
    for (name, script) in [("stubborn", &stubborn), ("polite", &polite)] {
        ids.push(ct.run_detached([
            "--name",
            name,
            "--network",
            "none",
            "-v",
            &hs.volume(),
            "busybox",
            "sh",
            "-c",
            script,
        ]));
        // The trap is set before `s`: from here on the shell ignores (or handles) TERM.
        hs.wait_for(name);
    }
    let (stubborn_init, polite_init) = (ct.init_process(&ids[0]), ct.init_process(&ids[1]));

    let started = Instant::now();
    ct.cmd()
        .args(["stop", "stubborn"])
        .timeout(DEADLINE * 2)
        .assert()
        .success()
        .stdout("stubborn\n");
    let took = started.elapsed();
    assert!(!stubborn_init.is_alive(), "{stubborn_init} survived stop");
    assert!(
        took >= Duration::from_secs(9),
        "stop without -t killed a PID 1 that ignores TERM after {took:?}, not the default 10 s"
    );
    let state = ct.state("stubborn");
    assert_eq!(state["Status"], "exited", "{state}");
    assert_eq!(state["ExitCode"], signal_code(Signal::SIGKILL), "{state}");
    assert_eq!(
        ct.ps_row("stubborn").map(|r| r.kind()),
        Some(StatusKind::Exited(137))
    );

    ct.cmd()
        .args(["stop", "polite"])
        .timeout(DEADLINE * 2)
        .assert()
        .success()
        .stdout("polite\n");
    assert!(!polite_init.is_alive(), "{polite_init} survived stop");
    let state = ct.state("polite");
    assert_eq!(
        state["ExitCode"], 7,
        "the TERM handler's exit code, not a SIGKILL: {state}"
    );
    assert_eq!(
        ct.ps_row("polite").map(|r| r.kind()),
        Some(StatusKind::Exited(7))
    );
    ct.finish();
}

/// `stop` of containers that already exited succeeds, prints each, changes nothing.
#[test]
fn stop_of_exited_containers_succeeds() {
    let Some(ct) = fixture() else { return };
    ct.run_detached(["--name", "done1", "busybox", "true"]);
    ct.run_detached(["--name", "done2", "busybox", "sh", "-c", "exit 2"]);
    let before1 = ct.wait_exited("done1");
    let before2 = ct.wait_exited("done2");
    assert_eq!(before2["ExitCode"], 2, "{before2}");

    ct.cmd()
        .args(["stop", "done1", "done2"])
        .assert()
        .success()
        .stdout("done1\ndone2\n");
    assert_eq!(ct.state("done1"), before1);
    assert_eq!(ct.state("done2"), before2);
    ct.finish();
}

/// `kill` without `-s` sends SIGKILL (the PID 1 here would exit 0 on TERM): Exited (137).
#[test]
fn kill_sends_sigkill_by_default() {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script = format!("{SYNC_SH} trap 'exit 0' TERM; s ready; sleep 1000 & wait");
    let id = ct.run_detached([
        "--name",
        "target",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    hs.wait_for("ready");
    let init = ct.init_process(&id);
    ct.cmd()
        .args(["kill", "target"])
        .assert()
        .success()
        .stdout("target\n");
    assert!(init.wait_dead(DEADLINE), "{init} survived kill");
    let state = ct.wait_exited("target");
    assert_eq!(state["ExitCode"], 137, "{state}");
    assert_eq!(
        ct.ps_row("target").map(|r| r.kind()),
        Some(StatusKind::Exited(137))
    );
    ct.finish();
}

/// `kill -s` takes a name, a SIG-prefixed name or a number; the trap's exit code proves which
/// signal arrived.
#[rstest]
#[case::name("TERM")]
#[case::sig_name("SIGTERM")]
#[case::number("15")]
fn kill_signal_spellings(#[case] signal: &str) {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script = format!("{SYNC_SH} trap 'exit 42' TERM; s ready; sleep 1000 & wait");
    ct.run_detached([
        "--name",
        "target",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    hs.wait_for("ready");
    ct.cmd()
        .args(["kill", "-s", signal, "target"])
        .assert()
        .success()
        .stdout("target\n");
    let state = ct.wait_exited("target");
    assert_eq!(state["ExitCode"], 42, "TERM's trap exits 42: {state}");
    ct.finish();
}

/// A signal that does not end the container: it is delivered, the container keeps running.
#[test]
fn kill_with_a_handled_signal_keeps_the_container_running() {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script = format!(
        "{SYNC_SH} trap 'exit 0' TERM; trap 's got-usr1' USR1; s ready; \
         while :; do sleep 1000 & wait; done"
    );
    let id = ct.run_detached([
        "--name",
        "usr1",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    hs.wait_for("ready");
    let init = ct.init_process(&id);
    ct.cmd()
        .args(["kill", "-s", "USR1", "usr1"])
        .assert()
        .success()
        .stdout("usr1\n");
    hs.wait_for("got-usr1");
    assert!(init.is_alive());
    let state = ct.state("usr1");
    assert_eq!(state["Running"], true, "{state}");
    assert_eq!(state["Pid"], init.pid, "{state}");
    ct.finish();
}

/// `start` runs an exited container again, detached, with its own layer: the second run sees
/// the file the first one wrote (the exit code counts the runs). Same id, new StartedAt.
#[test]
fn start_runs_an_exited_container_again_with_its_layer() {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached([
        "--name",
        "again",
        "busybox",
        "sh",
        "-c",
        "echo run >> /runs; exit $(wc -l < /runs)",
    ]);
    let first = ct.wait_exited("again");
    assert_eq!(first["ExitCode"], 1, "{first}");
    let started1 = time_of(&first, "StartedAt");

    ct.cmd()
        .args(["start", "again"])
        .assert()
        .success()
        .stdout("again\n");
    let second = ct.wait_for_state("again", "exited after its second run", |s| {
        s["Status"] == "exited"
            && s["StartedAt"]
                .as_str()
                .and_then(parse_rfc3339)
                .is_some_and(|t| t > started1)
    });
    assert_eq!(
        second["ExitCode"], 2,
        "the second run did not find the first run's file: {second}"
    );
    assert_eq!(ct.inspect("again")["Id"], id.as_str());
    assert_eq!(ct.container_ids(), [id]);
    ct.finish();
}

/// `start` takes several containers, prints each, and runs each again.
#[test]
fn start_takes_several_containers() {
    let Some(ct) = fixture() else { return };
    ct.run_detached(["--name", "one", "busybox", "sh", "-c", "exit 1"]);
    ct.run_detached(["--name", "two", "busybox", "sh", "-c", "exit 2"]);
    let before: Vec<i128> = ["one", "two"]
        .iter()
        .map(|c| time_of(&ct.wait_exited(c), "StartedAt"))
        .collect();
    ct.cmd()
        .args(["start", "one", "two"])
        .assert()
        .success()
        .stdout("one\ntwo\n");
    for (name, (started, code)) in ["one", "two"].iter().zip(before.iter().zip([1, 2])) {
        let state = ct.wait_for_state(name, "exited after a second run", |s| {
            s["Status"] == "exited"
                && s["StartedAt"]
                    .as_str()
                    .and_then(parse_rfc3339)
                    .is_some_and(|t| t > *started)
        });
        assert_eq!(state["ExitCode"], code, "{name}: {state}");
    }
    ct.finish();
}

/// `start` of a running container is a successful no-op: same init, same StartedAt.
#[test]
fn start_of_a_running_container_is_a_no_op() {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached(["--name", "live", "busybox", "sh", "-c", IDLE_UNTIL_TERM]);
    let init = ct.init_process(&id);
    let before = ct.state("live");
    ct.cmd()
        .args(["start", "live"])
        .assert()
        .success()
        .stdout("live\n");
    assert_eq!(ct.state("live"), before);
    assert!(init.is_alive());
    ct.finish();
}

/// `restart` = stop + start: same id, a new init, a new StartedAt, the layer kept.
#[test]
fn restart_stops_and_starts_again() {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script = format!(
        "{SYNC_SH} trap 'exit 0' TERM; echo run >> /runs; s run-$(wc -l < /runs); \
         sleep 1000 & wait"
    );
    let id = ct.run_detached([
        "--name",
        "phoenix",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    hs.wait_for("run-1");
    let init1 = ct.init_process(&id);
    let started1 = time_of(&ct.state("phoenix"), "StartedAt");

    ct.cmd()
        .args(["restart", "-t", "30", "phoenix"])
        .timeout(DEADLINE * 2)
        .assert()
        .success()
        .stdout("phoenix\n");
    let state = ct.state("phoenix");
    assert_eq!(state["Running"], true, "not running after restart: {state}");
    assert!(!init1.is_alive(), "the first init {init1} survived restart");
    hs.wait_for("run-2");
    let init2 = ct.init_process(&id);
    assert_ne!(init1, init2);
    assert!(time_of(&ct.state("phoenix"), "StartedAt") > started1);
    assert_eq!(ct.inspect("phoenix")["Id"], id.as_str());
    assert_eq!(ct.container_ids(), [id]);
    ct.finish();
}

/// `wait` prints each container's exit code once it has exited; at once for one that already
/// has.
#[test]
fn wait_prints_exit_codes() {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script = format!("{SYNC_SH} w go; exit 3");
    ct.run_detached([
        "--name",
        "slow",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    ct.run_detached(["--name", "quick", "busybox", "sh", "-c", "exit 5"]);
    ct.wait_exited("quick");
    ct.cmd()
        .args(["wait", "quick"])
        .assert()
        .success()
        .stdout("5\n");

    let mut waiting = ct.cmd().args(["wait", "slow", "quick"]).spawn();
    // `slow` cannot exit before the release: `wait` must still be waiting for it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        waiting.try_wait().is_none(),
        "`wait` returned while the container still runs: {}",
        waiting.stdout_so_far()
    );
    hs.release("go");
    waiting.assert().success().stdout("3\n5\n");
    ct.finish();
}

/// `wait` on containers that are removed while it waits: a `--rm` container that exits (its
/// supervisor removes it) and a running one removed with `rm -f`. With no daemon to remember
/// the code, carton must still print the real one (3; 137 for the SIGKILL of `rm -f`).
#[test]
fn wait_prints_the_exit_code_of_a_removed_container() {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script = format!("{SYNC_SH} w go; exit 3");
    ct.run_detached([
        "--rm",
        "--name",
        "gone",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    ct.run_detached(["--name", "removed", "busybox", "sleep", "100"]);

    let mut waiting_gone = ct.cmd().args(["wait", "gone"]).spawn();
    let mut waiting_removed = ct.cmd().args(["wait", "removed"]).spawn();
    // Both must be waiting (registered) before the containers go.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        waiting_gone.try_wait().is_none() && waiting_removed.try_wait().is_none(),
        "`wait` returned while the containers still run"
    );
    hs.release("go");
    waiting_gone.assert().success().stdout("3\n");
    ct.cmd().args(["rm", "-f", "removed"]).assert().success();
    waiting_removed.assert().success().stdout("137\n");

    let listed = ct.cmd().args(["ps", "-a", "-q"]).assert().success();
    let listed = String::from_utf8_lossy(&listed.get_output().stdout).into_owned();
    assert!(
        listed.trim().is_empty(),
        "both containers are gone: {listed}"
    );
    ct.finish();
}

/// `inspect` of a running detached container: identity, State, Config, HostConfig, Mounts,
/// NetworkSettings, LogPath; and State after it stopped.
#[test]
fn inspect_reports_a_detached_container() {
    let Some(ct) = fixture() else { return };
    let limits = cgroup::has_controller("memory") && cgroup::has_controller("pids");
    if !limits {
        skip("memory or pids controller missing: HostConfig limits not checked");
    }
    let volume = ct.path("data");
    std::fs::create_dir(&volume).unwrap();
    let bind = format!("{}:/data", volume.display());
    let mut args = vec!["--name", "insp", "-e", "FOO=bar", "-w", "/tmp", "-v", &bind];
    if limits {
        args.extend(["-m", "64m", "--pids-limit", "50"]);
    }
    args.extend(["busybox", "sh", "-c", IDLE_UNTIL_TERM]);
    let id = ct.run_detached(&args);
    let init = ct.init_process(&id);

    let v = ct.inspect("insp");
    assert_eq!(v["Id"], id.as_str(), "{v}");
    assert_eq!(v["Name"], "/insp", "{v}");
    assert_eq!(v["Image"], ct.busybox_id(), "{v}");
    let created = parse_rfc3339(v["Created"].as_str().unwrap_or_default())
        .unwrap_or_else(|| panic!("Created is not RFC 3339: {}", v["Created"]));

    let state = &v["State"];
    assert_eq!(state["Status"], "running", "{state}");
    assert_eq!(state["Running"], true, "{state}");
    assert_eq!(state["Pid"], init.pid, "{state}");
    assert_eq!(state["ExitCode"], 0, "{state}");
    assert_eq!(state["OOMKilled"], false, "{state}");
    assert!(time_of(state, "StartedAt") >= created, "{v}");
    assert!(state["FinishedAt"].is_string(), "{state}");

    let config = &v["Config"];
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["sh", "-c", IDLE_UNTIL_TERM])
    );
    assert_eq!(config["Image"], "busybox", "{config}");
    assert_eq!(config["WorkingDir"], "/tmp", "{config}");
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap_or_else(|| panic!("Config.Env is not an array: {config}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(env.contains(&"FOO=bar"), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");

    let host_config = &v["HostConfig"];
    if limits {
        assert_eq!(host_config["Memory"], 64 << 20, "{host_config}");
        assert_eq!(host_config["PidsLimit"], 50, "{host_config}");
    }
    assert!(
        host_config["Binds"]
            .as_array()
            .is_some_and(|b| b.iter().any(|x| x == bind.as_str())),
        "Binds lacks {bind}: {host_config}"
    );
    assert!(
        v["Mounts"].as_array().is_some_and(|m| m.iter().any(|m| {
            m["Destination"] == "/data" && m["Source"] == volume.to_string_lossy().as_ref()
        })),
        "Mounts lacks the volume: {}",
        v["Mounts"]
    );
    assert!(v["NetworkSettings"].is_object(), "{v}");
    let log_path = v["LogPath"]
        .as_str()
        .unwrap_or_else(|| panic!("LogPath is not a string: {v}"));
    let expected = ct
        .root()
        .canonicalize()
        .unwrap()
        .join("containers")
        .join(&id)
        .join("container.log");
    assert_eq!(std::path::Path::new(log_path), expected);

    // Full id and prefix give the same container.
    assert_eq!(ct.inspect(&id)["Id"], id.as_str());
    assert_eq!(ct.inspect(&id[..12])["Id"], id.as_str());

    ct.cmd()
        .args(["stop", "-t", "30", "insp"])
        .timeout(DEADLINE * 2)
        .assert()
        .success();
    let state = ct.state("insp");
    assert_eq!(state["Status"], "exited", "{state}");
    assert_eq!(state["Running"], false, "{state}");
    assert_eq!(state["Pid"], 0, "{state}");
    assert_eq!(state["ExitCode"], 0, "{state}");
    assert!(
        time_of(&state, "FinishedAt") >= time_of(&state, "StartedAt"),
        "{state}"
    );
    ct.finish();
}

/// `rm` refuses a running container (it keeps running); `rm -f` kills it, waits for its
/// supervisor and removes everything.
#[test]
fn rm_needs_force_for_a_running_detached_container() {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached(["--name", "busy", "busybox", "sh", "-c", IDLE_UNTIL_TERM]);
    let init = ct.init_process(&id);
    let supervisor = supervisor_of(&init);

    ct.cmd()
        .args(["rm", "busy"])
        .assert()
        .code(EXIT_CARTON_ERROR)
        .stderr(predicate::str::is_empty().not());
    assert!(init.is_alive(), "rm without -f stopped the container");
    assert_eq!(ct.ps_row("busy").map(|r| r.kind()), Some(StatusKind::Up));

    ct.cmd()
        .args(["rm", "-f", "busy"])
        .assert()
        .success()
        .stdout("busy\n");
    // rm -f has waited for the supervisor: no polling.
    assert_removed(&ct, &id, &[init, supervisor]);
    ct.assert_no_processes_left(&[&id]);
    ct.finish();
}

/// `run -d --rm`: the supervisor removes the container when it exits by itself or is stopped;
/// the name is free again.
#[rstest]
#[case::exits(false)]
#[case::stopped(true)]
fn rm_flag_removes_a_detached_container(#[case] stop: bool) {
    let Some(ct) = fixture() else { return };
    let hs = ct.handshake();
    let script = format!("{SYNC_SH} trap 'exit 0' TERM; s ready; w go; exit 0");
    let id = ct.run_detached([
        "--rm",
        "--name",
        "ephemeral",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    hs.wait_for("ready");
    assert_eq!(
        ct.container_ids(),
        std::slice::from_ref(&id),
        "listed while it runs"
    );
    let init = ct.init_process(&id);
    let supervisor = supervisor_of(&init);

    if stop {
        ct.cmd()
            .args(["stop", "-t", "30", "ephemeral"])
            .timeout(DEADLINE * 2)
            .assert()
            .success();
    } else {
        hs.release("go");
    }
    ct.wait_removed(&id);
    assert!(
        supervisor.wait_dead(DEADLINE),
        "{supervisor} outlived its container"
    );
    assert_removed(&ct, &id, &[init, supervisor]);

    let again = ct.run_detached(["--rm", "--name", "ephemeral", "busybox", "true"]);
    ct.wait_removed(&again);
    ct.assert_no_processes_left(&[&id, &again]);
    ct.finish();
}

/// An OOM kill of a detached container is recorded by its supervisor.
#[test]
fn oom_kill_of_a_detached_container_is_recorded() {
    if !cgroup::controller_or_skip("memory") {
        return;
    }
    let Some(ct) = fixture() else { return };
    ct.run_detached([
        "--name",
        "hog",
        "-m",
        "32m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=100M",
        "count=1",
    ]);
    let state = ct.wait_exited("hog");
    assert_eq!(state["OOMKilled"], true, "{state}");
    assert_eq!(state["ExitCode"], 137, "{state}");
    assert_eq!(
        ct.ps_row("hog").map(|r| r.kind()),
        Some(StatusKind::Exited(137))
    );
    ct.finish();
}

/// Every command takes a name, the full id or a unique id prefix, and echoes it as given.
#[test]
fn containers_are_addressed_by_name_id_or_unique_prefix() {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached(["--name", "addr", "busybox", "sh", "-c", IDLE_UNTIL_TERM]);
    let other = ct.run_detached(["busybox", "sh", "-c", IDLE_UNTIL_TERM]);
    let ids = [id.clone(), other];
    let prefix = (6..=64)
        .map(|n| &id[..n])
        .find(|p| ids.iter().filter(|i| i.starts_with(p)).count() == 1)
        .unwrap()
        .to_string();

    for handle in ["addr", id.as_str(), prefix.as_str()] {
        assert_eq!(ct.inspect(handle)["Id"], id.as_str(), "inspect {handle}");
        ct.cmd().args(["logs", handle]).assert().success();
    }
    ct.cmd()
        .args(["stop", "-t", "30", &prefix])
        .timeout(DEADLINE * 2)
        .assert()
        .success()
        .stdout(format!("{prefix}\n"));
    ct.cmd()
        .args(["start", &id])
        .assert()
        .success()
        .stdout(format!("{id}\n"));
    ct.cmd()
        .args(["kill", &prefix])
        .assert()
        .success()
        .stdout(format!("{prefix}\n"));
    ct.cmd()
        .args(["wait", "addr"])
        .assert()
        .success()
        .stdout("137\n");
    ct.cmd()
        .args(["rm", &prefix])
        .assert()
        .success()
        .stdout(format!("{prefix}\n"));
    assert_eq!(ct.container_ids(), [ids[1].clone()]);
    ct.finish();
}

/// 20 `run -d` at once: all print distinct ids and run; one `stop` with 20 names stops them
/// all; one `rm` removes them all; nothing is left.
#[test]
fn twenty_detached_containers_in_parallel() {
    const N: usize = 20;
    let Some(ct) = fixture() else { return };
    let names: Vec<String> = (0..N).map(|i| format!("par{i:02}")).collect();
    let barrier = Arc::new(Barrier::new(N));
    let results: Vec<std::process::Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let mut cmd =
                    ct.run(["-d", "--name", name, "busybox", "sh", "-c", IDLE_UNTIL_TERM]);
                cmd.timeout(DEADLINE * 4);
                let barrier = barrier.clone();
                scope.spawn(move || {
                    barrier.wait();
                    cmd.output()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ids = Vec::new();
    for (name, out) in names.iter().zip(&results) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && is_hex(stdout.trim_end(), 64),
            "run -d --name {name}: {} stdout {stdout:?} stderr {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(stdout.trim_end().to_string());
    }
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), N, "ids are not distinct: {ids:?}");

    let rows = ct.ps_rows(&["--no-trunc"]);
    assert_eq!(rows.len(), N, "`ps` must list all {N} as running: {rows:?}");
    for row in &rows {
        assert_eq!(row.kind(), StatusKind::Up, "{row:?}");
    }
    let listed: BTreeSet<&String> = rows.iter().map(|r| &r.names).collect();
    assert_eq!(listed, names.iter().collect());
    let processes: Vec<Process> = ids
        .iter()
        .flat_map(|id| {
            let init = ct.init_process(id);
            [init, supervisor_of(&init)]
        })
        .collect();

    let expected: String = names.iter().map(|n| format!("{n}\n")).collect();
    ct.cmd()
        .arg("stop")
        .args(&names)
        .timeout(DEADLINE * 4)
        .assert()
        .success()
        .stdout(expected.clone());
    let rows = ct.ps_rows(&["-a", "--no-trunc"]);
    assert_eq!(rows.len(), N, "{rows:?}");
    for row in &rows {
        assert_eq!(row.kind(), StatusKind::Exited(0), "{row:?}");
    }
    assert!(ct.ps_rows(&["--no-trunc"]).is_empty());

    ct.cmd()
        .arg("rm")
        .args(&names)
        .timeout(DEADLINE * 4)
        .assert()
        .success()
        .stdout(expected);
    assert_eq!(ct.container_ids(), Vec::<String>::new());
    for id in &ids {
        assert_removed(&ct, id, &[]);
    }
    for p in &processes {
        assert!(p.wait_dead(DEADLINE), "{p} left behind");
    }
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    ct.assert_no_processes_left(&id_refs);
    ct.finish();
}

/// Two `run -d --name same` at once: exactly one wins (id printed, exit 0), the other exits
/// 125 with "is already in use"; exactly one container exists. Repeated to give the race
/// several chances.
#[test]
fn parallel_runs_with_one_name_exactly_one_wins() {
    let Some(ct) = fixture() else { return };
    for round in 0..3 {
        let barrier = Arc::new(Barrier::new(2));
        let outputs: Vec<std::process::Output> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let mut cmd = ct.run([
                        "-d",
                        "--name",
                        "same",
                        "busybox",
                        "sh",
                        "-c",
                        IDLE_UNTIL_TERM,
                    ]);
                    cmd.timeout(DEADLINE * 2);
                    let barrier = barrier.clone();
                    scope.spawn(move || {
                        barrier.wait();
                        cmd.output()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let (winners, losers): (Vec<_>, Vec<_>) = outputs.iter().partition(|o| o.status.success());
        assert_eq!(
            (winners.len(), losers.len()),
            (1, 1),
            "round {round}: exactly one must win: {outputs:?}"
        );
        let id = String::from_utf8_lossy(&winners[0].stdout)
            .trim_end()
            .to_string();
        assert!(is_hex(&id, 64), "round {round}: {:?}", winners[0]);
        let loser = losers[0];
        assert_eq!(loser.status.code(), Some(EXIT_CARTON_ERROR), "{loser:?}");
        let stderr = String::from_utf8_lossy(&loser.stderr);
        assert!(stderr.contains("is already in use"), "{stderr}");
        assert!(
            !String::from_utf8_lossy(&loser.stdout).contains(&id[..12]),
            "the loser printed an id: {loser:?}"
        );

        assert_eq!(
            ct.container_ids(),
            std::slice::from_ref(&id),
            "round {round}"
        );
        assert_eq!(
            ct.container_dirs(),
            std::slice::from_ref(&id),
            "round {round}"
        );
        assert_eq!(ct.inspect("same")["Id"], id.as_str());
        ct.init_process(&id);
        ct.cmd().args(["rm", "-f", "same"]).assert().success();
        assert_removed(&ct, &id, &[]);
    }
    ct.finish();
}

/// `run -d -i` keeps the container's stdin open: `cat` keeps running (stdin is not /dev/null),
/// while without `-i` the same `cat` reads EOF and exits 0.
#[test]
fn interactive_detached_keeps_stdin_open() {
    let Some(ct) = fixture() else { return };
    let id = ct.run_detached(["-i", "--name", "cat", "busybox", "cat"]);
    let init = ct.init_process(&id);
    let stdin = std::fs::read_link(format!("/proc/{}/fd/0", init.pid))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert_ne!(
        stdin, "/dev/null",
        "-i gave the container /dev/null as stdin"
    );

    // The control: by the time it has exited, the -i one had as long to see an EOF.
    ct.run_detached(["--name", "control", "busybox", "cat"]);
    let control = ct.wait_exited("control");
    assert_eq!(control["ExitCode"], 0, "{control}");

    assert!(init.is_alive(), "cat exited: its stdin was closed");
    assert_eq!(ct.ps_row("cat").map(|r| r.kind()), Some(StatusKind::Up));
    ct.finish();
}

/// A container left frozen (what a `commit` killed mid-way leaves behind) can still be stopped
/// and removed: on cgroup v1 a frozen process acts on no signal, not even SIGKILL, until it is
/// thawed, so `stop` and `rm -f` thaw it after signalling.
#[test]
fn frozen_containers_can_be_stopped_and_removed() {
    let Some(ct) = fixture() else { return };
    if cgroup::version() == Some(cgroup::Version::V1) && !cgroup::has_controller("freezer") {
        skip("the v1 freezer controller is not mounted");
        return;
    }
    let freeze = |id: &str| {
        let path = cgroup::host_path(id, conformance::images::FREEZER).expect("a freezer file");
        let value = match cgroup::version() {
            Some(cgroup::Version::V1) => "FROZEN",
            _ => "1",
        };
        std::fs::write(&path, value).unwrap_or_else(|e| panic!("freeze {}: {e}", path.display()));
    };
    let stopped = ct.run_detached(["--name", "stopped", "busybox", "sleep", "1000"]);
    let removed = ct.run_detached(["--name", "removed", "busybox", "sleep", "1000"]);
    freeze(&stopped);
    freeze(&removed);
    assert_eq!(
        ct.state("stopped")["Paused"],
        true,
        "inspect of a frozen container"
    );

    ct.cmd()
        .args(["stop", "-t", "1", "stopped"])
        .assert()
        .success();
    let state = ct.inspect("stopped")["State"].clone();
    assert_eq!(state["Running"], false, "{state}");
    ct.cmd().args(["rm", "-f", "removed"]).assert().success();
    assert!(
        !ct.container_ids().contains(&removed),
        "rm -f left the frozen container"
    );
    ct.cmd().args(["rm", "stopped"]).assert().success();
    ct.finish();
}
