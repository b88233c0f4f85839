//! Resource limits: every limit is checked twice — the value in the container's cgroup file,
//! and the behaviour it causes (OOM kill, throttling, CPU share, refused fork). Runs on cgroup
//! v1, hybrid and v2 hosts; paths are picked from the host's layout (conformance::cgroup).

use std::time::{Duration, Instant};

use conformance::cgroup::{self, File};
use conformance::containers::{IDLE_UNTIL_TERM, SYNC_SH, parse_rfc3339, parse_stats_table};
use conformance::{Carton, EXIT_CARTON_ERROR, skip};
use rstest::rstest;
use serde_json::Value;

/// A fixture for a scenario that needs cgroups and the given controllers.
fn fixture(controllers: &[&str]) -> Option<Carton> {
    if cgroup::version().is_none() {
        skip("no cgroup filesystem is mounted");
        return None;
    }
    if !controllers.iter().all(|c| cgroup::controller_or_skip(c)) {
        return None;
    }
    Carton::with_busybox()
}

fn inside(file: File) -> String {
    cgroup::container_path(file).expect("cgroup layout known")
}

fn inspect(ct: &Carton, name: &str) -> Value {
    let out = ct.cmd().args(["inspect", name]).stdout_ok();
    let all: Value = serde_json::from_str(&out).expect("inspect prints JSON");
    all[0].clone()
}

fn id_of(ct: &Carton, name: &str) -> String {
    inspect(ct, name)["Id"]
        .as_str()
        .expect("inspect has an Id")
        .to_string()
}

/// Waits until `carton inspect` reports the container running.
fn wait_running(ct: &Carton, name: &str) -> String {
    let deadline = Instant::now() + conformance::DEADLINE;
    loop {
        let out = ct.cmd().args(["inspect", name]).output();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if v[0]["State"]["Running"] == Value::Bool(true) {
                return v[0]["Id"].as_str().unwrap_or_default().to_string();
            }
        }
        assert!(Instant::now() < deadline, "container {name} never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ids in a cpuset list such as `0-3,6` (of /sys/devices/system/{cpu,node}/online).
fn list_ids(list: &str) -> Vec<u32> {
    list.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .flat_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (u32, u32) = (a.parse().unwrap(), b.parse().unwrap());
            a..=b
        })
        .collect()
}

/// Online CPUs, or memory nodes (`what` = "cpu" | "node"); node 0 where the kernel has no
/// NUMA directory.
fn online(what: &str) -> Vec<u32> {
    std::fs::read_to_string(format!("/sys/devices/system/{what}/online"))
        .map(|l| list_ids(&l))
        .unwrap_or_else(|_| vec![0])
}

#[test]
fn memory_limit_is_written_and_enforced() {
    let Some(ct) = fixture(&["memory"]) else {
        return;
    };
    let limit = ct.run_ok([
        "--rm",
        "-m",
        "32m",
        "busybox",
        "cat",
        &inside(cgroup::MEMORY_LIMIT),
    ]);
    assert_eq!(limit.trim(), (32u64 << 20).to_string());

    // dd holds a buffer of its block size: 100 MiB cannot fit in 32 MiB (plus as much swap).
    let out = ct
        .run([
            "--name",
            "big",
            "-m",
            "32m",
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=100M",
            "count=1",
        ])
        .output();
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    let state = &inspect(&ct, "big")["State"];
    assert_eq!(state["OOMKilled"], Value::Bool(true), "{state}");
    assert_eq!(state["ExitCode"], 137);
    let ps = ct.cmd().args(["ps", "-a"]).stdout_ok();
    assert!(ps.contains("Exited (137)"), "{ps}");

    ct.run_ok([
        "--name",
        "small",
        "-m",
        "32m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=8M",
        "count=1",
    ]);
    assert_eq!(
        inspect(&ct, "small")["State"]["OOMKilled"],
        Value::Bool(false)
    );
    ct.finish();
}

#[test]
fn memory_swap_limit() {
    let Some(ct) = fixture(&["memory"]) else {
        return;
    };
    let swap_file = inside(cgroup::MEMORY_SWAP);
    let out = ct
        .run([
            "--rm",
            "-m",
            "32m",
            "--memory-swap",
            "96m",
            "busybox",
            "cat",
            &swap_file,
        ])
        .output();
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("swap accounting") {
        skip("the kernel has swap accounting disabled");
        ct.finish();
        return;
    }
    assert!(out.status.success(), "{out:?}");
    // v1 limits memory+swap, v2 swap alone.
    let expected: u64 = match cgroup::version() {
        Some(cgroup::Version::V1) => 96 << 20,
        _ => 64 << 20,
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        expected.to_string()
    );

    if !cgroup::host_has_swap() {
        // The limit itself was checked above; only its effect needs a swap device. Not a skip:
        // the scenario did test something, and CI (which turns skips into failures) has no swap.
        eprintln!(
            "NOTE: no swap device: the swap behaviour cannot be observed (file value checked)"
        );
        ct.finish();
        return;
    }
    ct.run_ok([
        "--rm",
        "-m",
        "32m",
        "--memory-swap",
        "96m",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=48M",
        "count=1",
    ]);
    let out = ct
        .run([
            "--rm",
            "-m",
            "32m",
            "--memory-swap",
            "96m",
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=160M",
            "count=1",
        ])
        .output();
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    ct.finish();
}

