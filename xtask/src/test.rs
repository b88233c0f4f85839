//! `cargo xtask test`: the README's test command and what `.ci/run` calls. Lints, builds carton,
//! then runs every suite with nextest against that binary. Later tiers (`test-vm`) reuse the same
//! steps and run the same binaries elsewhere.

use std::ffi::OsString;

use anyhow::{Result, bail};
use xshell::{Shell, cmd};

use crate::cargo::{self, Profile};
use crate::{busybox, util};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and `cargo clippy -D warnings`.
    #[arg(long)]
    no_lint: bool,
    /// Passed to `cargo nextest run` (after `--`), e.g. `-- -E 'test(pid)'` or `-- --profile ci`.
    #[arg(last = true, value_name = "NEXTEST_ARGS")]
    nextest_args: Vec<OsString>,
}

pub fn run(sh: &Shell, args: TestArgs) -> Result<()> {
    let root = util::is_root();
    if !root {
        util::loud_warning(&[
            "Not running as root: the conformance scenarios will SKIP (they create",
            "namespaces, mounts and cgroups). Only lints and unit tests really run.",
            "Run `cargo xtask test` as root to test carton for real.",
        ]);
    }

    let cargo = cargo::cargo();
    // Lint failures do not stop the run: one CI log then shows every problem, not only the first.
    let mut failed: Vec<&str> = Vec::new();
    if !args.no_lint {
        util::section("Checking formatting (cargo fmt)");
        if cmd!(sh, "{cargo} fmt --all -- --check").run().is_err() {
            failed.push("cargo fmt --check (run `cargo fmt --all`)");
        }
        util::section("Linting (cargo clippy -D warnings)");
        if cmd!(
            sh,
            "{cargo} clippy --workspace --all-targets -- -D warnings"
        )
        .run()
        .is_err()
        {
            failed.push("cargo clippy");
        }
    }

    util::section("Building carton (debug)");
    let carton = cargo::build_carton(sh, Profile::Debug)?;

    util::section("Finding a static busybox for the test rootfs");
    let busybox = match busybox::obtain(sh) {
        Ok(path) => Some(path),
        // Without root the scenarios skip anyway: do not fail the unit tests over busybox.
        Err(e) if !root => {
            eprintln!("warning: {e:#}");
            None
        }
        Err(e) => return Err(e),
    };

    cargo::ensure_nextest(sh)?;
    util::section("Running the test suites (cargo nextest)");
    let nextest_args = &args.nextest_args;
    let mut nextest = cmd!(
        sh,
        "{cargo} nextest run --workspace --no-fail-fast {nextest_args...}"
    )
    // The conformance suites drive this binary (not whatever `carton` is on PATH).
    .env("CARTON_BIN", &carton);
    if let Some(busybox) = &busybox {
        nextest = nextest.env(conformance::rootfs::BUSYBOX_ENV, busybox);
    }
    if nextest.run().is_err() {
        failed.push("cargo nextest run");
    }

    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    util::section(if root {
        "All checks and tests passed"
    } else {
        "All checks passed; conformance scenarios were SKIPPED (not root)"
    });
    Ok(())
}
