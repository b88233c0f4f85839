//! The kernels of the matrix: the table in vm/kernels.toml, and turning a `--kernel` value into a
//! bootable kernel with its module tree, cached under target/vm/kernels/.
//!
//! A Debian kernel is fetched once (private apt, see `apt`), then reused offline until
//! `--refresh-kernels` asks apt for a newer build. Per kernel directory:
//!   <package>_<version>_amd64.deb   the package (what CI caches)
//!   kernel.json                     which suite/metapackage/package/version that is
//!   tree/                           the package unpacked (boot/, lib/modules/<release>/ + depmod)
//!   vmlinux                         the decompressed kernel QEMU boots (PVH entry)

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

use super::apt::{self, PrivateApt};
use super::bzimage;
use crate::util;

/// vm/kernels.toml.
#[derive(Deserialize)]
pub struct Table {
    pub kernel: Vec<TableEntry>,
    pub guest: GuestModules,
}

/// One `[[kernel]]` of vm/kernels.toml.
#[derive(Deserialize, Clone)]
pub struct TableEntry {
    /// What `--kernel` calls it ("6.1").
    pub name: String,
    /// Debian suite ("bookworm").
    pub suite: String,
    /// Metapackage resolved at fetch time ("linux-image-amd64").
    pub package: String,
}

/// `[guest]` of vm/kernels.toml: which modules the guest loads, and when.
#[derive(Deserialize, Clone)]
pub struct GuestModules {
    pub boot_modules: Vec<String>,
    pub modules: Vec<String>,
    pub on_demand: Vec<String>,
}

pub fn table_path() -> PathBuf {
    util::workspace_root().join("vm/kernels.toml")
}

pub fn load_table() -> Result<Table> {
    let path = table_path();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let table: Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    ensure!(
        !table.kernel.is_empty(),
        "{} lists no kernel",
        path.display()
    );
    Ok(table)
}

/// What a `--kernel` value names.
#[derive(Clone)]
pub enum Spec {
    /// A row of vm/kernels.toml.
    Debian(TableEntry),
    /// The kernel this machine runs (/boot/vmlinuz-$(uname -r), /lib/modules/$(uname -r)).
    Host,
    /// A linux-image .deb, a directory with boot/vmlinuz-* and lib/modules/*, or a bare image.
    Path(PathBuf),
}

impl Spec {
    /// Short name used in leg names, directories and the summary.
    pub fn name(&self) -> String {
        match self {
            Spec::Debian(e) => e.name.clone(),
            Spec::Host => "host".into(),
            Spec::Path(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().trim_end_matches(".deb").to_string())
                .unwrap_or_else(|| "custom".into()),
        }
    }
}

/// Expands the `--kernel` values ("all", names, "host", paths) into kernel specs, in order and
/// without duplicates.
pub fn specs(values: &[String], table: &Table) -> Result<Vec<Spec>> {
    let mut specs: Vec<Spec> = Vec::new();
    let mut seen = BTreeSet::new();
    for value in values {
        let expanded: Vec<Spec> = if value == "all" {
            table.kernel.iter().cloned().map(Spec::Debian).collect()
        } else if value == "host" {
            vec![Spec::Host]
        } else if let Some(e) = table.kernel.iter().find(|e| &e.name == value) {
            vec![Spec::Debian(e.clone())]
        } else if Path::new(value).exists() {
            vec![Spec::Path(std::path::absolute(value)?)]
        } else {
            let names: Vec<&str> = table.kernel.iter().map(|e| e.name.as_str()).collect();
            bail!(
                "--kernel {value}: not one of {}, all, host, nor an existing path",
                names.join(", ")
            );
        };
        for spec in expanded {
            if seen.insert(spec.name()) {
                specs.push(spec);
            }
        }
    }
    Ok(specs)
}

/// A kernel ready to boot.
#[derive(Clone, Serialize)]
pub struct Kernel {
    /// `--kernel` name ("6.1", "host", …).
    pub name: String,
    /// Where it came from, for the summary ("linux-image-6.1.0-50-amd64 6.1.176-1 (bookworm)").
    pub origin: String,
    /// `uname -r` in the guest.
    pub release: String,
    /// What QEMU's -kernel gets: the decompressed vmlinux when the kernel supports PVH, else the
    /// bzImage itself.
    pub image: PathBuf,
    /// lib/modules/<release> (with modules.dep), when the kernel has modules.
    pub modules_dir: Option<PathBuf>,
}

