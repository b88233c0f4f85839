//! The runc command line. Errors go to stderr and, with `--log`, to the log file in the
//! requested format (`json`: one object per line with level, msg and time — what conmon and
//! containerd's shim read back when a command fails). `--systemd-cgroup` is accepted without a
//! systemd driver behind it: create and run say so once, in the log (on stderr without one).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use super::create::{CreateArgs, create};
use super::exec::{ExecArgs, exec};
use super::state::{Status, Store};
use super::{OciError, lifecycle, template};
use crate::state::Timestamp;

#[derive(Debug, Parser)]
#[command(
    name = "carton-runtime",
    version = concat!(env!("CARGO_PKG_VERSION"), "\nspec: 1.2.0"),
    about = "An OCI runtime (runc's command line) over carton's engine"
)]
struct Cli {
    /// Directory for the state of containers.
    #[arg(long, global = true, default_value = "/run/carton-runtime")]
    root: PathBuf,
    /// Also write errors (and warnings) to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of the --log file.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Accepted for compatibility: carton has no systemd cgroup driver; cgroups are made
    /// through cgroupfs, systemd-style paths (slice:prefix:name) translated. create and run
    /// warn about it.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// More log output.
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for compatibility (`--rootless false`); rootless mode is not implemented.
    #[arg(long, global = true)]
    rootless: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// `--log-format`: runc's two; anything else is refused rather than taken for text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// logfmt lines: time="…" level=… msg="…"
    Text,
    /// one JSON object per line: level, msg, time
    Json,
}

#[derive(Debug, Args)]
struct CreateFlags {
    /// Bundle directory (default: the current one).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[arg(long)]
    console_socket: Option<PathBuf>,
    #[arg(long)]
    no_pivot: bool,
    /// Accepted for compatibility: carton does not create session keyrings.
    #[arg(long)]
    no_new_keyring: bool,
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    id: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a container, waiting for `start`.
    Create(CreateFlags),
    /// Start a created container.
    Start { id: String },
    /// Print a container's state (JSON).
    State { id: String },
    /// Send a signal to a container's init (or all its processes).
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container's resources.
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create and start a container; without --detach, wait for it and delete it.
    Run {
        #[command(flatten)]
        flags: CreateFlags,
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Run a process in a container.
    Exec {
        /// Path to a process.json.
        #[arg(short, long)]
        process: Option<PathBuf>,
        #[arg(short, long)]
        tty: bool,
        #[arg(short, long)]
        detach: bool,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long)]
        cwd: Option<PathBuf>,
        #[arg(short, long)]
        env: Vec<String>,
        /// UID[:GID]
        #[arg(short, long)]
        user: Option<String>,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List the processes of a container.
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List containers.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Change a running container's limits.
    Update {
        /// linux.resources JSON: a file, or - for stdin.
        #[arg(short, long)]
        resources: String,
        id: String,
    },
    /// Print the features this runtime implements (JSON).
    Features,
    /// Write a default config.json.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
}

/// Entry point of the `carton-runtime` binary; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
        }
    };
    let log = Log {
        path: cli.log.clone(),
        json: cli.log_format == LogFormat::Json,
    };
    let store = Store::new(&cli.root);
    match prepare(&cli, &log).and_then(|()| dispatch(&store, &cli)) {
        Ok(code) => code,
        Err(e) => {
            let message = e.to_string();
            log.write("error", &message);
            eprintln!("carton-runtime: {message}");
            1
        }
    }
}

/// Before any command's work: the re-execution from a read-only binary first (everything
/// before it happens twice), then the warnings.
fn prepare(cli: &Cli, log: &Log) -> Result<(), OciError> {
    if matches!(cli.command, Command::Create(_) | Command::Exec { .. }) {
        // Their processes wait or start inside the container still running carton's code.
        crate::engine::sealed_exe::ensure()?;
    }
    // Said where a cgroup is made, not on every command: clients pass the flag to all of them.
    if cli.systemd_cgroup && matches!(cli.command, Command::Create(_) | Command::Run { .. }) {
        log.warn(systemd_cgroup_warning(systemd_is_init()));
    }
    Ok(())
}

