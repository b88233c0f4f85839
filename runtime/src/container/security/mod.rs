//! The security options of `run`: capabilities (`--cap-add/--cap-drop`, docker's default set),
//! seccomp (`--security-opt seccomp=…`), no-new-privileges, `--privileged`, `--read-only`,
//! `--tmpfs`, `--device` and `--ulimit`, checked and resolved into what the spec needs.

pub mod seccomp_profile;

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxSeccomp;

use super::ContainerError;
use crate::engine::capabilities;

/// docker's default capabilities.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The flags as typed.
#[derive(Debug, Clone, Default)]
pub struct SecurityFlags {
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub read_only: bool,
    pub tmpfs: Vec<String>,
    pub security_opt: Vec<String>,
    pub devices: Vec<String>,
    pub ulimits: Vec<String>,
}

/// A tmpfs mount (`--tmpfs DIR[:OPTIONS]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    pub destination: PathBuf,
    pub options: Vec<String>,
}

/// A host device made available (`--device HOST[:CTR][:PERMS]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub host: PathBuf,
    pub container: PathBuf,
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    /// cgroup access: some of "rwm".
    pub access: String,
}

/// `--ulimit NAME=SOFT[:HARD]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// OCI name, e.g. `RLIMIT_NOFILE`.
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// What the spec is built from.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub privileged: bool,
    /// Kernel names of the capabilities the container gets.
    pub capabilities: BTreeSet<String>,
    pub seccomp: Option<LinuxSeccomp>,
    pub no_new_privileges: bool,
    pub read_only: bool,
    pub tmpfs: Vec<Tmpfs>,
    pub devices: Vec<Device>,
    pub ulimits: Vec<Ulimit>,
}

fn invalid(message: String) -> ContainerError {
    ContainerError::InvalidInput(message)
}

impl SecurityFlags {
    pub fn resolve(&self) -> Result<Security, ContainerError> {
        let capabilities = self.capabilities()?;
        let mut seccomp = Seccomp::Default;
        let mut no_new_privileges = false;
        for option in &self.security_opt {
            let (key, value) = option
                .split_once(['=', ':'])
                .map_or((option.as_str(), None), |(k, v)| (k, Some(v)));
            match (key, value) {
                ("seccomp", Some("unconfined")) => seccomp = Seccomp::Unconfined,
                ("seccomp", Some("")) => {
                    return Err(invalid(
                        "--security-opt seccomp= needs \"unconfined\" or a profile file".into(),
                    ));
                }
                ("seccomp", Some(path)) => seccomp = Seccomp::File(PathBuf::from(path)),
                ("no-new-privileges", None | Some("true")) => no_new_privileges = true,
                ("no-new-privileges", Some("false")) => no_new_privileges = false,
                // Hosts without AppArmor or SELinux: "off" is what carton does anyway.
                ("apparmor", Some("unconfined")) | ("label", Some("disable")) => {}
                _ => {
                    return Err(invalid(format!(
                        "invalid --security-opt {option:?}: carton knows seccomp=unconfined|FILE, no-new-privileges[=true|false]"
                    )));
                }
            }
        }
        let seccomp = match (self.privileged, seccomp) {
            // --privileged means no filter unless a profile file was given.
            (true, Seccomp::Default) | (_, Seccomp::Unconfined) => None,
            (false, Seccomp::Default) => Some(seccomp_profile::default_profile(&capabilities)),
            (_, Seccomp::File(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    invalid(format!(
                        "cannot read seccomp profile {}: {e}",
                        path.display()
                    ))
                })?;
                let profile = seccomp_profile::from_docker_json(&text, &capabilities)
                    .map_err(|e| invalid(format!("seccomp profile {}: {e}", path.display())))?;
                // Refuse now what the engine could not compile later.
                crate::engine::seccomp::compile(&profile)
                    .map_err(|e| invalid(format!("seccomp profile {}: {e}", path.display())))?;
                Some(profile)
            }
        };
        Ok(Security {
            privileged: self.privileged,
            capabilities,
            seccomp,
            no_new_privileges,
            read_only: self.read_only,
            tmpfs: self
                .tmpfs
                .iter()
                .map(|t| parse_tmpfs(t))
                .collect::<Result<_, _>>()?,
            devices: self
                .devices
                .iter()
                .map(|d| parse_device(d))
                .collect::<Result<_, _>>()?,
            ulimits: self
                .ulimits
                .iter()
                .map(|u| parse_ulimit(u))
                .collect::<Result<_, _>>()?,
        })
    }

    /// docker's rules: defaults (or all with --privileged), `--cap-drop ALL` empties, `--cap-add
    /// ALL` fills, then the named additions and removals.
    fn capabilities(&self) -> Result<BTreeSet<String>, ContainerError> {
        let all: BTreeSet<String> = capabilities::NAMES.iter().map(|s| s.to_string()).collect();
        let canonical = |name: &str, flag: &str| -> Result<Option<String>, ContainerError> {
            if name.eq_ignore_ascii_case("ALL") {
                return Ok(None);
            }
            capabilities::number(name)
                .map(|n| Some(capabilities::NAMES[n as usize].to_string()))
                .ok_or_else(|| invalid(format!("unknown capability {name:?} in {flag}")))
        };
        let adds: Vec<Option<String>> = self
            .cap_add
            .iter()
            .map(|c| canonical(c, "--cap-add"))
            .collect::<Result<_, _>>()?;
        let drops: Vec<Option<String>> = self
            .cap_drop
            .iter()
            .map(|c| canonical(c, "--cap-drop"))
            .collect::<Result<_, _>>()?;
        let mut set: BTreeSet<String> = if self.privileged || adds.contains(&None) {
            all.clone()
        } else if drops.contains(&None) {
            BTreeSet::new()
        } else {
            DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect()
        };
        set.extend(adds.into_iter().flatten());
        for drop in drops.into_iter().flatten() {
            set.remove(&drop);
        }
        Ok(set)
    }
}

