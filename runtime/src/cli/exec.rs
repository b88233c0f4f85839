//! `carton exec`.

use std::path::Path;

use clap::Args;

use crate::container::{self, ExecRequest, options};
use crate::state::StateStore;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open and attached.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Run the command in the background.
    #[arg(short, long)]
    detach: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass carton's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// User: UID[:GID] or NAME[:GROUP].
    #[arg(short, long)]
    user: Option<String>,
    /// Container: name, id or unique id prefix.
    container: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

pub fn exec(root: &Path, args: ExecArgs) -> anyhow::Result<i32> {
    // The child enters the container's pid namespace before it execs the command.
    crate::engine::sealed_exe::ensure()?;
    let lookup = |key: &str| std::env::var(key).ok();
    let mut env = Vec::new();
    for entry in &args.env {
        env.extend(options::parse_env(entry, lookup)?);
    }
    let states = StateStore::new(root);
    let request = ExecRequest {
        container: args.container,
        command: args.command,
        env,
        workdir: args.workdir,
        user: args.user,
        terminal: args.tty,
        interactive: args.interactive,
        detach: args.detach,
    };
    Ok(container::exec(&states, &request)?)
}
