//! Parsing and validation of what the user asks `run` for: environment, volumes, user,
//! network mode. Pure functions, unit-tested; the CLI only hands strings over.

use std::path::{Component, Path, PathBuf};

use super::ContainerError;

/// `-e`/`--env-file` entries, as `KEY=VALUE` strings. `-e KEY` takes the value from carton's own
/// environment and is dropped when unset (docker's rule).
pub fn parse_env(
    entry: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, ContainerError> {
    let invalid =
        || ContainerError::InvalidInput(format!("invalid environment variable: {entry:?}"));
    let (key, value) = match entry.split_once('=') {
        Some((key, value)) => (key, Some(value.to_string())),
        None => (entry, None),
    };
    if key.is_empty() || key.trim() != key || key.contains('\0') {
        return Err(invalid());
    }
    let value = match value {
        Some(v) => v,
        None => match lookup(key) {
            Some(v) => v,
            None => return Ok(None),
        },
    };
    if value.contains('\0') {
        return Err(invalid());
    }
    Ok(Some(format!("{key}={value}")))
}

/// The lines of an env file: `KEY=VALUE` or `KEY` (inherited); `#` comments and blank lines
/// are skipped.
pub fn parse_env_file(
    text: &str,
    origin: &Path,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ContainerError> {
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = parse_env(line, &lookup).map_err(|_| {
            ContainerError::InvalidInput(format!(
                "invalid environment variable in {} line {}: {line:?}",
                origin.display(),
                number + 1
            ))
        })?;
        out.extend(parsed);
    }
    Ok(out)
}

/// A bind mount from the host: `-v SRC:DST[:ro|rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub readonly: bool,
}

impl Volume {
    pub fn parse(spec: &str) -> Result<Volume, ContainerError> {
        let invalid = |why: &str| {
            ContainerError::InvalidInput(format!("invalid volume specification {spec:?}: {why}"))
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, destination, mode) = match parts.as_slice() {
            [s, d] => (*s, *d, ""),
            [s, d, m] => (*s, *d, *m),
            [_] => return Err(invalid("expected SOURCE:DESTINATION[:ro|rw]")),
            _ => return Err(invalid("too many ':'")),
        };
        if source.is_empty() {
            return Err(invalid("the host path is empty"));
        }
        if !source.starts_with('/') {
            return Err(invalid(
                "the host path must be absolute (named volumes are not supported)",
            ));
        }
        if !destination.starts_with('/') {
            return Err(invalid("the container path must be absolute"));
        }
        let destination = clean(Path::new(destination));
        if destination == Path::new("/") {
            return Err(invalid("the container path cannot be /"));
        }
        let mut readonly = false;
        for word in mode.split(',').filter(|w| !w.is_empty()) {
            match word {
                "ro" => readonly = true,
                "rw" => readonly = false,
                other => return Err(invalid(&format!("unknown mode {other:?}"))),
            }
        }
        Ok(Volume {
            source: clean(Path::new(source)),
            destination,
            readonly,
        })
    }
}

/// Rejects two volumes on the same container path (docker: "Duplicate mount point").
pub fn check_volumes(volumes: &[Volume]) -> Result<(), ContainerError> {
    for (i, a) in volumes.iter().enumerate() {
        if volumes[..i].iter().any(|b| b.destination == a.destination) {
            return Err(ContainerError::InvalidInput(format!(
                "invalid volume specification: duplicate mount point {}",
                a.destination.display()
            )));
        }
    }
    Ok(())
}

/// Lexically normalised absolute path (`/a/./b/../c` → `/a/c`); `..` never climbs above `/`.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// `--network`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// A network namespace with only `lo`.
    None,
    /// The host's network namespace.
    Host,
    /// A bridge network by name (`bridge` is the default one).
    Bridge(String),
}

impl NetworkMode {
    pub fn parse(value: &str) -> Result<NetworkMode, ContainerError> {
        match value {
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            "" => Err(ContainerError::InvalidInput(
                "--network needs a value".into(),
            )),
            other if other.contains(':') => Err(ContainerError::InvalidInput(format!(
                "network mode {other:?} is not supported: use none, host or a network name"
            ))),
            name => Ok(NetworkMode::Bridge(name.to_string())),
        }
    }

    /// How it is recorded: "none", "host" or the network's name.
    pub fn as_str(&self) -> &str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
            NetworkMode::Bridge(name) => name,
        }
    }

    /// Whether the container gets a network namespace of its own.
    pub fn isolated(&self) -> bool {
        !matches!(self, NetworkMode::Host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn env_entries() {
        assert_eq!(parse_env("A=1", no_env).unwrap(), Some("A=1".into()));
        assert_eq!(parse_env("A=", no_env).unwrap(), Some("A=".into()));
        assert_eq!(parse_env("A=b=c", no_env).unwrap(), Some("A=b=c".into()));
        assert_eq!(parse_env("A", no_env).unwrap(), None);
        assert_eq!(
            parse_env("A", |k| (k == "A").then(|| "from-host".to_string())).unwrap(),
            Some("A=from-host".into())
        );
        for bad in ["", "=x", " A=1"] {
            assert!(parse_env(bad, no_env).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn env_file_skips_comments_and_blank_lines() {
        let text = "# comment\n\nA=1\n  B=two words\nC\n";
        let got = parse_env_file(text, Path::new("f"), |k| (k == "C").then(|| "c".into())).unwrap();
        assert_eq!(got, ["A=1", "B=two words", "C=c"]);
        assert!(parse_env_file("=bad\n", Path::new("f"), no_env).is_err());
    }

    #[test]
    fn volumes() {
        assert_eq!(
            Volume::parse("/data:/srv/./x/:ro").unwrap(),
            Volume {
                source: "/data".into(),
                destination: "/srv/x".into(),
                readonly: true
            }
        );
        assert!(!Volume::parse("/a:/b:rw").unwrap().readonly);
        for bad in [
            "relative:/x",
            "/a:relative",
            "/a:/b:bogus",
            ":/b",
            "/a",
            "/a:/",
            "/a:/b:ro:x",
        ] {
            let err = Volume::parse(bad).unwrap_err().to_string();
            assert!(err.contains("invalid volume"), "{bad:?}: {err}");
        }
        let dup = [
            Volume::parse("/a:/x").unwrap(),
            Volume::parse("/b:/x/").unwrap(),
        ];
        assert!(check_volumes(&dup).is_err());
    }

    #[test]
    fn network_modes() {
        assert_eq!(NetworkMode::parse("none").unwrap(), NetworkMode::None);
        assert_eq!(NetworkMode::parse("host").unwrap(), NetworkMode::Host);
        assert_eq!(
            NetworkMode::parse("bridge").unwrap(),
            NetworkMode::Bridge("bridge".into())
        );
        assert_eq!(NetworkMode::parse("web").unwrap().as_str(), "web");
        assert!(NetworkMode::parse("container:abc").is_err());
        assert!(NetworkMode::parse("").is_err());
    }
}
