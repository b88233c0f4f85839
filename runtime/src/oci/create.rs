//! `create` (and `run`): the container is built up to the point where its init would exec the
//! user's process, and waits there — on `<root>/<id>/exec.fifo` — for `start`. carton-runtime
//! itself exits: the init is adopted by whoever asked (conmon and containerd's shim are child
//! subreapers), which is the OCI runtime contract.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use oci_spec::runtime::{Hook, Spec};

use super::state::{Creator, Record, Store};
use super::{OciError, console};
use crate::engine::{self, StartEvents, StartOptions, Started, Stdio, hooks};
use crate::state::{Timestamp, process_start_time, write_atomic};

/// `create`'s flags.
#[derive(Debug, Clone, Default)]
pub struct CreateArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: u32,
    pub systemd_cgroup: bool,
}

/// Reads and checks `config.json`.
pub fn load_config(bundle: &Path) -> Result<Spec, OciError> {
    let path = bundle.join("config.json");
    let bytes = fs::read(&path)
        .map_err(|e| OciError::InvalidConfig(format!("cannot read {}: {e}", path.display())))?;
    let raw: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        OciError::InvalidConfig(format!(
            "{} is not a valid runtime spec: {e}",
            path.display()
        ))
    })?;
    let spec: Spec = serde_json::from_value(raw.clone()).map_err(|e| {
        OciError::InvalidConfig(format!(
            "{} is not a valid runtime spec: {e}",
            path.display()
        ))
    })?;
    // serde drops what the spec types do not know: a field newer than the runtime spec carton
    // implements, or a misspelt one, would be ignored without a word.
    let understood = serde_json::to_value(&spec).unwrap_or_default();
    let unknown = unknown_fields(&raw, &understood, "");
    if !unknown.is_empty() {
        return Err(OciError::InvalidConfig(format!(
            "config.json has fields carton does not know (misspelt, or newer than the runtime \
             spec it implements): {}",
            unknown.join(", ")
        )));
    }
    let major = spec.version().split('.').next().unwrap_or("");
    if major != "1" {
        return Err(OciError::InvalidConfig(format!(
            "unsupported ociVersion {:?}: carton-runtime implements 1.x",
            spec.version()
        )));
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| OciError::InvalidConfig("config.json has no root".into()))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    if !rootfs.is_dir() {
        return Err(OciError::InvalidConfig(format!(
            "rootfs {} does not exist or is not a directory",
            rootfs.display()
        )));
    }
    if spec.process().is_none() {
        return Err(OciError::InvalidConfig("config.json has no process".into()));
    }
    Ok(spec)
}

/// The paths (`process.ioPriority`, `mounts[2].foo`) of the non-empty values in `raw` that have
/// no counterpart in `understood` (the same document after a round trip through the spec types).
fn unknown_fields(
    raw: &serde_json::Value,
    understood: &serde_json::Value,
    at: &str,
) -> Vec<String> {
    use serde_json::Value;
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    match (raw, understood) {
        (Value::Object(raw), Value::Object(known)) => raw
            .iter()
            .filter(|(_, v)| !empty(v))
            .flat_map(|(key, value)| {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match known.get(key) {
                    Some(k) => unknown_fields(value, k, &path),
                    None => vec![path],
                }
            })
            .collect(),
        (Value::Array(raw), Value::Array(known)) => raw
            .iter()
            .zip(known)
            .enumerate()
            .flat_map(|(i, (r, k))| unknown_fields(r, k, &format!("{at}[{i}]")))
            .collect(),
        _ => Vec::new(),
    }
}

/// The cgroup path carton uses: the spec's, with a systemd-style `slice:prefix:name` turned
/// into its cgroupfs equivalent (carton drives cgroupfs), or `/carton-runtime/<id>`.
pub fn cgroup_path(spec: &Spec, id: &str, systemd: bool) -> String {
    let given = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty());
    match given {
        Some(path) if systemd || (path.matches(':').count() == 2 && !path.starts_with('/')) => {
            let parts: Vec<&str> = path.split(':').collect();
            match parts.as_slice() {
                [slice, prefix, name] => {
                    let slice = if slice.is_empty() {
                        "system.slice"
                    } else {
                        slice
                    };
                    format!("/{slice}/{prefix}-{name}.scope")
                }
                _ => format!("/{}", path.trim_start_matches('/')),
            }
        }
        Some(path) => path,
        None => format!("/carton-runtime/{id}"),
    }
}

