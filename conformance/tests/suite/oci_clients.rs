//! Real clients driving the OCI runtime (issue 10): podman through conmon, and containerd through
//! its runc shim (`ctr run --runc-binary`), each a private throwaway instance per scenario (see
//! `conformance::clients`).
//!
//! Every scenario runs twice: with carton-runtime, and with runc for the reference. The assertions
//! are the same for both — what a user of the client observes (output, exit codes, states,
//! terminals, limits in the cgroup) — so a difference is carton-runtime's.
//!
//! Each scenario creates, runs, execs into, stops and removes its containers through the client,
//! then `finish()` fails it if anything is left: containers, processes (conmon, shims, the
//! container's), mounts, cgroups, runtime state. Nothing here asserts on timing; waits are polls
//! bounded by the suite's DEADLINE.

use conformance::cgroup;
use conformance::clients::{
    Containerd, PODMAN_IMAGE, Podman, Runtime, eventually, host_cgroup_dir,
};
use conformance::host::Process;
use conformance::pty::Pty;
use conformance::{DEADLINE, is_hex, lines};
use rstest::rstest;

/// The memory limit the limit scenarios ask for: 64 MiB.
const MEMORY_LIMIT: u64 = 64 * 1024 * 1024;

/// An idle container: prints `started`, and on SIGTERM prints `got-term` and exits with 7 (so
/// that a stop that fell back to SIGKILL, 137, is told apart from a delivered SIGTERM).
const IDLE: &str = "trap 'echo got-term; exit 7' TERM; echo started; while :; do sleep 0.1; done";

/// The interactive session of the tty scenarios: names its terminal, waits for the terminal to
/// get a size and prints it, echoes a typed line, waits for the size to change (the user resizes
/// the window) and prints the new one, then exits with 5.
///
/// The waits are there because the clients set the size through the runtime's pty master after
/// the process has started (`ctr run -t` resizes once `start` returned): a `stty size` right at
/// the start races with that, whatever the runtime. `stty size` fails while the size is 0x0.
const TTY_SCRIPT: &str = r#"size() { while :; do s=$(stty size 2>/dev/null) && [ "$s" != "$1" ] && break; sleep 0.05; done; echo "size=$s"; }
echo "tty=$(tty)"; size ""; read line; echo "got-$line"; size "$s"; exit 5"#;

/// Checks what a [`TTY_SCRIPT`] session showed on the user's terminal: a /dev/pts/N of its own,
/// the terminal's size and then the resized one, the typed line, and exit code 5 from `what`.
#[track_caller]
fn assert_tty_session(what: &str, status: std::process::ExitStatus, all: &str, sizes: [&str; 2]) {
    assert_eq!(status.code(), Some(5), "exit code through {what}: {all:?}");
    let l = lines(all);
    let tty = l
        .iter()
        .find_map(|x| x.strip_prefix("tty="))
        .unwrap_or_else(|| panic!("no tty= line in {all:?}"));
    assert!(
        tty.strip_prefix("/dev/pts/")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        "`tty` printed {tty:?}, not a /dev/pts/N"
    );
    let seen: Vec<&str> = l.iter().filter_map(|x| x.strip_prefix("size=")).collect();
    assert_eq!(
        seen, sizes,
        "the terminal of {what} does not follow the user's size: {all:?}"
    );
    assert!(l.iter().any(|x| x == "got-hello"), "{all:?}");
}

/// The controller directory and file holding the memory limit, as (controller, file name).
fn memory_limit_file() -> (&'static str, &'static str) {
    match cgroup::version() {
        Some(cgroup::Version::V2) => ("", cgroup::MEMORY_LIMIT.v2),
        _ => cgroup::MEMORY_LIMIT.v1,
    }
}