/// What kernel.json records about a fetched Debian kernel.
#[derive(Serialize, Deserialize, PartialEq)]
struct Fetched {
    suite: String,
    metapackage: String,
    package: String,
    deb: String,
}

/// Makes every spec bootable, fetching Debian kernels when they are not cached yet (or when
/// `refresh` asks for the newest build).
pub fn prepare_all(sh: &Shell, specs: &[Spec], refresh: bool) -> Result<Vec<Kernel>> {
    let root = util::target_dir().join("vm/kernels");
    let mut apt: Option<PrivateApt> = None;
    let mut kernels = Vec::new();
    for spec in specs {
        let kernel = match spec {
            Spec::Debian(entry) => {
                let dir = root.join(&entry.name);
                let deb = match cached_deb(&dir, entry) {
                    Some(deb) if !refresh => deb,
                    _ => {
                        if apt.is_none() {
                            let suites: BTreeSet<&str> = specs
                                .iter()
                                .filter_map(|s| match s {
                                    Spec::Debian(e) => Some(e.suite.as_str()),
                                    _ => None,
                                })
                                .collect();
                            let suites: Vec<&str> = suites.into_iter().collect();
                            apt = Some(PrivateApt::new(
                                &util::target_dir().join("vm/apt"),
                                &suites,
                            )?);
                        }
                        fetch(sh, apt.as_mut().unwrap(), &dir, entry)?
                    }
                };
                from_deb(sh, &entry.name, &deb, &dir, Some(&entry.suite))?
            }
            Spec::Host => host(&root)?,
            Spec::Path(path) => from_path(sh, &spec.name(), path, &root)?,
        };
        println!(
            "kernel {}: {} (release {}, booting {})",
            kernel.name,
            kernel.origin,
            kernel.release,
            kernel.image.display()
        );
        kernels.push(kernel);
    }
    Ok(kernels)
}

/// The .deb fetched earlier for `entry`, if kernel.json says it is the one the table asks for.
fn cached_deb(dir: &Path, entry: &TableEntry) -> Option<PathBuf> {
    let text = std::fs::read_to_string(dir.join("kernel.json")).ok()?;
    let fetched: Fetched = serde_json::from_str(&text).ok()?;
    let deb = dir.join(&fetched.deb);
    (fetched.suite == entry.suite && fetched.metapackage == entry.package && deb.is_file())
        .then_some(deb)
}

/// Resolves and downloads the newest kernel of `entry`, drops older .debs, writes kernel.json.
fn fetch(sh: &Shell, apt: &mut PrivateApt, dir: &Path, entry: &TableEntry) -> Result<PathBuf> {
    util::section(&format!(
        "Fetching kernel {} ({} of {})",
        entry.name, entry.package, entry.suite
    ));
    apt.update(sh)?;
    let package = apt.resolve(sh, &entry.suite, &entry.package)?;
    let deb = apt.download(sh, &entry.suite, &package, dir)?;
    for old in apt::debs_in(dir)? {
        if old != deb {
            std::fs::remove_file(&old)?;
        }
    }
    let fetched = Fetched {
        suite: entry.suite.clone(),
        metapackage: entry.package.clone(),
        package,
        deb: deb.file_name().unwrap().to_string_lossy().into_owned(),
    };
    std::fs::write(
        dir.join("kernel.json"),
        serde_json::to_string_pretty(&fetched)?,
    )?;
    Ok(deb)
}

/// Unpacks a linux-image .deb into `dir/tree` (once per .deb) and prepares it.
fn from_deb(sh: &Shell, name: &str, deb: &Path, dir: &Path, suite: Option<&str>) -> Result<Kernel> {
    let tree = dir.join("tree");
    let stamp = tree.join(".carton-unpacked-from");
    let deb_name = deb.file_name().unwrap().to_string_lossy().into_owned();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(deb_name.as_str()) {
        let partial = dir.join("tree.partial");
        for stale in [&partial, &tree] {
            if stale.exists() {
                std::fs::remove_dir_all(stale)?;
            }
        }
        std::fs::create_dir_all(&partial)?;
        cmd!(sh, "dpkg-deb -x {deb} {partial}")
            .quiet()
            .run()
            .with_context(|| format!("unpacking {} (dpkg-deb)", deb.display()))?;
        let release = single_release(&partial)?;
        depmod(sh, &partial, &release)?;
        std::fs::write(partial.join(".carton-unpacked-from"), &deb_name)?;
        std::fs::rename(&partial, &tree)?;
    }
    let release = single_release(&tree)?;
    let bzimage = tree.join(format!("boot/vmlinuz-{release}"));
    let config = tree.join(format!("boot/config-{release}"));
    let version = deb_name
        .split('_')
        .nth(1)
        .unwrap_or("?")
        .replace("%3a", ":");
    let package = deb_name.split('_').next().unwrap_or("?");
    let origin = match suite {
        Some(suite) => format!("{package} {version} ({suite})"),
        None => format!("{package} {version} ({})", deb.display()),
    };
    Ok(Kernel {
        name: name.to_string(),
        origin,
        image: bootable_image(&bzimage, Some(&config), dir)?,
        modules_dir: Some(tree.join("lib/modules").join(&release)),
        release,
    })
}

