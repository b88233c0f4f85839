//! `-m`, `--memory-swap`, `--memory-reservation`, `--cpus`, `--cpu-shares`, `--cpuset-cpus`,
//! `--cpuset-mems`, `--pids-limit`: parsed and checked against the host with docker's rules,
//! so a bad value is refused before any container or cgroup exists.

use crate::cgroups::{Resources, parse_cpu_list, resources::DEFAULT_CPU_PERIOD};

use super::ContainerError;

/// docker's floor for memory limits: below it a container cannot even start its runtime.
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// The limit flags as typed.
#[derive(Debug, Clone, Default)]
pub struct LimitFlags {
    pub memory: Option<String>,
    pub memory_swap: Option<String>,
    pub memory_reservation: Option<String>,
    pub cpus: Option<String>,
    pub cpu_shares: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids_limit: Option<i64>,
}

/// What the checks compare against.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub online_cpus: Vec<u32>,
    pub online_mems: Vec<u32>,
    /// Swap exists and can be limited: then `-m` alone allows as much swap again, as docker
    /// does (memory+swap = 2 × memory).
    pub swap_limit: bool,
}

impl HostFacts {
    pub fn read() -> HostFacts {
        let list = |path: &str, default: &str| {
            let text = std::fs::read_to_string(path).unwrap_or_else(|_| default.to_string());
            parse_cpu_list(text.trim()).unwrap_or_default()
        };
        HostFacts {
            online_cpus: list("/sys/devices/system/cpu/online", "0"),
            online_mems: list("/sys/devices/system/node/online", "0"),
            swap_limit: crate::cgroups::host_has_swap()
                && crate::cgroups::supports_swap_limit(&crate::cgroups::Layout::detect()),
        }
    }
}

fn invalid(flag: &str, value: &str, why: impl std::fmt::Display) -> ContainerError {
    ContainerError::InvalidInput(format!("invalid argument {value:?} for {flag}: {why}"))
}

impl LimitFlags {
    /// The limits for a new container.
    pub fn to_resources(&self, host: &HostFacts) -> Result<Resources, ContainerError> {
        let mut r = self.parse(host, &Resources::default())?;
        if host.swap_limit && r.memory_swap.is_none() {
            r.memory_swap = r.memory.map(|m| m * 2);
        }
        Ok(r)
    }

    /// The changes `update` asks for; cross-checks use `current` for what is not mentioned.
    pub fn to_update(
        &self,
        host: &HostFacts,
        current: &Resources,
    ) -> Result<Resources, ContainerError> {
        let change = self.parse(host, current)?;
        let merged = change.merged_over(current);
        if let (Some(memory), Some(swap)) = (merged.memory, merged.memory_swap) {
            if swap != -1 && swap < memory {
                return Err(ContainerError::InvalidInput(
                    "the memory limit must not exceed the memory+swap limit: update --memory-swap as well".into(),
                ));
            }
        }
        Ok(change)
    }

