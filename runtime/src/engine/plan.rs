//! Reads an OCI runtime spec into the plain plan the init follows, refusing what the engine does
//! not implement. Nothing in a spec is silently ignored: a container that would run with less
//! isolation or different limits than its config.json says is worse than one that does not run.

use std::path::{Path, PathBuf};

use libc::c_ulong;
use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Process, Spec};

use super::capabilities::CapabilitySets;
use super::error::EngineError;
use super::mount_options;
use super::rootfs::RootfsPlan;
use super::seccomp;
use crate::cgroups::Resources;
use crate::cgroups::devices::DeviceRule;

/// Annotation through which carton's storage asks the engine to mount an overlay as the
/// rootfs (value: the overlayfs mount data). Mounting it inside the container's own mount
/// namespace means no host-visible mount exists that a crash could leak.
pub const OVERLAY_ANNOTATION: &str = "carton.rootfs.overlay";

#[derive(Debug)]
pub struct Plan {
    /// Namespaces created by clone(2). A cgroup namespace is never among them: it must be
    /// unshared after the init sits in its cgroup (see `cgroup_namespace`).
    pub clone_flags: c_ulong,
    /// Unshare a cgroup namespace once inside the container's cgroup, so that the cgroup is
    /// the root of what the container sees.
    pub cgroup_namespace: bool,
    pub cgroup: Option<CgroupPlan>,
    pub hostname: Option<String>,
    /// NIS domain name (`domainname`), set like the hostname in the container's UTS namespace.
    pub domainname: Option<String>,
    pub rootfs: RootfsPlan,
    pub process: ProcessPlan,
    /// Namespaces joined by path (`linux.namespaces[].path`, e.g. a pod's shared network),
    /// as (path, CLONE_NEW* kind); the pid namespace is separate: carton enters it for its
    /// children before the clone.
    pub join: Vec<(PathBuf, libc::c_int)>,
    pub join_pid: Option<PathBuf>,
    /// `hooks`, if the spec has any.
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// The spec's annotations (part of the state hooks receive).
    pub annotations: std::collections::HashMap<String, String>,
    /// How the caller starts the container (OCI `create` vs `carton run`).
    pub options: StartOptions,
}

/// How a container is started, beyond what its spec says.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The init outlives the process that starts it (the OCI runtime's `create` returns and a
    /// shim or conmon adopts the container): no death signal tied to carton.
    pub detached_init: bool,
    /// A FIFO the init opens for writing after its set-up and before the user's process: the
    /// open blocks until `start` opens it for reading (runc's exec fifo).
    pub exec_fifo: Option<PathBuf>,
    /// Descriptors 3..3+N of the caller are passed to the container (systemd socket
    /// activation).
    pub preserve_fds: u32,
    /// Move the rootfs onto / and chroot instead of pivot_root (roots on ramfs).
    pub no_pivot: bool,
    /// The container's id, for the state hooks receive.
    pub container_id: String,
}

/// `linux.cgroupsPath` and the limits from `linux.resources`.
#[derive(Debug)]
pub struct CgroupPlan {
    pub path: String,
    pub resources: Resources,
    /// The device allow-list (`linux.resources.devices`).
    pub devices: Vec<DeviceRule>,
}

#[derive(Debug)]
pub struct ProcessPlan {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    pub terminal: bool,
    /// Create a missing working directory (a container's init does, as docker does; an exec'd
    /// process does not).
    pub create_cwd: bool,
    /// `process.capabilities`; `None` keeps what the process has (all of root's).
    pub capabilities: Option<CapabilitySets>,
    /// The compiled `linux.seccomp` filter.
    pub seccomp: Option<seccomp::Program>,
}

