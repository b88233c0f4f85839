//! The container's process: environment, working directory, user, exit codes, signals.

use std::collections::BTreeSet;

use conformance::{Carton, DEFAULT_PATH, host, is_hex, lines, parse_env, signal_exit_code};
use nix::sys::signal::Signal;
use predicates::prelude::*;
use rstest::rstest;

/// Without flags: PATH (the image has none), HOSTNAME and HOME; nothing of carton's own
/// environment leaks in.
#[test]
fn default_environment() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let out = ct
        .cmd()
        .env("CARTON_CONF_LEAK", "must-not-leak")
        .args(["run", "busybox", "env"])
        .stdout_ok();
    let env = parse_env(&out);
    assert_eq!(
        env.get("PATH").map(String::as_str),
        Some(DEFAULT_PATH),
        "{out}"
    );
    assert_eq!(env.get("HOME").map(String::as_str), Some("/root"), "{out}");
    let hostname = env
        .get("HOSTNAME")
        .unwrap_or_else(|| panic!("no HOSTNAME:\n{out}"));
    assert!(is_hex(hostname, 12), "HOSTNAME={hostname}");
    assert!(ct.only_container_id().starts_with(hostname.as_str()));
    assert!(!env.contains_key("TERM"), "TERM set without -t:\n{out}");
    // Only what the contract names (and `container`, which some runtimes set) may appear.
    let allowed = BTreeSet::from(["PATH", "HOSTNAME", "HOME", "container"]);
    let unexpected: Vec<&String> = env
        .keys()
        .filter(|k| !allowed.contains(k.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected variables {unexpected:?}:\n{out}"
    );
    ct.finish();
}

#[test]
fn env_flags_set_variables() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let out = ct.run_ok([
        "-e",
        "FOO=bar",
        "-e",
        "SPACED=a b  c",
        "-e",
        "EQ=x=y",
        "-e",
        "EMPTY=",
        "-e",
        "PATH=/usr/bin:/bin",
        "busybox",
        "env",
    ]);
    let env = parse_env(&out);
    for (k, v) in [
        ("FOO", "bar"),
        ("SPACED", "a b  c"),
        ("EQ", "x=y"),
        ("EMPTY", ""),
        ("PATH", "/usr/bin:/bin"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in:\n{out}");
    }
    ct.finish();
}

/// `-e K` takes K's value from carton's environment, and sets nothing when K is unset there
/// (as docker does).
#[test]
fn env_flag_without_value_passes_the_callers_value() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let out = ct
        .cmd()
        .env("CARTON_CONF_PASSED", "from the caller")
        .env_remove("CARTON_CONF_UNSET")
        .args([
            "run",
            "-e",
            "CARTON_CONF_PASSED",
            "-e",
            "CARTON_CONF_UNSET",
            "busybox",
            "env",
        ])
        .stdout_ok();
    let env = parse_env(&out);
    assert_eq!(
        env.get("CARTON_CONF_PASSED").map(String::as_str),
        Some("from the caller"),
        "{out}"
    );
    assert!(!env.contains_key("CARTON_CONF_UNSET"), "{out}");
    ct.finish();
}

/// `--env-file`: KEY=VALUE lines, comments and blank lines skipped, a bare KEY passed from the
/// caller.
#[test]
fn env_file() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let file = ct.path("vars.env");
    std::fs::write(
        &file,
        "# a comment\n\nA=1\nB=two words\nCARTON_CONF_FROM_CALLER\nD=\nE=x=y\n\n# FOO=commented\n",
    )
    .unwrap();
    let out = ct
        .cmd()
        .env("CARTON_CONF_FROM_CALLER", "caller value")
        .arg("run")
        .arg("--env-file")
        .arg(&file)
        .args(["busybox", "env"])
        .stdout_ok();
    let env = parse_env(&out);
    for (k, v) in [
        ("A", "1"),
        ("B", "two words"),
        ("CARTON_CONF_FROM_CALLER", "caller value"),
        ("D", ""),
        ("E", "x=y"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in:\n{out}");
    }
    assert!(
        !env.keys().any(|k| k.starts_with('#') || k == "FOO"),
        "a comment became a variable:\n{out}"
    );
    assert_eq!(env.get("PATH").map(String::as_str), Some(DEFAULT_PATH));
    ct.finish();
}

/// An image that defines PATH keeps it (the default applies only when it defines none).
#[test]
fn image_path_is_used() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.import_busybox(
        "pathy",
        &[r#"CMD ["env"]"#, "ENV PATH=/usr/bin:/bin:/custom"],
    );
    let out = ct.run_ok(["pathy"]);
    assert_eq!(
        parse_env(&out).get("PATH").map(String::as_str),
        Some("/usr/bin:/bin:/custom"),
        "{out}"
    );
    ct.finish();
}

