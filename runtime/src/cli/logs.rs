//! `carton logs`.

use std::path::Path;

use clap::Args;

use crate::container::logs::{self, Show};
use crate::state::{StateError, StateStore, Status};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the output until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end ("all" for every line).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    /// Container: name, id or unique id prefix.
    container: String,
}

pub fn logs(root: &Path, args: LogsArgs) -> anyhow::Result<i32> {
    let tail =
        match args.tail.as_str() {
            "all" => None,
            n => Some(n.parse::<usize>().map_err(|_| {
                anyhow::anyhow!("invalid --tail {n:?}: a number of lines or \"all\"")
            })?),
        };
    let states = StateStore::new(root);
    let record = states.resolve(&args.container)?;
    let path = logs::log_path(&states.container_dir(&record.id));
    let show = Show {
        timestamps: args.timestamps,
        tail,
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let offset = logs::print(&path, show, &mut out, &mut err)?;
    if args.follow {
        let id = record.id.clone();
        let mut done = || match states.load(&id) {
            Ok(r) => r.status != Status::Running || (!r.process_alive() && !r.owner_alive()),
            Err(StateError::NotFound(_)) => true,
            Err(_) => true,
        };
        logs::follow(&path, offset, show, &mut out, &mut err, &mut done)?;
    }
    Ok(0)
}
