//! OCI hooks: programs run at fixed points of a container's life with the container's state
//! JSON on their stdin. Who runs which: `prestart`/`createRuntime` — carton, in its own
//! namespaces, once the container's namespaces exist; `createContainer` — the init, in the
//! container's namespaces before pivot_root; `startContainer` — the init, inside the
//! container, right before the user's process; `poststart` and `poststop` — the runtime front
//! end, after start and after delete. The status in their state follows the point (as runc
//! gives it): "creating" for the three create-time points, "created" for startContainer (the
//! user's program has not run yet), "running" for poststart, "stopped" for poststop.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;
use serde::Serialize;

/// The state handed to hooks (the OCI `state` JSON).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HookState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: String,
    #[serde(skip_serializing_if = "std::collections::HashMap::is_empty")]
    pub annotations: std::collections::HashMap<String, String>,
}

/// Runs `hooks` in order; the first failure stops the sequence and is returned.
pub fn run(hooks: &[Hook], state: &HookState) -> Result<(), String> {
    let input = serde_json::to_vec(state).map_err(|e| e.to_string())?;
    for hook in hooks {
        run_one(hook, &input)?;
    }
    Ok(())
}

fn run_one(hook: &Hook, input: &[u8]) -> Result<(), String> {
    let path = hook.path();
    let shown = path.display().to_string();
    let mut cmd = Command::new(path);
    // args[0] is the program's argv[0], as exec(3) takes it.
    if let Some(args) = hook.args() {
        if let Some((first, rest)) = args.split_first() {
            std::os::unix::process::CommandExt::arg0(&mut cmd, first);
            cmd.args(rest);
        }
    }
    cmd.env_clear();
    for entry in hook.env().iter().flatten() {
        if let Some((k, v)) = entry.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("hook {shown}: cannot run it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin may close it early: not an error.
        let _ = stdin.write_all(input);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                }
                return Err(format!("hook {shown} failed ({status}): {}", err.trim()));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("hook {shown}: {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("hook {shown} timed out"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: &str) -> Hook {
        serde_json::from_str(json).unwrap()
    }

    fn state() -> HookState {
        HookState {
            oci_version: "1.2.0".into(),
            id: "c1".into(),
            status: "creating".into(),
            pid: Some(42),
            bundle: "/b".into(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn hooks_get_the_state_and_their_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let h = hook(&format!(
            r#"{{"path": "/bin/sh", "args": ["sh", "-c", "cat > {} && echo $MARK >> {}"], "env": ["MARK=here"]}}"#,
            out.display(),
            out.display()
        ));
        run(&[h], &state()).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            text.contains(r#""id":"c1""#) && text.contains(r#""pid":42"#),
            "{text}"
        );
        assert!(text.ends_with("here\n"));
    }

    #[test]
    fn failures_and_timeouts_are_errors() {
        let fail = hook(r#"{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}"#);
        let err = run(&[fail], &state()).unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let slow = hook(r#"{"path": "/bin/sh", "args": ["sh", "-c", "sleep 5"], "timeout": 1}"#);
        assert!(run(&[slow], &state()).unwrap_err().contains("timed out"));
        let missing = hook(r#"{"path": "/no/such/hook"}"#);
        assert!(run(&[missing], &state()).is_err());
    }
}
