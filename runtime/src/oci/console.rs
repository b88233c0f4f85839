//! `--console-socket`: the caller (conmon, containerd's shim) listens on a unix socket and
//! receives the container's pty master there, as an SCM_RIGHTS message.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Gives the terminal of `master` the size config.json or a process.json asks for
/// (`consoleSize`, height x width), before the process starts.
pub fn set_size(master: &OwnedFd, (height, width): (u64, u64)) {
    let size = libc::winsize {
        ws_row: height.min(u64::from(u16::MAX)) as u16,
        ws_col: width.min(u64::from(u16::MAX)) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that lives for the call.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
}

/// Sends `master` over a fresh connection to `socket`.
pub fn send(socket: &Path, master: &OwnedFd) -> io::Result<()> {
    let stream = UnixStream::connect(socket)?;
    let payload = b"carton-console";
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: a zeroed msghdr is valid; the control buffer is large and aligned enough for one
    // SCM_RIGHTS fd.
    unsafe {
        let mut header: libc::msghdr = std::mem::zeroed();
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&header);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), master.as_raw_fd());
        if libc::sendmsg(stream.as_raw_fd(), &header, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
