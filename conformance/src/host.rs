//! Facts about the host as the test process sees them: mount table, namespaces, processes,
//! network interfaces, file hashes and extended attributes.

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

/// Detaches the mounts of these mountinfo lines, deepest first (MNT_DETACH), so that the
/// directory holding them can be removed; failures are printed with `who` as the prefix.
pub fn detach_mounts(lines: &[String], who: &str) {
    let mut points: Vec<PathBuf> = lines.iter().filter_map(|l| mount_point(l)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        if let Err(e) = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("{who}: umount -l {}: {e}", point.display());
        }
    }
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

/// Sets the extended attribute `name` of `path`, not following a final symlink.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let (path, name) = c_path_and_name(path, name);
    // SAFETY: NUL-terminated strings and a value slice that outlive the call.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The value of the extended attribute `name` of `path` (not following a final symlink), or
/// None when the entry has no such attribute.
pub fn get_xattr(path: &Path, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    let (path, name) = c_path_and_name(path, name);
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: NUL-terminated strings; the buffer is writable for its whole length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

fn c_path_and_name(path: &Path, name: &str) -> (std::ffi::CString, std::ffi::CString) {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    let name = std::ffi::CString::new(name).expect("xattr name without NUL");
    (path, name)
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

/// A process identified by its pid *and* its start time (clock ticks since boot, field 22 of
/// /proc/<pid>/stat), so that a recycled pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    pub start_time: u64,
}

/// Fields of /proc/<pid>/stat after the `(comm)` field: index 0 is the state (field 3).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parentheses: the fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(String::from).collect())
}

impl Process {
    /// The process that has `pid` now, if any.
    pub fn of(pid: i32) -> Option<Process> {
        if pid <= 0 {
            return None;
        }
        let start_time = stat_fields(pid)?.get(19)?.parse().ok()?;
        Some(Process { pid, start_time })
    }

    /// The process's state letter (`R`, `S`, `Z`…) while it (this very process) exists.
    fn state(&self) -> Option<char> {
        let fields = stat_fields(self.pid)?;
        let start: u64 = fields.get(19)?.parse().ok()?;
        (start == self.start_time).then(|| fields[0].chars().next())?
    }

    /// True while the process exists and is not a zombie (a zombie has exited: only its
    /// parent's `wait` is missing).
    pub fn is_alive(&self) -> bool {
        matches!(self.state(), Some(s) if s != 'Z' && s != 'X')
    }

    /// True while the pid still names this process, zombie or not (false once it was reaped).
    pub fn exists(&self) -> bool {
        self.state().is_some()
    }

    /// Its parent process, while it is alive.
    pub fn parent(&self) -> Option<Process> {
        let fields = stat_fields(self.pid)?;
        let start: u64 = fields.get(19)?.parse().ok()?;
        if start != self.start_time {
            return None;
        }
        Process::of(fields.get(1)?.parse().ok()?)
    }

    /// Its command line, arguments joined by spaces (empty for zombies and kernel threads).
    pub fn cmdline(&self) -> String {
        std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }

    /// The NSpid line: its pid in each pid namespace, outermost first.
    pub fn nspids(&self) -> Vec<i32> {
        if !self.exists() {
            return Vec::new();
        }
        proc_info(self.pid).map(|i| i.nspid).unwrap_or_default()
    }

    /// `readlink /proc/<pid>/ns/<ns>`, e.g. `pid:[4026532201]`.
    pub fn ns_link(&self, ns: &str) -> Option<String> {
        let link = std::fs::read_link(format!("/proc/{}/ns/{ns}", self.pid)).ok()?;
        self.exists().then(|| link.to_string_lossy().into_owned())
    }

    /// /proc/<pid>/cgroup as the test process sees it.
    pub fn cgroup(&self) -> Option<String> {
        let text = std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid)).ok()?;
        self.exists().then_some(text)
    }

    /// Sends `sig` if the process is still this one (never to a recycled pid).
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> bool {
        self.exists() && nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig).is_ok()
    }

    /// Waits up to `timeout` until the process is gone for good (reaped). True if it is.
    pub fn wait_reaped(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.exists() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Waits up to `timeout` until the process has exited (zombie or reaped). True if it has.
    pub fn wait_dead(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.is_alive() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.cmdline())
    }
}

/// Live (non-zombie) processes other than the test process itself that hold on to any of
/// `paths` — through their command line, their working directory, their root directory or an
/// open file descriptor — or whose command line mentions one of `words` (container ids).
/// Each entry is the process and the reason, for a readable report.
///
/// This is how the suites find leaked carton processes (supervisors, stuck CLIs) of one
/// fixture: every such process was started with that fixture's `--root` on its command line,
/// or keeps a file of it open (the container log), or names a container id. Container
/// processes themselves live in another mount namespace; they are found through their cgroup
/// (see `cgroup::existing_dirs`) and their recorded pids instead.
pub fn processes_referencing(paths: &[&Path], words: &[&str]) -> Vec<(Process, String)> {
    let me = std::process::id() as i32;
    let paths: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let under = |target: &Path| -> Option<String> {
        let t = target.to_string_lossy();
        paths
            .iter()
            .find(|p| t == p.as_str() || t.starts_with(&format!("{p}/")))
            .map(|_| t.into_owned())
    };
    let mut found = Vec::new();
    for pid in all_pids() {
        if pid == me {
            continue;
        }
        let Some(process) = Process::of(pid) else {
            continue;
        };
        if !process.is_alive() {
            continue;
        }
        let cmdline = process.cmdline();
        let reason = if let Some(p) = paths.iter().find(|p| cmdline.contains(p.as_str())) {
            Some(format!("command line mentions {p}"))
        } else if let Some(w) = words.iter().find(|w| !w.is_empty() && cmdline.contains(*w)) {
            Some(format!("command line mentions {w}"))
        } else {
            ["cwd", "root"]
                .iter()
                .find_map(|link| {
                    let target = std::fs::read_link(format!("/proc/{pid}/{link}")).ok()?;
                    under(&target).map(|t| format!("{link} is {t}"))
                })
                .or_else(|| {
                    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
                    fds.filter_map(Result::ok).find_map(|fd| {
                        let target = std::fs::read_link(fd.path()).ok()?;
                        under(&target)
                            .map(|t| format!("fd {} is {t}", fd.file_name().to_string_lossy()))
                    })
                })
        };
        if let Some(reason) = reason {
            if process.is_alive() {
                found.push((process, reason));
            }
        }
    }
    found
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
