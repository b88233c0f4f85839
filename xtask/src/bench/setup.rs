//! Inside the bench namespaces: the one busybox rootfs prepared for every tool, and how each
//! tool is invoked.
//!
//! - carton: the rootfs tarball imported as `busybox` into its own `--root` (target/bench/work,
//!   on the same disk as carton's default /var/lib/carton);
//! - runc and crun: the same tarball unpacked as an OCI bundle. Its config.json is derived from
//!   the spec carton itself writes for the same `carton run` (same namespaces, mounts, masked
//!   and read-only paths, capabilities, seccomp profile, device rules, rlimits; `--network none`
//!   is a new, empty network namespace for all three), so the runtimes do the same work. Only
//!   what names carton's own files changes (rootfs path, /etc/hostname|hosts|resolv.conf
//!   sources, cgroupsPath), and ociVersion says 1.0.2 (crun 1.8.1 refuses "1.2.0"). State goes
//!   where they keep it by default, /run/runc and /run/crun (a tmpfs in the bench namespace);
//! - podman: `podman import` of the same tarball into a private storage (graphroot under
//!   target/bench/work, runroot and tmp under /run as by default), a private containers.conf
//!   (the ulimits this host allows without CAP_SYS_RESOURCE, cgroupfs, file events, a private
//!   network config directory), its default OCI runtime (crun) and network backend.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xshell::{Shell, cmd};

use super::measure::Invocation;
use super::ns::MountNs;

pub const IMAGE: &str = "busybox";
pub const PODMAN_IMAGE: &str = "localhost/busybox:latest";

/// A peer that could not be used, and why (reported as such, never dropped).
pub type Peer<T> = Result<T, String>;

pub struct Bench {
    pub sh: Shell,
    pub runs: usize,
    /// target/bench/work: roots, bundles, scratch (removed at the end).
    pub work: PathBuf,
    /// target/bench/logs: stderr of every measured command.
    pub logs: PathBuf,
    pub carton: PathBuf,
    pub carton_root: PathBuf,
    pub busybox_tar: PathBuf,
    /// The unpacked busybox rootfs shared by the runc/crun bundles.
    pub rootfs: PathBuf,
    /// carton's own specs for `run --network none busybox true`, without and with `-m 64m`.
    pub spec_plain: Value,
    pub spec_memory: Value,
    /// /etc/hostname, hosts, resolv.conf of those runs, copied into each bundle.
    pub etc_files: BTreeMap<String, Vec<u8>>,
    pub v1ns: MountNs,
    pub runc: Peer<PathBuf>,
    pub crun: Peer<PathBuf>,
    pub podman: Peer<Podman>,
}

pub struct Podman {
    pub bin: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    pub ns: MountNs,
    /// "runtime crun, network cni, cgroups v1/cgroupfs, storage overlay".
    pub info: String,
}

impl Podman {
    pub fn inv(&self) -> Invocation {
        let mut inv = Invocation::new(&self.bin);
        inv.env = self.env.clone();
        inv.ns = Some(self.ns.clone());
        inv
    }
}

impl Bench {
    /// `carton --root ROOT ARGS…`
    pub fn carton(&self) -> Invocation {
        Invocation::new(&self.carton)
            .arg("--root")
            .arg(&self.carton_root)
    }

    /// `carton --root ROOT ARGS…` with another root (the tmpfs of the layer row).
    pub fn carton_at(&self, root: &Path) -> Invocation {
        Invocation::new(&self.carton).arg("--root").arg(root)
    }

    /// carton's OCI runtime (built next to carton) with a state root of its own.
    pub fn carton_runtime(&self) -> Invocation {
        Invocation::new(self.carton.with_file_name("carton-runtime"))
            .arg("--root")
            .arg(self.work.join("carton-runtime-state"))
    }

    pub fn runc(&self) -> Peer<Invocation> {
        self.runc.clone().map(Invocation::new)
    }

