//! Waiting for a foreground container: relay signals, proxy the console, collect the exit
//! status. One poll loop over a signalfd and the stdio fds; no threads.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

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

/// How a container ended, in shell terms.
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

/// Options of the foreground session.
#[derive(Debug, Clone, Copy)]
pub struct Attach {
    /// Forward carton's stdin to the console (`-i` together with `-t`).
    pub stdin: bool,
}

/// Runs until the container's init exits; returns its status. Restores carton's signal mask
/// and terminal on the way out.
pub fn wait(started: Started, attach: Attach) -> Result<ExitStatus, EngineError> {
    let result = run_loop(&started, attach);
    signals::restore_mask(&started.saved_mask);
    result
}

fn run_loop(started: &Started, attach: Attach) -> Result<ExitStatus, EngineError> {
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
        set_nonblocking(console.as_raw_fd())?;
    }
    let mut stdin_open = console.is_some() && attach.stdin;

    // A signal that arrived before the signalfd existed is still pending: it is read below.
    loop {
        let mut fds = vec![PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
        if let Some(console) = console {
            fds.push(PollFd::new(console.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                // SAFETY: fd 0 stays open for the whole loop.
                let stdin = unsafe { BorrowedFd::borrow_raw(0) };
                fds.push(PollFd::new(stdin, PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(os("poll", e)),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (signal_ready, console_ready, stdin_ready) = (ready(0), ready(1), ready(2));
        drop(fds);

        if console_ready {
            if let Some(console) = console {
                // EIO: every slave fd closed; the exit shows up as SIGCHLD.
                let _ = pump(console.as_raw_fd(), 1);
            }
        }
        if stdin_ready {
            if let Some(console) = console {
                match pump(0, console.as_raw_fd()) {
                    Ok(0) | Err(_) => {
                        // End of input: the tty equivalent of closing stdin is ^D.
                        stdin_open = false;
                        let _ = write_all(console.as_raw_fd(), &[4]);
                    }
                    Ok(_) => {}
                }
            }
        }
        if signal_ready {
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
                if let Some(console) = console {
                    // The container's last words may still sit in the pty buffer.
                    while matches!(pump(console.as_raw_fd(), 1), Ok(n) if n > 0) {}
                }
                return Ok(status);
            }
        }
    }
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
fn pump(from: RawFd, to: RawFd) -> io::Result<usize> {
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

fn write_all(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
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
            return Err(EngineError::last_os("make console non-blocking"));
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
