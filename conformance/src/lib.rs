//! Harness for carton's conformance scenarios.
//!
//! Every scenario drives the real `carton` binary, as root, in a `--root` of its own. The
//! [`Carton`] fixture owns that root: it checks the prerequisites (skipping with a printed reason,
//! never silently), imports the busybox image on request, hands out commands with a deadline, and
//! on drop removes every container it can still see, reports and detaches leftover mounts, and
//! deletes the directory. Tests end with [`Carton::finish`], which performs the same clean-up but
//! *fails* the test when anything leaked.
//!
//! Nothing in here blocks without a deadline: a command that does not finish within
//! [`DEADLINE`] is killed and the test fails with whatever it printed so far.
//!
//! Modules: [`host`] (mount table, namespaces, processes, hashing), [`snapshot`] (directory trees
//! for "byte-identical" assertions), [`tarball`] (hand-written tar archives, hostile ones
//! included), [`pty`] (pseudo-terminals for `-t`), [`rootfs`] (the busybox rootfs tarball),
//! [`containers`] (detached containers: `run -d`, `inspect`, `ps` and `stats` rows, the json
//! log, the supervisor, file handshakes with a container).

pub mod cgroup;
pub mod clients;
pub mod containers;
pub mod host;
pub mod images;
pub mod netns;
pub mod oci;
pub mod pty;
pub mod remote;
pub mod rootfs;
pub mod security;
pub mod snapshot;
pub mod tarball;

use std::cell::OnceCell;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use assert_cmd::assert::Assert;
pub use snapshot::Snapshot;

/// Upper bound for any single wait in the suite (a command, a line of output, an exit).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// PATH a container gets when its image defines none (docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Names the carton binary to test; otherwise `target/<profile>/carton` next to the test binary.
pub const BIN_ENV: &str = "CARTON_BIN";

/// When set (non-empty, not `0`), a missing prerequisite fails the test instead of skipping it:
/// for CI and VM runs, where every scenario is expected to run.
pub const NO_SKIP_ENV: &str = "CARTON_CONFORMANCE_NO_SKIP";

/// Exit code of carton's own errors.
pub const EXIT_CARTON_ERROR: i32 = 125;

/// The carton binary under test: `$CARTON_BIN`, else `target/<profile>/carton` found from the
/// test executable (`target/<profile>/deps/<test>-<hash>`). Panics when it does not exist.
pub fn carton_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os(BIN_ENV).filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "{BIN_ENV}={} does not name a file: build it with `cargo build -p carton`",
            bin.display()
        );
        return bin;
    }
    let exe = std::env::current_exe().expect("current_exe() of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test binary location {}", exe.display()));
    let bin = profile_dir.join("carton");
    assert!(
        bin.is_file(),
        "the carton binary is missing at {}: run `cargo build -p carton` (or `cargo xtask test`), \
         or point {BIN_ENV} at it",
        bin.display()
    );
    bin
}

/// Names the carton-runtime binary (the OCI runtime) to test; otherwise the `carton-runtime` next
/// to the carton binary under test.
pub const RUNTIME_BIN_ENV: &str = "CARTON_RUNTIME_BIN";

/// The carton-runtime binary under test: `$CARTON_RUNTIME_BIN`, else `carton-runtime` in the
/// directory of [`carton_bin`]. Panics when it does not exist.
pub fn carton_runtime_bin() -> PathBuf {
    let bin = match std::env::var_os(RUNTIME_BIN_ENV).filter(|v| !v.is_empty()) {
        Some(bin) => PathBuf::from(bin),
        None => carton_bin().with_file_name("carton-runtime"),
    };
    assert!(
        bin.is_file(),
        "the carton-runtime binary is missing at {}: run `cargo build -p carton` (or `cargo xtask \
         test`), or point {RUNTIME_BIN_ENV} at it",
        bin.display()
    );
    bin
}

/// podman's `--runroot`: `<dir>/run`, unless that is longer than podman accepts (50 bytes: its
/// lock and socket paths must fit a unix socket address). A scenario directory under a long
/// TMPDIR — the VM guest's /run/carton-vm/tmp, a deep CI workspace — then gets a fresh
/// directory under /run instead, removed when this value is dropped.
pub struct PodmanRunRoot {
    pub path: PathBuf,
    outside: bool,
}

