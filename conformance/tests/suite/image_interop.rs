//! Interoperability with the container ecosystem's own tools, from Debian: what carton saves,
//! skopeo inspects and converts, umoci unpacks, podman loads and runs; what they write —
//! skopeo's conversions, umoci's repacked layers, podman's `save` in both formats — carton
//! loads and runs. Every comparison is of a tree's content (paths, types, modes, owners, file
//! digests, link targets) as the other side sees it. A missing tool skips its scenario with the
//! reason printed.

use std::path::Path;
use std::process::Command;

use conformance::images::{
    CHANGES, LIST_TREE_SH, Podman, base_image, changed_image, find_tool, parse_tree, tool_ok,
    tree_on_host,
};
use conformance::{Carton, lines, skip};
use serde_json::Value;

fn tool(name: &str) -> Option<std::path::PathBuf> {
    let found = find_tool(name);
    if found.is_none() {
        skip(&format!("{name} is not installed (apt-get install {name})"));
    }
    found
}

/// `carton save -o <work>/<file> <image>`; returns the path.
fn save(ct: &Carton, image: &str, file: &str) -> std::path::PathBuf {
    let path = ct.path(file);
    ct.cmd()
        .args(["save", "-o"])
        .arg(&path)
        .arg(image)
        .stdout_ok();
    path
}

/// Loads `archive` into a fresh root and returns that fixture with what `load` printed.
fn load_fresh(archive: &Path) -> Option<(Carton, Vec<String>)> {
    let ct = Carton::new()?;
    let out = ct.cmd().arg("load").arg("-i").arg(archive).stdout_ok();
    Some((ct, lines(&out)))
}

fn skopeo(ct: &Carton, bin: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(bin);
    // Local transports only: no trust policy to consult.
    cmd.arg("--insecure-policy")
        .args(args)
        .env("TMPDIR", ct.work());
    tool_ok(ct, cmd)
}

#[test]
fn skopeo_reads_and_converts_what_carton_saves() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let Some(bin) = tool("skopeo") else { return };
    changed_image(&ct);
    let expected = ct.tree_in("changed:v1", "/data");
    let layers = ct.image_layers("changed:v1");
    let archive = save(&ct, "changed:v1", "changed.tar");
    let archive_arg = archive.display().to_string();

    for transport in ["docker-archive", "oci-archive"] {
        let out = skopeo(
            &ct,
            &bin,
            &["inspect", &format!("{transport}:{archive_arg}")],
        );
        let info: Value = serde_json::from_str(&out).expect("skopeo inspect JSON");
        // carton's layers are plain tar: blob digests are the diff_ids.
        assert_eq!(
            info["Layers"],
            serde_json::json!(layers),
            "{transport}: {out}"
        );
        assert_eq!(info["Architecture"], conformance::images::host_arch());
    }

    // Converted by skopeo in both directions, then loaded back: the same files.
    let to_oci = ct.path("via-skopeo-oci.tar");
    skopeo(
        &ct,
        &bin,
        &[
            "copy",
            &format!("docker-archive:{archive_arg}"),
            &format!("oci-archive:{}:skopeo/oci:1", to_oci.display()),
        ],
    );
    let to_docker = ct.path("via-skopeo-docker.tar");
    skopeo(
        &ct,
        &bin,
        &[
            "copy",
            &format!("oci-archive:{archive_arg}"),
            &format!("docker-archive:{}:skopeo/docker:1", to_docker.display()),
        ],
    );
    for (file, name) in [(&to_oci, "skopeo/oci:1"), (&to_docker, "skopeo/docker:1")] {
        let Some((other, loaded)) = load_fresh(file) else {
            return;
        };
        assert_eq!(loaded, [format!("Loaded image: {name}")]);
        assert_eq!(other.tree_in(name, "/data"), expected, "{name}");
        other.finish();
    }
    ct.finish();
}

#[test]
fn umoci_unpacks_carton_s_oci_layout() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let Some(bin) = tool("umoci") else { return };
    changed_image(&ct);
    let expected = ct.tree_in("changed:v1", "/data");
    let archive = save(&ct, "changed:v1", "changed.tar");
    let layout = unpack_layout(&ct, &archive);

    // index.json names the image by its tag, as docker writes it.
    let bundle = ct.path("bundle");
    let mut cmd = Command::new(&bin);
    cmd.args(["unpack", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&bundle);
    tool_ok(&ct, cmd);
    assert_eq!(tree_on_host(&bundle.join("rootfs/data")), expected);
    ct.finish();
}