fn dispatch(store: &Store, cli: &Cli) -> Result<i32, OciError> {
    match &cli.command {
        Command::Create(f) => {
            create(store, &create_args(f, cli.systemd_cgroup))?;
            Ok(0)
        }
        Command::Run {
            flags,
            detach,
            keep,
        } => {
            let (record, started) = create(store, &create_args(flags, cli.systemd_cgroup))?;
            if let Err(e) = lifecycle::start(store, &record.id) {
                let _ = lifecycle::delete(store, &record.id, true);
                return Err(e);
            }
            if *detach {
                return Ok(0);
            }
            let status = crate::engine::foreground::wait(
                started,
                crate::engine::Attach { stdin: false },
                &mut crate::engine::ToCartonStdio,
            )?;
            if !keep {
                lifecycle::delete(store, &record.id, true)?;
            }
            Ok(status.code)
        }
        Command::Start { id } => lifecycle::start(store, id).map(|()| 0),
        Command::State { id } => {
            let state = lifecycle::state(store, id)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&state).unwrap_or_default()
            );
            Ok(0)
        }
        Command::Kill { all, id, signal } => {
            let signal = crate::container::lifecycle::parse_signal(signal)
                .map_err(|e| OciError::InvalidConfig(e.to_string()))?;
            lifecycle::kill(store, id, signal, *all).map(|()| 0)
        }
        Command::Delete { force, id } => lifecycle::delete(store, id, *force).map(|()| 0),
        Command::Exec {
            process,
            tty,
            detach,
            pid_file,
            console_socket,
            cwd,
            env,
            user,
            id,
            args,
        } => exec(
            store,
            &ExecArgs {
                id: id.clone(),
                process: process.clone(),
                args: args.clone(),
                tty: *tty,
                detach: *detach,
                pid_file: pid_file.clone(),
                console_socket: console_socket.clone(),
                cwd: cwd.clone(),
                env: env.clone(),
                user: user.clone(),
            },
        ),
        Command::Pause { id } => lifecycle::pause(store, id).map(|()| 0),
        Command::Resume { id } => lifecycle::resume(store, id).map(|()| 0),
        Command::Ps {
            format,
            id,
            ps_args,
        } => {
            let pids = lifecycle::pids(store, id)?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids).unwrap_or_default());
                return Ok(0);
            }
            ps_table(&pids, ps_args)
        }
        Command::List { format, quiet } => {
            let all = lifecycle::list(store)?;
            if *quiet {
                for (r, _) in &all {
                    println!("{}", r.id);
                }
            } else if format == "json" {
                let states: Vec<serde_json::Value> = all
                    .iter()
                    .map(|(r, s)| super::state::list_json(r, *s, &store.owner(&r.id)))
                    .collect();
                println!("{}", serde_json::to_string(&states).unwrap_or_default());
            } else {
                let mut rows =
                    vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from)];
                for (r, s) in &all {
                    let pid = if *s == Status::Stopped { 0 } else { r.pid };
                    rows.push([
                        r.id.clone(),
                        pid.to_string(),
                        s.as_str().to_string(),
                        r.bundle.display().to_string(),
                        r.created.to_rfc3339(),
                        store.owner(&r.id),
                    ]);
                }
                print!("{}", aligned(&rows));
            }
            Ok(0)
        }
        Command::Update { resources, id } => {
            let bytes = lifecycle::read_resources(resources)?;
            lifecycle::update(store, id, &bytes).map(|()| 0)
        }
        Command::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&template::features()).unwrap_or_default()
            );
            Ok(0)
        }
        Command::Spec { bundle } => {
            if cli.rootless.as_deref().is_some_and(|r| r != "false") {
                return Err(OciError::InvalidConfig(
                    "rootless containers are not implemented".into(),
                ));
            }
            write_spec(bundle).map(|()| 0)
        }
    }
}

/// Whether systemd is the init system: the test of sd_booted(3).
fn systemd_is_init() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// What `--systemd-cgroup` gets. Without systemd, cgroupfs is the only choice and the flag a
/// mistake of the caller's configuration; with systemd, the honest news is that the cgroup is
/// not a systemd unit, so systemd neither knows nor manages it.
fn systemd_cgroup_warning(systemd_running: bool) -> &'static str {
    if systemd_running {
        "--systemd-cgroup: carton's systemd cgroup driver is not implemented; the container's \
         cgroup is made through cgroupfs at the translated path (slice:prefix:name -> \
         /slice/prefix-name.scope), not as a systemd unit"
    } else {
        "--systemd-cgroup: systemd is not running (no /run/systemd/system); carton falls back \
         to cgroupfs"
    }
}

fn create_args(f: &CreateFlags, systemd_cgroup: bool) -> CreateArgs {
    CreateArgs {
        id: f.id.clone(),
        bundle: f.bundle.clone(),
        pid_file: f.pid_file.clone(),
        console_socket: f.console_socket.clone(),
        no_pivot: f.no_pivot,
        preserve_fds: f.preserve_fds,
        systemd_cgroup,
    }
}

