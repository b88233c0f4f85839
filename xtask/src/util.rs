//! Small helpers shared by every subcommand: where things are, who we run as, how we talk.

use std::path::{Path, PathBuf};

/// The workspace root: xtask lives in `<root>/xtask`, so this holds however cargo was invoked.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// cargo's target directory: `$CARGO_TARGET_DIR` (relative paths resolve against the workspace,
/// where we run cargo) or `<root>/target`. Built binaries and xtask's own files
/// (`target/xtask/…`) live here, so `cargo clean` removes them too.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// xtask's scratch space inside the target directory (downloaded packages, generated tarballs).
pub fn xtask_dir() -> PathBuf {
    target_dir().join("xtask")
}

/// Effective uid 0: containers need it (namespaces, mounts, cgroups), and so do package installs.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A heading before each step, so a long log (CI) shows where a failure happened.
pub fn section(title: &str) {
    println!("\n==> {title}");
}

/// A warning that must not scroll by unnoticed (e.g. "conformance scenarios will be skipped").
pub fn loud_warning(lines: &[&str]) {
    let width = lines.iter().map(|l| l.len()).max().unwrap_or(0) + 4;
    let bar = "!".repeat(width);
    eprintln!("\n{bar}");
    for line in lines {
        eprintln!("! {line:<w$} !", w = width - 4);
    }
    eprintln!("{bar}\n");
}
