//! A network namespace that plays "the host" for one scenario (DESIGN.md §7): every carton
//! command of the fixture runs in it, so the bridges, veths, iptables rules and sysctls carton
//! creates live and die with the scenario, scenarios can run in parallel, and the machine's
//! real network is never touched. Nothing is mounted for it (an open fd keeps it alive), so
//! the host's mount table stays unchanged.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct TestNetns {
    fd: Arc<OwnedFd>,
}

impl TestNetns {
    /// A fresh namespace with `lo` up.
    pub fn new() -> io::Result<TestNetns> {
        // unshare affects the calling thread only: do it in a throwaway thread and keep an fd.
        let fd = std::thread::spawn(|| -> io::Result<OwnedFd> {
            // SAFETY: unshare of this thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = std::fs::File::open("/proc/thread-self/ns/net")?;
            loopback_up()?;
            Ok(OwnedFd::from(fd))
        })
        .join()
        .map_err(|_| io::Error::other("netns thread panicked"))??;
        Ok(TestNetns { fd: Arc::new(fd) })
    }

    /// Makes `cmd` start inside the namespace.
    pub fn apply(&self, cmd: &mut Command) {
        let fd = self.fd.clone();
        // SAFETY: setns is async-signal-safe; it runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// The namespace's descriptor, for a `setns` of a process forked by hand (see
    /// [`crate::oci::Subreaper`]).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Runs `f` on a thread inside the namespace (sockets opened there belong to it).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let fd = self.fd.clone();
        std::thread::spawn(move || {
            // SAFETY: setns of this thread only.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                panic!(
                    "setns into the test namespace: {}",
                    io::Error::last_os_error()
                );
            }
            f()
        })
        .join()
        .expect("thread inside the test namespace panicked")
    }

    /// `program args…` inside the namespace; returns (success, stdout + stderr).
    pub fn command(&self, program: &str, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(program);
        cmd.args(args);
        self.apply(&mut cmd);
        match cmd.output() {
            Ok(out) => (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Err(e) => (false, format!("cannot run {program}: {e}")),
        }
    }

    /// The `/proc/<pid>/ns/net` link text of the namespace, to compare with a container's.
    pub fn id(&self) -> String {
        std::fs::read_link(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// Interface names in the namespace.
    pub fn interfaces(&self) -> Vec<String> {
        self.run(|| {
            let mut names: Vec<String> = std::fs::read_to_string("/proc/thread-self/net/dev")
                .unwrap_or_default()
                .lines()
                .skip(2)
                .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
                .collect();
            names.sort();
            names
        })
    }
}

fn loopback_up() -> io::Result<()> {
    // SAFETY: a datagram socket used for one ioctl, closed on drop.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain data; interface ioctls with it.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