/// Runs the prestart and createRuntime hooks, passes the console on, and puts the init's pid
/// into the provisional record.
struct CreateEvents<'a> {
    store: &'a Store,
    provisional: Record,
    console_socket: Option<&'a Path>,
    console_size: Option<(u64, u64)>,
    create_hooks: Vec<Hook>,
    state: hooks::HookState,
}

impl StartEvents for CreateEvents<'_> {
    /// The init exists: `state` shows its pid, and a `delete` after this create died finds it.
    fn host_setup(&mut self, pid: Pid) -> Result<(), String> {
        self.provisional.pid = pid.as_raw();
        self.provisional.pid_start_time = process_start_time(pid.as_raw());
        self.store
            .save_provisional(&self.provisional)
            .map_err(|e| e.to_string())
    }

    fn console(&mut self, master: &OwnedFd) -> Result<(), String> {
        if let Some(size) = self.console_size {
            console::set_size(master, size);
        }
        if let Some(socket) = self.console_socket {
            console::send(socket, master)
                .map_err(|e| format!("console socket {}: {e}", socket.display()))?;
        }
        Ok(())
    }

    fn before_pivot(&mut self, pid: Pid) -> Result<(), String> {
        let mut state = self.state.clone();
        state.pid = Some(pid.as_raw());
        hooks::run(&self.create_hooks, &state)
    }
}

/// Creates the container; returns its record and the engine's handle on the waiting init.
/// Whatever fails, nothing of the container is left.
pub fn create(store: &Store, args: &CreateArgs) -> Result<(Record, Started), OciError> {
    store.reserve(&args.id)?;
    let made = create_in(store, args);
    if made.is_err() {
        let _ = store.remove(&args.id);
    }
    made
}

fn create_in(store: &Store, args: &CreateArgs) -> Result<(Record, Started), OciError> {
    let bundle = args
        .bundle
        .canonicalize()
        .map_err(|e| OciError::InvalidConfig(format!("bundle {}: {e}", args.bundle.display())))?;
    let mut spec = load_config(&bundle)?;
    let process = spec.process().clone().unwrap_or_default();
    let terminal = process.terminal().unwrap_or(false);
    if terminal && args.console_socket.is_none() {
        return Err(OciError::InvalidConfig(
            "process.terminal needs --console-socket".into(),
        ));
    }
    let cgroup = cgroup_path(&spec, &args.id, args.systemd_cgroup);
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(PathBuf::from(&cgroup)));
    }
    let rootfs = spec.root().as_ref().map(|root| bundle.join(root.path()));
    let hooks = spec.hooks().clone().unwrap_or_default();
    let annotations = spec.annotations().clone().unwrap_or_default();
    let mut record = Record {
        id: args.id.clone(),
        bundle: bundle.clone(),
        pid: 0,
        pid_start_time: None,
        created: Timestamp::now(),
        annotations: annotations.clone(),
        cgroup_path: Some(cgroup),
        rootfs,
        poststart: hooks.poststart().clone().unwrap_or_default(),
        poststop: hooks.poststop().clone().unwrap_or_default(),
        creating: Some(Creator::me()),
    };
    // From here until the final record replaces it, `state` and `list` say "creating".
    store.save_provisional(&record)?;
    make_exec_fifo(&store.fifo(&args.id))?;

    let mut create_hooks = hooks.prestart().clone().unwrap_or_default();
    create_hooks.extend(hooks.create_runtime().clone().unwrap_or_default());
    let mut events = CreateEvents {
        store,
        provisional: record.clone(),
        console_socket: args.console_socket.as_deref(),
        console_size: process.console_size().map(|b| (b.height(), b.width())),
        create_hooks,
        state: hooks::HookState {
            oci_version: "1.2.0".into(),
            id: args.id.clone(),
            status: "creating".into(),
            pid: None,
            bundle: bundle.display().to_string(),
            annotations,
        },
    };
    let options = StartOptions {
        detached_init: true,
        exec_fifo: Some(store.fifo(&args.id)),
        preserve_fds: args.preserve_fds,
        no_pivot: args.no_pivot,
        container_id: args.id.clone(),
    };
    let stdio = if terminal {
        Stdio::Terminal
    } else {
        Stdio::Inherit { stdin: true }
    };
    let mut started = engine::start(&spec, &bundle, stdio, &options, &mut events)?;
    // The terminal belongs to whoever received the master over --console-socket: a foreground
    // `run` reading the master too would take the container's output away from it.
    started.console = None;
    let pid = started.pid.as_raw();
    record.pid = pid;
    record.pid_start_time = process_start_time(pid);
    record.created = Timestamp::now();
    record.creating = None;
    if let Err(e) = publish(store, &record, args.pid_file.as_deref()) {
        abandon(started);
        return Err(e);
    }
    Ok((record, started))
}

