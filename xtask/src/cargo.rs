//! Running cargo from xtask: building carton and making sure cargo-nextest is there.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

use crate::util;

/// The cargo that runs us (`$CARGO`, set by `cargo run`), so nested builds use the same toolchain
/// as the alias that started xtask; plain `cargo` when xtask is run some other way.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Cargo build profiles xtask builds carton with.
#[derive(Clone, Copy)]
pub enum Profile {
    /// What the tests drive: fast to build, assertions on.
    Debug,
    /// What the demo (and later the benchmarks) run: what users get.
    Release,
}

impl Profile {
    /// The directory under the target dir (`debug`, `release`).
    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// `cargo build [--release] -p carton`; returns the absolute path of the `carton` binary.
pub fn build_carton(sh: &Shell, profile: Profile) -> Result<PathBuf> {
    let cargo = cargo();
    let release: &[&str] = match profile {
        Profile::Debug => &[],
        Profile::Release => &["--release"],
    };
    cmd!(sh, "{cargo} build {release...} -p carton")
        .run()
        .context("building carton failed")?;
    let bin = util::target_dir().join(profile.dir()).join("carton");
    anyhow::ensure!(
        bin.is_file(),
        "cargo built carton but {} does not exist",
        bin.display()
    );
    Ok(bin)
}

/// Installs cargo-nextest when `cargo nextest` is missing, telling the user why it takes a while.
pub fn ensure_nextest(sh: &Shell) -> Result<()> {
    let cargo = cargo();
    let present = cmd!(sh, "{cargo} nextest --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
    if !present {
        util::section(
            "cargo-nextest is missing: installing it (`cargo install cargo-nextest --locked`, once)",
        );
        cmd!(sh, "{cargo} install cargo-nextest --locked")
            .run()
            .context("installing cargo-nextest failed; install it by hand and retry")?;
    }
    Ok(())
}
