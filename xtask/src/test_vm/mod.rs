//! `cargo xtask test-vm`: the conformance scenarios on other kernels and cgroup layouts, each leg
//! (kernel × cgroup mode) in a disposable QEMU guest that runs the test binaries built here.
//!
//! A run: build and archive the tests (`archive`), fetch and unpack the kernels (`kernel`, `apt`,
//! `bzimage`), decide between KVM and TCG (`qemu::probe_kvm`), then per leg build an initramfs
//! (`initramfs`, with the guest scripts in vm/), boot it (`qemu`), judge what came back on the
//! results port (`results`) and report (`summary`). `--provider vagrant` runs the distro tier
//! instead (`vagrant`). vm/README.md explains the guest side.

mod apt;
mod archive;
mod bzimage;
mod initramfs;
mod kernel;
mod qemu;
mod results;
mod self_test;
mod summary;
mod vagrant;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use xshell::Shell;

use self::archive::Archive;
use self::kernel::Kernel;
use self::qemu::{Accel, Limits, Vm};
use self::summary::{LegReport, RunReport};
use crate::{busybox, util};

#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  cargo xtask test-vm --kernel 6.1 --cgroup v2               one leg
  cargo xtask test-vm -- -E 'test(volumes)'                  every leg, some scenarios
  cargo xtask test-vm --kernel 6.1 --cgroup v1 --shell       a shell in the guest (debugging)
  cargo xtask test-vm --kernel 5.10 --kernel-append carton.debug=panic   see a panic caught
  cargo xtask test-vm --self-test --kernel 6.1 --cgroup v2   a panic, a hang, a failing test caught
  cargo xtask test-vm --provider vagrant --cgroup v1         the distro tier (Vagrantfile)

Results: target/vm/summary.md and summary.json; per leg target/vm/runs/<kernel>-<cgroup>/
(console.log, results.bin). Kernels are cached in target/vm/kernels/. See vm/README.md.")]
pub struct TestVmArgs {
    /// Kernels: a name from vm/kernels.toml (5.10, 6.1, 6.12), `all`, `host`, or a path to a
    /// linux-image .deb, an install tree (boot/vmlinuz-*, lib/modules/*) or a bzImage.
    /// Repeat or separate with commas.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "all",
        value_name = "KERNEL"
    )]
    kernel: Vec<String>,
    /// cgroup layout of the guests.
    #[arg(long, value_enum, default_value_t = CgroupArg::All)]
    cgroup: CgroupArg,
    /// `auto` probes KVM with a short boot and falls back to TCG; `kvm` fails unless that probe
    /// succeeds (CI uses it to prove KVM is used); `tcg` never tries KVM.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    accel: AccelArg,
    /// Legs run at the same time [default: number of CPUs].
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// vCPUs per guest (the CPU-shares scenarios need at least 2).
    #[arg(long, default_value_t = 2, value_name = "N")]
    smp: u32,
    /// Memory per guest, MiB.
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    memory: u32,
    /// Per-leg time limit [default: 3600 under TCG, 900 under KVM].
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// The guest must reach its test stage within this [default: 60 under TCG, 20 under KVM].
    #[arg(long, value_name = "SECS")]
    boot_timeout: Option<u64>,
    /// A guest silent this long (no console output, no results) is hung.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    stall_timeout: u64,
    /// Extra kernel command line, e.g. `carton.debug=panic`, `carton.debug=hang`,
    /// `carton.debug=hang-tests` (see vm/README.md) or `loglevel=7`.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    kernel_append: Option<String>,
    /// An extra environment variable for the tests in the guests (repeatable), e.g.
    /// `CARTON_CONFORMANCE_NO_SKIP=1` to fail where a prerequisite is missing.
    #[arg(long = "guest-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    guest_env: Vec<String>,
    /// Boot one leg with its console on this terminal and a shell instead of the tests.
    #[arg(long)]
    shell: bool,
    /// Ask apt for the newest build of each Debian kernel instead of reusing the cached one.
    #[arg(long)]
    refresh_kernels: bool,
    /// `qemu`: the kernel × cgroup matrix above. `vagrant`: the distro tier of the Vagrantfile
    /// (`--cgroup` picks its machines), running `cargo xtask test` inside.
    #[arg(long, value_enum, default_value_t = Provider::Qemu)]
    provider: Provider,
    /// With `--provider vagrant`: keep the machines instead of destroying them.
    #[arg(long)]
    keep: bool,
    /// Prove the harness catches broken legs: a kernel panic, a hang and a failing scenario
    /// must each fail (on the first --kernel, default 6.1, and the first --cgroup mode).
    #[arg(long)]
    self_test: bool,
    /// nextest filter arguments for the guests, e.g. `-E 'test(volumes)'` or a test name.
    #[arg(last = true, value_name = "FILTER")]
    filter: Vec<OsString>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CgroupArg {
    V1,
    V2,
    All,
}

