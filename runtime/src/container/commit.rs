//! `commit C [REPO[:TAG]]`: the container's `upper/` as a new layer on its image, with the
//! container's configuration (command, environment, working directory, user) carried into the
//! new image's config, as docker does.
//!
//! A running container is frozen (freezer cgroup) while its upper directory is read — docker
//! pauses it the same way — so the layer is one consistent moment of its files, and thawed as
//! soon as the layer is read: on success, on error, and when carton is asked to stop meanwhile
//! (SIGINT/SIGTERM/SIGHUP/SIGQUIT are held back until the container runs again; only SIGKILL
//! of carton itself could leave it frozen).

use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use oci_spec::image::{Config, ImageConfiguration};
use oci_spec::runtime::Spec;

use super::update::read_spec;
use super::{ContainerError, cgroup_path, image_files, user};
use crate::cgroups::{self, CgroupManager, Layout};
use crate::image::{CommitRequest, Image, ImageStore};
use crate::state::{ContainerRecord, StateStore};

/// What `commit` was asked for.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    pub container: String,
    pub reference: Option<String>,
    pub changes: Vec<String>,
    pub message: Option<String>,
    pub author: Option<String>,
    /// Freeze a running container while its layer is read (docker's `--pause`, default on).
    pub pause: bool,
}

pub fn commit(states: &StateStore, options: &CommitOptions) -> Result<Image, ContainerError> {
    let record = states.resolve(&options.container)?;
    let images = ImageStore::open(states.root())?;
    let parent = images.resolve(&record.image_id)?;
    let bundle = states.container_dir(&record.id);
    let spec = read_spec(&bundle.join("config.json"))?;
    let config = runtime_config(&parent, &spec);

    // Everything that can be refused is refused here, before the container is touched.
    let mut commit = images.begin_commit(CommitRequest {
        parent,
        config,
        changes: options.changes.clone(),
        comment: options.message.clone(),
        author: options.author.clone(),
        created_by: record.command.join(" "),
        reference: options.reference.clone(),
    })?;
    {
        let _frozen = match options.pause && record.process_alive() {
            true => Frozen::freeze(&record)?,
            false => None,
        };
        commit.read_layer(&bundle.join("upper"), &mount_points(&spec))?;
    }
    Ok(commit.finish()?)
}

/// Where the container has mounts: /proc, /dev, the /etc files, volumes…
fn mount_points(spec: &Spec) -> Vec<PathBuf> {
    spec.mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().clone())
        .collect()
}

/// The new image's runtime config: the image's, with what the container ran with.
fn runtime_config(image: &Image, spec: &Spec) -> Config {
    let mut config = image.config.config().clone().unwrap_or_default();
    let Some(process) = spec.process() else {
        return config;
    };
    // The container's command is ENTRYPOINT + CMD: its CMD is what follows the entrypoint.
    let args = process.args().clone().unwrap_or_default();
    let entrypoint = config.entrypoint().clone().unwrap_or_default();
    if args.starts_with(&entrypoint) {
        config.set_cmd(Some(args[entrypoint.len()..].to_vec()));
    } else {
        config.set_entrypoint(None);
        config.set_cmd(Some(args));
    }
    config.set_env(Some(carried_env(
        config.env().as_deref().unwrap_or_default(),
        process.env().as_deref().unwrap_or_default(),
    )));
    let cwd = process.cwd().display().to_string();
    if cwd != "/" || config.working_dir().is_some() {
        config.set_working_dir(Some(cwd));
    }
    let (uid, gid) = (process.user().uid(), process.user().gid());
    if let Some(user) = carried_user(&image.config, &image.layers, uid, gid) {
        config.set_user(Some(user));
    }
    config
}

/// The container's environment minus what carton adds to every container by itself
/// (HOSTNAME, and HOME when the image does not set it): those belong to a container, not to
/// an image.
fn carried_env(image_env: &[String], container_env: &[String]) -> Vec<String> {
    let image_sets = |key: &str| image_env.iter().any(|e| e.split('=').next() == Some(key));
    container_env
        .iter()
        .filter(|e| {
            let key = e.split('=').next().unwrap_or_default();
            key != "HOSTNAME" && (key != "HOME" || image_sets("HOME"))
        })
        .cloned()
        .collect()
}

