//! Creating processes: the container's init ([`start`]) and a process joining a running
//! container ([`join`]). Both clone, let host-side work run while the child prepares, release
//! it with Go, and observe its exec through the close-on-exec sync channel.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::channel::{self, Channel, ToChild, ToParent};
use super::error::EngineError;
use super::init;
use super::plan::{Plan, ProcessPlan};
use super::signals;
use super::stdio::{self, HostStdio, Stdio};
use crate::cgroups::{CgroupManager, Entry};

/// A process whose user program has been exec'd.
#[derive(Debug)]
pub struct Started {
    pub pid: Pid,
    /// The pty master when [`Stdio::Terminal`] was asked for.
    pub console: Option<OwnedFd>,
    /// Read ends of stdout/stderr for [`Stdio::Piped`].
    pub stdio: HostStdio,
    /// The container's cgroup, for OOM checks and removal once it has exited (the init only).
    pub cgroup: Option<Box<dyn CgroupManager>>,
    /// carton's signal mask before the watched signals were blocked.
    pub(crate) saved_mask: SigSet,
}

/// What the caller does at the points of a container's start where the host side has work.
pub trait StartEvents {
    /// After the clone, while the init prepares its rootfs: network plumbing, records. An
    /// error kills the init.
    fn host_setup(&mut self, _pid: Pid) -> Result<(), String> {
        Ok(())
    }
    /// The console's pty master, before the exec (size it, or hand it to a console socket).
    /// An error kills the init.
    fn console(&mut self, _master: &OwnedFd) -> Result<(), String> {
        Ok(())
    }
    /// The init has its namespaces and mounts and waits before pivot_root: the prestart and
    /// createRuntime hooks run here (only called when the spec has hooks).
    fn before_pivot(&mut self, _pid: Pid) -> Result<(), String> {
        Ok(())
    }
}

/// Clones the init with the plan's namespaces and runs it up to the exec of the user's
/// process — or, with an exec FIFO, up to the point where it waits for `start`.
///
/// The watched signals stay blocked on success; [`super::foreground`] reads them.
pub fn start(
    plan: &Plan,
    cgroup: Option<&dyn CgroupManager>,
    stdio: Stdio,
    events: &mut dyn StartEvents,
) -> Result<Started, EngineError> {
    let (child_stdio, host_stdio) =
        stdio::prepare(stdio).map_err(EngineError::os("set up stdio"))?;
    let (parent_end, child_end) =
        channel::pair().map_err(EngineError::os("create sync channel"))?;
    // Namespaces to join are opened here, so that a bad path fails before anything exists.
    let joins: Vec<(OwnedFd, libc::c_int)> = plan
        .join
        .iter()
        .map(|(path, kind)| {
            File::open(path)
                .map(|f| (OwnedFd::from(f), *kind))
                .map_err(|e| EngineError::InvalidSpec(format!("namespace {}: {e}", path.display())))
        })
        .collect::<Result<_, _>>()?;
    if let Some(path) = &plan.join_pid {
        let ns = File::open(path)
            .map_err(|e| EngineError::InvalidSpec(format!("namespace {}: {e}", path.display())))?;
        // Only carton's future children enter it.
        // SAFETY: setns with an fd of a pid namespace file.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWPID) } != 0 {
            return Err(EngineError::last_os("join the pid namespace"));
        }
    }
    let saved_mask = block_signals()?;
    let guard = MaskGuard(saved_mask);

    // On cgroup v2 the child is born in its cgroup (clone3 CLONE_INTO_CGROUP): no window in
    // which it runs uncounted, and no write to cgroup.procs afterwards. On v1 it moves itself
    // in before anything else (see `Entry::SelfMove`).
    let entry = cgroup.map(|c| c.entry()).transpose()?;
    let (rc, born_in) = clone_child(plan.clone_flags, clone_into(entry.as_ref()))?;
    let joining = CgroupJoin::of(entry.as_ref(), born_in);
    if rc == 0 {
        drop(parent_end);
        init::run(plan, &joins, &child_end, &child_stdio, joining);
    }
    let pid = Pid::from_raw(rc as libc::pid_t);
    let by_parent = matches!(joining, CgroupJoin::FromParent);
    drop((child_end, child_stdio, entry, joins));

    let started = (|| {
        if let (Some(cgroup), true) = (cgroup, by_parent) {
            cgroup.add_process(pid.as_raw())?;
            if plan.cgroup_namespace {
                parent_end
                    .send_to_child(&ToChild::CgroupJoined)
                    .map_err(EngineError::os("tell container init it joined its cgroup"))?;
            }
        }
        events.host_setup(pid).map_err(EngineError::Setup)?;
        handshake(&parent_end, pid, events)
    })();
    finish(pid, started, host_stdio, guard)
}