/// The one kernel release under `<tree>/lib/modules/`.
fn single_release(tree: &Path) -> Result<String> {
    let dir = tree.join("lib/modules");
    let mut releases: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("no {} in the kernel package", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    releases.sort();
    match releases.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel release in {}, found {releases:?}",
            dir.display()
        ),
    }
}

/// `depmod -b <tree> <release>`: the package ships no modules.dep (its postinst makes it), and
/// both the initramfs builder and the guest's modprobe need it.
fn depmod(sh: &Shell, tree: &Path, release: &str) -> Result<()> {
    let depmod = ["/usr/sbin/depmod", "/sbin/depmod"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("depmod");
    cmd!(sh, "{depmod} -b {tree} {release}")
        .quiet()
        .run()
        .context("depmod failed (install the kmod package)")
}

/// The decompressed vmlinux (cached next to the kernel) when the config says CONFIG_PVH=y, else
/// the bzImage: QEMU boots either, the first one seconds faster under TCG.
fn bootable_image(bzimage: &Path, config: Option<&Path>, cache_dir: &Path) -> Result<PathBuf> {
    ensure!(
        bzimage.is_file(),
        "no kernel image at {}",
        bzimage.display()
    );
    let pvh = config
        .and_then(|c| std::fs::read_to_string(c).ok())
        .is_some_and(|text| text.lines().any(|l| l == "CONFIG_PVH=y"));
    if !pvh {
        return Ok(bzimage.to_path_buf());
    }
    std::fs::create_dir_all(cache_dir)?;
    let vmlinux = cache_dir.join("vmlinux");
    let stamp = cache_dir.join("vmlinux.from");
    let source = format!(
        "{} {}",
        bzimage.display(),
        std::fs::metadata(bzimage)?.len()
    );
    if !vmlinux.is_file() || std::fs::read_to_string(&stamp).ok().as_deref() != Some(&source) {
        bzimage::extract_vmlinux(bzimage, &vmlinux)?;
        std::fs::write(&stamp, &source)?;
    }
    Ok(vmlinux)
}

/// The running kernel, when its image is readable (some distributions make it root-only).
fn host(root: &Path) -> Result<Kernel> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_string();
    let bzimage = PathBuf::from(format!("/boot/vmlinuz-{release}"));
    ensure!(
        bzimage.is_file(),
        "--kernel host: {} does not exist (this machine's kernel is not installed as a file)",
        bzimage.display()
    );
    std::fs::File::open(&bzimage).with_context(|| {
        format!(
            "--kernel host: cannot read {} (run as root?)",
            bzimage.display()
        )
    })?;
    let modules = PathBuf::from(format!("/lib/modules/{release}"));
    let config = PathBuf::from(format!("/boot/config-{release}"));
    Ok(Kernel {
        name: "host".into(),
        origin: format!("this machine's kernel ({})", bzimage.display()),
        image: bootable_image(
            &bzimage,
            Some(&config),
            &root.join(format!("host-{release}")),
        )?,
        modules_dir: modules.join("modules.dep").is_file().then_some(modules),
        release,
    })
}

/// A kernel given by path: a .deb, an install tree (boot/vmlinuz-* + lib/modules/*), or a bare
/// bzImage/vmlinux whose drivers must then all be built in.
fn from_path(sh: &Shell, name: &str, path: &Path, root: &Path) -> Result<Kernel> {
    let dir = root.join(format!("path-{name}"));
    if path.extension().is_some_and(|e| e == "deb") {
        return from_deb(sh, name, path, &dir, None);
    }
    if path.is_dir() {
        let release = single_release(path)?;
        let modules = path.join("lib/modules").join(&release);
        if !modules.join("modules.dep").is_file() {
            depmod(sh, path, &release)?;
        }
        let bzimage = path.join(format!("boot/vmlinuz-{release}"));
        let config = path.join(format!("boot/config-{release}"));
        return Ok(Kernel {
            name: name.to_string(),
            origin: format!("install tree {}", path.display()),
            image: bootable_image(&bzimage, Some(&config), &dir)?,
            modules_dir: Some(modules),
            release,
        });
    }
    let release = bzimage::release(path).unwrap_or_else(|_| "unknown".into());
    Ok(Kernel {
        name: name.to_string(),
        origin: format!("image {} (no modules)", path.display()),
        image: path.to_path_buf(),
        modules_dir: None,
        release,
    })
}

