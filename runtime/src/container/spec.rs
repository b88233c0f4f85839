//! Builds the OCI runtime spec (`config.json`) of a container from the resolved image config
//! and the user's flags. This is the seam between docker-style options and the engine.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::{
    LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::ContainerError;
use super::options::{NetworkMode, Volume};
use super::security::{self, Security};
use super::user::ResolvedUser;
use crate::cgroups::Resources;
use crate::engine::{DEFAULT_PATH, OVERLAY_ANNOTATION};

/// Everything the spec is made from, already validated and resolved.
#[derive(Debug)]
pub struct SpecInput<'a> {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: &'a ResolvedUser,
    pub hostname: String,
    pub terminal: bool,
    pub network: NetworkMode,
    pub volumes: &'a [Volume],
    /// Per-container files bind-mounted over /etc/hostname, /etc/hosts, /etc/resolv.conf.
    pub etc_files: &'a [(PathBuf, &'static str)],
    /// Rootfs mount point, relative to the bundle.
    pub rootfs: PathBuf,
    /// overlayfs mount data for the rootfs.
    pub overlay: String,
    /// The container's cgroup, when the host has cgroups.
    pub cgroup: Option<CgroupSpec>,
    /// Capabilities, seccomp, devices, read-only root, tmpfs, ulimits.
    pub security: &'a Security,
}

/// The cgroup part of the spec.
#[derive(Debug)]
pub struct CgroupSpec {
    /// `linux.cgroupsPath`, e.g. `/carton/<id>`.
    pub path: String,
    pub resources: Resources,
    /// A private cgroup namespace (docker's default on v2; v1 hosts share the host's).
    pub namespace: bool,
}

/// Paths hidden from containers (docker's default list): kernel internals that leak host
/// information or allow host interference.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths visible but not writable.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub fn build(input: &SpecInput<'_>) -> Result<Spec, ContainerError> {
    let oci = |e: oci_spec::OciSpecError| ContainerError::Spec(e.to_string());
    let user = UserBuilder::default()
        .uid(input.user.uid)
        .gid(input.user.gid)
        .additional_gids(input.user.additional_gids.clone())
        .build()
        .map_err(oci)?;
    // oci-spec's builders start from runc-like defaults (capabilities, an RLIMIT_NOFILE of
    // 1024, empty cgroup resources). Those the engine implements later are cleared here so that
    // config.json says exactly what carton does.
    let mut process = ProcessBuilder::default()
        .terminal(input.terminal)
        .user(user)
        .args(input.args.clone())
        .env(input.env.clone())
        .cwd(input.cwd.clone())
        .no_new_privileges(input.security.no_new_privileges)
        .build()
        .map_err(oci)?;
    process.set_capabilities(Some(capabilities(&input.security.capabilities)?));
    process.set_rlimits(rlimits(&input.security.ulimits)?);

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if input.network.isolated() {
        namespaces.push(LinuxNamespaceType::Network);
    }
    if input.cgroup.as_ref().is_some_and(|c| c.namespace) {
        namespaces.push(LinuxNamespaceType::Cgroup);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(oci)?;
    // --privileged hides nothing of /proc and /sys.
    let (masked, readonly) = if input.security.privileged {
        (Vec::new(), Vec::new())
    } else {
        (strings(MASKED_PATHS), strings(READONLY_PATHS))
    };
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(masked)
        .readonly_paths(readonly)
        .build()
        .map_err(oci)?;
    linux.set_resources(None);
    linux.set_seccomp(input.security.seccomp.clone());
    let mut devices = input.security.devices.clone();
    if input.security.privileged {
        devices.extend(security::host_devices());
    }
    if !devices.is_empty() {
        linux.set_devices(Some(oci_devices(&devices)?));
    }
    if let Some(cgroup) = &input.cgroup {
        linux.set_cgroups_path(Some(PathBuf::from(&cgroup.path)));
        let mut resources = oci_resources(&cgroup.resources)?;
        resources.set_devices(Some(device_cgroup(&input.security.device_rules())?));
        linux.set_resources(Some(resources));
    }

    let mut mounts = default_mounts(input.security.privileged).map_err(oci)?;
    for tmpfs in &input.security.tmpfs {
        let options: Vec<&str> = tmpfs.options.iter().map(String::as_str).collect();
        mounts.push(
            mount(
                &tmpfs.destination.to_string_lossy(),
                "tmpfs",
                "tmpfs",
                &options,
            )
            .map_err(oci)?,
        );
    }
    if input.cgroup.is_some() {
        // Read-only, but for --privileged (docker's choice too).
        let options: &[&str] = if input.security.privileged {
            &["nosuid", "noexec", "nodev", "relatime"]
        } else {
            &["nosuid", "noexec", "nodev", "relatime", "ro"]
        };
        mounts.push(mount("/sys/fs/cgroup", "cgroup", "cgroup", options).map_err(oci)?);
    }
    for (source, destination) in input.etc_files {
        mounts.push(bind(source.clone(), destination.into(), false).map_err(oci)?);
    }
    for volume in input.volumes {
        mounts.push(
            bind(
                volume.source.clone(),
                volume.destination.clone(),
                volume.readonly,
            )
            .map_err(oci)?,
        );
    }

    SpecBuilder::default()
        .version("1.2.0")
        .root(
            RootBuilder::default()
                .path(input.rootfs.clone())
                .readonly(input.security.read_only)
                .build()
                .map_err(oci)?,
        )
        .process(process)
        .hostname(input.hostname.clone())
        .mounts(mounts)
        .linux(linux)
        .annotations(HashMap::from([(
            OVERLAY_ANNOTATION.to_string(),
            input.overlay.clone(),
        )]))
        .build()
        .map_err(oci)
}