impl CgroupArg {
    /// The modes this value selects, v1 first.
    pub fn modes(self) -> &'static [&'static str] {
        match self {
            CgroupArg::V1 => &["v1"],
            CgroupArg::V2 => &["v2"],
            CgroupArg::All => &["v1", "v2"],
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Provider {
    Qemu,
    Vagrant,
}

/// One guest of the matrix.
struct Leg {
    kernel: usize,
    cgroup: &'static str,
    name: String,
}

/// What every leg shares.
struct Run<'a> {
    args: &'a TestVmArgs,
    archive: Archive,
    kernels: Vec<Kernel>,
    /// Per kernel: the initramfs part common to its legs.
    base_initramfs: Vec<Vec<u8>>,
    guest_modules: kernel::GuestModules,
    nextest: PathBuf,
    busybox: PathBuf,
    accel: Accel,
}

pub fn run(sh: &Shell, args: TestVmArgs) -> Result<()> {
    if args.provider == Provider::Vagrant {
        return vagrant::run(args.cgroup, args.keep, &args.filter);
    }
    if args.self_test {
        let kernel = match args.kernel.first().map(String::as_str) {
            None | Some("all") => "6.1",
            Some(k) => k,
        };
        let accel = match args.accel {
            AccelArg::Auto => "auto",
            AccelArg::Kvm => "kvm",
            AccelArg::Tcg => "tcg",
        };
        return self_test::run(kernel, args.cgroup.modes()[0], accel);
    }
    let started = Instant::now();
    ensure!(
        find_in_path(qemu::QEMU).is_some(),
        "{} is not installed (Debian: apt-get install qemu-system-x86)",
        qemu::QEMU
    );
    ensure!(
        args.smp >= 1 && args.memory >= 256,
        "--smp ≥ 1 and --memory ≥ 256 please"
    );
    let table = kernel::load_table()?;
    let specs = kernel::specs(&args.kernel, &table)?;
    let mut legs = Vec::new();
    for (k, spec) in specs.iter().enumerate() {
        for cgroup in args.cgroup.modes() {
            legs.push(Leg {
                kernel: k,
                cgroup,
                name: format!("{}-{cgroup}", spec.name()),
            });
        }
    }
    if args.shell {
        ensure!(
            legs.len() == 1,
            "--shell boots one leg: choose one --kernel and one --cgroup ({} legs selected)",
            legs.len()
        );
    }

    util::section("Finding a static busybox for the guests' initramfs");
    let busybox = busybox::obtain(sh)?;
    let archive = archive::prepare(sh, &args.filter)?;
    let nextest = find_nextest()?;
    util::section("Preparing the kernels");
    let kernels = kernel::prepare_all(sh, &specs, args.refresh_kernels)?;
    let mut base_initramfs = Vec::new();
    for k in &kernels {
        base_initramfs.push(
            initramfs::base(k, &table.guest.boot_modules, &busybox)
                .with_context(|| format!("building the initramfs for kernel {}", k.name))?,
        );
    }

    let runs = util::target_dir().join("vm/runs");
    std::fs::create_dir_all(&runs)?;
    let (accel, accel_note) = choose_accel(
        args.accel,
        &kernels[0],
        &base_initramfs[0],
        &runs.join("kvm-probe"),
    )?;
    println!("accel: {} ({accel_note})", accel.name());

    let ctx = Run {
        args: &args,
        archive,
        kernels,
        base_initramfs,
        guest_modules: table.guest.clone(),
        nextest,
        busybox,
        accel,
    };
    if args.shell {
        return shell(&ctx, &legs[0]);
    }

    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, legs.len());
    util::section(&format!(
        "Running {} legs, {jobs} at a time ({} tests each, {} vCPUs, {} MiB)",
        legs.len(),
        ctx.archive.expected.len(),
        args.smp,
        args.memory
    ));
    let reports = run_legs(&ctx, &legs, jobs);

    let run = RunReport {
        accel: accel.name().into(),
        accel_note,
        smp: args.smp,
        memory_mib: args.memory,
        jobs,
        duration_s: started.elapsed().as_secs_f64(),
        legs: reports,
    };
    for leg in run.legs.iter().filter(|l| !l.ok) {
        println!(
            "\n==> {} FAILED: {}\n--- last lines of {} ---\n{}\n---",
            leg.leg,
            leg.reason.as_deref().unwrap_or("?"),
            leg.console_log.display(),
            qemu::console_tail(&leg.console_log, 40)
        );
    }
    let (md, json) = summary::write(&run)?;
    println!("summary: {} and {}", md.display(), json.display());
    // The closing line, in the plain form CI logs are read for (totals over every leg).
    let total = |f: fn(&results::Verdict) -> usize| -> usize {
        run.legs.iter().map(|l| f(&l.verdict)).sum()
    };
    println!(
        "test-vm: {} passed, {} failed, {} skipped",
        total(|v| v.passed),
        total(|v| v.failed + v.missing.len()),
        total(|v| v.skipped)
    );
    let failed: Vec<&str> = run
        .legs
        .iter()
        .filter(|l| !l.ok)
        .map(|l| l.leg.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} legs failed: {}",
            failed.len(),
            run.legs.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// Runs the legs on `jobs` threads; reports come back in leg order.
fn run_legs(ctx: &Run, legs: &[Leg], jobs: usize) -> Vec<LegReport> {
    let next = AtomicUsize::new(0);
    let reports: Mutex<Vec<Option<LegReport>>> =
        Mutex::new(std::iter::repeat_with(|| None).take(legs.len()).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(leg) = legs.get(i) else { break };
                    let report = run_leg(ctx, leg);
                    reports.lock().unwrap()[i] = Some(report);
                }
            });
        }
    });
    reports
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every leg ran"))
        .collect()
}

