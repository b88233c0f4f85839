//! carton-runtime as an OCI runtime (runc's command line): the lifecycle of the runtime spec,
//! hooks, the console socket, the pid file, pause/resume, update, exec, and bad input.
//!
//! Every scenario runs twice: against carton-runtime and against runc, the reference. Both
//! must give the same observable results; a difference is a carton bug (or, rarely, a place
//! where the assertion is too strict for one of them, and the comment says why). The few
//! carton-only scenarios say why runc has nothing to compare.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use conformance::host::{self, Process};
use conformance::oci::{OciHost, Runtime, all_output, bind_mount};
use rstest::rstest;
use serde_json::{Value, json};

/// A directory of the scenario shared with the container at /shared.
fn shared(oci: &OciHost) -> std::path::PathBuf {
    let dir = oci.path("shared");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn with_shared(oci: &OciHost) -> impl FnOnce(&mut Value) {
    let dir = shared(oci);
    move |c: &mut Value| {
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(bind_mount(&dir, "/shared"));
    }
}

#[track_caller]
fn wait_for_file(path: &Path) -> String {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return text;
            }
        }
        assert!(
            started.elapsed() < conformance::DEADLINE,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pid_of(state: &Value) -> i32 {
    state["pid"].as_i64().unwrap_or(0) as i32
}

/// create → created (init waiting, the user's process not started) → start → running →
/// kill → stopped → delete → gone; with the pid file and `list`.
#[rstest]
fn lifecycle(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let script = "echo started > /shared/marker; echo hello; exec sleep 1000";
    let bundle = oci.bundle("c1", &["sh", "-c", script], with_shared(&oci));
    let pid_file = oci.path("c1.pid");
    oci.create("c1", &bundle, &["--pid-file", pid_file.to_str().unwrap()]);

    let state = oci.state("c1");
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(state["id"], "c1", "{state}");
    assert_eq!(
        Path::new(state["bundle"].as_str().unwrap_or_default()),
        bundle,
        "{state}"
    );
    assert!(
        state["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{state}"
    );
    let pid = pid_of(&state);
    assert!(pid > 0, "a created container has its init's pid: {state}");
    let written = std::fs::read_to_string(&pid_file).expect("the pid file");
    assert_eq!(
        written.trim(),
        pid.to_string(),
        "pid file {written:?} vs state"
    );
    let init = Process::of(pid).expect("the init process exists while created");
    assert!(init.is_alive());
    assert_ne!(
        init.ns_link("pid"),
        Some(host::ns_link("pid")),
        "the init is in a new pid namespace"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !shared(&oci).join("marker").exists(),
        "the user's process ran before start"
    );
    assert_eq!(oci.listed(), ["c1"]);

    oci.cmd(["start", "c1"]).assert().success();
    assert_eq!(
        wait_for_file(&shared(&oci).join("marker")).trim(),
        "started"
    );
    oci.wait_for_output("c1", "hello");
    assert_eq!(oci.status("c1"), "running");
    assert_eq!(pid_of(&oci.state("c1")), pid, "start keeps the init's pid");
    assert!(
        !oci.cgroup_dirs("c1").is_empty(),
        "the container has its cgroup at linux.cgroupsPath"
    );

    oci.cmd(["kill", "c1", "KILL"]).assert().success();
    oci.wait_status("c1", "stopped");
    oci.cmd(["delete", "c1"]).assert().success();
    let out = oci.cmd(["state", "c1"]).output();
    assert!(!out.status.success(), "state of a deleted container worked");
    assert!(oci.listed().is_empty());
    assert!(
        oci.cgroup_dirs("c1").is_empty(),
        "delete leaves the cgroup: {:?}",
        oci.cgroup_dirs("c1")
    );
    assert!(
        init.wait_reaped(conformance::DEADLINE),
        "the init outlived delete"
    );
    oci.finish();
}

/// `run` in the foreground: the container's output on the runtime's stdout, its exit code as
/// the runtime's, nothing left afterwards.
#[rstest]
fn run_returns_the_exit_code(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let bundle = oci.bundle(
        "c2",
        &["sh", "-c", "echo out; echo err >&2; hostname; exit 3"],
        |_| {},
    );
    let out = oci
        .cmd(["run", "--bundle", bundle.to_str().unwrap(), "c2"])
        .output();
    assert_eq!(out.status.code(), Some(3), "{}", all_output(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\noci-test\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert!(oci.listed().is_empty(), "run leaves a container behind");
    oci.finish();
}

/// `run --detach` with a pid file; the container keeps running after the runtime exits.
#[rstest]
fn run_detached(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let bundle = oci.bundle("c3", &["sh", "-c", "echo up; exec sleep 1000"], |_| {});
    let pid_file = oci.path("c3.pid");
    let (status, err) = oci.run_leaving_process(
        "c3",
        [
            "run",
            "--detach",
            "--bundle",
            bundle.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            "c3",
        ],
    );
    assert!(status.success(), "{err}");
    oci.wait_for_output("c3", "up");
    let state = oci.state("c3");
    assert_eq!(state["status"], "running");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid_of(&state).to_string()
    );
    oci.cmd(["delete", "--force", "c3"]).assert().success();
    assert!(oci.listed().is_empty());
    oci.finish();
}

/// The six hooks run at their points, in order, with the state on stdin: prestart,
/// createRuntime and poststart/poststop in the runtime's namespace; createContainer and
/// startContainer in the container's mount namespace. Each is told the status of its point.
#[rstest]
fn hooks_run_in_order_in_their_namespaces(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let dir = shared(&oci);
    // Host-side hooks write to the shared directory through its host path; startContainer
    // runs inside the container after pivot_root, where the directory is /shared.
    let hook = |name: &str, out: &Path| -> Value {
        let out = out.display();
        json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!(
                "cat > {out}/{name}.json; readlink /proc/self/ns/mnt > {out}/{name}.mnt; \
                 echo {name} >> {out}/order"
            )]
        })
    };
    let inside = Path::new("/shared");
    let hooks = json!({
        "prestart": [hook("prestart", &dir)],
        "createRuntime": [hook("createRuntime", &dir)],
        "createContainer": [hook("createContainer", &dir)],
        "startContainer": [hook("startContainer", inside)],
        "poststart": [hook("poststart", &dir)],
        "poststop": [hook("poststop", &dir)],
    });
    let add_shared = with_shared(&oci);
    let bundle = oci.bundle("hk", &["sleep", "1000"], |c| {
        add_shared(c);
        c["hooks"] = hooks;
    });
    let order = || -> Vec<String> {
        std::fs::read_to_string(dir.join("order"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    let read = |name: &str| -> (Value, String) {
        let state = std::fs::read_to_string(dir.join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("{name} hook wrote no state: {e}"));
        let state: Value = serde_json::from_str(&state)
            .unwrap_or_else(|e| panic!("{name} hook got no JSON state ({e}): {state}"));
        let mnt = std::fs::read_to_string(dir.join(format!("{name}.mnt"))).unwrap();
        (state, mnt.trim().to_string())
    };

    oci.create("hk", &bundle, &[]);
    // runc before 1.4 runs poststart hooks in `create`, before the user's process
    // (opencontainers/runc#4347): for the reference, that hook is set aside here and only its
    // presence is checked after start.
    let spec_order = |list: Vec<String>| -> Vec<String> {
        match rt {
            Runtime::Runc => list.into_iter().filter(|h| h != "poststart").collect(),
            Runtime::Carton => list,
        }
    };
    let after_create = spec_order(order());
    assert_eq!(
        after_create.len(),
        3,
        "hooks run by create: {after_create:?}"
    );
    let mut first_two = after_create[..2].to_vec();
    first_two.sort();
    assert_eq!(first_two, ["createRuntime", "prestart"], "{after_create:?}");
    assert_eq!(after_create[2], "createContainer", "{after_create:?}");
    let pid = pid_of(&oci.state("hk"));
    let container_mnt = Process::of(pid).unwrap().ns_link("mnt").unwrap();
    let runtime_mnt = host::ns_link("mnt");

    oci.cmd(["start", "hk"]).assert().success();
    let started = Instant::now();
    while order().len() < 5 && started.elapsed() < conformance::DEADLINE {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after_start = order();
    assert_eq!(after_start.len(), 5, "hooks after start: {after_start:?}");
    assert!(
        after_start.iter().any(|h| h == "poststart"),
        "{after_start:?}"
    );
    let spec_after_start = spec_order(after_start.clone());
    assert_eq!(spec_after_start[3], "startContainer", "{after_start:?}");
    if rt == Runtime::Carton {
        assert_eq!(after_start[4], "poststart", "{after_start:?}");
    }

    oci.cmd(["kill", "hk", "KILL"]).assert().success();
    oci.wait_status("hk", "stopped");
    oci.cmd(["delete", "hk"]).assert().success();
    let all = order();
    assert_eq!(all.len(), 6, "{all:?}");
    assert_eq!(all[5], "poststop", "{all:?}");

    for name in ["prestart", "createRuntime", "poststart", "poststop"] {
        let (state, mnt) = read(name);
        assert_eq!(
            mnt, runtime_mnt,
            "{name} runs in the runtime's mount namespace"
        );
        assert_eq!(state["id"], "hk", "{name}: {state}");
        assert_eq!(
            Path::new(state["bundle"].as_str().unwrap_or_default()),
            bundle,
            "{name}: {state}"
        );
    }
    for name in ["createContainer", "startContainer"] {
        let (state, mnt) = read(name);
        assert_eq!(
            mnt, container_mnt,
            "{name} runs in the container's mount namespace"
        );
        assert_eq!(state["id"], "hk", "{name}: {state}");
    }
    // The pid as the runtime's namespace sees it. (createContainer runs in the container's
    // pid namespace, where runc reports 1: not compared.)
    for name in ["prestart", "createRuntime", "poststart"] {
        let (state, _) = read(name);
        assert_eq!(
            pid_of(&state),
            pid,
            "{name} is told the init's pid: {state}"
        );
    }
    // The status each hook is told (runtime spec, runtime.md: create is under way until the
    // createContainer hooks are done; the user's program has not run before startContainer).
    for (name, status) in [
        ("prestart", "creating"),
        ("createRuntime", "creating"),
        ("createContainer", "creating"),
        ("startContainer", "created"),
        ("poststop", "stopped"),
    ] {
        let (state, _) = read(name);
        assert_eq!(state["status"], status, "{name}: {state}");
    }
    if rt == Runtime::Carton {
        // runc runs poststart in create (see above), where the status is still "created".
        assert_eq!(read("poststart").0["status"], "running");
    }
    oci.finish();
}

/// A failing createRuntime hook fails create, and nothing of the container is left.
#[rstest]
fn failing_hook_fails_create(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let bundle = oci.bundle("hf", &["true"], |c| {
        c["hooks"] =
            json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 7"]}]});
    });
    let (status, err) =
        oci.run_leaving_process("hf", ["create", "--bundle", bundle.to_str().unwrap(), "hf"]);
    assert!(!status.success(), "create with a failing hook succeeded");
    assert!(!oci.logged_errors().is_empty(), "no error logged: {err}");
    assert!(oci.listed().is_empty(), "{:?}", oci.listed());
    oci.finish();
}

/// A createRuntime hook that asks the runtime for the container's state and list while create
/// is under way (into `<dir>/<id>.state`, `.list`), notes the creating process (`.creator`:
/// hooks are its children), says so (`.queried`) and then holds create up until the scenario
/// creates `<dir>/<id>.release`.
fn blocking_state_hook(oci: &OciHost, dir: &Path, id: &str) -> Value {
    let bin = oci.runtime().binary().unwrap();
    let (bin, root, out) = (bin.display(), oci.root().display(), dir.display());
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!(
            "echo $PPID > {out}/{id}.creator; \
             {bin} --root {root} state {id} > {out}/{id}.state 2>&1; \
             {bin} --root {root} list --format json > {out}/{id}.list 2>&1; \
             echo yes > {out}/{id}.queried; \
             while [ ! -e {out}/{id}.release ]; do sleep 0.02; done"
        )],
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    })
}

/// While create runs (held up in a createRuntime hook), `state` and `list` report the container
/// as "creating" (runtime spec, runtime.md "State"), inside the hook and from outside; carton's
/// `delete` without --force refuses it; once create returns it is "created".
#[rstest]
fn state_is_creating_while_create_runs(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let dir = oci.path("hookout");
    std::fs::create_dir_all(&dir).unwrap();
    let hook = blocking_state_hook(&oci, &dir, "cr");
    let bundle = oci.bundle("cr", &["sleep", "1000"], |c| {
        c["hooks"] = json!({"createRuntime": [hook]});
    });
    let create =
        oci.spawn_leaving_process("cr", ["create", "--bundle", bundle.to_str().unwrap(), "cr"]);
    wait_for_file(&dir.join("cr.queried"));
    let inside = std::fs::read_to_string(dir.join("cr.state")).unwrap();
    let outside = oci.cmd(["state", "cr"]).output();
    let listed = oci.cmd(["list", "--format", "json"]).output();
    // runc's delete removes the directory of a container it has no state of, which breaks
    // its own create under way: only carton's is asked, and must refuse.
    let delete = (rt == Runtime::Carton).then(|| oci.cmd(["delete", "cr"]).output());
    std::fs::write(dir.join("cr.release"), "").unwrap();
    let (status, err) = oci.wait_leaving_process("cr", create);
    assert!(status.success(), "create failed: {err}\n{}", oci.log_text());

    match rt {
        Runtime::Carton => {
            let inside: Value = serde_json::from_str(&inside)
                .unwrap_or_else(|e| panic!("state in the hook is not JSON ({e}): {inside}"));
            assert_eq!(inside["status"], "creating", "{inside}");
            assert_eq!(inside["id"], "cr", "{inside}");
            let outside: Value = serde_json::from_slice(&outside.stdout)
                .unwrap_or_else(|e| panic!("state is not JSON ({e}): {}", all_output(&outside)));
            assert_eq!(outside["status"], "creating", "{outside}");
            let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
            assert_eq!(listed[0]["id"], "cr", "{listed}");
            assert_eq!(listed[0]["status"], "creating", "{listed}");
            let listed_in_hook = std::fs::read_to_string(dir.join("cr.list")).unwrap();
            assert!(listed_in_hook.contains("creating"), "{listed_in_hook}");
        }
        // runc 1.1 writes its state once the init is ready, after these hooks: until then the
        // container does not exist for `state` (no "creating" to compare with).
        Runtime::Runc => assert!(!outside.status.success(), "{}", all_output(&outside)),
    }
    if let Some(delete) = delete {
        assert!(
            !delete.status.success(),
            "delete without --force during create worked: {}",
            all_output(&delete)
        );
    }
    assert_eq!(oci.status("cr"), "created");
    oci.cmd(["delete", "cr"]).assert().success();
    oci.finish();
}

/// Containers whose create did not finish can be deleted, with their init and cgroup: one
/// whose create was killed half-way (in its createRuntime hook) is "stopped" and goes with a
/// plain `delete`; one whose create is still held up goes with `delete --force`, which ends that
/// create. Carton only: runc 1.1 has no state of the container at that point, so there is
/// nothing its `delete` could find.
#[test]
fn half_created_containers_can_be_deleted() {
    let Some(oci) = OciHost::new(Runtime::Carton) else {
        return;
    };
    let dir = oci.path("hookout");
    std::fs::create_dir_all(&dir).unwrap();
    // Starts a create held up in its hook; returns it with the init's pid.
    let held_create = |id: &str| {
        let hook = blocking_state_hook(&oci, &dir, id);
        let bundle = oci.bundle(id, &["sleep", "1000"], |c| {
            c["hooks"] = json!({"createRuntime": [hook]});
        });
        let create =
            oci.spawn_leaving_process(id, ["create", "--bundle", bundle.to_str().unwrap(), id]);
        wait_for_file(&dir.join(format!("{id}.queried")));
        let state = oci.state(id);
        assert_eq!(state["status"], "creating", "{state}");
        let init = Process::of(pid_of(&state)).expect("the init exists during the hooks");
        (create, init)
    };
    let gone = |id: &str, init: Process| {
        assert!(oci.listed().iter().all(|l| l != id), "{:?}", oci.listed());
        assert!(
            oci.cgroup_dirs(id).is_empty(),
            "delete leaves the cgroup: {:?}",
            oci.cgroup_dirs(id)
        );
        assert!(
            init.wait_dead(conformance::DEADLINE),
            "the init of {id} outlived delete"
        );
    };

    let (create, init) = held_create("hc");
    let creator: i32 = wait_for_file(&dir.join("hc.creator"))
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(creator),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill the creating runtime");
    let (status, _) = oci.wait_leaving_process("hc", create);
    assert!(!status.success(), "the killed create succeeded");
    std::fs::write(dir.join("hc.release"), "").unwrap();
    assert_eq!(
        oci.status("hc"),
        "stopped",
        "a create that died is not creating"
    );
    assert_eq!(oci.listed(), ["hc"]);
    oci.cmd(["delete", "hc"]).assert().success();
    gone("hc", init);

    let (create, init) = held_create("hf");
    oci.cmd(["delete", "--force", "hf"]).assert().success();
    std::fs::write(dir.join("hf.release"), "").unwrap();
    let (status, _) = oci.wait_leaving_process("hf", create);
    assert!(!status.success(), "create succeeded after delete --force");
    gone("hf", init);
    oci.finish();
}

/// `--systemd-cgroup` is accepted: the container's cgroup is made through cgroupfs, and carton
/// says so once, at create, in the --log file — that systemd is not running and it falls back
/// to cgroupfs, or, on a systemd host, that its systemd driver is not implemented. Not on
/// stderr when there is a log: a container without a terminal shares it, and the warning would
/// open the container's output. The other commands of the container stay quiet. Carton only:
/// runc's systemd driver needs a running systemd.
#[test]
fn systemd_cgroup_warns_once_at_create() {
    let Some(oci) = OciHost::new(Runtime::Carton) else {
        return;
    };
    let expected = if Path::new("/run/systemd/system").exists() {
        "systemd cgroup driver is not implemented"
    } else {
        "falls back to cgroupfs"
    };
    let bundle = oci.bundle("sd", &["sleep", "1000"], |_| {});
    let bundle = bundle.to_str().unwrap();
    let (status, err) = oci.run_leaving_process(
        "sd",
        ["--systemd-cgroup", "create", "--bundle", bundle, "sd"],
    );
    assert!(status.success(), "{err}\n{}", oci.log_text());
    assert!(
        !oci.cgroup_dirs("sd").is_empty(),
        "no cgroup at the cgroupfs path"
    );
    for args in [["state", "sd"], ["start", "sd"], ["state", "sd"]] {
        oci.cmd(std::iter::once("--systemd-cgroup").chain(args))
            .assert()
            .success();
    }
    oci.cmd(["--systemd-cgroup", "delete", "--force", "sd"])
        .assert()
        .success();
    let warnings = oci.logged_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(expected), "{warnings:?}");
    assert!(!err.contains(expected), "stderr of create: {err:?}");
    oci.finish();
}

