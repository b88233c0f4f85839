//! `carton rm`.

use std::path::Path;

use clap::Args;

use crate::container;
use crate::state::StateStore;

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill and remove a running container.
    #[arg(short, long)]
    force: bool,
    /// Containers: name, id or unique id prefix.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Removes each container; like docker, goes on after a failure and reports it at the end.
pub fn rm(root: &Path, args: RmArgs) -> anyhow::Result<i32> {
    let states = StateStore::new(root);
    let mut failed = false;
    for reference in &args.containers {
        match container::remove(&states, reference, args.force) {
            Ok(()) => println!("{reference}"),
            Err(e) => {
                eprintln!("carton: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { super::EXIT_CARTON_ERROR } else { 0 })
}
