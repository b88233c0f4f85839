//! What the image scenarios need besides the fixture: committing (and holding a commit still
//! in the middle of its read, to look at the freezer), a container's view of a directory tree
//! as comparable lines, mtimes and xattrs to carry through, docker's table cells, ages and
//! sizes, image archives built by hand (hostile ones included),
//! and the external tools of the interop scenarios — skopeo, umoci, podman — run with a
//! deadline, in the scenario's network namespace, podman with a private configuration and
//! storage.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cgroup;
use crate::containers::{IDLE_UNTIL_TERM, SYNC_SH};
use crate::host::sha256_hex;
use crate::{Carton, is_image_id, lines};

/// Deadline of one external tool invocation (podman's first run sets up its storage).
pub const TOOL_DEADLINE: Duration = Duration::from_secs(120);

/// The freezer file of a container's cgroup: v1's state, v2's request.
pub const FREEZER: cgroup::File = cgroup::File {
    v1: ("freezer", "freezer.state"),
    v2: "cgroup.freeze",
};

/// Where v2 reports whether a cgroup *is* frozen (`frozen 1`); v1's freezer.state says both.
const FREEZER_EFFECT: cgroup::File = cgroup::File {
    v1: ("freezer", "freezer.state"),
    v2: "cgroup.events",
};

/// The freezer of container `id` as the host reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreezerState {
    /// Someone asked for it to be frozen (v1 FREEZING or FROZEN, v2 cgroup.freeze 1).
    pub requested: bool,
    /// Every process of it is frozen (v1 FROZEN, v2 `frozen 1` in cgroup.events).
    pub frozen: bool,
}

/// Reads the freezer of container `id`'s cgroup; panics when it has none.
#[track_caller]
pub fn freezer_state(id: &str) -> FreezerState {
    let read = |file| {
        let path = cgroup::host_path(id, file).expect("the container's freezer");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    match cgroup::version() {
        Some(cgroup::Version::V1) => {
            let state = read(FREEZER);
            FreezerState {
                requested: state.trim() != "THAWED",
                frozen: state.trim() == "FROZEN",
            }
        }
        _ => FreezerState {
            requested: read(FREEZER).trim() == "1",
            frozen: cgroup::keyed(&read(FREEZER_EFFECT), "frozen") == Some(1),
        },
    }
}

/// A `carton commit` held still (SIGSTOP) in the middle of reading a container's upper
/// directory: whatever it does to the container for the read — freeze it or not — is in
/// place and stays so until [`StoppedCommit::resume`]. Resumed when dropped, so that a failing
/// scenario never leaves a container frozen.
pub struct StoppedCommit {
    running: Option<crate::Running>,
}

impl StoppedCommit {
    /// Starts `carton commit <args…>` and stops it while it holds `file` (a big file in the
    /// container's `upper/`) open, which it only does while it reads the layer. Tries again
    /// (a new commit) when a commit finished before it was caught; panics after 10 misses.
    #[track_caller]
    pub fn catch(ct: &Carton, args: &[&str], file: &Path) -> StoppedCommit {
        let file = file
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for _ in 0..10 {
            let mut cmd = ct.cmd();
            cmd.arg("commit")
                .args(args)
                .timeout(Duration::from_secs(300));
            let mut running = cmd.spawn();
            while running.try_wait().is_none() {
                if has_open(running.pid(), &file) {
                    running.signal(nix::sys::signal::Signal::SIGSTOP);
                    wait_stopped(running.pid());
                    // Stopped now: if it still holds the file, it is inside the read.
                    if has_open(running.pid(), &file) {
                        return StoppedCommit {
                            running: Some(running),
                        };
                    }
                    running.signal(nix::sys::signal::Signal::SIGCONT);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let out = running.wait();
            assert!(
                out.status.success(),
                "commit failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        panic!(
            "10 commits finished reading {} before one was caught",
            file.display()
        );
    }

    /// Lets the commit go on; asserts that it succeeds and returns the image id it printed.
    #[track_caller]
    pub fn resume(mut self) -> String {
        let running = self.running.take().expect("resumed once");
        running.signal(nix::sys::signal::Signal::SIGCONT);
        let out = running.wait();
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && is_image_id(&stdout),
            "commit failed ({}): {stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

impl Drop for StoppedCommit {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.signal(nix::sys::signal::Signal::SIGCONT);
            let _ = running.wait_result();
        }
    }
}

/// Whether process `pid` has `file` open.
fn has_open(pid: i32, file: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == file))
}

/// Waits until every thread of `pid` is stopped (state T), as SIGSTOP leaves them, or gone
/// (a process that exited just before the signal).
#[track_caller]
fn wait_stopped(pid: i32) {
    let stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .all(|task| {
                std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().next())
                        .is_some_and(|state| matches!(state, "T" | "t" | "Z" | "X"))
                })
            })
    };
    let deadline = std::time::Instant::now() + crate::DEADLINE;
    while !stopped() {
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} did not stop on SIGSTOP within {:?}",
            crate::DEADLINE
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A shell script listing every path below `$1` (relative, sorted) as
/// `path|type|mode|uid:gid[|links]` with, for files, the md5 of the content and for symlinks
/// the target. Timestamps are left out: the scenarios compare what a tree *holds*.
pub const LIST_TREE_SH: &str = r#"cd "$1" || exit 1
find . | sort | while read -r p; do
  if [ -L "$p" ]; then t="link:$(readlink "$p")"; n=""
  elif [ -f "$p" ]; then t="file:$(md5sum < "$p" | cut -d' ' -f1)"; n="|$(stat -c %h "$p")"
  elif [ -d "$p" ]; then t=dir; n=""
  else t="other"; n=""; fi
  echo "$p|$t|$(stat -c '%a|%u:%g' "$p")$n"
