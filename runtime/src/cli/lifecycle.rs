//! `carton stop`, `kill`, `start`, `restart`, `wait`.

use std::path::Path;
use std::time::Duration;

use clap::Args;

use crate::container::{ContainerError, lifecycle};
use crate::state::StateStore;

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait for the container to stop before killing it.
    #[arg(
        short = 't',
        long = "time",
        default_value_t = 10,
        allow_negative_numbers = true
    )]
    time: i64,
    /// Containers: name, id or unique id prefix.
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send (name or number).
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

fn grace(seconds: i64) -> anyhow::Result<Duration> {
    if seconds < 0 {
        anyhow::bail!("invalid -t/--time {seconds}: the grace period must be 0 or more seconds");
    }
    Ok(Duration::from_secs(seconds as u64))
}

/// Runs `action` on each container, printing the reference on success (docker's output) and
/// the error otherwise; goes on after failures and reports them in the exit code.
fn each(containers: &[String], mut action: impl FnMut(&str) -> Result<(), ContainerError>) -> i32 {
    let mut failed = false;
    for reference in containers {
        match action(reference) {
            Ok(()) => println!("{reference}"),
            Err(e) => {
                eprintln!("carton: {e}");
                failed = true;
            }
        }
    }
    if failed { super::EXIT_CARTON_ERROR } else { 0 }
}

pub fn stop(root: &Path, args: StopArgs) -> anyhow::Result<i32> {
    let grace = grace(args.time)?;
    let states = StateStore::new(root);
    Ok(each(&args.containers, |c| {
        lifecycle::stop(&states, c, grace)
    }))
}

pub fn restart(root: &Path, args: StopArgs) -> anyhow::Result<i32> {
    let grace = grace(args.time)?;
    let states = StateStore::new(root);
    Ok(each(&args.containers, |c| {
        lifecycle::stop(&states, c, grace)?;
        lifecycle::start(&states, c)
    }))
}

pub fn kill(root: &Path, args: KillArgs) -> anyhow::Result<i32> {
    let signal = lifecycle::parse_signal(&args.signal)?;
    let states = StateStore::new(root);
    Ok(each(&args.containers, |c| {
        lifecycle::kill(&states, c, signal)
    }))
}

pub fn start(root: &Path, args: StartArgs) -> anyhow::Result<i32> {
    let states = StateStore::new(root);
    Ok(each(&args.containers, |c| lifecycle::start(&states, c)))
}

pub fn wait(root: &Path, args: WaitArgs) -> anyhow::Result<i32> {
    let states = StateStore::new(root);
    let mut failed = false;
    for reference in &args.containers {
        match lifecycle::wait(&states, reference) {
            Ok(code) => println!("{code}"),
            Err(e) => {
                eprintln!("carton: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { super::EXIT_CARTON_ERROR } else { 0 })
}
