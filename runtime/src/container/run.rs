//! Running a created container: in the foreground (carton waits, relays signals and the
//! terminal), or detached (a supervisor process owns it and logs its output). Both record its
//! pid while it runs, and its end: exit code, OOM kill, cgroup removal, `--rm`.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use super::create::Created;
use super::logs::{self, JsonLogWriter};
use super::{ContainerError, NetworkMode, etc_files};
use crate::cgroups::{CgroupManager, Resources};
use crate::engine::{
    self, Attach, EngineError, ExitStatus, StartEvents, StartOptions, Started, Stdio, ToCartonStdio,
};
use crate::network::{self, VethRemoval};
use crate::state::{
    ContainerRecord, Durability, StateStore, Status, Timestamp, process_start_time,
};

/// How the user is attached to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunMode {
    /// `-t`
    pub terminal: bool,
    /// `-i`
    pub interactive: bool,
}

/// Starts `created` and waits for it. Returns the container's exit code (128+N for a
/// signal). A container that could not start stays `Created` (as docker leaves it) unless it
/// was created with `--rm`.
pub fn run_foreground(
    states: &StateStore,
    created: Created,
    mode: RunMode,
) -> Result<i32, ContainerError> {
    let stdio = if mode.terminal {
        Stdio::Terminal
    } else {
        Stdio::Inherit {
            stdin: mode.interactive,
        }
    };
    let mut started = launch(states, &created, stdio)?;
    let cgroup = started.cgroup.take();
    let waited = engine::foreground::wait(
        started,
        Attach {
            stdin: mode.interactive,
        },
        &mut ToCartonStdio,
    );
    finalize(
        states,
        &created.record,
        cgroup,
        &waited,
        VethRemoval::LeaveToKernel,
    )?;
    Ok(waited?.code)
}

/// Starts `created` under a supervisor of its own and returns once the container runs (or
/// failed to start). The supervisor — a double-forked, session-leading copy of this process
/// that holds none of carton's stdio — waits for the container, logs its output and records
/// its end.
pub fn run_detached(
    states: &StateStore,
    created: Created,
    mode: RunMode,
) -> Result<(), ContainerError> {
    let (mut status_read, status_write) = status_pipe()?;
    // SAFETY: carton is single-threaded; the child only runs `supervise`, which exits.
    let intermediate = unsafe { libc::fork() };
    if intermediate < 0 {
        return Err(ContainerError::io("fork the supervisor")(
            std::io::Error::last_os_error(),
        ));
    }
    if intermediate == 0 {
        drop(status_read);
        // SAFETY: setsid/fork/_exit in the freshly forked child. The second fork makes the
        // supervisor an orphan adopted by init: nothing in the user's session waits for it.
        unsafe {
            libc::setsid();
            match libc::fork() {
                0 => supervise(states, created, mode, status_write),
                _ => libc::_exit(0),
            }
        }
    }
    drop(status_write);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(intermediate), None);
    let mut report = Vec::new();
    status_read
        .read_to_end(&mut report)
        .map_err(ContainerError::io("read the supervisor's report"))?;
    match serde_json::from_slice::<StartReport>(&report) {
        Ok(StartReport::Running) => Ok(()),
        Ok(StartReport::Failed { message, exit_code }) => {
            Err(ContainerError::StartFailed { message, exit_code })
        }
        Err(_) => Err(ContainerError::StartFailed {
            message: "the container's supervisor died before the container ran".into(),
            exit_code: 125,
        }),
    }
}

/// What the supervisor tells `run -d` through the status pipe.
#[derive(Debug, Serialize, Deserialize)]
enum StartReport {
    Running,
    Failed { message: String, exit_code: i32 },
}

/// The supervisor's life; never returns.
fn supervise(states: &StateStore, created: Created, mode: RunMode, mut status: std::fs::File) -> ! {
    detach_stdio(&created.bundle);
    close_inherited_fds(std::os::fd::AsRawFd::as_raw_fd(&status));
    let stdio = if mode.terminal {
        Stdio::Terminal
    } else {
        Stdio::Piped {
            stdin: mode.interactive,
        }
    };
    // The log is opened before the start so that nothing the container prints is lost.
    let log = JsonLogWriter::create(&logs::log_path(&created.bundle));
    let started = log
        .map_err(|e| ContainerError::io("open the container log")(e))
        .and_then(|log| Ok((log, launch(states, &created, stdio)?)));
    let report = match &started {
        Ok(_) => StartReport::Running,
        Err(e) => StartReport::Failed {
            message: e.to_string(),
            exit_code: e.exit_code(),
        },
    };
    let _ = serde_json::to_writer(&mut status, &report);
    let _ = status.flush();
    drop(status);
    shed_start_up_memory();
    let code = match started {
        Ok((mut log, mut started)) => {
            let cgroup = started.cgroup.take();
            let waited = engine::foreground::wait(started, Attach { stdin: false }, &mut log);
            match finalize(states, &created.record, cgroup, &waited, VethRemoval::Wait) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("carton supervisor: {e}");
                    1
                }
            }
        }
        Err(_) => 1,
    };
    // SAFETY: leave without running the parent's exit handlers.
    unsafe { libc::_exit(code) }
}