done"#;

/// The files carton bind-mounts into every container's /etc (per container, not image content).
pub const ETC_MOUNTS: [&str; 3] = ["./hostname", "./hosts", "./resolv.conf"];

/// Parses [`LIST_TREE_SH`]'s output into path → description.
pub fn parse_tree(out: &str) -> BTreeMap<String, String> {
    lines(out)
        .into_iter()
        .filter_map(|l| {
            let (path, rest) = l.split_once('|')?;
            Some((path.to_string(), rest.to_string()))
        })
        .collect()
}

impl Carton {
    /// `carton commit <args…>`: asserts success and an image id on stdout; returns it.
    #[track_caller]
    pub fn commit(&self, args: &[&str]) -> String {
        let out = self.cmd().arg("commit").args(args).stdout_ok();
        let id = out.trim().to_string();
        assert!(is_image_id(&id), "commit printed {out:?}, not an image id");
        id
    }

    /// `carton inspect IMAGE`, the one object.
    #[track_caller]
    pub fn inspect_image(&self, image: &str) -> Value {
        let out = self.cmd().args(["inspect", image]).stdout_ok();
        let mut all: Vec<Value> =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect {image}: {e}: {out}"));
        assert_eq!(all.len(), 1, "inspect {image}: {out}");
        all.remove(0)
    }

