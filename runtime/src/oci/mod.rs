//! carton-runtime: the runc command line over carton's engine, so that podman (through
//! conmon) and containerd (through its runc shim) can run containers with carton.
//!
//! - `cli` — runc's flags and commands, `--log` / `--log-format`;
//! - `state` — `<root>/<id>/state.json` and the derived OCI status;
//! - `create` — `create` and `run`: the init left waiting on its exec FIFO;
//! - `lifecycle` — `start`, `state`, `kill`, `delete`, `pause`, `resume`, `ps`, `list`, `update`;
//! - `exec` — a process in a running container, from `--process` or arguments;
//! - `console` — handing a pty master to `--console-socket`;
//! - `template` — `spec` (a default config.json) and `features`.

pub mod cli;
mod console;
mod create;
mod exec;
mod lifecycle;
pub mod state;
mod template;

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("container with id {0} already exists")]
    Exists(String),
    #[error("invalid container id {0:?}: use letters, digits and _ - . +")]
    InvalidId(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("container {id} is {status}: {what}")]
    BadStatus {
        id: String,
        status: &'static str,
        what: String,
    },
    #[error("state of a container is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    SealedExe(#[from] crate::engine::sealed_exe::SealedExeError),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

impl OciError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> OciError {
        move |source| OciError::Io {
            context: context.into(),
            source,
        }
    }
}
