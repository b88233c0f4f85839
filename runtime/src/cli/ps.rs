//! `carton ps`.

use std::path::Path;

use clap::Args;

use super::format::{ellipsis, go_quote, human_duration, table};
use crate::container;
use crate::state::{ContainerRecord, StateStore, Status};

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    all: bool,
    /// Only display container ids.
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate ids and commands.
    #[arg(long)]
    no_trunc: bool,
}

pub fn ps(root: &Path, args: PsArgs) -> anyhow::Result<()> {
    let states = StateStore::new(root);
    let (mut records, broken) = container::list(&states)?;
    for problem in &broken {
        eprintln!("carton: warning: {problem}");
    }
    records.retain(|r| args.all || r.status == Status::Running);
    records.reverse(); // newest first, as docker lists them
    let id = |r: &ContainerRecord| {
        if args.no_trunc {
            r.id.clone()
        } else {
            r.short_id().to_string()
        }
    };
    if args.quiet {
        for r in &records {
            println!("{}", id(r));
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            // docker cuts the command first and quotes what is left, so the closing quote
            // always shows: "sh -c 'while :; do…".
            let command = r.command.join(" ");
            let command = if args.no_trunc {
                command
            } else {
                ellipsis(&command, 20)
            };
            vec![
                id(r),
                r.image.clone(),
                go_quote(&command),
                format!("{} ago", human_duration(r.created.elapsed())),
                status(r),
                ports(r),
                r.name.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES"
            ],
            &rows
        )
    );
    Ok(())
}

/// docker's PORTS column: the published ports of a running container.
fn ports(r: &ContainerRecord) -> String {
    r.attachment
        .as_ref()
        .filter(|_| r.status == Status::Running)
        .map(|a| {
            a.ports
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// docker's STATUS column: "Up 3 seconds", "Exited (0) 5 seconds ago", "Created".
fn status(r: &ContainerRecord) -> String {
    match r.status {
        Status::Created => "Created".into(),
        Status::Running => {
            let since = r.started_at.unwrap_or(r.created);
            format!("Up {}", human_duration(since.elapsed()))
        }
        Status::Exited => {
            let code = r.exit_code.unwrap_or(255);
            match r.finished_at {
                Some(t) => format!("Exited ({code}) {} ago", human_duration(t.elapsed())),
                None => format!("Exited ({code})"),
            }
        }
    }
}
