//! The per-container /etc/hostname, /etc/hosts and /etc/resolv.conf, written into the
//! container's directory and bind-mounted over the image's (as docker does), so the image
//! layer is never edited and the files can be rewritten while the container runs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::options::NetworkMode;

/// Writes the three files into `dir`; returns (host path, container path) pairs to mount.
pub fn write(
    dir: &Path,
    hostname: &str,
    network: &NetworkMode,
) -> io::Result<Vec<(PathBuf, &'static str)>> {
    let hostname_file = dir.join("hostname");
    fs::write(&hostname_file, format!("{hostname}\n"))?;

    let hosts_file = dir.join("hosts");
    let hosts = match network {
        NetworkMode::Host => fs::read_to_string("/etc/hosts").unwrap_or_else(|_| default_hosts()),
        _ => default_hosts(),
    };
    fs::write(&hosts_file, hosts)?;

    let resolv_file = dir.join("resolv.conf");
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = match network {
        // Same network stack: the host's resolvers, loopback ones included, all work.
        NetworkMode::Host => host_resolv,
        _ => without_loopback_nameservers(&host_resolv),
    };
    fs::write(&resolv_file, resolv)?;

    Ok(vec![
        (hostname_file, "/etc/hostname"),
        (hosts_file, "/etc/hosts"),
        (resolv_file, "/etc/resolv.conf"),
    ])
}

/// Rewrites /etc/hosts for a container that got `address` on a bridge network: its host name,
/// name and short id resolve to it (the file is bind-mounted, so the running container sees
/// the new content).
pub fn write_hosts_with_address(
    dir: &Path,
    address: std::net::Ipv4Addr,
    names: &[&str],
    durability: crate::state::Durability,
) -> io::Result<()> {
    let mut unique: Vec<&str> = Vec::new();
    for name in names {
        if !name.is_empty() && !unique.contains(name) {
            unique.push(name);
        }
    }
    let text = format!("{}{address}\t{}\n", default_hosts(), unique.join(" "));
    crate::state::write_atomic_with(&dir.join("hosts"), text.as_bytes(), durability)
}

fn default_hosts() -> String {
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
     fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
     ff02::2\tip6-allrouters\n"
        .to_string()
}

/// A resolver on the host's loopback (systemd-resolved's 127.0.0.53, a local dnsmasq) is
/// unreachable from another network namespace: drop it rather than hand out a dead server.
pub fn without_loopback_nameservers(resolv: &str) -> String {
    resolv
        .lines()
        .filter(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => {
                    !(addr.starts_with("127.") || addr == "::1" || addr == "localhost")
                }
                _ => true,
            }
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolvers_are_dropped() {
        let text = "search lan\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nnameserver ::1\noptions edns0\n";
        assert_eq!(
            without_loopback_nameservers(text),
            "search lan\nnameserver 192.0.2.1\noptions edns0\n"
        );
    }

    #[test]
    fn files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), "box1", &NetworkMode::None).unwrap();
        assert_eq!(files.len(), 3);
        assert_eq!(
            fs::read_to_string(dir.path().join("hostname")).unwrap(),
            "box1\n"
        );
        assert!(
            fs::read_to_string(dir.path().join("hosts"))
                .unwrap()
                .contains("localhost")
        );
    }
}