/// `linux.resources` with only the fields carton sets (oci-spec's builders would add
/// defaults of their own).
pub fn oci_resources(r: &Resources) -> Result<oci_spec::runtime::LinuxResources, ContainerError> {
    use serde_json::{Map, Value, json};
    let mut memory = Map::new();
    if let Some(v) = r.memory {
        memory.insert("limit".into(), json!(v));
    }
    if let Some(v) = r.memory_swap {
        memory.insert("swap".into(), json!(v));
    }
    if let Some(v) = r.memory_reservation {
        memory.insert("reservation".into(), json!(v));
    }
    let mut cpu = Map::new();
    if let Some(v) = r.cpu_shares {
        cpu.insert("shares".into(), json!(v));
    }
    if let Some(v) = r.cpu_quota {
        cpu.insert("quota".into(), json!(v));
    }
    if let Some(v) = r.cpu_period {
        cpu.insert("period".into(), json!(v));
    }
    if let Some(v) = &r.cpuset_cpus {
        cpu.insert("cpus".into(), json!(v));
    }
    if let Some(v) = &r.cpuset_mems {
        cpu.insert("mems".into(), json!(v));
    }
    let mut out = Map::new();
    if !memory.is_empty() {
        out.insert("memory".into(), Value::Object(memory));
    }
    if !cpu.is_empty() {
        out.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(v) = r.pids_limit {
        out.insert("pids".into(), json!({ "limit": v }));
    }
    serde_json::from_value(Value::Object(out)).map_err(|e| ContainerError::Spec(e.to_string()))
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn mount(
    destination: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<Mount, oci_spec::OciSpecError> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(strings(options))
        .build()
}

fn bind(
    source: PathBuf,
    destination: PathBuf,
    readonly: bool,
) -> Result<Mount, oci_spec::OciSpecError> {
    let mode = if readonly { "ro" } else { "rw" };
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(strings(&["rbind", "rprivate", mode]))
        .build()
}

/// `process.capabilities`: the same set everywhere but ambient (docker's choice: a non-root user
/// loses them at exec unless a file grants them).
fn capabilities(
    caps: &std::collections::BTreeSet<String>,
) -> Result<oci_spec::runtime::LinuxCapabilities, ContainerError> {
    serde_json::from_value(serde_json::json!({
        "bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps, "ambient": [],
    }))
    .map_err(|e| ContainerError::Spec(format!("capabilities: {e}")))
}

/// `linux.resources.devices`: the allow-list the engine turns into the devices cgroup (v1)
/// or an eBPF program (v2).
fn device_cgroup(
    rules: &[crate::cgroups::devices::DeviceRule],
) -> Result<Vec<oci_spec::runtime::LinuxDeviceCgroup>, ContainerError> {
    let list: Vec<serde_json::Value> = rules.iter().map(|r| r.to_oci_json()).collect();
    serde_json::from_value(serde_json::Value::Array(list))
        .map_err(|e| ContainerError::Spec(format!("device cgroup: {e}")))
}

fn rlimits(
    ulimits: &[security::Ulimit],
) -> Result<Option<Vec<oci_spec::runtime::PosixRlimit>>, ContainerError> {
    if ulimits.is_empty() {
        return Ok(None);
    }
    let list: Vec<serde_json::Value> = ulimits
        .iter()
        .map(|u| serde_json::json!({"type": u.name, "soft": u.soft, "hard": u.hard}))
        .collect();
    serde_json::from_value(serde_json::Value::Array(list))
        .map(Some)
        .map_err(|e| ContainerError::Spec(format!("rlimits: {e}")))
}

fn oci_devices(
    devices: &[security::Device],
) -> Result<Vec<oci_spec::runtime::LinuxDevice>, ContainerError> {
    let list: Vec<serde_json::Value> = devices
        .iter()
        .map(|d| {
            serde_json::json!({
                "path": d.container, "type": d.kind.to_string(), "major": d.major,
                "minor": d.minor, "fileMode": d.mode, "uid": 0, "gid": 0,
            })
        })
        .collect();
    serde_json::from_value(serde_json::Value::Array(list))
        .map_err(|e| ContainerError::Spec(format!("devices: {e}")))
}

/// The kernel filesystems every container gets, with docker's options (sysfs writable only
/// for `--privileged`).
fn default_mounts(privileged: bool) -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    let sysfs: &[&str] = if privileged {
        &["nosuid", "noexec", "nodev"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount("/sys", "sysfs", "sysfs", sysfs)?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    ])
}

/// The container's environment: the image's, then carton's defaults, then the user's `-e`
/// (later entries win, first position kept), with PATH and HOME always present.
pub fn compose_env(
    image_env: &[String],
    hostname: &str,
    home: &str,
    terminal: bool,
    user_env: &[String],
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |entry: &str| {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        match env.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => env.push((k.to_string(), v.to_string())),
        }
    };
    set(&format!("PATH={DEFAULT_PATH}"));
    for e in image_env {
        set(e);
    }
    set(&format!("HOSTNAME={hostname}"));
    if terminal {
        set("TERM=xterm");
    }
    for e in user_env {
        set(e);
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), home.to_string()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> ResolvedUser {
        ResolvedUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10],
            home: "/home/app".into(),
        }
    }

    fn input<'a>(user: &'a ResolvedUser, volumes: &'a [Volume]) -> SpecInput<'a> {
        static SECURITY: std::sync::OnceLock<Security> = std::sync::OnceLock::new();
        let security = SECURITY.get_or_init(|| {
            super::super::security::SecurityFlags::default()
                .resolve()
                .unwrap()
        });
        SpecInput {
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user,
            hostname: "abc".into(),
            terminal: false,
            network: NetworkMode::None,
            volumes,
            etc_files: &[],
            rootfs: "merged".into(),
            overlay: "lowerdir=/l,upperdir=/u,workdir=/w".into(),
            cgroup: None,
            security,
        }
    }

    #[test]
    fn spec_round_trips_through_the_engine_plan() {
        let user = user();
        let volumes = [Volume {
            source: "/srv".into(),
            destination: "/data".into(),
            readonly: true,
        }];
        let spec = build(&input(&user, &volumes)).unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        let plan = crate::engine::Plan::from_spec(&back, std::path::Path::new("/b")).unwrap();
        assert_eq!(plan.process.uid, 1000);
        assert_eq!(plan.process.additional_gids, [10]);
        assert!(plan.new_network_namespace());
        assert_eq!(
            plan.rootfs.overlay.as_deref(),
            Some("lowerdir=/l,upperdir=/u,workdir=/w")
        );
        let data = plan.rootfs.mounts.last().unwrap();
        assert_eq!(data.destination(), std::path::Path::new("/data"));
        assert!(data.options().as_ref().unwrap().contains(&"ro".to_string()));
    }

    #[test]
    fn host_network_has_no_network_namespace() {
        let user = user();
        let mut i = input(&user, &[]);
        i.network = NetworkMode::Host;
        let spec = build(&i).unwrap();
        let plan = crate::engine::Plan::from_spec(&spec, std::path::Path::new("/b")).unwrap();
        assert!(!plan.new_network_namespace());
    }

    #[test]
    fn limits_reach_the_engine_plan() {
        let user = user();
        let mut i = input(&user, &[]);
        i.cgroup = Some(CgroupSpec {
            path: "/carton/abc".into(),
            resources: Resources {
                memory: Some(64 << 20),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                pids_limit: Some(10),
                ..Default::default()
            },
            namespace: true,
        });
        let spec = build(&i).unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        let plan = crate::engine::Plan::from_spec(
            &serde_json::from_str(&json).unwrap(),
            std::path::Path::new("/b"),
        )
        .unwrap();
        let cgroup = plan.cgroup.unwrap();
        assert_eq!(cgroup.path, "/carton/abc");
        assert_eq!(cgroup.resources.memory, Some(64 << 20));
        assert_eq!(cgroup.resources.pids_limit, Some(10));
        assert!(plan.cgroup_namespace);
        assert!(
            plan.rootfs
                .mounts
                .iter()
                .any(|m| m.typ().as_deref() == Some("cgroup"))
        );
    }

    #[test]
    fn environment_precedence() {
        let env = compose_env(
            &["PATH=/img/bin".into(), "A=image".into()],
            "host1",
            "/root",
            true,
            &["A=user".into(), "HOME=/custom".into()],
        );
        assert_eq!(
            env,
            [
                "PATH=/img/bin",
                "A=user",
                "HOSTNAME=host1",
                "TERM=xterm",
                "HOME=/custom"
            ]
        );
        let env = compose_env(&[], "h", "/root", false, &[]);
        assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));
        assert_eq!(env.last().unwrap(), "HOME=/root");
    }
}
