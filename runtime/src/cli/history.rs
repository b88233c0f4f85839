//! `carton history`.

use std::path::Path;

use clap::Args;

use super::format::{ellipsis, human_duration, human_size, table};
use crate::image::ImageStore;
use crate::state::Timestamp;

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Do not truncate ids and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Only show image ids.
    #[arg(short, long)]
    quiet: bool,
    /// The image: name[:tag], id or id prefix.
    image: String,
}

/// docker's width of the CREATED BY column.
const CREATED_BY_WIDTH: usize = 45;

pub fn history(root: &Path, args: HistoryArgs) -> anyhow::Result<()> {
    let store = ImageStore::open(root)?;
    let rows = store.history(&args.image)?;
    let id = |id: &Option<String>| match id {
        None => "<missing>".to_string(),
        Some(id) if args.no_trunc => id.clone(),
        Some(id) => id.trim_start_matches("sha256:").chars().take(12).collect(),
    };
    if args.quiet {
        for row in &rows {
            println!("{}", id(&row.id));
        }
        return Ok(());
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let created = row
                .created
                .as_deref()
                .and_then(Timestamp::parse_rfc3339)
                .map_or_else(
                    || "N/A".to_string(),
                    |t| format!("{} ago", human_duration(t.elapsed())),
                );
            // One row per entry, even for a multi-line script.
            let one_line = row.created_by.replace(['\n', '\t', '\r'], " ");
            let created_by = if args.no_trunc {
                one_line
            } else {
                ellipsis(&one_line, CREATED_BY_WIDTH)
            };
            vec![
                id(&row.id),
                created,
                created_by,
                human_size(row.size),
                row.comment.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
            &table_rows
        )
    );
    Ok(())
}
