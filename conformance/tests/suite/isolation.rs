//! Isolation: the container's processes, hostname, IPC objects, network and files are its own.

use std::collections::{BTreeMap, BTreeSet};

use conformance::{Carton, host, is_hex, lines, unique};
use rstest::rstest;

/// The command is pid 1 and no other process exists: the shell expands the glob itself, before
/// forking anything, so `/proc` must list exactly one pid.
#[test]
fn command_is_pid_1_and_alone() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let out = ct.run_ok([
        "busybox",
        "sh",
        "-c",
        "echo pid=$$; set -- /proc/[0-9]*; echo procs=$*; read comm < /proc/1/comm; echo comm=$comm",
    ]);
    assert_eq!(lines(&out), ["pid=1", "procs=/proc/1", "comm=sh"]);
    ct.finish();
}

/// `ps` inside lists the shell, its background job and itself — nothing of the host.
#[test]
fn ps_shows_only_the_containers_processes() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    // Wait until the background child has become `sleep` (it is `sh` until its exec).
    let out = ct.run_ok([
        "busybox",
        "sh",
        "-c",
        "sleep 30 & i=0; until read c < /proc/$!/comm && [ \"$c\" = sleep ] || [ $i -ge 100 ]; \
         do i=$((i+1)); sleep 0.05; done 2>/dev/null; ps -o pid,comm; kill $!",
    ]);
    let rows: BTreeMap<u32, String> = lines(&out)
        .iter()
        .skip(1) // header
        .filter_map(|l| {
            let (pid, comm) = l.split_once(char::is_whitespace)?;
            Some((pid.trim().parse().ok()?, comm.trim().to_string()))
        })
        .collect();
    let comms: BTreeSet<&str> = rows.values().map(String::as_str).collect();
    assert_eq!(rows.len(), 3, "expected sh, sleep and ps only:\n{out}");
    assert_eq!(rows.get(&1).map(String::as_str), Some("sh"), "{out}");
    assert_eq!(comms, BTreeSet::from(["ps", "sh", "sleep"]), "{out}");
    let me = std::process::id();
    assert!(
        !rows.contains_key(&me),
        "the test process's pid {me} is listed:\n{out}"
    );
    ct.finish();
}

#[test]
fn hostname_defaults_to_the_short_container_id() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let hostname_before = host::hostname();
    let out = ct.run_ok(["busybox", "hostname"]);
    let name = out.trim();
    assert!(
        is_hex(name, 12),
        "hostname {name:?} is not a 12-hex short id"
    );
    let id = ct.only_container_id();
    assert!(
        id.starts_with(name),
        "hostname {name} is not the prefix of the container id {id}"
    );
    assert_eq!(host::hostname(), hostname_before, "host's hostname changed");
    ct.finish();
}

#[test]
fn hostname_flag_sets_the_hostname() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let hostname_before = host::hostname();
    let out = ct.run_ok([
        "--hostname",
        "box-one",
        "busybox",
        "sh",
        "-c",
        "hostname; cat /proc/sys/kernel/hostname",
    ]);
    assert_eq!(lines(&out), ["box-one", "box-one"]);
    assert_eq!(host::hostname(), hostname_before, "host's hostname changed");
    ct.finish();
}

/// The container's namespaces are new ones, not the host's.
#[rstest]
#[case::ipc("ipc")]
#[case::net("net")]
#[case::uts("uts")]
#[case::pid("pid")]
#[case::mnt("mnt")]
fn namespace_differs_from_the_host(#[case] ns: &str) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let path = format!("/proc/self/ns/{ns}");
    let out = ct.run_ok(["busybox", "readlink", &path]);
    let inside = out.trim();
    assert!(
        inside.starts_with(&format!("{ns}:[")),
        "unexpected readlink {path}: {inside:?}"
    );
    assert_ne!(
        inside,
        host::ns_link(ns),
        "the container shares the host's {ns} namespace"
    );
    if ns == "net" {
        // carton runs in the scenario's own network namespace (which plays the host): that is
        // the one a container must not share, with a bridge or with --network none.
        let host_like = ct.netns().id();
        assert_ne!(
            inside, host_like,
            "the container shares the scenario host's netns"
        );
        let none = ct.run_ok(["--network", "none", "busybox", "readlink", &path]);
        assert_ne!(
            none.trim(),
            host_like,
            "--network none shares the scenario host's netns"
        );
        assert!(none.trim().starts_with("net:["), "{none:?}");
    }
    ct.finish();
}

