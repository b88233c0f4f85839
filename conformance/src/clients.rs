//! podman and containerd driving carton-runtime (issue 10): private, throwaway instances of
//! each client for one scenario.
//!
//! A scenario picks the OCI runtime under test ([`Runtime`]: carton-runtime, or runc for the
//! reference results) and gets a [`Podman`] or a [`Containerd`] fixture. Both keep everything they
//! can under one temporary directory of their own (`<tmp>/carton-clients-XXXX`), run every client
//! command in the scenario's network namespace with a deadline, and put the containers' cgroups
//! under a cgroup parent named after that directory, so that scenarios running in parallel never
//! see each other and the clean-up knows exactly what is its own.
//!
//! Clean-up happens on drop (printing what it found) or in `finish()` (failing the test on it): the
//! client removes its containers, containerd is stopped, and then the fixture looks for what a
//! client or a runtime may have left behind — processes holding on to the directory (conmon,
//! containerd, shims, stuck clients), mounts mentioning it, container cgroups under the parent,
//! runtime state directories and containerd shim sockets outside the directory — reports them,
//! and removes them anyway.
//!
//! Some state cannot be kept inside the directory, because the clients hard-code it:
//! - podman does not pass its `--runtime-flag root=…` to `delete`, so the runtime's state stays
//!   in its default root (`/run/runc`, `/run/carton-runtime`): the fixture checks that no state
//!   there mentions the directory once the containers are removed;
//! - containerd 1.6 puts shim sockets in `/run/containerd/s/<sha256(address/namespace/id)>`:
//!   checked for every container id the scenario used;
//! - podman's blob-info cache (`/var/lib/containers/cache`) is shared by design; it is a cache.
//!
//! Hybrid cgroup hosts (v1 controllers plus a controller-less cgroup2 at /sys/fs/cgroup/unified)
//! need no special treatment: with cgroupfs, podman, containerd's shim, runc and carton-runtime
//! all work there as they are (the v1 hierarchies carry the limits; runc also joins the unified
//! hierarchy, carton-runtime leaves it alone), so nothing is unmounted, not even in a private
//! mount namespace. Only crun refuses such hosts.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::host::{self, Process};
use crate::netns::TestNetns;
use crate::{CartonCmd, DEADLINE, rootfs, skip};

pub use crate::oci::Runtime;

/// `name` on PATH (or in the sbin directories root's PATH usually has), as an absolute path.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// What both fixtures share: the directory, the network namespace, the runtime, the cgroup parent.
struct Scratch {
    netns: TestNetns,
    base: PathBuf,
    runtime: Runtime,
    runtime_bin: PathBuf,
    busybox: PathBuf,
    /// Relative cgroup path (no leading `/`) under which the clients create container cgroups.
    cgroup_parent: String,
}

