//! The container's file system: an overlay whose writes stay in the container's layer, the
//! kernel file systems (/proc, /sys read-only, /dev and its nodes), and the host left untouched.

use conformance::{Carton, Snapshot, host, lines};
use rstest::rstest;

/// Writes, appends and deletions land in the container's upper layer: the image is unchanged
/// and a second container from the same image sees the original files.
#[test]
fn writes_stay_in_the_container_layer() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let images = ct.root().join("images");
    let before = Snapshot::of(&images);
    assert!(!before.is_empty(), "no {} after import", images.display());

    let out = ct.run_ok([
        "--name",
        "writer",
        "busybox",
        "sh",
        "-c",
        "echo new > /etc/new-file && echo changed >> /etc/passwd && rm /bin/ls && \
         cat /etc/new-file && grep -c changed /etc/passwd && [ ! -e /bin/ls ] && echo ls-gone",
    ]);
    assert_eq!(
        lines(&out),
        ["new", "1", "ls-gone"],
        "the writes themselves"
    );

    let out = ct.run_ok([
        "--rm",
        "busybox",
        "sh",
        "-c",
        "[ -e /etc/new-file ] && echo sees-new-file; grep -q changed /etc/passwd && echo sees-passwd-change; \
         [ -e /bin/ls ] && echo has-ls; true",
    ]);
    assert_eq!(
        lines(&out),
        ["has-ls"],
        "a second container sees the first one's writes"
    );

    before.assert_unchanged(
        &Snapshot::of(&images),
        "the image store after writes in a container",
    );

    // The writes are in the (exited) writer's upper directory.
    let id = ct.only_container_id();
    let upper = ct.root().join("containers").join(&id).join("upper");
    let new_file = upper.join("etc/new-file");
    assert_eq!(
        std::fs::read_to_string(&new_file)
            .unwrap_or_else(|e| panic!("{}: {e}", new_file.display())),
        "new\n"
    );
    ct.finish();
}

fn mount_fields<'a>(mounts: &'a str, point: &str) -> Option<(&'a str, Vec<&'a str>)> {
    mounts.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[1] == point).then(|| (f[2], f[3].split(',').collect()))
    })
}

/// /sys is sysfs mounted read-only: creating or writing a file there fails with EROFS.
#[test]
fn sys_is_read_only() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    // Writing back the current value of ksm/run is harmless should the write go through.
    let assert = ct
        .run([
            "busybox",
            "sh",
            "-c",
            "cat /proc/mounts; echo ---; touch /sys/carton-probe && echo created; \
             f=/sys/kernel/mm/ksm/run; if [ -e $f ]; then v=$(cat $f); echo $v > $f && echo written; fi; true",
        ])
        .assert()
        .success();
    let out = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    let (mounts, rest) = out.split_once("---").expect("separator");
    let (fstype, opts) =
        mount_fields(mounts, "/sys").unwrap_or_else(|| panic!("no /sys mount:\n{mounts}"));
    assert_eq!(fstype, "sysfs");
    assert!(opts.contains(&"ro"), "/sys mounted {opts:?}");
    assert_eq!(
        lines(rest),
        Vec::<String>::new(),
        "writes to /sys went through"
    );
    assert!(err.contains("Read-only file system"), "stderr: {err}");
    ct.finish();
}

/// /proc is a proc mount of the container's own pid namespace.
#[test]
fn proc_is_the_containers_own() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let out = ct.run_ok([
        "busybox",
        "sh",
        "-c",
        "cat /proc/mounts; echo ---; tr '\\0' ' ' < /proc/1/cmdline; echo",
    ]);
    let (mounts, cmdline) = out.split_once("---").expect("separator");
    let (fstype, _) =
        mount_fields(mounts, "/proc").unwrap_or_else(|| panic!("no /proc mount:\n{mounts}"));
    assert_eq!(fstype, "proc");
    assert!(
        cmdline.trim().starts_with("sh -c cat /proc/mounts"),
        "/proc/1 is not the container's command: {cmdline:?}"
    );
    ct.finish();
}

/// /proc/sys is read-only (as docker does): writing even a namespaced value fails.
#[test]
fn proc_sys_is_read_only() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    // The hostname is per UTS namespace, so the write is harmless should it go through.
    ct.run([
        "busybox",
        "sh",
        "-c",
        "hostname > /proc/sys/kernel/hostname && echo written; true",
    ])
    .assert()
    .success()
    .stdout("")
    .stderr(predicates::str::contains("Read-only file system"));
    ct.finish();
}

