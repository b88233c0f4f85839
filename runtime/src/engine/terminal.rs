//! The host side of `-t`: raw mode on carton's own terminal (restored on every exit path that
//! runs destructors) and window-size propagation to the container's pty.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Puts a terminal into raw mode for as long as it lives.
#[derive(Debug)]
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Enters raw mode on `fd` if it is a terminal; `None` otherwise.
    pub fn enter(fd: RawFd) -> io::Result<Option<RawMode>> {
        // SAFETY: isatty/tcgetattr/tcsetattr on a caller-provided fd with a valid termios.
        unsafe {
            if libc::isatty(fd) != 1 {
                return Ok(None);
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Some(RawMode { fd, saved }))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // TCSADRAIN: let the container's last output reach the screen in raw mode first.
        // SAFETY: restores the attributes read in enter().
        unsafe { libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.saved) };
    }
}

/// The window size of the first of carton's stdio fds that is a terminal.
pub fn host_window_size() -> Option<libc::winsize> {
    for fd in [0, 1, 2] {
        // SAFETY: TIOCGWINSZ writes a winsize.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0 {
            return Some(size);
        }
    }
    None
}

/// Gives the container's pty carton's window size (the kernel then signals SIGWINCH inside).
pub fn copy_window_size(console: BorrowedFd<'_>) {
    if let Some(size) = host_window_size() {
        // SAFETY: TIOCSWINSZ reads a winsize.
        unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    }
}