impl ProcessPlan {
    /// Reads an OCI `process` (the container's, or one given to `exec`).
    pub fn from_process(process: &Process, create_cwd: bool) -> Result<ProcessPlan, EngineError> {
        let invalid = |m: &str| EngineError::InvalidSpec(m.to_string());
        if process.apparmor_profile().is_some() || process.selinux_label().is_some() {
            return Err(EngineError::Unsupported(
                "process.apparmorProfile / selinuxLabel".into(),
            ));
        }
        let args = process.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Err(invalid("process.args is empty"));
        }
        let cwd = process.cwd().clone();
        if !cwd.is_absolute() {
            return Err(invalid("process.cwd must be absolute"));
        }
        let user = process.user();
        Ok(ProcessPlan {
            args,
            env: process.env().clone().unwrap_or_default(),
            cwd,
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask(),
            rlimits: process
                .rlimits()
                .iter()
                .flatten()
                .map(|r| (rlimit_resource(r.typ()), r.soft(), r.hard()))
                .collect(),
            no_new_privileges: process.no_new_privileges().unwrap_or(false),
            oom_score_adj: process.oom_score_adj(),
            terminal: process.terminal().unwrap_or(false),
            create_cwd,
            capabilities: process
                .capabilities()
                .as_ref()
                .map(CapabilitySets::from_oci)
                .transpose()
                .map_err(EngineError::InvalidSpec)?,
            seccomp: None,
        })
    }
}

impl Plan {
    pub fn from_spec(spec: &Spec, bundle: &Path) -> Result<Plan, EngineError> {
        refuse_unsupported(spec)?;
        let invalid = |m: &str| EngineError::InvalidSpec(m.to_string());
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| invalid("no process"))?;
        let root = spec.root().as_ref().ok_or_else(|| invalid("no root"))?;
        let linux = spec.linux().as_ref();

        let mut clone_flags: c_ulong = 0;
        let mut join = Vec::new();
        let mut join_pid = None;
        for ns in linux
            .and_then(|l| l.namespaces().as_ref())
            .into_iter()
            .flatten()
        {
            let flag = match ns.typ() {
                LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
                LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
                LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
                LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
                LinuxNamespaceType::Network => libc::CLONE_NEWNET,
                LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
                // Named as config.json spells the type ("user", "time").
                other => {
                    return Err(EngineError::Unsupported(format!(
                        "the {other} namespace (linux.namespaces)"
                    )));
                }
            };
            match ns.path() {
                // The rootfs is built in a mount namespace of the container's own.
                Some(_) if flag == libc::CLONE_NEWNS => {
                    return Err(EngineError::Unsupported(
                        "joining an existing mount namespace".into(),
                    ));
                }
                Some(path) if flag == libc::CLONE_NEWPID => join_pid = Some(path.clone()),
                Some(path) => join.push((path.clone(), flag)),
                None => clone_flags |= flag as c_ulong,
            }
        }
        let cgroup_namespace = clone_flags & libc::CLONE_NEWCGROUP as c_ulong != 0;
        clone_flags &= !(libc::CLONE_NEWCGROUP as c_ulong);
        if clone_flags & libc::CLONE_NEWNS as c_ulong == 0 {
            // The rootfs is built with mounts; without its own mount namespace they would land
            // in carton's.
            return Err(invalid("a mount namespace is required"));
        }

        let mut process_plan = ProcessPlan::from_process(process, true)?;
        process_plan.seccomp = linux
            .and_then(|l| l.seccomp().as_ref())
            .map(seccomp::compile)
            .transpose()?;

