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
    build_binary(sh, profile, "carton", "carton")
}

/// Builds `package` and returns the path of its binary `bin`.
pub fn build_binary(sh: &Shell, profile: Profile, package: &str, bin: &str) -> Result<PathBuf> {
    let cargo = cargo();
    let release: &[&str] = match profile {
        Profile::Debug => &[],
        Profile::Release => &["--release"],
    };
    cmd!(sh, "{cargo} build {release...} -p {package}")
        .run()
        .with_context(|| format!("building {package} failed"))?;
    let path = util::target_dir().join(profile.dir()).join(bin);
    anyhow::ensure!(
        path.is_file(),
        "cargo built {package} but {} does not exist",
        path.display()
    );
    Ok(path)
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
