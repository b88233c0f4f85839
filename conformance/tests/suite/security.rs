//! The default security profile against hostile containers (issue 9): capabilities, seccomp,
//! masked and read-only paths, devices, path safety of mount targets, self-protection of the
//! runtime (its binary, its file descriptors, its working directory), `--read-only`/`--tmpfs`,
//! `--ulimit`, and bad input.
//!
//! Every attack is first shown to work against a deliberately weakened container
//! (`--privileged`, `--cap-add …`, `--security-opt seccomp=unconfined`), so that a refusal in
//! the default container proves the defence rather than a broken attack. Where the attack
//! would hurt the host, the weakened run only proves *reachability* with a harmless variant:
//! an open without a write, a read of one byte, a write to something the container owns (its
//! own hostname), a copy of the carton binary.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use conformance::cgroup::{self, Version};
use conformance::containers::{IDLE_UNTIL_TERM, SYNC_SH};
use conformance::security::{
    Arg, BlockDevice, CapSets, DOCKER_DEFAULT_MASK, SyscallProbe, busybox_with_symlink,
    capability_mask, carton_cgroup_ids, host_root_names, output_with_inherited_fd,
    probes_supported, readable_block_devices, status_field,
};
use conformance::{
    Carton, CartonCmd, DEADLINE, EXIT_CARTON_ERROR, Snapshot, host, lines, not_applicable, skip,
};
use rstest::rstest;

// ---------------------------------------------------------------------------------------------
// Helpers

