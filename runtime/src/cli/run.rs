//! `carton run`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::limits::LimitArgs;
use crate::container::limits::HostFacts;
use crate::container::security::SecurityFlags;
use crate::container::{
    self, ContainerError, CreateRequest, NetworkMode, RunMode, Volume, options,
};
use crate::network::PortSpec;
use crate::state::StateStore;

#[derive(Debug, Args)]
// `-h` is docker's --hostname in `run`, so help is `--help` only.
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Keep stdin open and attached.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container id.
    #[arg(short, long)]
    pub detach: bool,
    /// Name of the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass carton's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as: UID[:GID] or NAME[:GROUP].
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container host name (default: the short container id).
    #[arg(long, short = 'h')]
    pub hostname: Option<String>,
    /// Bind mount a host directory: SRC:DST[:ro|rw].
    #[arg(short, long = "volume", value_name = "SRC:DST[:MODE]")]
    pub volume: Vec<String>,
    /// Network: a bridge network's name (default: bridge), none (only loopback) or host.
    #[arg(long, alias = "net", default_value = "bridge")]
    pub network: String,
    /// Publish a container port: [IP:][HOST:]CONTAINER[/tcp|udp].
    #[arg(short, long = "publish", value_name = "PORTS")]
    pub publish: Vec<String>,
    /// Add a Linux capability (or ALL).
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability (or ALL).
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// All capabilities and devices, no seccomp filter, nothing masked.
    #[arg(long)]
    pub privileged: bool,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Mount a tmpfs: DIR[:OPTIONS].
    #[arg(long, value_name = "DIR[:OPTS]")]
    pub tmpfs: Vec<String>,
    /// seccomp=unconfined|FILE, no-new-privileges[=true|false].
    #[arg(long, value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Add a host device: HOST[:CONTAINER][:rwm].
    #[arg(long, value_name = "DEVICE")]
    pub device: Vec<String>,
    /// Set a resource limit: NAME=SOFT[:HARD] (e.g. nofile=1024:2048).
    #[arg(long, value_name = "LIMIT")]
    pub ulimit: Vec<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Image name, id or id prefix.
    pub image: String,
    /// Command and arguments (default: the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(root: &Path, args: RunArgs) -> anyhow::Result<i32> {
    let request = request_from(&args)?;
    let states = StateStore::new(root);
    let created = container::create(&states, &request)?;
    let mode = RunMode {
        terminal: args.tty,
        interactive: args.interactive,
    };
    if args.detach {
        let id = created.record.id.clone();
        container::run_detached(&states, created, mode)?;
        println!("{id}");
        return Ok(0);
    }
    Ok(container::run_foreground(&states, created, mode)?)
}

fn request_from(args: &RunArgs) -> anyhow::Result<CreateRequest> {
    let lookup = |key: &str| std::env::var(key).ok();
    let mut env = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read env file {}", file.display()))?;
        env.extend(options::parse_env_file(&text, file, lookup)?);
    }
    for entry in &args.env {
        env.extend(options::parse_env(entry, lookup)?);
    }
    let volumes = args
        .volume
        .iter()
        .map(|v| Volume::parse(v))
        .collect::<Result<Vec<_>, _>>()?;
    options::check_volumes(&volumes)?;
    Ok(CreateRequest {
        image: args.image.clone(),
        command: args.command.clone(),
        name: args.name.clone(),
        hostname: args.hostname.clone(),
        env,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        volumes,
        network: NetworkMode::parse(&args.network)?,
        terminal: args.tty,
        auto_remove: args.rm,
        resources: args.limits.flags().to_resources(&HostFacts::read())?,
        security: SecurityFlags {
            cap_add: args.cap_add.clone(),
            cap_drop: args.cap_drop.clone(),
            privileged: args.privileged,
            read_only: args.read_only,
            tmpfs: args.tmpfs.clone(),
            security_opt: args.security_opt.clone(),
            devices: args.device.clone(),
            ulimits: args.ulimit.clone(),
        }
        .resolve()?,
        publish: args
            .publish
            .iter()
            .map(|p| PortSpec::parse(p).map_err(ContainerError::InvalidInput))
            .collect::<Result<_, _>>()?,
    })
}