fn write_spec(bundle: &Path) -> Result<(), OciError> {
    let path = bundle.join("config.json");
    if path.exists() {
        return Err(OciError::InvalidConfig(format!(
            "{} already exists",
            path.display()
        )));
    }
    let text = serde_json::to_vec_pretty(&template::default_spec()).unwrap_or_default();
    std::fs::write(&path, text).map_err(OciError::io(format!("write {}", path.display())))
}

/// Rows as columns padded with spaces, the way runc's `list` prints them (Go's tabwriter with
/// a minimum width of 12 and a padding of 3); the last column is not padded.
fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|c| {
            let widest = rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
            (widest + 3).max(12)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}", width = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}

/// `ps`'s table, as runc makes it: the system's `ps` with the caller's arguments (`-ef` without
/// any), its header, and those of its lines whose PID column names a process of the container.
/// The arguments select what ps shows, never which processes are listed: `ps ID -e` must not
/// list the host's.
fn ps_table(pids: &[i32], args: &[String]) -> Result<i32, OciError> {
    let mut cmd = std::process::Command::new("ps");
    if args.is_empty() {
        cmd.arg("-ef");
    } else {
        cmd.args(args);
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(OciError::io("run ps"))?;
    if !out.status.success() {
        return Err(OciError::InvalidConfig(format!(
            "ps {}: {}",
            args.join(" "),
            out.status
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{}", container_rows(&text, pids)?);
    Ok(0)
}

/// The header of `ps` output and its lines for `pids`.
fn container_rows(ps_output: &str, pids: &[i32]) -> Result<String, OciError> {
    let mut lines = ps_output.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .split_whitespace()
        .position(|f| f == "PID")
        .ok_or_else(|| {
            OciError::InvalidConfig(format!("ps output has no PID column: {header:?}"))
        })?;
    let mut out = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(column)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|pid: i32| pids.contains(&pid)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// `--log`: errors and warnings, as text or JSON lines.
struct Log {
    path: Option<PathBuf>,
    json: bool,
}

impl Log {
    /// A warning for whoever reads: the log file of the client, and stderr.
    /// Into the --log file when there is one (where podman and containerd look); on stderr
    /// only without it: a container without a terminal shares the runtime's stderr, and a
    /// warning there would become the first line of the container's output.
    fn warn(&self, message: &str) {
        if self.path.is_some() {
            self.write("warning", message);
        } else {
            eprintln!("carton-runtime: warning: {message}");
        }
    }

    fn write(&self, level: &str, message: &str) {
        let Some(path) = &self.path else {
            return;
        };
        let time = Timestamp::now().to_rfc3339();
        let line = if self.json {
            serde_json::json!({"level": level, "msg": message, "time": time}).to_string()
        } else {
            format!("time=\"{time}\" level={level} msg={message:?}")
        };
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn systemd_cgroup_warnings_say_what_happens() {
        assert!(systemd_cgroup_warning(false).contains("falls back to cgroupfs"));
        assert!(systemd_cgroup_warning(true).contains("driver is not implemented"));
    }

    #[test]
    fn list_columns_are_aligned_like_runcs() {
        let rows = [
            ["ID", "PID", "OWNER"].map(String::from),
            ["a-rather-long-id", "7", "root"].map(String::from),
        ];
        assert_eq!(
            aligned(&rows),
            "ID                 PID         OWNER\na-rather-long-id   7           root\n"
        );
    }

    #[test]
    fn ps_keeps_the_header_and_the_containers_lines() {
        let ps = "  UID   PID  PPID CMD\n root     1     0 init\n root    42     1 sleep 1000\n root   420     1 x\n";
        assert_eq!(
            container_rows(ps, &[42]).unwrap(),
            "  UID   PID  PPID CMD\n root    42     1 sleep 1000\n"
        );
        assert!(container_rows("USER COMMAND\n", &[1]).is_err());
    }

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn runc_style_invocations_parse() {
        let cli = Cli::try_parse_from([
            "carton-runtime",
            "--root",
            "/r",
            "--log",
            "/l",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "--console-socket",
            "/s",
            "c1",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Create(ref f) if f.id == "c1"));
        let cli = Cli::try_parse_from(["carton-runtime", "kill", "--all", "c1", "KILL"]).unwrap();
        assert!(matches!(cli.command, Command::Kill { all: true, .. }));
        let cli = Cli::try_parse_from([
            "carton-runtime",
            "exec",
            "--detach",
            "--pid-file",
            "/p",
            "--process",
            "/proc.json",
            "c1",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Exec { detach: true, .. }));
    }
}