/// `modules` and everything they depend on, in load order, as paths of module files; modules
/// built into the kernel are left out. Fails on a module the kernel has in neither form.
pub fn resolve_modules(kernel: &Kernel, modules: &[String]) -> Result<Vec<PathBuf>> {
    let Some(dir) = &kernel.modules_dir else {
        // A bare image: nothing to load, everything must be built in (the guest says if not).
        return Ok(Vec::new());
    };
    let dep_text = std::fs::read_to_string(dir.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", dir.display()))?;
    let builtin_text = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let deps = parse_modules_dep(&dep_text);
    let builtin: BTreeSet<String> = builtin_text.lines().map(module_name).collect();

    let mut order: Vec<String> = Vec::new();
    for name in modules {
        let name = name.replace('-', "_");
        if builtin.contains(&name) {
            continue;
        }
        ensure!(
            deps.contains_key(&name),
            "kernel {} ({}) has no module {name}, neither built in nor in {}",
            kernel.name,
            kernel.release,
            dir.display()
        );
        visit(&name, &deps, &mut order, 0)?;
    }
    Ok(order.iter().map(|n| dir.join(&deps[n].0)).collect())
}

/// module name -> (path relative to the modules dir, direct and indirect dependencies).
type DepMap = HashMap<String, (String, Vec<String>)>;

/// Parses modules.dep (`kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz …`).
fn parse_modules_dep(text: &str) -> DepMap {
    text.lines()
        .filter_map(|line| {
            let (module, deps) = line.split_once(':')?;
            Some((
                module_name(module),
                (
                    module.trim().to_string(),
                    deps.split_whitespace().map(module_name).collect(),
                ),
            ))
        })
        .collect()
}

/// `kernel/net/9p/9pnet_virtio.ko.xz` -> `9pnet_virtio` (dashes and underscores are the same
/// to the kernel; modules.dep uses the file names).
fn module_name(path: &str) -> String {
    let file = path.trim().rsplit('/').next().unwrap_or("");
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// Depth-first: dependencies before the module that needs them, each module once.
fn visit(name: &str, deps: &DepMap, order: &mut Vec<String>, depth: usize) -> Result<()> {
    ensure!(depth < 64, "module dependency loop at {name}");
    if order.iter().any(|n| n == name) {
        return Ok(());
    }
    let (_, needs) = deps
        .get(name)
        .with_context(|| format!("modules.dep names {name} as a dependency but has no entry"))?;
    for dep in needs {
        visit(dep, deps, order, depth + 1)?;
    }
    order.push(name.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n\
                       kernel/net/9p/9pnet.ko.xz:\n\
                       kernel/fs/netfs/netfs.ko.xz:\n\
                       kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz\n\
                       kernel/drivers/virtio/virtio_ring.ko.xz:\n";

    #[test]
    fn dependencies_come_first_and_once() {
        let deps = parse_modules_dep(DEP);
        let mut order = Vec::new();
        for m in ["9pnet_virtio", "9p"] {
            visit(m, &deps, &mut order, 0).unwrap();
        }
        assert_eq!(
            order,
            ["9pnet", "virtio_ring", "9pnet_virtio", "netfs", "9p"]
        );
    }

    #[test]
    fn module_names_from_paths() {
        assert_eq!(module_name("kernel/fs/overlayfs/overlay.ko"), "overlay");
        assert_eq!(
            module_name(" kernel/net/9p/9pnet-virtio.ko.zst"),
            "9pnet_virtio"
        );
    }

    #[test]
    fn the_table_in_the_repository_parses() {
        let table = load_table().unwrap();
        let names: Vec<&str> = table.kernel.iter().map(|e| e.name.as_str()).collect();
        assert!(names.contains(&"6.1"), "{names:?}");
        assert!(table.guest.boot_modules.iter().any(|m| m == "9p"));
    }
}