fn fixture() -> Option<Carton> {
    Carton::with_busybox()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `carton run --rm --network none <flags…> busybox sh -c <script>`.
fn run_sh(ct: &Carton, flags: &[&str], script: &str) -> Output {
    let mut args: Vec<&str> = vec!["--rm", "--network", "none"];
    args.extend_from_slice(flags);
    args.extend(["busybox", "sh", "-c", script]);
    ct.run(args).output()
}

/// [`run_sh`], asserting exit 0; returns stdout.
#[track_caller]
fn run_sh_ok(ct: &Carton, flags: &[&str], script: &str) -> String {
    let out = run_sh(ct, flags, script);
    assert!(
        out.status.success(),
        "`carton run {flags:?} busybox sh -c {script:?}` failed ({})\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Stdout and stderr together, for "did it say X" checks.
fn all_output(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// A detached container named `name`, idle until stopped.
#[track_caller]
fn idle(ct: &Carton, name: &str, flags: &[&str]) -> String {
    let mut args = vec!["--name", name, "--network", "none"];
    args.extend_from_slice(flags);
    args.extend(["busybox", "sh", "-c", IDLE_UNTIL_TERM]);
    ct.run_detached(&args)
}

/// `carton exec <args…>`, asserting success; returns stdout.
#[track_caller]
fn exec_ok(ct: &Carton, args: &[&str]) -> String {
    ct.cmd().arg("exec").args(args).stdout_ok()
}

/// The capability sets in a /proc/<pid>/status text.
#[track_caller]
fn cap_sets(status: &str) -> CapSets {
    CapSets::parse(status).unwrap_or_else(|| panic!("no capability lines in:\n{status}"))
}

/// What `--privileged` must give: every capability carton (started from this process) holds.
fn held_by_carton() -> CapSets {
    let own = CapSets::of_self();
    let held = own.permitted & own.bounding;
    CapSets {
        inheritable: held,
        permitted: held,
        effective: held,
        bounding: own.bounding,
        ambient: 0,
    }
}

#[track_caller]
fn assert_caps(actual: &CapSets, expected: &CapSets, what: &str) {
    assert_eq!(
        actual, expected,
        "{what}: capability sets differ\nexpected:\n{expected}actual:\n{actual}"
    );
}

/// Says EPERM, as the kernel's message or as busybox words it ("permission denied (are you
/// root?)" is what busybox prints for EPERM).
fn says_eperm(output: &str) -> bool {
    let lower = output.to_lowercase();
    lower.contains("operation not permitted") || lower.contains("permission denied (are you root?)")
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
struct MountEntry {
    point: String,
    /// Per-mount options (`rw,nosuid,…`).
    options: String,
    fstype: String,
    /// Superblock options (`rw,size=65536k,…`).
    super_options: String,
}

impl MountEntry {
    fn has(&self, option: &str) -> bool {
        self.options.split(',').any(|o| o == option)
    }

    fn has_super(&self, option: &str) -> bool {
        self.super_options.split(',').any(|o| o == option)
    }
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some(MountEntry {
                point: left.get(4)?.replace("\\040", " "),
                options: left.get(5)?.to_string(),
                fstype: right.first()?.to_string(),
                super_options: right.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

const MOUNTINFO_SEPARATOR: &str = "--- mountinfo ---";

/// Runs `script` (which must succeed), then prints the container's mount table; returns the
/// script's lines and the mounts.
#[track_caller]
fn run_with_mounts(ct: &Carton, flags: &[&str], script: &str) -> (Vec<String>, Vec<MountEntry>) {
    let full = format!("{script}\necho '{MOUNTINFO_SEPARATOR}'; cat /proc/self/mountinfo");
    let out = run_sh_ok(ct, flags, &full);
    let (before, mounts) = out
        .split_once(MOUNTINFO_SEPARATOR)
        .unwrap_or_else(|| panic!("no mount table in:\n{out}"));
    (lines(before), parse_mountinfo(mounts))
}

/// The mounts at `point`, in mount order (the last one is what the path shows).
fn mounts_at<'a>(mounts: &'a [MountEntry], point: &str) -> Vec<&'a MountEntry> {
    mounts.iter().filter(|m| m.point == point).collect()
}

// ---------------------------------------------------------------------------------------------
// Capabilities

/// PID 1's five sets: docker's default mask in the bounding, permitted, effective and
/// inheritable sets (ambient empty), changed by `--cap-add`/`--cap-drop` (ALL allowed; names
/// with or without `CAP_`, any case).
#[rstest]
#[case::default(&[], DOCKER_DEFAULT_MASK)]
#[case::cap_drop_all(&["--cap-drop", "ALL"], 0)]
#[case::cap_add_sys_admin(&["--cap-add", "SYS_ADMIN"], DOCKER_DEFAULT_MASK | 1 << 21)]
#[case::cap_add_prefixed_lowercase(&["--cap-add", "cap_sys_admin"], DOCKER_DEFAULT_MASK | 1 << 21)]
#[case::cap_drop_net_raw(&["--cap-drop", "NET_RAW"], DOCKER_DEFAULT_MASK & !(1 << 13))]
#[case::cap_drop_prefixed_mixed_case(&["--cap-drop", "Cap_Net_Raw"], DOCKER_DEFAULT_MASK & !(1 << 13))]
#[case::drop_all_then_add_kill(&["--cap-drop", "all", "--cap-add", "KILL"], 1 << 5)]
#[case::add_and_drop(&["--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN", "--cap-drop", "MKNOD"],
    (DOCKER_DEFAULT_MASK | 1 << 12) & !(1 | 1 << 27))]
fn pid1_capabilities(#[case] flags: &[&str], #[case] mask: u64) {
    let Some(ct) = fixture() else { return };
    assert_eq!(
        capability_mask(&conformance::security::DOCKER_DEFAULT_CAPABILITIES),
        DOCKER_DEFAULT_MASK
    );
    let mut args: Vec<&str> = vec!["--rm", "--network", "none"];
    args.extend_from_slice(flags);
    args.extend(["busybox", "cat", "/proc/1/status"]);
    let status = ct.run_ok(args);
    assert_caps(
        &cap_sets(&status),
        &CapSets::uniform(mask),
        &format!("PID 1 with {flags:?}"),
    );
    ct.finish();
}

/// `--privileged` and `--cap-add ALL` give every capability carton itself holds (this machine's
/// root lacks some, e.g. CAP_SYS_RESOURCE: compared with the test process's own sets).
#[rstest]
#[case::privileged(&["--privileged"])]
#[case::cap_add_all(&["--cap-add", "ALL"])]
fn all_capabilities_are_those_carton_holds(#[case] flags: &[&str]) {
    let Some(ct) = fixture() else { return };
    let mut args: Vec<&str> = vec!["--rm", "--network", "none"];
    args.extend_from_slice(flags);
    args.extend(["busybox", "cat", "/proc/1/status"]);
    let status = ct.run_ok(args);
    let expected = held_by_carton();
    assert!(
        expected.effective & DOCKER_DEFAULT_MASK == DOCKER_DEFAULT_MASK
            && expected.effective & 1 << 21 != 0,
        "the test process itself lacks default capabilities or SYS_ADMIN:\n{expected}"
    );
    assert_caps(
        &cap_sets(&status),
        &expected,
        &format!("PID 1 with {flags:?}"),
    );
    ct.finish();
}

/// A non-root user has no effective or permitted capabilities, but the same bounding set.
#[test]
fn non_root_user_has_no_effective_capabilities() {
    let Some(ct) = fixture() else { return };
    let status = ct.run_ok([
        "--rm",
        "--network",
        "none",
        "-u",
        "1000",
        "busybox",
        "cat",
        "/proc/1/status",
    ]);
    let sets = cap_sets(&status);
    assert_eq!(
        status_field(&status, "Uid")
            .as_deref()
            .map(|u| u.split_whitespace().next()),
        Some(Some("1000")),
        "{status}"
    );
    assert_eq!(sets.effective, 0, "CapEff of uid 1000:\n{sets}");
    assert_eq!(sets.permitted, 0, "CapPrm of uid 1000:\n{sets}");
    assert_eq!(sets.ambient, 0, "CapAmb of uid 1000:\n{sets}");
    assert_eq!(
        sets.bounding, DOCKER_DEFAULT_MASK,
        "CapBnd of uid 1000:\n{sets}"
    );
    ct.finish();
}

/// `ping` needs CAP_NET_RAW (a raw ICMP socket; a new network namespace allows no ICMP
/// datagram sockets): it works by default and fails with `--cap-drop NET_RAW`.
#[test]
fn cap_drop_net_raw_breaks_ping() {
    let Some(ct) = fixture() else { return };
    let script = "ping -c 1 -W 5 127.0.0.1";
    let works = run_sh(&ct, &[], script);
    assert!(
        works.status.success(),
        "ping in a default container must work (the control):\n{}",
        all_output(&works)
    );
    let dropped = run_sh(&ct, &["--cap-drop", "NET_RAW"], script);
    assert!(
        !dropped.status.success(),
        "ping worked without CAP_NET_RAW:\n{}",
        all_output(&dropped)
    );
    assert!(
        says_eperm(&all_output(&dropped)),
        "ping failed for another reason than a permission:\n{}",
        all_output(&dropped)
    );
    ct.finish();
}

/// `exec` processes get the container's capabilities and seccomp filter too.
#[rstest]
#[case::default(&[], DOCKER_DEFAULT_MASK, "2")]
#[case::cap_add_sys_admin(&["--cap-add", "SYS_ADMIN"], DOCKER_DEFAULT_MASK | 1 << 21, "2")]
#[case::cap_drop_all(&["--cap-drop", "ALL"], 0, "2")]
fn exec_gets_the_container_capabilities_and_filter(
    #[case] flags: &[&str],
    #[case] mask: u64,
    #[case] seccomp: &str,
) {
    let Some(ct) = fixture() else { return };
    idle(&ct, "box", flags);
    let status = exec_ok(&ct, &["box", "cat", "/proc/self/status"]);
    assert_caps(
        &cap_sets(&status),
        &CapSets::uniform(mask),
        &format!("exec in a container run with {flags:?}"),
    );
    assert_eq!(
        status_field(&status, "Seccomp").as_deref(),
        Some(seccomp),
        "{status}"
    );
    let user = exec_ok(&ct, &["-u", "1000", "box", "cat", "/proc/self/status"]);
    let sets = cap_sets(&user);
    assert_eq!(sets.effective, 0, "exec -u 1000:\n{sets}");
    assert_eq!(sets.bounding, mask, "exec -u 1000:\n{sets}");
    ct.finish();
}

#[test]
fn exec_in_a_privileged_container_is_unconfined() {
    let Some(ct) = fixture() else { return };
    idle(&ct, "box", &["--privileged"]);
    let status = exec_ok(&ct, &["box", "cat", "/proc/self/status"]);
    assert_caps(
        &cap_sets(&status),
        &held_by_carton(),
        "exec in a --privileged container",
    );
    assert_eq!(status_field(&status, "Seccomp").as_deref(), Some("0"));
    ct.finish();
}

// ---------------------------------------------------------------------------------------------
// seccomp

/// The filter mode of PID 1: 2 (filter) by default or with a profile file, 0 with
/// `--privileged` or `seccomp=unconfined`.
#[rstest]
#[case::default(&[], "2")]
#[case::privileged(&["--privileged"], "0")]
#[case::unconfined(&["--security-opt", "seccomp=unconfined"], "0")]
#[case::unconfined_colon(&["--security-opt", "seccomp:unconfined"], "0")]
fn seccomp_mode(#[case] flags: &[&str], #[case] mode: &str) {
    let Some(ct) = fixture() else { return };
    let mut args: Vec<&str> = vec!["--rm", "--network", "none"];
    args.extend_from_slice(flags);
    args.extend(["busybox", "cat", "/proc/1/status"]);
    let status = ct.run_ok(args);
    assert_eq!(
        status_field(&status, "Seccomp").as_deref(),
        Some(mode),
        "Seccomp of PID 1 with {flags:?}:\n{status}"
    );
    ct.finish();
}

/// One system call of the default profile's deny list, made by a [`SyscallProbe`]: the
/// default container gets `refused` (the filter's errno); the weakened run (`weakened` flags)
/// reaches the kernel, which answers one of `reached` (0 = success). The arguments are chosen
/// so that even a successful call is harmless: invalid sizes, NULL pointers, bad fds, keys in
/// a keyring that dies with the probe.
#[derive(Debug, Clone, Copy)]
enum Probe {
    Keyctl,
    AddKey,
    RequestKey,
    KexecLoad,
    InitModule,
    FinitModule,
    Bpf,
    PerfEventOpen,
    OpenByHandleAt,
    IoUringSetup,
    Clone3,
    CloneNewUts,
    UnshareUser,
    Setns,
    Mount,
    PersonalityNoRandomize,
    SocketVsock,
}

struct ProbeCase {
    probe: SyscallProbe,
    refused: i32,
    weakened: &'static [&'static str],
    reached: &'static [i32],
    /// Why the weakened answer may be ENOSYS (a kernel built without the feature), if it may.
    note: &'static str,
}

const UNCONFINED: &[&str] = &["--security-opt", "seccomp=unconfined"];
const PRIVILEGED: &[&str] = &["--privileged"];
const SYS_ADMIN: &[&str] = &["--cap-add", "SYS_ADMIN"];

fn probe_case(probe: Probe) -> ProbeCase {
    use Arg::{Int, Str};
    let case = |nr: u32,
                args: &[Arg],
                refused: i32,
                weakened: &'static [&'static str],
                reached: &'static [i32]| ProbeCase {
        probe: SyscallProbe::new(nr, args),
        refused,
        weakened,
        reached,
        note: "",
    };
    match probe {
        // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, create=0): needs no
        // capability, so only the filter stands in the way.
        Probe::Keyctl => case(
            250,
            &[Int(0), Int(-3), Int(0)],
            libc::EPERM,
            UNCONFINED,
            &[0],
        ),
        // add_key("user", …, KEY_SPEC_PROCESS_KEYRING): a key in a keyring of the probe itself.
        Probe::AddKey => case(
            248,
            &[
                Str("user"),
                Str("carton-conformance"),
                Str("x"),
                Int(1),
                Int(-2),
            ],
            libc::EPERM,
            UNCONFINED,
            &[0],
        ),
        // request_key without callout: ENOKEY, never an upcall.
        Probe::RequestKey => case(
            249,
            &[
                Str("user"),
                Str("carton-conformance-absent"),
                Int(0),
                Int(0),
            ],
            libc::EPERM,
            UNCONFINED,
            &[libc::ENOKEY],
        ),
        // kexec_load with 1000 segments: EINVAL right after the permission check.
        Probe::KexecLoad => ProbeCase {
            note: "kernel without kexec",
            ..case(
                246,
                &[Int(0), Int(1000), Int(0), Int(0)],
                libc::EPERM,
                PRIVILEGED,
                &[libc::EINVAL, libc::ENOSYS],
            )
        },
        // init_module(NULL, 0, ""): ENOEXEC (no ELF header) after the permission check.
        Probe::InitModule => ProbeCase {
            note: "kernel without module support",
            ..case(
                175,
                &[Int(0), Int(0), Str("")],
                libc::EPERM,
                PRIVILEGED,
                &[libc::ENOEXEC, libc::ENOSYS],
            )
        },
        Probe::FinitModule => ProbeCase {
            note: "kernel without module support",
            ..case(
                313,
                &[Int(-1), Str(""), Int(0)],
                libc::EPERM,
                PRIVILEGED,
                &[libc::EBADF, libc::ENOSYS],
            )
        },
        // bpf(BPF_MAP_CREATE, NULL, 0): a zeroed attribute, map type "unspec": EINVAL.
        Probe::Bpf => case(
            321,
            &[Int(0), Int(0), Int(0)],
            libc::EPERM,
            PRIVILEGED,
            &[libc::EINVAL],
        ),
        Probe::PerfEventOpen => case(
            298,
            &[Int(0), Int(0), Int(-1), Int(-1), Int(0)],
            libc::EPERM,
            PRIVILEGED,
            &[libc::EFAULT],
        ),
        Probe::OpenByHandleAt => case(
            304,
            &[Int(libc::AT_FDCWD as i64), Int(0), Int(0)],
            libc::EPERM,
            PRIVILEGED,
            &[libc::EFAULT],
        ),
        Probe::IoUringSetup => case(
            425,
            &[Int(1), Int(0)],
            libc::EPERM,
            UNCONFINED,
            &[libc::EFAULT],
        ),
        // clone3 hides its flags behind a pointer: ENOSYS (libc falls back to clone) unless
        // CAP_SYS_ADMIN; clone3(NULL, 0) is EINVAL once it reaches the kernel.
        Probe::Clone3 => case(
            435,
            &[Int(0), Int(0)],
            libc::ENOSYS,
            SYS_ADMIN,
            &[libc::EINVAL],
        ),
        // clone(CLONE_NEWUTS|SIGCHLD): the child exits at once, like its parent.
        Probe::CloneNewUts => case(
            56,
            &[
                Int(libc::CLONE_NEWUTS as i64 | libc::SIGCHLD as i64),
                Int(0),
                Int(0),
                Int(0),
                Int(0),
            ],
            libc::EPERM,
            SYS_ADMIN,
            &[0],
        ),
        // unshare(CLONE_NEWUSER) needs no capability: only the filter refuses it.
        Probe::UnshareUser => case(
            272,
            &[Int(libc::CLONE_NEWUSER as i64)],
            libc::EPERM,
            UNCONFINED,
            &[0],
        ),
        Probe::Setns => case(
            308,
            &[Int(-1), Int(0)],
            libc::EPERM,
            SYS_ADMIN,
            &[libc::EBADF],
        ),
        // mount("none", "/tmp", "tmpfs"): the container's own /tmp, in its own mount namespace.
        Probe::Mount => case(
            165,
            &[Str("none"), Str("/tmp"), Str("tmpfs"), Int(0), Int(0)],
            libc::EPERM,
            PRIVILEGED,
            &[0],
        ),
        // personality(ADDR_NO_RANDOMIZE) affects the probe only.
        Probe::PersonalityNoRandomize => {
            case(135, &[Int(0x0040000)], libc::EPERM, UNCONFINED, &[0])
        }
        Probe::SocketVsock => case(
            41,
            &[
                Int(libc::AF_VSOCK as i64),
                Int(libc::SOCK_STREAM as i64),
                Int(0),
            ],
            libc::EPERM,
            UNCONFINED,
            &[0, libc::EAFNOSUPPORT, libc::ENODEV],
        ),
    }
}

/// Runs the probe programs of `dir` (mounted at /probe) in one container; returns name → exit
/// code as the container's shell saw it.
#[track_caller]
fn run_probes(ct: &Carton, dir: &Path, flags: &[&str]) -> std::collections::BTreeMap<String, i32> {
    let volume = format!("{}:/probe:ro", dir.display());
    let mut all: Vec<&str> = vec!["-v", &volume];
    all.extend_from_slice(flags);
    let out = run_sh_ok(
        ct,
        &all,
        "for p in /probe/*; do \"$p\"; echo \"${p#/probe/}=$?\"; done",
    );
    lines(&out)
        .iter()
        .filter_map(|l| {
            let (name, code) = l.split_once('=')?;
            Some((name.to_string(), code.parse().ok()?))
        })
        .collect()
}

fn errno_name(code: i32) -> String {
    if code == 0 {
        return "success".into();
    }
    format!("{} ({code})", std::io::Error::from_raw_os_error(code))
}

/// A denied system call fails with the filter's errno in a default container and reaches the
/// kernel in the weakened one. Controls in the same container prove the probe itself works:
/// getpid succeeds, personality(0xffffffff) (a query) and chroot("/") (CAP_SYS_CHROOT is a
/// default capability) are allowed.
#[rstest]
#[case::keyctl(Probe::Keyctl)]
#[case::add_key(Probe::AddKey)]
#[case::request_key(Probe::RequestKey)]
#[case::kexec_load(Probe::KexecLoad)]
#[case::init_module(Probe::InitModule)]
#[case::finit_module(Probe::FinitModule)]
#[case::bpf(Probe::Bpf)]
#[case::perf_event_open(Probe::PerfEventOpen)]
#[case::open_by_handle_at(Probe::OpenByHandleAt)]
#[case::io_uring_setup(Probe::IoUringSetup)]
#[case::clone3(Probe::Clone3)]
#[case::clone_with_namespace_flag(Probe::CloneNewUts)]
#[case::unshare_user_namespace(Probe::UnshareUser)]
#[case::setns(Probe::Setns)]
#[case::mount(Probe::Mount)]
#[case::personality(Probe::PersonalityNoRandomize)]
#[case::socket_vsock(Probe::SocketVsock)]
fn seccomp_refuses_what_the_weakened_run_reaches(#[case] probe: Probe) {
    if !probes_supported() {
        skip("syscall probes are x86-64 programs");
        return;
    }
    if matches!(probe, Probe::IoUringSetup)
        && std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .is_ok_and(|v| v.trim() != "0")
    {
        not_applicable(
            "io_uring is disabled on this host (kernel.io_uring_disabled): nothing to reach",
        );
        return;
    }
    if matches!(probe, Probe::SocketVsock) && Path::new("/proc/modules").exists() {
        // The weakened run could make the host autoload the vsock modules.
        not_applicable(
            "this kernel loads modules on demand: socket(AF_VSOCK) might load one on the host",
        );
        return;
    }
    let Some(ct) = fixture() else { return };
    let case = probe_case(probe);
    let dir = ct.path("probes");
    std::fs::create_dir(&dir).unwrap();
    case.probe.write(&dir.join("attack"));
    SyscallProbe::new(39, &[]).write(&dir.join("control-getpid"));
    SyscallProbe::new(135, &[Arg::Int(0xffff_ffff)]).write(&dir.join("control-personality"));
    SyscallProbe::new(161, &[Arg::Str("/")]).write(&dir.join("control-chroot"));

    let weakened = run_probes(&ct, &dir, case.weakened);
    let reached = weakened["attack"];
    assert!(
        case.reached.contains(&reached),
        "{probe:?} with {:?} (the weakened run) answered {}, expected one of {:?}: the probe \
         does not reach the kernel, so the default run would prove nothing",
        case.weakened,
        errno_name(reached),
        case.reached
            .iter()
            .map(|c| errno_name(*c))
            .collect::<Vec<_>>()
    );
    if reached == libc::ENOSYS {
        eprintln!(
            "NOTE: {probe:?} reaches the kernel only as ENOSYS here ({}): the default run \
             still proves that the filter answers before the kernel",
            case.note
        );
    }

    let default = run_probes(&ct, &dir, &[]);
    for control in ["control-getpid", "control-personality", "control-chroot"] {
        assert_eq!(
            default.get(control),
            Some(&0),
            "{control} must succeed in a default container: {default:?}"
        );
    }
    assert_eq!(
        default["attack"],
        case.refused,
        "{probe:?} in a default container answered {}, expected {} from the filter",
        errno_name(default["attack"]),
        errno_name(case.refused)
    );
    ct.finish();
}

/// The same attacks as a user types them, with busybox.
#[rstest]
#[case::mount_tmpfs("mkdir -p /mnt/x && mount -t tmpfs none /mnt/x && echo attack-worked",
    &["--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined"])]