    pub fn crun(&self) -> Peer<Invocation> {
        self.crun.clone().map(|bin| {
            let mut inv = Invocation::new(bin);
            inv.ns = Some(self.v1ns.clone());
            inv
        })
    }

    pub fn podman(&self) -> Peer<Invocation> {
        self.podman.as_ref().map(Podman::inv).map_err(Clone::clone)
    }

    /// Writes an OCI bundle `dir` (config.json + etc files) whose rootfs is the shared one:
    /// `spec` with ARGS as the process and CGROUP as its cgroupsPath.
    pub fn write_bundle(
        &self,
        dir: &Path,
        spec: &Value,
        args: &[&str],
        cgroup: &str,
    ) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut spec = spec.clone();
        spec["ociVersion"] = "1.0.2".into();
        spec["root"] = serde_json::json!({ "path": self.rootfs, "readonly": false });
        spec["hostname"] = "bench".into();
        if let Some(o) = spec.as_object_mut() {
            o.remove("annotations");
        }
        spec["process"]["args"] = args.iter().map(|a| Value::from(*a)).collect();
        if let Some(env) = spec["process"]["env"].as_array_mut() {
            for e in env.iter_mut() {
                if e.as_str().is_some_and(|s| s.starts_with("HOSTNAME=")) {
                    *e = "HOSTNAME=bench".into();
                }
            }
        }
        spec["linux"]["cgroupsPath"] = cgroup.into();
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            for m in mounts.iter_mut() {
                let dest = m["destination"].as_str().unwrap_or_default().to_string();
                if let Some(name) = dest.strip_prefix("/etc/")
                    && let Some(content) = self.etc_files.get(name)
                {
                    let file = dir.join(name);
                    std::fs::write(&file, content)?;
                    m["source"] = file.display().to_string().into();
                }
            }
        }
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&spec)?)?;
        Ok(())
    }
}

/// Everything before the first row: fresh work directory, carton's image and specs, the
/// bundle rootfs, the v1 namespace, podman's storage and image.
pub struct SetupInput {
    pub runs: usize,
    pub dir: PathBuf,
    pub carton: PathBuf,
    pub busybox_tar: PathBuf,
    pub runc: Peer<PathBuf>,
    pub crun: Peer<PathBuf>,
    pub podman: Peer<PathBuf>,
}

pub fn prepare(input: SetupInput) -> Result<Bench> {
    let sh = Shell::new()?;
    sh.change_dir(crate::util::workspace_root());
    let work = input.dir.join("work");
    let logs = input.dir.join("logs");
    for d in [&work, &logs] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
        std::fs::create_dir_all(d)?;
    }
    let carton = &input.carton;
    let carton_root = work.join("carton");
    let tar = &input.busybox_tar;

    println!("carton: importing {} as {IMAGE}", tar.display());
    let change = r#"CMD ["sh"]"#;
    cmd!(
        sh,
        "{carton} --root {carton_root} import --change {change} {tar} {IMAGE}"
    )
    .quiet()
    .ignore_stdout()
    .run()
    .context("carton import failed")?;

    println!("carton: recording its spec for `run --network none [-m 64m] busybox true`");
    let (spec_plain, etc_files) = carton_spec(&sh, carton, &carton_root, &[])?;
    let (spec_memory, _) = carton_spec(&sh, carton, &carton_root, &["-m", "64m"])?;

    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    cmd!(sh, "tar -C {rootfs} -xf {tar}")
        .quiet()
        .run()
        .context("unpacking the bundle rootfs")?;

    let v1ns = MountNs::v1_only(&crate::util::workspace_root())?;
    println!("crun and podman run in a {}", v1ns.description);

    let podman = match input.podman {
        Ok(bin) => prepare_podman(&bin, &work, tar, &v1ns).map_err(|e| format!("{e:#}")),
        Err(e) => Err(e),
    };
    if let Err(e) = &podman {
        println!("podman: not used: {e}");
    }

    Ok(Bench {
        sh,
        runs: input.runs,
        work,
        logs,
        carton: input.carton,
        carton_root,
        busybox_tar: input.busybox_tar,
        rootfs,
        spec_plain,
        spec_memory,
        etc_files,
        v1ns,
        runc: input.runc,
        crun: input.crun,
        podman,
    })
}

