//! `cargo xtask demo`: the README's "run it" command. From a fresh Debian/Ubuntu machine (as root)
//! to a running container in one step, showing what the container cannot see of the host.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use conformance::rootfs;
use xshell::{Shell, cmd};

use crate::cargo::{self, Profile};
use crate::{busybox, util};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// carton's state directory (images, containers); default: carton's own (/var/lib/carton).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

const IMAGE: &str = "busybox:latest";

/// Runs in the container: a heading, then the command that shows one kind of isolation.
const SCRIPT: &str = "\
echo '--- hostname: its own UTS namespace (default: the short container id)'
hostname
echo '--- ps: its own PID namespace (this shell is PID 1; no host process is visible)'
ps -o pid,user,comm
echo '--- network: its own network namespace (loopback only)'
ip addr 2>/dev/null || ls /sys/class/net
echo '--- mounts: its own mount namespace on an overlay root (first lines of /proc/mounts)'
head -n 8 /proc/mounts
echo '--- id: the user it runs as'
id
";

pub fn run(sh: &Shell, args: DemoArgs) -> Result<()> {
    if !util::is_root() {
        bail!(
            "cargo xtask demo must run as root: carton creates namespaces, mounts and cgroups.\n\
             Run it again as root, e.g. `sudo -E env PATH=\"$PATH\" cargo xtask demo`."
        );
    }

    util::section("Building carton (release)");
    let carton = cargo::build_carton(sh, Profile::Release)?;

    util::section("Finding a static busybox for the image");
    let busybox = busybox::obtain(sh)?;

    let tar = util::xtask_dir().join("busybox-rootfs.tar");
    util::section(&format!("Writing the rootfs tarball {}", tar.display()));
    sh.create_dir(util::xtask_dir())?;
    rootfs::write_busybox_rootfs_tar(&busybox, &tar)
        .with_context(|| format!("writing {} from {}", tar.display(), busybox.display()))?;

    // `--root` only when asked for, so carton's own default stays the single source of truth.
    let root_args: Vec<OsString> = match &args.root {
        Some(dir) => vec!["--root".into(), dir.into()],
        None => vec![],
    };
    let root = &root_args;

    util::section(&format!("Importing the image {IMAGE}"));
    let images = cmd!(sh, "{carton} {root...} images")
        .read()
        .context("`carton images` failed")?;
    if has_image(&images, "busybox", "latest") {
        println!("{IMAGE} is already imported.");
    } else {
        let change = r#"CMD ["sh"]"#;
        cmd!(
            sh,
            "{carton} {root...} import --change {change} {tar} {IMAGE}"
        )
        .run()
        .context("`carton import` failed")?;
    }

    util::section("On the host");
    println!("hostname: {}", host_hostname());
    println!("processes: {}", host_process_count());
    println!("network interfaces: {}", host_interfaces().join(" "));

    util::section(&format!(
        "In a container: carton run --rm --network none {IMAGE} sh -c '…'"
    ));
    // quiet: the heading above says what runs; echoing the whole script would only add noise.
    // --network none: the demo shows isolation and leaves the host's network (bridge, NAT
    // rules) exactly as it was.
    cmd!(
        sh,
        "{carton} {root...} run --rm --network none {IMAGE} sh -c {SCRIPT}"
    )
    .quiet()
    .run()
    .context("`carton run` failed")?;
    Ok(())
}

/// Whether `carton images` lists REPO:TAG, in docker's table layout (REPOSITORY TAG …) or as a
/// single `repo:tag` column.
fn has_image(listing: &str, repo: &str, tag: &str) -> bool {
    let joined = format!("{repo}:{tag}");
    listing.lines().any(|line| {
        let mut cols = line.split_whitespace();
        match (cols.next(), cols.next()) {
            (Some(first), _) if first == joined => true,
            (Some(first), Some(second)) => first == repo && second == tag,
            _ => false,
        }
    })
}

fn host_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn host_process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .count()
        })
        .unwrap_or(0)
}

fn host_interfaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::has_image;

    #[test]
    fn finds_image_in_docker_style_table() {
        let table = "REPOSITORY   TAG      IMAGE ID       CREATED         SIZE\n\
                     alpine       3.19     0123456789ab   2 days ago      7MB\n\
                     busybox      latest   abcdef012345   5 seconds ago   2MB\n";
        assert!(has_image(table, "busybox", "latest"));
        assert!(!has_image(table, "busybox", "1.36"));
        assert!(!has_image(table, "alpine", "latest"));
    }

    #[test]
    fn finds_image_in_name_tag_listing() {
        assert!(has_image(
            "busybox:latest  abcdef  2MB\n",
            "busybox",
            "latest"
        ));
        assert!(!has_image("busyboxy:latest\n", "busybox", "latest"));
        assert!(!has_image("", "busybox", "latest"));
    }
}