enum Seccomp {
    Default,
    Unconfined,
    File(PathBuf),
}

fn parse_tmpfs(text: &str) -> Result<Tmpfs, ContainerError> {
    let (dir, options) = text.split_once(':').unwrap_or((text, ""));
    if !dir.starts_with('/') || dir == "/" {
        return Err(invalid(format!(
            "invalid --tmpfs {text:?}: the path must be absolute and not /"
        )));
    }
    let mut opts: Vec<String> = vec!["nosuid".into(), "nodev".into(), "noexec".into()];
    if options.is_empty() {
        opts.push("size=65536k".into());
    } else {
        opts.extend(
            options
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string),
        );
    }
    Ok(Tmpfs {
        destination: PathBuf::from(dir),
        options: opts,
    })
}

fn parse_device(text: &str) -> Result<Device, ContainerError> {
    let parts: Vec<&str> = text.split(':').collect();
    let bad = |why: &str| invalid(format!("invalid --device {text:?}: {why}"));
    let (host, container, access) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, c] if c.chars().all(|ch| "rwm".contains(ch)) && !c.starts_with('/') => (*h, *h, *c),
        [h, c] => (*h, *c, "rwm"),
        [h, c, a] => (*h, *c, *a),
        _ => return Err(bad("expected HOST[:CONTAINER][:PERMISSIONS]")),
    };
    if !host.starts_with('/') || !container.starts_with('/') {
        return Err(bad("paths must be absolute"));
    }
    if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
        return Err(bad("permissions are some of r, w, m"));
    }
    let meta = std::fs::metadata(host).map_err(|e| bad(&e.to_string()))?;
    let kind = if meta.file_type().is_char_device() {
        'c'
    } else if meta.file_type().is_block_device() {
        'b'
    } else {
        return Err(bad("not a device"));
    };
    let rdev = meta.rdev();
    Ok(Device {
        host: PathBuf::from(host),
        container: PathBuf::from(container),
        kind,
        major: libc::major(rdev) as u64,
        minor: libc::minor(rdev) as u64,
        mode: meta.mode() & 0o7777,
        access: access.to_string(),
    })
}

const ULIMITS: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

fn parse_ulimit(text: &str) -> Result<Ulimit, ContainerError> {
    let bad = |why: &str| invalid(format!("invalid --ulimit {text:?}: {why}"));
    let (name, values) = text
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=SOFT[:HARD]"))?;
    if !ULIMITS.contains(&name) {
        return Err(bad(&format!("unknown limit {name:?}")));
    }
    let number = |v: &str| -> Result<u64, ContainerError> {
        if v == "-1" || v == "unlimited" {
            Ok(u64::MAX)
        } else {
            v.parse()
                .map_err(|_| bad(&format!("{v:?} is not a number")))
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (number(s)?, number(h)?),
        None => {
            let v = number(values)?;
            (v, v)
        }
    };
    if soft > hard {
        return Err(bad("the soft limit is above the hard limit"));
    }
    Ok(Ulimit {
        name: format!("RLIMIT_{}", name.to_ascii_uppercase()),
        soft,
        hard,
    })
}

impl Security {
    /// The device allow-list: docker's defaults plus `--device`s, or everything for
    /// `--privileged`.
    pub fn device_rules(&self) -> Vec<crate::cgroups::devices::DeviceRule> {
        use crate::cgroups::devices::{DeviceRule, default_rules};
        if self.privileged {
            return vec![DeviceRule {
                allow: true,
                kind: None,
                major: None,
                minor: None,
                access: "rwm".into(),
            }];
        }
        let mut rules = default_rules();
        rules.extend(self.devices.iter().map(|d| {
            // The node is made inside the container (mknod), whatever the access asked for
            // using it: docker's list lets every node be made; carton's lets these be.
            let mut access = d.access.clone();
            if !access.contains('m') {
                access.push('m');
            }
            DeviceRule {
                allow: true,
                kind: Some(d.kind),
                major: Some(d.major as u32),
                minor: Some(d.minor as u32),
                access,
            }
        }));
        rules
    }
}

/// Every device node of the host's /dev (not /dev/pts), for `--privileged`.
pub fn host_devices() -> Vec<Device> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::from("/dev")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                if !matches!(
                    path.file_name().and_then(|n| n.to_str()),
                    Some("pts" | "shm" | "mqueue")
                ) {
                    dirs.push(path);
                }
                continue;
            }
            let kind = if ft.is_char_device() {
                'c'
            } else if ft.is_block_device() {
                'b'
            } else {
                continue;
            };
            // The container gets its own console and tty (and a pty namespace).
            if matches!(
                path.to_str(),
                Some("/dev/console" | "/dev/tty" | "/dev/ptmx")
            ) {
                continue;
            }
            let rdev = meta.rdev();
            out.push(Device {
                host: path.clone(),
                container: path,
                kind,
                major: libc::major(rdev) as u64,
                minor: libc::minor(rdev) as u64,
                mode: meta.mode() & 0o7777,
                access: "rwm".into(),
            });
        }
    }
    out.sort_by(|a, b| a.container.cmp(&b.container));
    out
}