    fn parse(&self, host: &HostFacts, current: &Resources) -> Result<Resources, ContainerError> {
        let mut r = Resources::default();
        if let Some(text) = &self.memory {
            let bytes = parse_size(text).map_err(|e| invalid("-m, --memory", text, e))?;
            if bytes < MIN_MEMORY {
                return Err(invalid(
                    "-m, --memory",
                    text,
                    "the minimum memory limit is 6MiB",
                ));
            }
            r.memory = Some(bytes);
        }
        if let Some(text) = &self.memory_swap {
            let flag = "--memory-swap";
            let swap = if text.trim() == "-1" {
                -1
            } else {
                parse_size(text).map_err(|e| invalid(flag, text, e))?
            };
            let Some(memory) = r.memory.or(current.memory) else {
                return Err(invalid(
                    flag,
                    text,
                    "a swap limit needs a memory limit (-m)",
                ));
            };
            if swap != -1 && swap < memory {
                return Err(invalid(
                    flag,
                    text,
                    "memory+swap must be at least the memory limit",
                ));
            }
            r.memory_swap = Some(swap);
        }
        if let Some(text) = &self.memory_reservation {
            let flag = "--memory-reservation";
            let bytes = parse_size(text).map_err(|e| invalid(flag, text, e))?;
            if bytes < MIN_MEMORY {
                return Err(invalid(
                    flag,
                    text,
                    "the minimum memory reservation is 6MiB",
                ));
            }
            if r.memory.or(current.memory).is_some_and(|m| bytes > m) {
                return Err(invalid(
                    flag,
                    text,
                    "the reservation exceeds the memory limit",
                ));
            }
            r.memory_reservation = Some(bytes);
        }
        if let Some(text) = &self.cpus {
            let flag = "--cpus";
            let cpus: f64 = text
                .trim()
                .parse()
                .map_err(|_| invalid(flag, text, "not a number"))?;
            let available = host.online_cpus.len().max(1) as f64;
            if !cpus.is_finite() || cpus < 0.01 || cpus > available {
                return Err(invalid(
                    flag,
                    text,
                    format!(
                        "the range is 0.01 to {available:.2}, as there are only {available} CPUs available"
                    ),
                ));
            }
            r.cpu_period = Some(DEFAULT_CPU_PERIOD);
            r.cpu_quota = Some((cpus * DEFAULT_CPU_PERIOD as f64).round() as i64);
        }
        if let Some(shares) = self.cpu_shares {
            if shares != 0 {
                if !(2..=262_144).contains(&shares) {
                    return Err(invalid(
                        "--cpu-shares",
                        &shares.to_string(),
                        "the range is 2 to 262144",
                    ));
                }
                r.cpu_shares = Some(shares as u64);
            }
        }
        if let Some(text) = &self.cpuset_cpus {
            check_list("--cpuset-cpus", text, &host.online_cpus, "CPUs")?;
            r.cpuset_cpus = Some(text.trim().to_string());
        }
        if let Some(text) = &self.cpuset_mems {
            check_list("--cpuset-mems", text, &host.online_mems, "memory nodes")?;
            r.cpuset_mems = Some(text.trim().to_string());
        }
        if let Some(limit) = self.pids_limit {
            if limit < -1 {
                return Err(invalid(
                    "--pids-limit",
                    &limit.to_string(),
                    "use a positive number, or -1 for unlimited",
                ));
            }
            // 0 and -1 both mean "no limit", as in docker.
            r.pids_limit = Some(if limit == 0 { -1 } else { limit });
        }
        Ok(r)
    }
}

fn check_list(flag: &str, text: &str, online: &[u32], what: &str) -> Result<(), ContainerError> {
    let wanted = parse_cpu_list(text).map_err(|e| invalid(flag, text, e))?;
    let missing: Vec<String> = wanted
        .iter()
        .filter(|c| !online.contains(c))
        .map(u32::to_string)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(invalid(
            flag,
            text,
            format!(
                "requested {what} are not available: {} (available: {})",
                missing.join(","),
                online
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ))
    }
}