/// A supervisor lives as long as its container, and there may be hundreds: once the
/// container runs, it gives back what only the start needed. The start touched much of
/// carton's code (argument parsing, image store, spec building, the engine); the waiting loop
/// needs a few pages of it. Dropping the process's mappings of the executable's code
/// (`r-xp`: never written, so MADV_DONTNEED only drops page-table entries; a page used again
/// faults back in from the page cache) and trimming the heap roughly halves its resident
/// memory. Writable and read-only data mappings are left alone: those may hold changes
/// (relocations) that the file does not.
fn shed_start_up_memory() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let exe = exe.to_string_lossy().into_owned();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if perms != "r-xp" || line.split_whitespace().nth(5) != Some(exe.as_str()) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: the range is a private, never-written mapping of our own executable: its
        // contents come back from the file on the next access.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
    // SAFETY: glibc's malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
}

/// The supervisor must not keep carton's stdio (a pipe a script reads to its end, a terminal
/// that closes): stdin and stdout become /dev/null, stderr a file in the container directory
/// for its own rare complaints.
fn detach_stdio(bundle: &std::path::Path) {
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null");
    let err = std::fs::File::options()
        .create(true)
        .append(true)
        .open(bundle.join("supervisor.log"));
    // SAFETY: dup2 onto our own stdio fds.
    unsafe {
        if let Ok(null) = &null {
            let fd = std::os::fd::AsRawFd::as_raw_fd(null);
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            if err.is_err() {
                libc::dup2(fd, 2);
            }
        }
        if let Ok(err) = &err {
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(err), 2);
        }
        libc::chdir(c"/".as_ptr());
    }
}

/// The supervisor lives as long as its container: it must not keep open whatever the shell or
/// script that ran `run -d` handed down (a pipe someone reads to its end, a lock, a socket).
/// Everything above stdio goes, but the status pipe.
fn close_inherited_fds(keep: RawFd) {
    // SAFETY: close_range on our own descriptor table; `keep` is excluded.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
    }
}

fn status_pipe() -> Result<(std::fs::File, std::fs::File), ContainerError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(ContainerError::io("create a pipe")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fresh fds owned from here on.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((r.into(), w.into()))
}

/// Starts the container through the engine; the record says "running", with this process as
/// its owner, before the user's process can print anything — so whoever sees its output and
/// then runs `ps` sees it running. On a bridge network the address and ports are reserved
/// before the clone, and the veth is configured while the init prepares its rootfs.
fn launch(states: &StateStore, created: &Created, stdio: Stdio) -> Result<Started, ContainerError> {
    let id = created.record.id.clone();
    let attachment = connect(states, created)?;
    let mut events = Launch {
        states,
        id: &id,
        attachment: attachment.as_ref(),
        owner: std::process::id() as i32,
        bundle: &created.bundle,
        launched_limits: super::update::current_resources(&created.spec)?,
    };
    match engine::start(
        &created.spec,
        &created.bundle,
        stdio,
        &StartOptions::default(),
        &mut events,
    ) {
        Ok(started) => Ok(started),
        Err(e) => {
            disconnect(states, &created.record, VethRemoval::Wait);
            if created.record.auto_remove {
                let _ = states.remove_dir(&id);
            } else {
                // Never started: docker leaves such a container as it was ("Created", or
                // "Exited" for a restart).
                let previous = created.record.clone();
                let _ = states.update(&id, |r| {
                    r.status = previous.status;
                    r.pid = None;
                    r.pid_start_time = None;
                    r.owner_pid = None;
                    r.owner_start_time = None;
                    r.started_at = previous.started_at;
                    r.finished_at = previous.finished_at;
                    r.exit_code = previous.exit_code;
                    r.attachment = None;
                });
            }
            Err(e.into())
        }
    }
}

/// The host side of a container's start: its network, and the record that says it runs.
struct Launch<'a> {
    states: &'a StateStore,
    id: &'a str,
    attachment: Option<&'a network::Attachment>,
    /// This process, which waits for the container.
    owner: i32,
    /// The container directory, whose config.json `update` rewrites.
    bundle: &'a std::path::Path,
    /// The limits the cgroup was made with (config.json as this start read it).
    launched_limits: Resources,
}

