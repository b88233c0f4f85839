//! What carton does with containers, between the CLI and the engine: create one from an image
//! (record, storage, spec), run it in the foreground, list and remove containers.
//!
//! - [`options`]: parsing of env, volumes, network flags;
//! - [`user`]: `-u` resolution against the image's passwd/group;
//! - [`etc_files`]: per-container hostname, hosts, resolv.conf;
//! - [`spec`]: the OCI spec built from all of the above;
//! - [`create`], [`run`], [`remove`]: the lifecycle steps.

mod commit;
mod create;
pub mod etc_files;
mod exec;
mod export;
mod image_files;
mod inspect;
pub mod lifecycle;
pub mod limits;
pub mod logs;
pub mod options;
mod remove;
mod run;
pub mod security;
pub mod spec;
pub mod stats;
mod update;
pub mod user;

pub use commit::{CommitOptions, commit};
pub use create::{CreateRequest, Created, cgroup_path, create};
pub use exec::{ExecRequest, exec};
pub use export::export;
pub use inspect::inspect;
pub use options::{NetworkMode, Volume};
pub use remove::{list, remove, remove_image};
pub use run::{RunMode, run_detached, run_foreground};
pub use update::update;

use crate::engine::EngineError;
use crate::image::ImageError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A flag or argument that cannot be honoured (bad volume, env, name…).
    #[error("{0}")]
    InvalidInput(String),
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse { name: String, id: String },
    #[error(
        "You cannot remove a running container {0}. Stop the container before attempting removal or force remove"
    )]
    Running(String),
    #[error(
        "conflict: unable to remove image {image} - container {container} is using its referenced image {image_id}"
    )]
    ImageInUse {
        image: String,
        container: String,
        image_id: String,
    },
    #[error("no command specified: the image has no CMD or ENTRYPOINT and none was given")]
    NoCommand,
    /// The detached container's supervisor could not start it.
    #[error("{message}")]
    StartFailed { message: String, exit_code: i32 },
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("building the runtime spec: {0}")]
    Spec(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl ContainerError {
    /// docker's exit codes: 126/127 when the command cannot run, 125 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            ContainerError::Engine(e) => e.exit_code(),
            ContainerError::StartFailed { exit_code, .. } => *exit_code,
            _ => 125,
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
        move |source| ContainerError::Io {
            context: context.into(),
            source,
        }
    }
}
