//! Detached containers as the scenarios observe them: `run -d`, `inspect`, the `ps` and `stats`
//! tables (docker's durations, sizes and COMMAND cell), the json-file log, the supervisor
//! process, and a file handshake between test and container.
//!
//! Every wait here is a poll with the suite's [`DEADLINE`]: nothing asserts on how fast carton
//! is, only on what it eventually reports (or, for "must not happen", on what it reports after a
//! deterministic event — see [`Handshake`]).

use std::ffi::OsStr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::host::Process;
use crate::{Carton, DEADLINE, is_hex};

/// Shell functions for the container side of a [`Handshake`] (the directory is mounted at
/// `/sync`): `s NAME` creates the file NAME (a signal to the test), `w NAME` waits until the
/// test created it. Prefix scripts with it: `format!("{SYNC_SH} s ready; w go; echo done")`.
pub const SYNC_SH: &str =
    "s() { touch /sync/$1; }; w() { while [ ! -e /sync/$1 ]; do sleep 0.05; done; };";

/// A PID 1 that idles without using CPU and exits 0 at once on SIGTERM: a trapped signal
/// interrupts the shell's `wait` builtin. (Without the trap, a shell as PID 1 ignores TERM.)
pub const IDLE_UNTIL_TERM: &str = "trap 'exit 0' TERM; sleep 1000 & wait";