impl Launch<'_> {
    /// An `update` that came between this start's read of config.json and the record saying
    /// "running" changed config.json only (the container did not run yet, as it saw): the
    /// cgroup gets those limits now. Called under the global lock, which `update` holds from
    /// its look at the record to its write of config.json, so one of the two always applies
    /// the new limits.
    fn catch_up_with_update(&self) -> Result<(), ContainerError> {
        let spec = super::update::read_spec(&self.bundle.join("config.json"))?;
        let wanted = super::update::current_resources(&spec)?;
        if wanted != self.launched_limits {
            log::debug!("container {}: limits updated during its start", self.id);
            let layout = crate::cgroups::Layout::detect();
            crate::cgroups::open(&layout, &super::cgroup_path(self.id))?.apply(&wanted)?;
        }
        Ok(())
    }
}

impl StartEvents for Launch<'_> {
    fn host_setup(&mut self, pid: nix::unistd::Pid) -> Result<(), String> {
        let pid = pid.as_raw();
        if let Some(attachment) = self.attachment {
            network::configure_inside(attachment, pid).map_err(|e| e.to_string())?;
        }
        let (owner, attachment) = (self.owner, self.attachment.cloned());
        let _lock = self.states.global_lock().map_err(|e| e.to_string())?;
        // The record may be gone if `rm -f` raced us; the container still runs to its end.
        let _ = self.states.update_locked(self.id, |r| {
            r.status = Status::Running;
            r.pid = Some(pid);
            r.pid_start_time = process_start_time(pid);
            r.owner_pid = Some(owner);
            r.owner_start_time = process_start_time(owner);
            r.started_at = Some(Timestamp::now());
            r.finished_at = None;
            r.exit_code = None;
            r.oom_killed = false;
            r.attachment = attachment;
        });
        self.catch_up_with_update().map_err(|e| e.to_string())
    }

    fn console(&mut self, master: &std::os::fd::OwnedFd) -> Result<(), String> {
        engine::SizeConsole.console(master)
    }
}

/// Reserves the container's place on its bridge network, if it has one, and gives its
/// /etc/hosts the address.
fn connect(
    states: &StateStore,
    created: &Created,
) -> Result<Option<network::Attachment>, ContainerError> {
    let record = &created.record;
    let NetworkMode::Bridge(name) = NetworkMode::parse(&record.network)? else {
        return Ok(None);
    };
    let attachment = network::attach(
        states.root(),
        &name,
        &record.id,
        &record.name,
        &record.publish,
    )?;
    let hostname = created.spec.hostname().clone().unwrap_or_default();
    let written = etc_files::write_hosts_with_address(
        &created.bundle,
        attachment.address,
        &[&hostname, &record.name, record.short_id()],
        Durability::for_container(record.auto_remove),
    );
    if let Err(e) = written {
        let _ = network::detach(states.root(), &name, &record.id, VethRemoval::Wait);
        return Err(ContainerError::io("write /etc/hosts")(e));
    }
    Ok(Some(attachment))
}

/// Releases the container's network resources (nothing for none/host).
fn disconnect(states: &StateStore, record: &ContainerRecord, removal: VethRemoval) {
    if let Ok(NetworkMode::Bridge(name)) = NetworkMode::parse(&record.network) {
        if let Err(e) = network::detach(states.root(), &name, &record.id, removal) {
            log::warn!("container {}: {e}", record.short_id());
        }
    }
}

/// Records how the container ended: reads what its cgroup remembers (OOM kills), removes the
/// cgroup, releases its network (`veth` says whether to wait for the kernel to remove the
/// veth), and marks the record exited — or removes the container (`--rm`).
fn finalize(
    states: &StateStore,
    record: &ContainerRecord,
    cgroup: Option<Box<dyn CgroupManager>>,
    waited: &Result<ExitStatus, EngineError>,
    veth: VethRemoval,
) -> Result<(), ContainerError> {
    let code = match waited {
        Ok(status) => status.code,
        Err(_) => 255,
    };
    let oom_killed = cgroup
        .as_ref()
        .is_some_and(|c| c.oom_kills().is_ok_and(|n| n > 0));
    let cleanup = cgroup.map(|c| c.destroy()).transpose();
    disconnect(states, record, veth);
    if record.auto_remove {
        let _lock = states.global_lock()?;
        states.tell_waiters(&record.id, code);
        states.remove_dir(&record.id)?;
    } else {
        let _ = states.update(&record.id, |r| {
            r.status = Status::Exited;
            r.pid = None;
            r.pid_start_time = None;
            r.owner_pid = None;
            r.owner_start_time = None;
            r.exit_code = Some(code);
            r.oom_killed = oom_killed;
            r.finished_at = Some(Timestamp::now());
            r.attachment = None;
        });
    }
    if let Err(e) = cleanup {
        log::warn!("container {}: {e}", record.short_id());
    }
    Ok(())
}
