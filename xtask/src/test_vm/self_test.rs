//! `cargo xtask test-vm --self-test`: proves the harness catches what it must. Three legs that
//! must fail, each for its own reason, on one kernel × cgroup mode:
//! - a guest whose kernel panics (`carton.debug=panic`) → "kernel panic", at once;
//! - a guest that hangs instead of testing (`carton.debug=hang-tests`, a 30 s stall limit) →
//!   "the guest hangs";
//! - a failing scenario (`file_volume` with its busybox taken away and skips forbidden, so its
//!   prerequisite check panics) → the leg fails with that one test failed.
//!
//! Each case is this same command run as a child (`test-vm` with the case's flags), so nothing
//! of the normal path is bypassed: exit status, the leg's reason and the console log are what a
//! user would see. The self-test passes when every child fails with the expected words.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util;

struct Case {
    what: &'static str,
    flags: &'static [&'static str],
    filter: &'static [&'static str],
    /// Words the child's output must contain (the leg's reason).
    expect: &'static str,
}

const CASES: &[Case] = &[
    Case {
        what: "a guest whose kernel panics",
        flags: &["--kernel-append", "carton.debug=panic"],
        filter: &["-E", "test(=volumes::file_volume)"],
        expect: "kernel panic",
    },
    Case {
        what: "a guest that hangs instead of testing",
        flags: &[
            "--kernel-append",
            "carton.debug=hang-tests",
            "--stall-timeout",
            "30",
        ],
        filter: &["-E", "test(=volumes::file_volume)"],
        expect: "the guest hangs",
    },
    Case {
        what: "a failing scenario",
        flags: &[
            "--guest-env",
            "CARTON_CONFORMANCE_NO_SKIP=1",
            "--guest-env",
            "CARTON_BUSYBOX=/nonexistent",
        ],
        filter: &["-E", "test(=volumes::file_volume)"],
        expect: "test-vm: 0 passed, 1 failed, 0 skipped",
    },
];

/// Runs every case on `kernel` × `cgroup` with `accel`; fails unless each leg failed as expected.
pub fn run(kernel: &str, cgroup: &str, accel: &str) -> Result<()> {
    let exe = std::env::current_exe().context("locating xtask")?;
    let mut wrong = Vec::new();
    for case in CASES {
        util::section(&format!(
            "Self-test: {} (kernel {kernel}, cgroup {cgroup}) must fail with {:?}",
            case.what, case.expect
        ));
        let started = Instant::now();
        let out = Command::new(&exe)
            .args([
                "test-vm", "--kernel", kernel, "--cgroup", cgroup, "--accel", accel,
            ])
            .args(case.flags)
            .arg("--")
            .args(case.filter)
            .current_dir(util::workspace_root())
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let caught = !out.status.success() && text.contains(case.expect);
        println!(
            "{}: {} after {:.0}s ({})",
            case.what,
            if caught { "caught" } else { "NOT CAUGHT" },
            started.elapsed().as_secs_f64(),
            out.status
        );
        if !caught {
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            println!(
                "--- last lines ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            wrong.push(case.what);
        }
    }
    if !wrong.is_empty() {
        bail!("the harness did not catch: {}", wrong.join("; "));
    }
    println!(
        "self-test: the harness caught all {} broken legs",
        CASES.len()
    );
    Ok(())
}
