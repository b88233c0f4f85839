//! Debian packages fetched with the machine's own apt, but with a private state directory, so
//! the system's package lists, sources and pins stay exactly as they were.
//!
//! The mirror is the one the machine's apt configuration already names (read from
//! /etc/apt/sources.list and /etc/apt/sources.list.d at run time), never a host name written in
//! the repository; `CARTON_VM_DEBIAN_MIRROR` overrides it on machines whose apt points elsewhere
//! (e.g. Ubuntu CI runners, where the workflow reads the URI out of Debian's own container image).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::util;

/// Overrides the mirror found in /etc/apt (a URI such as `http://<mirror>/debian`).
pub const MIRROR_ENV: &str = "CARTON_VM_DEBIAN_MIRROR";

/// The keyring Debian's archive is signed with (package `debian-archive-keyring`).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Codenames that identify an apt source as Debian's main archive (any of its suites).
const DEBIAN_CODENAMES: [&str; 7] = [
    "buster", "bullseye", "bookworm", "trixie", "forky", "sid", "unstable",
];

/// A private apt: its own sources.list (the given suites from the system's Debian mirror), its
/// own package lists and download cache, all under `dir`.
pub struct PrivateApt {
    dir: PathBuf,
    updated: bool,
}

impl PrivateApt {
    /// Prepares `dir` with a sources.list for `suites` (component `main`) on the machine's mirror.
    pub fn new(dir: &Path, suites: &[&str]) -> Result<PrivateApt> {
        let mirror = debian_mirror()?;
        anyhow::ensure!(
            Path::new(KEYRING).is_file(),
            "{KEYRING} is missing: install the debian-archive-keyring package"
        );
        for sub in ["lists/partial", "archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let mut sources = String::new();
        for suite in suites {
            sources.push_str(&format!(
                "deb [signed-by={KEYRING}] {mirror} {suite} main\n"
            ));
        }
        std::fs::write(dir.join("sources.list"), sources)?;
        println!("Debian mirror (from this machine's apt configuration): {mirror}");
        Ok(PrivateApt {
            dir: dir.to_path_buf(),
            updated: false,
        })
    }

    /// The `-o` options that point apt at the private state. System pins are ignored (they are
    /// about the host's packages); apt.conf.d is kept, since it may hold the proxy the mirror needs.
    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        let mut opts = vec![
            format!("Dir::State={d}"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}"),
            format!("Dir::Cache::Archives={d}/archives"),
            format!("Dir::Etc::SourceList={d}/sources.list"),
            "Dir::Etc::SourceParts=/dev/null".into(),
            "Dir::Etc::Preferences=/dev/null".into(),
            "Dir::Etc::PreferencesParts=/dev/null".into(),
            "Acquire::Languages=none".into(),
        ];
        if util::is_root() {
            // apt would otherwise drop to the `_apt` user, who cannot write into root's target
            // dir, and warn about it.
            opts.push("APT::Sandbox::User=root".into());
        }
        opts.into_iter()
            .flat_map(|o| ["-o".to_string(), o])
            .collect()
    }

    /// `apt-get update` of the private lists, once per run.
    pub fn update(&mut self, sh: &Shell) -> Result<()> {
        if self.updated {
            return Ok(());
        }
        let opts = self.options();
        cmd!(sh, "apt-get {opts...} -q update")
            .run()
            .context("apt-get update (private state) failed")?;
        self.updated = true;
        Ok(())
    }

    /// The package that `metapackage` of `suite` depends on, e.g. `linux-image-amd64` of bookworm
    /// -> `linux-image-6.1.0-50-amd64`.
    pub fn resolve(&self, sh: &Shell, suite: &str, metapackage: &str) -> Result<String> {
        let opts = self.options();
        let spec = format!("{metapackage}/{suite}");
        let out = cmd!(sh, "apt-cache {opts...} depends {spec}")
            .quiet()
            .read()
            .with_context(|| format!("apt-cache depends {spec} failed"))?;
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends:"))
            .map(|p| p.trim().trim_matches(|c| c == '<' || c == '>').to_string())
            .find(|p| p.starts_with("linux-image-"))
            .with_context(|| format!("{spec} depends on no linux-image-* package:\n{out}"))
    }