/// Receives the pty master a runtime sends to `--console-socket`.
fn receive_master(listener: UnixListener) -> std::thread::JoinHandle<OwnedFd> {
    std::thread::spawn(move || {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        let (stream, _) = listener.accept().expect("accept on the console socket");
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .expect("recvmsg on the console socket");
        for cmsg in msg.cmsgs().expect("control messages") {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: the fd was just received and is owned by nobody else.
                return unsafe { OwnedFd::from_raw_fd(fds[0]) };
            }
        }
        panic!("no fd received on the console socket");
    })
}

/// `terminal: true` with `--console-socket`: the pty master arrives over the socket, the
/// process sees a terminal of the configured size and reads what is typed into the master.
#[rstest]
fn console_socket_receives_the_pty_master(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let socket = oci.path("console.sock");
    let master = receive_master(UnixListener::bind(&socket).unwrap());
    let script = "tty; [ -t 0 ] && echo is-a-tty; stty size; read line; echo got:$line";
    let bundle = oci.bundle("tt", &["sh", "-c", script], |c| {
        c["process"]["terminal"] = json!(true);
        c["process"]["consoleSize"] = json!({"height": 33, "width": 111});
    });
    oci.create(
        "tt",
        &bundle,
        &["--console-socket", socket.to_str().unwrap()],
    );
    let master = master.join().expect("console socket thread");
    oci.cmd(["start", "tt"]).assert().success();
    let mut file = std::fs::File::from(master);
    let mut seen = String::new();
    let reader = std::thread::spawn({
        let mut file = file.try_clone().unwrap();
        move || {
            let mut all = Vec::new();
            let mut buf = [0u8; 1024];
            // EIO once the last process holding the slave exits.
            while let Ok(n) = file.read(&mut buf) {
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&all).contains("got:") {
                    // Read to the end of that line too.
                    if all.ends_with(b"\n") {
                        break;
                    }
                }
            }
            String::from_utf8_lossy(&all).into_owned()
        }
    });
    // Give the shell time to reach `read` (typed input is buffered by the pty anyway).
    std::thread::sleep(Duration::from_millis(300));
    file.write_all(b"typed\n").unwrap();
    let started = Instant::now();
    while !reader.is_finished() && started.elapsed() < conformance::DEADLINE {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(reader.is_finished(), "no answer through the pty");
    seen.push_str(&reader.join().unwrap());
    assert!(seen.contains("/dev/pts/"), "tty: {seen:?}");
    assert!(seen.contains("is-a-tty"), "{seen:?}");
    assert!(seen.contains("33 111"), "console size: {seen:?}");
    assert!(seen.contains("got:typed"), "{seen:?}");
    oci.wait_status("tt", "stopped");
    oci.cmd(["delete", "tt"]).assert().success();
    oci.finish();
}