        let rootfs_path = if root.path().is_absolute() {
            root.path().clone()
        } else {
            bundle.join(root.path())
        };
        let overlay = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(OVERLAY_ANNOTATION))
            .cloned();
        let root_propagation = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
            None | Some("") => libc::MS_PRIVATE | libc::MS_REC,
            Some(p) => mount_options::parse_propagation(p)
                .ok_or_else(|| invalid(&format!("unknown rootfsPropagation {p:?}")))?,
        };
        let terminal = process.terminal().unwrap_or(false);

        let resources = match linux.and_then(|l| l.resources().as_ref()) {
            Some(r) => Resources::from_oci(r)?,
            None => Resources::default(),
        };
        // The runtime provides the default devices (runtime spec): they stay usable whatever
        // the spec's list says, and a spec without a list gets docker's.
        let mut devices = linux
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.devices().as_deref())
            .map(DeviceRule::from_oci)
            .unwrap_or_default();
        if devices.is_empty() {
            devices = crate::cgroups::devices::default_rules();
        } else {
            devices.extend(
                crate::cgroups::devices::default_rules()
                    .into_iter()
                    .filter(|r| r.allow && r.major.is_some()),
            );
        }
        let cgroup = match linux.and_then(|l| l.cgroups_path().as_ref()) {
            Some(path) => Some(CgroupPlan {
                path: path.to_string_lossy().into_owned(),
                resources,
                devices,
            }),
            None if !resources.is_empty() => {
                return Err(invalid("linux.resources needs a linux.cgroupsPath"));
            }
            None => None,
        };

        let mut sysctl: Vec<(String, String)> = linux
            .and_then(|l| l.sysctl().clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        sysctl.sort();
        for (key, _) in &sysctl {
            check_sysctl(key, clone_flags)?;
        }

        Ok(Plan {
            clone_flags,
            cgroup_namespace,
            cgroup,
            join,
            join_pid,
            hooks: spec.hooks().clone(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            options: StartOptions::default(),
            hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
            domainname: spec.domainname().clone().filter(|d| !d.is_empty()),
            rootfs: RootfsPlan {
                rootfs: rootfs_path,
                bundle: bundle.to_path_buf(),
                overlay,
                mounts: spec.mounts().clone().unwrap_or_default(),
                devices: linux.and_then(|l| l.devices().clone()).unwrap_or_default(),
                masked_paths: linux
                    .and_then(|l| l.masked_paths().clone())
                    .unwrap_or_default(),
                readonly_paths: linux
                    .and_then(|l| l.readonly_paths().clone())
                    .unwrap_or_default(),
                readonly_root: root.readonly().unwrap_or(false),
                root_propagation,
                terminal,
                cgroup_view: None,
                sysctl: sysctl.clone(),
                no_pivot: false,
            },
            process: process_plan,
        })
    }

    pub fn new_network_namespace(&self) -> bool {
        self.clone_flags & libc::CLONE_NEWNET as c_ulong != 0
    }

    /// The state hooks receive.
    pub fn hook_state(&self, status: &str, pid: Option<i32>) -> super::hooks::HookState {
        super::hooks::HookState {
            oci_version: "1.2.0".into(),
            id: self.options.container_id.clone(),
            status: status.into(),
            pid,
            bundle: self.rootfs.bundle.display().to_string(),
            annotations: self.annotations.clone(),
        }
    }

    /// Whether the init must stop before pivot_root for hooks.
    pub fn has_create_hooks(&self) -> bool {
        self.hooks.as_ref().is_some_and(|h| {
            [h.prestart(), h.create_runtime(), h.create_container()]
                .iter()
                .any(|list| list.as_ref().is_some_and(|l| !l.is_empty()))
        })
    }

    pub fn new_uts_namespace(&self) -> bool {
        self.clone_flags & libc::CLONE_NEWUTS as c_ulong != 0
    }
}

