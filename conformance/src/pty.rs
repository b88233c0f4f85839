//! Pseudo-terminals for the `-t` scenarios: the test plays the user's terminal emulator.
//!
//! [`Pty::open`] allocates a pair with a window size; [`Pty::spawn`] starts a command with the
//! slave as stdin, stdout, stderr and controlling terminal (new session + TIOCSCTTY), as a shell
//! would. The test then reads and writes the master with deadlines ([`TtyRun`]), resizes it (the
//! kernel sends SIGWINCH to the foreground process group, i.e. carton) and compares the slave's
//! termios before and after. The test keeps its own slave descriptor, so reading the master never
//! ends in EIO: the end of the session is carton's exit.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::DEADLINE;

pub struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

fn cloexec(fd: &OwnedFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

fn set_winsize(fd: &impl AsRawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
}

/// termios of a terminal descriptor.
pub fn termios_of(fd: &impl AsRawFd) -> libc::termios {
    // SAFETY: zeroed termios is a valid out-parameter for tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a terminal we own; t is a valid pointer.
    let rc = unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) };
    assert_eq!(rc, 0, "tcgetattr: {}", std::io::Error::last_os_error());
    t
}

/// Fields of `before` that differ in `after`, e.g. `c_lflag 0x8a3b -> 0x0`.
pub fn termios_diff(before: &libc::termios, after: &libc::termios) -> Vec<String> {
    let mut out = Vec::new();
    let flags = [
        ("c_iflag", before.c_iflag, after.c_iflag),
        ("c_oflag", before.c_oflag, after.c_oflag),
        ("c_cflag", before.c_cflag, after.c_cflag),
        ("c_lflag", before.c_lflag, after.c_lflag),
    ];
    for (name, b, a) in flags {
        if b != a {
            out.push(format!("{name} {b:#x} -> {a:#x}"));
        }
    }
    if before.c_line != after.c_line {
        out.push(format!("c_line {} -> {}", before.c_line, after.c_line));
    }
    for (i, (b, a)) in before.c_cc.iter().zip(after.c_cc.iter()).enumerate() {
        if b != a {
            out.push(format!("c_cc[{i}] {b:#x} -> {a:#x}"));
        }
    }
    out
}

impl Pty {
    /// A new pty pair whose window is `rows` x `cols`.
    pub fn open(rows: u16, cols: u16) -> Pty {
        let ws = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pair = nix::pty::openpty(&ws, None).expect("openpty");
        cloexec(&pair.master);
        cloexec(&pair.slave);
        Pty {
            master: pair.master,
            slave: pair.slave,
        }
    }

    /// termios of the slave (the "user's terminal").
    pub fn termios(&self) -> libc::termios {
        termios_of(&self.slave)
    }

    pub fn set_termios(&self, t: &libc::termios) {
        // SAFETY: valid fd and pointer.
        let rc = unsafe { libc::tcsetattr(self.slave.as_raw_fd(), libc::TCSANOW, t) };
        assert_eq!(rc, 0, "tcsetattr: {}", std::io::Error::last_os_error());
    }

    /// Starts `cmd` in a new session with the slave as its controlling terminal and stdio.
    pub fn spawn(self, mut cmd: Command) -> TtyRun {
        let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup pty slave"));
        cmd.stdin(io(&self.slave))
            .stdout(io(&self.slave))
            .stderr(io(&self.slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let desc = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {desc} on a pty: {e}"));
        // SAFETY: F_GETFL/F_SETFL on our master descriptor.
        unsafe {
            let fl = libc::fcntl(self.master.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(
                self.master.as_raw_fd(),
                libc::F_SETFL,
                fl | libc::O_NONBLOCK,
            );
        }
        TtyRun {
            child,
            master: File::from(self.master),
            slave: self.slave,
            out: Vec::new(),
            desc,
            status: None,
        }
    }
}

/// A command running on a pty. Dropping it kills the command if it still runs.
pub struct TtyRun {
    child: Child,
    master: File,
    slave: OwnedFd,
    out: Vec<u8>,
    desc: String,
    status: Option<ExitStatus>,
}

impl TtyRun {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything read from the terminal so far, with `\r` removed.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.out).replace('\r', "")
    }

    /// termios of the terminal (slave side) now.
    pub fn termios(&self) -> libc::termios {
        termios_of(&self.slave)
    }

    /// Types `bytes` on the terminal.
    pub fn write(&mut self, bytes: &[u8]) {
        let deadline = Instant::now() + DEADLINE;
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.master.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "pty write blocked for {DEADLINE:?}"
                    );
                    self.pump(Duration::from_millis(10));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("write to pty master: {e}"),
            }
        }
    }

    /// Resizes the terminal; the kernel signals SIGWINCH to its foreground process group.
    pub fn resize(&self, rows: u16, cols: u16) {
        set_winsize(&self.master, rows, cols);
    }

    /// Reads what is available, waiting at most `wait` for the first byte. True if read any.
    fn pump(&mut self, wait: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc <= 0 {
            return false;
        }
        let mut any = false;
        let mut buf = [0u8; 4096];
        loop {
            match self.master.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    any = true;
                    self.out.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // WouldBlock: drained; EIO: no slave left open.
                Err(_) => break,
            }
        }
        any
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits until the terminal shows `needle` (after `\r` removal); returns the output so far.
    #[track_caller]
    pub fn read_until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.pump(Duration::from_millis(20));
            let out = self.output();
            if out.contains(needle) {
                return out;
            }
            if let Some(status) = self.try_wait() {
                while self.pump(Duration::from_millis(100)) {}
                let out = self.output();
                if out.contains(needle) {
                    return out;
                }
                panic!(
                    "`{}` exited ({status}) without showing {needle:?} on the terminal\noutput: {out:?}",
                    self.desc
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "`{}` did not show {needle:?} within {DEADLINE:?}\noutput so far: {out:?}",
                    self.desc
                );
            }
        }
    }

    /// Waits for exit (killing and panicking at the deadline); returns status and all output.
    /// The terminal stays open: [`TtyRun::termios`] still works afterwards.
    #[track_caller]
    pub fn wait(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.pump(Duration::from_millis(20));
            if let Some(status) = self.try_wait() {
                // Whatever carton wrote before exiting is in the master's buffer already.
                while self.pump(Duration::from_millis(100)) {}
                return (status, self.output());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "`{}` did not exit within {DEADLINE:?}; killed it\noutput so far: {:?}",
                    self.desc,
                    self.output()
                );
            }
        }
    }
}

impl Drop for TtyRun {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_sees_the_pty_and_its_size() {
        if !std::path::Path::new("/dev/ptmx").exists() {
            eprintln!("SKIP: no /dev/ptmx");
            return;
        }
        let pty = Pty::open(33, 77);
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "test -t 0 && echo tty-yes; stty size; read x; echo got-$x",
        ]);
        let mut run = pty.spawn(cmd);
        run.read_until("33 77");
        run.write(b"abc\n");
        run.read_until("got-abc");
        let (status, out) = run.wait();
        assert!(status.success(), "{out}");
        assert!(out.contains("tty-yes"), "{out}");
    }

    #[test]
    fn termios_diff_reports_changes() {
        let pty = Pty::open(24, 80);
        let before = pty.termios();
        let mut raw = before;
        // SAFETY: cfmakeraw on a valid termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        pty.set_termios(&raw);
        let d = termios_diff(&before, &pty.termios());
        assert!(d.iter().any(|l| l.starts_with("c_lflag")), "{d:?}");
        pty.set_termios(&before);
        assert!(termios_diff(&before, &pty.termios()).is_empty());
    }
}
