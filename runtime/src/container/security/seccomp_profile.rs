//! carton's default seccomp profile, and docker's JSON profile format for
//! `--security-opt seccomp=FILE` — both resolved for the container's capabilities into the OCI
//! `linux.seccomp` the engine compiles.
//!
//! The default allows what ordinary programs use and refuses, with EPERM, what reaches past a
//! container: kernel keyrings, module loading, kexec, new namespaces (unless CAP_SYS_ADMIN),
//! mounting, clock changes, BPF, perf, handle-based opens, io_uring, and the like. Groups of
//! calls that only make sense with a capability are allowed exactly when the container has it
//! (docker's rule, so `--cap-add SYS_ADMIN` behaves as users expect).

use std::collections::BTreeSet;

use oci_spec::runtime::LinuxSeccomp;
use serde::Deserialize;
use serde_json::{Value, json};

/// Allowed for every container.
const BASE: &[&str] = &[
    // files and directories
    "access",
    "chdir",
    "chmod",
    "chown",
    "close",
    "close_range",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futimesat",
    "getcwd",
    "getdents",
    "getdents64",
    "getxattr",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "name_to_handle_at",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pread64",
    "preadv",
    "preadv2",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "sendfile",
    "setxattr",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "tee",
    "truncate",
    "umask",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vmsplice",
    "write",
    "writev",
    // notifications, polling, events
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "fanotify_mark",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "pause",
    "poll",
    "ppoll",
    "pselect6",
    "select",
    "signalfd",
    "signalfd4",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    // memory
    "brk",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mremap",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "remap_file_pages",
    // processes, threads, signals
    "arch_prctl",
    "capget",
    "capset",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "futex",
    "futex_waitv",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getresgid",
    "getresuid",
    "getrlimit",
    "getrusage",
    "getsid",
    "gettid",
    "getuid",
    "ioprio_get",
    "ioprio_set",
    "kill",
    "modify_ldt",
    "pidfd_open",
    "pidfd_send_signal",
    "prctl",
    "prlimit64",
    "process_mrelease",
    "ptrace",
    "restart_syscall",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "setsid",
    "setuid",
    "sigaltstack",
    "tgkill",
    "tkill",
    "vfork",
    "wait4",
    "waitid",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    // time (reading it; setting needs CAP_SYS_TIME)
    "adjtimex",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "gettimeofday",
    "nanosleep",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "times",
    "alarm",
    // IPC
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "pipe",
    "pipe2",
    // sockets (socket itself is conditional, below)
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "listen",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socketpair",
    // system information
    "getrandom",
    "ioctl",
    "sysinfo",
    "uname",
    // asynchronous I/O (io_uring stays out: a large, often-exploited surface)
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_setup",
    "io_submit",
];

/// Allowed only with the capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount2",
            "unshare",
            "pivot_root",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    ("CAP_SYS_TIME", &["settimeofday", "clock_settime"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "move_pages",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// Namespace-creating clone flags: CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

const AF_VSOCK: u64 = 40;

/// personality(2) values that only select behaviour of the process itself.
const SAFE_PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The default profile for a container holding `capabilities` (kernel names).
pub fn default_profile(capabilities: &BTreeSet<String>) -> LinuxSeccomp {
    let has = |cap: &str| capabilities.contains(cap);
    let mut allowed: Vec<&str> = BASE.to_vec();
    for (cap, calls) in BY_CAPABILITY {
        if has(cap) {
            allowed.extend_from_slice(calls);
        }
    }
    allowed.sort_unstable();
    allowed.dedup();
    let mut syscalls = vec![json!({"names": allowed, "action": "SCMP_ACT_ALLOW"})];
    if !has("CAP_SYS_ADMIN") {
        // Threads and processes, but no new namespaces.
        syscalls.push(json!({
            "names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
        }));
        // clone3 hides its flags behind a pointer: answer "not implemented" so that libc
        // falls back to clone, where the flags can be checked.
        syscalls.push(
            json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}),
        );
    }
    syscalls.push(json!({
        "names": ["socket"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]
    }));
    for value in SAFE_PERSONALITIES {
        syscalls.push(json!({
            "names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}]
        }));
    }
    serde_json::from_value(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscalls,
    }))
    .expect("the built-in profile is valid")
}

/// docker's profile format (`--security-opt seccomp=FILE`): like the OCI section, plus
/// `includes`/`excludes` conditions on capabilities, architectures and the kernel version
/// (`minKernel`), `name` besides `names`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerProfile {
    default_action: Value,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    syscalls: Vec<DockerSyscall>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerSyscall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Vec<String>,
    action: Value,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    /// "MAJOR.MINOR": includes → the rule needs at least this kernel; excludes → the rule is
    /// dropped from this kernel on.
    #[serde(default)]
    min_kernel: Option<String>,
}

/// "5.10", or a uname release such as "6.1.0-13-amd64" → (major, minor).
fn kernel_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The running kernel's (major, minor), from uname.
fn running_kernel() -> Option<(u32, u32)> {
    let uname = nix::sys::utsname::uname().ok()?;
    kernel_version(&uname.release().to_string_lossy())
}

/// Whether `kernel` is at least the filter's minKernel; an unreadable minKernel is an error.
fn at_least(min: &Option<String>, kernel: Option<(u32, u32)>) -> Result<Option<bool>, String> {
    let Some(min) = min else { return Ok(None) };
    let wanted =
        kernel_version(min).ok_or_else(|| format!("minKernel {min:?} is not MAJOR.MINOR"))?;
    let kernel = kernel.ok_or("cannot read the running kernel's version for minKernel")?;
    Ok(Some(kernel >= wanted))
}

