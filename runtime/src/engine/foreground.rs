//! Waiting for a started process: relay signals, move its output (pty or pipes) into a sink,
//! feed carton's stdin to its pty, collect the exit status. One poll loop over a signalfd and
//! the stdio fds; no threads. Used by foreground `run`, by `exec`, and by the detached
//! supervisor (whose sink is the container log).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::error::EngineError;
use super::process::Started;
use super::signals;
use super::terminal::{self, RawMode};

/// How a process ended, in shell terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, or 128 + signal number.
    pub code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
}

impl ExitStatus {
    fn from_wait(status: WaitStatus) -> Option<ExitStatus> {
        match status {
            WaitStatus::Exited(_, code) => Some(ExitStatus { code, signal: None }),
            WaitStatus::Signaled(_, sig, _) => Some(ExitStatus {
                code: 128 + sig as i32,
                signal: Some(sig as i32),
            }),
            _ => None,
        }
    }
}

/// Which stream a piece of output came from (a pty has only stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Where the process's output goes.
pub trait OutputSink {
    fn write(&mut self, stream: Stream, bytes: &[u8]);
    /// The process ended and its output is drained.
    fn finish(&mut self) {}
}

/// Output to carton's own stdout and stderr.
#[derive(Debug, Default)]
pub struct ToCartonStdio;

impl OutputSink for ToCartonStdio {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let fd = match stream {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        };
        let _ = write_all(fd, bytes);
    }
}

/// Options of the session.
#[derive(Debug, Clone, Copy)]
pub struct Attach {
    /// Forward carton's stdin to the console (`-i` together with `-t`), with carton's
    /// terminal in raw mode.
    pub stdin: bool,
}

/// Runs until the process exits; returns its status. Restores carton's signal mask and
/// terminal on the way out.
pub fn wait(
    started: Started,
    attach: Attach,
    sink: &mut dyn OutputSink,
) -> Result<ExitStatus, EngineError> {
    let result = run_loop(&started, attach, sink);
    signals::restore_mask(&started.saved_mask);
    sink.finish();
    result
}

/// An output fd the loop reads from.
struct Source<'a> {
    fd: &'a OwnedFd,
    stream: Stream,
    open: bool,
}

fn run_loop(
    started: &Started,
    attach: Attach,
    sink: &mut dyn OutputSink,
) -> Result<ExitStatus, EngineError> {
    let signal_fd = SignalFd::with_flags(
        &signals::watched(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(|e| os("create signalfd", e))?;
    let pid = started.pid;
    let console = started.console.as_ref();
    let _raw = match console {
        Some(_) if attach.stdin => RawMode::enter(0).map_err(EngineError::os("raw mode"))?,
        _ => None,
    };
    if let Some(console) = console {
        terminal::copy_window_size(console.as_fd());
    }
    let mut sources: Vec<Source<'_>> = console
        .map(|fd| (fd, Stream::Stdout))
        .into_iter()
        .chain(started.stdio.stdout.as_ref().map(|fd| (fd, Stream::Stdout)))
        .chain(started.stdio.stderr.as_ref().map(|fd| (fd, Stream::Stderr)))
        .map(|(fd, stream)| Source {
            fd,
            stream,
            open: true,
        })
        .collect();
    for source in &sources {
        set_nonblocking(source.fd.as_raw_fd())?;
    }
    let mut stdin_open = console.is_some() && attach.stdin;

    // A signal that arrived before the signalfd existed is still pending: it is read below.
    loop {
        let mut fds = vec![PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
        let open_sources: Vec<usize> = (0..sources.len()).filter(|&i| sources[i].open).collect();
        for &i in &open_sources {
            fds.push(PollFd::new(sources[i].fd.as_fd(), PollFlags::POLLIN));
        }
        if stdin_open {
            // SAFETY: fd 0 stays open for the whole loop.
            let stdin = unsafe { BorrowedFd::borrow_raw(0) };
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(os("poll", e)),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);

        for (slot, &i) in open_sources.iter().enumerate() {
            if ready[1 + slot] && !drain(&mut sources[i], sink) {
                sources[i].open = false;
            }
        }
        if stdin_open && ready.last() == Some(&true) {
            if let Some(console) = console {
                match copy(0, console.as_raw_fd()) {
                    Ok(0) | Err(_) => {
                        // End of input: the tty equivalent of closing stdin is ^D.
                        stdin_open = false;
                        let _ = write_all(console.as_raw_fd(), &[4]);
                    }
                    Ok(_) => {}
                }
            }
        }
        if ready[0] {
            while let Some(info) = signal_fd
                .read_signal()
                .map_err(|e| os("read signalfd", e))?
            {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                match sig {
                    Signal::SIGCHLD => {}
                    Signal::SIGWINCH => {
                        if let Some(console) = console {
                            terminal::copy_window_size(console.as_fd());
                        }
                    }
                    other => {
                        let _ = kill(pid, other);
                    }
                }
            }
            if let Some(status) = reap(pid)? {
                // The last words may still sit in the pty or pipe buffers.
                for source in sources.iter_mut().filter(|s| s.open) {
                    while drain(source, sink) && has_data(source.fd.as_raw_fd()) {}
                }
                return Ok(status);
            }
        }
    }
}

/// Reads what is available from `source` into the sink; false once it reached end-of-file or
/// failed (a pty master reports EIO when the last slave fd closed).
fn drain(source: &mut Source<'_>, sink: &mut dyn OutputSink) -> bool {
    let mut buf = [0u8; 32 * 1024];
    loop {
        // SAFETY: read into a local buffer.
        let n = unsafe { libc::read(source.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            sink.write(source.stream, &buf[..n as usize]);
            if (n as usize) < buf.len() {
                return true;
            }
            continue;
        }
        if n == 0 {
            return false;
        }
        let err = io::Error::last_os_error();
        return match err.kind() {
            io::ErrorKind::WouldBlock => true,
            io::ErrorKind::Interrupted => continue,
            _ => false,
        };
    }
}

fn has_data(fd: RawFd) -> bool {
    let mut fds = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: poll on a local array, no wait.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) > 0 && fds[0].revents & libc::POLLIN != 0 }
}

fn reap(pid: Pid) -> Result<Option<ExitStatus>, EngineError> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(status) => {
                if let Some(exit) = ExitStatus::from_wait(status) {
                    return Ok(Some(exit));
                }
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(os("wait for the container", e)),
        }
    }
}

/// Copies what is available from `from` to `to`; Ok(0) at end-of-file.
fn copy(from: RawFd, to: RawFd) -> io::Result<usize> {
    let mut buf = [0u8; 16 * 1024];
    // SAFETY: read into a local buffer.
    let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    write_all(to, &buf[..n])?;
    Ok(n)
}

pub(crate) fn write_all(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: write from a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    let mut fds = [libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    }];
                    // SAFETY: poll on a local array.
                    unsafe { libc::poll(fds.as_mut_ptr(), 1, -1) };
                    continue;
                }
                _ => return Err(err),
            }
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

fn set_nonblocking(fd: RawFd) -> Result<(), EngineError> {
    // SAFETY: fcntl flag manipulation on a valid fd.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(EngineError::last_os("make output non-blocking"));
        }
    }
    Ok(())
}

fn os(context: &'static str, errno: Errno) -> EngineError {
    EngineError::Os {
        context,
        source: errno.into(),
    }
}
