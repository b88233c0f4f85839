//! The tests a guest runs: the conformance package's test binaries and the carton binary,
//! packed by `cargo nextest archive` on the host, unpacked once per run under target/vm/archive/
//! (the guest reads them there through the shared root), and listed on the host so that every
//! expected test can be matched with exactly one result from every guest.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use serde::Deserialize;
use xshell::{Shell, cmd};

use super::results::TestId;
use crate::cargo::{self, Profile};
use crate::util;

/// The nextest profile of the VM tier (.config/nextest.toml): JUnit report with the output of
/// passing tests (their `SKIP:` reasons) and timeouts sized for emulated CPUs.
pub const PROFILE: &str = "vm";

/// The unpacked archive and what it is expected to run.
pub struct Archive {
    /// Where `--extract-to` put it: `<dir>/target/debug/…`, `<dir>/target/nextest/…`.
    pub dir: PathBuf,
    pub carton: PathBuf,
    pub expected: BTreeSet<TestId>,
}

impl Archive {
    /// The nextest command line for the guest, minus the nextest binary itself: the archive's
    /// metadata instead of cargo (the guest has no build), the workspace where the host has it.
    pub fn guest_args(&self, threads: u32, filter: &[OsString]) -> Result<Vec<String>> {
        let meta = self.dir.join("target/nextest");
        let mut args: Vec<String> = vec![
            "nextest".into(),
            "run".into(),
            "--profile".into(),
            PROFILE.into(),
            "--binaries-metadata".into(),
            path_str(&meta.join("binaries-metadata.json"))?,
            "--cargo-metadata".into(),
            path_str(&meta.join("cargo-metadata.json"))?,
            "--target-dir-remap".into(),
            path_str(&self.dir.join("target"))?,
            "--workspace-remap".into(),
            path_str(&util::workspace_root())?,
            "--color".into(),
            "never".into(),
            "--show-progress".into(),
            "counter".into(),
            "--no-input-handler".into(),
            "--no-fail-fast".into(),
            "--no-tests".into(),
            "fail".into(),
            "--test-threads".into(),
            threads.to_string(),
        ];
        for f in filter {
            let f = f
                .to_str()
                .context("a FILTER argument is not UTF-8")?
                .to_string();
            ensure!(
                !f.contains('\n'),
                "a FILTER argument contains a newline: {f:?}"
            );
            args.push(f);
        }
        Ok(args)
    }
}

fn path_str(p: &std::path::Path) -> Result<String> {
    let s = p
        .to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))?;
    ensure!(
        !s.contains('\n') && !s.contains(' '),
        "the guest cannot take paths with spaces or newlines: {s:?}"
    );
    Ok(s.to_string())
}

/// Builds carton and the conformance test binaries, archives them, unpacks the archive and lists
/// the tests that `filter` selects.
pub fn prepare(sh: &Shell, filter: &[OsString]) -> Result<Archive> {
    util::section(
        "Building carton and the conformance tests; packing them (cargo nextest archive)",
    );
    // The archive includes target/debug/carton (.config/nextest.toml): build it first.
    cargo::build_carton(sh, Profile::Debug)?;
    cargo::ensure_nextest(sh)?;
    let cargo = cargo::cargo();
    let vm_dir = util::target_dir().join("vm");
    let file = vm_dir.join("conformance.tar.zst");
    let dir = vm_dir.join("archive");
    std::fs::create_dir_all(&vm_dir)?;
    cmd!(
        sh,
        "{cargo} nextest archive -p conformance --archive-file {file}"
    )
    .run()
    .context("cargo nextest archive failed")?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    // `list` unpacks the archive (--extract-to) and tells which tests the filter selects, in
    // the same profile the guests use (its default-filter applies to both).
    let json = cmd!(
        sh,
        "{cargo} nextest list --archive-file {file} --extract-to {dir} --extract-overwrite
             --profile {PROFILE} --message-format json {filter...}"
    )
    .read()
    .context("cargo nextest list failed (is FILTER valid for `nextest list`?)")?;
    let expected = expected_tests(&json)?;
    ensure!(
        !expected.is_empty(),
        "the filter selects no test: nothing to run in the guests"
    );
    let carton = dir.join("target/debug/carton");
    ensure!(
        carton.is_file(),
        "the archive has no target/debug/carton (see archive.include in .config/nextest.toml)"
    );
    println!(
        "{} tests to run in each guest (archive unpacked in {})",
        expected.len(),
        dir.display()
    );
    Ok(Archive {
        dir,
        carton,
        expected,
    })
}

#[derive(Deserialize)]
struct List {
    #[serde(rename = "rust-suites")]
    suites: std::collections::BTreeMap<String, Suite>,
}

#[derive(Deserialize)]
struct Suite {
    #[serde(rename = "binary-id")]
    binary_id: String,
    testcases: std::collections::BTreeMap<String, Case>,
}

#[derive(Deserialize)]
struct Case {
    #[serde(rename = "filter-match")]
    filter_match: FilterMatch,
}

#[derive(Deserialize)]
struct FilterMatch {
    status: String,
}

/// The tests of a `nextest list --message-format json` output that will run.
fn expected_tests(json: &str) -> Result<BTreeSet<TestId>> {
    let list: List = serde_json::from_str(json).context("parsing `nextest list` JSON")?;
    Ok(list
        .suites
        .values()
        .flat_map(|suite| {
            suite
                .testcases
                .iter()
                .filter(|(_, case)| case.filter_match.status == "matches")
                .map(|(name, _)| TestId {
                    binary: suite.binary_id.clone(),
                    name: name.clone(),
                })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_matching_tests_are_expected() {
        let json = r#"{"rust-build-meta":{},"test-count":3,"rust-suites":{
            "conformance::volumes":{"binary-id":"conformance::volumes","testcases":{
                "a":{"kind":"test","ignored":false,"filter-match":{"status":"matches"}},
                "b":{"kind":"test","ignored":true,"filter-match":{"status":"mismatch","reason":"ignored"}}}},
            "conformance":{"binary-id":"conformance","testcases":{
                "host::tests::x":{"kind":"test","ignored":false,"filter-match":{"status":"matches"}}}}}}"#;
        let expected = expected_tests(json).unwrap();
        let names: Vec<String> = expected.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            names,
            ["conformance host::tests::x", "conformance::volumes a"]
        );
    }
}
