//! Timing commands: one invocation = fork, exec, wait, measured on a monotonic clock around
//! spawn and wait (the same overhead for every tool); cases of a row are interleaved, each round
//! in a shuffled order, so a burst of background work hits every tool alike and no tool always
//! follows the same one (what ran just before matters: e.g. the first write to a v1
//! `cgroup.procs` waits for an RCU grace period unless another write happened moments before).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::ns::MountNs;

/// A command as data, so it can be both timed and handed to hyperfine.
#[derive(Clone)]
pub struct Invocation {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub ns: Option<MountNs>,
}

impl Invocation {
    pub fn new(program: impl AsRef<OsStr>) -> Invocation {
        Invocation {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            ns: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Invocation {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Invocation
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(ns) = &self.ns {
            ns.apply(&mut cmd);
        }
        cmd
    }

    /// The command line as a shell would take it (for reports and for hyperfine -N).
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs it, stdout discarded, stderr to `log`; Ok(elapsed) when it exits 0.
    pub fn time(&self, log: &Path) -> Result<Duration, String> {
        let stderr = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let start = Instant::now();
        let status = cmd
            .status()
            .map_err(|e| format!("cannot run {}: {e}", self.program.to_string_lossy()))?;
        let elapsed = start.elapsed();
        if status.success() {
            Ok(elapsed)
        } else {
            Err(format!("{status}: {}", tail(log)))
        }
    }

    /// Runs it to completion, capturing stdout; Err(status + stderr tail) on failure.
    pub fn output(&self) -> Result<String, String> {
        let out = self
            .command()
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.program.to_string_lossy()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`{}` {}: {}",
                self.display(),
                out.status,
                last_lines(&String::from_utf8_lossy(&out.stderr), 3)
            ))
        }
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The last lines of a log file (the reason a command failed).
pub fn tail(log: &Path) -> String {
    last_lines(&std::fs::read_to_string(log).unwrap_or_default(), 3)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let s = lines[lines.len().saturating_sub(n)..].join(" | ");
    if s.is_empty() {
        "(no error output)".into()
    } else {
        s
    }
}

/// Median, min, max (and the samples) of one measured line, in the row's unit.
#[derive(Serialize, Clone, Debug)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub n: usize,
    pub samples: Vec<f64>,
}

impl Stats {
    pub fn of(samples: Vec<f64>) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            mean: sorted.iter().sum::<f64>() / n as f64,
            n,
            samples,
        })
    }
}

/// One command of a latency row.
#[derive(Clone)]
pub struct Case {
    /// Short, file-name friendly (logs/<row>-<key>.stderr).
    pub key: String,
    pub inv: Invocation,
    /// Run after a failed invocation (e.g. `runc delete -f ID`), so the next one starts clean.
    pub after_failure: Option<Invocation>,
}

/// Interleaved latency measurement: `warmup` unrecorded rounds, then `runs` rounds, each in
/// the order [`round_order`] gives. A case that fails once is not run again; its result is
/// the reason. Results are in milliseconds.
pub fn interleaved(
    row: &str,
    cases: &[Case],
    warmup: usize,
    runs: usize,
    logs: &Path,
) -> Vec<Result<Stats, String>> {
    let n = cases.len();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut failed: Vec<Option<String>> = vec![None; n];
    let log_of = |c: &Case| -> PathBuf { logs.join(format!("{row}-{}.stderr", c.key)) };
    for round in 0..warmup + runs {
        for i in round_order(round, n) {
            if failed[i].is_some() {
                continue;
            }
            let case = &cases[i];
            match case.inv.time(&log_of(case)) {
                Ok(d) => {
                    if round >= warmup {
                        samples[i].push(d.as_secs_f64() * 1e3);
                    }
                }
                Err(e) => {
                    let phase = if round < warmup { "warm-up" } else { "run" };
                    let done = round.saturating_sub(warmup);
                    println!("  {} failed in {phase} {done}: {e}", case.key);
                    failed[i] = Some(format!("failed after {done} good runs: {e}"));
                    if let Some(cleanup) = &case.after_failure {
                        let _ = cleanup.output();
                    }
                }
            }
        }
        if round + 1 == warmup {
            println!("  warm-up done ({warmup} rounds)");
        } else if round >= warmup && (round + 1 - warmup).is_multiple_of(10) {
            println!("  {} of {runs} rounds", round + 1 - warmup);
        }
    }
    samples
        .into_iter()
        .zip(failed)
        .map(|(s, f)| match f {
            Some(reason) => Err(reason),
            None => Stats::of(s).ok_or_else(|| "no runs".to_string()),
        })
        .collect()
}

