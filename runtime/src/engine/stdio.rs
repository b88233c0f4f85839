//! How a container's (or an exec'd process's) stdio is wired, on both sides of the clone.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What the caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// The process writes straight to carton's stdout/stderr; reads carton's stdin only when
    /// `stdin` is true (`-i`), /dev/null otherwise. (Foreground, no tty.)
    Inherit { stdin: bool },
    /// A pty inside the container (`-t`); carton gets the master.
    Terminal,
    /// Pipes whose read ends carton gets (a detached container's supervisor logs them). With
    /// `stdin`, the process's stdin is a pipe that carton keeps open without writing, so a
    /// program waiting for input waits rather than seeing end-of-file (`run -di`).
    Piped { stdin: bool },
    /// Nothing: /dev/null in, out and err (`exec -d`).
    Null,
}

/// The child's ends, set up on fds 0–2 by the init.
#[derive(Debug)]
pub enum ChildStdio {
    /// Keep carton's fds; replace fd 0 when a new stdin is given.
    Inherit { stdin: Option<OwnedFd> },
    /// The console pty the init creates inside the container.
    Terminal,
    /// Use these three.
    Fds {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
}

/// The parent's ends.
#[derive(Debug, Default)]
pub struct HostStdio {
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Write end of the stdin pipe, held open and never written.
    pub stdin_keepalive: Option<OwnedFd>,
}

/// Creates the fds for `stdio`.
pub fn prepare(stdio: Stdio) -> io::Result<(ChildStdio, HostStdio)> {
    let null = || File::open("/dev/null").map(OwnedFd::from);
    let null_rw = || {
        File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map(OwnedFd::from)
    };
    Ok(match stdio {
        Stdio::Inherit { stdin: true } => {
            (ChildStdio::Inherit { stdin: None }, HostStdio::default())
        }
        Stdio::Inherit { stdin: false } => (
            ChildStdio::Inherit {
                stdin: Some(null()?),
            },
            HostStdio::default(),
        ),
        Stdio::Terminal => (ChildStdio::Terminal, HostStdio::default()),
        Stdio::Piped { stdin } => {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let (child_in, keepalive) = if stdin {
                let (r, w) = pipe()?;
                (r, Some(w))
            } else {
                (null()?, None)
            };
            (
                ChildStdio::Fds {
                    stdin: child_in,
                    stdout: out_w,
                    stderr: err_w,
                },
                HostStdio {
                    stdout: Some(out_r),
                    stderr: Some(err_r),
                    stdin_keepalive: keepalive,
                },
            )
        }
        Stdio::Null => (
            ChildStdio::Fds {
                stdin: null()?,
                stdout: null_rw()?,
                stderr: null_rw()?,
            },
            HostStdio::default(),
        ),
    })
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds owned from here on.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// In the child: puts the chosen fds on 0, 1, 2 (dup2 clears close-on-exec on the copies).
pub fn attach_child(stdio: &ChildStdio) -> io::Result<()> {
    match stdio {
        ChildStdio::Inherit { stdin } => {
            if let Some(fd) = stdin {
                dup_onto(fd.as_raw_fd(), 0)?;
            }
        }
        ChildStdio::Terminal => {}
        ChildStdio::Fds {
            stdin,
            stdout,
            stderr,
        } => {
            dup_onto(stdin.as_raw_fd(), 0)?;
            dup_onto(stdout.as_raw_fd(), 1)?;
            dup_onto(stderr.as_raw_fd(), 2)?;
        }
    }
    Ok(())
}

pub fn dup_onto(fd: RawFd, target: RawFd) -> io::Result<()> {
    if fd == target {
        // dup2 would be a no-op and leave close-on-exec set.
        // SAFETY: fcntl on our own fd.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(());
    }
    // SAFETY: dup2 between valid descriptors; the target is ours to replace.
    if unsafe { libc::dup2(fd, target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