/// pause freezes every process of the container (state "paused"), resume thaws them.
#[rstest]
fn pause_and_resume(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let counter = shared(&oci).join("counter");
    let script = "i=0; while true; do i=$((i+1)); echo $i > /shared/counter; sleep 0.02; done";
    let bundle = oci.bundle("pz", &["sh", "-c", script], with_shared(&oci));
    oci.create("pz", &bundle, &[]);
    oci.cmd(["start", "pz"]).assert().success();
    wait_for_file(&counter);
    let read = || std::fs::read_to_string(&counter).unwrap_or_default();

    oci.cmd(["pause", "pz"]).assert().success();
    assert_eq!(oci.status("pz"), "paused");
    let frozen = read();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(read(), frozen, "the counter moved while paused");

    oci.cmd(["resume", "pz"]).assert().success();
    assert_eq!(oci.status("pz"), "running");
    let started = Instant::now();
    while read() == frozen && started.elapsed() < conformance::DEADLINE {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_ne!(read(), frozen, "the counter never moved after resume");
    oci.cmd(["delete", "--force", "pz"]).assert().success();
    oci.finish();
}

/// `update --resources FILE`, then `--resources -` (the JSON on stdin), change the memory and
/// pids limits of a running container; JSON that does not parse is refused and changes
/// nothing.
#[rstest]
fn update_changes_limits(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    if !conformance::cgroup::controller_or_skip("memory") {
        return;
    }
    let Some(oci) = OciHost::new(rt) else { return };
    let bundle = oci.bundle("up", &["sleep", "1000"], |c| {
        c["linux"]["resources"]["memory"] = json!({"limit": 128 * 1024 * 1024});
        c["linux"]["resources"]["pids"] = json!({"limit": 100});
    });
    oci.create("up", &bundle, &[]);
    oci.cmd(["start", "up"]).assert().success();
    let memory = oci
        .cgroup_file("up", "memory", "memory.limit_in_bytes", "memory.max")
        .expect("the container's memory cgroup file");
    let pids = oci
        .cgroup_file("up", "pids", "pids.max", "pids.max")
        .expect("the container's pids cgroup file");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap().trim().to_string();
    assert_eq!(read(&memory), (128 * 1024 * 1024).to_string());
    assert_eq!(read(&pids), "100");

    let resources = oci.path("resources.json");
    std::fs::write(
        &resources,
        json!({"memory": {"limit": 64 * 1024 * 1024}, "pids": {"limit": 50}}).to_string(),
    )
    .unwrap();
    oci.cmd(["update", "--resources", resources.to_str().unwrap(), "up"])
        .assert()
        .success();
    assert_eq!(read(&memory), (64 * 1024 * 1024).to_string());
    assert_eq!(read(&pids), "50");

    let resources = json!({"memory": {"limit": 48 * 1024 * 1024}, "pids": {"limit": 42}});
    oci.cmd(["update", "--resources", "-", "up"])
        .write_stdin(resources.to_string())
        .assert()
        .success();
    assert_eq!(read(&memory), (48 * 1024 * 1024).to_string());
    assert_eq!(read(&pids), "42");
    let out = oci
        .cmd(["update", "--resources", "-", "up"])
        .write_stdin("{ not json")
        .output();
    assert!(
        !out.status.success(),
        "bad JSON accepted: {}",
        all_output(&out)
    );
    assert_eq!(read(&memory), (48 * 1024 * 1024).to_string());
    assert_eq!(read(&pids), "42");
    oci.cmd(["delete", "--force", "up"]).assert().success();
    oci.finish();
}

/// `exec --process process.json`: args, env, cwd and user from the file; `exec ID ARGS…`;
/// `exec --detach --pid-file`; `ps` lists the processes; `kill --all` ends them all.
#[rstest]
fn exec_ps_and_kill_all(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let bundle = oci.bundle("ex", &["sleep", "1000"], |_| {});
    oci.create("ex", &bundle, &[]);
    oci.cmd(["start", "ex"]).assert().success();
    let init = pid_of(&oci.state("ex"));

    let process = oci.path("process.json");
    let mut spec = conformance::oci::default_config(&["sh", "-c", "echo $FOO; id -u; id -g; pwd"])
        ["process"]
        .clone();
    spec["env"] = json!(["PATH=/bin:/usr/bin", "FOO=from-process-json"]);
    spec["cwd"] = json!("/tmp");
    spec["user"] = json!({"uid": 1000, "gid": 1001});
    std::fs::write(&process, spec.to_string()).unwrap();
    let out = oci
        .cmd(["exec", "--process", process.to_str().unwrap(), "ex"])
        .stdout_ok();
    assert_eq!(out, "from-process-json\n1000\n1001\n/tmp\n");

    let out = oci
        .cmd(["exec", "ex", "sh", "-c", "echo $$; exit 4"])
        .output();
    assert_eq!(out.status.code(), Some(4), "{}", all_output(&out));

    let pid_file = oci.path("exec.pid");
    let (status, err) = oci.run_leaving_process(
        "ex",
        [
            "exec",
            "--detach",
            "--pid-file",
            pid_file.to_str().unwrap(),
            "ex",
            "sleep",
            "999",
        ],
    );
    assert!(status.success(), "{err}");
    let exec_pid: i32 = wait_for_file(&pid_file).trim().parse().unwrap();
    // runc writes the pid file before its init has exec'd the command (under TCG that gap
    // showed: the cmdline was still runc's): wait for the exec.
    let deadline = std::time::Instant::now() + conformance::DEADLINE;
    loop {
        let exec_process = Process::of(exec_pid).expect("the detached exec is running");
        if exec_process.cmdline().contains("999") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the detached exec never became `sleep 999`: {}",
            exec_process.cmdline()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let exec_process = Process::of(exec_pid).expect("the detached exec is running");

    let listed: Vec<i32> =
        serde_json::from_str(&oci.cmd(["ps", "--format", "json", "ex"]).stdout_ok()).unwrap();
    assert!(
        listed.contains(&init) && listed.contains(&exec_pid),
        "ps lists {listed:?}, expected {init} and {exec_pid}"
    );

    oci.cmd(["kill", "--all", "ex", "KILL"]).assert().success();
    oci.wait_status("ex", "stopped");
    assert!(
        exec_process.wait_dead(conformance::DEADLINE),
        "kill --all left the exec'd process"
    );
    oci.cmd(["delete", "ex"]).assert().success();
    oci.finish();
}

/// Operations that do not fit the container's status fail and change nothing: start of a
/// running container, start of a missing one, create with an id in use, delete of a running
/// one without --force.
#[rstest]
fn operations_in_the_wrong_state_fail(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let bundle = oci.bundle("ws", &["sleep", "1000"], |_| {});
    let out = oci.cmd(["start", "nonexistent"]).output();
    assert!(!out.status.success(), "start of a missing container worked");
    oci.create("ws", &bundle, &[]);
    let pid = pid_of(&oci.state("ws"));

    let (status, _) =
        oci.run_leaving_process("ws", ["create", "--bundle", bundle.to_str().unwrap(), "ws"]);
    assert!(!status.success(), "a second create with the same id worked");
    assert_eq!(
        oci.status("ws"),
        "created",
        "the first container was harmed"
    );
    assert_eq!(pid_of(&oci.state("ws")), pid);

    oci.cmd(["start", "ws"]).assert().success();
    let out = oci.cmd(["start", "ws"]).output();
    assert!(!out.status.success(), "start of a running container worked");
    let out = oci.cmd(["delete", "ws"]).output();
    assert!(
        !out.status.success(),
        "delete of a running container without --force worked"
    );
    assert_eq!(oci.status("ws"), "running");
    assert!(
        !oci.logged_errors().is_empty(),
        "the failures are not in the --log file:\n{}",
        oci.log_text()
    );
    oci.cmd(["delete", "--force", "ws"]).assert().success();
    oci.finish();
}

/// Bad config.json files: create fails, the error is in the --log file (JSON), and nothing
/// of the container is left (no state, no cgroup, no process, no mount).
#[rstest]
#[case::not_json("not json", None)]
#[case::oci_version_2("ociVersion 2", Some("ociVersion"))]
#[case::missing_rootfs("missing rootfs", None)]
// Not a namespace type at all: refused while config.json is parsed, before any namespace check.
#[case::unknown_namespace("unknown namespace", None)]
// Valid namespace types that carton does not implement: refused by its namespace check.
#[case::user_namespace("user namespace", Some("user namespace"))]
#[case::time_namespace("time namespace", Some("time namespace"))]
#[case::intel_rdt("intelRdt", Some("intelRdt"))]
#[case::personality("personality", Some("personality"))]
#[case::host_sysctl("host sysctl", Some("kernel.panic"))]
#[case::empty_args("empty args", None)]
#[case::cpu_idle("cpu idle", Some("linux.resources.cpu.idle"))]
#[case::cpu_burst("cpu burst", Some("linux.resources.cpu.burst"))]
#[case::memory_check_before_update(
    "memory checkBeforeUpdate",
    Some("linux.resources.memory.checkBeforeUpdate")
)]
#[case::memory_no_hierarchy(
    "memory useHierarchy false",
    Some("linux.resources.memory.useHierarchy")
)]
#[case::idmapped_mount("idmapped mount", Some("uidMappings"))]
#[case::seccomp_listener("seccomp listener", Some("linux.seccomp.listenerPath"))]
// A field the runtime spec does not have (misspelt here): runc ignores it, carton names it.
#[case::unknown_field("unknown field", Some("process.noNewPrivilege"))]
fn bad_config_is_refused(
    #[values(Runtime::Carton, Runtime::Runc)] rt: Runtime,
    #[case] what: &str,
    #[case] carton_names: Option<&str>,
) {
    let Some(oci) = OciHost::new(rt) else { return };
    let shared = shared(&oci);
    let bundle = oci.bundle("bad", &["true"], |c| match what {
        "ociVersion 2" => c["ociVersion"] = json!("2.0.0"),
        "missing rootfs" => c["root"]["path"] = json!("no-such-rootfs"),
        "unknown namespace" => c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "no-such-namespace"})),
        "user namespace" => c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"})),
        "time namespace" => c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "time"})),
        "intelRdt" => c["linux"]["intelRdt"] = json!({"closID": "carton-test"}),
        "personality" => c["linux"]["personality"] = json!({"domain": "LINUX32"}),
        "host sysctl" => c["linux"]["sysctl"] = json!({"kernel.panic": "1"}),
        "empty args" => c["process"]["args"] = json!([]),
        "cpu idle" => c["linux"]["resources"]["cpu"] = json!({"idle": 1}),
        "cpu burst" => c["linux"]["resources"]["cpu"] = json!({"quota": 50000, "burst": 10000}),
        "memory checkBeforeUpdate" => {
            c["linux"]["resources"]["memory"] =
                json!({"limit": 64 * 1024 * 1024, "checkBeforeUpdate": true})
        }
        "memory useHierarchy false" => {
            c["linux"]["resources"]["memory"] =
                json!({"limit": 64 * 1024 * 1024, "useHierarchy": false})
        }
        "idmapped mount" => {
            let mut mount = bind_mount(&shared, "/shared");
            let ids = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            mount["uidMappings"] = ids.clone();
            mount["gidMappings"] = ids;
            c["mounts"].as_array_mut().unwrap().push(mount);
        }
        "unknown field" => c["process"]["noNewPrivilege"] = json!(true),
        "seccomp listener" => {
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "listenerPath": "/run/no-such-seccomp-agent.sock",
                "listenerMetadata": "carton-test"
            })
        }
        _ => {}
    });
    if what == "not json" {
        std::fs::write(bundle.join("config.json"), "{ this is not json").unwrap();
    }
    let (status, err) = oci.run_leaving_process(
        "bad",
        ["create", "--bundle", bundle.to_str().unwrap(), "bad"],
    );
    // runc accepts some of these (it implements personality and intelRdt, ignores the
    // ociVersion; runc 1.1 also takes the cpu, memory, idmap and seccomp-agent fields, some of
    // which it implements and some of which postdate it): there the scenario only checks that
    // it cleans up.
    let runc_accepts = matches!(
        what,
        "ociVersion 2"
            | "intelRdt"
            | "personality"
            | "cpu idle"
            | "cpu burst"
            | "memory checkBeforeUpdate"
            | "memory useHierarchy false"
            | "idmapped mount"
            | "seccomp listener"
            | "unknown field"
    );
    if rt == Runtime::Runc && runc_accepts {
        let _ = oci.cmd(["delete", "--force", "bad"]).try_output();
        oci.finish();
        return;
    }
    assert!(
        !status.success(),
        "create with a bad config ({what}) worked: {err}"
    );
    let errors = oci.logged_errors();
    assert!(
        !errors.is_empty(),
        "no error in the --log file ({what}):\n{}",
        oci.log_text()
    );
    if let (Runtime::Carton, Some(name)) = (rt, carton_names) {
        assert!(
            errors.iter().any(|e| e.contains(name)),
            "the error does not name {name}: {errors:?}"
        );
    }
    assert!(oci.listed().is_empty(), "{:?}", oci.listed());
    assert!(oci.cgroup_dirs("bad").is_empty(), "a cgroup is left");
    oci.finish();
}

