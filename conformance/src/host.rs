//! Facts about the host as the test process sees them: mount table, namespaces, processes,
//! network interfaces, file hashes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The test process's /proc/self/mountinfo, verbatim.
pub fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo")
}

/// Lines of /proc/self/mountinfo that mention `path` anywhere (mount point, root, source or
/// options such as overlay's `upperdir=`).
pub fn mount_lines_mentioning(path: &Path) -> Vec<String> {
    let needle = escape_mount_path(&path.to_string_lossy());
    mountinfo()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(String::from)
        .collect()
}

/// Mount point (5th field) of a mountinfo line, unescaped.
pub fn mount_point(line: &str) -> Option<PathBuf> {
    line.split(' ')
        .nth(4)
        .map(|p| PathBuf::from(unescape_mount_path(p)))
}

fn escape_mount_path(p: &str) -> String {
    p.replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012")
}

fn unescape_mount_path(p: &str) -> String {
    let bytes = p.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lines present in `after` but not `before` and vice versa, for readable failures.
pub fn line_diff(before: &str, after: &str) -> String {
    let b: BTreeSet<&str> = before.lines().collect();
    let a: BTreeSet<&str> = after.lines().collect();
    let mut out = String::new();
    for l in b.difference(&a) {
        out.push_str(&format!("- {l}\n"));
    }
    for l in a.difference(&b) {
        out.push_str(&format!("+ {l}\n"));
    }
    if out.is_empty() && before != after {
        out.push_str("(same lines, different order or duplicates)\n");
    }
    out
}

/// The namespace link of the test process, e.g. `ipc:[4026531839]`.
pub fn ns_link(ns: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{ns}"))
        .unwrap_or_else(|e| panic!("readlink /proc/self/ns/{ns}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// The host's hostname.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .expect("gethostname")
        .to_string_lossy()
        .into_owned()
}

/// Interface names listed in a /proc/net/dev text.
pub fn interfaces_in_proc_net_dev(text: &str) -> BTreeSet<String> {
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The host's network interfaces (from the test process's /proc/net/dev).
pub fn host_interfaces() -> BTreeSet<String> {
    interfaces_in_proc_net_dev(
        &std::fs::read_to_string("/proc/net/dev").expect("read /proc/net/dev"),
    )
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    sha256_hex(&data)
}

/// sha256 of bytes, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

struct ProcInfo {
    ppid: i32,
    nspid: Vec<i32>,
}

fn proc_info(pid: i32) -> Option<ProcInfo> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut ppid = None;
    let mut nspid = Vec::new();
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("PPid:") {
            ppid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("NSpid:") {
            nspid = v
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
        }
    }
    Some(ProcInfo { ppid: ppid?, nspid })
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Host pids of every process descending from `ancestor` (excluded).
pub fn descendants(ancestor: i32) -> Vec<i32> {
    let infos: BTreeMap<i32, ProcInfo> = all_pids()
        .into_iter()
        .filter_map(|p| Some((p, proc_info(p)?)))
        .collect();
    infos
        .keys()
        .copied()
        .filter(|&pid| {
            let mut cur = pid;
            for _ in 0..64 {
                let Some(info) = infos.get(&cur) else {
                    return false;
                };
                if info.ppid == ancestor {
                    return true;
                }
                if info.ppid <= 1 {
                    return false;
                }
                cur = info.ppid;
            }
            false
        })
        .collect()
}

/// Host pid of the init (pid 1 of a child pid namespace) of the container that a foreground
/// `carton run` with host pid `carton` started: a descendant whose NSpid ends in 1. Waits up
/// to `timeout` for it to appear.
pub fn container_init_pid(carton: i32, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = descendants(carton).into_iter().find(|&pid| {
            proc_info(pid).is_some_and(|i| i.nspid.len() >= 2 && i.nspid.last() == Some(&1))
        });
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_escape_round_trip() {
        let p = "/tmp/a b\\c";
        assert_eq!(unescape_mount_path(&escape_mount_path(p)), p);
        let line = "36 35 98:0 /mnt1 /mnt\\040x rw,noatime master:1 - ext3 /dev/root rw";
        assert_eq!(mount_point(line).unwrap(), PathBuf::from("/mnt x"));
    }

    #[test]
    fn proc_net_dev_parsing() {
        let text = "Inter-|   Receive\n face |bytes\n    lo: 1 2 3\n  eth0: 4 5 6\n";
        let names = interfaces_in_proc_net_dev(text);
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["eth0", "lo"]);
    }

    #[test]
    fn sha256_known_value() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn diff_shows_added_and_removed() {
        let d = line_diff("a\nb\n", "b\nc\n");
        assert!(
            d.contains("- a") && d.contains("+ c") && !d.contains("b"),
            "{d}"
        );
    }
}