/// docker's size syntax: a number with an optional binary unit — `512`, `64k`, `1.5g`,
/// `100MiB`, `2GB` (all powers of 1024).
pub fn parse_size(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(format!("invalid size {text:?}: unknown unit")),
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(format!("invalid size {text:?}: too large"));
    }
    Ok(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostFacts {
        HostFacts {
            online_cpus: vec![0, 1],
            online_mems: vec![0],
            swap_limit: false,
        }
    }

    #[test]
    fn swap_defaults_to_twice_the_memory_where_swap_exists() {
        let f = LimitFlags {
            memory: Some("32m".into()),
            ..flags()
        };
        let with_swap = HostFacts {
            swap_limit: true,
            ..host()
        };
        assert_eq!(
            f.to_resources(&with_swap).unwrap().memory_swap,
            Some(64 << 20)
        );
        assert_eq!(f.to_resources(&host()).unwrap().memory_swap, None);
    }

    #[test]
    fn update_checks_against_current_limits() {
        let current = Resources {
            memory: Some(64 << 20),
            memory_swap: Some(128 << 20),
            ..Default::default()
        };
        let swap_only = LimitFlags {
            memory_swap: Some("256m".into()),
            ..flags()
        };
        assert_eq!(
            swap_only.to_update(&host(), &current).unwrap().memory_swap,
            Some(256 << 20)
        );
        let too_much = LimitFlags {
            memory: Some("256m".into()),
            ..flags()
        };
        assert!(too_much.to_update(&host(), &current).is_err());
    }

    fn flags() -> LimitFlags {
        LimitFlags::default()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64k").unwrap(), 65_536);
        assert_eq!(parse_size("32m").unwrap(), 32 << 20);
        assert_eq!(parse_size("32MB").unwrap(), 32 << 20);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("100MiB").unwrap(), 100 << 20);
        for bad in ["", "abc", "1x", "-5m", "1..2m"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memory_flags() {
        let r = LimitFlags {
            memory: Some("32m".into()),
            memory_swap: Some("64m".into()),
            memory_reservation: Some("16m".into()),
            ..flags()
        }
        .to_resources(&host())
        .unwrap();
        assert_eq!(
            (r.memory, r.memory_swap, r.memory_reservation),
            (Some(32 << 20), Some(64 << 20), Some(16 << 20))
        );
        let bad = [
            LimitFlags {
                memory: Some("abc".into()),
                ..flags()
            },
            LimitFlags {
                memory: Some("1k".into()),
                ..flags()
            },
            LimitFlags {
                memory_swap: Some("64m".into()),
                ..flags()
            },
            LimitFlags {
                memory: Some("64m".into()),
                memory_swap: Some("32m".into()),
                ..flags()
            },
            LimitFlags {
                memory: Some("64m".into()),
                memory_reservation: Some("128m".into()),
                ..flags()
            },
        ];
        for b in bad {
            let err = b.to_resources(&host()).unwrap_err().to_string();
            assert!(err.contains("--memory"), "{err}");
        }
        let unlimited_swap = LimitFlags {
            memory: Some("32m".into()),
            memory_swap: Some("-1".into()),
            ..flags()
        };
        assert_eq!(
            unlimited_swap.to_resources(&host()).unwrap().memory_swap,
            Some(-1)
        );
    }

    #[test]
    fn cpu_flags() {
        let r = LimitFlags {
            cpus: Some("0.5".into()),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0-1".into()),
            ..flags()
        }
        .to_resources(&host())
        .unwrap();
        assert_eq!((r.cpu_quota, r.cpu_period), (Some(50_000), Some(100_000)));
        assert_eq!(r.cpu_shares, Some(512));
        for bad in [
            LimitFlags {
                cpus: Some("0".into()),
                ..flags()
            },
            LimitFlags {
                cpus: Some("3".into()),
                ..flags()
            },
            LimitFlags {
                cpus: Some("x".into()),
                ..flags()
            },
            LimitFlags {
                cpu_shares: Some(1),
                ..flags()
            },
            LimitFlags {
                cpuset_cpus: Some("99".into()),
                ..flags()
            },
            LimitFlags {
                cpuset_mems: Some("1".into()),
                ..flags()
            },
        ] {
            assert!(b_err(&bad));
        }
    }

    fn b_err(f: &LimitFlags) -> bool {
        f.to_resources(&host()).is_err()
    }

    #[test]
    fn pids_flag() {
        let p = |n| {
            LimitFlags {
                pids_limit: Some(n),
                ..flags()
            }
            .to_resources(&host())
        };
        assert_eq!(p(10).unwrap().pids_limit, Some(10));
        assert_eq!(p(-1).unwrap().pids_limit, Some(-1));
        assert_eq!(p(0).unwrap().pids_limit, Some(-1));
        assert!(p(-5).unwrap_err().to_string().contains("--pids-limit"));
    }
}
