//! The sync channel between carton (parent) and the container's init (child): a SEQPACKET
//! socketpair, so every message arrives whole, and file descriptors can travel with
//! SCM_RIGHTS (the pty master goes from the child, which creates it inside the container's
//! /dev/pts, to the parent).
//!
//! Both ends are close-on-exec: when the child's `execve` succeeds its end closes, and the parent
//! reads end-of-file — that is how "the user's process is running" is observed without a race.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::error::InitFailure;

/// child → parent
#[derive(Debug)]
pub enum ToParent {
    /// The pty master of the container's console (`-t`).
    Console(OwnedFd),
    /// Set-up is done; the child waits for [`ToChild::Go`] before exec.
    Ready,
    /// A step failed; the child exits after sending this.
    Failed(InitFailure),
    /// The container's namespaces and mounts exist; the init waits before pivot_root for the
    /// create-time hooks (only sent when the spec has any).
    HooksPoint,
    /// Released, the init now waits on its exec FIFO for `start` (OCI create).
    Created,
}

/// parent → child
#[derive(Debug, PartialEq, Eq)]
pub enum ToChild {
    /// The child now sits in its cgroup (sent only when the parent had to move it there and the
    /// child waits to unshare its cgroup namespace).
    CgroupJoined,
    /// Host-side set-up (cgroups, network) is done: exec the user's process.
    Go,
    /// The prestart and createRuntime hooks ran.
    HooksDone,
}

const TAG_CONSOLE: u8 = 1;
const TAG_READY: u8 = 2;
const TAG_FAILED: u8 = 3;
const TAG_GO: u8 = 4;
const TAG_CGROUP_JOINED: u8 = 5;
const TAG_HOOKS_POINT: u8 = 6;
const TAG_CREATED: u8 = 7;
const TAG_HOOKS_DONE: u8 = 8;
const MAX_MESSAGE: usize = 64 * 1024;

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

