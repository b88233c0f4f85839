//! Starting QEMU for one guest and watching it until it powers off, panics or hangs; and the KVM
//! probe behind `--accel auto`.
//!
//! The guest's devices: the console on the first serial port (written to console.log), a
//! virtio-serial port named `carton.results` written to results.bin (the only channel results
//! come back on), the host's `/` exported read-only over virtio-9p, and a virtio RNG so early
//! getrandom() calls never wait for entropy. No network card: the guest addresses nothing.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::results;

/// How the guest's CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's software emulation: slow (~10–20× here) but available everywhere.
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

pub const QEMU: &str = "qemu-system-x86_64";

/// Where distributions put QEMU's minimal firmware (package qemu-system-data on Debian/Ubuntu).
const QBOOT: [&str; 2] = [
    "/usr/share/qemu/qboot.rom",
    "/usr/share/qemu-firmware/qboot.rom",
];

/// Everything one QEMU run needs.
pub struct Vm {
    pub accel: Accel,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: String,
    pub smp: u32,
    pub memory_mib: u32,
    pub console: PathBuf,
    pub results: PathBuf,
    /// A small read-only disk (`/dev/vda` in the guest): the device scenarios need a block
    /// device the guest's root may open, and the guest's root filesystem is 9p.
    pub scratch_disk: PathBuf,
    /// QEMU's own messages (stderr).
    pub qemu_log: PathBuf,
    /// Console on this terminal (`--shell`) instead of console.log.
    pub interactive: bool,
}

/// The kernel command line every guest gets, before the leg's own additions.
///
/// - `panic=-1` + QEMU's `-no-reboot`: a panic ends QEMU at once instead of rebooting;
///   `oops=panic`, `softlockup_panic`, `hung_task_panic` and `panic_on_rcu_stall` turn the other
///   ways a kernel goes wrong into that same panic.
/// - Under TCG the RCU stall timeout and the soft-lockup threshold are raised: a busy host can
///   starve an emulated vCPU long enough for a false alarm at the default 21 s and 20 s (a CI
///   leg once died of "soft lockup - CPU#0 stuck for 23s" inside a cgroup mkdir, a path that
///   takes microseconds); a real stall or lockup still panics, after 60 s.
/// - `mitigations=off`, `nokaslr`, `cryptomgr.notests`: a throwaway guest needs no CPU-bug
///   mitigations, address randomisation or crypto self-tests; together they save ~1 s of boot
///   under TCG.
/// - `acpi=off`: ACPI's interpreter and its PCI interrupt-link set-up cost ~0.8 s under TCG; the
///   guest needs neither (QEMU's `pc` machine also describes CPUs and interrupts in MP tables).
///   Without ACPI there is no power-off: guests end with `reboot -f`, which -no-reboot turns
///   into QEMU's exit.
pub fn base_cmdline(accel: Accel) -> String {
    // watchdog_thresh is half the soft-lockup period.
    let (stall, watchdog_thresh) = match accel {
        Accel::Kvm => (21, 10),
        Accel::Tcg => (60, 30),
    };
    format!(
        "console=ttyS0 loglevel=4 panic=-1 oops=panic softlockup_panic=1 hung_task_panic=1 \
         sysctl.kernel.panic_on_rcu_stall=1 rcupdate.rcu_cpu_stall_timeout={stall} \
         watchdog_thresh={watchdog_thresh} \
         mitigations=off nokaslr cryptomgr.notests acpi=off"
    )
}

/// The QEMU command line of `vm`.
pub fn command(vm: &Vm) -> Command {
    let mut c = Command::new(QEMU);
    match vm.accel {
        Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => c.args(["-accel", "tcg,thread=multi", "-cpu", "max"]),
    };
    c.args([
        "-machine",
        "pc",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
    ]);
    // qboot, when QEMU ships it, starts the kernel ~0.3 s sooner than SeaBIOS under TCG; both
    // boot the PVH vmlinux and the bzImage alike.
    if let Some(bios) = QBOOT.iter().find(|p| Path::new(p).is_file()) {
        c.args(["-bios", bios]);
    }
    c.args(["-display", "none", "-monitor", "none"]);
    c.arg("-m").arg(vm.memory_mib.to_string());
    c.arg("-smp").arg(vm.smp.to_string());
    c.arg("-kernel").arg(&vm.kernel);
    c.arg("-initrd").arg(&vm.initramfs);
    c.arg("-append").arg(&vm.cmdline);
    if vm.interactive {
        c.args(["-serial", "mon:stdio"]);
    } else {
        c.arg("-chardev").arg(chardev_file("console", &vm.console));
        c.args(["-serial", "chardev:console"]);
    }
    c.args(["-device", "virtio-serial-pci,id=vser"]);
    c.arg("-chardev").arg(chardev_file("results", &vm.results));
    c.args([
        "-device",
        "virtserialport,bus=vser.0,chardev=results,name=carton.results",
    ]);
    // The host's root, read-only; `multidevs=remap` keeps inode numbers unique across the host's
    // mounts (QEMU warns otherwise).
    c.args([
        "-fsdev",
        "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device",
        "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
    ]);
    c.args(["-device", "virtio-rng-pci"]);
    c.arg("-drive").arg(format!(
        "file={},if=none,id=scratch,format=raw,readonly=on",
        vm.scratch_disk.display().to_string().replace(',', ",,")
    ));
    c.args(["-device", "virtio-blk-pci,drive=scratch"]);
    c
}