/// Features of the runtime spec that carton does not implement: a spec that asks for them is
/// refused with the field's name rather than run with weaker guarantees.
fn refuse_unsupported(spec: &Spec) -> Result<(), EngineError> {
    let unsupported = |what: &str| Err(EngineError::Unsupported(what.to_string()));
    if let Some(linux) = spec.linux() {
        if linux.uid_mappings().is_some() || linux.gid_mappings().is_some() {
            return unsupported("user namespace id mappings");
        }
        if linux.intel_rdt().is_some() {
            return unsupported("linux.intelRdt");
        }
        if linux.personality().is_some() {
            return unsupported("linux.personality");
        }
        if linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()) {
            return unsupported("linux.mountLabel (SELinux)");
        }
        if linux.time_offsets().is_some() {
            return unsupported("linux.timeOffsets (time namespace)");
        }
        if linux.memory_policy().is_some() {
            return unsupported("linux.memoryPolicy");
        }
        if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
            return unsupported("linux.netDevices");
        }
        // Without SCMP_ACT_NOTIFY (refused by the seccomp compiler) no agent would ever hear
        // from the container: a listener in the spec asks for something carton cannot give.
        if let Some(seccomp) = linux.seccomp() {
            if seccomp.listener_path().is_some() || seccomp.listener_metadata().is_some() {
                return unsupported(
                    "linux.seccomp.listenerPath / listenerMetadata (seccomp notify agent)",
                );
            }
        }
    }
    refuse_idmapped_mounts(spec)?;
    if let Some(process) = spec.process() {
        if process.io_priority().is_some() {
            return unsupported("process.ioPriority");
        }
        if process.scheduler().is_some() {
            return unsupported("process.scheduler");
        }
        if process.exec_cpu_affinity().is_some() {
            return unsupported("process.execCPUAffinity");
        }
    }
    if spec.domainname().as_ref().is_some_and(|d| !d.is_empty())
        && !spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|n| {
                n.iter()
                    .any(|ns| ns.typ() == LinuxNamespaceType::Uts && ns.path().is_none())
            })
    {
        // Setting it without a UTS namespace of the container's own would change the host's.
        return Err(EngineError::InvalidSpec(
            "domainname needs a new UTS namespace".into(),
        ));
    }
    Ok(())
}

/// Idmapped mounts (`mounts[].uidMappings/gidMappings`, the `idmap`/`ridmap` options) are not
/// implemented; left alone, a bind mount would ignore the mappings and an option word would go
/// to the filesystem as data, which bind mounts never read: the files would show the host's
/// owners instead of the mapped ones.
fn refuse_idmapped_mounts(spec: &Spec) -> Result<(), EngineError> {
    for mount in spec.mounts().iter().flatten() {
        let mapped = mount.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            || mount.gid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            || mount
                .options()
                .iter()
                .flatten()
                .any(|o| o == "idmap" || o == "ridmap");
        if mapped {
            return Err(EngineError::Unsupported(format!(
                "idmapped mount of {} (mounts[].uidMappings / gidMappings, idmap)",
                mount.destination().display()
            )));
        }
    }
    Ok(())
}

/// Only kernel parameters that belong to a namespace the container owns may be set: anything
/// else would change the host.
fn check_sysctl(key: &str, clone_flags: c_ulong) -> Result<(), EngineError> {
    let own = |flag: libc::c_int| clone_flags & flag as c_ulong != 0;
    let ipc = matches!(
        key,
        "kernel.msgmax"
            | "kernel.msgmnb"
            | "kernel.msgmni"
            | "kernel.sem"
            | "kernel.shmall"
            | "kernel.shmmax"
            | "kernel.shmmni"
            | "kernel.shm_rmid_forced"
    ) || key.starts_with("fs.mqueue.");
    let allowed = (ipc && own(libc::CLONE_NEWIPC))
        || (key.starts_with("net.") && own(libc::CLONE_NEWNET))
        || (matches!(key, "kernel.hostname" | "kernel.domainname") && own(libc::CLONE_NEWUTS));
    if allowed && !key.contains('/') && !key.contains("..") {
        Ok(())
    } else {
        Err(EngineError::Unsupported(format!(
            "linux.sysctl {key:?}: not a parameter of a namespace the container owns"
        )))
    }
}