impl PodmanRunRoot {
    pub const MAX_LEN: usize = 50;

    pub fn for_dir(dir: &Path) -> PodmanRunRoot {
        let inside = dir.join("run");
        if inside.as_os_str().len() <= Self::MAX_LEN {
            std::fs::create_dir_all(&inside).expect("create podman's runroot");
            return PodmanRunRoot {
                path: inside,
                outside: false,
            };
        }
        let path = tempfile::Builder::new()
            .prefix("cpr-")
            .tempdir_in("/run")
            .expect("create podman's runroot under /run")
            .keep();
        PodmanRunRoot {
            path,
            outside: true,
        }
    }
}

impl Drop for PodmanRunRoot {
    fn drop(&mut self) {
        if self.outside {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Spawns `cmd` (its stdin /dev/null, stdout and stderr collected) and waits for it; kills it
/// and panics after `deadline`. Its output is read until the pipes close, but a process it left
/// behind that still holds them fails the call 5 s after the exit instead of blocking it.
#[track_caller]
pub fn output_within(mut cmd: Command, deadline: Duration) -> Output {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out_thread = pipe(Box::new(child.stdout.take().expect("piped stdout")));
    let err_thread = pipe(Box::new(child.stderr.take().expect("piped stderr")));
    let status = wait_within(&mut child, deadline, &desc);
    let join = |t: JoinHandle<Vec<u8>>, what: &str| {
        let until = Instant::now() + Duration::from_secs(5);
        while !t.is_finished() {
            assert!(
                Instant::now() < until,
                "{desc} exited ({status}) but its {what} is still held open by another process"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        t.join().unwrap_or_default()
    };
    Output {
        status,
        stdout: join(out_thread, "stdout"),
        stderr: join(err_thread, "stderr"),
    }
}

/// Waits for `child` to exit; kills it and panics (naming it `desc`) after `deadline`.
#[track_caller]
pub fn wait_within(child: &mut Child, deadline: Duration, desc: &str) -> ExitStatus {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{desc} did not finish within {deadline:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Prints `SKIP: reason` (the test then returns early), or panics when [`NO_SKIP_ENV`] is set.
pub fn skip(reason: &str) {
    let strict = std::env::var(NO_SKIP_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    if strict {
        panic!("prerequisite missing and {NO_SKIP_ENV} is set: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// Prints `SKIP: reason` and never panics: for a case that cannot apply to this kernel or
/// layout at all (nothing is missing that CI could install), unlike [`skip`].
pub fn not_applicable(reason: &str) {
    eprintln!("SKIP: not applicable here: {reason}");
}

/// The first prerequisite of the whole suite that this machine lacks, if any.
pub fn unmet_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root: carton needs root for namespaces and mounts".into());
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        return Some("no overlay in /proc/filesystems (try `modprobe overlay`)".into());
    }
    if rootfs::find_static_busybox().is_none() {
        return Some(format!(
            "no static busybox (install busybox-static, or set {})",
            rootfs::BUSYBOX_ENV
        ));
    }
    None
}

/// One scenario's carton: a fresh `--root`, a scratch directory, and clean-up.
///
/// Layout: `<tmp>/carton-conf-XXXX/root` is the `--root` (created by carton itself),
/// `<tmp>/carton-conf-XXXX/work` is scratch space for tarballs, volumes, env files.
pub struct Carton {
    /// The network namespace that plays the host for this scenario.
    netns: netns::TestNetns,
    base: PathBuf,
    root: PathBuf,
    work: PathBuf,
    bin: PathBuf,
    busybox: PathBuf,
    busybox_tar: OnceCell<PathBuf>,
    busybox_id: Option<String>,
    done: bool,
}

impl Carton {
    /// A fixture with an empty root, or `None` (after printing `SKIP: …`) when the machine
    /// cannot run the suite. Use as `let Some(ct) = Carton::new() else { return };`.
    pub fn new() -> Option<Carton> {
        if let Some(reason) = unmet_prerequisite() {
            skip(&reason);
            return None;
        }
        let bin = carton_bin();
        let busybox = rootfs::find_static_busybox().expect("checked by unmet_prerequisite");
        let base = tempfile::Builder::new()
            .prefix("carton-conf-")
            .tempdir_in(std::env::temp_dir())
            .expect("create a temporary directory for the carton root")
            .keep();
        // 0755 rather than tempfile's 0700: containers running as another user may need to
        // traverse paths below it (volumes).
        std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod base dir");
        let work = base.join("work");
        std::fs::create_dir(&work).expect("create scratch dir");
        let netns = netns::TestNetns::new().expect("create the scenario's network namespace");
        Some(Carton {
            netns,
            root: base.join("root"),
            base,
            work,
            bin,
            busybox,
            busybox_tar: OnceCell::new(),
            busybox_id: None,
            done: false,
        })
    }

    /// [`Carton::new`] plus the busybox rootfs imported as `busybox:latest` with `CMD ["sh"]`.
    pub fn with_busybox() -> Option<Carton> {
        let mut ct = Carton::new()?;
        let id = ct.import_busybox("busybox", &[r#"CMD ["sh"]"#]);
        ct.busybox_id = Some(id);
        Some(ct)
    }

    /// The `--root` directory (it may not exist before carton's first command).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The per-test directory holding both the root and the scratch directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Scratch directory (exists), outside the root.
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// `work()/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.work.join(rel)
    }

    /// The carton binary under test.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The static busybox the image is made from.
    pub fn busybox(&self) -> &Path {
        &self.busybox
    }

    /// `carton --root <root>`, with a deadline of [`DEADLINE`] and stdin at EOF.
    pub fn cmd(&self) -> CartonCmd {
        let mut cmd = CartonCmd::new(&self.bin);
        cmd.netns = Some(self.netns.clone());
        cmd.arg("--root").arg(&self.root);
        cmd
    }

    /// The network namespace that plays the host for this scenario (every `cmd()` runs in it).
    pub fn netns(&self) -> &netns::TestNetns {
        &self.netns
    }

    /// `carton --root <root> run <args…>`.
    pub fn run<I, S>(&self, args: I) -> CartonCmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.cmd();
        cmd.arg("run").args(args);
        cmd
    }

    /// Runs `carton run <args…>`, asserts success and returns its stdout.
    #[track_caller]
    pub fn run_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(args).stdout_ok()
    }

    /// The busybox rootfs tarball (written on first use into the scratch directory).
    pub fn busybox_tar(&self) -> &Path {
        self.busybox_tar.get_or_init(|| {
            let dest = self.work.join("busybox-rootfs.tar");
            rootfs::write_busybox_rootfs_tar(&self.busybox, &dest)
                .unwrap_or_else(|e| panic!("write busybox rootfs tar: {e}"));
            dest
        })
    }

    /// Top-level names in the busybox rootfs tarball (`bin`, `etc`, …).
    pub fn busybox_top_level(&self) -> std::collections::BTreeSet<String> {
        let file = std::fs::File::open(self.busybox_tar()).expect("open busybox tar");
        let mut archive = tar::Archive::new(file);
        let mut names = std::collections::BTreeSet::new();
        for entry in archive.entries().expect("read busybox tar") {
            let entry = entry.expect("busybox tar entry");
            let path = entry.path().expect("entry path").into_owned();
            if let Some(first) = path.components().next() {
                names.insert(first.as_os_str().to_string_lossy().into_owned());
            }
        }
        names
    }

    /// `carton import [--change C]… <busybox tar> <reference>`; asserts it prints an image id
    /// (`sha256:<64 hex>`) and returns it.
    #[track_caller]
    pub fn import_busybox(&self, reference: &str, changes: &[&str]) -> String {
        let tar = self.busybox_tar().to_path_buf();
        let mut cmd = self.cmd();
        cmd.arg("import");
        for change in changes {
            cmd.arg("--change").arg(change);
        }
        cmd.arg(&tar).arg(reference);
        let out = cmd.output();
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && is_image_id(&stdout),
            "carton import of the busybox rootfs as {reference} failed: {}\n\
             expected `sha256:<64 hex>` on stdout\nstdout: {stdout:?}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Id (`sha256:…`) of `busybox:latest` as printed by the import of [`Carton::with_busybox`].
    pub fn busybox_id(&self) -> &str {
        self.busybox_id
            .as_deref()
            .expect("busybox_id() needs Carton::with_busybox()")
    }

    /// Full ids of every container carton lists (`ps -aq --no-trunc`).
    #[track_caller]
    pub fn container_ids(&self) -> Vec<String> {
        let out = self.cmd().args(["ps", "-aq", "--no-trunc"]).stdout_ok();
        out.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// The single container in this root, by full id (panics unless there is exactly one).
    #[track_caller]
    pub fn only_container_id(&self) -> String {
        let ids = self.container_ids();
        assert_eq!(
            ids.len(),
            1,
            "expected exactly one container, ps lists {ids:?}"
        );
        ids.into_iter().next().unwrap()
    }

    /// Entries of `<root>/containers/` (empty when the directory does not exist).
    pub fn container_dirs(&self) -> Vec<String> {
        let mut names: Vec<String> = match std::fs::read_dir(self.root.join("containers")) {
            Ok(dir) => dir
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }

    /// Snapshot of the whole `--root` tree.
    pub fn snapshot_root(&self) -> Snapshot {
        Snapshot::of(&self.root)
    }

    /// Lines of the host's /proc/self/mountinfo that mention this test's directory.
    pub fn leaked_mounts(&self) -> Vec<String> {
        host::mount_lines_mentioning(&self.base)
    }

    /// Ends the scenario: removes every container (`rm -f`), then fails the test if carton still
    /// lists a container, if `<root>/containers/` is not empty, if a container's cgroup is left,
    /// if a mount mentions this test's directories, or if a process of this test is still alive
    /// (a supervisor or CLI holding the root: see [`host::processes_referencing`]). Leftover
    /// mounts are detached, leftover processes (and those of leftover cgroups) killed, either way.
    #[track_caller]
    pub fn finish(mut self) {
        let problems = self.clean_up();
        self.done = true;
        assert!(
            problems.is_empty(),
            "carton left things behind in {}:\n  {}",
            self.root.display(),
            problems.join("\n  ")
        );
    }

    /// Removes containers and leftover mounts; returns what went wrong, for a report.
    fn clean_up(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut listed_ids = Vec::new();
        if self.root.exists() {
            let ps = |ct: &Carton| -> Result<Vec<String>, String> {
                let out = ct.cmd().args(["ps", "-aq", "--no-trunc"]).try_output()?;
                if !out.status.success() {
                    return Err(format!(
                        "`carton ps -aq --no-trunc` failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                Ok(String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect())
            };
            let listed = ps(self).unwrap_or_default();
            listed_ids.clone_from(&listed);
            match ps(self) {
                Err(e) => problems.push(e),
                Ok(ids) if ids.is_empty() => {}
                Ok(ids) => {
                    match self.cmd().args(["rm", "-f"]).args(&ids).try_output() {
                        Err(e) => problems.push(e),
                        Ok(out) if !out.status.success() => problems.push(format!(
                            "`carton rm -f {}` failed ({}): {}",
                            ids.join(" "),
                            out.status,
                            String::from_utf8_lossy(&out.stderr).trim()
                        )),
                        Ok(_) => {}
                    }
                    match ps(self) {
                        Err(e) => problems.push(e),
                        Ok(left) if !left.is_empty() => {
                            problems.push(format!("containers still listed after rm -f: {left:?}"))
                        }
                        Ok(_) => {}
                    }
                }
            }
            for id in &listed {
                let left = cgroup::existing_dirs(id);
                if !left.is_empty() {
                    problems.push(format!("cgroup of container {id} left behind: {left:?}"));
                    cgroup::kill_and_remove(&left);
                }
            }
            let dirs = self.container_dirs();
            if !dirs.is_empty() {
                problems.push(format!(
                    "{}/containers still holds {dirs:?}",
                    self.root.display()
                ));
            }
        }
        // Processes still holding on to this test's files (a supervisor that outlived its
        // container, a stuck command): given a grace period, since a supervisor may still be on
        // its way out after removing an `--rm` container.
        let mut ids = self.container_dirs();
        ids.extend(listed_ids);
        ids.sort();
        ids.dedup();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut left = self.processes_left(&ids);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = self.processes_left(&ids);
        }
        if !left.is_empty() {
            problems.push(format!(
                "processes of this test still alive (killed now):\n    {}",
                left.iter()
                    .map(|(p, why)| format!("{p}: {why}"))
                    .collect::<Vec<_>>()
                    .join("\n    ")
            ));
            for (process, _) in &left {
                process.signal(nix::sys::signal::Signal::SIGKILL);
            }
        }
        let mounts = self.leaked_mounts();
        if !mounts.is_empty() {
            problems.push(format!(
                "host mount table mentions {}:\n    {}",
                self.base.display(),
                mounts.join("\n    ")
            ));
            host::detach_mounts(&mounts, "carton-conf");
        }
        problems
    }
}

impl Drop for Carton {
    fn drop(&mut self) {
        if !self.done {
            let problems = self.clean_up();
            if !problems.is_empty() {
                eprintln!(
                    "carton-conf: clean-up of {} found:\n  {}",
                    self.root.display(),
                    problems.join("\n  ")
                );
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.base) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("carton-conf: remove {}: {e}", self.base.display());
            }
        }
    }
}

/// A command with a deadline, in the spirit of `assert_cmd::Command` (same builder methods,
/// [`CartonCmd::assert`] returns an [`assert_cmd::assert::Assert`]), but which never hangs: the
/// child is killed at the deadline and its output is read without waiting for grandchildren that
/// might hold the pipes open.
pub struct CartonCmd {
    /// The namespace the command runs in (the fixture's "host").
    netns: Option<netns::TestNetns>,
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl CartonCmd {
    /// A command running `program`; see [`Carton::cmd`] for one with `--root`.
    pub fn new(program: impl AsRef<Path>) -> CartonCmd {
        CartonCmd {
            netns: None,
            program: program.as_ref().to_path_buf(),
            args: Vec::new(),
            envs: Vec::new(),
            stdin: None,
            timeout: DEADLINE,
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for arg in args {
            self.arg(arg);
        }
        self
    }

    /// Sets a variable in carton's own environment.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.envs.push((
            key.as_ref().to_os_string(),
            Some(value.as_ref().to_os_string()),
        ));
        self
    }

    /// Removes a variable from carton's own environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.envs.push((key.as_ref().to_os_string(), None));
        self
    }

    /// Bytes written to carton's stdin, which is then closed. Without it stdin is /dev/null.
    pub fn write_stdin(&mut self, data: impl Into<Vec<u8>>) -> &mut Self {
        self.stdin = Some(data.into());
        self
    }

    /// Replaces the default deadline of [`DEADLINE`].
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// The command line, for messages.
    pub fn describe(&self) -> String {
        let mut s = self.program.display().to_string();
        for arg in &self.args {
            s.push(' ');
            let arg = arg.to_string_lossy();
            if arg.is_empty()
                || arg.contains(|c: char| c.is_whitespace() || "'\"$;&|<>*?".contains(c))
            {
                s.push_str(&format!("{arg:?}"));
            } else {
                s.push_str(&arg);
            }
        }
        s
    }

    /// The equivalent `std::process::Command` (stdio left to the caller).
    pub fn to_std(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        if let Some(netns) = &self.netns {
            netns.apply(&mut cmd);
        }
        for (key, value) in &self.envs {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd
    }

    /// Starts the command with piped stdout and stderr, collected in the background.
    #[track_caller]
    pub fn spawn(&mut self) -> Running {
        self.try_spawn().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`CartonCmd::spawn`] without panicking.
    pub fn try_spawn(&mut self) -> Result<Running, String> {
        let mut cmd = self.to_std();
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let desc = self.describe();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("failed to spawn `{desc}`: {e}"))?;
        let mut threads = Vec::new();
        if let (Some(data), Some(mut stdin)) = (self.stdin.clone(), child.stdin.take()) {
            // Errors (EPIPE when carton does not read its stdin) are expected and ignored.
            threads.push(std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            }));
        }
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        threads.push(collect(
            child.stdout.take().expect("piped stdout"),
            stdout.clone(),
        ));
        threads.push(collect(
            child.stderr.take().expect("piped stderr"),
            stderr.clone(),
        ));
        Ok(Running {
            child,
            stdout,
            stderr,
            threads,
            desc,
            timeout: self.timeout,
            started: Instant::now(),
            status: None,
        })
    }

    /// Runs to completion (or panics at the deadline) and returns status and output.
    #[track_caller]
    pub fn output(&mut self) -> Output {
        self.spawn().wait()
    }

    /// [`CartonCmd::output`] without panicking (for clean-up paths).
    pub fn try_output(&mut self) -> Result<Output, String> {
        self.try_spawn()?.wait_result()
    }

    /// Runs to completion and returns an `Assert` for predicates on code, stdout and stderr.
    #[track_caller]
    pub fn assert(&mut self) -> Assert {
        self.spawn().assert()
    }

    /// Runs, asserts success, returns stdout.
    #[track_caller]
    pub fn stdout_ok(&mut self) -> String {
        let assert = self.assert().success();
        String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
    }
}

fn collect<R: Read + Send + 'static>(mut pipe: R, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    })
}

/// A carton process running in the background with its output collected.
/// Dropping it kills the process if it is still running.
pub struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    threads: Vec<JoinHandle<()>>,
    desc: String,
    timeout: Duration,
    started: Instant,
    status: Option<ExitStatus>,
}

impl Running {
    /// Host pid of the carton process.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait on carton");
        }
        self.status
    }

    /// Sends `sig` to the carton process (not to its group).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig)
            .unwrap_or_else(|e| panic!("kill({}, {sig}): {e}", self.pid()));
    }

    /// Waits until stdout contains `needle` and returns stdout so far. Panics at the deadline
    /// or when carton exits without printing it.
    #[track_caller]
    pub fn wait_for_stdout(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let out = self.stdout_so_far();
            if out.contains(needle) {
                return out;
            }
            if let Some(status) = self.try_wait() {
                // Let the readers catch up with the last bytes.
                self.join_readers(Duration::from_secs(2));
                let out = self.stdout_so_far();
                if out.contains(needle) {
                    return out;
                }
                panic!(
                    "`{}` exited ({status}) without printing {needle:?}\nstdout: {out}\nstderr: {}",
                    self.desc,
                    self.stderr_so_far()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "`{}` did not print {needle:?} within {DEADLINE:?}\nstdout: {out}\nstderr: {}",
                    self.desc,
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Joins the reader threads that finish within `grace`; true when all did.
    fn join_readers(&mut self, grace: Duration) -> bool {
        let until = Instant::now() + grace;
        while Instant::now() < until && !self.threads.iter().all(|t| t.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (done, pending): (Vec<_>, Vec<_>) =
            self.threads.drain(..).partition(|t| t.is_finished());
        for t in done {
            let _ = t.join();
        }
        let all = pending.is_empty();
        self.threads = pending;
        all
    }

    /// Waits for exit (killing carton and panicking at the deadline) and returns its output.
    /// Fails when carton's stdout or stderr stay open after it exited (a leaked process).
    #[track_caller]
    pub fn wait(self) -> Output {
        self.wait_result().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Running::wait`] without panicking: the error describes the timeout or the leak.
    pub fn wait_result(mut self) -> Result<Output, String> {
        let deadline = self.started + self.timeout;
        let status = loop {
            if let Some(status) = self.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                self.status = self.child.wait().ok();
                self.join_readers(Duration::from_secs(1));
                return Err(format!(
                    "`{}` did not finish within {:?}; killed it\nstdout so far: {}\nstderr so far: {}",
                    self.desc,
                    self.timeout,
                    self.stdout_so_far(),
                    self.stderr_so_far()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if !self.join_readers(Duration::from_secs(5)) {
            return Err(format!(
                "`{}` exited ({status}) but its stdout/stderr are still held open by another \
                 process (a leaked container process?)\nstdout: {}\nstderr: {}",
                self.desc,
                self.stdout_so_far(),
                self.stderr_so_far()
            ));
        }
        Ok(Output {
            status,
            stdout: std::mem::take(&mut *self.stdout.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
        })
    }

    /// [`Running::wait`], as an `Assert`.
    #[track_caller]
    pub fn assert(self) -> Assert {
        let desc = self.desc.clone();
        Assert::new(self.wait()).append_context("command", desc)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn is_image_id(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| is_hex(h, 64))
}

/// Exactly `len` lowercase hex digits.
pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `KEY=VALUE` lines (output of `env`) as a map; the first `=` splits.
pub fn parse_env(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Trimmed, non-empty lines.
pub fn lines(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.trim_end_matches('\r').trim())
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// A name unique to this process and call, for sentinels and container names.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Expected exit code of a process killed by `sig`: 128 + N.
pub fn signal_exit_code(sig: nix::sys::signal::Signal) -> i32 {
    128 + sig as i32
}