#[case::mount_tmpfs_privileged("mkdir -p /mnt/x && mount -t tmpfs none /mnt/x && echo attack-worked",
    &["--privileged"])]
#[case::unshare_user("unshare -U true && echo attack-worked", &["--security-opt", "seccomp=unconfined"])]
#[case::unshare_net("unshare -n true && echo attack-worked", &["--cap-add", "SYS_ADMIN"])]
#[case::nsenter("nsenter -t 1 -n true && echo attack-worked", &["--cap-add", "SYS_ADMIN"])]
fn busybox_attack_fails_by_default(#[case] script: &str, #[case] weakened: &[&str]) {
    let Some(ct) = fixture() else { return };
    let out = run_sh(&ct, weakened, script);
    assert!(
        text(&out.stdout).contains("attack-worked"),
        "the attack does not even work with {weakened:?} ({}):\n{}",
        out.status,
        all_output(&out)
    );
    let out = run_sh(&ct, &[], script);
    assert!(
        !text(&out.stdout).contains("attack-worked") && !out.status.success(),
        "`{script}` worked in a default container:\n{}",
        all_output(&out)
    );
    assert!(
        says_eperm(&all_output(&out)),
        "`{script}` failed for another reason than EPERM:\n{}",
        all_output(&out)
    );
    ct.finish();
}

/// A profile file in docker's format: the rule denying mkdir applies (errnoRet honoured); the
/// default profile and `seccomp=unconfined` allow it.
#[test]
fn profile_file_denies_mkdir() {
    let Some(ct) = fixture() else { return };
    let profile = ct.path("deny-mkdir.json");
    std::fs::write(
        &profile,
        r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "architectures": ["SCMP_ARCH_X86_64"],
  "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
  ]
}"#,
    )
    .unwrap();
    let script = "mkdir /made && echo made";
    assert!(run_sh_ok(&ct, &[], script).contains("made"));
    assert!(run_sh_ok(&ct, UNCONFINED, script).contains("made"));
    let opt = format!("seccomp={}", profile.display());
    let out = run_sh(&ct, &["--security-opt", &opt], script);
    assert!(
        !out.status.success() && all_output(&out).contains("Operation not permitted"),
        "mkdir under a profile denying it ({}):\n{}",
        out.status,
        all_output(&out)
    );
    let status = run_sh_ok(&ct, &["--security-opt", &opt], "cat /proc/1/status");
    assert_eq!(status_field(&status, "Seccomp").as_deref(), Some("2"));
    ct.finish();
}

/// docker's `includes`/`excludes` conditions: a rule excluded for CAP_SYS_ADMIN, a rule only
/// for CAP_SYS_ADMIN, a rule for another architecture (never applied here), and `errnoRet`.
#[test]
fn profile_file_conditions_follow_capabilities_and_architecture() {
    let Some(ct) = fixture() else { return };
    let profile = ct.path("conditional.json");
    std::fs::write(
        &profile,
        r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
     "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
    {"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
     "includes": {"caps": ["CAP_SYS_ADMIN"]}},
    {"names": ["rmdir", "unlinkat"], "action": "SCMP_ACT_ERRNO",
     "includes": {"arches": ["arm64"]}}
  ]
}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let script = "mkdir /d 2>&1 && echo mkdir-ok; chmod 700 /tmp 2>&1 && echo chmod-ok; \
                  rmdir /home 2>&1 && echo rmdir-ok; true";
    let plain = run_sh_ok(&ct, &["--security-opt", &opt], script);
    assert!(
        plain.contains("Permission denied") && !plain.contains("mkdir-ok"),
        "mkdir without CAP_SYS_ADMIN must fail with EACCES (errnoRet 13):\n{plain}"
    );
    assert!(
        plain.contains("chmod-ok"),
        "chmod without CAP_SYS_ADMIN:\n{plain}"
    );
    assert!(
        plain.contains("rmdir-ok"),
        "an arm64-only rule applied:\n{plain}"
    );
    let admin = run_sh_ok(
        &ct,
        &["--security-opt", &opt, "--cap-add", "SYS_ADMIN"],
        script,
    );
    assert!(
        admin.contains("mkdir-ok"),
        "mkdir with CAP_SYS_ADMIN:\n{admin}"
    );
    assert!(
        !admin.contains("chmod-ok") && admin.contains("Operation not permitted"),
        "chmod with CAP_SYS_ADMIN must hit the included rule:\n{admin}"
    );
    ct.finish();
}

/// `--security-opt no-new-privileges[=true|false]` (also docker's `:` spelling).
#[rstest]
#[case::default(&[], "0")]
#[case::flag(&["--security-opt", "no-new-privileges"], "1")]
#[case::true_(&["--security-opt", "no-new-privileges=true"], "1")]
#[case::colon_true(&["--security-opt", "no-new-privileges:true"], "1")]
#[case::false_(&["--security-opt", "no-new-privileges=false"], "0")]
fn no_new_privileges(#[case] flags: &[&str], #[case] value: &str) {
    let Some(ct) = fixture() else { return };
    let mut args: Vec<&str> = vec!["--rm", "--network", "none"];
    args.extend_from_slice(flags);
    args.extend(["busybox", "cat", "/proc/1/status"]);
    let status = ct.run_ok(args);
    assert_eq!(
        status_field(&status, "NoNewPrivs").as_deref(),
        Some(value),
        "{flags:?}:\n{status}"
    );
    ct.finish();
}

// ---------------------------------------------------------------------------------------------
// Masked and read-only paths

/// How much of `path` the host shows (bytes of a file, up to 64; entries of a directory), or
/// why it cannot be used as evidence.
fn host_content(path: &str) -> Result<usize, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{path} on the host: {e}"))?;
    let amount = if meta.is_dir() {
        std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
    } else {
        use std::io::Read;
        let mut buf = [0u8; 64];
        std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut buf))
            .map_err(|e| format!("read {path} on the host: {e}"))?
    };
    if amount == 0 {
        return Err(format!("{path} is empty on the host"));
    }
    Ok(amount)
}

/// A masked path shows nothing by default (an empty file or directory), and the real content
/// with `--privileged`. Which of these paths exist depends on the kernel's configuration (a
/// minimal kernel has no /proc/kcore, /proc/acpi, /proc/sysrq-trigger…): for a path this host
/// lacks, what remains to prove is that the container still starts and shows nothing there.
#[rstest]
#[case::proc_kcore("/proc/kcore")]
#[case::proc_keys("/proc/keys")]
#[case::proc_timer_list("/proc/timer_list")]
#[case::proc_sched_debug("/proc/sched_debug")]
#[case::proc_interrupts("/proc/interrupts")]
#[case::proc_latency_stats("/proc/latency_stats")]
#[case::proc_timer_stats("/proc/timer_stats")]
#[case::proc_scsi("/proc/scsi")]
#[case::proc_acpi("/proc/acpi")]
#[case::proc_asound("/proc/asound")]
#[case::sys_firmware("/sys/firmware")]
#[case::sys_powercap("/sys/devices/virtual/powercap")]
fn masked_path_is_empty_by_default(#[case] path: &str) {
    let Some(ct) = fixture() else { return };
    // An absent path counts as empty: 0 entries / 0 bytes.
    let script = format!(
        "if [ -d {path} ]; then ls -A {path} | wc -l; \
         elif [ -e {path} ]; then head -c 64 {path} | wc -c; else echo 0; fi"
    );
    let amount = |flags: &[&str]| -> usize {
        let out = run_sh_ok(&ct, flags, &script);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("unexpected output {out:?}"))
    };
    if let Err(why) = host_content(path) {
        eprintln!("NOTE: {why}: only checked that a default container starts and shows nothing");
        assert_eq!(
            amount(&[]),
            0,
            "{path} shows content in a default container"
        );
        ct.finish();
        return;
    }
    let privileged = amount(&["--privileged"]);
    assert!(
        privileged > 0,
        "{path} is empty even with --privileged: the weakened run shows nothing"
    );
    assert_eq!(
        amount(&[]),
        0,
        "{path} shows content in a default container"
    );
    ct.finish();
}

