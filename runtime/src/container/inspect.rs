//! `inspect`: a container as docker's JSON shows it, built from its record and its spec.

use oci_spec::runtime::Spec;
use serde_json::{Value, json};

use super::ContainerError;
use super::update::{current_resources, read_spec};
use crate::state::{ContainerRecord, StateStore, Status};

pub fn inspect(states: &StateStore, record: &ContainerRecord) -> Result<Value, ContainerError> {
    let spec = read_spec(&states.container_dir(&record.id).join("config.json"))?;
    let resources = current_resources(&spec)?;
    let process = spec.process().clone().unwrap_or_default();
    let args = process.args().clone().unwrap_or_default();
    let binds: Vec<String> = volume_mounts(&spec)
        .map(|(src, dst, ro)| format!("{src}:{dst}{}", if ro { ":ro" } else { "" }))
        .collect();
    let mounts: Vec<Value> = volume_mounts(&spec)
        .map(|(src, dst, ro)| {
            json!({"Type": "bind", "Source": src, "Destination": dst, "Mode": if ro { "ro" } else { "" }, "RW": !ro})
        })
        .collect();
    let network_mode = record.network.as_str();
    let network_settings = match &record.attachment {
        Some(a) => {
            // Several host ports may map to one container port: one array per port.
            let mut ports = serde_json::Map::new();
            for p in &a.ports {
                let binding = json!({"HostIp": p.host_ip.map_or("0.0.0.0".to_string(), |ip| ip.to_string()), "HostPort": p.host_port.to_string()});
                push_binding(
                    &mut ports,
                    format!("{}/{}", p.container_port, p.protocol),
                    binding,
                );
            }
            json!({
                "IPAddress": a.address.to_string(),
                "IPPrefixLen": a.prefix,
                "Gateway": a.gateway.to_string(),
                "Ports": ports,
                "Networks": {
                    a.network.clone(): {
                        "NetworkID": a.network_id,
                        "IPAddress": a.address.to_string(),
                        "IPPrefixLen": a.prefix,
                        "Gateway": a.gateway.to_string(),
                    }
                },
            })
        }
        None => json!({"IPAddress": "", "Ports": {}, "Networks": {}}),
    };
    let mut port_bindings = serde_json::Map::new();
    for p in &record.publish {
        let binding = json!({"HostIp": p.host_ip.map(|ip| ip.to_string()).unwrap_or_default(), "HostPort": p.host_port.map(|h| h.to_string()).unwrap_or_default()});
        push_binding(
            &mut port_bindings,
            format!("{}/{}", p.container_port, p.protocol),
            binding,
        );
    }
    let nano_cpus = match (resources.cpu_quota, resources.cpu_period) {
        (Some(q), Some(p)) if q > 0 && p > 0 => q * 1_000_000_000 / p as i64,
        _ => 0,
    };
    // Frozen: by a commit in progress, or one that was killed mid-way.
    let paused = record.status == Status::Running
        && crate::cgroups::open(
            &crate::cgroups::Layout::detect(),
            &super::cgroup_path(&record.id),
        )
        .is_ok_and(|c| c.is_frozen());
    let time = |t: Option<crate::state::Timestamp>| {
        t.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), |t| t.to_rfc3339())
    };
    Ok(json!({
        "Id": record.id,
        "Created": record.created.to_rfc3339(),
        "Path": args.first().cloned().unwrap_or_default(),
        "Args": args.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": record.status.as_str(),
            "Running": record.status == Status::Running,
            "Paused": paused,
            "Restarting": false,
            "OOMKilled": record.oom_killed,
            "Dead": false,
            "Pid": record.pid.unwrap_or(0),
            "ExitCode": record.exit_code.unwrap_or(0),
            "StartedAt": time(record.started_at),
            "FinishedAt": time(record.finished_at),
        },
        "Image": record.image_id,
        "Name": format!("/{}", record.name),
        "HostConfig": {
            "Binds": binds,
            "NetworkMode": network_mode,
            "PortBindings": port_bindings,
            "AutoRemove": record.auto_remove,
            "Memory": resources.memory.unwrap_or(0),
            "MemorySwap": resources.memory_swap.unwrap_or(0),
            "MemoryReservation": resources.memory_reservation.unwrap_or(0),
            "NanoCpus": nano_cpus,
            "CpuShares": resources.cpu_shares.unwrap_or(0),
            "CpuQuota": resources.cpu_quota.unwrap_or(0),
            "CpuPeriod": resources.cpu_period.unwrap_or(0),
            "CpusetCpus": resources.cpuset_cpus.clone().unwrap_or_default(),
            "CpusetMems": resources.cpuset_mems.clone().unwrap_or_default(),
            "PidsLimit": resources.pids_limit.unwrap_or(0),
        },
        "Mounts": mounts,
        "Config": {
            "Hostname": spec.hostname().clone().unwrap_or_default(),
            "User": format!("{}:{}", process.user().uid(), process.user().gid()),
            "Tty": process.terminal().unwrap_or(false),
            "Env": process.env().clone().unwrap_or_default(),
            "Cmd": args,
            "Image": record.image,
            "WorkingDir": process.cwd(),
        },
        "NetworkSettings": network_settings,
        "LogPath": super::logs::log_path(&states.container_dir(&record.id)),
    }))
}

/// Appends a host binding to the array of its container port.
fn push_binding(map: &mut serde_json::Map<String, Value>, key: String, binding: Value) {
    match map.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
        Value::Array(list) => list.push(binding),
        other => *other = Value::Array(vec![binding]),
    }
}

/// The user's volumes: bind mounts other than carton's own /etc files.
fn volume_mounts(spec: &Spec) -> impl Iterator<Item = (String, String, bool)> + '_ {
    spec.mounts().iter().flatten().filter_map(|m| {
        let dst = m.destination().to_string_lossy().into_owned();
        let bind = m.typ().as_deref() == Some("bind");
        let own = matches!(
            dst.as_str(),
            "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf"
        );
        if !bind || own {
            return None;
        }
        let src = m.source().as_ref()?.to_string_lossy().into_owned();
        let ro = m.options().iter().flatten().any(|o| o == "ro");
        Some((src, dst, ro))
    })
}