impl Carton {
    /// `carton run -d <args…>`: asserts exit 0 and that stdout is exactly one line holding a
    /// full 64-hex id; returns the id. (The underlying [`crate::CartonCmd`] also fails when
    /// carton's stdout or stderr stay open after it exited, i.e. when the supervisor kept them.)
    #[track_caller]
    pub fn run_detached<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.run(["-d"]);
        cmd.args(args);
        let desc = cmd.describe();
        let out = cmd.output();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "`{desc}` failed ({})\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let id = stdout.strip_suffix('\n').unwrap_or(&stdout);
        assert!(
            is_hex(id, 64),
            "`{desc}` must print the full 64-hex container id and nothing else on stdout, \
             printed {stdout:?}"
        );
        id.to_string()
    }

    /// `carton inspect <container>`: the single object of the JSON array, or why not.
    pub fn try_inspect(&self, container: &str) -> Result<Value, String> {
        let out = self.cmd().args(["inspect", container]).try_output()?;
        if !out.status.success() {
            return Err(format!(
                "`carton inspect {container}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let all: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "`carton inspect {container}` printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        match all.as_array().map(Vec::as_slice) {
            Some([one]) => Ok(one.clone()),
            _ => Err(format!(
                "`carton inspect {container}` must print an array of one object: {all}"
            )),
        }
    }

    /// [`Carton::try_inspect`], panicking on failure.
    #[track_caller]
    pub fn inspect(&self, container: &str) -> Value {
        self.try_inspect(container)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `State` of `carton inspect <container>`.
    #[track_caller]
    pub fn state(&self, container: &str) -> Value {
        self.inspect(container)["State"].clone()
    }

    /// Polls `inspect` until `done(State)` holds; returns that State. Panics at the deadline
    /// with the last State seen.
    #[track_caller]
    pub fn wait_for_state(
        &self,
        container: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let last = match self.try_inspect(container) {
                Ok(v) if done(&v["State"]) => return v["State"].clone(),
                Ok(v) => v["State"].to_string(),
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "container {container} is not {what} after {DEADLINE:?}; last: {last}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `inspect` reports the container exited; returns its State.
    #[track_caller]
    pub fn wait_exited(&self, container: &str) -> Value {
        self.wait_for_state(container, "exited", |s| s["Status"] == "exited")
    }

    /// Waits until `ps -aq --no-trunc` no longer lists `id` (a `--rm` container removing itself).
    #[track_caller]
    pub fn wait_removed(&self, id: &str) {
        let deadline = Instant::now() + DEADLINE;
        while self.container_ids().iter().any(|i| i == id) {
            assert!(
                Instant::now() < deadline,
                "container {id} still listed after {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The container's init as a host process, from `inspect`'s `State.Pid`: checked to be
    /// running, PID 1 of a pid namespace, and in a cgroup whose path holds the container's id.
    #[track_caller]
    pub fn init_process(&self, container: &str) -> Process {
        let state = self.state(container);
        assert_eq!(
            state["Running"], true,
            "{container} is not running: {state}"
        );
        let pid = state["Pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("State.Pid is not a number: {state}"));
        let process = Process::of(pid as i32)
            .unwrap_or_else(|| panic!("State.Pid {pid} of {container} names no process: {state}"));
        assert_eq!(
            process.nspids().last(),
            Some(&1),
            "State.Pid {pid} of {container} is not the init (PID 1) of a pid namespace: {process}"
        );
        let id = self.inspect(container)["Id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let cgroups = process.cgroup().unwrap_or_default();
        assert!(
            !id.is_empty() && cgroups.contains(&id),
            "State.Pid {pid} of {container} is not in the container's cgroup:\n{cgroups}"
        );
        process
    }

    /// Rows of `carton ps <flags…>` (the flags should include `--no-trunc` for full ids).
    #[track_caller]
    pub fn ps_rows(&self, flags: &[&str]) -> Vec<PsRow> {
        let out = self.cmd().arg("ps").args(flags).stdout_ok();
        parse_ps_table(&out)
    }

    /// The row of `ps -a --no-trunc` whose NAMES is `name_or_id` or whose id starts with it.
    #[track_caller]
    pub fn ps_row(&self, name_or_id: &str) -> Option<PsRow> {
        self.ps_rows(&["-a", "--no-trunc"])
            .into_iter()
            .find(|r| r.names == name_or_id || r.id.starts_with(name_or_id))
    }

    /// `<root>/containers/<id>/container.log`.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.root()
            .join("containers")
            .join(id)
            .join("container.log")
    }

    /// The complete lines of the container's json-file log, parsed; panics on a malformed line.
    #[track_caller]
    pub fn log_entries(&self, id: &str) -> Vec<LogEntry> {
        let path = self.log_path(id);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read the log {}: {e}", path.display()));
        parse_json_log(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
    }

    /// Waits until the log has an entry whose text contains `needle`; returns the entries.
    #[track_caller]
    pub fn wait_for_log(&self, id: &str, needle: &str) -> Vec<LogEntry> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if self.log_path(id).exists() {
                let entries = self.log_entries(id);
                if entries.iter().any(|e| e.log.contains(needle)) {
                    return entries;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not reach {} within {DEADLINE:?}",
                self.log_path(id).display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A fresh handshake directory under the scratch directory (see [`Handshake`]).
    pub fn handshake(&self) -> Handshake {
        let dir = self.work().join(crate::unique("sync"));
        std::fs::create_dir(&dir).expect("create handshake dir");
        // World-writable: containers running as another user signal through it too.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod handshake dir");
        Handshake { dir }
    }

    /// Live processes that belong to this fixture (see [`crate::host::processes_referencing`]):
    /// command line, cwd, root or an open file under the test's directory, or a command line
    /// naming one of `ids`.
    pub fn processes_left(&self, ids: &[&str]) -> Vec<(Process, String)> {
        let mut paths = vec![self.base().to_path_buf()];
        if let Ok(canonical) = self.base().canonicalize() {
            if canonical != self.base() {
                paths.push(canonical);
            }
        }
        let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        crate::host::processes_referencing(&paths, ids)
    }

    /// Waits (up to the deadline) until no process of this fixture is left — none naming
    /// `ids` either; panics with the list otherwise.
    #[track_caller]
    pub fn assert_no_processes_left(&self, ids: &[&str]) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = self.processes_left(ids);
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "processes of this test are still alive after {DEADLINE:?}:\n  {}",
                left.iter()
                    .map(|(p, why)| format!("{p}: {why}"))
                    .collect::<Vec<_>>()
                    .join("\n  ")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The supervisor of a running detached container: the parent of its init. Whatever records
/// the exit code must be able to `wait` for the init, so it is its parent (a design with an
/// intermediate process would make the supervisor a subreaper, which the init is then
/// reparented to — its parent again). Panics when the parent is PID 1, the test itself, or gone.
#[track_caller]
pub fn supervisor_of(init: &Process) -> Process {
    let parent = init
        .parent()
        .unwrap_or_else(|| panic!("the container's init {init} has no parent (did it exit?)"));
    assert!(
        parent.pid != 1 && parent.pid != std::process::id() as i32,
        "the container's init {init} is a child of {parent}, not of a carton supervisor"
    );
    parent
}

/// A directory shared with a container (`-v <dir>:/sync`) through which test and container
/// take turns: the container creates files the test waits for, and waits for files the test
/// creates. It turns "the container has reached line N" into an event instead of a delay.
pub struct Handshake {
    dir: PathBuf,
}

impl Handshake {
    /// The `-v` value: `<dir>:/sync`.
    pub fn volume(&self) -> String {
        format!("{}:/sync", self.dir.display())
    }

    /// The host directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates `name` (the container's `w name` returns).
    pub fn release(&self, name: &str) {
        std::fs::write(self.dir.join(name), b"")
            .unwrap_or_else(|e| panic!("create {}: {e}", self.dir.join(name).display()));
    }

    /// Whether the container has created `name`.
    pub fn reached(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }

    /// Waits until the container creates `name` (its `s name`); panics at the deadline.
    #[track_caller]
    pub fn wait_for(&self, name: &str) {
        let deadline = Instant::now() + DEADLINE;
        while !self.reached(name) {
            assert!(
                Instant::now() < deadline,
                "the container did not reach `s {name}` within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One row of the `ps` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsRow {
    pub id: String,
    pub image: String,
    pub command: String,
    pub created: String,
    pub status: String,
    pub ports: String,
    pub names: String,
}

/// What a STATUS cell says, without its durations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusKind {
    /// `Up <duration>`
    Up,
    /// `Exited (N) <duration> ago`
    Exited(i32),
    /// `Created`
    Created,
    /// Anything else, verbatim (also `Up` or `Exited (N)` without a well-formed duration).
    Other(String),
}

impl PsRow {
    pub fn kind(&self) -> StatusKind {
        status_kind(&self.status)
    }

    /// The row without its time-dependent cells (CREATED, and STATUS reduced to its kind), to
    /// compare a row before and after something that must not touch it.
    pub fn stable(&self) -> (String, String, String, StatusKind, String) {
        (
            self.id.clone(),
            self.image.clone(),
            self.command.clone(),
            self.kind(),
            self.names.clone(),
        )
    }

    /// The CREATED cell (`3 seconds ago`) as the whole seconds it may stand for; panics when
    /// it is not one of docker's durations followed by ` ago`.
    #[track_caller]
    pub fn created_secs(&self) -> RangeInclusive<u64> {
        parse_ago(&self.created)
            .unwrap_or_else(|| panic!("CREATED is not docker's \"<duration> ago\": {self:?}"))
    }

    /// The duration in STATUS (`Up 3 seconds`, `Exited (0) 5 seconds ago`) as the whole seconds
    /// it may stand for; `None` for `Created` or a malformed cell.
    pub fn status_secs(&self) -> Option<RangeInclusive<u64>> {
        if let Some(rest) = self.status.strip_prefix("Up ") {
            return parse_human_duration(rest);
        }
        let (_, tail) = self.status.strip_prefix("Exited (")?.split_once(") ")?;
        parse_ago(tail)
    }
}

/// Classifies a STATUS cell: `Up 3 seconds`, `Exited (137) 2 seconds ago`, `Created`. The
/// duration must be one of docker's (see [`parse_human_duration`]); a bare `Exited (3)`, which
/// docker never prints, is `Other`.
pub fn status_kind(status: &str) -> StatusKind {
    if status == "Created" {
        return StatusKind::Created;
    }
    if status
        .strip_prefix("Up ")
        .is_some_and(|d| parse_human_duration(d).is_some())
    {
        return StatusKind::Up;
    }
    if let Some((code, tail)) = status
        .strip_prefix("Exited (")
        .and_then(|rest| rest.split_once(") "))
    {
        if let (Ok(code), Some(_)) = (code.parse(), parse_ago(tail)) {
            return StatusKind::Exited(code);
        }
    }
    StatusKind::Other(status.to_string())
}

/// docker's human durations (go-units `HumanDuration`): `Less than a second`, `1 second`,
/// `N seconds`, `About a minute`, `N minutes`, `About an hour`, `N hours`, `N days`,
/// `N weeks`, `N months`, `N years` — as the range of whole seconds each stands for.
pub fn parse_human_duration(text: &str) -> Option<RangeInclusive<u64>> {
    match text {
        "Less than a second" => return Some(0..=0),
        "1 second" => return Some(1..=1),
        "About a minute" => return Some(60..=119),
        "About an hour" => return Some(3600..=7199),
        _ => {}
    }
    let (n, unit) = text.split_once(' ')?;
    let n: u64 = n.parse().ok()?;
    let (size, smallest) = match unit {
        "seconds" => (1, 2),
        "minutes" => (60, 2),
        "hours" => (3600, 2),
        "days" => (86_400, 2),
        "weeks" => (7 * 86_400, 2),
        "months" => (30 * 86_400, 2),
        "years" => (365 * 86_400, 2),
        _ => return None,
    };
    (n >= smallest).then(|| n * size..=n * size + size - 1)
}

/// `<human duration> ago`, as [`parse_human_duration`].
pub fn parse_ago(text: &str) -> Option<RangeInclusive<u64>> {
    parse_human_duration(text.strip_suffix(" ago")?)
}

/// The COMMAND cell docker prints for `command` (the container's arguments joined by spaces):
/// cut to 19 characters and an ellipsis when longer than 20 (unless `--no-trunc`), then quoted
/// as a Go string literal (`"`, `\`, newline and tab escaped; the scenarios' commands hold no
/// other control character), as docker's formatter does.
pub fn docker_command_cell(command: &str, truncate: bool) -> String {
    let text: String = if truncate && command.chars().count() > 20 {
        command.chars().take(19).chain(['…']).collect()
    } else {
        command.to_string()
    };
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

const PS_COLUMNS: [&str; 7] = [
    "CONTAINER ID",
    "IMAGE",
    "COMMAND",
    "CREATED",
    "STATUS",
    "PORTS",
    "NAMES",
];

/// Cuts a table as carton and docker print it into cells: each cell starts at its column's
/// start in the header (every cell is padded to its column's width), the last column runs to
/// the end of the line; cells are trimmed. Panics when the header lacks a column or has them
/// in another order.
#[track_caller]
pub fn table_cells(text: &str, columns: &[&str]) -> Vec<Vec<String>> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let starts: Vec<usize> = columns
        .iter()
        .map(|col| {
            let found = header
                .find(col)
                .unwrap_or_else(|| panic!("header lacks the column {col:?}: {header:?}\n{text}"));
            header[..found].chars().count()
        })
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "header columns out of order: {header:?}"
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let chars: Vec<char> = line.chars().collect();
            (0..starts.len())
                .map(|i| {
                    let from = starts[i].min(chars.len());
                    let to = starts
                        .get(i + 1)
                        .map_or(chars.len(), |&s| s.min(chars.len()));
                    chars[from..to]
                        .iter()
                        .collect::<String>()
                        .trim()
                        .to_string()
                })
                .collect()
        })
        .collect()
}

/// Parses a `ps` table (see [`table_cells`]).
#[track_caller]
pub fn parse_ps_table(text: &str) -> Vec<PsRow> {
    table_cells(text, &PS_COLUMNS)
        .into_iter()
        .map(|c| PsRow {
            id: c[0].clone(),
            image: c[1].clone(),
            command: c[2].clone(),
            created: c[3].clone(),
            status: c[4].clone(),
            ports: c[5].clone(),
            names: c[6].clone(),
        })
        .collect()
}

/// One row of `stats --no-stream`, every cell parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsRow {
    pub id: String,
    pub name: String,
    /// `CPU %` without the sign: 100 = one CPU busy.
    pub cpu_percent: f64,
    /// `MEM USAGE / LIMIT` in bytes (as printed: binary units rounded to two decimals).
    pub mem_usage: f64,
    pub mem_limit: f64,
    pub mem_percent: f64,
    /// `NET I/O` received / sent bytes (decimal units, three significant digits).
    pub net: (f64, f64),
    /// `BLOCK I/O` read / written bytes.
    pub block: (f64, f64),
    pub pids: u64,
}

const STATS_COLUMNS: [&str; 8] = [
    "CONTAINER ID",
    "NAME",
    "CPU %",
    "MEM USAGE / LIMIT",
    "MEM %",
    "NET I/O",
    "BLOCK I/O",
    "PIDS",
];

/// Parses a `stats --no-stream` table; panics on a cell that is not what docker prints there
/// (`12.34%`, `1.5MiB / 64MiB`, `0B / 0B`, a number of pids).
#[track_caller]
pub fn parse_stats_table(text: &str) -> Vec<StatsRow> {
    table_cells(text, &STATS_COLUMNS)
        .into_iter()
        .map(|c| {
            let bad =
                |what: &str| -> ! { panic!("`stats` {what} cell unparsable in {c:?}\n{text}") };
            let percent = |cell: &str| -> Option<f64> { cell.strip_suffix('%')?.parse().ok() };
            let pair = |cell: &str| -> Option<(f64, f64)> {
                let (a, b) = cell.split_once(" / ")?;
                Some((parse_size(a)?, parse_size(b)?))
            };
            let (mem_usage, mem_limit) = pair(&c[3]).unwrap_or_else(|| bad("MEM USAGE / LIMIT"));
            StatsRow {
                id: c[0].clone(),
                name: c[1].clone(),
                cpu_percent: percent(&c[2]).unwrap_or_else(|| bad("CPU %")),
                mem_usage,
                mem_limit,
                mem_percent: percent(&c[4]).unwrap_or_else(|| bad("MEM %")),
                net: pair(&c[5]).unwrap_or_else(|| bad("NET I/O")),
                block: pair(&c[6]).unwrap_or_else(|| bad("BLOCK I/O")),
                pids: c[7].parse().unwrap_or_else(|_| bad("PIDS")),
            }
        })
        .collect()
}

/// A size as docker prints it: `512B`, binary `1.50KiB` … `PiB` (stats' memory), decimal
/// `4.26kB` … `EB` (I/O, image sizes). In bytes.
pub fn parse_size(text: &str) -> Option<f64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024f64.powi(2),
        "GiB" => 1024f64.powi(3),
        "TiB" => 1024f64.powi(4),
        "PiB" => 1024f64.powi(5),
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "PB" => 1e15,
        "EB" => 1e18,
        _ => return None,
    };
    Some(number * factor)
}

/// One line of docker's json-file log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The text, with its trailing newline.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The timestamp as written (RFC 3339 with up to nanoseconds).
    pub time: String,
    /// `time` in nanoseconds since the epoch.
    pub nanos: i128,
}

/// Parses a json-file log: one JSON object per line, each with string fields `log`, `stream`
/// (`stdout` | `stderr`) and `time` (RFC 3339). A last line without its newline (being written)
/// is ignored.
pub fn parse_json_log(text: &str) -> Result<Vec<LogEntry>, String> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .enumerate()
        .map(|(n, line)| {
            let v: Value = serde_json::from_str(line)
                .map_err(|e| format!("log line {} is not JSON ({e}): {line:?}", n + 1))?;
            let field = |k: &str| -> Result<String, String> {
                v[k].as_str().map(String::from).ok_or_else(|| {
                    format!("log line {} lacks the string field {k:?}: {line}", n + 1)
                })
            };
            let (log, stream, time) = (field("log")?, field("stream")?, field("time")?);
            if stream != "stdout" && stream != "stderr" {
                return Err(format!("log line {}: stream {stream:?}", n + 1));
            }
            let nanos = parse_rfc3339(&time)
                .ok_or_else(|| format!("log line {}: time {time:?} is not RFC 3339", n + 1))?;
            Ok(LogEntry {
                log,
                stream,
                time,
                nanos,
            })
        })
        .collect()
}

/// Nanoseconds since the epoch of an RFC 3339 timestamp such as
/// `2024-05-01T12:34:56.123456789Z` or `…56+02:00` (fraction optional, 1–9 digits).
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac_nanos: i128 = 0;
    if b.get(i) == Some(&b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        let frac: i128 = s[i + 1..i + 1 + digits].parse().ok()?;
        frac_nanos = frac * 10i128.pow(9 - digits as u32);
        i += 1 + digits;
    }
    let offset_secs: i64 = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            let secs = h * 3600 + m * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs as i128 * 1_000_000_000 + frac_nanos)
}

/// Exactly 64 lowercase hex digits.
pub fn is_container_id(s: &str) -> bool {
    is_hex(s, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_values() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.000000001Z"),
            Some(1_709_208_000_000_000_001)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T14:00:00+02:00"),
            parse_rfc3339("2024-02-29T12:00:00Z")
        );
        assert_eq!(
            parse_rfc3339("0001-01-01T00:00:00Z"),
            Some(-62_135_596_800_000_000_000)
        );
        for bad in [
            "",
            "2024-02-29",
            "2024-02-29 12:00:00Z",
            "2024-02-29T12:00:00",
            "2024-02-29T12:00:00.Z",
            "2024-02-29T12:00:00.1234567890Z",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:00:00Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ps_table_parsing() {
        // Laid out as carton and docker do: each cell padded to its column's width + 3.
        let rows = [
            [
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES",
            ],
            [
                "0123456789ab",
                "busybox",
                "\"sh -c 'sle…\"",
                "3 seconds ago",
                "Up 3 seconds",
                "",
                "web",
            ],
            [
                "ba9876543210",
                "busybox",
                "\"true\"",
                "5 minutes ago",
                "Exited (137) 4 minutes ago",
                "",
                "other name",
            ],
            [
                "cccccccccccc",
                "busybox",
                "\"nosuch\"",
                "5 minutes ago",
                "Created",
                "",
                "c3",
            ],
        ];
        let text: String = rows
            .iter()
            .map(|r| {
                format!(
                    "{:<15}{:<10}{:<19}{:<16}{:<29}{:<8}{}\n",
                    r[0], r[1], r[2], r[3], r[4], r[5], r[6]
                )
            })
            .collect();
        let text = text.as_str();
        let rows = parse_ps_table(text);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].id, "0123456789ab");
        assert_eq!(rows[0].command, "\"sh -c 'sle…\"");
        assert_eq!(rows[0].kind(), StatusKind::Up);
        assert_eq!(rows[0].names, "web");
        assert_eq!(rows[1].kind(), StatusKind::Exited(137));
        assert_eq!(rows[1].names, "other name");
        assert_eq!(rows[2].kind(), StatusKind::Created);
        assert!(
            parse_ps_table("CONTAINER ID   IMAGE   COMMAND   CREATED   STATUS   PORTS   NAMES\n")
                .is_empty()
        );
    }

    #[test]
    fn status_kinds() {
        assert_eq!(
            status_kind("Exited (0) Less than a second ago"),
            StatusKind::Exited(0)
        );
        assert_eq!(
            status_kind("Exited (3) 5 seconds ago"),
            StatusKind::Exited(3)
        );
        assert_eq!(status_kind("Up Less than a second"), StatusKind::Up);
        assert_eq!(status_kind("Up 2 hours"), StatusKind::Up);
        // docker never leaves out the time, nor prints "1 seconds" or "Up … ago".
        for bad in [
            "Exited (3)",
            "Exited (3) ",
            "Exited (3) 5 seconds",
            "Exited (x) 5 seconds ago",
            "Exited (3) 1 seconds ago",
            "Up",
            "Up 3 seconds ago",
            "Restarting",
        ] {
            assert_eq!(status_kind(bad), StatusKind::Other(bad.into()), "{bad:?}");
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(parse_human_duration("Less than a second"), Some(0..=0));
        assert_eq!(parse_human_duration("1 second"), Some(1..=1));
        assert_eq!(parse_human_duration("59 seconds"), Some(59..=59));
        assert_eq!(parse_human_duration("About a minute"), Some(60..=119));
        assert_eq!(parse_human_duration("3 minutes"), Some(180..=239));
        assert_eq!(parse_human_duration("2 days"), Some(172_800..=259_199));
        assert_eq!(parse_ago("4 seconds ago"), Some(4..=4));
        for bad in [
            "",
            "0 seconds",
            "1 seconds",
            "x seconds",
            "3 fortnights",
            "4 seconds",
        ] {
            assert_eq!(parse_ago(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn docker_command_cells() {
        assert_eq!(docker_command_cell("sleep 1000", true), "\"sleep 1000\"");
        // 20 characters fit; 21 are cut to 19 and an ellipsis, inside the quotes.
        assert_eq!(
            docker_command_cell("sleep 10000000000000", true),
            "\"sleep 10000000000000\""
        );
        assert_eq!(
            docker_command_cell("sleep 100000000000000", true),
            "\"sleep 1000000000000…\""
        );
        assert_eq!(
            docker_command_cell("sh -c echo \"a\\b\"", false),
            r#""sh -c echo \"a\\b\"""#
        );
    }

    #[test]
    fn stats_table_parsing() {
        let text = "CONTAINER ID   NAME   CPU %    MEM USAGE / LIMIT      MEM %   NET I/O        BLOCK I/O   PIDS\n\
                    03792ab84090   busy   52.79%   200.00KiB / 23.54GiB   0.00%   1.23kB / 0B    0B / 0B     1\n\
                    a1a71560a4ea   idle   0.00%    512B / 64.00MiB        0.31%   0B / 12.5MB    0B / 0B     2\n";
        let rows = parse_stats_table(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].id.as_str(), rows[0].name.as_str()),
            ("03792ab84090", "busy")
        );
        assert!((rows[0].cpu_percent - 52.79).abs() < 1e-9);
        assert_eq!(rows[0].mem_usage, 200.0 * 1024.0);
        assert!((rows[0].mem_limit - 23.54 * 1024f64.powi(3)).abs() < 1.0);
        assert_eq!(rows[0].net, (1230.0, 0.0));
        assert_eq!(rows[0].pids, 1);
        assert_eq!(
            (rows[1].mem_usage, rows[1].mem_limit),
            (512.0, 64.0 * 1024.0 * 1024.0)
        );
        assert_eq!(rows[1].net, (0.0, 12.5e6));
        assert_eq!(rows[1].pids, 2);
        for bad in ["", "12", "1.5XB", "MiB", "1..5MiB"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn json_log_parsing() {
        let text = "{\"log\":\"a\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-01T00:00:00.5Z\"}\n\
                    {\"log\":\"b\\n\",\"stream\":\"stderr\",\"time\":\"2024-01-01T00:00:01Z\"}\n\
                    {\"log\":\"partial";
        let entries = parse_json_log(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].log, "a\n");
        assert_eq!(entries[1].stream, "stderr");
        assert!(entries[0].nanos < entries[1].nanos);
        assert!(
            parse_json_log(
                "{\"log\":\"a\\n\",\"stream\":\"stdin\",\"time\":\"2024-01-01T00:00:00Z\"}\n"
            )
            .is_err()
        );
        assert!(parse_json_log("{\"log\":\"a\\n\",\"stream\":\"stdout\"}\n").is_err());
        assert!(parse_json_log("not json\n").is_err());
    }

    #[test]
    fn process_identity() {
        let me = Process::of(std::process::id() as i32).expect("own process");
        assert!(me.is_alive());
        assert!(me.parent().is_some());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let p = Process::of(child.id() as i32).unwrap();
        assert!(p.is_alive(), "{p}");
        // Right after spawn the child may not have exec'd yet: its command line is then
        // still the test's own (a fork's copy) or empty.
        let deadline = Instant::now() + DEADLINE;
        while p.cmdline() != "sleep 30" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(p.cmdline(), "sleep 30");
        assert_eq!(p.parent(), Some(me));
        assert!(p.signal(nix::sys::signal::Signal::SIGKILL));
        assert!(p.wait_dead(DEADLINE), "killed child still alive");
        assert!(p.exists(), "a zombie still exists until reaped");
        child.wait().unwrap();
        assert!(!p.exists());
        let recycled = Process {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(
            !recycled.is_alive(),
            "start time must be part of the identity"
        );
    }
}