/// A SysV shared memory segment of the host does not exist in the container.
#[test]
fn host_ipc_objects_are_invisible() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let key: libc::key_t = 0x4341_0000 | (std::process::id() as i32 & 0xffff);
    // SAFETY: plain syscalls; the segment is removed below.
    let shmid = unsafe { libc::shmget(key, 4096, libc::IPC_CREAT | 0o600) };
    assert!(shmid >= 0, "shmget: {}", std::io::Error::last_os_error());
    struct Remove(i32);
    impl Drop for Remove {
        fn drop(&mut self) {
            // SAFETY: removing the segment we created.
            unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
    let _remove = Remove(shmid);
    let keys = |text: &str| -> Vec<String> {
        text.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    };
    let on_host = std::fs::read_to_string("/proc/sysvipc/shm").expect("read /proc/sysvipc/shm");
    assert!(
        keys(&on_host).contains(&key.to_string()),
        "segment not visible on the host itself"
    );

    let inside = ct.run_ok(["busybox", "cat", "/proc/sysvipc/shm"]);
    assert!(
        inside.trim_start().starts_with("key"),
        "no /proc/sysvipc/shm inside: {inside:?}"
    );
    assert!(
        !keys(&inside).contains(&key.to_string()),
        "the host's shm segment {key} is visible in the container:\n{inside}"
    );
    ct.finish();
}

/// `--network none` gives a network namespace with only `lo`, up. (The default, a bridge
/// network, is the subject of the network suite.)
#[rstest]
#[case::network_none(&["--network", "none"])]
fn only_loopback_without_network(#[case] flags: &[&str]) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let mut args: Vec<&str> = flags.to_vec();
    args.extend([
        "busybox",
        "sh",
        "-c",
        "cat /proc/net/dev; echo ---; ip -o link show lo",
    ]);
    let out = ct.run_ok(args);
    let (dev, link) = out.split_once("---").expect("separator");
    let names = host::interfaces_in_proc_net_dev(dev.trim_start_matches('\n'));
    assert_eq!(
        names,
        BTreeSet::from(["lo".to_string()]),
        "interfaces in the container:\n{dev}"
    );
    let flags_field = link
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(f, _)| f)
        .unwrap_or_else(|| panic!("unexpected `ip -o link show lo` output: {link:?}"));
    assert!(
        flags_field.split(',').any(|f| f == "UP"),
        "lo is not up: {link:?}"
    );
    ct.finish();
}

/// `--network host`: the host's network namespace and interfaces.
#[test]
fn network_host_shares_the_hosts_interfaces() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let out = ct.run_ok([
        "--network",
        "host",
        "busybox",
        "sh",
        "-c",
        "readlink /proc/self/ns/net; cat /proc/net/dev",
    ]);
    let (ns, dev) = out.split_once('\n').expect("two parts");
    // The scenario's "host" is its own network namespace (conformance::netns).
    assert_eq!(
        ns.trim(),
        ct.netns().id(),
        "not the host's network namespace"
    );
    assert_eq!(
        host::interfaces_in_proc_net_dev(dev),
        ct.netns().interfaces().into_iter().collect()
    );
    ct.finish();
}