/// Creates the connected pair (parent end, child end).
pub fn pair() -> io::Result<(Channel, Channel)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two fds into the array on success.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by us from here on.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send_to_parent(&self, message: &ToParent) -> io::Result<()> {
        match message {
            ToParent::Console(fd) => self.send(&[TAG_CONSOLE], Some(fd.as_raw_fd())),
            ToParent::Ready => self.send(&[TAG_READY], None),
            ToParent::HooksPoint => self.send(&[TAG_HOOKS_POINT], None),
            ToParent::Created => self.send(&[TAG_CREATED], None),
            ToParent::Failed(failure) => {
                let mut bytes = vec![TAG_FAILED];
                bytes.extend(serde_json::to_vec(failure).map_err(io::Error::other)?);
                bytes.truncate(MAX_MESSAGE);
                self.send(&bytes, None)
            }
        }
    }

    pub fn send_to_child(&self, message: &ToChild) -> io::Result<()> {
        match message {
            ToChild::Go => self.send(&[TAG_GO], None),
            ToChild::CgroupJoined => self.send(&[TAG_CGROUP_JOINED], None),
            ToChild::HooksDone => self.send(&[TAG_HOOKS_DONE], None),
        }
    }

    /// Next message from the child, or `None` at end-of-file (the child exec'd or died).
    pub fn recv_from_child(&self) -> io::Result<Option<ToParent>> {
        let Some((bytes, fd)) = self.recv()? else {
            return Ok(None);
        };
        let message = match bytes.first() {
            Some(&TAG_CONSOLE) => ToParent::Console(fd.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "console message without fd")
            })?),
            Some(&TAG_READY) => ToParent::Ready,
            Some(&TAG_HOOKS_POINT) => ToParent::HooksPoint,
            Some(&TAG_CREATED) => ToParent::Created,
            Some(&TAG_FAILED) => ToParent::Failed(
                serde_json::from_slice(&bytes[1..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            ),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unknown message from container init",
                ));
            }
        };
        Ok(Some(message))
    }

    /// Next message from the parent, or `None` if the parent went away.
    pub fn recv_from_parent(&self) -> io::Result<Option<ToChild>> {
        match self.recv()? {
            None => Ok(None),
            Some((bytes, _)) if bytes == [TAG_GO] => Ok(Some(ToChild::Go)),
            Some((bytes, _)) if bytes == [TAG_CGROUP_JOINED] => Ok(Some(ToChild::CgroupJoined)),
            Some((bytes, _)) if bytes == [TAG_HOOKS_DONE] => Ok(Some(ToChild::HooksDone)),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unknown message from carton",
            )),
        }
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn send(&self, bytes: &[u8], fd: Option<RawFd>) -> io::Result<()> {
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        // Room for one fd, aligned as cmsghdr requires.
        let mut control = [0u64; 4];
        // SAFETY: an all-zero msghdr is a valid "no address, no control" header.
        let mut header: libc::msghdr = unsafe { mem::zeroed() };
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        if let Some(fd) = fd {
            // SAFETY: control is large enough for CMSG_SPACE(sizeof(int)) and aligned to u64.
            unsafe {
                let space = libc::CMSG_SPACE(mem::size_of::<RawFd>() as u32) as usize;
                header.msg_control = control.as_mut_ptr().cast();
                header.msg_controllen = space;
                let cmsg = libc::CMSG_FIRSTHDR(&header);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<RawFd>() as u32) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
            }
        }
        loop {
            // SAFETY: header points at live buffers for the duration of the call.
            let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &header, libc::MSG_NOSIGNAL) };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    fn recv(&self) -> io::Result<Option<(Vec<u8>, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 4];
        // SAFETY: see send().
        let mut header: libc::msghdr = unsafe { mem::zeroed() };
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = mem::size_of_val(&control);
        let n = loop {
            // SAFETY: header points at live buffers; MSG_CMSG_CLOEXEC keeps received fds
            // from leaking into anything we exec.
            let n =
                unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut header, libc::MSG_CMSG_CLOEXEC) };
            if n >= 0 {
                break n as usize;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        };
        let mut received = None;
        // SAFETY: the kernel filled the control buffer; walk it with the CMSG macros.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&header);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                    received = Some(OwnedFd::from_raw_fd(fd));
                }
                cmsg = libc::CMSG_NXTHDR(&header, cmsg);
            }
        }
        if n == 0 && received.is_none() {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((buf, received)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn messages_and_fds_cross_the_channel() {
        let (parent, child) = pair().unwrap();
        child.send_to_parent(&ToParent::Ready).unwrap();
        assert!(matches!(
            parent.recv_from_child().unwrap(),
            Some(ToParent::Ready)
        ));

        let failure = InitFailure {
            step: "exec".into(),
            message: "nope".into(),
            errno: Some(2),
            exit_code: 127,
        };
        child
            .send_to_parent(&ToParent::Failed(failure.clone()))
            .unwrap();
        match parent.recv_from_child().unwrap() {
            Some(ToParent::Failed(got)) => assert_eq!(got, failure),
            other => panic!("unexpected {other:?}"),
        }

        let (mut r, mut w) = std::io::pipe().unwrap();
        child
            .send_to_parent(&ToParent::Console(OwnedFd::from(w.try_clone().unwrap())))
            .unwrap();
        let Some(ToParent::Console(fd)) = parent.recv_from_child().unwrap() else {
            panic!("expected a console fd");
        };
        let mut passed = std::fs::File::from(fd);
        passed.write_all(b"hi").unwrap();
        drop(passed);
        w.flush().unwrap();
        drop(w);
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hi");

        parent.send_to_child(&ToChild::Go).unwrap();
        assert_eq!(child.recv_from_parent().unwrap(), Some(ToChild::Go));
        drop(parent);
        assert_eq!(child.recv_from_parent().unwrap(), None);
    }
}
