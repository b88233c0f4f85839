//! The docker-style command line. The only module that prints, and the only one that uses
//! `anyhow`: everything below returns typed errors, which become `carton: <message>` on stderr
//! and docker's exit codes here.

mod archive;
mod commit;
mod exec;
mod format;
mod history;
mod images;
mod inspect;
mod lifecycle;
mod limits;
mod logging;
mod logs;
mod network;
mod ps;
mod rm;
mod run;
mod stats;
mod update;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// carton's own failures (docker's "daemon error" code).
pub const EXIT_CARTON_ERROR: i32 = 125;

#[derive(Debug, Parser)]
#[command(
    name = "carton",
    version,
    about = "A daemonless container runtime with a docker-style command line",
    disable_help_subcommand = true
)]
struct Cli {
    /// Directory holding images, containers and locks.
    #[arg(
        long,
        global = true,
        env = "CARTON_ROOT",
        default_value = "/var/lib/carton"
    )]
    root: PathBuf,
    /// debug, info, warn or error.
    #[arg(long, global = true, default_value = "warn")]
    log_level: logging::Level,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create and run a container from an image (in the foreground, or detached with -d).
    Run(Box<run::RunArgs>),
    /// Run a command in a running container.
    Exec(exec::ExecArgs),
    /// Show a detached container's output.
    Logs(logs::LogsArgs),
    /// Stop containers: SIGTERM, then SIGKILL after a grace period.
    Stop(lifecycle::StopArgs),
    /// Send a signal to containers.
    Kill(lifecycle::KillArgs),
    /// Start stopped containers (detached).
    Start(lifecycle::StartArgs),
    /// Stop and start containers.
    Restart(lifecycle::StopArgs),
    /// Wait for containers to exit and print their exit codes.
    Wait(lifecycle::WaitArgs),
    /// List containers.
    Ps(ps::PsArgs),
    /// Remove one or more containers.
    Rm(rm::RmArgs),
    /// Create an image from a rootfs tarball (plain or gzip; `-` reads stdin).
    Import(images::ImportArgs),
    /// List images.
    Images(images::ImagesArgs),
    /// Remove one or more images.
    Rmi(images::RmiArgs),
    /// Name an image: TARGET refers to SOURCE.
    Tag(images::TagArgs),
    /// Show an image's layers and how they were made.
    History(history::HistoryArgs),
    /// Create an image from a container's changes.
    Commit(commit::CommitArgs),
    /// Write images to an archive (OCI layout + docker manifest.json) on stdout or -o FILE.
    Save(archive::SaveArgs),
    /// Load images from a docker-archive or oci-archive (stdin or -i FILE).
    Load(archive::LoadArgs),
    /// Write a container's root file system as a tar archive (stdout or -o FILE).
    Export(archive::ExportArgs),
    /// Show containers' or images' details as JSON.
    Inspect(inspect::InspectArgs),
    /// Show containers' resource usage.
    Stats(stats::StatsArgs),
    /// Change the resource limits of containers.
    Update(update::UpdateArgs),
    /// Manage bridge networks.
    Network(network::NetworkArgs),
}

/// Parses the command line, runs the command, returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => EXIT_CARTON_ERROR,
            };
        }
    };
    logging::init(cli.log_level);
    let root = match prepare_root(&cli.root) {
        Ok(root) => root,
        Err(e) => return report(&e),
    };
    let result = match cli.command {
        Command::Run(args) => run::run(&root, *args),
        Command::Exec(args) => exec::exec(&root, args),
        Command::Logs(args) => logs::logs(&root, args),
        Command::Stop(args) => lifecycle::stop(&root, args),
        Command::Kill(args) => lifecycle::kill(&root, args),
        Command::Start(args) => lifecycle::start(&root, args),
        Command::Restart(args) => lifecycle::restart(&root, args),
        Command::Wait(args) => lifecycle::wait(&root, args),
        Command::Ps(args) => ps::ps(&root, args).map(|()| 0),
        Command::Rm(args) => rm::rm(&root, args),
        Command::Import(args) => images::import(&root, args).map(|()| 0),
        Command::Images(args) => images::images(&root, args).map(|()| 0),
        Command::Rmi(args) => images::rmi(&root, args),
        Command::Tag(args) => images::tag(&root, args).map(|()| 0),
        Command::History(args) => history::history(&root, args).map(|()| 0),
        Command::Commit(args) => commit::commit(&root, args).map(|()| 0),
        Command::Save(args) => archive::save(&root, args).map(|()| 0),
        Command::Load(args) => archive::load(&root, args).map(|()| 0),
        Command::Export(args) => archive::export(&root, args).map(|()| 0),
        Command::Inspect(args) => inspect::inspect(&root, args),
        Command::Stats(args) => stats::stats(&root, args),
        Command::Update(args) => update::update(&root, args),
        Command::Network(args) => network::network(&root, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

/// The state root as an absolute, existing directory (its path ends up in mount options).
fn prepare_root(root: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(root)
        .map_err(|e| anyhow::anyhow!("cannot create state root {}: {e}", root.display()))?;
    root.canonicalize()
        .map_err(|e| anyhow::anyhow!("cannot resolve state root {}: {e}", root.display()))
}

/// Prints the error chain and picks the exit code from the typed error underneath.
fn report(error: &anyhow::Error) -> i32 {
    eprintln!("carton: {error:#}");
    exit_code_of(error)
}

fn exit_code_of(error: &anyhow::Error) -> i32 {
    error
        .chain()
        .find_map(|cause| {
            cause
                .downcast_ref::<crate::container::ContainerError>()
                .map(|e| e.exit_code())
                .or_else(|| {
                    cause
                        .downcast_ref::<crate::engine::EngineError>()
                        .map(|e| e.exit_code())
                })
        })
        .unwrap_or(EXIT_CARTON_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_after_the_image_belong_to_the_command() {
        let cli = Cli::try_parse_from([
            "carton", "run", "--rm", "-it", "-e", "A=1", "busybox", "ls", "-l", "--rm",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        assert!(args.rm && args.interactive && args.tty);
        assert_eq!(args.image, "busybox");
        assert_eq!(args.command, ["ls", "-l", "--rm"]);
    }

    #[test]
    fn commit_pauses_unless_told_not_to() {
        let parse = |args: &[&str]| {
            let Command::Commit(c) = Cli::try_parse_from(args).unwrap().command else {
                panic!("not commit");
            };
            c
        };
        assert!(format!("{:?}", parse(&["carton", "commit", "c"])).contains("pause: true"));
        assert!(format!("{:?}", parse(&["carton", "commit", "-p", "c"])).contains("pause: true"));
        let off = parse(&[
            "carton",
            "commit",
            "--pause=false",
            "-m",
            "msg",
            "c",
            "img:v1",
        ]);
        assert!(format!("{off:?}").contains("pause: false"), "{off:?}");
    }

    #[test]
    fn unknown_flags_are_errors() {
        assert!(Cli::try_parse_from(["carton", "run", "--bogus", "busybox"]).is_err());
    }
}
