//! Container names: validation (docker's alphabet) and generated `adjective_animal` names.

const ADJECTIVES: &[&str] = &[
    "amber", "bold", "brisk", "calm", "clever", "cosmic", "dapper", "eager", "fuzzy", "gentle",
    "glad", "golden", "hardy", "humble", "jolly", "keen", "lively", "lucid", "mellow", "nimble",
    "noble", "plucky", "polite", "quiet", "rapid", "rustic", "serene", "shiny", "silent", "snug",
    "spry", "steady", "sunny", "swift", "tidy", "upbeat", "vivid", "wise", "witty", "zesty",
];

const ANIMALS: &[&str] = &[
    "badger", "beaver", "bison", "crane", "dingo", "falcon", "ferret", "gecko", "heron", "ibex",
    "jackal", "koala", "lemur", "lynx", "marmot", "mole", "narwhal", "ocelot", "orca", "otter",
    "panda", "pelican", "puffin", "quokka", "raven", "salmon", "seal", "shrew", "sloth", "stoat",
    "tapir", "toucan", "turtle", "vole", "walrus", "weasel", "wombat", "yak", "zebra", "finch",
];

/// A random name such as `brisk_otter`; the caller checks it is free.
pub fn generate_name() -> String {
    let mut bytes = [0u8; 4];
    super::fill_random(&mut bytes);
    let a = u16::from_le_bytes([bytes[0], bytes[1]]) as usize % ADJECTIVES.len();
    let b = u16::from_le_bytes([bytes[2], bytes[3]]) as usize % ANIMALS.len();
    format!("{}_{}", ADJECTIVES[a], ANIMALS[b])
}

/// docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`. A leading `/` (docker's own spelling) is accepted
/// and dropped.
pub fn validate_name(name: &str) -> Result<&str, String> {
    let name = name.strip_prefix('/').unwrap_or(name);
    let mut chars = name.chars();
    let valid = match chars.next() {
        Some(first) if first.is_ascii_alphanumeric() => {
            name.len() >= 2
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        }
        _ => false,
    };
    if valid {
        Ok(name)
    } else {
        Err(format!(
            "invalid container name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-]+ are allowed"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid() {
        for _ in 0..50 {
            let n = generate_name();
            assert_eq!(validate_name(&n), Ok(n.as_str()));
        }
    }

    #[test]
    fn validates_docker_alphabet() {
        assert_eq!(validate_name("/web-1.a_b"), Ok("web-1.a_b"));
        for bad in ["", "a", "-x", "_x", "a b", "a/b", "ü1", "../x"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