/// True when `path` names the device of `device` (for tests).
pub fn same_device(device: &Device, path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| {
        libc::major(m.rdev()) as u64 == device.major && libc::minor(m.rdev()) as u64 == device.minor
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> SecurityFlags {
        SecurityFlags::default()
    }

    #[test]
    fn capability_rules() {
        let default = flags().resolve().unwrap().capabilities;
        assert_eq!(default.len(), DEFAULT_CAPABILITIES.len());
        let f = SecurityFlags {
            cap_add: vec!["sys_admin".into()],
            cap_drop: vec!["CAP_NET_RAW".into()],
            ..flags()
        };
        let caps = f.resolve().unwrap().capabilities;
        assert!(caps.contains("CAP_SYS_ADMIN") && !caps.contains("CAP_NET_RAW"));
        let f = SecurityFlags {
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["KILL".into()],
            ..flags()
        };
        assert_eq!(
            f.resolve().unwrap().capabilities,
            BTreeSet::from(["CAP_KILL".to_string()])
        );
        let f = SecurityFlags {
            cap_add: vec!["ALL".into()],
            cap_drop: vec!["MKNOD".into()],
            ..flags()
        };
        let caps = f.resolve().unwrap().capabilities;
        assert_eq!(caps.len(), capabilities::NAMES.len() - 1);
        let f = SecurityFlags {
            cap_add: vec!["CAP_FLY".into()],
            ..flags()
        };
        assert!(
            f.resolve()
                .unwrap_err()
                .to_string()
                .contains("unknown capability")
        );
        let p = SecurityFlags {
            privileged: true,
            ..flags()
        }
        .resolve()
        .unwrap();
        assert_eq!(p.capabilities.len(), capabilities::NAMES.len());
        assert!(p.seccomp.is_none());
    }

    #[test]
    fn security_options() {
        let s = flags().resolve().unwrap();
        assert!(s.seccomp.is_some() && !s.no_new_privileges);
        let f = SecurityFlags {
            security_opt: vec!["seccomp=unconfined".into(), "no-new-privileges".into()],
            ..flags()
        };
        let s = f.resolve().unwrap();
        assert!(s.seccomp.is_none() && s.no_new_privileges);
        for bad in ["bogus", "seccomp=/no/such/file", "apparmor=docker-default"] {
            let f = SecurityFlags {
                security_opt: vec![bad.into()],
                ..flags()
            };
            assert!(f.resolve().is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("p.json");
        std::fs::write(&broken, "{\"defaultAction\": ").unwrap();
        let f = SecurityFlags {
            security_opt: vec![format!("seccomp={}", broken.display())],
            ..flags()
        };
        assert!(f.resolve().is_err());
    }

    #[test]
    fn tmpfs_devices_and_ulimits() {
        let t = parse_tmpfs("/run:size=1m,mode=1777").unwrap();
        assert_eq!(
            t.options,
            ["nosuid", "nodev", "noexec", "size=1m", "mode=1777"]
        );
        assert!(parse_tmpfs("run").is_err() && parse_tmpfs("/").is_err());
        let d = parse_device("/dev/null:/dev/mynull:rw").unwrap();
        assert_eq!((d.kind, d.major, d.minor), ('c', 1, 3));
        assert_eq!(d.container, Path::new("/dev/mynull"));
        assert_eq!(parse_device("/dev/zero:r").unwrap().access, "r");
        assert!(parse_device("/etc/passwd").is_err());
        assert!(parse_device("/dev/null:/x:q").is_err());
        let u = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!(
            (u.name.as_str(), u.soft, u.hard),
            ("RLIMIT_NOFILE", 1024, 2048)
        );
        assert_eq!(parse_ulimit("core=-1").unwrap().soft, u64::MAX);
        for bad in ["nofile", "files=1", "nofile=x", "nofile=10:5"] {
            assert!(parse_ulimit(bad).is_err(), "{bad}");
        }
        assert!(
            host_devices()
                .iter()
                .any(|d| d.container == Path::new("/dev/null"))
        );
    }
}
