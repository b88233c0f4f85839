//! Refused input around detached containers: each case exits 125 with a clear message on
//! stderr, and leaves every container as it was — its `ps` row (durations aside) and its
//! `inspect` State identical, a running one still running.

use conformance::containers::{IDLE_UNTIL_TERM, PsRow, StatusKind};
use conformance::host::Process;
use conformance::{Carton, EXIT_CARTON_ERROR};
use rstest::rstest;
use serde_json::Value;

fn fixture() -> Option<Carton> {
    Carton::with_busybox()
}

/// Containers that must not be affected by a refused command: one running, one exited (4).
struct Bystanders {
    running: String,
    exited: String,
    init: Process,
}

impl Bystanders {
    #[track_caller]
    fn new(ct: &Carton) -> Bystanders {
        let running = ct.run_detached([
            "--name",
            "bystander-up",
            "busybox",
            "sh",
            "-c",
            IDLE_UNTIL_TERM,
        ]);
        let exited = ct.run_detached([
            "--name",
            "bystander-exited",
            "busybox",
            "sh",
            "-c",
            "exit 4",
        ]);
        ct.wait_exited(&exited);
        let init = ct.init_process(&running);
        Bystanders {
            running,
            exited,
            init,
        }
    }
}

/// Every listed container's stable `ps` row and its `inspect` State, by id.
type World = Vec<((String, String, String, StatusKind, String), Value)>;

#[track_caller]
fn world(ct: &Carton) -> World {
    world_without(ct, "")
}

/// [`world`] without the container `skip` (one whose record is broken on purpose).
#[track_caller]
fn world_without(ct: &Carton, skip: &str) -> World {
    ct.ps_rows(&["-a", "--no-trunc"])
        .iter()
        .filter(|r| skip.is_empty() || r.id != skip)
        .map(|r: &PsRow| (r.stable(), ct.state(&r.id)))
        .collect()
}

/// Runs `carton <args>`, asserts exit 125, stderr containing one of `messages`, and that
/// nothing changed: the world is the same and the running bystander still runs.
#[track_caller]
fn assert_refused(ct: &Carton, bystanders: &Bystanders, args: &[&str], messages: &[&str]) {
    let before = world(ct);
    let assert = ct.cmd().args(args).assert().code(EXIT_CARTON_ERROR);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        messages.iter().any(|m| stderr.contains(m)),
        "`carton {}`: stderr names none of {messages:?}: {stderr:?}",
        args.join(" ")
    );
    assert_eq!(
        world(ct),
        before,
        "`carton {}` changed the containers",
        args.join(" ")
    );
    assert!(
        bystanders.init.is_alive(),
        "`carton {}` stopped a running bystander",
        args.join(" ")
    );
}

/// Every command refuses a container that does not exist. (`inspect` also takes images, so
/// docker's "No such object" is accepted there.)
#[rstest]
#[case::stop(&["stop", "nosuchcontainer"])]
#[case::kill(&["kill", "nosuchcontainer"])]
#[case::start(&["start", "nosuchcontainer"])]
#[case::restart(&["restart", "nosuchcontainer"])]
#[case::wait(&["wait", "nosuchcontainer"])]
#[case::logs(&["logs", "nosuchcontainer"])]
#[case::exec(&["exec", "nosuchcontainer", "true"])]
#[case::inspect(&["inspect", "nosuchcontainer"])]
#[case::rm(&["rm", "nosuchcontainer"])]
#[case::rm_force(&["rm", "-f", "nosuchcontainer"])]
fn unknown_container_is_refused(#[case] args: &[&str]) {
    let Some(ct) = fixture() else { return };
    let bystanders = Bystanders::new(&ct);
    let messages: &[&str] = if args[0] == "inspect" {
        &["No such container", "No such object"]
    } else {
        &["No such container"]
    };
    assert_refused(&ct, &bystanders, args, messages);
    ct.finish();
}

/// An id prefix shared by two containers is refused by every command, which then touches
/// neither of them.
#[test]
fn ambiguous_prefix_is_refused() {
    let Some(ct) = fixture() else { return };
    let bystanders = Bystanders::new(&ct);
    // Pigeonhole: among 17 ids, two share their first hex digit.
    let digit = loop {
        let ids = ct.container_ids();
        let mut counts = [0usize; 16];
        for id in &ids {
            counts[usize::from_str_radix(&id[..1], 16).expect("hex id")] += 1;
        }
        if let Some(d) = counts.iter().position(|c| *c >= 2) {
            break format!("{d:x}");
        }
        assert!(
            ids.len() <= 16,
            "17 ids without a shared first digit: {ids:?}"
        );
        let id = ct.run_detached(["busybox", "true"]);
        ct.wait_exited(&id);
    };
    for args in [
        vec!["inspect", &digit],
        vec!["stop", &digit],
        vec!["kill", &digit],
        vec!["start", &digit],
        vec!["wait", &digit],
        vec!["logs", &digit],
        vec!["exec", &digit, "true"],
        vec!["rm", &digit],
        vec!["rm", "-f", &digit],
    ] {
        assert_refused(&ct, &bystanders, &args, &["ambiguous"]);
    }
    ct.finish();
}