/// Namespaces of a running container, opened from its init's /proc entry.
#[derive(Debug)]
pub struct Target {
    pid: OwnedFd,
    /// (fd, CLONE_NEW* kind) in the order they are joined: the mount namespace last.
    others: Vec<(OwnedFd, libc::c_int)>,
}

impl Target {
    /// Opens the namespaces of `pid` that differ from carton's own.
    pub fn open(pid: i32) -> Result<Target, EngineError> {
        let open = |name: &str| {
            File::open(format!("/proc/{pid}/ns/{name}"))
                .map(OwnedFd::from)
                .map_err(EngineError::os("open the container's namespaces"))
        };
        let same_as_mine = |name: &str| {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{name}")).ok();
            let mine = std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
            theirs.is_some() && theirs == mine
        };
        let mut others = Vec::new();
        for (name, kind) in [
            ("ipc", libc::CLONE_NEWIPC),
            ("uts", libc::CLONE_NEWUTS),
            ("net", libc::CLONE_NEWNET),
            ("cgroup", libc::CLONE_NEWCGROUP),
            ("mnt", libc::CLONE_NEWNS),
        ] {
            if !same_as_mine(name) {
                others.push((open(name)?, kind));
            }
        }
        Ok(Target {
            pid: open("pid")?,
            others,
        })
    }
}

/// Starts `process` inside the running container `target` (`exec`). The child is cloned into
/// the container's pid namespace (carton joins it for its children only), its cgroup (clone3
/// on v2, cgroup.procs on v1), then joins the other namespaces itself. With `detached`, it
/// does not die with carton.
pub fn join(
    target: &Target,
    process: &ProcessPlan,
    cgroup: Option<&dyn CgroupManager>,
    stdio: Stdio,
    detached: bool,
    events: &mut dyn StartEvents,
) -> Result<Started, EngineError> {
    let (child_stdio, host_stdio) =
        stdio::prepare(stdio).map_err(EngineError::os("set up stdio"))?;
    let (parent_end, child_end) =
        channel::pair().map_err(EngineError::os("create sync channel"))?;
    // The child runs carton's code inside the container's pid namespace until its exec, where
    // the container's processes can see it. Non-dumpable, its /proc entries (exe, mem, fd) are
    // closed to them (CVE-2019-5736: overwriting the runtime through /proc/<pid>/exe); exec
    // makes the user's program dumpable again.
    // SAFETY: prctl with integer arguments; affects this process and its future children.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(EngineError::last_os("make carton non-dumpable"));
    }
    // setns(CLONE_NEWPID) only changes the namespace of carton's future children.
    // SAFETY: setns with an fd of a pid namespace file.
    if unsafe { libc::setns(target.pid.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
        return Err(EngineError::last_os("join the container's pid namespace"));
    }
    let saved_mask = block_signals()?;
    let guard = MaskGuard(saved_mask);
    let entry = cgroup.map(|c| c.entry()).transpose()?;
    let (rc, born_in) = clone_child(0, clone_into(entry.as_ref()))?;
    let joining = CgroupJoin::of(entry.as_ref(), born_in);
    if rc == 0 {
        drop(parent_end);
        init::run_joined(
            process,
            &target.others,
            &child_end,
            &child_stdio,
            joining,
            !detached,
        );
    }
    let pid = Pid::from_raw(rc as libc::pid_t);
    let by_parent = matches!(joining, CgroupJoin::FromParent);
    drop((child_end, child_stdio, entry));
    let started = (|| {
        if let (Some(cgroup), true) = (cgroup, by_parent) {
            cgroup.add_process(pid.as_raw())?;
        }
        handshake(&parent_end, pid, events)
    })();
    finish(pid, started, host_stdio, guard)
}