/// The image's USER when it still describes who the container ran as, else `uid:gid`; None
/// when neither the image nor the container chose anyone but root.
fn carried_user(
    image: &ImageConfiguration,
    layers: &[std::path::PathBuf],
    uid: u32,
    gid: u32,
) -> Option<String> {
    let image_user = image.config().as_ref().and_then(|c| c.user().clone());
    let passwd = image_files::read(layers, Path::new("/etc/passwd")).unwrap_or_default();
    let group = image_files::read(layers, Path::new("/etc/group")).unwrap_or_default();
    let resolved = user::resolve(image_user.as_deref().unwrap_or_default(), &passwd, &group)
        .ok()
        .map(|u| (u.uid, u.gid));
    match (image_user, resolved) {
        (Some(user), Some(ids)) if ids == (uid, gid) => Some(user),
        (None, _) if (uid, gid) == (0, 0) => None,
        _ => Some(format!("{uid}:{gid}")),
    }
}

/// A frozen container; thawed when dropped. Stop signals to carton are held back meanwhile,
/// so that Ctrl-C cannot leave the container frozen: they take effect once it is thawed.
struct Frozen {
    cgroup: Box<dyn CgroupManager>,
    id: String,
    old_mask: SigSet,
}

impl Frozen {
    fn freeze(record: &ContainerRecord) -> Result<Option<Frozen>, ContainerError> {
        let cgroup = cgroups::open(&Layout::detect(), &cgroup_path(&record.id))?;
        let mut held = SigSet::empty();
        for signal in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            held.add(signal);
        }
        let mut old_mask = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&held), Some(&mut old_mask))
            .map_err(|e| ContainerError::io("block signals")(e.into()))?;
        match cgroup.freeze() {
            Ok(()) => Ok(Some(Frozen {
                cgroup,
                id: record.id.clone(),
                old_mask,
            })),
            Err(e) => {
                let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
                if !record.process_alive() {
                    // It exited meanwhile: nothing left to hold still.
                    return Ok(None);
                }
                Err(ContainerError::InvalidInput(format!(
                    "cannot pause container {} for the commit ({e}); use --pause=false to commit it while it runs",
                    record.short_id()
                )))
            }
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(e) = self.cgroup.thaw() {
            log::error!("cannot thaw container {}: {e}", self.id);
        }
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old_mask), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{ProcessBuilder, UserBuilder};

    /// An image whose config is `config`, without layers (so without /etc/passwd).
    fn image(config: Config) -> Image {
        let mut image_config = ImageConfiguration::default();
        image_config.set_config(Some(config));
        Image {
            id: format!("sha256:{}", "0".repeat(64)),
            references: Vec::new(),
            config: image_config,
            layers: Vec::new(),
            size: 0,
        }
    }

    /// A container spec whose process ran `args` in `cwd` with `env`, as root.
    fn spec(args: &[&str], cwd: &str, env: &[&str]) -> Spec {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let process = ProcessBuilder::default()
            .args(strings(args))
            .cwd(cwd)
            .env(strings(env))
            .user(UserBuilder::default().uid(0u32).gid(0u32).build().unwrap())
            .build()
            .unwrap();
        let mut spec = Spec::default();
        spec.set_process(Some(process));
        spec
    }

    fn strings(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn the_containers_command_becomes_cmd_after_the_entrypoint() {
        let mut config = Config::default();
        config.set_cmd(strings(&["sh"]));
        // Run with the image's command: the same CMD.
        let carried = runtime_config(&image(config.clone()), &spec(&["sh"], "/", &[]));
        assert_eq!(carried.cmd(), &strings(&["sh"]));
        assert_eq!(carried.entrypoint(), &None);
        // Run with a command of its own: that is the new CMD, as docker commits it.
        let carried = runtime_config(&image(config), &spec(&["echo", "a"], "/", &[]));
        assert_eq!(carried.cmd(), &strings(&["echo", "a"]));

        // With an ENTRYPOINT, CMD is what followed it; the entrypoint stays.
        let mut config = Config::default();
        config.set_entrypoint(strings(&["/bin/tool", "--flag"]));
        config.set_cmd(strings(&["default"]));
        let carried = runtime_config(
            &image(config.clone()),
            &spec(&["/bin/tool", "--flag", "other", "arg"], "/", &[]),
        );
        assert_eq!(carried.entrypoint(), &strings(&["/bin/tool", "--flag"]));
        assert_eq!(carried.cmd(), &strings(&["other", "arg"]));
        let carried = runtime_config(
            &image(config.clone()),
            &spec(&["/bin/tool", "--flag"], "/", &[]),
        );
        assert_eq!(carried.entrypoint(), &strings(&["/bin/tool", "--flag"]));
        assert_eq!(carried.cmd(), &Some(Vec::new()));
        // A container whose command does not start with it (--entrypoint): no entrypoint, the
        // whole command is CMD.
        let carried = runtime_config(&image(config), &spec(&["sh", "-c", "x"], "/", &[]));
        assert_eq!(carried.entrypoint(), &None);
        assert_eq!(carried.cmd(), &strings(&["sh", "-c", "x"]));
    }

    #[test]
    fn the_working_directory_and_environment_are_carried() {
        let mut config = Config::default();
        config.set_env(strings(&["PATH=/bin"]));
        let carried = runtime_config(
            &image(config.clone()),
            &spec(&["sh"], "/some/dir", &["PATH=/bin", "HOSTNAME=abc", "K=V"]),
        );
        assert_eq!(carried.working_dir().as_deref(), Some("/some/dir"));
        assert_eq!(carried.env(), &strings(&["PATH=/bin", "K=V"]));
        assert_eq!(carried.user(), &None, "root stays unnamed");
        // "/" is only written down when the image named a working directory.
        let carried = runtime_config(&image(config.clone()), &spec(&["sh"], "/", &[]));
        assert_eq!(carried.working_dir(), &None);
        config.set_working_dir(Some("/srv".into()));
        let carried = runtime_config(&image(config), &spec(&["sh"], "/", &[]));
        assert_eq!(carried.working_dir().as_deref(), Some("/"));
    }

    #[test]
    fn without_a_process_the_image_config_is_kept() {
        let mut config = Config::default();
        config.set_cmd(strings(&["sh"]));
        config.set_working_dir(Some("/w".into()));
        let mut spec = Spec::default();
        spec.set_process(None);
        let carried = runtime_config(&image(config.clone()), &spec);
        assert_eq!(carried, config);
    }

    #[test]
    fn carton_s_own_variables_are_not_committed() {
        let image = ["PATH=/bin".to_string()];
        let container = [
            "PATH=/bin".to_string(),
            "HOSTNAME=abc".to_string(),
            "HOME=/root".to_string(),
            "A=1".to_string(),
        ];
        assert_eq!(carried_env(&image, &container), ["PATH=/bin", "A=1"]);
        let image = ["HOME=/srv".to_string()];
        let container = ["HOME=/srv".to_string(), "HOSTNAME=x".to_string()];
        assert_eq!(carried_env(&image, &container), ["HOME=/srv"]);
    }

    #[test]
    fn the_user_is_kept_by_name_when_it_still_applies() {
        let mut config = ImageConfiguration::default();
        assert_eq!(carried_user(&config, &[], 0, 0), None);
        assert_eq!(
            carried_user(&config, &[], 1000, 100).as_deref(),
            Some("1000:100")
        );
        let mut c = Config::default();
        c.set_user(Some("0".into()));
        config.set_config(Some(c));
        assert_eq!(carried_user(&config, &[], 0, 0).as_deref(), Some("0"));
        assert_eq!(carried_user(&config, &[], 5, 5).as_deref(), Some("5:5"));
    }
}
