//! Image references: `[registry[:port]/]path[:tag]`, validated with docker's grammar and
//! normalised to always carry a tag, plus the id forms that `resolve` accepts.
//!
//! Names are kept as written (no implicit `docker.io/library/` prefix): carton has no registry
//! yet, so `busybox` and `docker.io/library/busybox` are simply different local names.

use super::ImageError;

const DEFAULT_TAG: &str = "latest";
/// docker refuses longer repository names (the limit comes from the distribution grammar).
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Validates `reference` and returns it as `name:tag` (`busybox` → `busybox:latest`).
pub fn normalize_reference(reference: &str) -> Result<String, ImageError> {
    let invalid = |reason: &str| ImageError::InvalidReference {
        reference: reference.to_string(),
        reason: reason.to_string(),
    };
    if reference.is_empty() {
        return Err(invalid("the reference is empty"));
    }
    if reference.contains('@') {
        return Err(invalid(
            "digest references (name@sha256:…) are not supported",
        ));
    }
    // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match reference[last_slash..].rfind(':') {
        Some(i) => (
            &reference[..last_slash + i],
            Some(&reference[last_slash + i + 1..]),
        ),
        None => (reference, None),
    };
    if let Some(tag) = tag {
        check_tag(tag).map_err(|r| invalid(&r))?;
    }
    check_name(name).map_err(|r| invalid(&r))?;
    if tag.is_none() && is_full_hex_id(name) {
        return Err(invalid(
            "a 64-character hexadecimal string is an image id, not a repository name",
        ));
    }
    Ok(format!("{name}:{}", tag.unwrap_or(DEFAULT_TAG)))
}

fn check_tag(tag: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-';
    let first_ok = tag
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok || !tag.chars().all(valid_char) || tag.len() > MAX_TAG_LEN {
        return Err(format!(
            "tag {tag:?} must be 1 to {MAX_TAG_LEN} characters of [A-Za-z0-9_.-], not starting with '.' or '-'"
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the repository name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the repository name is longer than {MAX_NAME_LEN} characters"
        ));
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // The first component names a registry when it looks like a host: docker's rule.
    if components.len() > 1 {
        let first = components[0];
        let is_host = first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase());
        if is_host {
            check_registry(first)?;
            components.remove(0);
        }
    }
    for component in components {
        check_path_component(component)?;
    }
    Ok(())
}

/// `host[:port]` where host is dot-separated labels of letters, digits and inner dashes.
fn check_registry(registry: &str) -> Result<(), String> {
    let err = || format!("registry {registry:?} is not a valid host[:port]");
    let (host, port) = match registry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !host.split('.').all(label_ok) {
        return Err(err());
    }
    if let Some(port) = port {
        if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
    }
    Ok(())
}

/// `[a-z0-9]+` runs joined by one separator each: `.`, `_`, `__`, or any number of `-`.
fn check_path_component(component: &str) -> Result<(), String> {
    if component.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".into());
    }
    let err = || {
        format!(
            "repository name component {component:?} must be lowercase letters and digits separated by '.', '_', '__' or '-'"
        )
    };
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return Err(err());
        }
        if i == bytes.len() {
            return Ok(());
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[sep_start..i];
        let sep_ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !sep_ok {
            return Err(err());
        }
    }
}

/// How a string names an image by id, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdQuery {
    /// The complete 64-hex digest (with or without `sha256:`).
    Full(String),
    /// A hex prefix of the digest (with or without `sha256:`).
    Prefix(String),
}

/// Recognises `sha256:<hex>`, `<64 hex>` and hex prefixes. Only lowercase hex matches, as
/// digests are always written in lowercase.
pub(crate) fn parse_id(reference: &str) -> Option<IdQuery> {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    let is_hex = !hex.is_empty()
        && hex.len() <= 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match (is_hex, hex.len()) {
        (false, _) => None,
        (true, 64) => Some(IdQuery::Full(hex.to_string())),
        (true, _) => Some(IdQuery::Prefix(hex.to_string())),
    }
}

fn is_full_hex_id(s: &str) -> bool {
    matches!(parse_id(s), Some(IdQuery::Full(_))) && !s.starts_with("sha256:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalises() {
        let cases = [
            ("busybox", "busybox:latest"),
            ("busybox:1.36", "busybox:1.36"),
            ("library/busybox", "library/busybox:latest"),
            ("my-app_x.y__z", "my-app_x.y__z:latest"),
            ("a--b/c", "a--b/c:latest"),
            ("localhost/app:v1", "localhost/app:v1"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            (
                "registry.example.com:443/team/app:2.0-rc_1",
                "registry.example.com:443/team/app:2.0-rc_1",
            ),
            ("Registry.Example/app", "Registry.Example/app:latest"),
            ("app:_underscore", "app:_underscore"),
            ("app:V1.0", "app:V1.0"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_reference(input).unwrap(), want, "{input}");
        }
        let long_tag = "t".repeat(128);
        assert!(normalize_reference(&format!("app:{long_tag}")).is_ok());
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            "",
            "Busybox",
            "busybox:",
            "busybox:.hidden",
            "busybox:-dash",
            "busybox:a/b",
            "busy box",
            "busybox@sha256:abcd",
            "-app",
            "app-",
            "a..b",
            "a___b",
            "/app",
            "app/",
            "a//b",
            "bad_host:/app",
            "host:port/app",
            "app:tag:more",
        ];
        for input in cases {
            let err = normalize_reference(input).unwrap_err();
            assert!(
                matches!(err, ImageError::InvalidReference { .. }),
                "{input}: {err}"
            );
        }
        assert!(normalize_reference(&format!("app:{}", "t".repeat(129))).is_err());
        assert!(normalize_reference(&"a".repeat(256)).is_err());
        assert!(normalize_reference(&"z".repeat(64)).is_ok());
        let hex64 = "0123456789abcdef".repeat(4);
        let err = normalize_reference(&hex64).unwrap_err().to_string();
        assert!(err.contains("image id"), "{err}");
        assert!(
            normalize_reference("Busybox")
                .unwrap_err()
                .to_string()
                .contains("lowercase")
        );
    }

    #[test]
    fn id_forms() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_id(&hex), Some(IdQuery::Full(hex.clone())));
        assert_eq!(
            parse_id(&format!("sha256:{hex}")),
            Some(IdQuery::Full(hex.clone()))
        );
        assert_eq!(parse_id("abc"), Some(IdQuery::Prefix("abc".into())));
        assert_eq!(parse_id("sha256:abc"), Some(IdQuery::Prefix("abc".into())));
        assert_eq!(parse_id("busybox"), None);
        assert_eq!(parse_id("ABC"), None);
        assert_eq!(parse_id("sha256:"), None);
        assert_eq!(parse_id(&format!("{hex}0")), None);
    }
}