fn leg_dir(leg: &str) -> PathBuf {
    util::target_dir().join("vm/runs").join(leg)
}

/// The guest's settings file (shell assignments read by vm/init and vm/run-tests).
fn guest_conf(ctx: &Run, leg: &Leg, mode: &str) -> Result<String> {
    let kernel = &ctx.kernels[leg.kernel];
    let ws = util::workspace_root();
    let nextest_dir = ctx.nextest.parent().unwrap_or(Path::new("/"));
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        nextest_dir.display()
    );
    let junit = ws
        .join("target/nextest")
        .join(archive::PROFILE)
        .join("junit.xml");
    let modules_dir = kernel
        .modules_dir
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    // The guest mounts a fresh tmpfs over /tmp and /var/tmp, unless that would hide a file it
    // needs (a workspace or toolchain under /tmp): then the tmpfs goes elsewhere.
    let needed = [
        ws.as_path(),
        ctx.archive.dir.as_path(),
        ctx.nextest.as_path(),
        ctx.busybox.as_path(),
        kernel.modules_dir.as_deref().unwrap_or(Path::new("/")),
    ];
    let hides_needed = needed
        .iter()
        .any(|p| p.starts_with("/tmp") || p.starts_with("/var/tmp"));
    let tmpdir = if hides_needed {
        "/run/carton-vm/tmp"
    } else {
        "/tmp"
    };
    let vars: [(&str, String); 14] = [
        ("CV_MODE", mode.into()),
        ("CV_LEG", leg.name.clone()),
        ("CV_CGROUP", leg.cgroup.into()),
        ("CV_MODULES_DIR", modules_dir),
        ("CV_MODULES", ctx.guest_modules.modules.join(" ")),
        ("CV_ON_DEMAND", ctx.guest_modules.on_demand.join(" ")),
        ("CV_NEXTEST", ctx.nextest.display().to_string()),
        ("CV_WORKSPACE", ws.display().to_string()),
        ("CV_JUNIT", junit.display().to_string()),
        ("CV_CARTON_BIN", ctx.archive.carton.display().to_string()),
        ("CV_BUSYBOX", ctx.busybox.display().to_string()),
        ("CV_HOME", "/run/carton-vm/home".into()),
        ("CV_TMPDIR", tmpdir.into()),
        ("CV_PATH", path),
    ];
    let mut conf = String::from("# written by cargo xtask test-vm for this leg\n");
    for (k, v) in vars {
        let _ = writeln!(conf, "{k}={}", initramfs::shell_quote(&v));
    }
    Ok(conf)
}

/// The kernel command line of a leg: the watchdog settings, the leg's name (shown in the
/// console log) and `--kernel-append`.
fn cmdline(ctx: &Run, leg: &str) -> String {
    let mut line = format!("{} carton.leg={leg}", qemu::base_cmdline(ctx.accel));
    if let Some(extra) = &ctx.args.kernel_append {
        line.push(' ');
        line.push_str(extra);
    }
    line
}