/// The memory limit of `pid`'s cgroup read on the host through /proc/<pid>/cgroup; also returns
/// the cgroup directory.
#[track_caller]
fn host_memory_limit(pid: i32) -> (std::path::PathBuf, u64) {
    let (controller, file) = memory_limit_file();
    let dir = host_cgroup_dir(pid, controller)
        .unwrap_or_else(|| panic!("no {controller} cgroup for pid {pid} in /proc/{pid}/cgroup"));
    let limit = cgroup::read_limit(&dir.join(file))
        .unwrap_or_else(|| panic!("cannot read a number from {}", dir.join(file).display()));
    (dir, limit)
}

// ---------------------------------------------------------------------------------------------
// podman

/// `podman run --rm`: the command's stdout and exit code come back through conmon, and the
/// container is gone afterwards.
#[rstest]
#[case::carton(Runtime::Carton)]
#[case::runc(Runtime::Runc)]
fn podman_run_rm_propagates_output_and_exit_code(#[case] runtime: Runtime) {
    let Some(pm) = Podman::new(runtime) else {
        return;
    };
    let out = pm
        .run([
            "--rm",
            PODMAN_IMAGE,
            "sh",
            "-c",
            "echo hi; echo oops >&2; exit 3",
        ])
        .output();
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code of the container's command\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("oops"),
        "the container's stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pm.container_ids(), Vec::<String>::new(), "--rm left it");
    pm.finish();
}