/// `--memory-reservation` is checked in the cgroup file only: a soft limit has no
/// deterministic effect to observe (the kernel reclaims down to it only under memory
/// pressure on the host, which a scenario cannot create without disturbing everything else).
#[test]
fn memory_reservation_is_written() {
    let Some(ct) = fixture(&["memory"]) else {
        return;
    };
    let out = ct.run_ok([
        "--rm",
        "-m",
        "64m",
        "--memory-reservation",
        "32m",
        "busybox",
        "cat",
        &inside(cgroup::MEMORY_RESERVATION),
    ]);
    assert_eq!(out.trim(), (32u64 << 20).to_string());
    ct.finish();
}

/// `--cpus 0.5`: the quota is in the cgroup, and a busy loop accrues at most about half a CPU
/// per CFS period — computed from the cgroup's own counters (usage / periods), not from timing.
#[test]
fn cpus_throttle_a_busy_loop() {
    let Some(ct) = fixture(&["cpu", "cpuacct"]) else {
        return;
    };
    let v2 = cgroup::version() == Some(cgroup::Version::V2);
    let (quota_read, usage_read) = if v2 {
        (
            "cat /sys/fs/cgroup/cpu.max".to_string(),
            "grep usage_usec /sys/fs/cgroup/cpu.stat".to_string(),
        )
    } else {
        let cpu = inside(cgroup::CPU_STAT).replace("/cpu.stat", "");
        let cpuacct = inside(File {
            v1: ("cpuacct", "cpuacct.usage"),
            v2: "",
        });
        (
            format!("echo $(cat {cpu}/cpu.cfs_quota_us) $(cat {cpu}/cpu.cfs_period_us)"),
            format!("echo usage_ns $(cat {cpuacct})"),
        )
    };
    let script = format!(
        "{quota_read}; timeout -s KILL 2 sh -c 'while :; do :; done'; {usage_read}; cat {}",
        inside(cgroup::CPU_STAT)
    );
    let out = ct
        .run(["--rm", "--cpus", "0.5", "busybox", "sh", "-c", &script])
        .output();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let first = stdout.lines().next().unwrap_or_default();
    assert_eq!(first.trim(), "50000 100000", "{stdout}");
    let usage_ns = cgroup::keyed(&stdout, "usage_usec")
        .map(|us| us * 1000)
        .or_else(|| cgroup::keyed(&stdout, "usage_ns"))
        .unwrap_or_else(|| panic!("no usage in {stdout}"));
    let periods = cgroup::keyed(&stdout, "nr_periods").expect("nr_periods");
    let throttled = cgroup::keyed(&stdout, "nr_throttled").expect("nr_throttled");
    assert!(periods >= 5, "too few CFS periods to judge: {stdout}");
    let per_period = usage_ns as f64 / (periods as f64 * 100_000_000.0);
    assert!(
        per_period <= 0.55,
        "used {per_period:.2} CPU per period under --cpus 0.5:\n{stdout}"
    );
    // Under contention from other tests the loop may never reach its quota; when it ran at
    // more than 40% of a CPU per period, it must have hit the ceiling.
    if per_period > 0.4 {
        assert!(throttled > 0, "never throttled:\n{stdout}");
    }
    ct.finish();
}

