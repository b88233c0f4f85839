//! `create`: from an image reference and the user's options to a container that exists on disk
//! (record, layer directories, per-container /etc files, config.json) but does not run yet.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::options::{NetworkMode, Volume};
use super::{ContainerError, etc_files, image_files, spec, user};
use crate::cgroups::{self, Layout, Resources};
use crate::image::{Image, ImageStore};
use crate::state::{self, ContainerRecord, StateStore, Status, Timestamp};

/// What `run`/`create` were asked for, parsed and validated by [`super::options`].
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub image: String,
    /// Replaces the image's CMD when not empty.
    pub command: Vec<String>,
    pub name: Option<String>,
    pub hostname: Option<String>,
    /// `KEY=VALUE` entries from `-e` and `--env-file`, in order.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub volumes: Vec<Volume>,
    pub network: NetworkMode,
    pub terminal: bool,
    pub auto_remove: bool,
    /// Cgroup limits (checked by [`super::limits`]).
    pub resources: Resources,
    /// Capabilities, seccomp, devices… (resolved by [`super::security`]).
    pub security: super::security::Security,
    /// `-p`: ports published on a bridge network.
    pub publish: Vec<crate::network::PortSpec>,
}

/// A container ready to start.
#[derive(Debug)]
pub struct Created {
    pub record: ContainerRecord,
    pub spec: Spec,
    /// The container's directory: the OCI bundle.
    pub bundle: PathBuf,
}

pub fn create(states: &StateStore, request: &CreateRequest) -> Result<Created, ContainerError> {
    let images = ImageStore::open(states.root())?;
    let image = images.resolve(&request.image)?;
    let config = image.config.config().clone().unwrap_or_default();

    let mut args: Vec<String> = config.entrypoint().clone().unwrap_or_default();
    if request.command.is_empty() {
        args.extend(config.cmd().clone().unwrap_or_default());
    } else {
        args.extend(request.command.iter().cloned());
    }
    if args.is_empty() {
        return Err(ContainerError::NoCommand);
    }

    let cwd = match request.workdir.as_deref() {
        Some(w) => w.to_string(),
        None => config
            .working_dir()
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
    };
    if !cwd.starts_with('/') {
        return Err(ContainerError::InvalidInput(format!(
            "the working directory {cwd:?} is invalid, it needs to be an absolute path"
        )));
    }

    let user_spec = request
        .user
        .clone()
        .or_else(|| config.user().clone())
        .unwrap_or_default();
    let passwd = image_files::read(&image.layers, Path::new("/etc/passwd")).unwrap_or_default();
    let group = image_files::read(&image.layers, Path::new("/etc/group")).unwrap_or_default();
    let user = user::resolve(&user_spec, &passwd, &group)?;

    if let Some(hostname) = &request.hostname {
        validate_hostname(hostname)?;
    }
    // A network given by id or id prefix is recorded by name: `network rm` and `ps` then
    // recognise the container as its user.
    let mut request = request.clone();
    match &request.network {
        NetworkMode::Bridge(name) if name != crate::network::DEFAULT_NETWORK => {
            let network = crate::network::manage::get(states.root(), name)?;
            request.network = NetworkMode::Bridge(network.name);
        }
        NetworkMode::None | NetworkMode::Host if !request.publish.is_empty() => {
            return Err(ContainerError::InvalidInput(format!(
                "publishing ports needs a bridge network, not --network {}",
                request.network.as_str()
            )));
        }
        _ => {}
    }
    let request = &request;
    let layout = Layout::detect();
    if layout == Layout::None && !request.resources.is_empty() {
        return Err(cgroups::CgroupError::NoCgroups.into());
    }
    // Refused before anything is stored: a limit the host cannot apply leaves no container.
    if let Some(missing) = request
        .resources
        .needed_controllers()
        .into_iter()
        .find(|c| !cgroups::has_controller(&layout, c))
    {
        return Err(cgroups::CgroupError::MissingController(missing.to_string()).into());
    }
    for volume in &request.volumes {
        // docker creates a missing host directory for a bind mount; an existing file or
        // directory is used as it is.
        if fs::symlink_metadata(&volume.source).is_err() {
            fs::create_dir_all(&volume.source).map_err(ContainerError::io(format!(
                "create volume source {}",
                volume.source.display()
            )))?;
        }
    }

    let (record, bundle) = reserve(states, request, &image, &args)?;
    let made = populate(
        request, &image, &record, &bundle, args, cwd, &user, &config, &layout,
    );
    match made {
        Ok(spec) => Ok(Created {
            record,
            spec,
            bundle,
        }),
        Err(e) => {
            // Half-made containers are not left behind.
            let _ = states.remove_dir(&record.id);
            Err(e)
        }
    }
}