    /// The image's diff_ids (RootFS.Layers of `inspect`).
    #[track_caller]
    pub fn image_layers(&self, image: &str) -> Vec<String> {
        self.inspect_image(image)["RootFS"]["Layers"]
            .as_array()
            .unwrap_or_else(|| panic!("no RootFS.Layers for {image}"))
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The tree below `dir` as a fresh container of `image` sees it ([`LIST_TREE_SH`]).
    #[track_caller]
    pub fn tree_in(&self, image: &str, dir: &str) -> BTreeMap<String, String> {
        let out = self.run_ok([
            "--rm",
            "--network",
            "none",
            image,
            "sh",
            "-c",
            LIST_TREE_SH,
            "list",
            dir,
        ]);
        parse_tree(&out)
    }

    /// `carton history IMAGE` rows (IMAGE, CREATED BY, SIZE, COMMENT), newest first.
    #[track_caller]
    pub fn history_rows(&self, image: &str) -> Vec<Vec<String>> {
        let out = self
            .cmd()
            .args(["history", "--no-trunc", image])
            .stdout_ok();
        table_rows(&out, &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"])
            .into_iter()
            .map(|row| {
                vec![
                    row[0].clone(),
                    row[2].clone(),
                    row[3].clone(),
                    row[4].clone(),
                ]
            })
            .collect()
    }

    /// `carton images` rows: REPOSITORY, TAG, IMAGE ID, CREATED, SIZE.
    #[track_caller]
    pub fn images_rows(&self) -> Vec<Vec<String>> {
        let out = self.cmd().arg("images").stdout_ok();
        table_rows(&out, &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"])
    }
}

/// The cells of a table printed by carton (columns aligned under their headers, whose cells
/// may hold spaces): one row per non-empty line after the header. `headers` are found in
/// order, each after the previous one ("CREATED" before "CREATED BY").
#[track_caller]
pub fn table_rows(out: &str, headers: &[&str]) -> Vec<Vec<String>> {
    let mut rows = out.lines();
    let header = rows.next().unwrap_or_default();
    let mut starts: Vec<usize> = Vec::new();
    for h in headers {
        let from = starts.last().map_or(0, |s| s + 1);
        let at = header[from..]
            .find(h)
            .unwrap_or_else(|| panic!("no {h} column in {header:?}"));
        starts.push(from + at);
    }
    rows.filter(|l| !l.trim().is_empty())
        .map(|line| {
            (0..starts.len())
                .map(|i| {
                    let from = starts[i].min(line.len());
                    let to = starts
                        .get(i + 1)
                        .copied()
                        .unwrap_or(line.len())
                        .min(line.len());
                    line[from..to].trim().to_string()
                })
                .collect()
        })
        .collect()
}

/// The range of ages (seconds) one of docker's "… ago" phrases stands for, for ages below a
/// day: "Less than a second ago", "1 second ago", "N seconds ago", "About a minute ago",
/// "N minutes ago", "About an hour ago", "N hours ago". None for anything else (wrong number
/// or plural, another wording).
pub fn age_of(created: &str) -> Option<std::ops::RangeInclusive<u64>> {
    let phrase = created.strip_suffix(" ago")?;
    match phrase {
        "Less than a second" => return Some(0..=0),
        "About a minute" => return Some(60..=119),
        "About an hour" => return Some(3600..=7199),
        _ => {}
    }
    let (n, unit) = phrase.split_once(' ')?;
    let n: u64 = n.parse().ok()?;
    let (unit_secs, min) = match unit {
        "second" if n == 1 => (1, 1),
        "seconds" if (2..=59).contains(&n) => (1, 2),
        "minutes" if (2..=59).contains(&n) => (60, 2),
        "hours" if (2..=47).contains(&n) => (3600, 2),
        _ => return None,
    };
    (n >= min).then(|| n * unit_secs..=n * unit_secs + unit_secs - 1)
}

/// Bytes a size in docker's units stands for ("0B", "999B", "1.98MB", "12.5MB", "123MB": decimal
/// units, three significant digits, no trailing zeros), with the rounding error it allows.
/// None when it is not written that way.
pub fn bytes_of(size: &str) -> Option<(f64, f64)> {
    const UNITS: [(&str, f64); 5] = [
        ("kB", 1e3),
        ("MB", 1e6),
        ("GB", 1e9),
        ("TB", 1e12),
        ("B", 1.0),
    ];
    let (number, scale) = UNITS
        .iter()
        .find_map(|(unit, scale)| Some((size.strip_suffix(unit)?, *scale)))?;
    let digits = number.chars().filter(char::is_ascii_digit).count();
    let well_formed = !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.matches('.').count() <= 1
        && !number.starts_with('.')
        && !(number.contains('.') && (number.ends_with('0') || number.ends_with('.')))
        && (digits <= 3 || !number.contains('.'));
    let value: f64 = number.parse().ok()?;
    // Below the next unit (1000), except in bytes' own unit; "0B" only for nothing.
    let in_range = value < 1000.0 && (value >= 1.0 || (value == 0.0 && scale == 1.0));
    if !(well_formed && in_range) {
        return None;
    }
    // Three significant digits (whole bytes): the last one is off by half a step at most.
    let step = match value {
        _ if scale == 1.0 => 1.0,
        v if v >= 100.0 => 1.0,
        v if v >= 10.0 => 0.1,
        _ => 0.01,
    };
    Some((value * scale, step * scale / 2.0))
}

/// Creates `base:data` (in `ct`'s busybox): busybox plus a /data tree to change, committed from
/// a container — so that a scenario's "lower layer" is itself a commit. Returns its name.
#[track_caller]
pub fn base_image(ct: &Carton) -> String {
    ct.run_ok([
        "--name",
        "setup",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /data/old /data/dir && echo keep > /data/keep && echo modify > /data/modify \
         && echo gone > /data/gone && echo inner > /data/old/inner && echo sub > /data/dir/sub \
         && echo m > /data/mode && chmod 644 /data/mode && echo o > /data/owned",
    ]);
    ct.commit(&["setup", "base:data"]);
    ct.cmd().args(["rm", "setup"]).stdout_ok();
    "base:data".to_string()
}

/// What a changing container does to [`base_image`]'s /data: create, modify and delete files
/// of the lower layer, replace a directory with a new one (opaque), delete a directory, change
/// a mode and an owner, add a hard link and a symlink; last, give a file, that directory and
/// the symlink the explicit mtimes of [`MTIMES`].
pub const CHANGES: &str = "echo more >> /data/modify && echo new > /data/new && rm /data/gone \
    && rm -rf /data/old && mkdir /data/old && echo fresh > /data/old/fresh \
    && rm -r /data/dir \
    && chmod 600 /data/mode && chown 1000:1000 /data/owned \
    && ln /data/new /data/hard && ln -s keep /data/sym \
    && touch -d @1600000000 /data/new && touch -d @1500000000 /data/old \
    && touch -h -d @1400000000 /data/sym";

/// The mtimes [`CHANGES`] sets (seconds since the epoch), by path below the root; `data/hard`
/// is `data/new` under another name.
pub const MTIMES: [(&str, i64); 4] = [
    ("data/new", 1_600_000_000),
    ("data/hard", 1_600_000_000),
    ("data/old", 1_500_000_000),
    ("data/sym", 1_400_000_000),
];

/// The extended attribute [`mark_xattrs`] gives entries of a container that ran [`CHANGES`]
/// (busybox has no setfattr: it is set from the host, on the container's upper directory).
pub const XATTR: (&str, &[u8]) = ("user.carton.test", b"kept \x00\xff value");

/// Where [`mark_xattrs`] sets [`XATTR`]: a file (and its hard link) and a directory. (The
/// kernel refuses `user.*` attributes on symlinks.)
pub const XATTR_PATHS: [&str; 3] = ["data/new", "data/hard", "data/old"];

/// Sets [`XATTR`] on [`XATTR_PATHS`] in the upper directory of the stopped container
/// `container` (which ran [`CHANGES`]). False, after saying so, when the filesystem under the
/// scenario holds no `user.*` attributes (tmpfs before Linux 6.6): nothing to check then.
#[track_caller]
pub fn mark_xattrs(ct: &Carton, container: &str) -> bool {
    let id = ct.inspect(container)["Id"]
        .as_str()
        .unwrap_or_else(|| panic!("no Id for {container}"))
        .to_string();
    let upper = ct.root().join("containers").join(id).join("upper");
    for path in XATTR_PATHS {
        match crate::host::set_xattr(&upper.join(path), XATTR.0, XATTR.1) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                crate::not_applicable(&format!(
                    "{} holds no user.* xattrs ({e}): the xattr checks are left out",
                    upper.display()
                ));
                return false;
            }
            Err(e) => panic!("set {} on {}: {e}", XATTR.0, upper.join(path).display()),
        }
    }
    true
}

/// Asserts that the tree at `root` (a container's root, an unpacked layer) holds the mtimes of
/// [`MTIMES`] and, when `xattrs`, the attribute [`XATTR`] on [`XATTR_PATHS`]; `what` names the
/// tree in the failure.
#[track_caller]
pub fn assert_mtimes_and_xattrs(root: &Path, xattrs: bool, what: &str) {
    use std::os::unix::fs::MetadataExt;
    for (path, mtime) in MTIMES {
        let meta = std::fs::symlink_metadata(root.join(path))
            .unwrap_or_else(|e| panic!("{what}: {path}: {e}"));
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec()),
            (mtime, 0),
            "{what}: mtime of {path}"
        );
    }
    if xattrs {
        for path in XATTR_PATHS {
            let value = crate::host::get_xattr(&root.join(path), XATTR.0)
                .unwrap_or_else(|e| panic!("{what}: read {} of {path}: {e}", XATTR.0));
            assert_eq!(
                value.as_deref(),
                Some(XATTR.1),
                "{what}: {} of {path}",
                XATTR.0
            );
        }
    }
}

