//! Peers for network scenarios, all on this machine (DESIGN.md §7): a "remote" test host in a
//! network namespace of its own, joined to the fixture's namespace (which plays the host) by a
//! veth pair; a way into a container's network namespace from the test process; and small
//! TCP/UDP/HTTP clients that run inside any of these namespaces.
//!
//! Addresses come from the documentation range 198.51.100.0/24 (RFC 5737). The remote host gets
//! an address on that link and *no other route*: it cannot reach a container's subnet, so
//! whatever a container sends it only gets an answer when the host translates it (NAT). No
//! packet ever leaves the machine: the fixture's namespace has no link but `lo`, the bridges
//! carton creates and this veth.
//!
//! Everything is torn down on drop, on failure paths too: the veth pair is deleted (one end
//! takes the other with it) and the remote namespace disappears with its last file descriptor.
//! No helper process is left: the peer end is moved by the path of a namespace file of a thread
//! that sits inside the remote namespace while `ip` runs.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::DEADLINE;
use crate::netns::TestNetns;

/// The link between the fixture's host and the remote host.
pub const REMOTE_PREFIX: u8 = 24;
/// The fixture host's address on that link (what the remote sees after NAT).
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The remote host's address.
pub const REMOTE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// A second network namespace joined to the fixture's by a veth pair: `HOST_ADDR/24` on the
/// fixture's end, `REMOTE_ADDR/24` on the remote end, and no route on the remote host beyond
/// that link.
pub struct RemoteHost {
    remote: TestNetns,
    host: TestNetns,
    host_if: String,
}

impl RemoteHost {
    /// Joins a fresh remote host to the fixture's namespace; panics with the reason on failure
    /// (whatever was created so far is removed first).
    #[track_caller]
    pub fn connect(ct: &crate::Carton) -> RemoteHost {
        RemoteHost::try_connect(ct.netns()).unwrap_or_else(|e| panic!("remote test host: {e}"))
    }

    /// [`RemoteHost::connect`] for any namespace playing the host.
    pub fn try_connect(host: &TestNetns) -> Result<RemoteHost, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let host_if = format!("rhost{n}");
        let peer_if = format!("rpeer{n}");
        let remote = TestNetns::new().map_err(|e| format!("create its namespace: {e}"))?;
        ip(
            host,
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
            ],
        )?;
        // From here on, Drop deletes the pair.
        let me = RemoteHost {
            remote,
            host: host.clone(),
            host_if,
        };
        let moved = {
            let host = host.clone();
            let peer_if = peer_if.clone();
            me.remote.run(move || {
                // This thread is inside the remote namespace while `ip` (in the host's) runs.
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() };
                let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
                ip(&host, &["link", "set", &peer_if, "netns", &path])
            })
        };
        moved?;
        let host_cidr = format!("{HOST_ADDR}/{REMOTE_PREFIX}");
        let remote_cidr = format!("{REMOTE_ADDR}/{REMOTE_PREFIX}");
        ip(host, &["addr", "add", &host_cidr, "dev", &me.host_if])?;
        ip(host, &["link", "set", &me.host_if, "up"])?;
        ip(&me.remote, &["addr", "add", &remote_cidr, "dev", &peer_if])?;
        ip(&me.remote, &["link", "set", &peer_if, "up"])?;
        Ok(me)
    }

    /// The remote host's namespace (to open sockets there or run commands).
    pub fn netns(&self) -> &TestNetns {
        &self.remote
    }

    /// The remote host's address.
    pub fn addr(&self) -> Ipv4Addr {
        REMOTE_ADDR
    }

    /// The fixture host's address on the link to the remote host.
    pub fn host_addr(&self) -> Ipv4Addr {
        HOST_ADDR
    }

    /// The name of the veth end in the fixture's namespace.
    pub fn host_interface(&self) -> &str {
        &self.host_if
    }

    /// A TCP listener on the remote host's address (port 0: the kernel picks one).
    #[track_caller]
    pub fn listen_tcp(&self, port: u16) -> TcpListener {
        self.remote
            .run(move || TcpListener::bind(SocketAddrV4::new(REMOTE_ADDR, port)))
            .unwrap_or_else(|e| panic!("listen on {REMOTE_ADDR}:{port} in the remote host: {e}"))
    }
}