/// A write to /proc/sys fails by default (read-only) and works with `--privileged` — shown
/// with the container's own hostname (a UTS-namespaced sysctl: the host's is untouched).
#[test]
fn proc_sys_is_read_only() {
    let Some(ct) = fixture() else { return };
    let host_name = host::hostname();
    let script = "echo written-by-test > /proc/sys/kernel/hostname && echo write-ok; hostname";
    let privileged = run_sh_ok(&ct, &["--privileged", "--hostname", "before"], script);
    assert_eq!(
        lines(&privileged),
        ["write-ok", "written-by-test"],
        "the weakened run cannot write /proc/sys"
    );
    let out = run_sh(&ct, &["--hostname", "before"], script);
    let all = all_output(&out);
    assert!(
        !all.contains("write-ok") && all.contains("Read-only file system"),
        "/proc/sys/kernel/hostname was writable (or failed oddly) in a default container:\n{all}"
    );
    assert!(text(&out.stdout).contains("before"), "{all}");
    assert_eq!(host::hostname(), host_name, "the host's hostname changed");
    ct.finish();
}

/// Host-global files under /proc (never written): opened read-write by `--privileged`, refused
/// with EROFS by default. /proc/sysrq-trigger is only opened, never written to.
#[rstest]
#[case::core_pattern("/proc/sys/kernel/core_pattern")]
#[case::sysrq_trigger("/proc/sysrq-trigger")]
#[case::irq_affinity("/proc/irq/default_smp_affinity")]
fn host_proc_file_cannot_be_opened_for_writing(#[case] path: &str) {
    let Some(ct) = fixture() else { return };
    // `>>` opens O_WRONLY|O_APPEND: for writing, without truncating, and without needing read
    // permission (/proc/sysrq-trigger is 0200); nothing is ever written. `true` is a regular
    // builtin, so a failed redirection does not end the shell.
    let script = format!("true 3>>{path} && echo open-ok; true");
    if !Path::new(path).exists() {
        // A kernel built without it (no CONFIG_MAGIC_SYSRQ…): proc refuses to create it, and
        // the container must still start.
        eprintln!("NOTE: {path} does not exist on this host: only the default run is checked");
        let said = run_sh_ok(&ct, &[], &script);
        assert!(
            !said.contains("open-ok"),
            "{path} opened in a default container"
        );
        ct.finish();
        return;
    }
    let privileged = run_sh_ok(&ct, &["--privileged"], &script);
    assert!(
        privileged.contains("open-ok"),
        "--privileged cannot open {path} for writing: the weakened run proves nothing"
    );
    let out = run_sh(&ct, &[], &script);
    let all = all_output(&out);
    assert!(
        !all.contains("open-ok") && all.contains("Read-only file system"),
        "{path} opened for writing (or failed oddly) in a default container:\n{all}"
    );
    ct.finish();
}

/// Mount points of the read-only paths: a read-only mount by default, none with --privileged.
#[rstest]
#[case::proc_sys("/proc/sys")]
#[case::proc_irq("/proc/irq")]
#[case::proc_bus("/proc/bus")]
#[case::proc_fs("/proc/fs")]
#[case::proc_sysrq_trigger("/proc/sysrq-trigger")]
fn read_only_path_is_a_read_only_mount(#[case] path: &str) {
    let Some(ct) = fixture() else { return };
    if !Path::new(path).exists() {
        // Nothing to protect: the container starts and nothing is mounted there.
        eprintln!("NOTE: {path} does not exist on this host: only the default run is checked");
        let (_, default) = run_with_mounts(&ct, &[], "true");
        assert!(
            mounts_at(&default, path).is_empty(),
            "a mount at the absent {path}"
        );
        ct.finish();
        return;
    }
    let (_, privileged) = run_with_mounts(&ct, &["--privileged"], "true");
    let privileged = mounts_at(&privileged, path);
    assert!(
        privileged.iter().all(|m| !m.has("ro")),
        "{path} is read-only even with --privileged: {privileged:?}"
    );
    let (_, default) = run_with_mounts(&ct, &[], "true");
    let default = mounts_at(&default, path);
    assert!(
        default.last().is_some_and(|m| m.has("ro")),
        "{path} is not a read-only mount in a default container: {default:?}"
    );
    ct.finish();
}

/// /sys is mounted read-only by default and read-write with --privileged (mount options; plus
/// an open for writing of the container's own `lo` attribute, never written).
#[test]
fn sys_is_read_only_by_default() {
    let Some(ct) = fixture() else { return };
    let script = "true 3<>/sys/class/net/lo/tx_queue_len && echo open-ok; true";
    let (said, mounts) = run_with_mounts(&ct, &["--privileged"], script);
    let sys = mounts_at(&mounts, "/sys");
    assert!(
        sys.last().is_some_and(|m| m.has("rw")),
        "/sys with --privileged: {sys:?}"
    );
    assert_eq!(
        said,
        ["open-ok"],
        "the weakened run cannot open a /sys file for writing"
    );
    let (said, mounts) = run_with_mounts(&ct, &[], script);
    let sys = mounts_at(&mounts, "/sys");
    assert!(
        sys.last().is_some_and(|m| m.has("ro")),
        "/sys is not read-only by default: {sys:?}"
    );
    assert!(
        said.is_empty(),
        "a /sys file opened for writing by default: {said:?}"
    );
    let out = run_sh(&ct, &[], script);
    assert!(
        all_output(&out).contains("Read-only file system"),
        "{}",
        all_output(&out)
    );
    ct.finish();
}

/// The mount options (`-o`) of the hierarchy holding the pids controller (v1), or `None`
/// for v2, from the host's mountinfo.
fn v1_hierarchy_options(controller: &str) -> Option<String> {
    let info = host::mountinfo();
    info.lines().find_map(|line| {
        let (_, right) = line.split_once(" - ")?;
        let mut parts = right.split(' ');
        if parts.next()? != "cgroup" {
            return None;
        }
        let opts = parts.nth(1)?;
        let list: Vec<&str> = opts
            .split(',')
            .filter(|o| *o != "rw" && *o != "ro")
            .collect();
        list.contains(&controller).then(|| list.join(","))
    })
}

/// The host's cgroup files cannot be written from inside: the container's /sys/fs/cgroup is
/// read-only and mounting the hierarchy is refused. The weakened run (--privileged) mounts the
/// hierarchy and opens the host's root `cgroup.procs` for writing — without writing.
#[test]
fn host_cgroup_files_are_not_writable() {
    let Some(version) = cgroup::version() else {
        skip("no cgroups on this host");
        return;
    };
    if !cgroup::controller_or_skip("pids") {
        return;
    }
    let mount = match version {
        Version::V1 => match v1_hierarchy_options("pids") {
            Some(opts) => format!("mount -t cgroup -o {opts} cgroup /tmp/cg"),
            None => {
                skip("pids hierarchy not found in mountinfo");
                return;
            }
        },
        Version::V2 => "mount -t cgroup2 cgroup2 /tmp/cg".to_string(),
    };
    let Some(ct) = fixture() else { return };
    let own = cgroup::container_path(cgroup::PIDS_MAX).expect("cgroup layout");
    let script = format!(
        "true 3<>{own} && echo own-open-ok; mkdir -p /tmp/cg; {mount} && echo mount-ok && \
         true 3<>/tmp/cg/cgroup.procs && echo host-open-ok; true"
    );
    let privileged = run_sh_ok(&ct, &["--privileged"], &script);
    assert!(
        privileged.contains("host-open-ok"),
        "the weakened run cannot reach the host's cgroup files:\n{privileged}"
    );
    let out = run_sh(&ct, &[], &script);
    let all = all_output(&out);
    assert!(
        !all.contains("own-open-ok") && all.contains("Read-only file system"),
        "{own} opened for writing in a default container:\n{all}"
    );
    assert!(
        !all.contains("mount-ok") && !all.contains("host-open-ok"),
        "a default container mounted the cgroup hierarchy:\n{all}"
    );
    ct.finish();
}

// ---------------------------------------------------------------------------------------------
// Devices

fn pick_block_device() -> Option<BlockDevice> {
    let devices = readable_block_devices();
    let dev = devices.first().cloned();
    match &dev {
        Some(d) => eprintln!(
            "using /dev/{} ({}:{}){} — the host's root disk is used when this host lets its \
             root open it",
            d.name,
            d.major,
            d.minor,
            if d.is_root_disk {
                ", the root disk"
            } else {
                ""
            }
        ),
        None => skip("no block device this host lets its root open for reading"),
    }
    dev
}

/// A disk device is out of reach of a default container, by the device allow-list (devices
/// cgroup on v1, an eBPF program on v2): `mknod` of it is refused (CAP_MKNOD alone is not
/// enough), and a node made on the host and handed in through a volume cannot be opened. The
/// weakened run (--privileged) makes the node, opens it and reads one byte.
#[test]
fn disk_device_node_cannot_be_made_or_opened_by_default() {
    let Some(dev) = pick_block_device() else {
        return;
    };
    let Some(ct) = fixture() else { return };
    let script = format!(
        "mknod /tmp/disk b {} {} && echo mknod-ok; \
         if true 3</tmp/disk; then echo open-ok; head -c 1 /tmp/disk | wc -c; fi; true",
        dev.major, dev.minor
    );
    let privileged = run_sh_ok(&ct, &["--privileged"], &script);
    assert!(
        privileged.contains("mknod-ok") && privileged.contains("open-ok"),
        "--privileged cannot make and open the device: the weakened run proves nothing\n{privileged}"
    );
    let out = run_sh(&ct, &[], &script);
    let all = all_output(&out);
    assert!(
        !all.contains("mknod-ok") && all.contains("Operation not permitted"),
        "a default container made a node of the host's block device {}:{} (/dev/{}):\n{all}",
        dev.major,
        dev.minor,
        dev.name
    );

    // A node the container did not have to make (from the host, through a volume).
    let dir = ct.path("devices");
    std::fs::create_dir(&dir).unwrap();
    let node = dir.join("disk");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(dev.major, dev.minor),
    )
    .unwrap();
    let volume = format!("{}:/devices", dir.display());
    let out = run_sh(
        &ct,
        &["-v", &volume],
        "if true 3</devices/disk; then echo open-ok; fi; true",
    );
    let all = all_output(&out);
    // EPERM from the allow-list; EACCES where the volume's filesystem is mounted nodev (the
    // VM guests' tmpfs), which refuses first.
    assert!(
        !all.contains("open-ok")
            && (all.contains("Operation not permitted") || all.contains("Permission denied")),
        "a default container opened the host's block device through a volume:\n{all}"
    );
    ct.finish();
}

