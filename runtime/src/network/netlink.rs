//! A small rtnetlink client: just the link, address and route operations carton needs, over a
//! NETLINK_ROUTE socket, synchronous, without a runtime or a dependency. Each request asks for
//! an acknowledgement, so every failure comes back as an errno.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

/// A NETLINK_ROUTE socket, bound to the network namespace it was created in.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

/// Message body under construction: a fixed header followed by attributes.
struct Message {
    kind: u16,
    flags: u16,
    body: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16, header: &[u8]) -> Message {
        Message {
            kind,
            flags,
            body: header.to_vec(),
        }
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        push_attr(&mut self.body, kind, payload);
        self
    }

    fn nested(&mut self, kind: u16, inner: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        let mut payload = Vec::new();
        inner(&mut payload);
        push_attr(&mut self.body, kind, &payload);
        self
    }
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

fn cstr(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

/// `struct ifinfomsg`
fn ifinfomsg(index: i32, flags: u32, change: u32) -> Vec<u8> {
    let mut v = vec![libc::AF_UNSPEC as u8, 0];
    v.extend_from_slice(&0u16.to_ne_bytes());
    v.extend_from_slice(&index.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&change.to_ne_bytes());
    v
}

impl Netlink {
    /// A socket in the current network namespace.
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Netlink { fd, seq: 0 })
    }

    /// A socket in the network namespace `netns` (an open /proc/<pid>/ns/net), made by
    /// entering it and coming back: the socket stays bound to it. carton is single-threaded
    /// whenever it does this, as setns requires.
    pub fn open_in(netns: RawFd) -> io::Result<Netlink> {
        let own = std::fs::File::open("/proc/thread-self/ns/net")?;
        // SAFETY: setns with namespace fds.
        if unsafe { libc::setns(netns, libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let socket = Netlink::open();
        // SAFETY: as above; going back cannot be skipped.
        if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            // Staying in the container's network namespace would be worse than dying.
            panic!(
                "cannot return to carton's network namespace: {}",
                io::Error::last_os_error()
            );
        }
        socket
    }

    fn request(&mut self, message: &Message) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let len = 16 + message.body.len();
        let mut packet = Vec::with_capacity(len);
        packet.extend_from_slice(&(len as u32).to_ne_bytes());
        packet.extend_from_slice(&message.kind.to_ne_bytes());
        packet.extend_from_slice(&(message.flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        packet.extend_from_slice(&self.seq.to_ne_bytes());
        packet.extend_from_slice(&0u32.to_ne_bytes());
        packet.extend_from_slice(&message.body);
        // SAFETY: send from a live buffer on our socket (the kernel is the default peer).
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), packet.as_ptr().cast(), packet.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        self.replies()
    }

    /// Reads replies until the acknowledgement; returns the payloads of data messages.
    fn replies(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let mut data = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: recv into a live buffer.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let Some((kind, seq, payload, next)) = next_message(rest) else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad netlink reply",
                    ));
                };
                rest = next;
                if seq != self.seq {
                    continue;
                }
                match kind {
                    NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(payload[0..4].try_into().expect("4 bytes"));
                        return if code == 0 {
                            Ok(data)
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    NLMSG_DONE => return Ok(data),
                    _ => data.push(payload.to_vec()),
                }
            }
        }
    }

    /// The index of the link called `name`, if it exists.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<i32>> {
        let mut m = Message::new(RTM_GETLINK, 0, &ifinfomsg(0, 0, 0));
        m.attr(IFLA_IFNAME, &cstr(name));
        match self.request(&m) {
            Ok(replies) => Ok(replies
                .first()
                .filter(|r| r.len() >= 16)
                .map(|r| i32::from_ne_bytes(r[4..8].try_into().expect("4 bytes")))),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn create_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut m = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfomsg(0, 0, 0));
        m.attr(IFLA_IFNAME, &cstr(name))
            .nested(IFLA_LINKINFO, |b| push_attr(b, IFLA_INFO_KIND, b"bridge"));
        self.request(&m).map(drop)
    }

    /// A veth pair: `host` here, `peer` created directly in the namespace `peer_netns` (so a
    /// peer named `eth0` never collides with the host's own `eth0`).
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_netns: RawFd,
        mtu: Option<u32>,
    ) -> io::Result<()> {
        let mut m = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfomsg(0, 0, 0));
        m.attr(IFLA_IFNAME, &cstr(host));
        if let Some(mtu) = mtu {
            m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        m.nested(IFLA_LINKINFO, |info| {
            push_attr(info, IFLA_INFO_KIND, b"veth");
            let mut data = Vec::new();
            let mut peer_msg = ifinfomsg(0, 0, 0);
            push_attr(&mut peer_msg, IFLA_IFNAME, &cstr(peer));
            push_attr(
                &mut peer_msg,
                IFLA_NET_NS_FD,
                &(peer_netns as u32).to_ne_bytes(),
            );
            if let Some(mtu) = mtu {
                push_attr(&mut peer_msg, IFLA_MTU, &mtu.to_ne_bytes());
            }
            push_attr(&mut data, VETH_INFO_PEER, &peer_msg);
            push_attr(info, IFLA_INFO_DATA, &data);
        });
        self.request(&m).map(drop)
    }

    pub fn set_master(&mut self, index: i32, master: i32) -> io::Result<()> {
        let mut m = Message::new(RTM_NEWLINK, 0, &ifinfomsg(index, 0, 0));
        m.attr(IFLA_MASTER, &(master as u32).to_ne_bytes());
        self.request(&m).map(drop)
    }

    pub fn set_up(&mut self, index: i32) -> io::Result<()> {
        let up = libc::IFF_UP as u32;
        let m = Message::new(RTM_NEWLINK, 0, &ifinfomsg(index, up, up));
        self.request(&m).map(drop)
    }

    /// Sets a link's MAC address (6 bytes).
    pub fn set_mac(&mut self, index: i32, mac: [u8; 6]) -> io::Result<()> {
        let mut m = Message::new(RTM_NEWLINK, 0, &ifinfomsg(index, 0, 0));
        m.attr(IFLA_ADDRESS, &mac);
        self.request(&m).map(drop)
    }

    pub fn delete_link(&mut self, index: i32) -> io::Result<()> {
        let m = Message::new(RTM_DELLINK, 0, &ifinfomsg(index, 0, 0));
        self.request(&m).map(drop)
    }

    /// Adds `address/prefix` to the link (EEXIST if it is already there).
    pub fn add_address(&mut self, index: i32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut header = vec![libc::AF_INET as u8, prefix, 0, RT_SCOPE_UNIVERSE];
        header.extend_from_slice(&(index as u32).to_ne_bytes());
        let mut m = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &header);
        let broadcast = u32::from(address) | (u32::MAX.checked_shr(prefix as u32).unwrap_or(0));
        m.attr(IFA_LOCAL, &address.octets())
            .attr(IFA_ADDRESS, &address.octets());
        if prefix < 31 {
            m.attr(IFA_BROADCAST, &Ipv4Addr::from(broadcast).octets());
        }
        self.request(&m).map(drop)
    }

    /// `default via gateway dev index`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr, index: i32) -> io::Result<()> {
        let mut header = vec![
            libc::AF_INET as u8,
            0, // dst_len: default route
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ];
        header.extend_from_slice(&0u32.to_ne_bytes());
        let mut m = Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &header);
        m.attr(RTA_GATEWAY, &gateway.octets())
            .attr(RTA_OIF, &(index as u32).to_ne_bytes());
        self.request(&m).map(drop)
    }
}

