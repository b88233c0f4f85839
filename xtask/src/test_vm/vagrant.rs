//! `cargo xtask test-vm --provider vagrant`: the distro tier. For each machine of the Vagrantfile
//! that `--cgroup` selects: `vagrant up` (provisioning Rust and the test dependencies), `cargo
//! xtask test` as root over `vagrant ssh`, then `vagrant destroy` (unless `--keep`). Each
//! machine's output is kept in target/vm/vagrant/<machine>.log.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::CgroupArg;
use super::initramfs::shell_quote;
use super::summary::duration_text;
use crate::util;

/// The Vagrantfile's machine for each cgroup mode (keep in sync with MACHINES there).
fn machine(mode: &str) -> &'static str {
    match mode {
        "v1" => "bullseye-cgv1",
        _ => "bookworm",
    }
}

pub fn run(cgroup: CgroupArg, keep: bool, filter: &[OsString]) -> Result<()> {
    if Command::new("vagrant")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        bail!(
            "vagrant is not installed (Debian: apt-get install vagrant vagrant-libvirt, or \
             VirtualBox); see vm/README.md"
        );
    }
    let dir = util::target_dir().join("vm/vagrant");
    std::fs::create_dir_all(&dir)?;
    // As in CI: a scenario whose prerequisite is missing fails instead of passing as a skip,
    // so the tier never reports a pass for scenarios that did not run.
    let mut test = String::from("cd /vagrant && CARTON_CONFORMANCE_NO_SKIP=1 cargo xtask test");
    if !filter.is_empty() {
        test.push_str(" --");
        for f in filter {
            test.push(' ');
            test.push_str(&shell_quote(f.to_str().context("FILTER is not UTF-8")?));
        }
    }
    // root's login environment has rustup's PATH; the scenarios need root.
    let remote = format!("sudo -i sh -c {}", shell_quote(&test));

    let mut rows = Vec::new();
    for mode in cgroup.modes() {
        let name = machine(mode);
        util::section(&format!("Distro tier: {name} (cgroup {mode})"));
        let log = dir.join(format!("{name}.log"));
        let mut file = std::fs::File::create(&log)?;
        let started = Instant::now();
        let up = tee(&["up", name, "--provision"], &mut file)?;
        let tested = up && tee(&["ssh", name, "-c", &remote], &mut file)?;
        if !keep {
            tee(&["destroy", "-f", name], &mut file)?;
        }
        let result = match (up, tested) {
            (false, _) => "FAIL (vagrant up)",
            (true, false) => "FAIL (tests)",
            (true, true) => "PASS",
        };
        rows.push((name, *mode, result, started.elapsed(), log));
    }

    let mut md =
        String::from("| machine | cgroup | result | duration | log |\n|---|---|---|---:|---|\n");
    for (name, mode, result, took, log) in &rows {
        let _ = writeln!(
            md,
            "| {name} | {mode} | {result} | {} | {} |",
            duration_text(*took),
            log.display()
        );
    }
    println!("\n{md}");
    std::fs::write(dir.join("summary.md"), &md)?;
    let failed = rows.iter().filter(|r| r.2 != "PASS").count();
    if failed > 0 {
        bail!("{failed} of {} distro machines failed", rows.len());
    }
    Ok(())
}

/// `vagrant <args>` from the workspace root, its output (stdout and stderr) both shown and
/// appended to `log`.
fn tee(args: &[&str], log: &mut std::fs::File) -> Result<bool> {
    writeln!(log, "$ vagrant {}", args.join(" "))?;
    println!("$ vagrant {}", args.join(" "));
    let mut child = Command::new("vagrant")
        .args(args)
        .current_dir(util::workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting vagrant")?;
    let log = Mutex::new(log);
    let copy = |stream: Box<dyn Read + Send>| {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            println!("{line}");
            let _ = writeln!(log.lock().unwrap(), "{line}");
        }
    };
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    std::thread::scope(|s| {
        s.spawn(|| copy(Box::new(out)));
        s.spawn(|| copy(Box::new(err)));
    });
    Ok(child.wait()?.success())
}