/// `--privileged` gives the host's devices (with their numbers); a default container has none
/// of them.
#[test]
fn privileged_gets_the_host_devices() {
    let Some(dev) = pick_block_device() else {
        return;
    };
    let Some(ct) = fixture() else { return };
    let script = format!(
        "if [ -b /dev/{0} ]; then stat -c '%t:%T' /dev/{0}; else echo absent; fi",
        dev.name
    );
    let expected = format!("{:x}:{:x}", dev.major, dev.minor);
    assert_eq!(run_sh_ok(&ct, &["--privileged"], &script).trim(), expected);
    assert_eq!(run_sh_ok(&ct, &[], &script).trim(), "absent");
    ct.finish();
}

/// `--device /dev/null:/dev/mynull` creates a working node at the new path.
#[test]
fn device_flag_creates_a_working_node() {
    let Some(ct) = fixture() else { return };
    let script = "if [ -c /dev/mynull ]; then stat -c '%t:%T' /dev/mynull; \
                  echo data > /dev/mynull && echo write-ok; head -c 8 /dev/mynull | wc -c; \
                  else echo absent; fi";
    assert_eq!(run_sh_ok(&ct, &[], script).trim(), "absent");
    let out = run_sh_ok(&ct, &["--device", "/dev/null:/dev/mynull"], script);
    assert_eq!(lines(&out), ["1:3", "write-ok", "0"]);
    ct.finish();
}

/// A device given with `--device HOST:CTR:r` is usable for reading: the allow-list lets
/// exactly that device through.
#[test]
fn device_flag_makes_a_block_device_readable() {
    let Some(dev) = pick_block_device() else {
        return;
    };
    let Some(ct) = fixture() else { return };
    let spec = format!("/dev/{}:/dev/xdisk:r", dev.name);
    let out = run_sh_ok(
        &ct,
        &["--device", &spec],
        "[ -b /dev/xdisk ] && echo node-ok; true 3</dev/xdisk && echo open-ok; true",
    );
    assert_eq!(lines(&out), ["node-ok", "open-ok"]);
    ct.finish();
}

// ---------------------------------------------------------------------------------------------
// Path safety: symlinks in the image

/// Where an image's symlink points.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// A fixed path (`/`, `/tmp`, `../../..`…).
    Fixed(&'static str),
    /// The absolute path of a directory that exists on the host (in the scratch dir), not in
    /// the image.
    HostOnlyAbsolute,
    /// The same, reached by climbing with `..` from the symlink.
    HostOnlyRelative,
}

impl Target {
    fn host_only(self) -> bool {
        !matches!(self, Target::Fixed(_))
    }

    /// (symlink text, the path it means inside the container)
    fn resolve(self, outside: &Path) -> (String, String) {
        let abs = outside.display().to_string();
        match self {
            Target::Fixed(t) => {
                let inside = if t.starts_with('/') {
                    t.to_string()
                } else {
                    // `..` above / stays at /.
                    format!(
                        "/{}",
                        t.split('/')
                            .filter(|c| !c.is_empty() && *c != "..")
                            .collect::<Vec<_>>()
                            .join("/")
                    )
                };
                (t.to_string(), inside)
            }
            Target::HostOnlyAbsolute => (abs.clone(), abs),
            Target::HostOnlyRelative => (format!("../../../../../..{abs}"), abs),
        }
    }
}

/// An image `hostile` = busybox with top-level `name` replaced by a symlink to `link`.
#[track_caller]
fn import_hostile(ct: &Carton, name: &str, link: &str) {
    let tar = ct.path(&format!("hostile-{name}.tar"));
    busybox_with_symlink(ct.busybox_tar(), &tar, name, link)
        .unwrap_or_else(|e| panic!("build the hostile image: {e}"));
    let out = ct.cmd().arg("import").arg(&tar).arg("hostile").output();
    assert!(
        out.status.success(),
        "import of the image with {name} -> {link} failed:\n{}",
        all_output(&out)
    );
}

/// The host's side of a path-safety scenario: `/` and the host-only target directory.
struct HostWatch {
    root_names: BTreeSet<std::ffi::OsString>,
    outside: PathBuf,
}

impl HostWatch {
    fn new(ct: &Carton) -> HostWatch {
        let outside = ct.path("outside");
        std::fs::create_dir(&outside).unwrap();
        HostWatch {
            root_names: host_root_names(),
            outside,
        }
    }

    #[track_caller]
    fn assert_untouched(&self, what: &str) {
        let now = host_root_names();
        let added: Vec<_> = now.difference(&self.root_names).collect();
        assert!(added.is_empty(), "{what}: the host's / gained {added:?}");
        let inside: Vec<_> = std::fs::read_dir(&self.outside)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            inside.is_empty(),
            "{what}: the host directory {} gained {inside:?}",
            self.outside.display()
        );
    }
}

/// For a target that does not exist in the image, refusing the mount is allowed too (the
/// issue allows "a walk that refuses symlinks pointing out"; docker would create the directory
/// inside the rootfs instead): exit 125 and a message naming the mount. True when refused.
#[track_caller]
fn refused_clearly(out: &Output, target: Target, mount: &str, link: &str) -> bool {
    if out.status.success() || !target.host_only() {
        return false;
    }
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(EXIT_CARTON_ERROR),
        "{mount} -> {link}: carton failed without a clear refusal:\n{}",
        all_output(out)
    );
    assert!(
        stderr.contains(mount) && stderr.contains("carton: "),
        "{mount} -> {link}: the refusal does not name {mount}: {stderr:?}"
    );
    eprintln!(
        "NOTE: carton refuses {mount} -> {link} (a target missing from the image) rather than \
         creating it inside the rootfs as docker does: {}",
        stderr.trim()
    );
    true
}

/// The outcome of a run whose mount target is an image symlink: false when carton refused it
/// clearly (allowed for a target only the host has, see [`refused_clearly`]); otherwise the
/// run must have succeeded (the host being untouched was checked before).
#[track_caller]
fn landed(out: &Output, target: Target, mount: &str, link: &str) -> bool {
    if refused_clearly(out, target, mount, link) {
        return false;
    }
    assert!(
        out.status.success(),
        "the host is untouched, but carton failed with {mount} -> {link}:\n{}",
        all_output(out)
    );
    true
}