impl Scratch {
    /// Checks the prerequisites common to both clients (root, busybox, the runtime, `programs`),
    /// skipping with a reason when one is missing, and creates the directory and namespace.
    fn new(runtime: Runtime, programs: &[&str]) -> Option<Scratch> {
        if !nix::unistd::geteuid().is_root() {
            skip("not running as root: podman and containerd need root here");
            return None;
        }
        for program in programs {
            if find_program(program).is_none() {
                skip(&format!(
                    "{program} is not installed (apt-get install podman containerd)"
                ));
                return None;
            }
        }
        let Some(busybox) = rootfs::find_static_busybox() else {
            skip(&format!(
                "no static busybox (install busybox-static, or set {})",
                rootfs::BUSYBOX_ENV
            ));
            return None;
        };
        let runtime_bin = match runtime.binary() {
            Ok(bin) => bin,
            Err(reason) => {
                skip(&reason);
                return None;
            }
        };
        let base = tempfile::Builder::new()
            .prefix("carton-clients-")
            .tempdir_in(std::env::temp_dir())
            .expect("create the scenario's temporary directory")
            .keep();
        // Containers may run as other users and must traverse paths below it (the rootfs).
        std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod the scenario directory");
        let name = base
            .file_name()
            .expect("temporary directory name")
            .to_string_lossy()
            .into_owned();
        let netns = TestNetns::new().expect("create the scenario's network namespace");
        Some(Scratch {
            netns,
            base,
            runtime,
            runtime_bin,
            busybox,
            cgroup_parent: name,
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.base.join(rel)
    }

    /// A client command with a deadline, in the scenario's network namespace.
    fn command(&self, program: &str) -> CartonCmd {
        let mut cmd = CartonCmd::new(program);
        cmd.netns = Some(self.netns.clone());
        cmd
    }

    /// The busybox rootfs tarball, written into the directory.
    fn busybox_tar(&self) -> PathBuf {
        let dest = self.path("busybox-rootfs.tar");
        if !dest.exists() {
            rootfs::write_busybox_rootfs_tar(&self.busybox, &dest)
                .unwrap_or_else(|e| panic!("write the busybox rootfs tarball: {e}"));
        }
        dest
    }

    /// The scenario's cgroup parent directory in every mounted hierarchy where it exists.
    fn cgroup_parent_dirs(&self) -> Vec<PathBuf> {
        crate::cgroup::roots()
            .into_iter()
            .map(|m| m.join(&self.cgroup_parent))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// The leak checks that follow the client's own clean-up; `expected_cgroups` are the names of
    /// child cgroups the client leaves by design (podman's `conmon`). Everything found is
    /// removed; what should not have been there is returned.
    fn sweep(&self, container_words: &[String], expected_cgroups: &[&str]) -> Vec<String> {
        let mut problems = Vec::new();

        // Processes: conmon, containerd, shims, clients — they all name the directory on their
        // command line or keep a file of it open. Given a grace period: a conmon or shim may still
        // be on its way out after the container was removed.
        let words: Vec<&str> = container_words.iter().map(String::as_str).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut left = host::processes_referencing(&[self.base.as_path()], &words);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = host::processes_referencing(&[self.base.as_path()], &words);
        }
        if !left.is_empty() {
            problems.push(format!(
                "processes of this scenario still alive (killed now):\n    {}",
                left.iter()
                    .map(|(p, why)| format!("{p}: {why}"))
                    .collect::<Vec<_>>()
                    .join("\n    ")
            ));
            for (process, _) in &left {
                process.signal(nix::sys::signal::Signal::SIGKILL);
            }
            for (process, _) in &left {
                process.wait_dead(Duration::from_secs(5));
            }
        }

        // Cgroups: container cgroups under the parent must be gone; the parent itself (and the
        // client's own children of it) are the fixture's to remove.
        let mut leaked = Vec::new();
        for dir in self.cgroup_parent_dirs() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && !expected_cgroups.contains(&name.as_str()) {
                    leaked.push(entry.path());
                }
            }
        }
        if !leaked.is_empty() {
            problems.push(format!("container cgroups left behind: {leaked:?}"));
        }
        let parents = self.cgroup_parent_dirs();
        crate::cgroup::kill_and_remove(&parents);
        let still = self.cgroup_parent_dirs();
        if !still.is_empty() {
            problems.push(format!("cannot remove the cgroup parent: {still:?}"));
        }

        // Mounts (podman's shm, containerd's bundles): detached deepest first so that the
        // directory can be removed.
        let mounts = host::mount_lines_mentioning(&self.base);
        if !mounts.is_empty() {
            problems.push(format!(
                "host mount table mentions {}:\n    {}",
                self.base.display(),
                mounts.join("\n    ")
            ));
            host::detach_mounts(&mounts, "carton-clients");
        }
        problems
    }
}

impl Drop for Scratch {
    /// Removes the directory, last: the fixtures owning a `Scratch` sweep in their own `drop`,
    /// which runs before this one.
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.base) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("carton-clients: remove {}: {e}", self.base.display());
            }
        }
    }
}

/// The cgroup of `pid` in the v1 hierarchy holding `controller`, or with `controller` empty in
/// the unified hierarchy of a v2 host, as a host directory, from /proc/<pid>/cgroup and the mount
/// table.
pub fn host_cgroup_dir(pid: i32, controller: &str) -> Option<PathBuf> {
    let text = Process::of(pid)?.cgroup()?;
    let info = host::mountinfo();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        // `0::/path` is the unified hierarchy: the one that counts on a v2 host, and a
        // controller-less extra on a hybrid one.
        let v1 = !controller.is_empty() && controllers.split(',').any(|c| c == controller);
        let v2 =
            controllers.is_empty() && crate::cgroup::version() == Some(crate::cgroup::Version::V2);
        if !v1 && !v2 {
            continue;
        }
        let mount = info.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let opts = r.nth(1)?;
            let matches = if v1 {
                fstype == "cgroup" && opts.split(',').any(|o| o == controller)
            } else {
                fstype == "cgroup2"
            };
            matches.then(|| left.split(' ').nth(4).map(PathBuf::from))?
        })?;
        return Some(mount.join(path.trim_start_matches('/')));
    }
    None
}