/// Under the global lock: picks the id, checks the name, writes the first record. From here
/// on the container is visible to `ps -a` and removable with `rm`.
fn reserve(
    states: &StateStore,
    request: &CreateRequest,
    image: &Image,
    args: &[String],
) -> Result<(ContainerRecord, PathBuf), ContainerError> {
    let name = match &request.name {
        Some(n) => Some(
            state::validate_name(n)
                .map_err(ContainerError::InvalidInput)?
                .to_string(),
        ),
        None => None,
    };
    let _lock = states.global_lock()?;
    let existing = states.list()?;
    let name = match name {
        Some(name) => {
            if let Some(other) = existing.iter().find(|r| r.name == name) {
                return Err(ContainerError::NameInUse {
                    name,
                    id: other.id.clone(),
                });
            }
            name
        }
        None => loop {
            let candidate = state::generate_name();
            if !existing.iter().any(|r| r.name == candidate) {
                break candidate;
            }
        },
    };
    let id = state::generate_id();
    let bundle = states.container_dir(&id);
    fs::create_dir_all(&bundle)
        .map_err(ContainerError::io(format!("create {}", bundle.display())))?;
    let record = ContainerRecord {
        id,
        name,
        image: request.image.clone(),
        image_id: image.id.clone(),
        command: args.to_vec(),
        created: Timestamp::now(),
        status: Status::Created,
        pid: None,
        pid_start_time: None,
        started_at: None,
        finished_at: None,
        exit_code: None,
        oom_killed: false,
        owner_pid: None,
        owner_start_time: None,
        auto_remove: request.auto_remove,
        network: request.network.as_str().to_string(),
        publish: request.publish.clone(),
        attachment: None,
    };
    states.save(&record)?;
    Ok((record, bundle))
}

#[allow(clippy::too_many_arguments)]
fn populate(
    request: &CreateRequest,
    image: &Image,
    record: &ContainerRecord,
    bundle: &Path,
    args: Vec<String>,
    cwd: String,
    user: &user::ResolvedUser,
    config: &oci_spec::image::Config,
    layout: &Layout,
) -> Result<Spec, ContainerError> {
    let storage = crate::storage::ContainerLayer::create(bundle, &image.layers)
        .map_err(ContainerError::io("create the container layer"))?;
    let hostname = request
        .hostname
        .clone()
        .unwrap_or_else(|| record.short_id().to_string());
    let etc = etc_files::write(bundle, &hostname, &request.network)
        .map_err(ContainerError::io("write /etc files"))?;
    let env = spec::compose_env(
        &config.env().clone().unwrap_or_default(),
        &hostname,
        &user.home,
        request.terminal,
        &request.env,
    );
    let spec = spec::build(&spec::SpecInput {
        args,
        env,
        cwd,
        user,
        hostname,
        terminal: request.terminal,
        network: request.network.clone(),
        volumes: &request.volumes,
        etc_files: &etc,
        rootfs: storage.rootfs_relative(),
        overlay: storage.overlay_data()?,
        cgroup: (*layout != Layout::None).then(|| spec::CgroupSpec {
            path: cgroup_path(&record.id),
            resources: request.resources.clone(),
            namespace: matches!(layout, Layout::V2 { .. }),
        }),
        security: &request.security,
    })?;
    let durability = state::Durability::for_container(request.auto_remove);
    state::write_json_atomic_with(&bundle.join("config.json"), &spec, durability)
        .map_err(ContainerError::io("write config.json"))?;
    Ok(spec)
}

/// Where a container's cgroup lives in every hierarchy.
pub fn cgroup_path(id: &str) -> String {
    format!("/carton/{id}")
}

/// RFC 1123 label rules, as sethostname and DNS expect.
fn validate_hostname(hostname: &str) -> Result<(), ContainerError> {
    let valid = !hostname.is_empty()
        && hostname.len() <= 64
        && hostname.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(ContainerError::InvalidInput(format!(
            "invalid hostname {hostname:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for good in ["a", "web-1", "db.local", "x".repeat(64).as_str()] {
            assert!(validate_hostname(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "a..b", "a b", "x".repeat(65).as_str(), "ä"] {
            assert!(validate_hostname(bad).is_err(), "{bad}");
        }
    }
}