/// Two busy containers pinned to one CPU with shares 1024 and 512 share it about 2:1, read
/// from their cgroups' usage counters over the same interval.
#[test]
fn cpu_shares_divide_a_contended_cpu() {
    let Some(ct) = fixture(&["cpu", "cpuacct", "cpuset"]) else {
        return;
    };
    let shared = ct.path("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let volume = format!("{}:/shared", shared.display());
    let busy = "echo ready; while [ ! -e /shared/stop ]; do :; done";
    let mut heavy = ct
        .run([
            "--name",
            "heavy",
            "--cpuset-cpus",
            "0",
            "--cpu-shares",
            "1024",
            "-v",
            &volume,
            "busybox",
            "sh",
            "-c",
            busy,
        ])
        .spawn();
    let mut light = ct
        .run([
            "--name",
            "light",
            "--cpuset-cpus",
            "0",
            "--cpu-shares",
            "512",
            "-v",
            &volume,
            "busybox",
            "sh",
            "-c",
            busy,
        ])
        .spawn();
    heavy.wait_for_stdout("ready");
    light.wait_for_stdout("ready");
    let (heavy_id, light_id) = (wait_running(&ct, "heavy"), wait_running(&ct, "light"));
    let weight_of = |id: &str| {
        let file = File {
            v1: ("cpu", "cpu.shares"),
            v2: "cpu.weight",
        };
        cgroup::read_limit(&cgroup::host_path(id, file).unwrap())
    };
    let expected = match cgroup::version() {
        Some(cgroup::Version::V2) => (39, 20),
        _ => (1024, 512),
    };
    assert_eq!(
        (weight_of(&heavy_id), weight_of(&light_id)),
        (Some(expected.0), Some(expected.1))
    );

    std::thread::sleep(Duration::from_millis(300));
    let usage = || {
        (
            cgroup::cpu_usage_ns(&heavy_id).expect("heavy usage"),
            cgroup::cpu_usage_ns(&light_id).expect("light usage"),
        )
    };
    let before = usage();
    std::thread::sleep(Duration::from_secs(3));
    let after = usage();
    std::fs::write(shared.join("stop"), "").unwrap();
    heavy.assert().success();
    light.assert().success();

    let (h, l) = ((after.0 - before.0) as f64, (after.1 - before.1) as f64);
    assert!(l > 0.0, "the light container got no CPU at all");
    let ratio = h / l;
    assert!(
        (1.5..=2.7).contains(&ratio),
        "CPU ratio {ratio:.2} (heavy {h} ns, light {l} ns), expected about 2"
    );
    ct.finish();
}

/// `--cpuset-cpus` with the last online CPU: the cgroup file and `Cpus_allowed_list` show it.
/// On a host with one CPU that is also the default set, so nothing could fail: not applicable.
#[test]
fn cpuset_pins_the_container() {
    let cpus = online("cpu");
    if cpus.len() < 2 {
        conformance::not_applicable("one CPU online: every cpuset is the default one");
        return;
    }
    let Some(ct) = fixture(&["cpuset"]) else {
        return;
    };
    // The last online CPU: on a multi-CPU host this differs from the default set.
    let cpu = cpus.last().unwrap().to_string();
    let script = format!(
        "cat {}; grep Cpus_allowed_list /proc/self/status",
        inside(cgroup::CPUSET_CPUS)
    );
    let out = ct.run_ok([
        "--rm",
        "--cpuset-cpus",
        &cpu,
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), cpu, "{out}");
    assert_eq!(
        lines[1].split_whitespace().last(),
        Some(cpu.as_str()),
        "{out}"
    );
    ct.finish();
}

/// `--cpuset-mems` with the last online memory node: the container's cpuset.mems and its
/// `Mems_allowed_list` show it, and `inspect` records it. On a single-node host (node 0 exists
/// everywhere) the file values equal the default, so there the `inspect` value and the refusal
/// of an absent node (`bad_limits_are_refused`) are what can fail.
#[test]
fn cpuset_mems_pins_memory_nodes() {
    let Some(ct) = fixture(&["cpuset"]) else {
        return;
    };
    let node = online("node").last().copied().unwrap_or(0).to_string();
    let script = format!(
        "cat {}; grep Mems_allowed_list /proc/self/status",
        inside(cgroup::CPUSET_MEMS)
    );
    let out = ct.run_ok([
        "--name",
        "mems",
        "--network",
        "none",
        "--cpuset-mems",
        &node,
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().map(|l| l.trim()),
        Some(node.as_str()),
        "{out}"
    );
    assert_eq!(
        lines.get(1).and_then(|l| l.split_whitespace().last()),
        Some(node.as_str()),
        "{out}"
    );
    let config = &inspect(&ct, "mems")["HostConfig"];
    assert_eq!(config["CpusetMems"], node.as_str(), "{config}");
    ct.finish();
}

/// The fork bomb runs in a child shell, which dies when fork fails; PID 1 counts processes
/// with a glob (no fork needed), kills them and lives on.
const FORK_BOMB: &str = "sh -c 'while true; do sleep 60 & done' 2>/dev/null; \
    set -- /proc/[0-9]*; echo procs=$#; kill -9 -1; echo survived";

fn procs(out: &str) -> usize {
    out.lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no procs= line in {out:?}"))
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    let Some(ct) = fixture(&["pids"]) else {
        return;
    };
    let limit = ct.run_ok([
        "--rm",
        "--pids-limit",
        "10",
        "busybox",
        "cat",
        &inside(cgroup::PIDS_MAX),
    ]);
    assert_eq!(limit.trim(), "10");
    let out = ct.run_ok([
        "--rm",
        "--pids-limit",
        "10",
        "busybox",
        "sh",
        "-c",
        FORK_BOMB,
    ]);
    let n = procs(&out);
    assert!(
        (5..=10).contains(&n),
        "{n} processes under --pids-limit 10: {out}"
    );
    assert!(out.contains("survived"), "{out}");
    ct.finish();
}

#[test]
fn update_changes_live_limits() {
    let Some(ct) = fixture(&["pids", "memory"]) else {
        return;
    };
    let shared = ct.path("gate");
    std::fs::create_dir_all(&shared).unwrap();
    let volume = format!("{}:/gate", shared.display());
    let script = format!("echo ready; while [ ! -e /gate/go ]; do sleep 0.05; done; {FORK_BOMB}");
    let mut running = ct
        .run([
            "--name",
            "live",
            "--pids-limit",
            "50",
            "-m",
            "64m",
            "-v",
            &volume,
            "busybox",
            "sh",
            "-c",
            &script,
        ])
        .spawn();
    running.wait_for_stdout("ready");
    let id = wait_running(&ct, "live");

    let out = ct
        .cmd()
        .args([
            "update",
            "--pids-limit",
            "5",
            "-m",
            "128m",
            "--memory-swap",
            "-1",
            "live",
        ])
        .stdout_ok();
    assert_eq!(out.trim(), "live");
    let host = |file| cgroup::read_limit(&cgroup::host_path(&id, file).unwrap());
    assert_eq!(host(cgroup::PIDS_MAX), Some(5));
    assert_eq!(host(cgroup::MEMORY_LIMIT), Some(128 << 20));
    let config = &inspect(&ct, "live")["HostConfig"];
    assert_eq!(config["PidsLimit"], 5, "{config}");
    assert_eq!(config["Memory"], 128 << 20, "{config}");

    std::fs::write(shared.join("go"), "").unwrap();
    let out = running.assert().success().get_output().stdout.clone();
    let out = String::from_utf8_lossy(&out);
    assert!(procs(&out) <= 5, "the new limit was not enforced: {out}");
    ct.finish();
}

/// `update --cpus --cpu-shares` of a running container: the cgroup's quota and shares (v2:
/// cpu.max and runc's weight) change at once, `inspect` shows NanoCpus and CpuShares, and the
/// limits are in its configuration: after `restart` the new cgroup has them too.
#[test]
fn update_changes_live_cpu_limits() {
    let Some(ct) = fixture(&["cpu"]) else {
        return;
    };
    let id = ct.run_detached([
        "--name",
        "cpu",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        IDLE_UNTIL_TERM,
    ]);
    let weight = || cgroup::read_limit(&cgroup::host_path(&id, cgroup::CPU_WEIGHT).unwrap());
    assert_eq!(cgroup::cpu_max(&id).as_deref(), Some("max 100000"));
    assert_eq!(weight(), Some(cgroup::default_weight()));

    ct.cmd()
        .args(["update", "--cpus", "0.5", "--cpu-shares", "512", "cpu"])
        .assert()
        .success()
        .stdout("cpu\n");
    assert_eq!(cgroup::cpu_max(&id).as_deref(), Some("50000 100000"));
    assert_eq!(weight(), Some(cgroup::expected_weight(512)));
    let config = &inspect(&ct, "cpu")["HostConfig"];
    assert_eq!(config["NanoCpus"], 500_000_000, "{config}");
    assert_eq!(config["CpuShares"], 512, "{config}");

    // Only what is named changes.
    ct.cmd()
        .args(["update", "--cpu-shares", "256", "cpu"])
        .assert()
        .success();
    assert_eq!(cgroup::cpu_max(&id).as_deref(), Some("50000 100000"));
    assert_eq!(weight(), Some(cgroup::expected_weight(256)));

    ct.cmd()
        .args(["restart", "-t", "30", "cpu"])
        .timeout(conformance::DEADLINE * 2)
        .assert()
        .success();
    ct.init_process(&id);
    assert_eq!(cgroup::cpu_max(&id).as_deref(), Some("50000 100000"));
    assert_eq!(weight(), Some(cgroup::expected_weight(256)));
    let config = &inspect(&ct, "cpu")["HostConfig"];
    assert_eq!(config["NanoCpus"], 500_000_000, "{config}");
    assert_eq!(config["CpuShares"], 256, "{config}");
    ct.finish();
}

/// `update` racing `start`: whichever wins, the container that runs afterwards is under the
/// limit `update` reported. (A start that read the old configuration, and an update that saw
/// the container not yet running, used to leave the running container with the old limit.)
/// Each round starts the stopped container and updates its pids limit at the same moment.
#[test]
fn update_racing_start_leaves_the_running_container_under_the_new_limit() {
    let Some(ct) = fixture(&["pids"]) else {
        return;
    };
    let id = ct.run_detached([
        "--name",
        "racer",
        "--network",
        "none",
        "busybox",
        "sleep",
        "1000",
    ]);
    ct.cmd()
        .args(["stop", "-t", "0", "racer"])
        .assert()
        .success();
    for round in 0..15u64 {
        let limit = 100 + round;
        let limit_arg = limit.to_string();
        let start = ct.cmd().args(["start", "racer"]).spawn();
        let update = ct
            .cmd()
            .args(["update", "--pids-limit", &limit_arg, "racer"])
            .spawn();
        let (started, updated) = (start.wait_result(), update.wait_result());
        let (started, updated) = (started.unwrap(), updated.unwrap());
        assert!(started.status.success(), "start: {started:?}");
        assert!(updated.status.success(), "update: {updated:?}");
        wait_running(&ct, "racer");
        assert_eq!(
            inspect(&ct, "racer")["HostConfig"]["PidsLimit"],
            limit,
            "round {round}: configuration"
        );
        let live = cgroup::read_limit(&cgroup::host_path(&id, cgroup::PIDS_MAX).unwrap());
        assert_eq!(
            live,
            Some(limit),
            "round {round}: the running container's pids limit"
        );
        ct.cmd()
            .args(["stop", "-t", "0", "racer"])
            .assert()
            .success();
    }
    ct.finish();
}

/// `update` of a stopped container, as docker allows ("on a running or a stopped
/// container"): the new limits go into its configuration — `inspect` shows them, the container
/// stays exited and gets no cgroup — and its next `start` runs under them. The container writes
/// its own cgroup's values at every start.
#[test]
fn update_of_a_stopped_container_applies_at_its_next_start() {
    let Some(ct) = fixture(&["cpu", "pids"]) else {
        return;
    };
    let hs = ct.handshake();
    let script = format!(
        "echo run >> /runs; n=$(wc -l < /runs); {{ {}; cat {}; cat {}; }} > /sync/limits-$n",
        cgroup::cpu_max_inside().unwrap(),
        inside(cgroup::CPU_WEIGHT),
        inside(cgroup::PIDS_MAX)
    );
    let id = ct.run_detached([
        "--name",
        "later",
        "--network",
        "none",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    let first = ct.wait_exited("later");
    assert_eq!(first["ExitCode"], 0, "{first}");
    let limits = |n: u32| std::fs::read_to_string(hs.dir().join(format!("limits-{n}"))).unwrap();
    assert_eq!(
        limits(1),
        format!("max 100000\n{}\nmax\n", cgroup::default_weight())
    );

    ct.cmd()
        .args([
            "update",
            "--cpus",
            "0.5",
            "--cpu-shares",
            "512",
            "--pids-limit",
            "20",
            "later",
        ])
        .assert()
        .success()
        .stdout("later\n");
    let v = inspect(&ct, "later");
    assert_eq!(v["State"]["Status"], "exited", "update started it: {v}");
    assert_eq!(v["State"], first, "update changed the State");
    let config = &v["HostConfig"];
    assert_eq!(config["NanoCpus"], 500_000_000, "{config}");
    assert_eq!(config["CpuShares"], 512, "{config}");
    assert_eq!(config["PidsLimit"], 20, "{config}");
    assert_eq!(
        cgroup::existing_dirs(&id),
        Vec::<std::path::PathBuf>::new(),
        "update made a cgroup for a stopped container"
    );

    let started1 = parse_rfc3339(first["StartedAt"].as_str().unwrap()).unwrap();
    ct.cmd()
        .args(["start", "later"])
        .assert()
        .success()
        .stdout("later\n");
    let second = ct.wait_for_state("later", "exited after its second run", |s| {
        s["Status"] == "exited"
            && s["StartedAt"]
                .as_str()
                .and_then(parse_rfc3339)
                .is_some_and(|t| t > started1)
    });
    assert_eq!(second["ExitCode"], 0, "{second}");
    assert_eq!(
        limits(2),
        format!("50000 100000\n{}\n20\n", cgroup::expected_weight(512)),
        "the second run did not get the updated limits"
    );
    ct.finish();
}

/// `inspect` reports every limit flag in HostConfig as docker names it, the same values the
/// cgroup holds while the container runs, and still after it exited.
#[test]
fn inspect_reports_every_limit() {
    let Some(ct) = fixture(&["memory", "cpu", "cpuset", "pids"]) else {
        return;
    };
    let cpu = online("cpu").last().copied().unwrap_or(0).to_string();
    let node = online("node").last().copied().unwrap_or(0).to_string();
    let swap = cgroup::swap_limit_supported();
    let mut args = vec![
        "--name",
        "limited",
        "--network",
        "none",
        "-m",
        "64m",
        "--memory-reservation",
        "32m",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "--cpuset-cpus",
        &cpu,
        "--cpuset-mems",
        &node,
        "--pids-limit",
        "50",
    ];
    if swap {
        args.extend(["--memory-swap", "96m"]);
    } else {
        eprintln!("NOTE: the kernel cannot limit swap here: MemorySwap is not checked");
    }
    args.extend(["busybox", "sh", "-c", IDLE_UNTIL_TERM]);
    let id = ct.run_detached(&args);

    let check = |when: &str| {
        let config = inspect(&ct, "limited")["HostConfig"].clone();
        let expect = |key: &str, value: Value| {
            assert_eq!(config[key], value, "{when}: HostConfig.{key}: {config}");
        };
        expect("Memory", (64u64 << 20).into());
        expect("MemoryReservation", (32u64 << 20).into());
        if swap {
            expect("MemorySwap", (96u64 << 20).into());
        }
        expect("NanoCpus", 500_000_000.into());
        expect("CpuQuota", 50_000.into());
        expect("CpuPeriod", 100_000.into());
        expect("CpuShares", 512.into());
        expect("CpusetCpus", cpu.as_str().into());
        expect("CpusetMems", node.as_str().into());
        expect("PidsLimit", 50.into());
    };
    check("running");
    let host = |file| cgroup::read_limit(&cgroup::host_path(&id, file).unwrap());
    let text = |file| {
        std::fs::read_to_string(cgroup::host_path(&id, file).unwrap())
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(host(cgroup::MEMORY_LIMIT), Some(64 << 20));
    assert_eq!(host(cgroup::MEMORY_RESERVATION), Some(32 << 20));
    assert_eq!(cgroup::cpu_max(&id).as_deref(), Some("50000 100000"));
    assert_eq!(host(cgroup::CPU_WEIGHT), Some(cgroup::expected_weight(512)));
    assert_eq!(text(cgroup::CPUSET_CPUS), cpu);
    assert_eq!(text(cgroup::CPUSET_MEMS), node);
    assert_eq!(host(cgroup::PIDS_MAX), Some(50));

    ct.cmd()
        .args(["stop", "-t", "30", "limited"])
        .timeout(conformance::DEADLINE * 2)
        .assert()
        .success();
    check("exited");
    ct.finish();
}

#[test]
fn cgroup_is_removed_after_exit_and_after_rm_f() {
    let Some(ct) = fixture(&[]) else {
        return;
    };
    ct.run_ok(["--name", "short", "busybox", "true"]);
    let id = id_of(&ct, "short");
    assert_eq!(cgroup::existing_dirs(&id), Vec::<std::path::PathBuf>::new());

    let mut long = ct
        .run(["--name", "long", "busybox", "sh", "-c", "echo up; sleep 60"])
        .spawn();
    long.wait_for_stdout("up");
    let id = wait_running(&ct, "long");
    assert!(
        !cgroup::existing_dirs(&id).is_empty(),
        "no cgroup while running"
    );
    ct.cmd().args(["rm", "-f", "long"]).stdout_ok();
    let _ = long.wait();
    assert_eq!(cgroup::existing_dirs(&id), Vec::<std::path::PathBuf>::new());
    ct.finish();
}

#[test]
fn own_cgroup_is_visible_read_only() {
    let Some(ct) = fixture(&["pids"]) else {
        return;
    };
    let file = inside(cgroup::PIDS_MAX);
    let out = ct
        .run([
            "--rm",
            "--pids-limit",
            "33",
            "busybox",
            "sh",
            "-c",
            &format!("cat {file}; echo 1 > {file}; cat /proc/self/cgroup"),
        ])
        .output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.starts_with("33"), "{stdout}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    if cgroup::version() == Some(cgroup::Version::V2) {
        // Its own cgroup is the root of its cgroup namespace.
        assert!(stdout.lines().any(|l| l == "0::/"), "{stdout}");
    }
    ct.finish();
}

/// `stats --no-stream` without names lists every running container of its root and no other
/// (not the exited one), each cell parsed. CPU %: a busy loop under `--cpus 0.5` shows a
/// value in a wide but meaningful band, 10–75 % (the host's two cores are shared with other
/// tests: no tight bounds), an idle container under 5 %. MEM USAGE / LIMIT: `-m 64m` as the
/// limit, the host's memory without `-m`, a usage within it; MEM % their ratio. NET I/O: nothing
/// for `--network none`. PIDS: exactly the processes each container runs.
#[test]
fn stats_reports_usage_and_limits() {
    let Some(ct) = fixture(&["memory", "pids", "cpu", "cpuacct"]) else {
        return;
    };
    let hs = ct.handshake();
    let busy = ct.run_detached([
        "--name",
        "busy",
        "--network",
        "none",
        "--cpus",
        "0.5",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &format!("{SYNC_SH} s busy; while :; do :; done"),
    ]);
    let idle = ct.run_detached([
        "--name",
        "idle",
        "--network",
        "none",
        "-m",
        "64m",
        "-v",
        &hs.volume(),
        "busybox",
        "sh",
        "-c",
        &format!("{SYNC_SH} sleep 1000 & s idle; wait"),
    ]);
    ct.run_detached(["--name", "done", "--network", "none", "busybox", "true"]);
    ct.wait_exited("done");
    // `s` has returned (its touch reaped): busy runs one process from here on, idle two.
    hs.wait_for("busy");
    hs.wait_for("idle");

    let out = ct.cmd().args(["stats", "--no-stream"]).stdout_ok();
    let rows = parse_stats_table(&out);
    let mut names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["busy", "idle"],
        "every running container, only those:\n{out}"
    );
    let row = |name: &str| rows.iter().find(|r| r.name == name).unwrap();
    let (busy_row, idle_row) = (row("busy"), row("idle"));
    assert_eq!(busy_row.id, busy[..12], "{out}");
    assert_eq!(idle_row.id, idle[..12], "{out}");

    assert!(
        (10.0..=75.0).contains(&busy_row.cpu_percent),
        "a busy loop under --cpus 0.5 at {}% CPU:\n{out}",
        busy_row.cpu_percent
    );
    assert!(
        idle_row.cpu_percent < 5.0,
        "an idle container at {}% CPU:\n{out}",
        idle_row.cpu_percent
    );

    assert_eq!(idle_row.mem_limit, (64u64 << 20) as f64, "{out}");
    let host_memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .expect("MemTotal in /proc/meminfo")
        * 1024.0;
    assert!(
        (busy_row.mem_limit - host_memory).abs() <= host_memory * 0.005,
        "without -m the limit is the host's memory ({host_memory} bytes):\n{out}"
    );
    for r in [busy_row, idle_row] {
        assert!(
            r.mem_usage > 0.0 && r.mem_usage <= r.mem_limit,
            "{}: usage {} of {}:\n{out}",
            r.name,
            r.mem_usage,
            r.mem_limit
        );
        // Both sides are rounded to two decimals of their unit: half a percent.
        let ratio = r.mem_usage / r.mem_limit * 100.0;
        assert!(
            (r.mem_percent - ratio).abs() <= 0.01 + ratio * 0.01,
            "{}: MEM % {} is not usage / limit ({ratio:.3}):\n{out}",
            r.name,
            r.mem_percent
        );
        assert_eq!(r.net, (0.0, 0.0), "{}: --network none:\n{out}", r.name);
    }
    assert_eq!(busy_row.pids, 1, "sh alone:\n{out}");
    assert_eq!(idle_row.pids, 2, "sh and sleep:\n{out}");

    // Named: that container alone.
    let named = ct.cmd().args(["stats", "--no-stream", "idle"]).stdout_ok();
    let rows = parse_stats_table(&named);
    assert_eq!(rows.len(), 1, "{named}");
    assert_eq!(rows[0].mem_limit, (64u64 << 20) as f64, "{named}");
    ct.finish();
}

/// Whether `strace` runs here.
fn have_strace() -> bool {
    std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `carton run <args…>` (in the scenario's network namespace, with its root) under
/// `strace -f`, and returns its output and every directory that it or any of its processes
/// tried to create (mkdir/mkdirat, whether or not the call succeeded). Only this run's
/// processes are traced: other tests creating cgroups at the same time cannot show up.
fn run_traced(ct: &Carton, args: &[&str]) -> (std::process::Output, Vec<std::path::PathBuf>) {
    let trace = ct.path(&conformance::unique("strace"));
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-qq", "-y", "-e", "trace=mkdir,mkdirat", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(ct.bin())
        .arg("--root")
        .arg(ct.root())
        .arg("run")
        .args(args);
    ct.netns().apply(&mut cmd);
    let out = conformance::output_within(cmd, conformance::DEADLINE);
    let text = std::fs::read_to_string(&trace)
        .unwrap_or_else(|e| panic!("strace wrote no trace ({e}): {out:?}"));
    let _ = std::fs::remove_file(&trace);
    // `PID mkdir("/abs", 0777) = 0` or `PID mkdirat(3</dir>, "rel", 0755) = -1 EEXIST …`.
    let dirs = text
        .lines()
        .filter_map(|line| {
            let (_, call) = line.split_once(' ')?;
            let call = call.trim_start();
            let (base, rest) = if let Some(rest) = call.strip_prefix("mkdir(") {
                (None, rest)
            } else {
                let rest = call.strip_prefix("mkdirat(")?;
                let (fd, rest) = rest.split_once(", ")?;
                let dir = fd
                    .split_once('<')
                    .and_then(|(_, d)| d.strip_suffix('>'))
                    .map(std::path::PathBuf::from);
                (dir, rest)
            };
            let path = rest.strip_prefix('"')?.split_once('"')?.0;
            Some(match base {
                Some(dir) if !path.starts_with('/') => dir.join(path),
                _ => std::path::PathBuf::from(path),
            })
        })
        .collect();
    (out, dirs)
}

/// A bad limit: exit 125, the flag named, no container. And no cgroup: `carton run` is traced
/// (strace) and must not even try to create a directory in a cgroup hierarchy — a check other
/// tests' containers cannot disturb, unlike a look at `carton/` before and after. An accepted
/// run traced the same way must show its `carton/<id>`, so the check can fail.
#[rstest]
#[case::memory_not_a_size(&["-m", "abc"], "--memory")]
#[case::memory_too_small(&["-m", "1k"], "--memory")]
#[case::swap_without_memory(&["--memory-swap", "64m"], "--memory-swap")]
#[case::zero_cpus(&["--cpus", "0"], "--cpus")]
#[case::more_cpus_than_the_host(&["--cpus", "4096"], "--cpus")]
#[case::absent_cpu(&["--cpuset-cpus", "99"], "--cpuset-cpus")]
#[case::bad_cpu_list(&["--cpuset-cpus", "1-x"], "--cpuset-cpus")]
#[case::absent_memory_node(&["--cpuset-mems", "99"], "--cpuset-mems")]
#[case::negative_pids(&["--pids-limit", "-5"], "--pids-limit")]
#[case::shares_out_of_range(&["--cpu-shares", "1"], "--cpu-shares")]
fn bad_limits_are_refused(#[case] flags: &[&str], #[case] named: &str) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let mut args: Vec<&str> = vec!["--network", "none"];
    args.extend_from_slice(flags);
    args.extend(["busybox", "true"]);
    let strace = have_strace();
    let (out, made) = if strace {
        run_traced(&ct, &args)
    } else {
        (ct.run(&args).output(), Vec::new())
    };
    assert_eq!(out.status.code(), Some(EXIT_CARTON_ERROR), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(named), "{stderr}");
    assert!(ct.container_ids().is_empty(), "a container was created");
    assert!(
        ct.container_dirs().is_empty(),
        "a container dir was created"
    );
    if !strace {
        skip("strace is not installed: whether the refused run touched a cgroup is not checked");
        ct.finish();
        return;
    }
    let roots = cgroup::roots();
    let in_cgroups = |dirs: &[std::path::PathBuf]| -> Vec<std::path::PathBuf> {
        dirs.iter()
            .filter(|d| roots.iter().any(|r| d.starts_with(r)))
            .cloned()
            .collect()
    };
    assert_eq!(
        in_cgroups(&made),
        Vec::<std::path::PathBuf>::new(),
        "the refused run made (or tried to make) cgroup directories"
    );

    let (out, made) = run_traced(&ct, &["--network", "none", "busybox", "true"]);
    assert!(out.status.success(), "{out:?}");
    let id = ct.only_container_id();
    let cgroups = in_cgroups(&made);
    assert!(
        cgroups.iter().any(|d| d.ends_with(format!("carton/{id}"))),
        "the trace of an accepted run lacks its cgroup carton/{id}: {made:?}"
    );
    ct.finish();
}

/// A limit whose controller the host lacks is refused up front, with the controller named,
/// and leaves no container behind (no id is even reserved, so no cgroup can exist). The host "lacks" pids here because carton
/// runs in a private mount namespace where the v1 pids hierarchy is unmounted.
#[test]
fn a_limit_without_its_controller_is_refused_before_anything_is_made() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let Some(pids) = (cgroup::version() == Some(cgroup::Version::V1))
        .then(|| cgroup::v1_mount("pids"))
        .flatten()
    else {
        conformance::not_applicable(
            "needs a v1 pids hierarchy: a cgroup2 controller cannot be hidden from one process",
        );
        return;
    };
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"umount -l "$0" && shift && exec "$@""#)
        .arg(&pids)
        .arg("--")
        .arg(ct.bin())
        .arg("--root")
        .arg(ct.root())
        .args([
            "run",
            "--network",
            "none",
            "--pids-limit",
            "10",
            "busybox",
            "true",
        ])
        .output()
        .expect("run unshare");
    assert_eq!(out.status.code(), Some(EXIT_CARTON_ERROR), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pids cgroup controller is not available"),
        "{stderr}"
    );
    assert!(ct.container_ids().is_empty(), "a container was created");
    assert!(
        ct.container_dirs().is_empty(),
        "a container dir was created"
    );
    ct.finish();
}
