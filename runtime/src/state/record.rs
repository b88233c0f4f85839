//! The container record (`containers/<id>/state.json`): what `ps`, `rm` and `inspect` know.

use super::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Lifecycle status as docker names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Record and storage exist; the process has not been started.
    Created,
    /// The container's init process is alive (see [`ContainerRecord::pid`]).
    Running,
    /// The init process has exited (or vanished: see `exit_code`).
    Exited,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex characters.
    pub id: String,
    /// Unique among the containers of one state root.
    pub name: String,
    /// The image reference as the user gave it (`busybox`, `busybox:latest`, an id prefix).
    pub image: String,
    /// The image's id (`sha256:<hex>` of its config): what `rmi` checks against.
    pub image_id: String,
    /// Entrypoint + command actually run.
    pub command: Vec<String>,
    pub created: Timestamp,
    pub status: Status,
    /// Host pid of the container's init while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Start time of `pid` (field 22 of /proc/<pid>/stat), so a recycled pid is never mistaken
    /// for the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The kernel's OOM killer killed a process of the container during its last run.
    #[serde(default)]
    pub oom_killed: bool,
    /// The carton process that waits for the running container and records its end: the
    /// foreground `run`, or the detached container's supervisor. With its start time, as for
    /// `pid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_start_time: Option<u64>,
    /// `--rm`: remove the container when it exits.
    #[serde(default)]
    pub auto_remove: bool,
    /// `--network`: "none", "host", or the name of a bridge network.
    #[serde(default = "default_network")]
    pub network: String,
    /// `-p` as asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<crate::network::PortSpec>,
    /// Address and ports on the bridge network while the container runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<crate::network::Attachment>,
}

fn default_network() -> String {
    "none".to_string()
}

impl ContainerRecord {
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    /// True when the record says running and the very process it names is still alive.
    pub fn process_alive(&self) -> bool {
        match (self.status, self.pid, self.pid_start_time) {
            (Status::Running, Some(pid), Some(start)) => process_start_time(pid) == Some(start),
            _ => false,
        }
    }

    /// True while the process that owns the running container is alive.
    pub fn owner_alive(&self) -> bool {
        match (self.owner_pid, self.owner_start_time) {
            (Some(pid), Some(start)) => process_start_time(pid) == Some(start),
            _ => false,
        }
    }

    /// Brings a record whose process vanished (its owner was killed, the machine rebooted) in line
    /// with reality. Returns true when the record changed and should be saved.
    pub fn reconcile(&mut self) -> bool {
        if self.status == Status::Running && !self.process_alive() {
            self.status = Status::Exited;
            self.pid = None;
            self.pid_start_time = None;
            self.owner_pid = None;
            self.owner_start_time = None;
            // Its network resources are released by whoever reconciles (`ps`, `rm`).
            self.attachment = None;
            if self.exit_code.is_none() {
                // The exit status was lost with the process that should have collected it;
                // 255 is what docker reports for a container whose state it could not recover.
                self.exit_code = Some(255);
            }
            if self.finished_at.is_none() {
                self.finished_at = Some(Timestamp::now());
            }
            return true;
        }
        false
    }
}

/// Start time (clock ticks since boot) of a live process, from /proc/<pid>/stat.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may contain spaces or ')': split after
    // the last ')'. Field 22 (starttime) is then the 20th whitespace-separated field.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); a zombie has exited already.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ContainerRecord {
        ContainerRecord {
            id: "a".repeat(64),
            name: "n".into(),
            image: "busybox".into(),
            image_id: "sha256:00".into(),
            command: vec!["true".into()],
            created: Timestamp::now(),
            status: Status::Running,
            pid: Some(i32::MAX - 1),
            pid_start_time: Some(1),
            started_at: None,
            finished_at: None,
            exit_code: None,
            oom_killed: false,
            owner_pid: None,
            owner_start_time: None,
            auto_remove: false,
            network: "none".into(),
            publish: Vec::new(),
            attachment: None,
        }
    }

    #[test]
    fn own_process_has_a_start_time() {
        assert!(process_start_time(std::process::id() as i32).is_some());
    }

    #[test]
    fn a_vanished_process_is_reconciled_to_exited() {
        let mut r = record();
        assert!(r.reconcile());
        assert_eq!(r.status, Status::Exited);
        assert_eq!(r.exit_code, Some(255));
        assert!(!r.reconcile());
    }

    #[test]
    fn a_live_process_with_a_different_start_time_is_not_the_container() {
        let mut r = record();
        let me = std::process::id() as i32;
        r.pid = Some(me);
        r.pid_start_time = Some(process_start_time(me).unwrap() + 1);
        assert!(!r.process_alive());
        r.pid_start_time = process_start_time(me);
        assert!(r.process_alive());
    }
}