/// `features` describes the runtime (JSON); `spec` writes a config.json that the runtime runs.
#[rstest]
fn features_and_spec(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let features: Value = serde_json::from_str(&oci.cmd(["features"]).stdout_ok()).unwrap();
    assert!(
        features["ociVersionMax"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{features}"
    );
    let namespaces = features["linux"]["namespaces"].as_array().unwrap();
    for ns in ["mount", "pid", "network", "ipc", "uts", "cgroup"] {
        assert!(namespaces.iter().any(|n| n == ns), "{ns}: {features}");
    }

    let bundle = oci.bundle("sp", &["true"], |_| {});
    std::fs::remove_file(bundle.join("config.json")).unwrap();
    oci.cmd(["spec", "--bundle", bundle.to_str().unwrap()])
        .assert()
        .success();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap())
            .unwrap();
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["sh", "-c", "echo from-spec"]);
    // Under the scenario's cgroup parent, which the clean-up removes (the default parent,
    // /carton-runtime, like runc's, stays on the host once made).
    config["linux"]["cgroupsPath"] = json!(oci.cgroups_path("sp"));
    oci.write_config(&bundle, &config);
    let out = oci
        .cmd(["run", "--bundle", bundle.to_str().unwrap(), "sp"])
        .output();
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-spec\n");
    oci.finish();
}