/// `file,id=<id>,path=<path>`: QEMU's option syntax doubles commas in values.
fn chardev_file(id: &str, path: &Path) -> String {
    format!(
        "file,id={id},path={}",
        path.display().to_string().replace(',', ",,")
    )
}

/// Watchdog limits for one run.
pub struct Limits {
    /// The guest must send its `booted` mark within this.
    pub boot: Duration,
    /// Neither console nor results port may stay silent longer than this.
    pub stall: Duration,
    /// The whole run.
    pub total: Duration,
}

/// How a run ended.
pub struct Ending {
    /// Set when the run failed for a reason the results cannot show (panic, hang, timeout).
    pub failure: Option<String>,
    pub duration: Duration,
    /// Host time from QEMU's start to the `booted` and `tests` marks (when seen).
    pub booted_after: Option<Duration>,
    pub tests_after: Option<Duration>,
}

/// Kernel log lines that mean the guest is lost, and how to call them. Matched only on lines
/// carrying the kernel's `[ seconds.micros]` prefix, so test output that quotes them is ignored.
const FATAL_PATTERNS: [(&str, &str); 7] = [
    ("Kernel panic - not syncing", "kernel panic"),
    ("detected stalls on CPUs", "RCU stall"),
    ("rcu_sched self-detected stall", "RCU stall"),
    ("rcu_preempt self-detected stall", "RCU stall"),
    ("BUG: soft lockup", "soft lockup"),
    ("blocked for more than", "hung task"),
    ("Oops:", "kernel oops"),
];

/// The first fatal kernel message in a console text: (what, the line).
pub fn fatal_kernel_message(console: &str) -> Option<(&'static str, String)> {
    console.lines().find_map(|line| {
        let kernel_line = line
            .trim_start()
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .is_some_and(|(ts, _)| ts.trim().parse::<f64>().is_ok());
        if !kernel_line {
            return None;
        }
        FATAL_PATTERNS
            .iter()
            .find(|(needle, _)| line.contains(needle))
            .map(|(_, what)| (*what, line.trim().to_string()))
    })
}