/// Writes the leg's directory (fresh) and its initramfs; returns the VM description.
fn prepare_leg(ctx: &Run, leg: &Leg, mode: &str) -> Result<Vm> {
    let dir = leg_dir(&leg.name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let args = ctx.archive.guest_args(ctx.args.smp, &ctx.args.filter)?;
    let mut image = ctx.base_initramfs[leg.kernel].clone();
    image.extend(initramfs::leg(
        &guest_conf(ctx, leg, mode)?,
        &args,
        &ctx.args.guest_env,
    ));
    let initramfs = dir.join("initramfs.cpio");
    std::fs::write(&initramfs, image)?;
    // 1 MiB with recognisable content: what the device scenarios read through /dev/vda.
    let scratch_disk = dir.join("scratch.img");
    std::fs::write(&scratch_disk, b"carton scratch disk\n".repeat(52_429))?;
    Ok(Vm {
        accel: ctx.accel,
        kernel: ctx.kernels[leg.kernel].image.clone(),
        initramfs,
        cmdline: cmdline(ctx, &leg.name),
        smp: ctx.args.smp,
        memory_mib: ctx.args.memory,
        console: dir.join("console.log"),
        results: dir.join("results.bin"),
        scratch_disk,
        qemu_log: dir.join("qemu.log"),
        interactive: mode == "shell",
    })
}

fn run_leg(ctx: &Run, leg: &Leg) -> LegReport {
    let kernel = &ctx.kernels[leg.kernel];
    let tcg = ctx.accel == Accel::Tcg;
    let limits = Limits {
        boot: Duration::from_secs(ctx.args.boot_timeout.unwrap_or(if tcg { 60 } else { 20 })),
        stall: Duration::from_secs(ctx.args.stall_timeout),
        total: Duration::from_secs(ctx.args.timeout.unwrap_or(if tcg { 3600 } else { 900 })),
    };
    let mut report = LegReport {
        leg: leg.name.clone(),
        kernel: kernel.name.clone(),
        kernel_origin: kernel.origin.clone(),
        release: kernel.release.clone(),
        cgroup: leg.cgroup.into(),
        ok: false,
        reason: None,
        verdict: results::Verdict::default(),
        duration_s: 0.0,
        boot_s: None,
        guest_uptime_at_boot_s: None,
        first_test_s: None,
        console_log: leg_dir(&leg.name).join("console.log"),
    };
    let vm = match prepare_leg(ctx, leg, "tests") {
        Ok(vm) => vm,
        Err(e) => {
            report.reason = Some(format!("preparing the leg failed: {e:#}"));
            return report;
        }
    };
    println!(
        "[{}] booting {} with cgroup {} (console: {})",
        leg.name,
        kernel.release,
        leg.cgroup,
        vm.console.display()
    );
    let name = leg.name.clone();
    let ending = qemu::run(&vm, &limits, |elapsed, last| {
        println!(
            "[{name}] {} running; console: {}",
            summary::duration_text(elapsed),
            last.chars().take(120).collect::<String>()
        );
    });
    let ending = match ending {
        Ok(e) => e,
        Err(e) => {
            report.reason = Some(format!("running QEMU failed: {e:#}"));
            return report;
        }
    };
    let stream = results::parse_stream(&std::fs::read(&vm.results).unwrap_or_default());
    let mut verdict = results::judge(&stream, &ctx.archive.expected);
    if let Some(failure) = &ending.failure {
        verdict.problems.insert(0, failure.clone());
    }
    report.duration_s = ending.duration.as_secs_f64();
    report.boot_s = ending.booted_after.map(|d| d.as_secs_f64());
    report.guest_uptime_at_boot_s = stream.mark("booted").map(|m| m.uptime);
    // The first test's start: host time of the `tests` mark plus the guest's own clock from
    // that mark to the earliest testcase timestamp in the report.
    if let (Some(after), Some(mark), Some(first)) = (
        ending.tests_after,
        stream.mark("tests"),
        verdict.first_test_epoch,
    ) {
        report.first_test_s = Some(after.as_secs_f64() + (first - mark.epoch).max(0.0));
    }
    report.ok = verdict.ok();
    report.reason = if report.ok {
        None
    } else if let Some(p) = verdict.problems.first() {
        Some(p.clone())
    } else if verdict.failed > 0 {
        Some(format!("{} tests failed", verdict.failed))
    } else if !verdict.missing.is_empty() {
        Some(format!("{} tests have no result", verdict.missing.len()))
    } else {
        Some("duplicate or unexpected results".into())
    };
    println!(
        "[{}] {} in {}: {} passed, {} failed, {} skipped, {} missing (boot {}, first test {}){}",
        leg.name,
        if report.ok { "PASS" } else { "FAIL" },
        summary::duration_text(ending.duration),
        verdict.passed,
        verdict.failed,
        verdict.skipped,
        verdict.missing.len(),
        report.boot_s.map_or("-".into(), |s| format!("{s:.1}s")),
        report
            .first_test_s
            .map_or("-".into(), |s| format!("{s:.1}s")),
        report
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    report.verdict = verdict;
    report
}

/// `--shell`: the leg's guest with its console here, a shell instead of the tests.
fn shell(ctx: &Run, leg: &Leg) -> Result<()> {
    let vm = prepare_leg(ctx, leg, "shell")?;
    println!(
        "Booting {} with its console on this terminal; `exit` powers it off \
         (Ctrl-A X kills QEMU).",
        leg.name
    );
    let limits = Limits {
        boot: Duration::MAX,
        stall: Duration::MAX,
        total: Duration::MAX,
    };
    let ending = qemu::run(&vm, &limits, |_, _| {})?;
    if let Some(f) = ending.failure {
        bail!("{f}");
    }
    Ok(())
}

/// Decides how guests run: the probe boots the first kernel in probe mode (vm/init stops right
/// after reaching userspace) under KVM. Every leg of the run then uses the same answer.
fn choose_accel(
    wanted: AccelArg,
    kernel: &Kernel,
    base: &[u8],
    dir: &Path,
) -> Result<(Accel, String)> {
    if wanted == AccelArg::Tcg {
        return Ok((Accel::Tcg, "--accel tcg".into()));
    }
    if let Err(e) = qemu::kvm_device_usable() {
        let why = format!("{e:#}");
        ensure!(wanted == AccelArg::Auto, "--accel kvm: {why}");
        return Ok((Accel::Tcg, format!("KVM unavailable ({why}): using TCG")));
    }
    util::section("Probing KVM with a short boot");
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let conf = "CV_MODE='probe'\n";
    let mut image = base.to_vec();
    image.extend(initramfs::leg(conf, &[], &[]));
    let initramfs = dir.join("initramfs.cpio");
    std::fs::write(&initramfs, image)?;
    let scratch_disk = dir.join("scratch.img");
    std::fs::write(&scratch_disk, [0u8; 4096])?;
    let vm = Vm {
        accel: Accel::Kvm,
        kernel: kernel.image.clone(),
        initramfs,
        cmdline: qemu::base_cmdline(Accel::Kvm),
        smp: 1,
        memory_mib: 512,
        console: dir.join("console.log"),
        results: dir.join("results.bin"),
        scratch_disk,
        qemu_log: dir.join("qemu.log"),
        interactive: false,
    };
    const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
    match qemu::probe_kvm(&vm, PROBE_TIMEOUT) {
        Ok(took) => Ok((
            Accel::Kvm,
            format!("KVM probe reached userspace in {:.1}s", took.as_secs_f64()),
        )),
        Err(e) => {
            let why = format!("{e:#}").lines().next().unwrap_or("").to_string();
            ensure!(
                wanted == AccelArg::Auto,
                "--accel kvm: the KVM probe failed: {e:#}\n(console: {})",
                vm.console.display()
            );
            Ok((
                Accel::Tcg,
                format!("KVM probe failed ({why}): falling back to TCG"),
            ))
        }
    }
}

/// `KEY=VALUE` with a shell-variable-like key and no newline (the guest reads one per line).
fn parse_env(s: &str) -> Result<String, String> {
    let (key, value) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    let key_ok = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !key_ok || value.contains('\n') {
        return Err(format!(
            "{s:?}: expected KEY=VALUE (KEY of letters, digits, _; no newline)"
        ));
    }
    Ok(s.to_string())
}

/// `name` in $PATH.
fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The cargo-nextest binary the guest runs (the host's, through the shared root).
fn find_nextest() -> Result<PathBuf> {
    let candidates = find_in_path("cargo-nextest").into_iter().chain(
        [
            std::env::var_os("CARGO_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")),
        ]
        .into_iter()
        .flatten()
        .map(|d| d.join("bin/cargo-nextest")),
    );
    for c in candidates {
        if c.is_file() {
            return Ok(std::path::absolute(&c)?);
        }
    }
    bail!("cargo-nextest not found in PATH, $CARGO_HOME/bin or ~/.cargo/bin")
}
