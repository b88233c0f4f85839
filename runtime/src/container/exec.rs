//! `exec`: a new process in a running container — its namespaces, its cgroup, its
//! environment, user and working directory unless overridden.

use std::path::{Path, PathBuf};

use super::update::read_spec;
use super::{ContainerError, image_files, spec, user};
use crate::engine::{self, Attach, Stdio, ToCartonStdio};
use crate::state::StateStore;

/// What `exec` was asked for.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub container: String,
    pub command: Vec<String>,
    /// `KEY=VALUE` entries added to the container's environment.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub terminal: bool,
    pub interactive: bool,
    pub detach: bool,
}

/// Runs the command; returns its exit code (0 at once for `detach`).
pub fn exec(states: &StateStore, request: &ExecRequest) -> Result<i32, ContainerError> {
    let record = states.resolve(&request.container)?;
    let (true, Some(pid)) = (record.process_alive(), record.pid) else {
        return Err(ContainerError::NotRunning(request.container.clone()));
    };
    let spec = read_spec(&states.container_dir(&record.id).join("config.json"))?;
    let mut process = spec.process().clone().unwrap_or_default();

    let hostname = spec.hostname().clone().unwrap_or_default();
    let env = spec::compose_env(
        &process.env().clone().unwrap_or_default(),
        &hostname,
        "/",
        request.terminal,
        &request.env,
    );
    process.set_env(Some(env));
    process.set_args(Some(request.command.clone()));
    process.set_terminal(Some(request.terminal));
    if let Some(dir) = &request.workdir {
        if !dir.starts_with('/') {
            return Err(ContainerError::InvalidInput(format!(
                "the working directory {dir:?} is invalid, it needs to be an absolute path"
            )));
        }
        process.set_cwd(PathBuf::from(dir));
    }
    if let Some(spec_user) = &request.user {
        // Names resolve against the container's own files, as they are now.
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let passwd = image_files::read_in(&root, Path::new("/etc/passwd")).unwrap_or_default();
        let group = image_files::read_in(&root, Path::new("/etc/group")).unwrap_or_default();
        let resolved = user::resolve(spec_user, &passwd, &group)?;
        let u = process.user_mut();
        u.set_uid(resolved.uid);
        u.set_gid(resolved.gid);
        u.set_additional_gids(Some(resolved.additional_gids));
    }

    let cgroup_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned());
    let stdio = if request.detach {
        Stdio::Null
    } else if request.terminal {
        Stdio::Terminal
    } else {
        Stdio::Inherit {
            stdin: request.interactive,
        }
    };
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let started = engine::exec(
        pid,
        &process,
        seccomp,
        cgroup_path.as_deref(),
        stdio,
        request.detach,
    )?;
    if request.detach {
        return Ok(0);
    }
    let status = engine::foreground::wait(
        started,
        Attach {
            stdin: request.interactive,
        },
        &mut ToCartonStdio,
    )?;
    Ok(status.code)
}