/// `/data -> /` (or `../../..`) as a `-v` target: the volume lands on the container's own
/// root — it then *is* the container's `/` — and the host's `/` is untouched. The volume holds
/// a busybox to look around with.
#[rstest]
#[case::absolute("/")]
#[case::climbing("../../..")]
fn volume_on_symlink_to_root_stays_in_the_container(#[case] link: &str) {
    let Some(ct) = fixture() else { return };
    let watch = HostWatch::new(&ct);
    import_hostile(&ct, "data", link);
    let vol = ct.path("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::copy(ct.busybox(), vol.join("busybox")).unwrap();
    std::fs::write(vol.join("volume-marker"), "from the volume\n").unwrap();
    let before = Snapshot::of(&vol);
    let volume = format!("{}:/data", vol.display());
    let out = ct
        .run([
            "--rm",
            "--network",
            "none",
            "-v",
            &volume,
            "hostile",
            "/busybox",
            "ls",
            "-a",
            "/",
        ])
        .output();
    watch.assert_untouched(&format!("-v …:/data with /data -> {link}"));
    before.assert_unchanged(&Snapshot::of(&vol), "the volume's own content");
    assert!(
        out.status.success(),
        "carton run with /data -> {link} failed:\n{}",
        all_output(&out)
    );
    let names = lines(&text(&out.stdout));
    assert!(
        names.iter().any(|n| n == "volume-marker") && !names.iter().any(|n| n == "etc"),
        "the volume is not the container's / (the resolved target of /data -> {link}): {names:?}"
    );
    ct.finish();
}

/// `/data -> X` as a `-v` target: the bind lands at X *inside* the rootfs, visible through
/// `/data` and at X; nothing appears on the host. When X exists only on the host, carton may
/// create it inside the rootfs (docker) or refuse clearly (see [`refused_clearly`]).
#[rstest]
#[case::absolute_in_image(Target::Fixed("/tmp"))]
#[case::climbing_in_image(Target::Fixed("../../../../../../tmp"))]
#[case::absolute_host_only(Target::HostOnlyAbsolute)]
#[case::climbing_host_only(Target::HostOnlyRelative)]
fn volume_on_symlink_lands_in_the_rootfs(#[case] target: Target) {
    let Some(ct) = fixture() else { return };
    let watch = HostWatch::new(&ct);
    let (link, inside) = target.resolve(&watch.outside);
    import_hostile(&ct, "data", &link);
    let vol = ct.path("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("volume-marker"), "from the volume\n").unwrap();
    let volume = format!("{}:/data", vol.display());
    let host_tmp_marker = Path::new("/tmp/volume-marker").exists();
    let script = format!(
        "cat /data/volume-marker; cat {inside}/volume-marker; \
         awk '$5 == \"{inside}\" {{ print \"mounted\" }}' /proc/self/mountinfo"
    );
    let mut args: Vec<&str> = vec!["--rm", "--network", "none", "-v", &volume];
    args.extend(["hostile", "sh", "-c", &script]);
    let out = ct.run(args).output();
    watch.assert_untouched(&format!("-v …:/data with /data -> {link}"));
    assert_eq!(
        Path::new("/tmp/volume-marker").exists(),
        host_tmp_marker,
        "the volume appeared in the host's /tmp"
    );
    if !landed(&out, target, "/data", &link) {
        ct.finish();
        return;
    }
    assert_eq!(
        lines(&text(&out.stdout)),
        ["from the volume", "from the volume", "mounted"],
        "the volume is not at {inside} inside the container"
    );
    ct.finish();
}

/// Shell function: `fstype_at PATH` prints the filesystem type of the first mount at PATH
/// (the field after the ` - ` separator of mountinfo).
const FSTYPE_FN: &str = "fstype_at() { awk -v p=\"$1\" '$5 == p { for (i = 7; i <= NF; i++) \
                         if ($i == \"-\") { print $(i + 1); exit } }' /proc/self/mountinfo; };";

/// `/proc` or `/dev` of the image is a symlink pointing outside: the mount lands inside the
/// rootfs (at the in-root meaning of the target), works, keeps its masking, and the host is
/// untouched. A target only the host has may also be refused clearly (see [`refused_clearly`]).
#[rstest]
#[case::proc_absolute("proc", Target::Fixed("/tmp"))]
#[case::proc_climbing("proc", Target::Fixed("../../../../../../tmp"))]
#[case::proc_host_only_absolute("proc", Target::HostOnlyAbsolute)]
#[case::proc_host_only_climbing("proc", Target::HostOnlyRelative)]
#[case::dev_absolute("dev", Target::Fixed("/tmp"))]
#[case::dev_climbing("dev", Target::Fixed("../../../../../../tmp"))]
#[case::dev_host_only_absolute("dev", Target::HostOnlyAbsolute)]
#[case::dev_host_only_climbing("dev", Target::HostOnlyRelative)]
#[case::sys_absolute("sys", Target::Fixed("/tmp"))]
#[case::sys_host_only_absolute("sys", Target::HostOnlyAbsolute)]
#[case::sys_host_only_climbing("sys", Target::HostOnlyRelative)]
fn special_mount_on_symlink_lands_in_the_rootfs(#[case] name: &str, #[case] target: Target) {
    let Some(ct) = fixture() else { return };
    let watch = HostWatch::new(&ct);
    let (link, inside) = target.resolve(&watch.outside);
    import_hostile(&ct, name, &link);
    let check = if name == "proc" {
        // procfs at the target; /proc/keys still masked; /proc/sys still read-only.
        format!(
            "fstype_at \"{inside}\"; \
             read c < /proc/1/comm; echo comm=$c; \
             if [ -e /proc/keys ]; then echo keys=$(head -c 64 /proc/keys | wc -c); else echo keys=0; fi; \
             true 3<>/proc/sys/kernel/hostname 2>/dev/null && echo sys-writable; true"
        )
    } else if name == "sys" {
        // sysfs at the target, read-only as in every default container.
        format!(
            "fstype_at \"{inside}\"; \
             [ -d /sys/class/net ] && echo net-class; \
             mkdir /sys/kernel/carton-probe 2>/dev/null && echo sys-writable; true"
        )
    } else {
        format!(
            "fstype_at \"{inside}\"; \
             [ -c /dev/null ] && echo x > /dev/null && echo null-ok; \
             [ -c /dev/zero ] && echo zero=$(head -c 3 /dev/zero | wc -c)"
        )
    };
    let check = format!("{FSTYPE_FN} {check}");
    let out = ct
        .run(["--rm", "--network", "none", "hostile", "sh", "-c", &check])
        .output();
    watch.assert_untouched(&format!("/{name} -> {link}"));
    if !landed(&out, target, &format!("/{name}"), &link) {
        ct.finish();
        return;
    }
    let got = lines(&text(&out.stdout));
    let expected: Vec<String> = if name == "proc" {
        vec!["proc".into(), "comm=sh".into(), "keys=0".into()]
    } else if name == "sys" {
        vec!["sysfs".into(), "net-class".into()]
    } else {
        vec!["tmpfs".into(), "null-ok".into(), "zero=3".into()]
    };
    assert_eq!(
        got, expected,
        "/{name} -> {link}: the mount is not at {inside} in the rootfs, or lost its protection"
    );
    ct.finish();
}

/// `/data -> X` as the target of `--tmpfs /data` and as `-w /data`: the tmpfs and the working
/// directory are X *inside* the rootfs, and nothing appears on the host. A target only the
/// host has may also be refused clearly (see [`refused_clearly`]).
#[rstest]
#[case::tmpfs_absolute("--tmpfs", Target::Fixed("/tmp"))]
#[case::tmpfs_host_only_absolute("--tmpfs", Target::HostOnlyAbsolute)]
#[case::tmpfs_host_only_climbing("--tmpfs", Target::HostOnlyRelative)]
#[case::workdir_absolute("-w", Target::Fixed("/tmp"))]
#[case::workdir_host_only_absolute("-w", Target::HostOnlyAbsolute)]
#[case::workdir_host_only_climbing("-w", Target::HostOnlyRelative)]
fn tmpfs_and_workdir_on_symlink_stay_in_the_rootfs(#[case] flag: &str, #[case] target: Target) {
    let Some(ct) = fixture() else { return };
    let watch = HostWatch::new(&ct);
    let (link, inside) = target.resolve(&watch.outside);
    import_hostile(&ct, "data", &link);
    // Writes a marker where the flag points (the tmpfs, or the working directory), then
    // reports where it landed and what is mounted there.
    let write_to = if flag == "--tmpfs" { "/data" } else { "." };
    let script = format!(
        "{FSTYPE_FN} echo marker > {write_to}/marker-from-container; \
         pwd; cat {inside}/marker-from-container; \
         [ \"{flag}\" = --tmpfs ] && fstype_at \"{inside}\"; true"
    );
    let mut args: Vec<&str> = vec!["--rm", "--network", "none"];
    args.extend([flag, "/data"]);
    args.extend(["hostile", "sh", "-c", &script]);
    let out = ct.run(args).output();
    watch.assert_untouched(&format!("{flag} /data with /data -> {link}"));
    if !landed(&out, target, "/data", &link) {
        ct.finish();
        return;
    }
    let got = lines(&text(&out.stdout));
    if flag == "--tmpfs" {
        assert_eq!(
            got,
            ["/", "marker", "tmpfs"],
            "--tmpfs /data -> {link}: the tmpfs is not at {inside} inside the container"
        );
    } else {
        assert_eq!(
            got,
            [inside.as_str(), "marker"],
            "-w /data -> {link}: the working directory is not {inside} inside the container"
        );
    }
    ct.finish();
}

/// `/etc -> X`: the per-container /etc/hostname, /etc/hosts and /etc/resolv.conf are bound
/// at X/… *inside* the rootfs (or the run is refused clearly), never on the host's X.
#[rstest]
#[case::absolute_in_image(Target::Fixed("/tmp"))]
#[case::absolute_host_only(Target::HostOnlyAbsolute)]
#[case::climbing_host_only(Target::HostOnlyRelative)]
fn etc_files_on_a_symlinked_etc_stay_in_the_rootfs(#[case] target: Target) {
    let Some(ct) = fixture() else { return };
    let watch = HostWatch::new(&ct);
    let (link, inside) = target.resolve(&watch.outside);
    import_hostile(&ct, "etc", &link);
    let host_tmp_before = host_tmp_etc_files();
    let out = ct
        .run([
            "--rm",
            "--hostname",
            "symlinked-etc",
            "hostile",
            "sh",
            "-c",
            "cat /etc/hostname; grep -c symlinked-etc /etc/hosts; [ -s /etc/resolv.conf ] && echo resolv",
        ])
        .output();
    watch.assert_untouched(&format!("/etc -> {link}"));
    assert_eq!(
        host_tmp_etc_files(),
        host_tmp_before,
        "/etc -> {link}: the host's /tmp gained carton's /etc files"
    );
    if !landed(&out, target, "/etc", &link) {
        ct.finish();
        return;
    }
    assert_eq!(
        lines(&text(&out.stdout)),
        ["symlinked-etc", "1", "resolv"],
        "/etc -> {link}: the container's /etc files are not at {inside}"
    );
    ct.finish();
}

/// Which of hostname, hosts and resolv.conf exist in the host's /tmp (the in-image target of
/// the `/etc -> /tmp` case): an escape would add them there.
fn host_tmp_etc_files() -> Vec<&'static str> {
    ["hostname", "hosts", "resolv.conf"]
        .into_iter()
        .filter(|n| Path::new("/tmp").join(n).exists())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Self-protection

/// The container's side of the /proc/<pid>/exe scan: every new process whose comm is
/// `$TARGET` (the carton binary's name) is attacked once, and one line per attack goes to
/// /sync/log: `pid=P write=[…] read=[…]`. With MODE=write it first tries to open the exe
/// read-write (what CVE-2019-5736 needs, without ever writing); then, in both modes, it opens
/// the exe for reading and prints which file that fd is (`readlink /proc/self/fd/3`) or the
/// error. The read comes second on purpose: the exec'd child turns into the user's command at
/// its execve, after which its exe is the container's own busybox, which anyone in the
/// container may open; a read refused *after* the write attempt proves the write attempt was
/// still aimed at the carton child. It stops when /sync/stop appears.
const EXE_SCANNER: &str = r#"
seen=" 1 "
s ready
while [ ! -e /sync/stop ]; do
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    case "$seen" in *" $p "*) continue;; esac
    seen="$seen$p "
    read c < $d/comm 2>/dev/null || continue
    [ "$c" = "$TARGET" ] || continue
    w=""
    if [ "$MODE" = write ]; then
      w=$( { true 3<>$d/exe; } 2>&1 && echo write-opened )
    fi
    r=$( ( exec 3<$d/exe && readlink /proc/self/fd/3 ) 2>&1 )
    echo "pid=$p write=[$w] read=[$r]" >> /sync/log
  done
done
s stopped
"#;

/// CVE-2019-5736 itself, for containers that may open the exe (CAP_SYS_PTRACE): every new
/// process whose comm is `$TARGET` has its /proc/<pid>/exe opened for reading and held as fd
/// 3; then, for up to 4 s (the carton `exec` on the host still runs that file, so the kernel
/// answers "Text file busy" until it exits), the held file is reopened read-write through
/// /proc/self/fd/3 and the scanner writes to it. One line per attack: `pid=P write=[what the
/// rewrite gave] read=[the file fd 3 is]`.
const EXE_REWRITER: &str = r#"
seen=" 1 "
s ready
while [ ! -e /sync/stop ]; do
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    case "$seen" in *" $p "*) continue;; esac
    seen="$seen$p "
    read c < $d/comm 2>/dev/null || continue
    [ "$c" = "$TARGET" ] || continue
    exec 3<$d/exe 2>/dev/null || continue
    r=$(readlink /proc/self/fd/3)
    w=busy; t=0
    while [ $t -lt 200 ]; do
      w=$( { exec 4<>/proc/self/fd/3 && printf CVE-2019-5736 >&4; } 2>&1 && echo rewritten )
      case "$w" in *busy*) t=$((t+1)); sleep 0.02;; *) break;; esac
    done
    exec 3<&-
    echo "pid=$p write=[$w] read=[$r]" >> /sync/log
  done
done
s stopped
"#;

/// One attack of the [`EXE_SCANNER`] or [`EXE_REWRITER`].
#[derive(Debug)]
struct ExeAttack {
    line: String,
    write: String,
    read: String,
}

fn parse_exe_attack(line: &str) -> Option<ExeAttack> {
    let field = |name: &str| -> Option<String> {
        let start = line.find(&format!("{name}=["))? + name.len() + 2;
        let end = line[start..].find(']')? + start;
        Some(line[start..end].to_string())
    };
    Some(ExeAttack {
        line: line.to_string(),
        write: field("write")?,
        read: field("read")?,
    })
}