/// The default config.json of the *other* runtime runs too: runc's `spec` lists ambient
/// capabilities that are not inheritable (the kernel cannot raise those; runc leaves them out,
/// and so must carton), and carton's `spec` must suit runc. The process reports its ambient
/// set, which is empty either way.
#[rstest]
fn runs_the_other_runtimes_default_spec(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let other = match rt {
        Runtime::Carton => Runtime::Runc,
        Runtime::Runc => Runtime::Carton,
    };
    let other_bin = match other.binary() {
        Ok(bin) => bin,
        Err(reason) => {
            conformance::skip(&reason);
            return;
        }
    };
    let bundle = oci.bundle("other", &["true"], |_| {});
    std::fs::remove_file(bundle.join("config.json")).unwrap();
    let made = std::process::Command::new(&other_bin)
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .output()
        .expect("run the other runtime's spec");
    assert!(made.status.success(), "{}", all_output(&made));
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap())
            .unwrap();
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["sh", "-c", "grep CapAmb /proc/self/status"]);
    config["linux"]["cgroupsPath"] = json!(oci.cgroups_path("other"));
    oci.write_config(&bundle, &config);
    let out = oci
        .cmd(["run", "--bundle", bundle.to_str().unwrap(), "other"])
        .output();
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["CapAmb:", "0000000000000000"]
    );
    oci.finish();
}