/// Polls `f` until it returns `Some`, for at most [`DEADLINE`]; panics with `what` otherwise.
#[track_caller]
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// podman

/// A private podman: its own storage (vfs), run root, tmp dir (file locks, events, exit files),
/// network config dir and containers.conf, all under the scenario's directory; containers under
/// the cgroup parent `/<directory name>` (cgroupfs), with no network.
pub struct Podman {
    s: Scratch,
    done: bool,
    /// Dropped after the clean-up (fields drop after `Drop::drop`).
    runroot: crate::PodmanRunRoot,
}

/// The reference for the busybox image every podman scenario imports.
pub const PODMAN_IMAGE: &str = "localhost/busybox:latest";

impl Podman {
    /// A private podman using `runtime`, with the busybox rootfs imported as [`PODMAN_IMAGE`],
    /// or `None` (after printing `SKIP: …`) when podman, conmon or the runtime is missing.
    pub fn new(runtime: Runtime) -> Option<Podman> {
        let s = Scratch::new(runtime, &["podman", "conmon"])?;
        for dir in ["storage", "run", "tmp", "net", "vartmp"] {
            std::fs::create_dir(s.path(dir)).expect("create a podman directory");
        }
        // The ulimits: podman's defaults ask for more than the hard limit this machine grants
        // (raising it needs CAP_SYS_RESOURCE); cgroupfs: no systemd to talk to; file events and
        // file locks: no journald, and no /dev/shm/libpod_lock shared with every other podman
        // (a fresh tmp dir would make podman "refresh" and free all locks in it).
        let conf = format!(
            "[containers]\n\
             default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             lock_type = \"file\"\n\
             tmp_dir = \"{tmp}\"\n\
             [network]\n\
             network_config_dir = \"{net}\"\n",
            tmp = s.path("tmp").display(),
            net = s.path("net").display(),
        );
        std::fs::write(s.path("containers.conf"), conf).expect("write containers.conf");
        let runroot = crate::PodmanRunRoot::for_dir(&s.base);
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            s.path("storage").display(),
            runroot.path.display()
        );
        std::fs::write(s.path("storage.conf"), storage).expect("write storage.conf");
        let podman = Podman {
            s,
            done: false,
            runroot,
        };
        let tar = podman.s.busybox_tar();
        podman
            .cmd()
            .arg("import")
            .arg(&tar)
            .arg(PODMAN_IMAGE)
            .assert()
            .success();
        Some(podman)
    }

    /// The runtime podman is told to use.
    pub fn runtime(&self) -> Runtime {
        self.s.runtime
    }

    /// The scenario's directory.
    pub fn base(&self) -> &Path {
        &self.s.base
    }

    /// The cgroup parent podman puts the containers under (`--cgroup-parent`).
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.s.cgroup_parent)
    }

    /// `podman <private globals> …`: a deadline, the scenario's namespace, the private config.
    pub fn cmd(&self) -> CartonCmd {
        let s = &self.s;
        let mut cmd = s.command("podman");
        cmd.env("CONTAINERS_CONF", s.path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", s.path("storage.conf"))
            // `podman import` unpacks into $TMPDIR (default /var/tmp).
            .env("TMPDIR", s.path("vartmp"))
            .arg("--root")
            .arg(s.path("storage"))
            .arg("--runroot")
            .arg(&self.runroot.path)
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .arg("--tmpdir")
            .arg(s.path("tmp"))
            .arg("--network-config-dir")
            .arg(s.path("net"))
            .arg("--runtime")
            .arg(&s.runtime_bin);
        cmd
    }

    /// `podman run --network none --cgroup-parent <parent> <args…>`.
    pub fn run<I, S>(&self, args: I) -> CartonCmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.cmd();
        cmd.args(["run", "--network", "none", "--cgroup-parent"])
            .arg(self.cgroup_parent())
            .args(args);
        cmd
    }

    /// `podman inspect <container>` as JSON (the first element).
    #[track_caller]
    pub fn inspect(&self, container: &str) -> serde_json::Value {
        let out = self.cmd().args(["inspect", container]).stdout_ok();
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("podman inspect {container}: {e}\n{out}"));
        v[0].clone()
    }

    /// Full ids of every container podman lists.
    #[track_caller]
    pub fn container_ids(&self) -> Vec<String> {
        crate::lines(
            &self
                .cmd()
                .args(["ps", "-a", "-q", "--no-trunc"])
                .stdout_ok(),
        )
    }

    /// Cgroup directories of container `id` (`<parent>/libpod-<id>` in any hierarchy).
    pub fn container_cgroups(&self, id: &str) -> Vec<PathBuf> {
        self.s
            .cgroup_parent_dirs()
            .into_iter()
            .map(|d| d.join(format!("libpod-{id}")))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// Runtime state directories in the runtime's default root that belong to this scenario
    /// (their state names a bundle under the scenario's directory).
    pub fn runtime_state_left(&self) -> Vec<PathBuf> {
        let needle = self.s.base.to_string_lossy().into_owned();
        let root = self.s.runtime.default_root();
        std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|dir| {
                std::fs::read_to_string(dir.join("state.json"))
                    .is_ok_and(|text| text.contains(&needle))
            })
            .collect()
    }

    /// Ends the scenario: removes every container, then fails the test if anything was left (see
    /// the module documentation).
    #[track_caller]
    pub fn finish(mut self) {
        let problems = self.clean_up();
        self.done = true;
        assert!(
            problems.is_empty(),
            "podman with {:?} left things behind in {}:\n  {}",
            self.s.runtime,
            self.s.base.display(),
            problems.join("\n  ")
        );
    }

    fn clean_up(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let ids = match self
            .cmd()
            .args(["ps", "-a", "-q", "--no-trunc"])
            .try_output()
        {
            Ok(out) => crate::lines(&String::from_utf8_lossy(&out.stdout)),
            Err(e) => {
                problems.push(e);
                Vec::new()
            }
        };
        if !ids.is_empty() {
            problems.push(format!("containers still listed at the end: {ids:?}"));
            match self
                .cmd()
                .args(["rm", "-f", "-t", "0"])
                .args(&ids)
                .try_output()
            {
                Ok(out) if out.status.success() => {}
                Ok(out) => problems.push(format!(
                    "podman rm -f failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => problems.push(e),
            }
        }
        problems.extend(self.s.sweep(&ids, &["conmon"]));
        let state = self.runtime_state_left();
        if !state.is_empty() {
            problems.push(format!("runtime state left behind: {state:?}"));
            for dir in state {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        problems
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if !self.done {
            let problems = self.clean_up();
            if !problems.is_empty() {
                eprintln!(
                    "carton-clients: clean-up of podman in {} found:\n  {}",
                    self.s.base.display(),
                    problems.join("\n  ")
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// containerd

/// A private containerd: root, state, gRPC socket and `opt` directory under the scenario's
/// directory, the CRI plugin disabled, started in the scenario's network namespace and stopped
/// at the end. `ctr` is pointed at it; containers get the runtime through `--runc-binary`, a
/// runtime root (`--runc-root`) and a FIFO directory under the scenario's directory, and a
/// cgroup `/<directory name>/<container id>`.
pub struct Containerd {
    s: Scratch,
    daemon: Option<Child>,
    /// Container ids the scenario used (for the shim socket check).
    ids: RefCell<BTreeSet<String>>,
    done: bool,
}

impl Containerd {
    /// A running private containerd whose containers use `runtime`, with the busybox rootfs
    /// unpacked in [`Containerd::rootfs`], or `None` (after printing `SKIP: …`) when containerd,
    /// its runc shim, ctr or the runtime is missing.
    pub fn new(runtime: Runtime) -> Option<Containerd> {
        let s = Scratch::new(runtime, &["containerd", "ctr", "containerd-shim-runc-v2"])?;
        for dir in ["root", "state", "opt", "fifo", "runtime-root", "rootfs"] {
            std::fs::create_dir(s.path(dir)).expect("create a containerd directory");
        }
        let tar = s.busybox_tar();
        let file = std::fs::File::open(&tar).expect("open the busybox tarball");
        let mut archive = tar::Archive::new(file);
        archive.set_preserve_permissions(true);
        archive
            .unpack(s.path("rootfs"))
            .unwrap_or_else(|e| panic!("unpack the busybox rootfs: {e}"));
        // The `opt` plugin would otherwise create /opt/containerd on the host.
        let config = format!(
            "version = 2\n\
             root = \"{root}\"\n\
             state = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
            root = s.path("root").display(),
            state = s.path("state").display(),
            sock = s.path("containerd.sock").display(),
            opt = s.path("opt").display(),
        );
        std::fs::write(s.path("config.toml"), config).expect("write config.toml");
        let log = std::fs::File::create(s.path("containerd.log")).expect("create containerd.log");
        let mut cmd = Command::new(find_program("containerd").expect("checked above"));
        cmd.arg("--config")
            .arg(s.path("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        s.netns.apply(&mut cmd);
        let daemon = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start containerd: {e}"));
        let mut ctd = Containerd {
            s,
            daemon: Some(daemon),
            ids: RefCell::new(BTreeSet::new()),
            done: false,
        };
        ctd.wait_ready();
        Some(ctd)
    }

    /// Waits until `ctr version` gets an answer from the daemon.
    #[track_caller]
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|d| d.try_wait().ok().flatten())
            {
                panic!(
                    "containerd exited ({status}) while starting:\n{}",
                    self.log()
                );
            }
            if self.s.path("containerd.sock").exists() {
                if let Ok(out) = self.ctr().arg("version").try_output() {
                    if out.status.success() {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within {DEADLINE:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last 40 lines of containerd's own log, for failure messages.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.s.path("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The runtime the containers use.
    pub fn runtime(&self) -> Runtime {
        self.s.runtime
    }

    /// The unpacked busybox rootfs (for `--rootfs`).
    pub fn rootfs(&self) -> PathBuf {
        self.s.path("rootfs")
    }

    /// A file path in the scenario's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.s.path(rel)
    }

    /// The cgroup path given to container `id` (`--cgroup`).
    pub fn cgroup_path(&self, id: &str) -> String {
        format!("/{}/{id}", self.s.cgroup_parent)
    }

    /// `ctr --address <private socket> …` with a deadline, in the scenario's namespace.
    pub fn ctr(&self) -> CartonCmd {
        let mut cmd = self.s.command("ctr");
        cmd.arg("--address").arg(self.s.path("containerd.sock"));
        cmd
    }

    /// `ctr run <flags…> --runc-binary <runtime> --runc-root … --fifo-dir … --cgroup … --rootfs
    /// <rootfs> <id> <command…>`.
    pub fn run(&self, flags: &[&str], id: &str, command: &[&str]) -> CartonCmd {
        self.ids.borrow_mut().insert(id.to_string());
        let mut cmd = self.ctr();
        cmd.arg("run")
            .args(flags)
            .arg("--runc-binary")
            .arg(&self.s.runtime_bin)
            .arg("--runc-root")
            .arg(self.s.path("runtime-root"))
            .arg("--fifo-dir")
            .arg(self.s.path("fifo"))
            .arg("--cgroup")
            .arg(self.cgroup_path(id))
            .arg("--rootfs")
            .arg(self.rootfs())
            .arg(id)
            .args(command);
        cmd
    }

    /// `ctr task exec <flags…> --fifo-dir … --exec-id <exec_id> <id> <command…>`.
    pub fn exec(&self, flags: &[&str], id: &str, exec_id: &str, command: &[&str]) -> CartonCmd {
        let mut cmd = self.ctr();
        cmd.args(["task", "exec"])
            .args(flags)
            .arg("--fifo-dir")
            .arg(self.s.path("fifo"))
            .args(["--exec-id", exec_id, id])
            .args(command);
        cmd
    }

    /// `ctr task ls` as (id, pid, status) rows.
    #[track_caller]
    pub fn tasks(&self) -> Vec<(String, i32, String)> {
        let out = self.ctr().args(["task", "ls"]).stdout_ok();
        out.lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((
                    f.next()?.to_string(),
                    f.next()?.parse().ok()?,
                    f.next()?.to_string(),
                ))
            })
            .collect()
    }

    /// The (pid, status) of task `id`, if listed.
    #[track_caller]
    pub fn task(&self, id: &str) -> Option<(i32, String)> {
        self.tasks()
            .into_iter()
            .find(|(t, _, _)| t == id)
            .map(|(_, pid, status)| (pid, status))
    }

    /// Container ids containerd lists.
    #[track_caller]
    pub fn container_ids(&self) -> Vec<String> {
        crate::lines(&self.ctr().args(["containers", "ls", "-q"]).stdout_ok())
    }

    /// Host directories of container `id`'s cgroup that exist.
    pub fn container_cgroups(&self, id: &str) -> Vec<PathBuf> {
        self.s
            .cgroup_parent_dirs()
            .into_iter()
            .map(|d| d.join(id))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// Entries of the runtime root (`--runc-root`, one directory per containerd namespace) that
    /// are still there: the runtime's state of containers not deleted.
    pub fn runtime_state_left(&self) -> Vec<PathBuf> {
        let root = self.s.path("runtime-root");
        let mut left = Vec::new();
        for ns in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for entry in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                left.push(entry.path());
            }
        }
        left
    }

    /// containerd 1.6's shim socket for container `id` in namespace `default`.
    fn shim_socket(&self, id: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        let key = format!("{}/default/{id}", self.s.path("containerd.sock").display());
        let hex: String = Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Path::new("/run/containerd/s").join(hex)
    }

    /// Ends the scenario: removes every task and container, stops containerd, then fails the test
    /// if anything was left (see the module documentation).
    #[track_caller]
    pub fn finish(mut self) {
        let problems = self.clean_up();
        self.done = true;
        assert!(
            problems.is_empty(),
            "containerd with {:?} left things behind in {}:\n  {}\ncontainerd log:\n{}",
            self.s.runtime,
            self.s.base.display(),
            problems.join("\n  "),
            self.log()
        );
    }

    fn clean_up(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let running = self
            .daemon
            .as_mut()
            .is_some_and(|d| d.try_wait().ok().flatten().is_none());
        if running {
            let tasks = self
                .ctr()
                .args(["task", "ls", "-q"])
                .try_output()
                .map(|o| crate::lines(&String::from_utf8_lossy(&o.stdout)))
                .unwrap_or_default();
            if !tasks.is_empty() {
                problems.push(format!("tasks still listed at the end: {tasks:?}"));
                for t in &tasks {
                    let _ = self
                        .ctr()
                        .args(["task", "kill", "-s", "SIGKILL", t])
                        .try_output();
                    let _ = self.ctr().args(["task", "rm", "-f", t]).try_output();
                }
            }
            let containers = self
                .ctr()
                .args(["containers", "ls", "-q"])
                .try_output()
                .map(|o| crate::lines(&String::from_utf8_lossy(&o.stdout)))
                .unwrap_or_default();
            if !containers.is_empty() {
                problems.push(format!(
                    "containers still listed at the end: {containers:?}"
                ));
                let _ = self
                    .ctr()
                    .args(["containers", "rm"])
                    .args(&containers)
                    .try_output();
            }
        } else {
            problems.push("containerd is not running at the end".into());
        }
        if let Some(mut daemon) = self.daemon.take() {
            let pid = nix::unistd::Pid::from_raw(daemon.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + DEADLINE;
            loop {
                match daemon.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        problems.push("containerd ignored SIGTERM; killed it".into());
                        let _ = daemon.kill();
                        let _ = daemon.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        let ids: Vec<String> = self.ids.borrow().iter().cloned().collect();
        // Container ids are short words (`c1`): look for processes by path only, not by id.
        problems.extend(self.s.sweep(&[], &[]));
        let state = self.runtime_state_left();
        if !state.is_empty() {
            problems.push(format!("runtime state left behind: {state:?}"));
        }
        for id in &ids {
            let socket = self.shim_socket(id);
            if socket.exists() {
                problems.push(format!(
                    "shim socket of {id} left behind: {}",
                    socket.display()
                ));
                let _ = std::fs::remove_file(socket);
            }
        }
        // The shims' socket directory, when nothing else uses it (a system containerd keeps
        // its own socket in /run/containerd, so that removal then fails, as it should). A
        // shim makes the directory again when it needs it.
        let _ = std::fs::remove_dir("/run/containerd/s");
        let _ = std::fs::remove_dir("/run/containerd");
        problems
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if !self.done {
            let problems = self.clean_up();
            if !problems.is_empty() {
                eprintln!(
                    "carton-clients: clean-up of containerd in {} found:\n  {}",
                    self.s.base.display(),
                    problems.join("\n  ")
                );
            }
        }
    }
}