    /// Downloads `package` of `suite` into `into`; returns the .deb's path.
    pub fn download(&self, sh: &Shell, suite: &str, package: &str, into: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(into)?;
        let opts = self.options();
        let spec = format!("{package}/{suite}");
        {
            let _cwd = sh.push_dir(into);
            cmd!(sh, "apt-get {opts...} -q download {spec}")
                .run()
                .with_context(|| format!("apt-get download {spec} failed"))?;
        }
        // The file is named <package>_<version>_<arch>.deb; an older version may lie next to it.
        let prefix = format!("{package}_");
        debs_in(into)?
            .into_iter()
            .filter(|p| file_name(p).starts_with(&prefix))
            .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .with_context(|| {
                format!(
                    "apt-get download left no {prefix}*.deb in {}",
                    into.display()
                )
            })
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The .deb files directly in `dir`.
pub fn debs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut debs = Vec::new();
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "deb") {
                debs.push(path);
            }
        }
    }
    debs.sort();
    Ok(debs)
}

/// The URI of the Debian archive among the machine's apt sources (`$CARTON_VM_DEBIAN_MIRROR`
/// first). Security and non-Debian sources are skipped.
pub fn debian_mirror() -> Result<String> {
    if let Some(uri) = std::env::var_os(MIRROR_ENV).filter(|v| !v.is_empty()) {
        return Ok(uri.to_string_lossy().trim_end_matches('/').to_string());
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut parts: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        parts.sort();
        files.extend(parts);
    }
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let name = file.to_string_lossy();
        let found = if name.ends_with(".sources") {
            mirror_in_deb822(&text)
        } else if name.ends_with(".list") {
            mirror_in_one_line(&text)
        } else {
            None
        };
        if let Some(uri) = found {
            return Ok(uri);
        }
    }
    bail!(
        "no Debian archive among this machine's apt sources (/etc/apt/sources.list, \
         /etc/apt/sources.list.d/): set {MIRROR_ENV} to a Debian mirror URI"
    )
}

/// Whether an apt suite belongs to Debian's main archive (not its security archive).
fn is_debian_suite(suite: &str) -> bool {
    let base = suite.split('-').next().unwrap_or(suite);
    DEBIAN_CODENAMES.contains(&base) && !suite.contains("security")
}

/// First `deb` URI of a one-line-style sources.list whose suite is Debian's.
fn mirror_in_one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            return None;
        }
        let mut rest: Vec<&str> = words.collect();
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            // Options: `[signed-by=… arch=…]`, possibly spread over several words.
            let end = rest.iter().position(|w| w.ends_with(']'))?;
            rest.drain(..=end);
        }
        let (uri, suite) = (rest.first()?, rest.get(1)?);
        is_debian_suite(suite).then(|| uri.trim_end_matches('/').to_string())
    })
}

/// First URI of a deb822 `.sources` stanza of type `deb` with a Debian suite.
fn mirror_in_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |key: &str| -> Option<String> {
            stanza.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (!line.starts_with('#') && k.trim().eq_ignore_ascii_case(key))
                    .then(|| v.trim().to_string())
            })
        };
        if field("Enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
            return None;
        }
        if !field("Types")?.split_whitespace().any(|t| t == "deb") {
            return None;
        }
        if !field("Suites")?.split_whitespace().any(is_debian_suite) {
            return None;
        }
        let uris = field("URIs")?;
        let uri = uris.split_whitespace().next()?;
        Some(uri.trim_end_matches('/').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_skips_comments_security_and_other_distributions() {
        let text = "Types: deb\n# http://snapshot.example/archive\nURIs: http://mirror.example/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://mirror.example/debian-security\n\
                    Suites: bookworm-security\nComponents: main\n";
        assert_eq!(
            mirror_in_deb822(text).as_deref(),
            Some("http://mirror.example/debian")
        );
        let ubuntu =
            "Types: deb\nURIs: http://archive.example/ubuntu/\nSuites: noble noble-updates\n";
        assert_eq!(mirror_in_deb822(ubuntu), None);
        let security_only =
            "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(mirror_in_deb822(security_only), None);
    }

    #[test]
    fn one_line_sources_with_options() {
        let text = "# comment\ndeb-src http://src.example/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_in_one_line(text).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_in_one_line("deb http://archive.example/ubuntu noble main\n"),
            None
        );
    }
}
