//! Harness for the OCI runtime scenarios: one [`OciHost`] per scenario drives an OCI runtime
//! binary (carton-runtime, or runc as the reference) with runc's command line, over bundles it
//! writes itself, so the same scenario runs unchanged against both and their observable results
//! can be compared.
//!
//! Everything lives in a temporary directory of the scenario (state `--root`, bundles, the
//! `--log` file) and in its own network namespace; each container's cgroup goes below a parent
//! named after that directory. [`OciHost::finish`] deletes every container the runtime still
//! lists and fails the scenario when anything is left: a container, a state directory, a mount,
//! a cgroup, a process.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{CartonCmd, DEADLINE, host, netns, rootfs, skip, unmet_prerequisite};

/// The runtime a scenario drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// carton-runtime, the binary under test.
    Carton,
    /// runc, the reference: what carton-runtime's results are compared with.
    Runc,
}

impl Runtime {
    /// The binary, or why it cannot be used.
    pub fn binary(self) -> Result<PathBuf, String> {
        match self {
            Runtime::Carton => Ok(crate::carton_runtime_bin()),
            Runtime::Runc => crate::clients::find_program("runc").ok_or_else(|| {
                "runc (the reference runtime) is not installed: apt-get install runc".into()
            }),
        }
    }

    /// The state root the runtime uses when its caller passes no `--root`.
    pub fn default_root(self) -> &'static Path {
        match self {
            Runtime::Carton => Path::new("/run/carton-runtime"),
            Runtime::Runc => Path::new("/run/runc"),
        }
    }
}

/// One scenario's runtime, state root, bundles and clean-up.
pub struct OciHost {
    runtime: Runtime,
    bin: PathBuf,
    netns: netns::TestNetns,
    base: PathBuf,
    root: PathBuf,
    log: PathBuf,
    rootfs_tar: PathBuf,
    /// cgroup parent of every container of this scenario (relative to each hierarchy's root).
    cgroup_parent: String,
    ids: std::cell::RefCell<Vec<String>>,
    done: bool,
}

