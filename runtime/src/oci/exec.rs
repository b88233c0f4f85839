//! `exec`: a process in a running container — from `--process FILE` (an OCI process JSON, what
//! conmon and containerd pass) or from arguments with runc's flags.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Process, Spec};

use super::state::{Status, Store};
use super::{OciError, console};
use crate::engine::{self, Attach, StartEvents, Stdio, ToCartonStdio};

#[derive(Debug, Clone, Default)]
pub struct ExecArgs {
    pub id: String,
    pub process: Option<PathBuf>,
    pub args: Vec<String>,
    pub tty: bool,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<String>,
    pub user: Option<String>,
}

struct ExecEvents<'a> {
    console_socket: Option<&'a Path>,
    /// The process's `consoleSize` (height, width).
    console_size: Option<(u64, u64)>,
}

impl StartEvents for ExecEvents<'_> {
    fn console(&mut self, master: &std::os::fd::OwnedFd) -> Result<(), String> {
        match self.console_socket {
            Some(socket) => {
                if let Some(size) = self.console_size {
                    console::set_size(master, size);
                }
                console::send(socket, master)
                    .map_err(|e| format!("console socket {}: {e}", socket.display()))
            }
            None => engine::SizeConsole.console(master),
        }
    }
}

/// The spec's environment with each `--env K=V` replacing the variable `K` where it is (runc
/// does the same), or added at the end: one value per name reaches the process.
fn with_overrides(mut env: Vec<String>, overrides: &[String]) -> Vec<String> {
    for entry in overrides {
        let name = entry
            .split_once('=')
            .map_or(entry.as_str(), |(name, _)| name);
        let same = |e: &String| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == name;
        match env.iter().position(same) {
            Some(at) => {
                env[at] = entry.clone();
                // Later duplicates in the spec itself would still win over the override.
                let mut i = at + 1;
                while i < env.len() {
                    if same(&env[i]) {
                        env.remove(i);
                    } else {
                        i += 1;
                    }
                }
            }
            None => env.push(entry.clone()),
        }
    }
    env
}

/// Starts the process; returns its exit code, or 0 at once with `--detach`.
pub fn exec(store: &Store, args: &ExecArgs) -> Result<i32, OciError> {
    let record = store.load(&args.id)?;
    let status = store.status(&record);
    if status != Status::Running {
        return Err(OciError::BadStatus {
            id: args.id.clone(),
            status: status.as_str(),
            what: "exec needs a running container".into(),
        });
    }
    let spec: Spec = super::create::load_config(&record.bundle)?;
    let mut process: Process = match &args.process {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| {
                OciError::InvalidConfig(format!("--process {}: {e}", path.display()))
            })?;
            serde_json::from_slice(&bytes).map_err(|e| {
                OciError::InvalidConfig(format!(
                    "--process {} is not a process: {e}",
                    path.display()
                ))
            })?
        }
        None => {
            if args.args.is_empty() {
                return Err(OciError::InvalidConfig(
                    "exec needs a command or --process".into(),
                ));
            }
            let mut p = spec.process().clone().unwrap_or_default();
            p.set_args(Some(args.args.clone()));
            p.set_terminal(Some(args.tty));
            if let Some(cwd) = &args.cwd {
                p.set_cwd(cwd.clone());
            }
            if !args.env.is_empty() {
                let env = with_overrides(p.env().clone().unwrap_or_default(), &args.env);
                p.set_env(Some(env));
            }
            if let Some(user) = &args.user {
                let parse = |v: &str| {
                    v.parse::<u32>().map_err(|_| {
                        OciError::InvalidConfig(format!("--user {user}: numeric uid[:gid]"))
                    })
                };
                // As runc: without :GID the process keeps the group of the container's.
                let (uid, gid) = match user.split_once(':') {
                    Some((uid, gid)) => (uid, Some(gid)),
                    None => (user.as_str(), None),
                };
                p.user_mut().set_uid(parse(uid)?);
                if let Some(gid) = gid {
                    p.user_mut().set_gid(parse(gid)?);
                }
            }
            p
        }
    };
    if args.tty {
        process.set_terminal(Some(true));
    }
    let terminal = process.terminal().unwrap_or(false);
    let stdio = if args.detach && !terminal {
        // conmon hands the exec'd process its stdio as ours.
        Stdio::Inherit { stdin: true }
    } else if terminal {
        Stdio::Terminal
    } else {
        Stdio::Inherit { stdin: true }
    };
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let mut started = engine::exec_with(
        record.pid,
        &process,
        seccomp,
        record.cgroup_path.as_deref(),
        stdio,
        args.detach,
        &mut ExecEvents {
            console_socket: args.console_socket.as_deref(),
            console_size: process.console_size().map(|b| (b.height(), b.width())),
        },
    )?;
    if let Some(path) = &args.pid_file {
        super::create::write_pid_file(path, started.pid.as_raw())?;
    }
    if args.detach {
        return Ok(0);
    }
    if args.console_socket.is_some() {
        // The terminal is the receiver's: reading its master here would take the output.
        started.console = None;
    }
    let attach = Attach {
        stdin: terminal && args.console_socket.is_none(),
    };
    Ok(engine::foreground::wait(started, attach, &mut ToCartonStdio)?.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_replace_in_place() {
        let spec = vec![
            "PATH=/bin".to_string(),
            "TERM=xterm".into(),
            "A=1".into(),
            "TERM=vt100".into(),
        ];
        let env = with_overrides(spec, &["TERM=dumb".into(), "NEW=x".into(), "A=2".into()]);
        assert_eq!(env, ["PATH=/bin", "TERM=dumb", "A=2", "NEW=x"]);
    }
}
