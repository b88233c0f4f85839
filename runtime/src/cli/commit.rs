//! `carton commit`.

use std::path::Path;

use clap::{ArgAction, Args};

use crate::container::{self, CommitOptions};
use crate::state::StateStore;

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Author of the new image (e.g. "Jane Doe <jane@example.com>").
    #[arg(short, long)]
    author: Option<String>,
    /// Apply a Dockerfile instruction to the image config (CMD, ENTRYPOINT, ENV, WORKDIR, USER…).
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    change: Vec<String>,
    /// Commit message, recorded in the image's history.
    #[arg(short, long)]
    message: Option<String>,
    /// Freeze a running container while its changes are read (--pause=false to not).
    #[arg(short, long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", require_equals = true)]
    pause: bool,
    /// The container: id, id prefix or name.
    container: String,
    /// Name for the new image: REPO[:TAG].
    reference: Option<String>,
}

pub fn commit(root: &Path, args: CommitArgs) -> anyhow::Result<()> {
    let states = StateStore::new(root);
    let image = container::commit(
        &states,
        &CommitOptions {
            container: args.container,
            reference: args.reference,
            changes: args.change,
            message: args.message,
            author: args.author,
            pause: args.pause,
        },
    )?;
    println!("{}", image.id);
    Ok(())
}