fn rlimit_resource(kind: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    match kind {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    const MINIMAL: &str = r#"{
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs"},
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "hostname": "box",
        "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}, {"type": "network"}]}
    }"#;

    #[test]
    fn reads_a_minimal_spec() {
        let plan = Plan::from_spec(&spec(MINIMAL), Path::new("/bundle")).unwrap();
        assert_eq!(
            plan.clone_flags,
            (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET) as c_ulong
        );
        assert!(plan.new_network_namespace());
        assert!(!plan.new_uts_namespace());
        assert_eq!(plan.rootfs.rootfs, Path::new("/bundle/rootfs"));
        assert_eq!(
            plan.rootfs.root_propagation,
            libc::MS_PRIVATE | libc::MS_REC
        );
        assert_eq!(plan.hostname.as_deref(), Some("box"));
        assert_eq!(plan.process.args, ["sh"]);
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let with_apparmor = MINIMAL.replace(
            r#""cwd": "/","#,
            r#""cwd": "/", "apparmorProfile": "docker-default","#,
        );
        assert!(matches!(
            Plan::from_spec(&spec(&with_apparmor), Path::new("/b")),
            Err(EngineError::Unsupported(_))
        ));
        let with_caps = MINIMAL.replace(
            r#""cwd": "/","#,
            r#""cwd": "/", "capabilities": {"bounding": ["CAP_KILL"]},"#,
        );
        let plan = Plan::from_spec(&spec(&with_caps), Path::new("/b")).unwrap();
        assert_eq!(plan.process.capabilities.unwrap().bounding, 1 << 5);
        let no_mount_ns = MINIMAL.replace(r#"{"type": "mount"}, "#, "");
        assert!(matches!(
            Plan::from_spec(&spec(&no_mount_ns), Path::new("/b")),
            Err(EngineError::InvalidSpec(_))
        ));
        let joined = MINIMAL.replace(
            r#"{"type": "network"}"#,
            r#"{"type": "network", "path": "/proc/1/ns/net"}"#,
        );
        let plan = Plan::from_spec(&spec(&joined), Path::new("/b")).unwrap();
        assert_eq!(
            plan.join,
            [(PathBuf::from("/proc/1/ns/net"), libc::CLONE_NEWNET)]
        );
        assert!(!plan.new_network_namespace());
        let joined_mount = MINIMAL.replace(
            r#"{"type": "mount"}"#,
            r#"{"type": "mount", "path": "/proc/1/ns/mnt"}"#,
        );
        assert!(matches!(
            Plan::from_spec(&spec(&joined_mount), Path::new("/b")),
            Err(EngineError::Unsupported(_))
        ));
        // kernel.panic belongs to no namespace: setting it would change the host.
        let host_sysctl = MINIMAL.replace(
            r#""linux": {"namespaces""#,
            r#""linux": {"sysctl": {"kernel.panic": "1"}, "namespaces""#,
        );
        match Plan::from_spec(&spec(&host_sysctl), Path::new("/b")) {
            Err(EngineError::Unsupported(m)) => assert!(m.contains("kernel.panic"), "{m}"),
            other => panic!("a host sysctl was not refused: {other:?}"),
        }
        let unsupported =
            |json: &str, named: &str| match Plan::from_spec(&spec(json), Path::new("/b")) {
                Err(EngineError::Unsupported(m)) => assert!(m.contains(named), "{m}"),
                other => panic!("{named} was not refused: {other:?}"),
            };
        let ids = r#"[{"containerID": 0, "hostID": 1000, "size": 1}]"#;
        unsupported(
            &MINIMAL.replace(
                r#""hostname": "box","#,
                &format!(
                    r#""hostname": "box", "mounts": [{{"destination": "/m", "type": "bind", "source": "/tmp", "uidMappings": {ids}, "gidMappings": {ids}}}],"#
                ),
            ),
            "idmapped mount of /m",
        );
        unsupported(
            &MINIMAL.replace(
                r#""hostname": "box","#,
                r#""hostname": "box", "mounts": [{"destination": "/m", "type": "bind", "source": "/tmp", "options": ["rbind", "idmap"]}],"#,
            ),
            "idmapped mount of /m",
        );
        unsupported(
            &MINIMAL.replace(
                r#""linux": {"namespaces""#,
                r#""linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}, "namespaces""#,
            ),
            "linux.seccomp.listenerPath",
        );
        let net_sysctl = MINIMAL.replace(
            r#""linux": {"namespaces""#,
            r#""linux": {"sysctl": {"net.ipv4.ping_group_range": "0 0"}, "namespaces""#,
        );
        let plan = Plan::from_spec(&spec(&net_sysctl), Path::new("/b")).unwrap();
        assert_eq!(plan.rootfs.sysctl.len(), 1);
    }
}