fn arch_matches(arches: &[String]) -> bool {
    arches
        .iter()
        .any(|a| matches!(a.as_str(), "amd64" | "x86_64" | "SCMP_ARCH_X86_64"))
}

/// Parses a docker-format profile and keeps the rules that apply to a container with
/// `capabilities` on x86_64.
pub fn from_docker_json(
    text: &str,
    capabilities: &BTreeSet<String>,
) -> Result<LinuxSeccomp, String> {
    from_docker_json_for(text, capabilities, running_kernel())
}

fn from_docker_json_for(
    text: &str,
    capabilities: &BTreeSet<String>,
    kernel: Option<(u32, u32)>,
) -> Result<LinuxSeccomp, String> {
    let profile: DockerProfile =
        serde_json::from_str(text).map_err(|e| format!("not a seccomp profile: {e}"))?;
    let mut syscalls = Vec::new();
    for rule in profile.syscalls {
        let includes_ok = rule.includes.caps.iter().all(|c| capabilities.contains(c))
            && (rule.includes.arches.is_empty() || arch_matches(&rule.includes.arches))
            && at_least(&rule.includes.min_kernel, kernel)? != Some(false);
        let excluded = rule.excludes.caps.iter().any(|c| capabilities.contains(c))
            || (!rule.excludes.arches.is_empty() && arch_matches(&rule.excludes.arches))
            || at_least(&rule.excludes.min_kernel, kernel)? == Some(true);
        if !includes_ok || excluded {
            continue;
        }
        let mut names = rule.names;
        names.extend(rule.name);
        if names.is_empty() {
            return Err("a syscall rule has no names".into());
        }
        let mut entry = json!({"names": names, "action": rule.action});
        if let Some(errno) = rule.errno_ret {
            entry["errnoRet"] = json!(errno);
        }
        if let Some(args) = rule.args.filter(|a| !a.is_null()) {
            entry["args"] = args;
        }
        syscalls.push(entry);
    }
    let mut out = json!({
        "defaultAction": profile.default_action,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscalls,
    });
    if let Some(errno) = profile.default_errno_ret {
        out["defaultErrnoRet"] = json!(errno);
    }
    serde_json::from_value(out).map_err(|e| format!("invalid seccomp profile: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::seccomp;

    fn caps(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|c| c.to_string()).collect()
    }

    fn allowed_names(profile: &LinuxSeccomp) -> BTreeSet<String> {
        profile
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.args().as_ref().is_none_or(|a| a.is_empty()))
            .filter(|s| format!("{:?}", s.action()) == "ScmpActAllow")
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn default_profile_follows_capabilities_and_compiles() {
        let plain = default_profile(&caps(&["CAP_CHOWN"]));
        let names = allowed_names(&plain);
        for refused in [
            "keyctl",
            "add_key",
            "kexec_load",
            "mount",
            "unshare",
            "init_module",
            "bpf",
            "open_by_handle_at",
        ] {
            assert!(!names.contains(refused), "{refused} allowed");
        }
        for needed in [
            "read",
            "execve",
            "clone", /* conditional */
            "setresuid",
            "capset",
        ] {
            let present = names.contains(needed)
                || plain
                    .syscalls()
                    .iter()
                    .flatten()
                    .any(|s| s.names().iter().any(|n| n == needed));
            assert!(present, "{needed} missing");
        }
        let admin = default_profile(&caps(&["CAP_SYS_ADMIN"]));
        assert!(allowed_names(&admin).contains("mount"));
        assert!(seccomp::compile(&plain).is_ok());
        assert!(seccomp::compile(&admin).is_ok());
    }

    #[test]
    fn docker_profiles_are_filtered_by_capability_and_arch() {
        let text = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["arm_only"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]},
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}
            ]
        }"#;
        let plain = from_docker_json(text, &caps(&[])).unwrap();
        let names: Vec<String> = plain
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.names().clone())
            .collect();
        assert_eq!(names, ["read", "clone"]);
        let admin = from_docker_json(text, &caps(&["CAP_SYS_ADMIN"])).unwrap();
        let names: Vec<String> = admin
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.names().clone())
            .collect();
        assert_eq!(names, ["read", "mount"]);
        assert!(from_docker_json("{not json", &caps(&[])).is_err());

        let by_kernel = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["new_call"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.12"}},
                {"names": ["old_workaround"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.12"}}
            ]
        }"#;
        let names_on = |kernel| -> Vec<String> {
            from_docker_json_for(by_kernel, &caps(&[]), kernel)
                .unwrap()
                .syscalls()
                .iter()
                .flatten()
                .flat_map(|s| s.names().clone())
                .collect()
        };
        assert_eq!(names_on(Some((5, 10))), ["old_workaround"]);
        assert_eq!(names_on(Some((5, 12))), ["new_call"]);
        assert_eq!(names_on(Some((6, 1))), ["new_call"]);
        let bad = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["x"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "five"}}]}"#;
        assert!(from_docker_json_for(bad, &caps(&[]), Some((6, 1))).is_err());
        assert_eq!(kernel_version("6.1.0-13-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("6.18.44-fc-v595"), Some((6, 18)));
        assert!(from_docker_json(r#"{"defaultAction": "SCMP_ACT_NOPE"}"#, &caps(&[])).is_err());
    }
}