/// A negative grace period is refused before anything is stopped.
#[test]
fn stop_with_a_negative_timeout_is_refused() {
    let Some(ct) = fixture() else { return };
    let bystanders = Bystanders::new(&ct);
    let target = bystanders.running.clone();
    assert_refused(
        &ct,
        &bystanders,
        &["stop", "-t", "-1", &target],
        &["-t", "time"],
    );
    assert_refused(
        &ct,
        &bystanders,
        &["restart", "-t", "-1", &target],
        &["-t", "time"],
    );
    ct.finish();
}

#[test]
fn kill_with_an_unknown_signal_is_refused() {
    let Some(ct) = fixture() else { return };
    let bystanders = Bystanders::new(&ct);
    let target = bystanders.running.clone();
    for signal in ["NOSUCHSIG", "SIGNOSUCH", "999"] {
        assert_refused(
            &ct,
            &bystanders,
            &["kill", "-s", signal, &target],
            &["invalid signal"],
        );
    }
    ct.finish();
}

/// `exec` and `kill` need a running container.
#[test]
fn exec_and_kill_of_a_stopped_container_are_refused() {
    let Some(ct) = fixture() else { return };
    let bystanders = Bystanders::new(&ct);
    let target = bystanders.exited.clone();
    assert_refused(
        &ct,
        &bystanders,
        &["exec", &target, "true"],
        &["is not running"],
    );
    assert_refused(&ct, &bystanders, &["kill", &target], &["is not running"]);
    // A container whose command could not start (Created) is not running either.
    let assert = ct
        .run(["-d", "--name", "never", "busybox", "nosuchcommand"])
        .assert();
    assert_eq!(assert.get_output().status.code(), Some(127));
    assert_refused(
        &ct,
        &bystanders,
        &["exec", "never", "true"],
        &["is not running"],
    );
    ct.finish();
}

/// A truncated state record: `ps -a` still lists the other containers (exit 0), `inspect` and
/// `start` of the broken one say it is unreadable (125), `rm -f` by full id removes it, and the
/// others are untouched throughout.
#[test]
fn corrupt_state_record() {
    let Some(ct) = fixture() else { return };
    let bystanders = Bystanders::new(&ct);
    let victim = ct.run_detached(["--name", "victim", "busybox", "true"]);
    ct.wait_exited(&victim);
    let others: World = world_without(&ct, &victim);
    assert_eq!(others.len(), 2, "{others:?}");

    let record = ct
        .root()
        .join("containers")
        .join(&victim)
        .join("state.json");
    let bytes = std::fs::read(&record).unwrap_or_else(|e| panic!("read {}: {e}", record.display()));
    std::fs::write(&record, &bytes[..bytes.len() / 2]).unwrap();

    let out = ct.cmd().args(["ps", "-a", "--no-trunc"]).output();
    assert!(
        out.status.success(),
        "`ps -a` failed on a corrupt record: {out:?}"
    );
    let listed: Vec<String> = ct.container_ids();
    for id in [&bystanders.running, &bystanders.exited] {
        assert!(
            listed.contains(id),
            "{id} missing from `ps -aq`: {listed:?}"
        );
    }
    assert_eq!(
        world_without(&ct, &victim),
        others,
        "the other containers changed"
    );

    for args in [["inspect", victim.as_str()], ["start", victim.as_str()]] {
        let assert = ct.cmd().args(args).assert().code(EXIT_CARTON_ERROR);
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
        assert!(
            stderr.contains("unreadable") || stderr.contains("corrupt"),
            "`carton {}`: {stderr:?}",
            args.join(" ")
        );
    }

    ct.cmd().args(["rm", "-f", &victim]).assert().success();
    assert!(
        !ct.root().join("containers").join(&victim).exists(),
        "rm -f left the corrupt container's directory"
    );
    assert!(!ct.container_ids().contains(&victim));
    assert_eq!(world(&ct), others, "the other containers changed");
    assert!(bystanders.init.is_alive());
    ct.finish();
}

/// `rm` without `-f` refuses a running container and says why.
#[test]
fn rm_of_a_running_container_is_refused() {
    let Some(ct) = fixture() else { return };
    let bystanders = Bystanders::new(&ct);
    let target = bystanders.running.clone();
    assert_refused(&ct, &bystanders, &["rm", &target], &["running", "stop"]);
    ct.finish();
}