/// Runs a container of `image` and checks [`assert_mtimes_and_xattrs`] on its root as it sees
/// it (its merged overlay, through `/proc/<pid>/root`); removes it again.
#[track_caller]
pub fn assert_mtimes_and_xattrs_in_container(ct: &Carton, image: &str, xattrs: bool) {
    let sync = ct.handshake();
    let name = crate::unique("stamps");
    let script = format!("{SYNC_SH} s ready; {IDLE_UNTIL_TERM}");
    ct.run_detached([
        "-v",
        &sync.volume(),
        "--name",
        &name,
        "--network",
        "none",
        image,
        "sh",
        "-c",
        &script,
    ]);
    sync.wait_for("ready");
    let init = ct.init_process(&name);
    let root = PathBuf::from(format!("/proc/{}/root", init.pid));
    assert_mtimes_and_xattrs(&root, xattrs, &format!("a container of {image}"));
    ct.cmd().args(["rm", "-f", &name]).stdout_ok();
}

/// `base:data` with [`CHANGES`] committed as `changed:v1`; returns its id.
#[track_caller]
pub fn changed_image(ct: &Carton) -> String {
    let base = base_image(ct);
    ct.run_ok([
        "--name",
        "changer",
        "--network",
        "none",
        &base,
        "sh",
        "-c",
        CHANGES,
    ]);
    let id = ct.commit(&["changer", "changed:v1"]);
    ct.cmd().args(["rm", "changer"]).stdout_ok();
    id
}