/// runc's exec FIFO: the init blocks opening it for writing until `start` opens it to read.
fn make_exec_fifo(fifo: &Path) -> Result<(), OciError> {
    let c_fifo = std::ffi::CString::new(fifo.to_string_lossy().as_bytes())
        .map_err(|_| OciError::InvalidConfig(format!("exec fifo path {}", fifo.display())))?;
    // SAFETY: mkfifo with a NUL-terminated path.
    if unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o622) } != 0 {
        return Err(OciError::io("create the exec fifo")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The final record (replacing the provisional one atomically: "created" from now on) and the
/// pid file.
fn publish(store: &Store, record: &Record, pid_file: Option<&Path>) -> Result<(), OciError> {
    store.save(record)?;
    if let Some(path) = pid_file {
        write_pid_file(path, record.pid)?;
    }
    Ok(())
}

/// Undoes a started container when create fails after the engine returned: the init is still
/// this process's child, so it is killed and reaped before its cgroup goes.
fn abandon(started: Started) {
    let _ = nix::sys::signal::kill(started.pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(started.pid, None);
    if let Some(cgroup) = &started.cgroup {
        let _ = cgroup.destroy();
    }
}

/// Pid files are read by other programs at any moment: written atomically.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<(), OciError> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(OciError::io("current directory"))?
            .join(path)
    };
    write_atomic(&path, pid.to_string().as_bytes())
        .map_err(OciError::io(format!("write pid file {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with_cgroup(path: Option<&str>) -> Spec {
        let mut spec = Spec::default();
        if let Some(linux) = spec.linux_mut() {
            linux.set_cgroups_path(path.map(PathBuf::from));
        }
        spec
    }

    #[test]
    fn cgroup_paths() {
        assert_eq!(
            cgroup_path(&spec_with_cgroup(None), "c1", false),
            "/carton-runtime/c1"
        );
        assert_eq!(
            cgroup_path(
                &spec_with_cgroup(Some("/libpod_parent/libpod-abc")),
                "c1",
                false
            ),
            "/libpod_parent/libpod-abc"
        );
        assert_eq!(
            cgroup_path(
                &spec_with_cgroup(Some("machine.slice:libpod:abc")),
                "c1",
                true
            ),
            "/machine.slice/libpod-abc.scope"
        );
    }

    #[test]
    fn configs_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_config(dir.path()).is_err());
        fs::write(dir.path().join("config.json"), "not json").unwrap();
        assert!(
            load_config(dir.path())
                .unwrap_err()
                .to_string()
                .contains("not a valid")
        );
        let mut spec = Spec::default();
        spec.set_version("2.0.0".into());
        fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        assert!(
            load_config(dir.path())
                .unwrap_err()
                .to_string()
                .contains("ociVersion")
        );
        spec.set_version("1.0.2".into());
        fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        assert!(
            load_config(dir.path())
                .unwrap_err()
                .to_string()
                .contains("rootfs")
        );
        fs::create_dir(dir.path().join("rootfs")).unwrap();
        assert!(load_config(dir.path()).is_ok());

        let mut raw = serde_json::to_value(&spec).unwrap();
        raw["process"]["ioPrioritty"] = serde_json::json!({"class": "IOPRIO_CLASS_IDLE"});
        raw["mounts"][0]["extra"] = serde_json::json!(true);
        raw["linux"]["futureFeature"] = serde_json::json!(null);
        fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&raw).unwrap(),
        )
        .unwrap();
        let err = load_config(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("process.ioPrioritty") && err.contains("mounts[0].extra"),
            "{err}"
        );
        assert!(!err.contains("futureFeature"), "a null says nothing: {err}");
    }
}