/// Nothing of the host's file tree is reachable from `/`.
#[test]
fn no_host_file_is_visible() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let sentinel = std::path::PathBuf::from("/").join(unique("carton-conf-sentinel"));
    std::fs::write(&sentinel, "host\n").expect("create sentinel in /");
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(sentinel.clone());

    let mut host_paths: Vec<String> = vec![
        sentinel.display().to_string(),
        ct.base().display().to_string(),
        ct.bin().display().to_string(),
    ];
    if std::path::Path::new("/etc/os-release").exists() {
        host_paths.push("/etc/os-release".into());
    }
    let mut args = vec![
        "busybox".to_string(),
        "sh".into(),
        "-c".into(),
        r#"for p in "$@"; do [ -e "$p" ] && echo "visible: $p"; done; echo checked; ls -a /"#
            .into(),
        "sh".into(),
    ];
    args.extend(host_paths.iter().cloned());
    let out = ct.run_ok(&args);
    let (checks, listing) = out
        .split_once("checked\n")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(checks, "", "host paths visible in the container");

    let allowed = ct.busybox_top_level();
    let extra: Vec<String> = lines(listing)
        .into_iter()
        .filter(|n| n != "." && n != ".." && !allowed.contains(n))
        .collect();
    assert!(
        extra.is_empty(),
        "the container's / has entries the image does not: {extra:?} (image: {allowed:?})"
    );
    assert!(
        lines(listing).iter().any(|n| n == "bin"),
        "no /bin in:\n{listing}"
    );
    ct.finish();
}

/// Two containers running at the same time (they meet through a shared volume) see neither
/// each other's files nor processes, and have distinct hostnames and namespaces.
#[test]
fn concurrent_containers_are_isolated_from_each_other() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let sync = ct.path("sync");
    std::fs::create_dir(&sync).unwrap();
    let script = r#"
me=$1; peer=$2
wait_for() { i=0; while [ ! -e "$1" ]; do i=$((i+1)); [ $i -gt 200 ] && { echo "timeout waiting for $1"; exit 3; }; sleep 0.1; done; }
touch /tmp/only-$me
touch /sync/$me.up
wait_for /sync/$peer.up
echo tmp=$(ls /tmp)
set -- /proc/[0-9]*
echo "procs=$*"
echo "host=$(hostname)"
for ns in ipc mnt net pid uts; do echo "$ns=$(readlink /proc/self/ns/$ns)"; done
touch /sync/$me.done
wait_for /sync/$peer.done
"#;
    let volume = format!("{}:/sync", sync.display());
    let start = |me: &str, peer: &str| {
        ct.run(["-v", &volume, "busybox", "sh", "-c", script, "sh", me, peer])
            .spawn()
    };
    let a = start("a", "b");
    let b = start("b", "a");
    let (out_a, out_b) = (a.wait(), b.wait());
    let parse = |name: &str, out: &std::process::Output| -> BTreeMap<String, String> {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "container {name} failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        conformance::parse_env(&stdout)
    };
    let (ma, mb) = (parse("a", &out_a), parse("b", &out_b));
    assert_eq!(ma["tmp"], "only-a", "a's /tmp");
    assert_eq!(mb["tmp"], "only-b", "b's /tmp");
    assert_eq!(ma["procs"], "/proc/1", "a's processes");
    assert_eq!(mb["procs"], "/proc/1", "b's processes");
    assert_ne!(ma["host"], mb["host"], "same hostname");
    for ns in ["ipc", "mnt", "net", "pid", "uts"] {
        assert!(
            ma[ns].starts_with(&format!("{ns}:[")),
            "a {ns}: {:?}",
            ma[ns]
        );
        assert_ne!(ma[ns], mb[ns], "a and b share the {ns} namespace");
        assert_ne!(
            ma[ns],
            host::ns_link(ns),
            "a shares the host's {ns} namespace"
        );
        assert_ne!(
            mb[ns],
            host::ns_link(ns),
            "b shares the host's {ns} namespace"
        );
    }
    ct.finish();
}
