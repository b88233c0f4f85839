//! carton: a daemonless container runtime.
//!
//! The crate is split by concept (see ARCHITECTURE.md):
//! - [`cgroups`]: one cgroup per container, v1 and v2 backends behind one trait.
//! - [`cli`]: the docker-style command line; the only place that prints or uses `anyhow`.
//! - [`container`]: what `run`/`rm`/`ps` do with containers: records + image + storage + spec.
//! - [`engine`]: OCI runtime spec in, isolated running process out.
//! - [`image`]: the content-addressed image store (OCI image layout).
//! - [`storage`]: per-container overlay directories.
//! - [`state`]: container records, locking, atomic writes.

pub mod cgroups;
pub mod cli;
pub mod container;
pub mod engine;
pub mod image;
pub mod network;
pub mod oci;
pub mod state;
pub mod storage;