/// Runs `vm` to its end. `progress` is called about once a minute with the elapsed time and the
/// last console line, for long runs in CI logs.
pub fn run(vm: &Vm, limits: &Limits, mut progress: impl FnMut(Duration, &str)) -> Result<Ending> {
    for f in [&vm.console, &vm.results] {
        std::fs::write(f, b"").with_context(|| format!("creating {}", f.display()))?;
    }
    let mut cmd = command(vm);
    if !vm.interactive {
        cmd.stdin(Stdio::null());
    }
    let qemu_log = std::fs::File::create(&vm.qemu_log)
        .with_context(|| format!("creating {}", vm.qemu_log.display()))?;
    cmd.stderr(qemu_log);
    // QEMU dies with the thread that watches it, even when xtask itself is killed (Ctrl-C, a CI
    // timeout): no guest is left running.
    // SAFETY: prctl with constant arguments is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {QEMU} (install the qemu-system-x86 package)"))?;
    let mut guard = KillOnDrop(Some(&mut child));

    let mut console = Tail::default();
    let mut results_len = 0u64;
    let mut last_activity = Instant::now();
    let mut last_progress = Instant::now();
    let mut ending = Ending {
        failure: None,
        duration: Duration::ZERO,
        booted_after: None,
        tests_after: None,
    };
    let mut fatal_seen: Option<(Instant, String)> = None;

    let mut status;
    loop {
        status = guard.child().try_wait()?;
        let exited = status.is_some();
        let grew_console = console.read_new(&vm.console)?;
        let size = std::fs::metadata(&vm.results).map(|m| m.len()).unwrap_or(0);
        if grew_console || size != results_len {
            last_activity = Instant::now();
        }
        if size != results_len {
            results_len = size;
            let stream = results::parse_stream(&std::fs::read(&vm.results).unwrap_or_default());
            if ending.booted_after.is_none() && stream.mark("booted").is_some() {
                ending.booted_after = Some(start.elapsed());
            }
            if ending.tests_after.is_none() && stream.mark("tests").is_some() {
                ending.tests_after = Some(start.elapsed());
            }
        }
        if fatal_seen.is_none()
            && let Some((what, line)) = fatal_kernel_message(console.unscanned_lines())
        {
            fatal_seen = Some((Instant::now(), format!("{what}: {line}")));
        }
        if exited {
            break;
        }
        let now = Instant::now();
        let reason = if let Some((seen, what)) = &fatal_seen {
            // panic=-1 normally ends QEMU within a moment; a stall report may not panic (an
            // older kernel without panic_on_rcu_stall): do not wait for the total timeout.
            (now.duration_since(*seen) > Duration::from_secs(5)).then(|| what.clone())
        } else if !vm.interactive && ending.booted_after.is_none() && start.elapsed() > limits.boot
        {
            Some(format!(
                "the guest did not boot within {}s (no `booted` mark on the results port)",
                limits.boot.as_secs()
            ))
        } else if !vm.interactive && now.duration_since(last_activity) > limits.stall {
            Some(format!(
                "the guest hangs: no console output and no results for {}s",
                limits.stall.as_secs()
            ))
        } else if !vm.interactive && start.elapsed() > limits.total {
            Some(format!(
                "the leg did not finish within its timeout of {}s",
                limits.total.as_secs()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            guard.kill();
            ending.failure = Some(reason);
            break;
        }
        if !vm.interactive && last_progress.elapsed() > Duration::from_secs(60) {
            last_progress = Instant::now();
            progress(start.elapsed(), console.last_line());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ending.duration = start.elapsed();
    // One last read: the final lines may have arrived with QEMU's exit.
    console.read_new(&vm.console)?;
    if ending.failure.is_none()
        && let Some((what, line)) = fatal_kernel_message(&console.text)
    {
        ending.failure = Some(format!("{what}: {line}"));
    }
    // A guest ends QEMU with status 0 (reboot under -no-reboot); anything else is QEMU's failure.
    if ending.failure.is_none()
        && let Some(status) = status.filter(|s| !s.success())
    {
        let log = std::fs::read_to_string(&vm.qemu_log).unwrap_or_default();
        let last = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        ending.failure = Some(format!("QEMU failed ({status}): {last}"));
    }
    Ok(ending)
}

/// Kills QEMU when the watcher returns early (an error, a timeout): no VM outlives xtask.
struct KillOnDrop<'a>(Option<&'a mut Child>);

impl KillOnDrop<'_> {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
    fn kill(&mut self) {
        let child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut()
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The console log read incrementally; only the text kept for scanning (console logs of a whole
/// test run are a few hundred KiB).
#[derive(Default)]
struct Tail {
    offset: u64,
    text: String,
    /// How much of `text` has been scanned for fatal messages (whole lines only).
    scanned: usize,
}

impl Tail {
    /// Appends what was written since the last call; true when something was.
    fn read_new(&mut self, path: &Path) -> Result<bool> {
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(_) => return Ok(false),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.text.push_str(&String::from_utf8_lossy(&buf));
        Ok(!buf.is_empty())
    }

    /// The complete lines not handed out before.
    fn unscanned_lines(&mut self) -> &str {
        let start = self.scanned;
        let end = self.text[start..]
            .rfind('\n')
            .map_or(start, |i| start + i + 1);
        self.scanned = end;
        &self.text[start..end]
    }

    fn last_line(&self) -> &str {
        self.text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }
}

/// The last `n` lines of a console log, for failure reports.
pub fn console_tail(path: &Path, n: usize) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether /dev/kvm can be opened for reading and writing (what QEMU needs).
pub fn kvm_device_usable() -> Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .context("cannot open /dev/kvm read-write")
}

/// Boots `probe_vm` (a guest in probe mode) under KVM and checks that it reaches userspace
/// within `timeout`. KVM can be present and still unusable: on some nested setups the guest
/// never leaves the boot ROM, which only a real boot shows.
pub fn probe_kvm(probe_vm: &Vm, timeout: Duration) -> Result<Duration> {
    kvm_device_usable()?;
    let limits = Limits {
        boot: timeout,
        stall: timeout,
        total: timeout,
    };
    let ending = run(probe_vm, &limits, |_, _| {})?;
    if let Some(failure) = ending.failure {
        bail!("{failure}\nconsole: {}", console_tail(&probe_vm.console, 5));
    }
    results::probe_ok(&std::fs::read(&probe_vm.results)?)?;
    Ok(ending.duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_messages_only_on_kernel_lines() {
        let console = "PASS conformance::x Kernel panic - not syncing (quoted by a test)\n\
                       [    3.201212] sysrq: Trigger a crash\n\
                       [    3.205000] Kernel panic - not syncing: sysrq triggered crash\n";
        let (what, line) = fatal_kernel_message(console).unwrap();
        assert_eq!(what, "kernel panic");
        assert!(line.starts_with("[    3.205000]"));
        assert!(fatal_kernel_message("all good\n[ 1.0] reboot: Power down\n").is_none());
        let stall = "[   70.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n";
        assert_eq!(fatal_kernel_message(stall).unwrap().0, "RCU stall");
    }

    #[test]
    fn chardev_paths_escape_commas() {
        assert_eq!(
            chardev_file("c", Path::new("/a,b/log")),
            "file,id=c,path=/a,,b/log"
        );
    }
}