/// Parent side after the clone: collect the console, run the create-time hooks when the init
/// asks, wait for Ready, say Go, and wait for the exec (end-of-file, since the channel is
/// close-on-exec), its failure, or — OCI create — the init's report that it waits for `start`.
fn handshake(
    parent_end: &Channel,
    pid: Pid,
    events: &mut dyn StartEvents,
) -> Result<Option<OwnedFd>, EngineError> {
    let mut console = None;
    loop {
        match parent_end
            .recv_from_child()
            .map_err(EngineError::os("read from container init"))?
        {
            Some(ToParent::Console(fd)) => {
                events.console(&fd).map_err(EngineError::Setup)?;
                console = Some(fd);
            }
            Some(ToParent::HooksPoint) => {
                events.before_pivot(pid).map_err(EngineError::Setup)?;
                parent_end
                    .send_to_child(&ToChild::HooksDone)
                    .map_err(EngineError::os("resume container init after hooks"))?;
            }
            Some(ToParent::Ready) => break,
            Some(ToParent::Failed(failure)) => return Err(EngineError::Init(failure)),
            Some(ToParent::Created) => {
                return Err(EngineError::Setup(
                    "container init skipped its release".into(),
                ));
            }
            None => return Err(init_died(pid)),
        }
    }
    parent_end
        .send_to_child(&ToChild::Go)
        .map_err(EngineError::os("release container init"))?;
    match parent_end
        .recv_from_child()
        .map_err(EngineError::os("read from container init"))?
    {
        None | Some(ToParent::Created) => Ok(console),
        Some(ToParent::Failed(failure)) => Err(EngineError::Init(failure)),
        Some(other) => Err(EngineError::Setup(format!(
            "unexpected message from container init after release: {other:?}"
        ))),
    }
}

/// The directory to clone into, when the cgroup takes its processes that way.
fn clone_into(entry: Option<&Entry>) -> Option<&OwnedFd> {
    match entry {
        Some(Entry::CloneInto(fd)) => Some(fd),
        _ => None,
    }
}

/// How the child gets into its cgroup after the clone.
#[derive(Debug, Clone, Copy)]
pub enum CgroupJoin<'a> {
    /// Nothing to do: no cgroup, or born in it.
    Done,
    /// The child writes `0` into these `tasks` files itself, first thing.
    SelfMove(&'a [File]),
    /// The parent moves it and says so ([`ToChild::CgroupJoined`]).
    FromParent,
}

impl<'a> CgroupJoin<'a> {
    fn of(entry: Option<&'a Entry>, born_in: bool) -> CgroupJoin<'a> {
        match entry {
            None => CgroupJoin::Done,
            Some(_) if born_in => CgroupJoin::Done,
            Some(Entry::SelfMove(tasks)) => CgroupJoin::SelfMove(tasks),
            Some(_) => CgroupJoin::FromParent,
        }
    }
}

/// Restores the signal mask when set-up fails before the caller takes over.
struct MaskGuard(SigSet);

impl Drop for MaskGuard {
    fn drop(&mut self) {
        signals::restore_mask(&self.0);
    }
}

fn block_signals() -> Result<SigSet, EngineError> {
    signals::block_watched().map_err(|e| EngineError::Os {
        context: "block signals",
        source: e.into(),
    })
}

/// On failure kills and reaps the child (the mask is restored by the guard); on success
/// hands the mask over to [`Started`].
fn finish(
    pid: Pid,
    result: Result<Option<OwnedFd>, EngineError>,
    stdio: HostStdio,
    guard: MaskGuard,
) -> Result<Started, EngineError> {
    match result {
        Ok(console) => {
            let saved_mask = guard.0;
            std::mem::forget(guard);
            Ok(Started {
                pid,
                console,
                stdio,
                cgroup: None,
                saved_mask,
            })
        }
        Err(e) => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            Err(e)
        }
    }
}

/// Layout of `struct clone_args` (linux/sched.h), up to the `cgroup` field (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Creates the child, fork-like (no new stack: the child continues on a copy of this one —
/// sound because carton is single-threaded here). Returns the raw result (0 in the child) and
/// whether the child was placed in `cgroup` at birth.
fn clone_child(
    flags: libc::c_ulong,
    cgroup: Option<&OwnedFd>,
) -> Result<(libc::c_long, bool), EngineError> {
    if let Some(fd) = cgroup {
        let args = CloneArgs {
            flags: flags | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: fd.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 with a valid clone_args of the size passed; without a stack it behaves
        // like fork.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if rc >= 0 {
            return Ok((rc, true));
        }
        let err = std::io::Error::last_os_error();
        // Kernels before 5.7 know no CLONE_INTO_CGROUP (E2BIG/EINVAL), before 5.3 no clone3
        // (ENOSYS): fall back to clone + a write to cgroup.procs.
        if !matches!(
            err.raw_os_error(),
            Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
        ) {
            return Err(EngineError::Os {
                context: "clone the container init into its cgroup",
                source: err,
            });
        }
    }
    // SAFETY: see above.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if rc < 0 {
        return Err(EngineError::last_os("clone the container init"));
    }
    Ok((rc, false))
}