/// The standard device nodes exist with the right device numbers.
#[rstest]
#[case::null("/dev/null", "1:3")]
#[case::zero("/dev/zero", "1:5")]
#[case::full("/dev/full", "1:7")]
#[case::random("/dev/random", "1:8")]
#[case::urandom("/dev/urandom", "1:9")]
#[case::tty("/dev/tty", "5:0")]
#[case::ptmx("/dev/ptmx", "5:2")]
fn dev_node_exists(#[case] node: &str, #[case] numbers: &str) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let out = ct.run_ok(["busybox", "stat", "-L", "-c", "%F %t:%T", node]);
    assert_eq!(
        out.trim(),
        format!("character special file {numbers}"),
        "{node}"
    );
    ct.finish();
}

/// The device nodes and the /dev mounts behave as they should.
#[rstest]
#[case::zero_reads_zeros("head -c 3 /dev/zero | od -An -tx1 | tr -d ' '", "000000")]
#[case::urandom_reads("head -c 16 /dev/urandom | wc -c", "16")]
#[case::random_reads("head -c 16 /dev/random | wc -c", "16")]
#[case::null_swallows("echo x > /dev/null && wc -c < /dev/null", "0")]
#[case::full_refuses("echo x > /dev/full 2>/dev/null || echo refused", "refused")]
#[case::dev_is_tmpfs(
    "awk '$2 == \"/dev\" { t = $3 } END { print t }' /proc/mounts",
    "tmpfs"
)]
#[case::pts_is_devpts(
    "awk '$2 == \"/dev/pts\" { t = $3 } END { print t }' /proc/mounts",
    "devpts"
)]
#[case::shm_is_tmpfs(
    "awk '$2 == \"/dev/shm\" { t = $3 } END { print t }' /proc/mounts",
    "tmpfs"
)]
#[case::mqueue_is_mqueue(
    "awk '$2 == \"/dev/mqueue\" { t = $3 } END { print t }' /proc/mounts",
    "mqueue"
)]
#[case::shm_is_writable("echo hi > /dev/shm/f && cat /dev/shm/f", "hi")]
// A fresh devpts instance: opening /dev/ptmx allocates pty 0 there, and no host pty is listed.
#[case::ptmx_allocates_in_own_devpts("exec 3<>/dev/ptmx && ls /dev/pts | tr '\\n' ' '", "0 ptmx")]
#[case::no_block_devices("find /dev -type b | wc -l", "0")]
fn dev_works(#[case] script: &str, #[case] expected: &str) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let out = ct.run_ok(["busybox", "sh", "-c", script]);
    assert_eq!(out.trim(), expected, "{script}");
    ct.finish();
}

/// The host's mount table is the same while a container runs (with a volume, and a mount made
/// inside it) and after it exits and is removed.
#[test]
fn host_mount_table_is_unchanged() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let sync = ct.path("sync");
    std::fs::create_dir(&sync).unwrap();
    let before = host::mountinfo();
    let volume = format!("{}:/sync", sync.display());
    let mut running = ct
        .run([
            "--name",
            "mounter",
            "-v",
            &volume,
            "busybox",
            "sh",
            "-c",
            "mkdir -p /mnt && mount -t tmpfs inner /mnt 2>/dev/null; echo ready; \
             i=0; while [ ! -e /sync/go ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done",
        ])
        .spawn();
    running.wait_for_stdout("ready");
    let during = host::mountinfo();
    std::fs::write(sync.join("go"), "").unwrap();
    running.assert().success();
    let after_exit = host::mountinfo();
    ct.cmd().args(["rm", "mounter"]).assert().success();
    let after_rm = host::mountinfo();
    for (when, now) in [
        ("while running", &during),
        ("after exit", &after_exit),
        ("after rm", &after_rm),
    ] {
        assert!(
            before == *now,
            "host mount table changed {when}:\n{}",
            host::line_diff(&before, now)
        );
    }
    ct.finish();
}

/// A container that writes to /proc/self/exe, /proc/1/exe and every /proc/N/exe it sees cannot
/// alter the carton binary (CVE-2019-5736), the host's busybox, or the image.
#[test]
fn carton_binary_unchanged_after_writes_to_proc_exe() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let carton_before = host::sha256_file(ct.bin());
    let busybox_before = host::sha256_file(ct.busybox());
    let images_dir = ct.root().join("images");
    let images = Snapshot::of(&images_dir);
    ct.run([
        "busybox",
        "sh",
        "-c",
        "for f in /proc/self/exe /proc/1/exe /proc/[0-9]*/exe; do \
           echo pwned >> $f; echo pwned > $f; done 2>/dev/null; echo tried",
    ])
    .assert()
    .success()
    .stdout("tried\n");
    assert_eq!(
        host::sha256_file(ct.bin()),
        carton_before,
        "the carton binary changed"
    );
    assert_eq!(
        host::sha256_file(ct.busybox()),
        busybox_before,
        "the host's busybox changed"
    );
    images.assert_unchanged(&Snapshot::of(&images_dir), "the image store");
    ct.finish();
}