/// Runs the scanner in a container (extra `flags`), then `exec`s into it with a *copy* of the
/// carton binary (named `cartonexe`) until the scanner attacked the exec'd child a few times;
/// returns the attacks. The copy's bytes must be unchanged afterwards.
fn scan_exec_children(
    ct: &Carton,
    scanner: &str,
    flags: &[&str],
    mode: &str,
    useful: impl Fn(&ExeAttack) -> bool,
) -> Vec<ExeAttack> {
    let copy = ct.path("cartonexe");
    std::fs::copy(ct.bin(), &copy).unwrap();
    let hash = host::sha256_file(&copy);
    let hs = ct.handshake();
    let script = format!("{SYNC_SH} {scanner}");
    let mode_env = format!("MODE={mode}");
    let volume = hs.volume();
    let mut args: Vec<&str> = vec![
        "--name",
        "scan",
        "--network",
        "none",
        "-e",
        "TARGET=cartonexe",
        "-e",
        &mode_env,
        "-v",
        &volume,
    ];
    args.extend_from_slice(flags);
    args.extend(["busybox", "sh", "-c", &script]);
    ct.run_detached(&args);
    hs.wait_for("ready");
    let log = hs.dir().join("log");
    // Attacks that tell something (not raced with the child's execve), so far.
    let useful_so_far = || -> usize {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(parse_exe_attack)
            .filter(|a| useful(a))
            .count()
    };
    let deadline = Instant::now() + DEADLINE;
    let mut execs = 0;
    while useful_so_far() < 3 && execs < 40 && Instant::now() < deadline {
        let out = CartonCmd::new(&copy)
            .arg("--root")
            .arg(ct.root())
            .args(["exec", "scan", "true"])
            .output();
        assert!(
            out.status.success(),
            "carton exec failed:\n{}",
            all_output(&out)
        );
        execs += 1;
    }
    hs.release("stop");
    hs.wait_for("stopped");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        host::sha256_file(&copy),
        hash,
        "the carton binary's copy changed during the scan!"
    );
    let attacks: Vec<ExeAttack> = lines(&log_text)
        .iter()
        .map(|l| parse_exe_attack(l).unwrap_or_else(|| panic!("bad scanner line {l:?}")))
        .collect();
    assert!(
        !attacks.is_empty(),
        "after {execs} execs the scanner never saw a process named cartonexe in the \
         container: nothing was tested"
    );
    attacks
}

/// With CAP_SYS_PTRACE (--privileged) the exec'd carton child is reachable through
/// /proc/<pid>/exe (opened for reading only). Proves the scan works.
#[test]
fn exec_child_exe_is_reachable_with_ptrace_capability() {
    let Some(ct) = fixture() else { return };
    let attacks = scan_exec_children(&ct, EXE_SCANNER, &["--privileged"], "read", |a| {
        opened_carton_exe(&a.read)
    });
    assert!(
        attacks.iter().any(|a| opened_carton_exe(&a.read)),
        "even --privileged cannot open /proc/<pid>/exe of the exec'd carton child: the \
         default-container test would prove nothing\n{attacks:#?}"
    );
    ct.finish();
}

/// Whether a scanner's read of /proc/<pid>/exe opened carton's binary: the copy itself
/// (`…/cartonexe`), the read-only bind mount `exec` re-runs from (a detached mount's only
/// file, shown as `/`), or the sealed memfd (`/memfd:carton (deleted)`).
fn opened_carton_exe(read: &str) -> bool {
    read.ends_with("/cartonexe") || read == "/" || read.starts_with("/memfd:carton")
}

/// A default container's process cannot open the exec'd carton child's /proc/<pid>/exe, for
/// writing or reading (the child is non-dumpable before it enters the container's pid
/// namespace, and holds capabilities the container lacks): EACCES every time. Attacks that
/// raced with the child's execve (the read then opens the container's own busybox) are left
/// out; at least one must remain.
#[test]
fn exec_child_exe_cannot_be_opened_from_the_container() {
    let Some(ct) = fixture() else { return };
    let attacks = scan_exec_children(&ct, EXE_SCANNER, &[], "write", |a| {
        a.read.contains("Permission denied")
    });
    let mut aimed = 0;
    for attack in &attacks {
        if attack.read.contains("Permission denied") {
            aimed += 1;
            assert!(
                attack.write.contains("Permission denied"),
                "the read-write open of the carton child's exe was not refused with EACCES \
                 (ETXTBSY would mean the binary itself was reached): {}",
                attack.line
            );
        } else {
            // The child already exec'd (its exe is the container's busybox) or exited.
            let gone = attack.read.to_lowercase().contains("no such file");
            assert!(
                attack.read == "/bin/busybox" || gone,
                "a container process opened the carton binary through /proc/<pid>/exe: {}",
                attack.line
            );
        }
    }
    assert!(
        aimed > 0,
        "every attack raced with the child's execve; nothing was tested:\n{attacks:#?}"
    );
    eprintln!(
        "{} attacks on exec'd carton children, {aimed} while still carton (EACCES)",
        attacks.len()
    );
    ct.finish();
}

/// A container that may open the exec'd carton child's exe (CAP_SYS_PTRACE) holds it and
/// tries to rewrite it once carton has exited (CVE-2019-5736). `exec` runs from a copy of
/// its binary that no reopen can write (a detached read-only bind mount, or a sealed memfd):
/// every rewrite is refused, and the binary on the host keeps its bytes.
#[rstest]
#[case::cap_add_sys_ptrace(&["--cap-add", "SYS_PTRACE"])]
#[case::privileged(&["--privileged"])]
fn exec_child_exe_cannot_be_rewritten_with_ptrace_capability(#[case] flags: &[&str]) {
    let Some(ct) = fixture() else { return };
    let aimed = |a: &ExeAttack| opened_carton_exe(&a.read);
    let attacks = scan_exec_children(&ct, EXE_REWRITER, flags, "rewrite", aimed);
    let mut tested = 0;
    for attack in attacks.iter().filter(|a| aimed(a)) {
        tested += 1;
        assert!(
            !attack.write.contains("rewritten"),
            "a container process rewrote carton's binary through /proc/<pid>/exe: {}",
            attack.line
        );
        assert!(
            attack.write.contains("Read-only file system")
                || attack.write.contains("Operation not permitted"),
            "the rewrite failed for another reason than a read-only or sealed binary: {}",
            attack.line
        );
    }
    assert!(
        tested > 0,
        "every attack raced with the child's execve; nothing was tested:\n{attacks:#?}"
    );
    ct.finish();
}

const INHERITED_FD: i32 = 77;

/// A file and a directory of the host, open in the test process (not close-on-exec in the
/// child it is handed to).
fn host_file_fd(ct: &Carton) -> (PathBuf, OwnedFd) {
    let path = ct.path("host-fd-sentinel");
    std::fs::write(&path, "host file\n").unwrap();
    let file = std::fs::File::open(&path).unwrap();
    (path, OwnedFd::from(file))
}

fn host_dir_fd(ct: &Carton) -> (PathBuf, OwnedFd) {
    let dir = ct.path("hostdir");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("host-secret"), "host\n").unwrap();
    let file = std::fs::File::open(&dir).unwrap();
    (dir, OwnedFd::from(file))
}

/// The inherited descriptor really reaches a program the harness starts (the control): a host
/// busybox lists it, and can `cd` through it when it is a directory.
#[track_caller]
fn assert_fd_is_inherited(ct: &Carton, fd: &OwnedFd, script: &str, expect: &str) {
    let mut cmd = std::process::Command::new(ct.busybox());
    cmd.args(["sh", "-c", script]);
    let out = output_with_inherited_fd(cmd, fd, INHERITED_FD, DEADLINE);
    assert!(
        text(&out.stdout).contains(expect),
        "control: a host process started like carton does not see fd {INHERITED_FD}:\n{}",
        all_output(&out)
    );
}

/// Lists the descriptors of process `pid` inside (`ls -l`: `… N -> target`), from a child
/// process, so that the shell's own temporary descriptors (a glob's directory, a command
/// substitution's pipe) never show; `; true` keeps the shell from exec'ing `ls` in its place.
fn fd_listing_script(pid: &str) -> String {
    format!("ls -l /proc/{pid}/fd; true")
}

#[track_caller]
fn assert_only_stdio(out: &Output, sentinel: &Path, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        all_output(out)
    );
    let stdout = text(&out.stdout);
    let fds: BTreeSet<String> = lines(&stdout)
        .iter()
        .filter_map(|l| {
            let (left, _) = l.split_once(" -> ")?;
            left.split_whitespace().last().map(String::from)
        })
        .collect();
    assert_eq!(
        fds,
        BTreeSet::from(["0".to_string(), "1".into(), "2".into()]),
        "{what}: descriptors other than stdio:\n{stdout}"
    );
    assert!(
        !stdout.contains(&sentinel.display().to_string()),
        "{what}: the host file is open inside:\n{stdout}"
    );
}

/// No host descriptor reaches the container's PID 1: carton is started holding an extra fd
/// (a host file, not close-on-exec) and PID 1 has only 0, 1, 2.
#[test]
fn no_host_fd_in_the_container_init() {
    let Some(ct) = fixture() else { return };
    let (path, fd) = host_file_fd(&ct);
    assert_fd_is_inherited(
        &ct,
        &fd,
        &format!("readlink /proc/self/fd/{INHERITED_FD}"),
        &path.display().to_string(),
    );
    let cmd = ct
        .run([
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            &fd_listing_script("1"),
        ])
        .to_std();
    let out = output_with_inherited_fd(cmd, &fd, INHERITED_FD, DEADLINE);
    assert_only_stdio(&out, &path, "PID 1 of `carton run`");
    ct.finish();
}

/// The same for an `exec`'d process.
#[test]
fn no_host_fd_in_an_exec_process() {
    let Some(ct) = fixture() else { return };
    idle(&ct, "box", &[]);
    let (path, fd) = host_file_fd(&ct);
    let cmd = ct
        .cmd()
        .args(["exec", "box", "sh", "-c", &fd_listing_script("$$")])
        .to_std();
    let out = output_with_inherited_fd(cmd, &fd, INHERITED_FD, DEADLINE);
    assert_only_stdio(&out, &path, "a process of `carton exec`");
    ct.finish();
}

/// CVE-2024-21626: with a host directory open in carton, `-w /proc/self/fd/N` must not make the
/// container start *in* that host directory (from where `..` leads anywhere on the host). carton
/// may refuse the working directory or start elsewhere, but the container must not see or
/// write the host directory.
#[rstest]
#[case::run(false)]
#[case::exec(true)]
fn leaked_directory_fd_is_not_the_working_directory(#[case] exec: bool) {
    let Some(ct) = fixture() else { return };
    let (dir, fd) = host_dir_fd(&ct);
    assert_fd_is_inherited(
        &ct,
        &fd,
        &format!("cd /proc/self/fd/{INHERITED_FD} && ls"),
        "host-secret",
    );
    let before = Snapshot::of(&dir);
    let workdir = format!("/proc/self/fd/{INHERITED_FD}");
    let script = "ls; touch cwd-was-here 2>/dev/null; true";
    let cmd = if exec {
        idle(&ct, "box", &[]);
        ct.cmd()
            .args(["exec", "-w", &workdir, "box", "sh", "-c", script])
            .to_std()
    } else {
        ct.run([
            "--rm",
            "--network",
            "none",
            "-w",
            &workdir,
            "busybox",
            "sh",
            "-c",
            script,
        ])
        .to_std()
    };
    let out = output_with_inherited_fd(cmd, &fd, INHERITED_FD, DEADLINE);
    let what = if exec { "carton exec" } else { "carton run" };
    assert!(
        !text(&out.stdout).contains("host-secret"),
        "`{what} -w {workdir}` started the container in the host directory {} ({}): it \
         lists the host's files:\n{}",
        dir.display(),
        out.status,
        all_output(&out)
    );
    before.assert_unchanged(
        &Snapshot::of(&dir),
        &format!("the host directory after `{what} -w {workdir}`"),
    );
    ct.finish();
}

