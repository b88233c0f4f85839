//! `carton update`.

use std::path::Path;

use clap::Args;

use super::limits::LimitArgs;
use crate::container;
use crate::state::StateStore;

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    limits: LimitArgs,
    /// Containers: name, id or unique id prefix.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn update(root: &Path, args: UpdateArgs) -> anyhow::Result<i32> {
    if args.limits.is_empty() {
        anyhow::bail!("you must provide one or more flags when using this command");
    }
    let states = StateStore::new(root);
    let flags = args.limits.flags();
    let mut failed = false;
    for reference in &args.containers {
        match container::update(&states, reference, &flags) {
            Ok(_) => println!("{reference}"),
            Err(e) => {
                eprintln!("carton: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { super::EXIT_CARTON_ERROR } else { 0 })
}