/// A spec without HOME (containerd's default, Kubernetes' CRI) gets the user's home from the
/// container's /etc/passwd, or "/" for a user it does not list; a HOME in the spec is kept.
#[rstest]
fn home_comes_from_passwd_when_the_spec_has_none(
    #[values(Runtime::Carton, Runtime::Runc)] rt: Runtime,
) {
    let Some(oci) = OciHost::new(rt) else { return };
    let run = |name: &str, uid: u32, env: &[&str]| -> String {
        let bundle = oci.bundle(name, &["sh", "-c", "echo $HOME"], |c| {
            c["process"]["env"] = json!(env);
            c["process"]["user"] = json!({"uid": uid, "gid": uid});
        });
        let out = oci
            .cmd(["run", "--bundle", bundle.to_str().unwrap(), name])
            .output();
        assert!(out.status.success(), "{}", all_output(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(run("h1", 0, &["PATH=/bin"]), "/root");
    assert_eq!(run("h2", 4242, &["PATH=/bin"]), "/");
    assert_eq!(run("h3", 0, &["PATH=/bin", "HOME=/custom"]), "/custom");
    oci.finish();
}

/// Waits (with the suite's deadline) for a helper thread of the scenario, and returns what it
/// returned; panics with `what` when it is not done by then.
#[track_caller]
fn join_within<T>(handle: std::thread::JoinHandle<T>, what: &str) -> T {
    let started = Instant::now();
    while !handle.is_finished() {
        assert!(
            started.elapsed() < conformance::DEADLINE,
            "{what}: not within {:?}",
            conformance::DEADLINE
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    handle
        .join()
        .unwrap_or_else(|_| panic!("{what}: the thread panicked"))
}

/// Reads a pty master until the text (without `\r`) holds a line that starts with `last`, or
/// until no slave is left open (EIO); returns the text.
fn read_master_until(
    master: &std::fs::File,
    last: &'static str,
) -> std::thread::JoinHandle<String> {
    let mut file = master.try_clone().expect("dup the pty master");
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&all).replace('\r', "");
            if text.lines().any(|l| l.starts_with(last)) && text.ends_with('\n') {
                break;
            }
        }
        String::from_utf8_lossy(&all).replace('\r', "")
    })
}

/// Asserts that `pid` runs in container `id`: the namespaces, root directory and cgroups of
/// its init.
#[track_caller]
fn assert_in_container(oci: &OciHost, id: &str, pid: i32) {
    let init = Process::of(pid_of(&oci.state(id))).expect("the container's init");
    let process = Process::of(pid).unwrap_or_else(|| panic!("process {pid} does not exist"));
    for ns in ["pid", "mnt", "net", "ipc", "uts"] {
        assert_eq!(
            process.ns_link(ns),
            init.ns_link(ns),
            "process {pid} is not in the {ns} namespace of {id}"
        );
    }
    assert_eq!(
        process.cgroup(),
        init.cgroup(),
        "process {pid} is not in the cgroups of {id}"
    );
    let root = |pid: i32| {
        let meta = std::fs::metadata(format!("/proc/{pid}/root/"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/root: {e}"));
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    assert_eq!(
        root(pid),
        root(init.pid),
        "process {pid} does not have the root of {id}"
    );
}

/// `exec --tty --detach --console-socket SOCK --pid-file F`, which is how containerd's shim and
/// conmon run a tty exec: the pty master arrives over the socket (SCM_RIGHTS); the process
/// runs in the container with the slave as its terminal; what is typed into the master reaches
/// it and its output comes out of the master; once the runtime has exited, the process is the
/// subreaper's (the shim's) child, which collects its exit code. Then the same with the
/// terminal and its size (consoleSize) in a `--process` file, as containerd's shim asks.
#[rstest]
fn exec_tty_through_the_console_socket(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let bundle = oci.bundle("et", &["sleep", "1000"], |_| {});
    oci.create("et", &bundle, &[]);
    oci.cmd(["start", "et"]).assert().success();
    let socket = oci.path("exec-console.sock");
    let master = receive_master(UnixListener::bind(&socket).unwrap());
    let pid_file = oci.path("exec-tty.pid");
    let script = "tty; [ -t 0 ] && [ -t 1 ] && echo is-a-tty; read line; echo got:$line; exit 6";
    let shim = oci.spawn_under_subreaper(
        "et",
        [
            "exec",
            "--tty",
            "--detach",
            "--console-socket",
            socket.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            "et",
            "sh",
            "-c",
            script,
        ],
    );
    let status = shim.wait_runtime();
    assert!(
        status.success(),
        "exec --tty --detach: {status}\n{}",
        oci.log_text()
    );
    let master = std::fs::File::from(join_within(master, "the pty master over the socket"));
    let pid: i32 = wait_for_file(&pid_file).trim().parse().unwrap();
    assert_in_container(&oci, "et", pid);
    let reader = read_master_until(&master, "got:");
    (&master).write_all(b"typed\n").unwrap();
    let seen = join_within(reader, "the exec'd process's answer through the pty");
    assert!(seen.contains("/dev/pts/"), "tty: {seen:?}");
    assert!(seen.contains("is-a-tty"), "{seen:?}");
    assert!(seen.contains("got:typed"), "{seen:?}");
    assert_eq!(
        shim.wait_exit(pid).code(),
        Some(6),
        "exit code of the tty exec"
    );

    // containerd's shim gives the terminal in a process.json, and its size with it.
    let socket = oci.path("exec-console-2.sock");
    let master = receive_master(UnixListener::bind(&socket).unwrap());
    let process = oci.path("tty-process.json");
    let mut spec =
        conformance::oci::default_config(&["sh", "-c", "stty size; exit 3"])["process"].clone();
    spec["terminal"] = json!(true);
    spec["consoleSize"] = json!({"height": 33, "width": 111});
    std::fs::write(&process, spec.to_string()).unwrap();
    let pid_file = oci.path("exec-tty-2.pid");
    let shim = oci.spawn_under_subreaper(
        "et",
        [
            "exec",
            "--process",
            process.to_str().unwrap(),
            "--console-socket",
            socket.to_str().unwrap(),
            "--detach",
            "--pid-file",
            pid_file.to_str().unwrap(),
            "et",
        ],
    );
    let status = shim.wait_runtime();
    assert!(
        status.success(),
        "exec --process: {status}\n{}",
        oci.log_text()
    );
    let master = std::fs::File::from(join_within(master, "the pty master over the socket"));
    let seen = join_within(
        read_master_until(&master, "33 "),
        "stty size through the pty",
    );
    assert!(
        seen.contains("33 111"),
        "the process.json's consoleSize: {seen:?}"
    );
    let pid: i32 = wait_for_file(&pid_file).trim().parse().unwrap();
    assert_eq!(
        shim.wait_exit(pid).code(),
        Some(3),
        "exit code of the tty exec"
    );

    oci.cmd(["delete", "--force", "et"]).assert().success();
    drop(shim);
    oci.finish();
}

/// `exec --tty --console-socket` and `run --console-socket` (a terminal in config.json)
/// without --detach: carton sends the pty master to the socket, leaves the terminal to whoever
/// received it (nothing of the process's output on carton's own stdout), waits for the process
/// and exits with its exit code. Carton only: runc refuses a console socket unless it detaches
/// ("cannot use console socket if runc will not detach or allocate tty"), so there is nothing
/// to compare.
#[test]
fn console_socket_in_the_foreground() {
    let Some(oci) = OciHost::new(Runtime::Carton) else {
        return;
    };
    let script = "[ -t 0 ] && echo is-a-tty; read line; echo got:$line; exit 6";
    let bundle = oci.bundle("ef", &["sleep", "1000"], |_| {});
    oci.create("ef", &bundle, &[]);
    oci.cmd(["start", "ef"]).assert().success();
    let run_bundle = oci.bundle("rf", &["sh", "-c", script], |c| {
        c["process"]["terminal"] = json!(true);
    });
    let commands: [(&str, Vec<&str>); 2] = [
        ("exec", vec!["exec", "--tty", "ef", "sh", "-c", script]),
        (
            "run",
            vec!["run", "--bundle", run_bundle.to_str().unwrap(), "rf"],
        ),
    ];
    for (what, args) in commands {
        let socket = oci.path(&format!("{what}-console.sock"));
        let master = receive_master(UnixListener::bind(&socket).unwrap());
        let (command, rest) = args.split_first().unwrap();
        let mut full = vec![*command, "--console-socket", socket.to_str().unwrap()];
        full.extend(rest);
        let mut runtime = oci.cmd(&full).spawn();
        let master = std::fs::File::from(join_within(master, "the pty master over the socket"));
        let reader = read_master_until(&master, "got:");
        (&master).write_all(b"typed\n").unwrap();
        let seen = join_within(reader, "the process's answer through the pty");
        assert!(seen.contains("is-a-tty"), "{what}: {seen:?}");
        assert!(seen.contains("got:typed"), "{what}: {seen:?}");
        let started = Instant::now();
        while runtime.try_wait().is_none() && started.elapsed() < conformance::DEADLINE {
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = runtime.wait();
        assert_eq!(out.status.code(), Some(6), "{what}: {}", all_output(&out));
        assert!(
            out.stdout.is_empty(),
            "{what}: the output belongs to the pty: {}",
            all_output(&out)
        );
    }
    assert_eq!(oci.listed(), ["ef"], "run left its container");
    oci.cmd(["delete", "--force", "ef"]).assert().success();
    oci.finish();
}

/// `exec --cwd DIR --env K=V --user UID:GID ARGS…`: the flags change the container's process
/// for this exec, with runc's rules — an --env replaces the spec's variable of that name (one
/// TERM, the new one), a --user without :GID keeps the spec's group; a missing --cwd fails.
#[rstest]
fn exec_flags_override_the_process(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let bundle = oci.bundle("ef", &["sleep", "1000"], |c| {
        c["process"]["user"] = json!({"uid": 0, "gid": 1002});
    });
    oci.create("ef", &bundle, &[]);
    oci.cmd(["start", "ef"]).assert().success();
    // The environment as the process got it (a shell would merge duplicates on export).
    let script = "echo $FOO; id -u; id -g; pwd; tr '\\0' '\\n' < /proc/$$/environ | grep ^TERM=";
    let out = oci
        .cmd([
            "exec",
            "--cwd",
            "/tmp",
            "--env",
            "FOO=bar",
            "--env",
            "TERM=dumb",
            "--user",
            "1000:1001",
            "ef",
            "sh",
            "-c",
            script,
        ])
        .stdout_ok();
    assert_eq!(out, "bar\n1000\n1001\n/tmp\nTERM=dumb\n");
    let out = oci
        .cmd(["exec", "--user", "1000", "ef", "sh", "-c", "id -u; id -g"])
        .stdout_ok();
    assert_eq!(out, "1000\n1002\n", "--user without a group");
    let out = oci
        .cmd(["exec", "--cwd", "/no/such/dir", "ef", "true"])
        .output();
    assert!(
        !out.status.success(),
        "exec with a missing --cwd worked: {}",
        all_output(&out)
    );
    oci.cmd(["delete", "--force", "ef"]).assert().success();
    oci.finish();
}

/// inotify(7) on a directory: the events seen there, as (mask, name).
struct DirWatch {
    fd: OwnedFd,
}

impl DirWatch {
    fn new(dir: &Path) -> DirWatch {
        // SAFETY: inotify_init1 with flags.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        let mask = libc::IN_CREATE | libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO;
        // SAFETY: a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        assert!(
            wd >= 0,
            "inotify_add_watch: {}",
            std::io::Error::last_os_error()
        );
        DirWatch { fd }
    }

    /// The events queued so far.
    fn events(&self) -> Vec<(u32, String)> {
        let mut events = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reading into a buffer we own.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return events;
            }
            let mut at = 0usize;
            while at + 16 <= n as usize {
                let word =
                    |i: usize| u32::from_ne_bytes(buf[at + i..at + i + 4].try_into().unwrap());
                let (mask, len) = (word(4), word(12) as usize);
                let name = &buf[at + 16..at + 16 + len];
                let name = name.split(|b| *b == 0).next().unwrap_or_default();
                events.push((mask, String::from_utf8_lossy(name).into_owned()));
                at += 16 + len;
            }
        }
    }
}

/// Asserts that `name` appeared in the watched directory by a rename only: never created or
/// written under its own name (a reader could see it empty or half-written). Closing the file
/// after the rename (IN_CLOSE_WRITE) is not writing it.
#[track_caller]
fn assert_renamed_into_place(events: &[(u32, String)], name: &str) {
    let mine: Vec<u32> = events
        .iter()
        .filter(|(_, n)| n == name)
        .map(|(m, _)| *m)
        .collect();
    assert!(
        mine.iter().any(|m| m & libc::IN_MOVED_TO != 0),
        "{name} was not renamed into place: {events:?}"
    );
    assert!(
        mine.iter()
            .all(|m| m & (libc::IN_CREATE | libc::IN_MODIFY) == 0),
        "{name} was written in place: {events:?}"
    );
}

/// `create --pid-file` and `exec --detach --pid-file`: each pid file appears whole (written
/// elsewhere and renamed into place; no temporary file is left); the detached exec returns at
/// once while its process runs on in the container (its namespaces, root and cgroups), and the
/// process's exit code reaches the subreaper it is reparented to.
#[rstest]
fn pid_files_are_atomic_and_detached_exec_runs_in_the_container(
    #[values(Runtime::Carton, Runtime::Runc)] rt: Runtime,
) {
    let Some(oci) = OciHost::new(rt) else { return };
    let pids = oci.path("pids");
    std::fs::create_dir(&pids).unwrap();
    let watch = DirWatch::new(&pids);
    let bundle = oci.bundle("pf", &["sleep", "1000"], |_| {});
    let create_pid = pids.join("create.pid");
    oci.create("pf", &bundle, &["--pid-file", create_pid.to_str().unwrap()]);
    oci.cmd(["start", "pf"]).assert().success();

    let exec_pid = pids.join("exec.pid");
    let script = "echo exec-started; while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 9";
    let shim = oci.spawn_under_subreaper(
        "pf",
        [
            "exec",
            "--detach",
            "--pid-file",
            exec_pid.to_str().unwrap(),
            "pf",
            "sh",
            "-c",
            script,
        ],
    );
    let status = shim.wait_runtime();
    assert!(
        status.success(),
        "exec --detach: {status}\n{}",
        oci.log_text()
    );
    let pid: i32 = wait_for_file(&exec_pid).trim().parse().unwrap();
    oci.wait_for_output("pf", "exec-started");
    assert!(
        Process::of(pid).is_some_and(|p| p.is_alive()),
        "the detached process does not run on after the runtime returned"
    );
    assert_in_container(&oci, "pf", pid);

    let events = watch.events();
    assert_renamed_into_place(&events, "create.pid");
    assert_renamed_into_place(&events, "exec.pid");
    let mut left: Vec<String> = std::fs::read_dir(&pids)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["create.pid", "exec.pid"],
        "files left beside the pid files"
    );

    oci.cmd(["exec", "pf", "touch", "/tmp/go"])
        .assert()
        .success();
    assert_eq!(
        shim.wait_exit(pid).code(),
        Some(9),
        "exit code of the detached exec"
    );
    oci.cmd(["delete", "--force", "pf"]).assert().success();
    drop(shim);
    oci.finish();
}

/// `create --no-pivot` (the rootfs is moved onto / and chrooted into, where pivot_root cannot
/// be used): the container is still confined to its bundle's rootfs — a file put there is at
/// its /, `cd ..` from / stays at /, and the scenario's directory on the host is out of sight.
/// (Which of the two ways a runtime took cannot be seen from inside without escaping the
/// chroot; what the scenario checks is the confinement the flag must keep.)
#[rstest]
fn no_pivot_still_confines_the_container_to_its_rootfs(
    #[values(Runtime::Carton, Runtime::Runc)] rt: Runtime,
) {
    let Some(oci) = OciHost::new(rt) else { return };
    let host_dir = oci.base().display().to_string();
    let script = format!(
        "cat /np-marker; cd /../..; pwd; ls /np-marker; \
         if [ -e {host_dir} ]; then echo host-visible; else echo host-hidden; fi"
    );
    let bundle = oci.bundle("np", &["sh", "-c", &script], |_| {});
    std::fs::write(bundle.join("rootfs/np-marker"), "in-the-bundle\n").unwrap();
    oci.create("np", &bundle, &["--no-pivot"]);
    oci.cmd(["start", "np"]).assert().success();
    oci.wait_status("np", "stopped");
    assert_eq!(
        oci.container_output("np"),
        "in-the-bundle\n/\n/np-marker\nhost-hidden\n",
        "stderr: {}",
        std::fs::read_to_string(oci.path("np.err")).unwrap_or_default()
    );
    oci.cmd(["delete", "np"]).assert().success();
    oci.finish();
}

/// `create --preserve-fds 2`: descriptors 3 and 4 of the runtime's caller reach the
/// container's process (3 read from, 4 written to), descriptor 5, also open in the caller,
/// does not; nothing else is open in the process beyond its stdio.
#[rstest]
fn preserve_fds_passes_exactly_those_descriptors(
    #[values(Runtime::Carton, Runtime::Runc)] rt: Runtime,
) {
    let Some(oci) = OciHost::new(rt) else { return };
    // The shell's own descriptors must stay as they are while `ls` lists them: no pipeline
    // (the shell would hold the pipe's ends) and the redirection inside a subshell (busybox sh
    // keeps a copy of a redirected stdout at fd 10 while the command runs).
    let script =
        "(ls /proc/$$/fd > /tmp/fds); tr '\\n' ' ' < /tmp/fds; echo; cat <&3; echo via-fd4 >&4";
    let bundle = oci.bundle("pf", &["sh", "-c", script], |_| {});
    let (input, output, extra) = (oci.path("fd3"), oci.path("fd4"), oci.path("fd5"));
    std::fs::write(&input, "from-fd3\n").unwrap();
    let fds = [
        std::fs::File::open(&input).unwrap(),
        std::fs::File::create(&output).unwrap(),
        std::fs::File::create(&extra).unwrap(),
    ];
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let bundle_arg = bundle.to_str().unwrap();
    let create = oci.spawn_leaving_process_with(
        "pf",
        [
            "create",
            "--preserve-fds",
            "2",
            "--bundle",
            bundle_arg,
            "pf",
        ],
        |cmd| {
            use std::os::unix::process::CommandExt;
            // SAFETY: dup/dup2 only, between fork and exec. The sources go above 10 first so
            // that placing one at 3..5 cannot overwrite another still to be placed.
            unsafe {
                cmd.pre_exec(move || {
                    let mut high = [0; 3];
                    for (i, fd) in raw.iter().enumerate() {
                        high[i] = libc::fcntl(*fd, libc::F_DUPFD, 10);
                        if high[i] < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    for (i, fd) in high.iter().enumerate() {
                        if libc::dup2(*fd, 3 + i as i32) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        libc::close(*fd);
                    }
                    Ok(())
                });
            }
        },
    );
    let (status, err) = oci.wait_leaving_process("pf", create);
    assert!(status.success(), "create: {err}\n{}", oci.log_text());
    drop(fds);
    oci.cmd(["start", "pf"]).assert().success();
    oci.wait_status("pf", "stopped");
    assert_eq!(
        oci.container_output("pf"),
        "0 1 2 3 4 \nfrom-fd3\n",
        "stderr: {}",
        std::fs::read_to_string(oci.path("pf.err")).unwrap_or_default()
    );
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "via-fd4\n");
    oci.cmd(["delete", "pf"]).assert().success();
    oci.finish();
}

/// Where each whitespace-separated field of `line` starts (byte offsets).
fn field_starts(line: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        if c != ' ' && c != '\t' && (previous == ' ' || previous == '\t') {
            starts.push(i);
        }
        previous = c;
    }
    starts
}