/// `-w`: the working directory, created when the image lacks it (as docker does).
#[rstest]
#[case::default_is_root(&[], "/")]
#[case::existing(&["-w", "/etc"], "/etc")]
#[case::created_when_missing(&["-w", "/does/not/exist"], "/does/not/exist")]
fn working_directory(#[case] flags: &[&str], #[case] expected: &str) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let mut args = flags.to_vec();
    args.extend(["busybox", "sh", "-c", "pwd -P; [ -d . ] && echo is-dir"]);
    let out = ct.run_ok(args);
    assert_eq!(lines(&out), [expected, "is-dir"]);
    ct.finish();
}

/// `-u UID:GID`: ids set, root's groups dropped, and root-only files out of reach.
#[test]
fn user_numeric_uid_gid() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let out = ct.run_ok([
        "-u",
        "1000:1000",
        "busybox",
        "sh",
        "-c",
        "id -u; id -g; grep '^Groups:' /proc/self/status; touch /root/x 2>/dev/null && echo wrote-root; true",
    ]);
    let l = lines(&out);
    assert_eq!(l[..2], ["1000", "1000"], "{out}");
    let groups: Vec<&str> = l[2]
        .strip_prefix("Groups:")
        .unwrap_or_else(|| panic!("{out}"))
        .split_whitespace()
        .collect();
    assert!(
        !groups.contains(&"0"),
        "root's group kept as a supplementary group: {groups:?}"
    );
    assert_eq!(
        l.len(),
        3,
        "a uid 1000 process wrote into /root (0700):\n{out}"
    );
    ct.finish();
}

/// `-u NAME`: uid, primary gid and HOME from the image's /etc/passwd.
#[test]
fn user_by_name() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let passwd = ct.run_ok(["--rm", "busybox", "cat", "/etc/passwd"]);
    let nobody: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .unwrap_or_else(|| panic!("no nobody in the image:\n{passwd}"))
        .split(':')
        .collect();
    let out = ct.run_ok([
        "-u",
        "nobody",
        "busybox",
        "sh",
        "-c",
        "id -u; id -g; echo \"$HOME\"",
    ]);
    assert_eq!(
        lines(&out),
        [nobody[2], nobody[3], nobody[5]],
        "passwd: {nobody:?}"
    );
    assert_eq!(nobody[2], "65534");
    ct.finish();
}

#[rstest]
#[case::zero("exit 0", 0)]
#[case::seven("exit 7", 7)]
#[case::max("exit 255", 255)]
#[case::last_command("false", 1)]
fn exit_code_is_the_containers(#[case] script: &str, #[case] code: i32) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.run(["busybox", "sh", "-c", script]).assert().code(code);
    ct.finish();
}

/// 127 when the command is not found — looked up through the container's PATH, not the host's
/// (the host has /bin/ls; with PATH=/usr/bin the image has no ls).
#[rstest]
#[case::bare_name(&["busybox", "nosuchcmd"], "nosuchcmd", true)]
#[case::absolute_path(&["busybox", "/no/such/binary"], "/no/such/binary", false)]
#[case::container_path_is_used(&["-e", "PATH=/usr/bin", "busybox", "ls"], "ls", true)]
fn command_not_found_is_127(
    #[case] args: &[&str],
    #[case] name: &str,
    #[case] says_not_found: bool,
) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let assert = ct
        .run(args)
        .assert()
        .code(127)
        .stderr(predicate::str::contains(name));
    if says_not_found {
        assert.stderr(predicate::str::contains("not found"));
    }
    ct.finish();
}

/// 126 when the command exists but cannot be executed.
#[rstest]
#[case::not_executable_file("/etc/passwd")]
#[case::directory("/etc")]
fn command_not_executable_is_126(#[case] command: &str) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.run(["busybox", command])
        .assert()
        .code(126)
        .stderr(predicate::str::contains(command));
    ct.finish();
}

/// SIGTERM / SIGINT sent to carton reach the container's pid 1, whose trap decides the exit.
#[rstest]
#[case::sigterm(Signal::SIGTERM, "TERM", 42)]
#[case::sigint(Signal::SIGINT, "INT", 43)]
fn signals_to_carton_reach_the_container(
    #[case] signal: Signal,
    #[case] name: &str,
    #[case] code: i32,
) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let script = format!("trap 'echo got-{name}; exit {code}' {name}; echo ready; sleep 60 & wait");
    let mut running = ct.run(["busybox", "sh", "-c", &script]).spawn();
    running.wait_for_stdout("ready");
    running.signal(signal);
    running
        .assert()
        .code(code)
        .stdout(predicate::str::contains(format!("got-{name}")));
    ct.finish();
}

/// A container killed by a signal makes carton exit with 128 + N.
#[test]
fn killed_container_exits_128_plus_signal() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let mut running = ct
        .run(["busybox", "sh", "-c", "echo ready; sleep 60"])
        .spawn();
    running.wait_for_stdout("ready");
    let init = host::container_init_pid(running.pid(), conformance::DEADLINE)
        .expect("no container init (a descendant of carton with NSpid ending in 1)");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), Signal::SIGKILL).unwrap();
    running.assert().code(signal_exit_code(Signal::SIGKILL));
    ct.finish();
}