impl Drop for RemoteHost {
    fn drop(&mut self) {
        if let Err(e) = ip(&self.host, &["link", "del", &self.host_if]) {
            eprintln!("carton-conf: remove the remote host's link: {e}");
        }
    }
}

/// `ip ARGS…` inside `ns`; the error carries the command and its output.
pub fn ip(ns: &TestNetns, args: &[&str]) -> Result<String, String> {
    match ns.command("ip", args) {
        (true, out) => Ok(out),
        (false, out) => Err(format!("`ip {}` failed: {}", args.join(" "), out.trim())),
    }
}

/// Runs `f` on a thread inside the network namespace of process `pid` (a container's init):
/// sockets opened there belong to the container's network stack.
#[track_caller]
pub fn in_netns_of<T: Send + 'static>(pid: i32, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .unwrap_or_else(|e| panic!("open the network namespace of pid {pid}: {e}"));
    std::thread::spawn(move || {
        // SAFETY: setns of this thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            panic!(
                "setns into the network namespace of pid {pid}: {}",
                io::Error::last_os_error()
            );
        }
        f()
    })
    .join()
    .expect("thread inside the container's network namespace panicked")
}

/// Opens a TCP connection from inside `ns` (the socket stays in that namespace).
pub fn tcp_connect(ns: &TestNetns, to: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    ns.run(move || {
        let stream = TcpStream::connect_timeout(&SocketAddr::V4(to), timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(stream)
    })
}

/// `GET /` over HTTP/1.0 from inside `ns`; the response (status line, headers and body) or
/// why there is none.
pub fn http_get(ns: &TestNetns, to: SocketAddrV4, timeout: Duration) -> Result<String, String> {
    let mut stream =
        tcp_connect(ns, to, timeout).map_err(|e| format!("connect to {to} failed: {e}"))?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: conformance\r\n\r\n")
        .map_err(|e| format!("send a request to {to}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read the response of {to}: {e}"))?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// Waits (up to `timeout`) for a connection on a listener; returns it with the peer address.
pub fn accept_within(
    listener: &TcpListener,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("set the listener non-blocking: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(|e| format!("set the connection blocking: {e}"))?;
                stream
                    .set_read_timeout(Some(DEADLINE))
                    .and_then(|()| stream.set_write_timeout(Some(DEADLINE)))
                    .map_err(|e| format!("set timeouts: {e}"))?;
                return Ok((stream, peer));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("accept: {e}")),
        }
        if Instant::now() > deadline {
            return Err(format!("no connection within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A UDP socket bound to `addr` inside `ns`.
pub fn udp_bind(ns: &TestNetns, addr: SocketAddrV4) -> io::Result<UdpSocket> {
    ns.run(move || UdpSocket::bind(addr))
}

/// Sends `payload` from `socket` to `to` every second until `receiver` gets a datagram (or
/// `timeout` passes); returns the datagram and its source. Resending makes a lost datagram
/// harmless; the receiver is bound before the first send, so nothing depends on timing.
pub fn udp_exchange(
    socket: &UdpSocket,
    to: SocketAddrV4,
    payload: &[u8],
    receiver: &UdpSocket,
    timeout: Duration,
) -> Result<(Vec<u8>, SocketAddr), String> {
    let deadline = Instant::now() + timeout;
    receiver
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| format!("set a read timeout: {e}"))?;
    let mut buf = [0u8; 2048];
    loop {
        socket
            .send_to(payload, to)
            .map_err(|e| format!("send a datagram to {to}: {e}"))?;
        match receiver.recv_from(&mut buf) {
            Ok((n, from)) => return Ok((buf[..n].to_vec(), from)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no datagram arrived within {timeout:?} of sending to {to}"
            ));
        }
    }
}