/// `list` (the table: ID PID STATUS BUNDLE CREATED OWNER, columns aligned with spaces),
/// `list --format json` (each container's state with its rootfs and owner), `ps ID` (the
/// system's `ps -ef` lines of the container's processes), `ps ID PS-ARGS` (those ps arguments
/// instead, still only the container's processes) and `ps --format json ID` (its pids): the
/// shape runc gives them, for two running containers and an exec'd process.
#[rstest]
fn list_and_ps_show_what_runc_shows(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let ids = ["a", "second-container"];
    let mut bundles = Vec::new();
    for id in ids {
        let bundle = oci.bundle(id, &["sleep", "1000"], |_| {});
        oci.create(id, &bundle, &[]);
        oci.cmd(["start", id]).assert().success();
        bundles.push(bundle);
    }
    let (status, err) = oci.run_leaving_process("a", ["exec", "--detach", "a", "sleep", "999"]);
    assert!(status.success(), "{err}");
    let states: Vec<Value> = ids.iter().map(|id| oci.state(id)).collect();

    let table = oci.cmd(["list"]).stdout_ok();
    let rows: Vec<&str> = table.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(rows.len(), 3, "{table}");
    let header: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
        "{table}"
    );
    let columns = field_starts(rows[0]);
    for (row, (state, bundle)) in rows[1..].iter().zip(states.iter().zip(&bundles)) {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let pid = pid_of(state).to_string();
        let bundle = bundle.to_str().unwrap();
        let created = state["created"].as_str().unwrap();
        assert_eq!(
            fields,
            [
                state["id"].as_str().unwrap(),
                &pid,
                "running",
                bundle,
                created,
                "root"
            ],
            "{table}"
        );
        assert!(
            !row.contains('\t'),
            "columns aligned with spaces: {table:?}"
        );
        assert_eq!(field_starts(row), columns, "columns not aligned:\n{table}");
    }

    let listed: Value = serde_json::from_str(&oci.cmd(["list", "--format", "json"]).stdout_ok())
        .expect("list --format json is JSON");
    let listed = listed.as_array().expect("an array");
    assert_eq!(listed.len(), 2, "{listed:?}");
    for ((entry, state), bundle) in listed.iter().zip(&states).zip(&bundles) {
        let mut keys: Vec<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "bundle",
                "created",
                "id",
                "ociVersion",
                "owner",
                "pid",
                "rootfs",
                "status"
            ],
            "{entry}"
        );
        for key in ["id", "pid", "status", "bundle", "created", "ociVersion"] {
            assert_eq!(entry[key], state[key], "{key}: {entry} vs state {state}");
        }
        assert_eq!(entry["rootfs"], json!(bundle.join("rootfs")), "{entry}");
        assert_eq!(entry["owner"], "root", "{entry}");
    }

    let pids: Vec<i32> =
        serde_json::from_str(&oci.cmd(["ps", "--format", "json", "a"]).stdout_ok())
            .expect("ps --format json is a list of pids");
    assert_eq!(pids.len(), 2, "the init and the exec'd process: {pids:?}");
    assert!(pids.contains(&pid_of(&states[0])), "{pids:?}");
    let mut expected: Vec<String> = pids.iter().map(i32::to_string).collect();
    expected.sort();
    // Rows of a ps table: the header's fields, and each row's value in the PID column.
    let ps_table = |args: &[&str]| -> (Vec<String>, Vec<String>) {
        let out = oci.cmd(args).stdout_ok();
        let mut lines = out.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<String> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
        let at = header
            .iter()
            .position(|h| h == "PID")
            .unwrap_or_else(|| panic!("no PID column: {out}"));
        let mut listed: Vec<String> = lines
            .map(|l| l.split_whitespace().nth(at).unwrap_or_default().to_string())
            .collect();
        listed.sort();
        (header, listed)
    };
    let (header, listed) = ps_table(&["ps", "a"]);
    assert_eq!(
        header,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    assert_eq!(listed, expected, "ps a");
    let (header, listed) = ps_table(&["ps", "a", "-o", "pid,comm"]);
    assert_eq!(header, ["PID", "COMMAND"]);
    assert_eq!(listed, expected, "ps a -o pid,comm");
    // Arguments that select every process of the host: still only the container's.
    let (_, listed) = ps_table(&["ps", "a", "-e"]);
    assert_eq!(listed, expected, "ps a -e");

    for id in ids {
        oci.cmd(["delete", "--force", id]).assert().success();
    }
    oci.finish();
}