/// `--read-only`: `/` refuses writes (without it the same write works), `--tmpfs` stays
/// writable with docker's default options (nosuid, nodev, noexec, 64 MiB).
#[test]
fn read_only_root_with_a_writable_tmpfs() {
    let Some(ct) = fixture() else { return };
    let script = "touch /written && echo root-write-ok; touch /scratch/f && echo tmpfs-write-ok";
    let writable = run_sh_ok(&ct, &["--tmpfs", "/scratch"], script);
    assert_eq!(lines(&writable), ["root-write-ok", "tmpfs-write-ok"]);
    let out = run_sh(&ct, &["--read-only", "--tmpfs", "/scratch"], script);
    let all = all_output(&out);
    assert!(
        !all.contains("root-write-ok") && all.contains("Read-only file system"),
        "--read-only root accepted a write:\n{all}"
    );
    assert!(
        all.contains("tmpfs-write-ok"),
        "--tmpfs /scratch is not writable:\n{all}"
    );
    let (_, mounts) = run_with_mounts(&ct, &["--read-only", "--tmpfs", "/scratch"], "true");
    let root = mounts_at(&mounts, "/");
    assert!(
        root.last().is_some_and(|m| m.has("ro")),
        "/ is not read-only: {root:?}"
    );
    let scratch = mounts_at(&mounts, "/scratch");
    let Some(scratch) = scratch.last() else {
        panic!("no mount at /scratch: {mounts:?}");
    };
    assert_eq!(scratch.fstype, "tmpfs", "{scratch:?}");
    for opt in ["rw", "nosuid", "nodev", "noexec"] {
        assert!(scratch.has(opt), "/scratch lacks {opt}: {scratch:?}");
    }
    assert!(
        scratch.has_super("size=65536k"),
        "/scratch is not 64 MiB: {scratch:?}"
    );
    ct.finish();
}

/// `--tmpfs DIR:OPTIONS` keeps nosuid,nodev,noexec and applies the options.
#[test]
fn tmpfs_options_are_applied() {
    let Some(ct) = fixture() else { return };
    let (said, mounts) = run_with_mounts(
        &ct,
        &["--tmpfs", "/scratch:size=1m,mode=1777"],
        "stat -c %a /scratch",
    );
    assert_eq!(said, ["1777"]);
    let scratch = mounts_at(&mounts, "/scratch");
    let Some(scratch) = scratch.last() else {
        panic!("no mount at /scratch: {mounts:?}");
    };
    for opt in ["nosuid", "nodev", "noexec"] {
        assert!(scratch.has(opt), "/scratch lacks {opt}: {scratch:?}");
    }
    assert!(scratch.has_super("size=1024k"), "{scratch:?}");
    ct.finish();
}

/// `--ulimit nofile=100:200` sets the soft and hard limits of the container.
#[test]
fn ulimit_sets_soft_and_hard_limits() {
    let Some(ct) = fixture() else { return };
    let out = run_sh_ok(
        &ct,
        &["--ulimit", "nofile=100:200"],
        "ulimit -n; ulimit -Hn",
    );
    assert_eq!(lines(&out), ["100", "200"]);
    let single = run_sh_ok(&ct, &["--ulimit", "nofile=150"], "ulimit -n; ulimit -Hn");
    assert_eq!(lines(&single), ["150", "150"]);
    ct.finish();
}

/// Raising a hard limit above carton's own needs CAP_SYS_RESOURCE, which this machine's root
/// lacks: exit 125 and a message naming the limit, never a silent lower limit; the container's
/// cgroup is gone.
#[test]
fn ulimit_above_carton_hard_limit_fails_clearly() {
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) }, 0);
    const HUGE: u64 = 100_000_000;
    if own.rlim_max >= HUGE {
        skip("the test process's hard RLIMIT_NOFILE is already ≥ 100000000");
        return;
    }
    if CapSets::of_self().effective & 1 << 24 != 0 {
        eprintln!(
            "NOTE: this process holds CAP_SYS_RESOURCE; the kernel's nr_open still refuses \
             100000000"
        );
    }
    let Some(ct) = fixture() else { return };
    let limit = format!("nofile={HUGE}:{HUGE}");
    let out = ct
        .run(["--network", "none", "--ulimit", &limit, "busybox", "true"])
        .output();
    assert_eq!(
        out.status.code(),
        Some(EXIT_CARTON_ERROR),
        "{}",
        all_output(&out)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("RLIMIT_NOFILE"),
        "the error does not name RLIMIT_NOFILE: {stderr:?}"
    );
    for id in ct.container_ids() {
        let left = cgroup::existing_dirs(&id);
        assert!(left.is_empty(), "cgroup of {id} left behind: {left:?}");
    }
    ct.finish();
}

// ---------------------------------------------------------------------------------------------
// Bad input

/// A file written into the scratch dir for a bad-input case.
#[derive(Debug, Clone, Copy)]
enum BadFile {
    None,
    MalformedJson,
    UnknownAction,
    RuleWithoutNames,
}

/// Refused with exit 125 and a message naming the problem; nothing changes under the test's
/// directory (so no container record, not even `Created`), `ps -a` is empty, and no container
/// cgroup appeared that no carton root on this machine accounts for.
#[rstest]
#[case::cap_add_unknown(&["--cap-add", "BOGUS"], BadFile::None, "BOGUS")]
#[case::cap_drop_unknown(&["--cap-drop", "NOPE"], BadFile::None, "NOPE")]
#[case::cap_add_empty(&["--cap-add", ""], BadFile::None, "capability")]
#[case::seccomp_malformed_json(&["--security-opt", "seccomp={file}"], BadFile::MalformedJson, "seccomp")]
#[case::seccomp_unknown_action(&["--security-opt", "seccomp={file}"], BadFile::UnknownAction, "SCMP_ACT_EXPLODE")]
#[case::seccomp_rule_without_names(&["--security-opt", "seccomp={file}"], BadFile::RuleWithoutNames, "names")]
#[case::seccomp_missing_file(&["--security-opt", "seccomp={work}/missing.json"], BadFile::None, "missing.json")]
#[case::security_opt_bogus(&["--security-opt", "bogus"], BadFile::None, "bogus")]
#[case::security_opt_apparmor_profile(&["--security-opt", "apparmor=docker-default"], BadFile::None, "apparmor")]
#[case::security_opt_no_new_privileges_maybe(&["--security-opt", "no-new-privileges=maybe"], BadFile::None, "no-new-privileges")]
#[case::tmpfs_relative(&["--tmpfs", "relative"], BadFile::None, "relative")]
#[case::tmpfs_root(&["--tmpfs", "/"], BadFile::None, "--tmpfs")]
#[case::ulimit_not_a_number(&["--ulimit", "nofile=x"], BadFile::None, "nofile=x")]
#[case::ulimit_unknown_name(&["--ulimit", "files=1"], BadFile::None, "files")]
#[case::ulimit_soft_above_hard(&["--ulimit", "nofile=10:5"], BadFile::None, "nofile=10:5")]
#[case::device_not_a_device(&["--device", "/etc/passwd"], BadFile::None, "/etc/passwd")]
#[case::device_missing(&["--device", "/dev/carton-no-such-device"], BadFile::None, "carton-no-such-device")]
#[case::device_bad_permissions(&["--device", "/dev/null:/dev/x:rwq"], BadFile::None, "--device")]
fn bad_security_input_is_refused(
    #[case] flags: &[&str],
    #[case] file: BadFile,
    #[case] message: &str,
) {
    let Some(ct) = fixture() else { return };
    let profile = ct.path("profile.json");
    let content = match file {
        BadFile::None => None,
        BadFile::MalformedJson => Some(r#"{"defaultAction": "#),
        BadFile::UnknownAction => Some(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_EXPLODE"}]}"#,
        ),
        BadFile::RuleWithoutNames => Some(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}"#,
        ),
    };
    if let Some(content) = content {
        std::fs::write(&profile, content).unwrap();
    }
    let work = ct.work().display().to_string();
    let mut args: Vec<String> = vec!["--network".into(), "none".into()];
    args.extend(flags.iter().map(|f| {
        f.replace("{file}", &profile.display().to_string())
            .replace("{work}", &work)
    }));
    args.extend(["busybox".into(), "true".into()]);

    let cgroups_before = carton_cgroup_ids();
    let before = Snapshot::of(ct.base());
    let out = ct.run(&args).output();
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(EXIT_CARTON_ERROR),
        "`carton run {}`:\n{}",
        args.join(" "),
        all_output(&out)
    );
    assert!(
        stderr.contains(message) && stderr.contains("carton: "),
        "stderr does not name {message:?} (with the `carton: ` prefix): {stderr:?}"
    );
    before.assert_unchanged(
        &Snapshot::of(ct.base()),
        &format!("after `carton run {}`", args.join(" ")),
    );
    assert_eq!(
        ct.container_ids(),
        Vec::<String>::new(),
        "ps -a lists a container"
    );
    assert_no_new_unaccounted_cgroup(&cgroups_before);
    ct.finish();
}

/// Container cgroups created since `before` that still exist after a grace period, hold no
/// process, and that no carton root records (every fixture's, under the temporary directory,
/// and carton's default root): a cgroup leaked by a refused run. (Other suites running at the
/// same time create and remove cgroups of their own containers, which their roots account for.)
#[track_caller]
fn assert_no_new_unaccounted_cgroup(before: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let new: Vec<String> = carton_cgroup_ids()
            .difference(before)
            .filter(|id| !recorded_by_some_root(id) && cgroup_is_empty(id))
            .cloned()
            .collect();
        if new.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "container cgroups appeared that no carton root records: {new:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a fixture's root (under the temporary directory) or carton's default root holds
/// container `id`.
fn recorded_by_some_root(id: &str) -> bool {
    if Path::new("/var/lib/carton/containers").join(id).exists() {
        return true;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with("carton-conf-")
            && e.path().join("root/containers").join(id).exists()
    })
}

/// No process in any of the container's cgroup directories (a running container of someone
/// else has at least its init there).
fn cgroup_is_empty(id: &str) -> bool {
    cgroup::existing_dirs(id).iter().all(|dir| {
        std::fs::read_to_string(dir.join("cgroup.procs")).map_or(true, |p| p.trim().is_empty())
    })
}