fn init_died(pid: Pid) -> EngineError {
    let status = match waitpid(pid, None) {
        Ok(status) => format!("{status:?}"),
        Err(e) => e.to_string(),
    };
    EngineError::InitDied(status)
}

/// Starts a child that enters `cgroup` exactly as a container's init does (born in it through
/// `entry`'s directory on v2, writing `0` into the `tasks` files itself on v1, moved by this
/// process otherwise), lets it exit at once, and reaps it. Without a cgroup it is a plain
/// fork, exit and wait. This is the part of a `run` that a cgroup's life is measured around
/// (`cargo xtask bench`, row 3c). The child makes only async-signal-safe calls, so the
/// caller may have threads.
pub fn spawn_and_reap(cgroup: Option<(&dyn CgroupManager, &Entry)>) -> Result<(), EngineError> {
    let entry = cgroup.map(|(_, entry)| entry);
    // A move by this process needs the child alive until it is done: the child waits for EOF.
    let hold = match entry {
        Some(Entry::ByParent | Entry::CloneInto(_)) => {
            Some(nix::unistd::pipe().map_err(|e| EngineError::Os {
                context: "pipe",
                source: e.into(),
            })?)
        }
        _ => None,
    };
    let (rc, born_in) = clone_child(0, clone_into(entry))?;
    if rc == 0 {
        // The child: only async-signal-safe calls from here on, and no destructors.
        let mut code = 0;
        if let Some(Entry::SelfMove(tasks)) = entry {
            for file in tasks {
                // SAFETY: write(2) of a 1-byte buffer to an open descriptor.
                if unsafe { libc::write(file.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
                    code = 1;
                }
            }
        }
        if let Some((read, write)) = &hold {
            let mut byte = 0u8;
            // SAFETY: close(2) of this process's copy of the write end, then read(2) into a
            // 1-byte buffer, which returns at EOF once the parent closes its copy.
            unsafe {
                libc::close(write.as_raw_fd());
                libc::read(read.as_raw_fd(), (&raw mut byte).cast(), 1);
            }
        }
        // SAFETY: ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let pid = Pid::from_raw(rc as i32);
    let moved = match cgroup {
        Some((cgroup, Entry::ByParent | Entry::CloneInto(_))) if !born_in => {
            cgroup.add_process(pid.as_raw())
        }
        _ => Ok(()),
    };
    drop(hold);
    let status = waitpid(pid, None).map_err(|e| EngineError::Os {
        context: "wait for the child",
        source: e.into(),
    })?;
    moved?;
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        other => Err(EngineError::InitDied(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::{self, Layout};

    /// The child of `spawn_and_reap` runs in the cgroup (its CPU time is charged there) and
    /// is gone when it returns (the cgroup can be removed). Needs root; skipped otherwise.
    #[test]
    fn spawned_child_runs_in_the_cgroup_and_is_reaped() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: making a cgroup needs root");
            return;
        }
        let layout = Layout::detect();
        if layout == Layout::None {
            eprintln!("SKIP: no cgroup filesystem");
            return;
        }
        let path = format!("/carton/unit-spawn-{}", std::process::id());
        let cgroup = cgroups::open(&layout, &path).unwrap();
        // Whatever fails, the cgroup is removed before the test says so.
        let lived = cgroup.create().map_err(EngineError::from).and_then(|()| {
            let entry = cgroup.entry()?;
            spawn_and_reap(Some((cgroup.as_ref(), &entry)))?;
            Ok(cgroup.stats()?.cpu_usage_ns)
        });
        let removed = cgroup.destroy();
        let usage = lived.unwrap();
        removed.unwrap();
        assert!(
            usage > 0,
            "the child's CPU time was not charged to its cgroup"
        );
        spawn_and_reap(None).unwrap();
    }
}