/// A NETLINK_ROUTE socket subscribed to the link notifications (`RTMGRP_LINK`) of the
/// network namespace it was created in: lets carton see the kernel remove a link instead of
/// removing it itself.
#[derive(Debug)]
pub struct LinkEvents {
    fd: OwnedFd,
}

impl LinkEvents {
    pub fn subscribe() -> io::Result<LinkEvents> {
        let socket = Netlink::open()?;
        // SAFETY: an all-zero sockaddr_nl is valid; then the fields we set.
        let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as u16;
        address.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: bind with a live, correctly sized sockaddr_nl.
        let bound = unsafe {
            libc::bind(
                socket.fd.as_raw_fd(),
                (&address as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if bound != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LinkEvents { fd: socket.fd })
    }

    /// Waits up to `timeout` for the notification that link `index` was deleted. `Ok(false)`
    /// when it did not come in time; an error (ENOBUFS: notifications were lost) means the
    /// caller must look for itself.
    pub fn wait_deleted(&self, index: i32, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let mut pollfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let millis = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: poll one live pollfd.
            let ready = unsafe { libc::poll(&mut pollfd, 1, millis) };
            if ready < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if ready == 0 {
                continue;
            }
            // SAFETY: recv into a live buffer.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => continue,
                    _ => return Err(err),
                }
            }
            if deleted_in(&buf[..n as usize], index) {
                return Ok(true);
            }
        }
    }
}

/// Whether a batch of netlink messages holds an RTM_DELLINK of link `index`.
fn deleted_in(mut batch: &[u8], index: i32) -> bool {
    while let Some((kind, _, payload, rest)) = next_message(batch) {
        if kind == RTM_DELLINK
            && payload.len() >= 8
            && i32::from_ne_bytes(payload[4..8].try_into().expect("4 bytes")) == index
        {
            return true;
        }
        batch = rest;
    }
    false
}

/// The first message of a batch — (type, sequence number, payload) — and the rest of the
/// batch; `None` when no well-formed message starts it.
fn next_message(batch: &[u8]) -> Option<(u16, u32, &[u8], &[u8])> {
    if batch.len() < 16 {
        return None;
    }
    let len = u32::from_ne_bytes(batch[0..4].try_into().expect("4 bytes")) as usize;
    let kind = u16::from_ne_bytes(batch[4..6].try_into().expect("2 bytes"));
    let seq = u32::from_ne_bytes(batch[8..12].try_into().expect("4 bytes"));
    if len < 16 || len > batch.len() {
        return None;
    }
    Some((
        kind,
        seq,
        &batch[16..len],
        &batch[align(len).min(batch.len())..],
    ))
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_to_four_bytes() {
        let mut buf = Vec::new();
        push_attr(&mut buf, IFLA_IFNAME, &cstr("eth0"));
        assert_eq!(buf.len(), 12); // 4 header + 5 payload, padded to 12
        assert_eq!(u16::from_ne_bytes([buf[0], buf[1]]), 9);
    }

    #[test]
    fn a_deletion_notice_is_recognised_by_index() {
        let mut batch = Vec::new();
        for (kind, index) in [(RTM_NEWLINK, 7), (RTM_DELLINK, 9)] {
            let body = ifinfomsg(index, 0, 0);
            batch.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
            batch.extend_from_slice(&kind.to_ne_bytes());
            batch.extend_from_slice(&[0; 10]);
            batch.extend_from_slice(&body);
        }
        assert!(deleted_in(&batch, 9));
        assert!(!deleted_in(&batch, 7), "a new link is not a deleted one");
        assert!(!deleted_in(&batch[..20], 9), "a truncated batch");
    }

    #[test]
    fn loopback_exists_and_unknown_links_do_not() {
        let mut nl = Netlink::open().unwrap();
        assert!(nl.link_index("lo").unwrap().is_some());
        assert_eq!(nl.link_index("carton-none0").unwrap(), None);
    }
}
