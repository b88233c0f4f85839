//! `--change` instructions (as `docker import --change` and `docker commit --change` take them)
//! applied to an image config: the Dockerfile instructions that only touch metadata.
//!
//! Supported: CMD, ENTRYPOINT (JSON exec form, or shell form run by `/bin/sh -c`), ENV (`K=V …`
//! or legacy `K value`), LABEL (`k=v …`), WORKDIR (relative paths join the previous one), USER,
//! EXPOSE (`port[/proto]`, ranges), VOLUME (JSON array or words), STOPSIGNAL. No variable
//! expansion is done: values are taken literally after quote removal.

use super::ImageError;
use oci_spec::image::{Config, ImageConfiguration};

/// Applies each instruction in order to `image.config` (created if absent). As in a
/// Dockerfile, a new ENTRYPOINT drops the CMD the image had, unless these changes set a CMD
/// too: an inherited CMD was written as arguments for the old entrypoint.
pub fn apply_changes(image: &mut ImageConfiguration, changes: &[String]) -> Result<(), ImageError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut config = image.config().clone().unwrap_or_default();
    let mut cmd_set = false;
    let mut entrypoint_set = false;
    for change in changes {
        match apply_one(&mut config, change)? {
            "CMD" => cmd_set = true,
            "ENTRYPOINT" => entrypoint_set = true,
            _ => {}
        }
    }
    if entrypoint_set && !cmd_set {
        config.set_cmd(None);
    }
    image.set_config(Some(config));
    Ok(())
}

/// Applies one instruction; returns its name (upper case).
fn apply_one(config: &mut Config, change: &str) -> Result<&'static str, ImageError> {
    let invalid = |reason: String| ImageError::InvalidChange {
        change: change.to_string(),
        reason,
    };
    let trimmed = change.trim();
    let (instruction, args) = match trimmed.split_once(char::is_whitespace) {
        Some((instruction, args)) => (instruction, args.trim()),
        None => (trimmed, ""),
    };
    let instruction = instruction.to_ascii_uppercase();
    if instruction.is_empty() {
        return Err(invalid("empty instruction".into()));
    }
    let known = [
        "CMD",
        "ENTRYPOINT",
        "ENV",
        "LABEL",
        "WORKDIR",
        "USER",
        "EXPOSE",
        "VOLUME",
        "STOPSIGNAL",
    ];
    let Some(instruction) = known.into_iter().find(|k| *k == instruction) else {
        return Err(invalid(format!(
            "{instruction} is not a supported change instruction (supported: {})",
            known.join(", ")
        )));
    };
    if args.is_empty() {
        return Err(invalid(format!("{instruction} requires an argument")));
    }
    match instruction {
        "CMD" => {
            config.set_cmd(Some(command(args)));
        }
        "ENTRYPOINT" => {
            config.set_entrypoint(Some(command(args)));
        }
        "ENV" => {
            let mut env = config.env().clone().unwrap_or_default();
            for (key, value) in key_values(args, true).map_err(invalid)? {
                let prefix = format!("{key}=");
                env.retain(|e| !e.starts_with(&prefix));
                env.push(format!("{key}={value}"));
            }
            config.set_env(Some(env));
        }
        "LABEL" => {
            let mut labels = config.labels().clone().unwrap_or_default();
            for (key, value) in key_values(args, false).map_err(invalid)? {
                labels.insert(key, value);
            }
            config.set_labels(Some(labels));
        }
        "WORKDIR" => {
            let dir = if args.starts_with('/') {
                args.to_string()
            } else {
                let base = config.working_dir().clone().unwrap_or_else(|| "/".into());
                format!("{}/{args}", base.trim_end_matches('/'))
            };
            config.set_working_dir(Some(dir));
        }
        "USER" => {
            if args.contains(char::is_whitespace) {
                return Err(invalid("USER takes one user[:group]".into()));
            }
            config.set_user(Some(args.to_string()));
        }
        "EXPOSE" => {
            let mut ports = config.exposed_ports().clone().unwrap_or_default();
            for word in args.split_whitespace() {
                for port in exposed_ports(word).map_err(invalid)? {
                    if !ports.contains(&port) {
                        ports.push(port);
                    }
                }
            }
            config.set_exposed_ports(Some(ports));
        }
        "VOLUME" => {
            let mut volumes = config.volumes().clone().unwrap_or_default();
            let new: Vec<String> = match json_array(args) {
                Some(list) => list,
                None => args.split_whitespace().map(str::to_string).collect(),
            };
            if new.iter().any(|v| v.is_empty()) {
                return Err(invalid("VOLUME paths must not be empty".into()));
            }
            for volume in new {
                if !volumes.contains(&volume) {
                    volumes.push(volume);
                }
            }
            config.set_volumes(Some(volumes));
        }
        "STOPSIGNAL" => {
            if args.contains(char::is_whitespace) {
                return Err(invalid("STOPSIGNAL takes one signal".into()));
            }
            config.set_stop_signal(Some(args.to_string()));
        }
        _ => unreachable!("instruction checked against the list above"),
    }
    Ok(instruction)
}