/// Splits a logfmt line (`key=value key="quoted value"`, as logrus's text formatter writes)
/// into its pairs; `None` when it is not logfmt.
fn logfmt(line: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut rest = line.trim_end();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        if key.is_empty() || key.contains([' ', '"']) {
            return None;
        }
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => value.push(chars.next()?.1),
                    (_, c) => value.push(c),
                }
            };
            (value, &quoted[end + 1..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        pairs.push((key.to_string(), value));
        rest = after.trim_start();
    }
    Some(pairs)
}

/// An RFC 3339 time: `2006-01-02T15:04:05`, an optional fraction, then Z or ±hh:mm.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    rest == "Z"
        || (rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && rest.as_bytes()[3] == b':')
}

/// `--log FILE` with `--log-format text` (the default) and `json`: the error of a failed
/// command (`state` of a container that does not exist) is written there — as logfmt
/// `time="…" level=error msg="…"` lines in text, as objects with level, msg and time in JSON
/// — and still on stderr. Another format is refused.
#[rstest]
fn log_format_text_and_json(#[values(Runtime::Carton, Runtime::Runc)] rt: Runtime) {
    let Some(oci) = OciHost::new(rt) else { return };
    let run = |log: &Path, format: Option<&str>| -> String {
        let mut args = vec!["--log", log.to_str().unwrap()];
        if let Some(format) = format {
            args.extend(["--log-format", format]);
        }
        args.extend(["state", "no-such-container"]);
        let out = oci.cmd_without_log(&args).output();
        assert!(!out.status.success(), "state of a missing container worked");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("does not exist"), "stderr: {stderr}");
        std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()))
    };
    for (name, format) in [("default.log", None), ("text.log", Some("text"))] {
        let text = run(&oci.path(name), format);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: {text:?}");
        let pairs = logfmt(lines[0]).unwrap_or_else(|| panic!("{name}: not logfmt: {text:?}"));
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["time", "level", "msg"], "{name}: {text:?}");
        assert!(is_rfc3339(&pairs[0].1), "{name}: time {:?}", pairs[0].1);
        assert_eq!(pairs[1].1, "error", "{name}: {text:?}");
        assert!(pairs[2].1.contains("does not exist"), "{name}: {text:?}");
        assert!(
            lines[0].starts_with("time=\"") && lines[0].contains(" level=error msg=\""),
            "{name}: {text:?}"
        );
    }
    let text = run(&oci.path("json.log"), Some("json"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text:?}");
    let entry: Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| {
        panic!("--log-format json wrote a line that is not JSON ({e}): {text:?}")
    });
    let mut keys: Vec<&str> = entry
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["level", "msg", "time"], "{entry}");
    assert_eq!(entry["level"], "error", "{entry}");
    assert!(
        entry["msg"].as_str().unwrap().contains("does not exist"),
        "{entry}"
    );
    assert!(is_rfc3339(entry["time"].as_str().unwrap()), "{entry}");

    // A format the runtime does not know is refused, not taken for text.
    let log = oci.path("xml.log");
    let out = oci
        .cmd_without_log([
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "xml",
            "list",
        ])
        .output();
    assert!(
        !out.status.success(),
        "--log-format xml accepted: {}",
        all_output(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("log-format") && stderr.contains("xml"),
        "the error does not name the flag and the value: {stderr}"
    );
    oci.finish();
}