/// [`LIST_TREE_SH`] run on the host (for a tree a tool unpacked), bytewise sorted like busybox.
#[track_caller]
pub fn tree_on_host(dir: &Path) -> BTreeMap<String, String> {
    let out = Command::new("sh")
        .args(["-c", LIST_TREE_SH, "list"])
        .arg(dir)
        .env("LC_ALL", "C")
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_tree(&String::from_utf8_lossy(&out.stdout))
}

/// Bytes used below `path` (allocated blocks), not following symlinks.
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            total += disk_usage(&entry.path());
        }
    }
    total
}

/// Members of a tar archive (plain) as (path, content) in order; directories skipped.
pub fn read_archive(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().expect("read archive") {
        let mut entry = entry.expect("archive entry");
        if entry.header().entry_type().is_dir() {
            continue;
        }
        let path = entry.path().expect("entry path").display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("entry data");
        out.push((path, data));
    }
    out
}

/// Writes members (regular files, or symlinks when the content starts with `->`) as a tar.
pub fn write_archive(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in members {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_mtime(1_600_000_000);
        if let Some(target) = data.strip_prefix(b"->") {
            header.set_size(0);
            header.set_entry_type(tar::EntryType::Symlink);
            let target = String::from_utf8_lossy(target).into_owned();
            builder
                .append_link(&mut header, path, target)
                .expect("append link");
        } else {
            header.set_size(data.len() as u64);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, path, &data[..])
                .expect("append file");
        }
    }
    builder.into_inner().expect("finish archive")
}