/// Runs `carton run --name bench-spec --network none EXTRA busybox true` (kept), reads the
/// config.json and /etc files carton wrote for it, removes it.
fn carton_spec(
    sh: &Shell,
    carton: &Path,
    root: &Path,
    extra: &[&str],
) -> Result<(Value, BTreeMap<String, Vec<u8>>)> {
    let name = "bench-spec";
    cmd!(
        sh,
        "{carton} --root {root} run --name {name} --network none {extra...} {IMAGE} true"
    )
    .quiet()
    .run()
    .context("carton run (to record its spec) failed")?;
    let inspect = cmd!(sh, "{carton} --root {root} inspect {name}")
        .quiet()
        .read()?;
    let inspect: Value = serde_json::from_str(&inspect).context("carton inspect output")?;
    let id = inspect[0]["Id"]
        .as_str()
        .context("carton inspect without an Id")?
        .to_string();
    let dir = root.join("containers").join(&id);
    let spec: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)
        .context("carton's config.json")?;
    let mut files = BTreeMap::new();
    for f in ["hostname", "hosts", "resolv.conf"] {
        if let Ok(bytes) = std::fs::read(dir.join(f)) {
            files.insert(f.to_string(), bytes);
        }
    }
    cmd!(sh, "{carton} --root {root} rm {name}")
        .quiet()
        .ignore_stdout()
        .run()?;
    Ok((spec, files))
}

fn prepare_podman(bin: &Path, work: &Path, tar: &Path, ns: &MountNs) -> Result<Podman> {
    let dir = work.join("podman");
    for d in ["storage", "networks", "tmp"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    let conf = dir.join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[containers]\n\
             default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             image_copy_tmp_dir = \"{tmp}\"\n\
             [network]\n\
             network_config_dir = \"{net}\"\n",
            tmp = dir.join("tmp").display(),
            net = dir.join("networks").display(),
        ),
    )?;
    let storage = dir.join("storage.conf");
    std::fs::write(
        &storage,
        format!(
            "[storage]\n\
             driver = \"overlay\"\n\
             graphroot = \"{}\"\n\
             runroot = \"/run/containers/storage\"\n",
            dir.join("storage").display()
        ),
    )?;
    let podman = Podman {
        bin: bin.to_path_buf(),
        env: vec![
            ("CONTAINERS_CONF".into(), conf.into()),
            ("CONTAINERS_STORAGE_CONF".into(), storage.into()),
        ],
        ns: ns.clone(),
        info: String::new(),
    };
    println!("podman: importing {} as {PODMAN_IMAGE}", tar.display());
    podman
        .inv()
        .args(["import", "--quiet", "--change", r#"CMD ["sh"]"#])
        .arg(tar)
        .arg(PODMAN_IMAGE)
        .output()
        .map_err(anyhow::Error::msg)
        .context("podman import failed")?;
    let info = podman
        .inv()
        .args([
            "info",
            "--format",
            "runtime {{.Host.OCIRuntime.Name}}, network backend \
             {{.Host.NetworkBackend}}, cgroups {{.Host.CgroupsVersion}} via \
             {{.Host.CgroupManager}}, storage {{.Store.GraphDriverName}}",
        ])
        .output()
        .map_err(anyhow::Error::msg)?;
    let info = info.split_whitespace().collect::<Vec<_>>().join(" ");
    if info.is_empty() {
        bail!("podman info printed nothing");
    }
    println!("podman: {info}");
    Ok(Podman { info, ..podman })
}