#[test]
fn carton_loads_what_umoci_repacks() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let Some(bin) = tool("umoci") else { return };
    let base = base_image(&ct);
    let archive = save(&ct, &base, "base.tar");
    let layout = unpack_layout(&ct, &archive);
    let bundle = ct.path("bundle");
    let mut unpack = Command::new(&bin);
    unpack
        .args(["unpack", "--image"])
        .arg(format!("{}:data", layout.display()))
        .arg(&bundle);
    tool_ok(&ct, unpack);
    // umoci's own diff (with its own whiteouts) of the same kinds of changes.
    let rootfs = bundle.join("rootfs");
    let change = Command::new("sh")
        .arg("-c")
        .arg(CHANGES.replace("/data", &format!("{}/data", rootfs.display())))
        .status()
        .expect("sh");
    assert!(change.success());
    let expected = tree_on_host(&rootfs.join("data"));
    let mut repack = Command::new(&bin);
    repack
        .args(["repack", "--image"])
        .arg(format!("{}:umoci", layout.display()))
        .arg(&bundle);
    tool_ok(&ct, repack);

    // An OCI archive of umoci's layout (without the docker manifest.json carton's save put
    // there, which umoci does not maintain). umoci copied the base entry's annotations, full
    // name included, to its new entry: both images load under that name, the later (umoci's)
    // keeping it, as a retag would. umoci's image is found by its config digest.
    std::fs::remove_file(layout.join("manifest.json")).unwrap();
    let repacked = ct.path("umoci.tar");
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&repacked)
        .arg(".");
    tool_ok(&ct, tar);
    let id = image_id_in_layout(&layout, "umoci");
    let Some((other, loaded)) = load_fresh(&repacked) else {
        return;
    };
    assert_eq!(
        loaded,
        ["Loaded image: base:data", "Loaded image: base:data"]
    );
    assert_eq!(other.inspect_image("base:data")["Id"], id.as_str());
    other.cmd().args(["tag", &id, "umoci:1"]).stdout_ok();
    assert_eq!(other.tree_in("umoci:1", "/data"), expected);
    other.finish();
    ct.finish();
}

#[test]
fn podman_loads_and_runs_what_carton_saves() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let Some(podman) = Podman::new(&ct) else {
        return;
    };
    changed_image(&ct);
    let expected = ct.tree_in("changed:v1", "/data");
    let archive = save(&ct, "changed:v1", "changed.tar");
    let out = podman.ok(&ct, &["load", "-i", &archive.display().to_string()]);
    assert!(out.contains("changed:v1"), "{out}");
    let seen = podman.ok(
        &ct,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "localhost/changed:v1",
            "sh",
            "-c",
            LIST_TREE_SH,
            "list",
            "/data",
        ],
    );
    assert_eq!(parse_tree(&seen), expected);
    podman.clean_up(&ct);
    ct.finish();
}

#[test]
fn carton_loads_and_runs_what_podman_saves() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let Some(podman) = Podman::new(&ct) else {
        return;
    };
    // podman changes carton's base image and commits it with its own diff.
    let base = base_image(&ct);
    let archive = save(&ct, &base, "base.tar");
    podman.ok(&ct, &["load", "-i", &archive.display().to_string()]);
    podman.ok(
        &ct,
        &[
            "run",
            "--name",
            "pc",
            "--network",
            "none",
            "localhost/base:data",
            "sh",
            "-c",
            CHANGES,
        ],
    );
    podman.ok(&ct, &["commit", "pc", "pmade:v1"]);
    podman.ok(&ct, &["rm", "pc"]);
    let expected = parse_tree(&podman.ok(
        &ct,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "localhost/pmade:v1",
            "sh",
            "-c",
            LIST_TREE_SH,
            "list",
            "/data",
        ],
    ));
    let docker = ct.path("podman-docker.tar");
    let oci = ct.path("podman-oci.tar");
    podman.ok(
        &ct,
        &[
            "save",
            "-o",
            &docker.display().to_string(),
            "localhost/pmade:v1",
        ],
    );
    podman.ok(
        &ct,
        &[
            "save",
            "--format",
            "oci-archive",
            "-o",
            &oci.display().to_string(),
            "localhost/pmade:v1",
        ],
    );
    podman.clean_up(&ct);

    for file in [&docker, &oci] {
        let Some((other, loaded)) = load_fresh(file) else {
            return;
        };
        assert_eq!(
            loaded,
            ["Loaded image: localhost/pmade:v1"],
            "{}",
            file.display()
        );
        assert_eq!(
            other.tree_in("localhost/pmade:v1", "/data"),
            expected,
            "{}",
            file.display()
        );
        other.finish();
    }
    ct.finish();
}

/// Extracts a saved archive into `<work>/layout` (an OCI image layout directory).
fn unpack_layout(ct: &Carton, archive: &Path) -> std::path::PathBuf {
    let layout = ct.path("layout");
    std::fs::create_dir(&layout).unwrap();
    let mut tar = Command::new("tar");
    tar.arg("-C").arg(&layout).arg("-xf").arg(archive);
    tool_ok(ct, tar);
    layout
}

/// The image id (config digest) of the manifest `tag` names in an OCI layout.
fn image_id_in_layout(layout: &Path, tag: &str) -> String {
    let read = |p: &Path| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let index = read(&layout.join("index.json"));
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"));
    let digest = manifest["digest"].as_str().unwrap();
    let manifest = read(&layout.join("blobs/sha256").join(&digest[7..]));
    manifest["config"]["digest"].as_str().unwrap().to_string()
}