/// A detached podman container: `run -d` prints its id and it runs; `exec` runs a command in
/// it (output and exit code); `logs` shows what it printed; `stop` delivers SIGTERM and podman
/// reports it exited with the code it chose; `rm` removes it, its processes (init, conmon),
/// its cgroup and the runtime's state.
#[rstest]
#[case::carton(Runtime::Carton)]
#[case::runc(Runtime::Runc)]
fn podman_detached_exec_logs_stop_rm(#[case] runtime: Runtime) {
    let Some(pm) = Podman::new(runtime) else {
        return;
    };
    let out = pm
        .run(["-d", "--name", "idle", PODMAN_IMAGE, "sh", "-c", IDLE])
        .stdout_ok();
    let id = out.trim().to_string();
    assert!(
        is_hex(&id, 64),
        "run -d printed {out:?}, not a container id"
    );

    let state = pm.inspect("idle");
    assert_eq!(state["State"]["Status"], "running", "{}", state["State"]);
    let pid = state["State"]["Pid"].as_i64().expect("State.Pid") as i32;
    let init = Process::of(pid).unwrap_or_else(|| panic!("State.Pid {pid} does not exist"));
    let conmon_pid = state["State"]["ConmonPid"]
        .as_i64()
        .expect("State.ConmonPid") as i32;
    let conmon = Process::of(conmon_pid).expect("conmon runs");
    assert!(
        !pm.container_cgroups(&id).is_empty(),
        "the container's cgroup is not under {}",
        pm.cgroup_parent()
    );

    eventually("`podman logs` shows what the container printed", || {
        let logs = pm.cmd().args(["logs", "idle"]).stdout_ok();
        (lines(&logs) == ["started"]).then_some(())
    });

    let exec = pm
        .cmd()
        .args([
            "exec",
            "idle",
            "sh",
            "-c",
            "echo exec-$((6*7)); cat /proc/1/cmdline; echo; exit 4",
        ])
        .output();
    let exec_out = String::from_utf8_lossy(&exec.stdout);
    assert_eq!(
        exec.status.code(),
        Some(4),
        "exit code of the exec'd command\nstdout: {exec_out}\nstderr: {}",
        String::from_utf8_lossy(&exec.stderr)
    );
    assert_eq!(
        lines(&exec_out).first().map(String::as_str),
        Some("exec-42")
    );
    assert!(
        exec_out.contains("got-term"),
        "the exec'd process does not see the container's init as pid 1: {exec_out:?}"
    );

    pm.cmd()
        .args(["stop", "-t", "20", "idle"])
        .assert()
        .success();
    assert!(init.wait_reaped(DEADLINE), "{init} still exists after stop");
    let state = pm.inspect("idle");
    assert_eq!(state["State"]["Status"], "exited", "{}", state["State"]);
    assert_eq!(
        state["State"]["ExitCode"], 7,
        "the container did not exit through its SIGTERM trap: {}",
        state["State"]
    );
    let ps = pm
        .cmd()
        .args(["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
        .stdout_ok();
    assert!(
        lines(&ps).iter().any(|l| l.starts_with("idle Exited (7)")),
        "podman ps -a: {ps:?}"
    );
    let logs = pm.cmd().args(["logs", "idle"]).stdout_ok();
    assert_eq!(lines(&logs), ["started", "got-term"]);

    pm.cmd().args(["rm", "idle"]).assert().success();
    assert_eq!(pm.container_ids(), Vec::<String>::new());
    assert!(
        conmon.wait_dead(DEADLINE),
        "conmon {conmon} still runs after rm"
    );
    assert_eq!(
        pm.container_cgroups(&id),
        Vec::<std::path::PathBuf>::new(),
        "cgroup left after rm"
    );
    assert_eq!(
        pm.runtime_state_left(),
        Vec::<std::path::PathBuf>::new(),
        "runtime state left after rm"
    );
    pm.finish();
}

/// `podman run -it` on a terminal: the container's process has a pty of its own (`tty` names a
/// /dev/pts/N) of the size of the user's terminal, what the user types reaches it, and its
/// exit code comes back.
#[rstest]
#[case::carton(Runtime::Carton)]
#[case::runc(Runtime::Runc)]
fn podman_interactive_tty(#[case] runtime: Runtime) {
    let Some(pm) = Podman::new(runtime) else {
        return;
    };
    let pty = Pty::open(31, 97);
    let cmd = pm.run(["--rm", "-it", PODMAN_IMAGE, "sh", "-c", TTY_SCRIPT]);
    let mut run = pty.spawn(cmd.to_std());
    run.read_until("size=31 97\n");
    run.write(b"hello\n");
    run.read_until("got-hello");
    // The kernel sends SIGWINCH to the client, which resizes the container's terminal.
    run.resize(41, 123);
    run.read_until("size=41 123\n");
    let (status, all) = run.wait();
    assert_tty_session("podman run -it", status, &all, ["31 97", "41 123"]);
    assert_eq!(pm.container_ids(), Vec::<String>::new(), "--rm left it");
    pm.finish();
}

/// `podman exec -it` on a terminal, into a running container: conmon runs the runtime's `exec
/// --pid-file P --process F --detach --tty --console-socket S`; the exec'd process has a pty of its own of the user's
/// terminal size, follows its resize, reads what the user types, and its exit code comes back;
/// the container runs on.
#[rstest]
#[case::carton(Runtime::Carton)]
#[case::runc(Runtime::Runc)]
fn podman_exec_interactive_tty(#[case] runtime: Runtime) {
    let Some(pm) = Podman::new(runtime) else {
        return;
    };
    pm.run(["-d", "--name", "idle", PODMAN_IMAGE, "sh", "-c", IDLE])
        .assert()
        .success();
    let pty = Pty::open(27, 91);
    let mut cmd = pm.cmd();
    cmd.args(["exec", "-it", "idle", "sh", "-c", TTY_SCRIPT]);
    let mut run = pty.spawn(cmd.to_std());
    run.read_until("size=27 91\n");
    run.write(b"hello\n");
    run.read_until("got-hello");
    run.resize(39, 117);
    run.read_until("size=39 117\n");
    let (status, all) = run.wait();
    assert_tty_session("podman exec -it", status, &all, ["27 91", "39 117"]);
    let state = pm.inspect("idle");
    assert_eq!(state["State"]["Status"], "running", "{}", state["State"]);
    pm.cmd()
        .args(["rm", "-f", "-t", "0", "idle"])
        .assert()
        .success();
    pm.finish();
}

/// `podman run -m 64m`: the limit is in the container's memory cgroup, seen from inside the
/// container and from the host through /proc/<pid>/cgroup (under podman's cgroup parent).
#[rstest]
#[case::carton(Runtime::Carton)]
#[case::runc(Runtime::Runc)]
fn podman_memory_limit_in_the_cgroup(#[case] runtime: Runtime) {
    if !conformance::cgroup::controller_or_skip("memory") {
        return;
    }
    let Some(pm) = Podman::new(runtime) else {
        return;
    };
    let id = pm
        .run([
            "-d",
            "-m",
            "64m",
            "--name",
            "limited",
            PODMAN_IMAGE,
            "sh",
            "-c",
            IDLE,
        ])
        .stdout_ok()
        .trim()
        .to_string();
    let state = pm.inspect("limited");
    let pid = state["State"]["Pid"].as_i64().expect("State.Pid") as i32;

    let (dir, limit) = host_memory_limit(pid);
    assert_eq!(limit, MEMORY_LIMIT, "limit in {}", dir.display());
    let expected_tail = format!("{}/libpod-{id}", pm.cgroup_parent().trim_start_matches('/'));
    assert!(
        dir.ends_with(&expected_tail),
        "the container's cgroup {} is not {expected_tail} (the cgroupsPath podman gave)",
        dir.display()
    );

    let inside = cgroup::container_path(cgroup::MEMORY_LIMIT).expect("cgroup layout");
    let seen = pm
        .cmd()
        .args(["exec", "limited", "cat", &inside])
        .stdout_ok();
    assert_eq!(seen.trim(), MEMORY_LIMIT.to_string(), "{inside} inside");

    pm.cmd()
        .args(["stop", "-t", "20", "limited"])
        .assert()
        .success();
    pm.cmd().args(["rm", "limited"]).assert().success();
    assert_eq!(pm.container_cgroups(&id), Vec::<std::path::PathBuf>::new());
    pm.finish();
}

// ---------------------------------------------------------------------------------------------
// containerd

/// `ctr run --rm --rootfs`: stdout and the exit code come back through the shim; no task and no
/// container are left.
#[rstest]
#[case::carton(Runtime::Carton)]
#[case::runc(Runtime::Runc)]
fn ctr_run_rm_propagates_output_and_exit_code(#[case] runtime: Runtime) {
    let Some(ctd) = Containerd::new(runtime) else {
        return;
    };
    let out = ctd
        .run(
            &["--rm"],
            "c1",
            &["/bin/sh", "-c", "echo hi; echo oops >&2; exit 3"],
        )
        .output();
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code of the container's command\nstderr: {}\ncontainerd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        ctd.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("oops"),
        "the container's stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ctd.tasks(), Vec::new(), "--rm left a task");
    assert_eq!(ctd.container_ids(), Vec::<String>::new(), "--rm left it");
    assert_eq!(
        ctd.container_cgroups("c1"),
        Vec::<std::path::PathBuf>::new()
    );
    ctd.finish();
}

/// Without HOME in the process's environment (ctr's default spec sets only PATH), runc sets it
/// from the user's passwd entry; a runtime under containerd (and Kubernetes, whose CRI does not
/// set it either) is expected to do the same.
#[rstest]
#[case::carton(Runtime::Carton)]
#[case::runc(Runtime::Runc)]
fn ctr_run_sets_home_from_passwd(#[case] runtime: Runtime) {
    let Some(ctd) = Containerd::new(runtime) else {
        return;
    };
    let out = ctd
        .run(
            &["--rm"],
            "home",
            &["/bin/sh", "-c", "echo \"HOME=${HOME-unset}\""],
        )
        .stdout_ok();
    assert_eq!(lines(&out), ["HOME=/root"]);
    ctd.finish();
}

/// A detached containerd task: `ctr run -d` starts it (RUNNING, its init on the host); `task
/// exec --exec-id` runs a command in it (output, exit code, same pid namespace); `task kill`
/// delivers SIGTERM and the task stops with the code its trap chose; `task rm` and `container
/// rm` remove it, its processes, its cgroup and the runtime's state.
#[rstest]
#[case::carton(Runtime::Carton)]
#[case::runc(Runtime::Runc)]
fn ctr_detached_exec_kill_rm(#[case] runtime: Runtime) {
    let Some(ctd) = Containerd::new(runtime) else {
        return;
    };
    let log = ctd.path("c2.log");
    let log_uri = format!("file://{}", log.display());
    ctd.run(
        &["-d", "--log-uri", &log_uri],
        "c2",
        &["/bin/sh", "-c", IDLE],
    )
    .assert()
    .success();
    let (pid, status) = ctd.task("c2").expect("task c2 is listed");
    assert_eq!(status, "RUNNING");
    let init = Process::of(pid).unwrap_or_else(|| panic!("task pid {pid} does not exist"));
    eventually("the container's output reaches --log-uri", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (lines(&text) == ["started"]).then_some(())
    });

    let exec = ctd
        .exec(
            &[],
            "c2",
            "e1",
            &[
                "/bin/sh",
                "-c",
                "echo exec-$((6*7)); cat /proc/1/cmdline; echo; exit 4",
            ],
        )
        .output();
    let exec_out = String::from_utf8_lossy(&exec.stdout);
    assert_eq!(
        exec.status.code(),
        Some(4),
        "exit code of the exec'd command\nstdout: {exec_out}\nstderr: {}",
        String::from_utf8_lossy(&exec.stderr)
    );
    assert_eq!(
        lines(&exec_out).first().map(String::as_str),
        Some("exec-42")
    );
    assert!(
        exec_out.contains("got-term"),
        "the exec'd process does not see the container's init as pid 1: {exec_out:?}"
    );
    assert_eq!(ctd.task("c2").map(|t| t.1).as_deref(), Some("RUNNING"));

    ctd.ctr().args(["task", "kill", "c2"]).assert().success();
    eventually("task c2 is STOPPED after task kill", || {
        (ctd.task("c2")?.1 == "STOPPED").then_some(())
    });
    assert!(init.wait_reaped(DEADLINE), "{init} still exists");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(lines(&text), ["started", "got-term"]);

    // `task rm` reports a non-zero exit status of the task it removes.
    let rm = ctd.ctr().args(["task", "rm", "c2"]).output();
    assert!(rm.status.success(), "task rm: {rm:?}");
    let rm_err = String::from_utf8_lossy(&rm.stderr);
    assert!(
        rm_err.contains("exit code 7"),
        "task rm does not report exit code 7 (the SIGTERM trap's): {rm_err:?}"
    );
    ctd.ctr()
        .args(["containers", "rm", "c2"])
        .assert()
        .success();
    assert_eq!(ctd.tasks(), Vec::new());
    assert_eq!(ctd.container_ids(), Vec::<String>::new());
    assert_eq!(
        ctd.container_cgroups("c2"),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(ctd.runtime_state_left(), Vec::<std::path::PathBuf>::new());
    ctd.finish();
}

/// `ctr run -t` on a terminal: the process has a pty (`tty` names a /dev/pts/N), typed input
/// reaches it, and its exit code comes back.
#[rstest]
#[case::carton(Runtime::Carton)]
#[case::runc(Runtime::Runc)]
fn ctr_run_tty(#[case] runtime: Runtime) {
    let Some(ctd) = Containerd::new(runtime) else {
        return;
    };
    let pty = Pty::open(29, 83);
    let cmd = ctd.run(&["--rm", "-t"], "c3", &["/bin/sh", "-c", TTY_SCRIPT]);
    let mut run = pty.spawn(cmd.to_std());
    run.read_until("size=29 83\n");
    run.write(b"hello\n");
    run.read_until("got-hello");
    // The kernel sends SIGWINCH to the client, which resizes the container's terminal.
    run.resize(43, 111);
    run.read_until("size=43 111\n");
    let (status, all) = run.wait();
    assert_tty_session("ctr run -t", status, &all, ["29 83", "43 111"]);
    assert_eq!(ctd.container_ids(), Vec::<String>::new(), "--rm left it");
    ctd.finish();
}

/// `ctr task exec -t` on a terminal, into a running task: the shim runs the runtime's `exec
/// --process F --console-socket S --detach --pid-file P` (the terminal asked for in F); the
/// exec'd process has a pty of its own of the user's
/// terminal size, follows its resize, reads what the user types, and its exit code comes back
/// through the shim; the task runs on.
#[rstest]
#[case::carton(Runtime::Carton)]
#[case::runc(Runtime::Runc)]
fn ctr_task_exec_tty(#[case] runtime: Runtime) {
    let Some(ctd) = Containerd::new(runtime) else {
        return;
    };
    ctd.run(&["-d"], "c5", &["/bin/sh", "-c", IDLE])
        .assert()
        .success();
    let pty = Pty::open(23, 87);
    let cmd = ctd.exec(&["-t"], "c5", "e1", &["/bin/sh", "-c", TTY_SCRIPT]);
    let mut run = pty.spawn(cmd.to_std());
    run.read_until("size=23 87\n");
    run.write(b"hello\n");
    run.read_until("got-hello");
    run.resize(37, 101);
    run.read_until("size=37 101\n");
    let (status, all) = run.wait();
    assert_tty_session("ctr task exec -t", status, &all, ["23 87", "37 101"]);
    assert_eq!(ctd.task("c5").map(|t| t.1).as_deref(), Some("RUNNING"));
    ctd.ctr()
        .args(["task", "kill", "-s", "SIGKILL", "c5"])
        .assert()
        .success();
    eventually("task c5 is STOPPED after task kill", || {
        (ctd.task("c5")?.1 == "STOPPED").then_some(())
    });
    ctd.ctr().args(["task", "rm", "c5"]).assert().success();
    ctd.ctr()
        .args(["containers", "rm", "c5"])
        .assert()
        .success();
    ctd.finish();
}

/// `ctr run --memory-limit`: the limit is in the task's memory cgroup, found from the host
/// through /proc/<pid>/cgroup at the cgroup path containerd gave (`--cgroup`).
#[rstest]
#[case::carton(Runtime::Carton)]
#[case::runc(Runtime::Runc)]
fn ctr_memory_limit_in_the_cgroup(#[case] runtime: Runtime) {
    if !conformance::cgroup::controller_or_skip("memory") {
        return;
    }
    let Some(ctd) = Containerd::new(runtime) else {
        return;
    };
    let limit_arg = MEMORY_LIMIT.to_string();
    ctd.run(
        &["-d", "--memory-limit", &limit_arg],
        "c4",
        &["/bin/sh", "-c", IDLE],
    )
    .assert()
    .success();
    let (pid, _) = ctd.task("c4").expect("task c4 is listed");
    let (dir, limit) = host_memory_limit(pid);
    assert_eq!(limit, MEMORY_LIMIT, "limit in {}", dir.display());
    let expected_tail = ctd.cgroup_path("c4");
    assert!(
        dir.ends_with(expected_tail.trim_start_matches('/')),
        "the task's cgroup {} is not {expected_tail} (the cgroupsPath containerd gave)",
        dir.display()
    );

    ctd.ctr()
        .args(["task", "kill", "-s", "SIGKILL", "c4"])
        .assert()
        .success();
    eventually("task c4 is STOPPED after task kill", || {
        (ctd.task("c4")?.1 == "STOPPED").then_some(())
    });
    ctd.ctr().args(["task", "rm", "c4"]).assert().success();
    ctd.ctr()
        .args(["containers", "rm", "c4"])
        .assert()
        .success();
    assert_eq!(
        ctd.container_cgroups("c4"),
        Vec::<std::path::PathBuf>::new()
    );
    ctd.finish();
}
