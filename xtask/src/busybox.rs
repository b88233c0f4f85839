//! Getting a static busybox for the rootfs, changing the machine as little as possible.
//!
//! Order of preference:
//! 1. `conformance::rootfs::find_static_busybox()`: `$CARTON_BUSYBOX`, else the usual locations;
//! 2. one fetched earlier into `target/xtask/busybox/` (step 3 below);
//! 3. `apt-get download busybox-static` + `dpkg-deb -x` into `target/xtask/busybox/`: needs no
//!    root and installs nothing;
//! 4. as root only, `apt-get install busybox-static` (refreshing the package lists if needed).
//!
//! To exercise steps 2–4 on a machine that has busybox, point `CARTON_BUSYBOX` at something that is
//! not a static busybox (`CARTON_BUSYBOX=/nonexistent`); to exercise step 3 again, also remove
//! `target/xtask/busybox/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use conformance::rootfs;
use xshell::{Shell, cmd};

use crate::util;

const PACKAGE: &str = "busybox-static";

/// Where the package puts the binary: /bin on Debian 12, /usr/bin once /usr is fully merged.
const PACKAGE_PATHS: [&str; 2] = ["bin/busybox", "usr/bin/busybox"];

/// Returns the path of a static busybox, fetching Debian's package when the machine has none.
/// Everything it does is explained on stdout.
pub fn obtain(sh: &Shell) -> Result<PathBuf> {
    if let Some(path) = rootfs::find_static_busybox() {
        // A relative $CARTON_BUSYBOX means "from where I ran cargo"; tests run elsewhere.
        let path = std::path::absolute(&path)?;
        println!("busybox: {}", path.display());
        return Ok(path);
    }
    match std::env::var_os(rootfs::BUSYBOX_ENV) {
        Some(v) if !v.is_empty() => println!(
            "{}={} is not a statically linked executable: looking for another busybox.",
            rootfs::BUSYBOX_ENV,
            Path::new(&v).display()
        ),
        _ => println!("No static busybox on this machine (/bin, /usr/bin, /usr/local/bin)."),
    }

    let dir = util::xtask_dir().join("busybox");
    if let Some(path) = extracted(&dir) {
        println!(
            "busybox: {} (fetched earlier from Debian's {PACKAGE})",
            path.display()
        );
        return Ok(path);
    }

    println!(
        "Downloading Debian's {PACKAGE} package and unpacking it into {} \
         (nothing is installed on the system).",
        dir.display()
    );
    let download_error = match download(sh, &dir) {
        Ok(path) => {
            println!("busybox: {}", path.display());
            return Ok(path);
        }
        Err(e) => e,
    };
    println!("Downloading {PACKAGE} failed: {download_error:#}");

    if !util::is_root() {
        bail!(
            "no static busybox: the download failed and installing {PACKAGE} needs root. \
             Install it (`sudo apt-get install {PACKAGE}`) or set {}=/path/to/static/busybox",
            rootfs::BUSYBOX_ENV
        );
    }
    println!("Falling back to installing {PACKAGE} on the system with apt-get (we are root).");
    install(sh)
}

/// The busybox unpacked by an earlier `download`, if any.
fn extracted(dir: &Path) -> Option<PathBuf> {
    PACKAGE_PATHS
        .iter()
        .map(|p| dir.join(p))
        .find(|p| p.is_file())
}

/// `apt-get download` + `dpkg-deb -x` into `<dir>.partial`, renamed to `dir` once the binary is
/// there, so an interrupted attempt is never mistaken for a good one by `extracted`.
/// Unprivileged users can do this: apt only reads the package lists and writes to the current dir.
fn download(sh: &Shell, dir: &Path) -> Result<PathBuf> {
    let partial = dir.with_extension("partial");
    for stale in [&partial, dir] {
        if stale.exists() {
            sh.remove_path(stale)?;
        }
    }
    sh.create_dir(&partial)?;
    {
        let _cwd = sh.push_dir(&partial);
        // apt downloads as the unprivileged `_apt` user, which cannot write into root's target
        // dir; when we are root, say so up front instead of letting apt warn that it falls back.
        let sandbox: &[&str] = if util::is_root() {
            &["-o", "APT::Sandbox::User=root"]
        } else {
            &[]
        };
        cmd!(sh, "apt-get download {sandbox...} {PACKAGE}")
            .run()
            .context("apt-get download failed")?;
        let deb = sh
            .read_dir(&partial)?
            .into_iter()
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{PACKAGE}_")) && n.ends_with(".deb"))
            })
            .with_context(|| format!("apt-get download left no {PACKAGE}_*.deb"))?;
        cmd!(sh, "dpkg-deb -x {deb} .")
            .run()
            .context("dpkg-deb -x failed")?;
    }
    extracted(&partial).with_context(|| {
        format!(
            "the {PACKAGE} package has no {} (see {})",
            PACKAGE_PATHS.join(" or "),
            partial.display()
        )
    })?;
    std::fs::rename(&partial, dir)
        .with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))?;
    extracted(dir).context("busybox vanished after unpacking")
}

/// `apt-get install busybox-static`; when apt does not know the package (a machine whose package
/// lists were never fetched, e.g. a fresh container image), `apt-get update` first and retry.
fn install(sh: &Shell) -> Result<PathBuf> {
    let install = || {
        cmd!(sh, "apt-get install -y --no-install-recommends {PACKAGE}")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()
    };
    if install().is_err() {
        println!(
            "apt-get install failed: refreshing the package lists (apt-get update) and retrying."
        );
        cmd!(sh, "apt-get update -qq")
            .run()
            .context("apt-get update failed")?;
        install().with_context(|| format!("apt-get install {PACKAGE} failed"))?;
    }
    // The package installs to /bin (or /usr/bin); $CARTON_BUSYBOX, if set, pointed elsewhere.
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .with_context(|| format!("{PACKAGE} is installed but no /bin/busybox or /usr/bin/busybox"))
}
