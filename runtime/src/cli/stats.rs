//! `carton stats`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use clap::Args;

use super::format::{human_size, table};
use crate::cgroups::Layout;
use crate::container::{self, stats};
use crate::state::{ContainerRecord, StateStore, Status};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one reading and exit.
    #[arg(long)]
    no_stream: bool,
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    all: bool,
    /// Do not truncate ids.
    #[arg(long)]
    no_trunc: bool,
    /// Containers (default: all running).
    containers: Vec<String>,
}

const INTERVAL: Duration = Duration::from_secs(1);

pub fn stats(root: &Path, args: StatsArgs) -> anyhow::Result<i32> {
    let states = StateStore::new(root);
    let layout = Layout::detect();
    let host_memory = stats::host_memory();
    let mut previous: HashMap<String, stats::Sample> = HashMap::new();
    let interactive = std::io::stdout().is_terminal();
    loop {
        let records = select(&states, &args)?;
        let mut rows = Vec::new();
        let mut current = HashMap::new();
        for record in &records {
            let sample = if record.status == Status::Running {
                stats::sample(&layout, record).ok()
            } else {
                None
            };
            let usage = sample.as_ref().and_then(|now| {
                previous
                    .get(&record.id)
                    .map(|before| stats::usage(before, now, host_memory))
            });
            if let Some(sample) = sample {
                current.insert(record.id.clone(), sample);
            }
            rows.push((record.clone(), usage));
        }
        let first_round = previous.is_empty() && !current.is_empty();
        previous = current;
        if first_round {
            // CPU % needs two readings: docker's --no-stream also waits for a second one.
            std::thread::sleep(INTERVAL);
            continue;
        }
        let text = render(&rows, args.no_trunc);
        let mut out = std::io::stdout().lock();
        if interactive && !args.no_stream {
            write!(out, "\x1b[2J\x1b[H")?;
        }
        write!(out, "{text}")?;
        out.flush()?;
        if args.no_stream {
            return Ok(0);
        }
        std::thread::sleep(INTERVAL);
    }
}

fn select(states: &StateStore, args: &StatsArgs) -> anyhow::Result<Vec<ContainerRecord>> {
    if args.containers.is_empty() {
        let mut all = container::list(states)?.0;
        all.retain(|r| args.all || r.status == Status::Running);
        return Ok(all);
    }
    let mut out = Vec::new();
    for reference in &args.containers {
        out.push(states.resolve(reference)?);
    }
    Ok(out)
}

fn render(rows: &[(ContainerRecord, Option<stats::Usage>)], no_trunc: bool) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(record, usage)| {
            let id = if no_trunc {
                record.id.clone()
            } else {
                record.short_id().to_string()
            };
            match usage {
                Some(u) => vec![
                    id,
                    record.name.clone(),
                    format!("{:.2}%", u.cpu_percent),
                    format!(
                        "{} / {}",
                        binary_size(u.memory_usage),
                        binary_size(u.memory_limit)
                    ),
                    format!("{:.2}%", u.memory_percent),
                    format!("{} / {}", human_size(u.net_rx), human_size(u.net_tx)),
                    format!("{} / {}", human_size(u.io_read), human_size(u.io_write)),
                    u.pids.to_string(),
                ],
                None => vec![
                    id,
                    record.name.clone(),
                    "--".into(),
                    "-- / --".into(),
                    "--".into(),
                    "-- / --".into(),
                    "-- / --".into(),
                    "--".into(),
                ],
            }
        })
        .collect();
    table(
        &[
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "NET I/O",
            "BLOCK I/O",
            "PIDS",
        ],
        &cells,
    )
}

/// Memory in binary units ("1.5MiB"), as docker stats shows it.
fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_sizes() {
        assert_eq!(binary_size(512), "512B");
        assert_eq!(binary_size(1536), "1.50KiB");
        assert_eq!(binary_size(64 << 20), "64.00MiB");
    }
}