/// Exec form when the arguments are a JSON array of strings; otherwise, like a Dockerfile,
/// the shell form (which is also what a malformed JSON array turns into).
fn command(args: &str) -> Vec<String> {
    json_array(args).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), args.to_string()])
}

fn json_array(args: &str) -> Option<Vec<String>> {
    if !args.starts_with('[') {
        return None;
    }
    serde_json::from_str(args).ok()
}

/// `k=v k2="v 2"`; with `legacy`, also `key the rest of the line` (ENV's old form).
fn key_values(args: &str, legacy: bool) -> Result<Vec<(String, String)>, String> {
    let words = shell_words(args)?;
    let first_has_eq = words.first().is_some_and(|w| w.contains('='));
    if legacy && !first_has_eq {
        let (key, value) = args
            .split_once(char::is_whitespace)
            .ok_or_else(|| "expects KEY=VALUE or KEY VALUE".to_string())?;
        return Ok(vec![(key.to_string(), value.trim().to_string())]);
    }
    words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => Err(format!("{word:?} is not KEY=VALUE")),
        })
        .collect()
}

/// Splits on unquoted whitespace, removing quotes and backslash escapes (not inside '…').
fn shell_words(args: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = args.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => word.push(c),
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `80`, `80/tcp`, `53/udp`, `8000-8002/tcp` → `["8000/tcp", "8001/tcp", "8002/tcp"]`.
fn exposed_ports(word: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match word.split_once('/') {
        Some((ports, proto)) => (ports, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
        return Err(format!("unknown protocol in {word:?} (tcp, udp or sctp)"));
    }
    let port = |s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("invalid port {s:?} in {word:?}"))
    };
    let (low, high) = match ports.split_once('-') {
        Some((low, high)) => (port(low)?, port(high)?),
        None => (port(ports)?, port(ports)?),
    };
    if low > high {
        return Err(format!("invalid port range {ports:?}"));
    }
    Ok((low..=high).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(changes: &[&str]) -> Result<Config, ImageError> {
        let mut image = ImageConfiguration::default();
        let changes: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
        apply_changes(&mut image, &changes)?;
        Ok(image.config().clone().unwrap_or_default())
    }

    fn strings(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn cmd_and_entrypoint_forms() {
        let c = apply(&[
            r#"CMD ["/bin/echo", "hi there"]"#,
            "ENTRYPOINT /init --verbose",
        ])
        .unwrap();
        assert_eq!(c.cmd(), &strings(&["/bin/echo", "hi there"]));
        assert_eq!(
            c.entrypoint(),
            &strings(&["/bin/sh", "-c", "/init --verbose"])
        );
        // Not valid JSON: a Dockerfile falls back to the shell form, so do we.
        let c = apply(&["cmd [not json"]).unwrap();
        assert_eq!(c.cmd(), &strings(&["/bin/sh", "-c", "[not json"]));
        let c = apply(&["ENTRYPOINT []"]).unwrap();
        assert_eq!(c.entrypoint(), &Some(vec![]));
    }

    #[test]
    fn a_new_entrypoint_drops_the_inherited_cmd_unless_a_cmd_comes_with_it() {
        let mut base = ImageConfiguration::default();
        apply_changes(&mut base, &[r#"CMD ["sh"]"#.to_string()]).unwrap();
        let with = |changes: &[&str]| {
            let mut image = base.clone();
            let changes: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
            apply_changes(&mut image, &changes).unwrap();
            image.config().clone().unwrap_or_default()
        };
        let c = with(&[r#"ENTRYPOINT ["echo"]"#]);
        assert_eq!(c.cmd(), &None, "sh was an argument for the old entrypoint");
        let c = with(&[r#"CMD ["hi"]"#, r#"ENTRYPOINT ["echo"]"#]);
        assert_eq!(
            c.cmd(),
            &strings(&["hi"]),
            "a CMD of the same changes stays"
        );
        let c = with(&[r#"ENTRYPOINT ["echo"]"#, r#"CMD ["hi"]"#]);
        assert_eq!(c.cmd(), &strings(&["hi"]));
        let c = with(&["ENV A=1"]);
        assert_eq!(c.cmd(), &strings(&["sh"]), "other changes keep the CMD");
    }

    #[test]
    fn env_both_forms_and_replacement() {
        let c = apply(&[
            "ENV A=1 B=\"two words\" C='x y'",
            "ENV PATH /usr/bin:/bin",
            "ENV A=3",
            r"ENV D=a\ b",
        ])
        .unwrap();
        assert_eq!(
            c.env(),
            &strings(&["B=two words", "C=x y", "PATH=/usr/bin:/bin", "A=3", "D=a b"])
        );
        let c = apply(&["ENV GREETING hello  world"]).unwrap();
        assert_eq!(c.env(), &strings(&["GREETING=hello  world"]));
    }

    #[test]
    fn workdir_user_label_expose_volume_stopsignal() {
        let c = apply(&[
            "WORKDIR /app",
            "WORKDIR src",
            "USER 1000:1000",
            "LABEL maintainer=\"me <me@example.com>\" version=1",
            "EXPOSE 80 53/udp 9000-9001",
            r#"VOLUME ["/data"]"#,
            "VOLUME /logs /cache",
            "STOPSIGNAL SIGTERM",
        ])
        .unwrap();
        assert_eq!(c.working_dir().as_deref(), Some("/app/src"));
        assert_eq!(c.user().as_deref(), Some("1000:1000"));
        let labels = c.labels().clone().unwrap();
        assert_eq!(labels["maintainer"], "me <me@example.com>");
        assert_eq!(labels["version"], "1");
        assert_eq!(
            c.exposed_ports(),
            &strings(&["80/tcp", "53/udp", "9000/tcp", "9001/tcp"])
        );
        assert_eq!(c.volumes(), &strings(&["/data", "/logs", "/cache"]));
        assert_eq!(c.stop_signal().as_deref(), Some("SIGTERM"));
        let c = apply(&["WORKDIR rel"]).unwrap();
        assert_eq!(c.working_dir().as_deref(), Some("/rel"));
    }

    #[test]
    fn bad_instructions_are_errors() {
        for bad in [
            "RUN echo hi",
            "FROMAGE x",
            "",
            "CMD",
            "ENV",
            "ENV =x",
            "ENV justakey",
            "LABEL novalue",
            "EXPOSE 0",
            "EXPOSE 70000",
            "EXPOSE 80/icmp",
            "EXPOSE 90-80",
            "USER a b",
            "ENV A=\"unterminated",
        ] {
            let err = apply(&[bad]).unwrap_err();
            assert!(
                matches!(err, ImageError::InvalidChange { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn no_changes_leave_config_untouched() {
        let mut image = ImageConfiguration::default();
        apply_changes(&mut image, &[]).unwrap();
        assert!(image.config().is_none());
    }
}