/// A docker-archive (legacy layout: `<hex>.json` config, `<n>/layer.tar`) of one image whose
/// layers are the given tar streams; `diff_ids` default to their digests.
pub fn docker_archive(layers: &[Vec<u8>], diff_ids: Option<Vec<String>>, tag: &str) -> Vec<u8> {
    let diff_ids = diff_ids.unwrap_or_else(|| {
        layers
            .iter()
            .map(|l| format!("sha256:{}", sha256_hex(l)))
            .collect()
    });
    let config = serde_json::to_vec(&json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config json");
    let config_name = format!("{}.json", sha256_hex(&config));
    let layer_names: Vec<String> = (0..layers.len())
        .map(|i| format!("{i}/layer.tar"))
        .collect();
    let manifest = json!([{"Config": config_name, "RepoTags": [tag], "Layers": layer_names}]);
    let mut members = vec![
        (
            "manifest.json".to_string(),
            manifest.to_string().into_bytes(),
        ),
        (config_name, config),
    ];
    members.extend(layer_names.into_iter().zip(layers.iter().cloned()));
    write_archive(&members)
}

/// GOARCH of this machine, as image configs name it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// `name` found on PATH.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `cmd` in the scenario's network namespace with a deadline; returns its output. Panics
/// (after killing it) when it does not finish in time.
pub fn run_tool(ct: &Carton, mut cmd: Command, deadline: Duration) -> Output {
    ct.netns().apply(&mut cmd);
    crate::output_within(cmd, deadline)
}

/// Like [`run_tool`], asserting success; returns stdout.
#[track_caller]
pub fn tool_ok(ct: &Carton, cmd: Command) -> String {
    let desc = format!("{cmd:?}");
    let out = run_tool(ct, cmd, TOOL_DEADLINE);
    assert!(
        out.status.success(),
        "{desc} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// podman with its own configuration and storage under the scenario's directory, so that it
/// never touches the machine's: `containers.conf` with ulimits this machine can grant (no
/// CAP_SYS_RESOURCE here), the cgroupfs manager and file event log; vfs storage; always
/// `--network none` for containers. Commands run in a private mount namespace where the
/// (empty) cgroup2 tree of a hybrid host is unmounted, which crun refuses otherwise.
pub struct Podman {
    bin: PathBuf,
    dir: PathBuf,
    runroot: crate::PodmanRunRoot,
    /// `--cgroup-parent` of podman's containers, and of its conmon (`<parent>/conmon`), which
    /// podman itself never removes: named after the scenario's directory, removed at the end.
    cgroup_parent: String,
}

impl Podman {
    /// None (after printing why) when podman is not installed.
    pub fn new(ct: &Carton) -> Option<Podman> {
        let Some(bin) = find_tool("podman") else {
            crate::skip("podman is not installed (apt-get install podman)");
            return None;
        };
        let dir = ct.work().join("podman");
        std::fs::create_dir_all(dir.join("tmp")).expect("podman dir");
        // tmp_dir: podman's runtime state (locks, exit codes, event log), /run/libpod otherwise.
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\n\
                 default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
                 [engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 tmp_dir = \"{}\"\n",
                dir.join("libpod").display()
            ),
        )
        .expect("containers.conf");
        let runroot = crate::PodmanRunRoot::for_dir(&dir);
        let name = ct.base().file_name().unwrap_or_default().to_string_lossy();
        let cgroup_parent = format!("podman-{name}");
        Some(Podman {
            bin,
            dir,
            runroot,
            cgroup_parent,
        })
    }

    /// `podman <global storage flags> <args…>` as a command.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("unshare");
        // Inside: drop the hybrid host's cgroup2 mount (if any) from this private namespace.
        cmd.args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$@\"",
            "podman",
        ]);
        cmd.arg(&self.bin)
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(&self.runroot.path)
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]);
        match args.split_first() {
            Some((&"run", rest)) => cmd
                .arg("run")
                .arg("--cgroup-parent")
                .arg(format!("/{}", self.cgroup_parent))
                .args(rest),
            _ => cmd.args(args),
        };
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("TMPDIR", self.dir.join("tmp"));
        cmd
    }

    /// Runs podman and asserts success; returns stdout.
    #[track_caller]
    pub fn ok(&self, ct: &Carton, args: &[&str]) -> String {
        tool_ok(ct, self.command(args))
    }

    /// Removes the images from podman's private storage (which goes with the scenario's
    /// directory). Not `system reset`: that also deletes the machine's podman networks.
    pub fn clean_up(&self, ct: &Carton) {
        let _ = run_tool(
            ct,
            self.command(&["rmi", "--all", "--force"]),
            TOOL_DEADLINE,
        );
        self.remove_cgroup_parent();
    }

    /// Removes the (empty) cgroups podman left under the scenario's parent: conmon's, then
    /// the parent itself, in every hierarchy.
    fn remove_cgroup_parent(&self) {
        for root in crate::cgroup::roots() {
            let parent = root.join(&self.cgroup_parent);
            let _ = std::fs::remove_dir(parent.join("conmon"));
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.remove_cgroup_parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_ages() {
        assert_eq!(age_of("Less than a second ago"), Some(0..=0));
        assert_eq!(age_of("1 second ago"), Some(1..=1));
        assert_eq!(age_of("42 seconds ago"), Some(42..=42));
        assert_eq!(age_of("About a minute ago"), Some(60..=119));
        assert_eq!(age_of("3 minutes ago"), Some(180..=239));
        assert_eq!(age_of("5 hours ago"), Some(18_000..=21_599));
        for wrong in [
            "1 seconds ago",
            "2 second ago",
            "0 seconds ago",
            "60 seconds ago",
            "1 minutes ago",
            "3 minutes",
            "N/A",
            "2 days ago",
            "",
        ] {
            assert_eq!(age_of(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn docker_sizes() {
        assert_eq!(bytes_of("0B"), Some((0.0, 0.5)));
        assert_eq!(bytes_of("999B"), Some((999.0, 0.5)));
        assert_eq!(bytes_of("1.98MB"), Some((1.98e6, 5e3)));
        assert_eq!(bytes_of("12.5MB"), Some((12.5e6, 5e4)));
        assert_eq!(bytes_of("123MB"), Some((123e6, 5e5)));
        assert_eq!(bytes_of("4kB"), Some((4e3, 5.0)));
        for wrong in [
            "1.50MB", "1.MB", ".5MB", "1.234MB", "1000B", "0.5MB", "0kB", "12 MB", "12MiB", "12",
            "1e3B", "",
        ] {
            assert_eq!(bytes_of(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn tables_are_cut_at_their_headers() {
        let out = "IMAGE   CREATED         CREATED BY   SIZE\n\
                   abc     2 seconds ago   sh -c x      1.2kB\n\
                   \n";
        assert_eq!(
            table_rows(out, &["IMAGE", "CREATED", "CREATED BY", "SIZE"]),
            [["abc", "2 seconds ago", "sh -c x", "1.2kB"]]
        );
    }
}