/// The order of the cases in round `round`: a permutation of 0..n shuffled (Fisher–Yates) by
/// a small generator seeded with the round, so every run of the benchmark uses the same orders.
pub fn round_order(round: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    // splitmix64 of the round number, then xorshift64.
    let mut x = (round as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// What else the machine was doing during a row: the 1-minute load average before and after,
/// and the CPU time spent outside this process and its waited-for children (other users'
/// work, kernel threads, daemons such as detached supervisors), in cores.
#[derive(Serialize, Clone, Debug)]
pub struct Conditions {
    pub load_before: f64,
    pub load_after: f64,
    pub waited_s: f64,
    /// The load stayed above the threshold for the whole allowed wait.
    pub not_quiet: bool,
    pub other_cpu_cores: f64,
}

pub struct Monitor {
    start: Instant,
    busy: f64,
    own: f64,
    load_before: f64,
    waited_s: f64,
    not_quiet: bool,
}

impl Monitor {
    pub fn start(load_before: f64, waited_s: f64, not_quiet: bool) -> Monitor {
        Monitor {
            start: Instant::now(),
            busy: busy_cpu_seconds(),
            own: own_cpu_seconds(),
            load_before,
            waited_s,
            not_quiet,
        }
    }

    pub fn finish(self) -> Conditions {
        let wall = self.start.elapsed().as_secs_f64().max(1e-3);
        let other = (busy_cpu_seconds() - self.busy) - (own_cpu_seconds() - self.own);
        Conditions {
            load_before: self.load_before,
            load_after: load1(),
            waited_s: self.waited_s,
            not_quiet: self.not_quiet,
            other_cpu_cores: (other / wall).max(0.0),
        }
    }
}

/// The 1-minute load average.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Non-idle CPU seconds of the whole machine since boot (/proc/stat, all CPUs).
fn busy_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: f64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    busy / hz
}

/// CPU seconds of this process and its reaped children.
fn own_cpu_seconds() -> f64 {
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage fills the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut ru) } == 0 {
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            total += tv(ru.ru_utime) + tv(ru.ru_stime);
        }
    }
    total
}

/// Waits until the 1-minute load is below `max_load`, for at most `max_wait`; returns the load
/// then, the seconds waited and whether it gave up.
pub fn wait_for_quiet(max_load: f64, max_wait: Duration) -> (f64, f64, bool) {
    let start = Instant::now();
    let mut last_print = Instant::now() - Duration::from_secs(3600);
    loop {
        let load = load1();
        if load < max_load {
            return (load, start.elapsed().as_secs_f64(), false);
        }
        if start.elapsed() >= max_wait {
            println!(
                "  the load is still {load:.2} after {:.0} s: measuring anyway (the report says so)",
                start.elapsed().as_secs_f64()
            );
            return (load, start.elapsed().as_secs_f64(), true);
        }
        if last_print.elapsed() >= Duration::from_secs(30) {
            println!(
                "  waiting for a quiet machine: 1-minute load {load:.2} ≥ {max_load} \
                 ({:.0} s of at most {} s)",
                start.elapsed().as_secs_f64(),
                max_wait.as_secs()
            );
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_orders_are_permutations_and_vary() {
        let orders: Vec<Vec<usize>> = (0..20).map(|r| round_order(r, 5)).collect();
        for o in &orders {
            let mut sorted = o.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        }
        // Every case is preceded by more than one other case across rounds.
        for case in 0..5 {
            let mut before: Vec<usize> = orders
                .iter()
                .filter_map(|o| {
                    let p = o.iter().position(|&c| c == case)?;
                    p.checked_sub(1).map(|q| o[q])
                })
                .collect();
            before.sort();
            before.dedup();
            assert!(before.len() > 1, "case {case} always follows {before:?}");
        }
        assert_eq!(round_order(3, 5), round_order(3, 5));
    }

    #[test]
    fn stats_median_min_max() {
        let s = Stats::of(vec![3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 10.0, 4));
        assert!(Stats::of(Vec::new()).is_none());
    }
}
