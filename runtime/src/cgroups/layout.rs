//! Which cgroup hierarchies this host has, read from a mountinfo text.
//!
//! - v1: one mount per controller set (`cpu`, `memory`, `cpu,cpuacct`…);
//! - v2: one `cgroup2` mount with every controller;
//! - hybrid: v1 controllers plus a `cgroup2` mount (systemd's /sys/fs/cgroup/unified) that holds
//!   no controller carton uses. It is managed as v1 — the v2 tree is ignored rather than refused
//!   (crun refuses such hosts; carton must run on them).

use std::path::PathBuf;

/// One mounted v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Controllers attached to it (`["cpu", "cpuacct"]`).
    pub controllers: Vec<String>,
    /// Where it is mounted.
    pub mount_point: PathBuf,
}

impl V1Hierarchy {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// The directory name docker uses for it under /sys/fs/cgroup (`cpu,cpuacct`).
    pub fn name(&self) -> String {
        self.mount_point
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.controllers.join(","))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Controllers on v1 hierarchies (pure v1, or hybrid with `unified` holding no controller
    /// carton manages).
    V1 {
        hierarchies: Vec<V1Hierarchy>,
        unified: Option<PathBuf>,
    },
    /// A single cgroup2 hierarchy.
    V2 { mount_point: PathBuf },
    /// No cgroup filesystem mounted at all.
    None,
}

impl Layout {
    /// Reads /proc/self/mountinfo.
    pub fn detect() -> Layout {
        match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(text) => Layout::from_mountinfo(&text),
            Err(_) => Layout::None,
        }
    }

    pub fn from_mountinfo(text: &str) -> Layout {
        let mut hierarchies: Vec<V1Hierarchy> = Vec::new();
        let mut unified = None;
        for line in text.lines() {
            // "<id> <parent> <maj:min> <root> <mount point> <opts> [optional…] - <type> <source> <super opts>"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let rest: Vec<&str> = right.split(' ').collect();
            let (Some(mount_point), Some(fs_type)) = (fields.get(4), rest.first()) else {
                continue;
            };
            let mount_point = PathBuf::from(unescape(mount_point));
            match *fs_type {
                "cgroup2" => {
                    unified.get_or_insert(mount_point);
                }
                "cgroup" => {
                    let controllers: Vec<String> = rest
                        .get(2)
                        .map(|opts| {
                            opts.split(',')
                                .filter(|o| KNOWN_V1_CONTROLLERS.contains(o))
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default();
                    // Named hierarchies (name=systemd) carry no controller; a hierarchy mounted
                    // twice is used through its first mount.
                    if controllers.is_empty()
                        || hierarchies.iter().any(|h| h.controllers == controllers)
                    {
                        continue;
                    }
                    hierarchies.push(V1Hierarchy {
                        controllers,
                        mount_point,
                    });
                }
                _ => {}
            }
        }
        match (hierarchies.is_empty(), unified) {
            (false, unified) => Layout::V1 {
                hierarchies,
                unified,
            },
            (true, Some(mount_point)) => Layout::V2 { mount_point },
            (true, None) => Layout::None,
        }
    }

    /// "v1", "v2", "hybrid" or "none", as users call them.
    pub fn describe(&self) -> &'static str {
        match self {
            Layout::V1 { unified: None, .. } => "v1",
            Layout::V1 {
                unified: Some(_), ..
            } => "hybrid",
            Layout::V2 { .. } => "v2",
            Layout::None => "none",
        }
    }
}

const KNOWN_V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
];

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const V2: &str = "\
25 22 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const DEBIAN11_V1: &str = "\
26 22 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
30 26 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct
31 26 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:11 - cgroup cgroup rw,memory
32 26 0:29 / /sys/fs/cgroup/cpu,cpuacct/again rw shared:12 - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn hybrid_is_managed_as_v1() {
        let layout = Layout::from_mountinfo(HYBRID);
        let Layout::V1 {
            hierarchies,
            unified,
        } = &layout
        else {
            panic!("{layout:?}");
        };
        let names: Vec<String> = hierarchies.iter().map(|h| h.name()).collect();
        assert_eq!(names, ["cpu", "cpuacct", "memory", "pids"]);
        assert_eq!(
            unified.as_deref(),
            Some(std::path::Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(layout.describe(), "hybrid");
    }

    #[test]
    fn pure_v2() {
        assert_eq!(
            Layout::from_mountinfo(V2),
            Layout::V2 {
                mount_point: "/sys/fs/cgroup".into()
            }
        );
    }

    #[test]
    fn co_mounted_controllers_and_duplicates() {
        let Layout::V1 { hierarchies, .. } = Layout::from_mountinfo(DEBIAN11_V1) else {
            panic!();
        };
        assert_eq!(hierarchies.len(), 2);
        assert!(hierarchies[0].has("cpu") && hierarchies[0].has("cpuacct"));
        assert_eq!(hierarchies[0].name(), "cpu,cpuacct");
    }

    #[test]
    fn nothing_mounted() {
        assert_eq!(Layout::from_mountinfo(""), Layout::None);
        assert_eq!(Layout::None.describe(), "none");
    }

    #[test]
    fn escaped_mount_points() {
        let text = "1 0 0:1 / /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            Layout::from_mountinfo(text),
            Layout::V2 {
                mount_point: "/sys/fs/my cgroup".into()
            }
        );
    }
}