impl OciHost {
    /// A fresh host for `runtime`, or `None` (after `skip`) when the machine cannot run it.
    pub fn new(runtime: Runtime) -> Option<OciHost> {
        if let Some(reason) = unmet_prerequisite() {
            skip(&reason);
            return None;
        }
        let bin = match runtime.binary() {
            Ok(bin) => bin,
            Err(reason) => {
                skip(&reason);
                return None;
            }
        };
        let busybox = rootfs::find_static_busybox().expect("checked by unmet_prerequisite");
        let base = tempfile::Builder::new()
            .prefix("carton-oci-")
            .tempdir_in(std::env::temp_dir())
            .expect("create a temporary directory")
            .keep();
        std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod base dir");
        let rootfs_tar = base.join("busybox-rootfs.tar");
        rootfs::write_busybox_rootfs_tar(&busybox, &rootfs_tar).expect("write busybox rootfs");
        let name = base.file_name().unwrap().to_string_lossy().into_owned();
        Some(OciHost {
            runtime,
            bin,
            netns: netns::TestNetns::new().expect("create the scenario's network namespace"),
            root: base.join("state"),
            log: base.join("runtime.log"),
            base,
            rootfs_tar,
            cgroup_parent: name,
            ids: Default::default(),
            done: false,
        })
    }

    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// The scenario's directory (bundles and scratch files live below it).
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// `base()/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.base.join(rel)
    }

    /// The state `--root` of the runtime.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `--log` file (JSON lines).
    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// The network namespace that plays the host.
    pub fn netns(&self) -> &netns::TestNetns {
        &self.netns
    }

    /// The cgroup path (`linux.cgroupsPath`) the bundles of this host give container `id`.
    pub fn cgroups_path(&self, id: &str) -> String {
        format!("/{}/{id}", self.cgroup_parent)
    }

    /// A bundle directory `name` with the busybox rootfs and a config.json running `args`
    /// ([`default_config`]), after `edit` changed the config.
    pub fn bundle(&self, name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
        let dir = self.base.join(name);
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs).expect("create bundle rootfs");
        let file = File::open(&self.rootfs_tar).expect("open busybox rootfs tar");
        let mut archive = tar::Archive::new(file);
        archive.set_preserve_permissions(true);
        archive.unpack(&rootfs).expect("unpack busybox rootfs");
        let mut config = default_config(args);
        config["linux"]["cgroupsPath"] = json!(self.cgroups_path(name));
        edit(&mut config);
        self.write_config(&dir, &config);
        dir
    }

    /// Replaces a bundle's config.json.
    pub fn write_config(&self, bundle: &Path, config: &Value) {
        let text = serde_json::to_vec_pretty(config).expect("serialize config");
        std::fs::write(bundle.join("config.json"), text).expect("write config.json");
    }

    /// `<runtime> --root <root> --log <log> --log-format json <args…>`, in the scenario's
    /// network namespace, with a deadline.
    pub fn cmd<I, S>(&self, args: I) -> CartonCmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = CartonCmd::new(&self.bin);
        cmd.netns = Some(self.netns.clone());
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .args(["--log-format", "json"])
            .args(args);
        cmd
    }

    /// Runs a command that leaves a container process behind (`create`, `run --detach`,
    /// `exec --detach`): the container inherits the command's stdout and stderr, so they go to
    /// files (`<base>/<id>.out`, `.err`) instead of pipes that would stay open. Returns the
    /// status and what the command itself printed to stderr so far.
    pub fn run_leaving_process<I, S>(&self, id: &str, args: I) -> (ExitStatus, String)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let child = self.spawn_leaving_process(id, args);
        self.wait_leaving_process(id, child)
    }

    /// [`OciHost::run_leaving_process`] without the wait: the command runs on while the
    /// scenario looks at the container (a `create` held up in a hook). Finish it with
    /// [`OciHost::wait_leaving_process`].
    #[track_caller]
    pub fn spawn_leaving_process<I, S>(&self, id: &str, args: I) -> Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn_leaving_process_with(id, args, |_| {})
    }

    /// [`OciHost::spawn_leaving_process`] after `configure` changed the command (descriptors
    /// handed to the runtime in a `pre_exec`, say).
    #[track_caller]
    pub fn spawn_leaving_process_with<I, S>(
        &self,
        id: &str,
        args: I,
        configure: impl FnOnce(&mut std::process::Command),
    ) -> Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.remember(id);
        let mut cmd = self.cmd(args).to_std();
        cmd.stdin(Stdio::null())
            .stdout(append(&self.base.join(format!("{id}.out"))))
            .stderr(append(&self.base.join(format!("{id}.err"))));
        configure(&mut cmd);
        cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
    }

    /// [`OciHost::run_leaving_process`] under a [`Subreaper`], as containerd's shim and conmon
    /// run `exec --detach`: the process the runtime leaves behind is reparented to it when the
    /// runtime exits, and its exit status can be collected with [`Subreaper::wait_exit`].
    /// Returns at once; [`Subreaper::wait_runtime`] waits for the runtime.
    #[track_caller]
    pub fn spawn_under_subreaper<I, S>(&self, id: &str, args: I) -> Subreaper
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.remember(id);
        let cmd = self.cmd(args).to_std();
        Subreaper::spawn(
            &cmd,
            &self.netns,
            &append(&self.base.join(format!("{id}.out"))),
            &append(&self.base.join(format!("{id}.err"))),
        )
    }

    /// `<runtime> --root <root> <args…>` in the scenario's network namespace, without the
    /// `--log` and `--log-format` flags of [`OciHost::cmd`].
    pub fn cmd_without_log<I, S>(&self, args: I) -> CartonCmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = CartonCmd::new(&self.bin);
        cmd.netns = Some(self.netns.clone());
        cmd.arg("--root").arg(&self.root).args(args);
        cmd
    }

    /// Waits (with the suite's deadline) for a command of [`OciHost::spawn_leaving_process`];
    /// returns its status and what it printed to stderr so far.
    #[track_caller]
    pub fn wait_leaving_process(&self, id: &str, child: Child) -> (ExitStatus, String) {
        let status = wait_with_deadline(child, DEADLINE);
        let err_path = self.base.join(format!("{id}.err"));
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        (status, err)
    }

    /// `create --bundle <bundle> [extra…] <id>`; asserts success.
    #[track_caller]
    pub fn create(&self, id: &str, bundle: &Path, extra: &[&str]) {
        let mut args: Vec<&OsStr> = vec![OsStr::new("create"), OsStr::new("--bundle")];
        args.push(bundle.as_os_str());
        args.extend(extra.iter().map(OsStr::new));
        args.push(OsStr::new(id));
        let (status, err) = self.run_leaving_process(id, args);
        assert!(
            status.success(),
            "{:?} create {id} failed ({status}): {err}\nlog: {}",
            self.runtime,
            self.log_text()
        );
    }

    /// What the container `id` printed (its stdout file).
    pub fn container_output(&self, id: &str) -> String {
        std::fs::read_to_string(self.base.join(format!("{id}.out"))).unwrap_or_default()
    }

    /// Waits until the container's stdout contains `needle`; returns it.
    #[track_caller]
    pub fn wait_for_output(&self, id: &str, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let text = self.container_output(id);
            if text.contains(needle) {
                return text;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "container {id} never printed {needle:?}; it printed {text:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `state <id>` as JSON; asserts success.
    #[track_caller]
    pub fn state(&self, id: &str) -> Value {
        let out = self.cmd(["state", id]).stdout_ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("state {id} is not JSON ({e}): {out}"))
    }

    /// The `status` of `state <id>`.
    #[track_caller]
    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"]
            .as_str()
            .unwrap_or_else(|| panic!("state {id} has no status"))
            .to_string()
    }

    /// Waits until `state <id>` reports `status`.
    #[track_caller]
    pub fn wait_status(&self, id: &str, status: &str) {
        let started = Instant::now();
        loop {
            let now = self.status(id);
            if now == status {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "container {id} stayed {now:?}, expected {status:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ids the runtime lists (`list -q`).
    #[track_caller]
    pub fn listed(&self) -> Vec<String> {
        let out = self.cmd(["list", "-q"]).stdout_ok();
        out.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// The `--log` file's content.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `--log` file's entries with level "error" (their messages); panics on a line that is
    /// not a JSON object with `level` and `msg`.
    #[track_caller]
    pub fn logged_errors(&self) -> Vec<String> {
        self.logged("error")
    }

    /// The `--log` file's entries with level "warning" (their messages).
    #[track_caller]
    pub fn logged_warnings(&self) -> Vec<String> {
        self.logged("warning")
    }

    /// The `--log` file's entries at `wanted` level (their messages); panics on a line that is
    /// not a JSON object with `level` and `msg`.
    #[track_caller]
    fn logged(&self, wanted: &str) -> Vec<String> {
        let mut errors = Vec::new();
        for line in self.log_text().lines().filter(|l| !l.trim().is_empty()) {
            let entry: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("--log line is not JSON ({e}): {line}"));
            let level = entry["level"].as_str();
            let msg = entry["msg"].as_str();
            assert!(
                level.is_some() && msg.is_some(),
                "--log line without level/msg: {line}"
            );
            if level == Some(wanted) {
                errors.push(msg.unwrap().to_string());
            }
        }
        errors
    }

    /// Host directories of container `id`'s cgroup that exist.
    pub fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        crate::cgroup::roots()
            .into_iter()
            .map(|r| r.join(&self.cgroup_parent).join(id))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// The host path of a cgroup file of container `id`, in the hierarchy that has `v1_controller`
    /// (v1) or the unified one (v2): the first that exists.
    pub fn cgroup_file(
        &self,
        id: &str,
        v1_controller: &str,
        v1: &str,
        v2: &str,
    ) -> Option<PathBuf> {
        for dir in self.cgroup_dirs(id) {
            let parent = dir.parent()?.parent()?;
            let is_v1 = parent
                .file_name()
                .is_some_and(|n| n.to_string_lossy().split(',').any(|c| c == v1_controller));
            if is_v1 && dir.join(v1).exists() {
                return Some(dir.join(v1));
            }
            if dir.join(v2).exists() && dir.join("cgroup.controllers").exists() {
                return Some(dir.join(v2));
            }
        }
        None
    }

    fn remember(&self, id: &str) {
        let mut ids = self.ids.borrow_mut();
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
    }

    /// Ends the scenario: deletes (forcibly) every container the runtime lists, then fails if a
    /// container is still listed, the state root holds anything, a cgroup, mount or process of
    /// the scenario is left. Leftovers are removed either way.
    #[track_caller]
    pub fn finish(mut self) {
        let problems = self.clean_up();
        self.done = true;
        assert!(
            problems.is_empty(),
            "{:?} left things behind in {}:\n  {}",
            self.runtime,
            self.base.display(),
            problems.join("\n  ")
        );
    }

    fn clean_up(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let list = |host: &OciHost| -> Vec<String> {
            match host.cmd(["list", "-q"]).try_output() {
                Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect(),
                _ => Vec::new(),
            }
        };
        if self.root.exists() {
            for id in list(self) {
                let _ = self.cmd(["delete", "--force", &id]).try_output();
            }
            let left = list(self);
            if !left.is_empty() {
                problems.push(format!(
                    "containers still listed after delete --force: {left:?}"
                ));
            }
            let entries: Vec<String> = std::fs::read_dir(&self.root)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            if !entries.is_empty() {
                problems.push(format!("the state root still holds {entries:?}"));
            }
        }
        // Container processes have their root in a bundle; runtime processes name the root.
        let ids: Vec<String> = self.ids.borrow().clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut leftovers = host::processes_referencing(&[&self.base], &[]);
        while !leftovers.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            leftovers = host::processes_referencing(&[&self.base], &[]);
        }
        for (process, why) in &leftovers {
            problems.push(format!(
                "process {} left ({why}): {}",
                process.pid,
                process.cmdline()
            ));
            process.signal(nix::sys::signal::Signal::SIGKILL);
        }
        for id in &ids {
            let dirs = self.cgroup_dirs(id);
            if !dirs.is_empty() {
                problems.push(format!("cgroup of {id} left: {dirs:?}"));
                crate::cgroup::kill_and_remove(&dirs);
            }
        }
        // The parent directories are the scenario's own (runtimes never remove a parent).
        for root in crate::cgroup::roots() {
            let parent = root.join(&self.cgroup_parent);
            if parent.is_dir() {
                if let Ok(children) = std::fs::read_dir(&parent) {
                    let dirs: Vec<PathBuf> = children
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .collect();
                    crate::cgroup::kill_and_remove(&dirs);
                }
                let _ = std::fs::remove_dir(&parent);
            }
        }
        let mounts = host::mount_lines_mentioning(&self.base);
        if !mounts.is_empty() {
            problems.push(format!("mounts left: {mounts:?}"));
            host::detach_mounts(&mounts, "carton-oci");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.base) {
            problems.push(format!("cannot remove {}: {e}", self.base.display()));
        }
        problems
    }
}

impl Drop for OciHost {
    fn drop(&mut self) {
        if !self.done {
            let problems = self.clean_up();
            if !problems.is_empty() {
                eprintln!(
                    "clean-up after a failed scenario:\n  {}",
                    problems.join("\n  ")
                );
            }
        }
    }
}

/// A process forked from the scenario to play containerd's shim or conmon for one runtime
/// command: a child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER) that runs the command as its
/// child, and then collects the exit status of every process reparented to it — what the
/// runtime left behind (`exec --detach`) once the runtime exited. It reports each exit
/// (pid and wait status) over a pipe, and exits itself once it has no children left.
///
/// The fork happens in a threaded test process, so the child makes only async-signal-safe
/// system calls on memory prepared before the fork, and closes every descriptor it inherited
/// but the report pipe (another thread's pipe held open would keep that command's reader
/// waiting).
pub struct Subreaper {
    pid: libc::pid_t,
    runtime_pid: libc::pid_t,
    exits: std::sync::Arc<std::sync::Mutex<Vec<(libc::pid_t, libc::c_int)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Subreaper {
    #[track_caller]
    fn spawn(
        cmd: &std::process::Command,
        netns: &netns::TestNetns,
        out: &File,
        err: &File,
    ) -> Subreaper {
        use std::ffi::CString;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::ffi::OsStrExt;

        let c = |s: &OsStr| CString::new(s.as_bytes()).expect("no NUL in the command");
        let program = c(cmd.get_program());
        let args: Vec<CString> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(c)
            .collect();
        let env: Vec<CString> = std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).expect("no NUL in the environment")
            })
            .collect();
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        let null = File::open("/dev/null").expect("open /dev/null");
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills a two-element array.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
        // SAFETY: fresh descriptors owned from here on.
        let (report_r, report_w) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let (netns_fd, in_fd, out_fd, err_fd, w) = (
            netns.fd().as_raw_fd(),
            null.as_raw_fd(),
            out.as_raw_fd(),
            err.as_raw_fd(),
            report_w.as_raw_fd(),
        );

        // SAFETY: after the fork, the child calls only async-signal-safe functions on data
        // prepared above, and never returns.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: see above; every path ends in _exit.
            unsafe {
                let report = |record: [libc::c_int; 3]| {
                    libc::write(w, record.as_ptr().cast(), std::mem::size_of_val(&record));
                };
                if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0
                    || libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0
                {
                    libc::_exit(126);
                }
                let runtime = libc::fork();
                if runtime == 0 {
                    if libc::dup2(in_fd, 0) < 0
                        || libc::dup2(out_fd, 1) < 0
                        || libc::dup2(err_fd, 2) < 0
                    {
                        libc::_exit(126);
                    }
                    // Everything else is close-on-exec.
                    libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    libc::_exit(127);
                }
                report([0, runtime, 0]);
                // Nothing but the report pipe stays open here (close_range(2): Linux 5.9).
                if libc::syscall(libc::SYS_close_range, 0u32, (w - 1) as u32, 0u32) != 0 {
                    for fd in 0..w {
                        libc::close(fd);
                    }
                }
                if libc::syscall(libc::SYS_close_range, (w + 1) as u32, u32::MAX, 0u32) != 0 {
                    for fd in w + 1..65536 {
                        libc::close(fd);
                    }
                }
                loop {
                    let mut status = 0;
                    let pid = libc::waitpid(-1, &mut status, 0);
                    if pid > 0 {
                        report([1, pid, status]);
                    } else if *libc::__errno_location() != libc::EINTR {
                        libc::_exit(0);
                    }
                }
            }
        }
        drop(report_w);
        let mut report_r = File::from(report_r);
        let mut first = [0u8; 12];
        std::io::Read::read_exact(&mut report_r, &mut first)
            .expect("the subreaper reports the runtime's pid");
        let word = |b: &[u8], i: usize| {
            libc::c_int::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap())
        };
        let runtime_pid = word(&first, 1);
        let exits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let reader = std::thread::spawn({
            let exits = exits.clone();
            move || {
                let mut record = [0u8; 12];
                while std::io::Read::read_exact(&mut report_r, &mut record).is_ok() {
                    exits
                        .lock()
                        .unwrap()
                        .push((word(&record, 1), word(&record, 2)));
                }
            }
        });
        Subreaper {
            pid,
            runtime_pid,
            exits,
            reader: Some(reader),
        }
    }

    /// Waits (with the suite's deadline) for the exit of `pid`, a child of the subreaper.
    #[track_caller]
    pub fn wait_exit(&self, pid: i32) -> ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        let started = Instant::now();
        loop {
            let found = self
                .exits
                .lock()
                .unwrap()
                .iter()
                .find(|(p, _)| *p == pid)
                .copied();
            if let Some((_, status)) = found {
                return ExitStatus::from_raw(status);
            }
            assert!(
                started.elapsed() < DEADLINE,
                "process {pid} did not exit within {DEADLINE:?} (exits seen: {:?})",
                self.exits.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the runtime command itself.
    #[track_caller]
    pub fn wait_runtime(&self) -> ExitStatus {
        self.wait_exit(self.runtime_pid)
    }
}

impl Drop for Subreaper {
    fn drop(&mut self) {
        // Normally gone already: it exits when its last child did.
        // SAFETY: signalling and reaping our own child.
        unsafe {
            if libc::waitpid(self.pid, std::ptr::null_mut(), libc::WNOHANG) == 0 {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn append(path: &Path) -> File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Waits for `child` to end; kills it and panics at `deadline`.
#[track_caller]
fn wait_with_deadline(mut child: Child, deadline: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for the runtime") {
            return status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "runtime process {} did not finish within {deadline:?}",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// stdout+stderr of an output, for messages.
pub fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The config.json every scenario starts from: the busybox rootfs, `args` as root with
/// docker's default capabilities, new pid/net/ipc/uts/mount namespaces, the usual /proc, /dev,
/// /sys mounts. Written here (not taken from `spec`) so both runtimes get the same bytes.
pub fn default_config(args: &[&str]) -> Value {
    let caps = [
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
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "oci-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// A bind mount entry for a config's `mounts`.
pub fn bind_mount(source: &Path, destination: &str) -> Value {
    json!({
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": ["rbind", "rw"]
    })
}
