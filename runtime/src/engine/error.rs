//! Errors of the engine. A failure inside the container's init travels back to the parent as an
//! [`InitFailure`] (over the sync channel) so the user sees which step failed and why.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;

/// What the child reports when a step of the container set-up fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitFailure {
    /// The step that failed, e.g. `mount /proc` or `exec`.
    pub step: String,
    /// Human-readable detail (paths, values).
    pub message: String,
    /// The errno behind the failure, if any.
    pub errno: Option<i32>,
    /// What carton exits with: 127 command not found, 126 cannot execute, 125 anything else.
    pub exit_code: i32,
}

impl fmt::Display for InitFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // exec failures already read like docker's ("exec: \"x\": executable file not found").
        if self.step == "exec" {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.step, self.message)?;
        }
        if let Some(errno) = self.errno {
            write!(f, ": {}", io::Error::from_raw_os_error(errno))?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Init(InitFailure),
    #[error("invalid runtime spec: {0}")]
    InvalidSpec(String),
    #[error("unsupported in runtime spec: {0}")]
    Unsupported(String),
    #[error("container init exited before it was ready ({0})")]
    InitDied(String),
    #[error("setting up the container from the host failed: {0}")]
    Setup(String),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Seccomp(#[from] super::seccomp::SeccompError),
    #[error("{context}: {source}")]
    Os {
        context: &'static str,
        source: io::Error,
    },
}

impl EngineError {
    /// The exit code carton returns for this error: 126/127 for a command that cannot be
    /// run, 125 for everything that is carton's own failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Init(failure) => failure.exit_code,
            _ => 125,
        }
    }

    pub(crate) fn os(context: &'static str) -> impl FnOnce(io::Error) -> EngineError {
        move |source| EngineError::Os { context, source }
    }

    pub(crate) fn last_os(context: &'static str) -> EngineError {
        EngineError::Os {
            context,
            source: io::Error::last_os_error(),
        }
    }
}
