//! Store-level tests of the layered operations: commit of an overlay upper directory (its
//! whiteouts, opaque directories, hard links, owners and xattrs), save → load round trips,
//! the archive formats `load` reads, and hostile or broken archives refused without a trace.

use super::digest::sha256_hex;
use super::testutil::{MTIME, Tar, gzip, is_root, layer_blob, snapshot};
use super::{CommitRequest, Image, ImageError, ImageStore, Removal, short_layer_path};
use oci_spec::image::{Arch, Config};
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

struct Fixture {
    dir: tempfile::TempDir,
    store: ImageStore,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("state")).unwrap();
        Fixture { dir, store }
    }

    fn second_store(&self) -> ImageStore {
        ImageStore::open(&self.dir.path().join("other")).unwrap()
    }

    fn images_dir(&self) -> PathBuf {
        self.dir.path().join("state/images")
    }

    /// A base image: a few files under /data and a shell.
    fn base(&self) -> Image {
        let mut tar = Tar::new();
        tar.dir("bin/", 0o755)
            .file("bin/sh", b"#!shell", 0o755)
            .dir("data/", 0o755)
            .file("data/keep", b"keep", 0o644)
            .file("data/modify", b"modify", 0o644)
            .file("data/gone", b"gone", 0o644)
            .dir("data/old/", 0o755)
            .file("data/old/inner", b"inner", 0o644)
            .dir("etc/", 0o755)
            .file("etc/passwd", b"root:x:0:0::/:/bin/sh\n", 0o644);
        self.store
            .import(
                &tar.finish()[..],
                Some("base"),
                &[r#"CMD ["sh"]"#.to_string()],
            )
            .unwrap()
    }

    fn upper(&self) -> PathBuf {
        let upper = self.dir.path().join("upper");
        fs::create_dir_all(&upper).unwrap();
        upper
    }

    fn commit(
        &self,
        parent: &Image,
        upper: &Path,
        reference: Option<&str>,
        mount_points: &[PathBuf],
    ) -> Result<Image, ImageError> {
        let mut config = Config::default();
        config.set_cmd(Some(vec!["sh".into(), "-c".into(), "changed".into()]));
        let mut commit = self.store.begin_commit(CommitRequest {
            parent: parent.clone(),
            config,
            changes: vec!["ENV COMMITTED=1".into()],
            comment: Some("a message".into()),
            author: Some("tester".into()),
            created_by: "sh -c changed".into(),
            reference: reference.map(str::to_string),
        })?;
        commit.read_layer(upper, mount_points)?;
        commit.finish()
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings, valid value slice.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name}: {}",
        std::io::Error::last_os_error()
    );
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings and a buffer of the given length.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (rc >= 0).then(|| {
        buf.truncate(rc as usize);
        buf
    })
}

fn set_mtime(path: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// (path, type, link target) of every member of a plain tar, in order.
fn members(tar: &[u8]) -> Vec<(String, char, String)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            (
                e.path().unwrap().display().to_string(),
                e.header().entry_type().as_byte() as char,
                link,
            )
        })
        .collect()
}

fn blob(f: &Fixture, hex: &str) -> Vec<u8> {
    layer_blob(&f.store, hex)
}

fn top_diff_id(image: &Image) -> String {
    image.config.rootfs().diff_ids().last().unwrap()[7..].to_string()
}

#[test]
fn commit_turns_overlay_changes_into_an_oci_layer_and_back() {
    if !is_root() {
        println!("SKIP: trusted.overlay xattrs and chown need root");
        return;
    }
    let f = Fixture::new();
    let base = f.base();
    let base_layer = snapshot(&base.layers[0]);
    let upper = f.upper();
    // What overlayfs leaves in upper/ after: modify a file, delete one, replace a directory,
    // chmod+chown a file, add a hard link and a symlink.
    fs::create_dir(upper.join("data")).unwrap();
    fs::write(upper.join("data/modify"), b"modified").unwrap();
    set_mtime(&upper.join("data/modify"), 1_234_567_890);
    nix::sys::stat::mknod(
        &upper.join("data/gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    fs::create_dir(upper.join("data/old")).unwrap();
    set_xattr(&upper.join("data/old"), "trusted.overlay.opaque", b"y");
    fs::write(upper.join("data/old/fresh"), b"fresh").unwrap();
    fs::write(upper.join("data/keep"), b"keep").unwrap();
    fs::set_permissions(upper.join("data/keep"), fs::Permissions::from_mode(0o600)).unwrap();
    nix::unistd::chown(
        &upper.join("data/keep"),
        Some(nix::unistd::Uid::from_raw(1000)),
        Some(nix::unistd::Gid::from_raw(1000)),
    )
    .unwrap();
    set_xattr(&upper.join("data/keep"), "user.note", b"kept");
    set_xattr(
        &upper.join("data/keep"),
        "trusted.overlay.origin",
        b"private",
    );
    fs::write(upper.join("data/new"), b"n").unwrap();
    fs::hard_link(upper.join("data/new"), upper.join("data/hard")).unwrap();
    std::os::unix::fs::symlink("keep", upper.join("data/sym")).unwrap();

    let child = f.commit(&base, &upper, Some("child:v1"), &[]).unwrap();
    assert_eq!(child.references, ["child:v1"]);
    assert_eq!(child.layers.len(), 2);
    assert_eq!(child.layers[0], base.layers[0], "parent layer shared");

    // The blob is the OCI spelling, sorted, the opaque marker right after its directory.
    let hex = top_diff_id(&child);
    let layer_tar = blob(&f, &hex);
    assert_eq!(
        sha256_hex(&layer_tar),
        hex,
        "uncompressed: blob digest = diff_id"
    );
    let expected = [
        ("data/", '5', ""),
        ("data/.wh.gone", '0', ""),
        ("data/hard", '0', ""),
        ("data/keep", '0', ""),
        ("data/modify", '0', ""),
        ("data/new", '1', "data/hard"),
        ("data/old/", '5', ""),
        ("data/old/.wh..wh..opq", '0', ""),
        ("data/old/fresh", '0', ""),
        ("data/sym", '2', "keep"),
    ];
    let got = members(&layer_tar);
    let got: Vec<(&str, char, &str)> = got
        .iter()
        .map(|(p, k, l)| (p.as_str(), *k, l.as_str()))
        .collect();
    assert_eq!(got, expected);

    // The unpacked layer is overlay's spelling again.
    let layer = &child.layers[1];
    let gone = fs::symlink_metadata(layer.join("data/gone")).unwrap();
    assert!(
        gone.file_type().is_char_device() && gone.rdev() == 0,
        "whiteout device"
    );
    assert_eq!(
        get_xattr(&layer.join("data/old"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!layer.join("data/old/.wh..wh..opq").exists());
    assert!(!layer.join("data/.wh.gone").exists());
    let keep = fs::metadata(layer.join("data/keep")).unwrap();
    assert_eq!(
        (keep.uid(), keep.gid(), keep.mode() & 0o7777),
        (1000, 1000, 0o600)
    );
    assert_eq!(
        get_xattr(&layer.join("data/keep"), "user.note").as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        get_xattr(&layer.join("data/keep"), "trusted.overlay.origin"),
        None
    );
    assert_eq!(
        fs::metadata(layer.join("data/new")).unwrap().ino(),
        fs::metadata(layer.join("data/hard")).unwrap().ino()
    );
    assert_eq!(
        fs::read_link(layer.join("data/sym")).unwrap(),
        Path::new("keep")
    );
    assert_eq!(
        fs::metadata(layer.join("data/modify")).unwrap().mtime(),
        1_234_567_890
    );
    assert_eq!(fs::read(layer.join("data/modify")).unwrap(), b"modified");

    // Config: parent's + the container's, history appended, changes applied.
    let config = child.config.config().clone().unwrap();
    assert_eq!(config.cmd().as_deref().unwrap(), ["sh", "-c", "changed"]);
    assert!(
        config
            .env()
            .clone()
            .unwrap()
            .contains(&"COMMITTED=1".to_string())
    );
    assert_eq!(child.config.author().as_deref(), Some("tester"));
    let history = child.config.history().clone().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].comment().as_deref(), Some("a message"));
    assert_eq!(history[1].created_by().as_deref(), Some("sh -c changed"));
    assert_eq!(child.size, base.size + 8 + 5 + 4 + 1);

    // The parent is untouched; history shows both images' ids.
    assert_eq!(f.store.resolve("base").unwrap().id, base.id);
    assert_eq!(snapshot(&base.layers[0]), base_layer);
    let rows = f.store.history("child:v1").unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].id.as_deref(), Some(child.id.as_str()));
    assert_eq!(rows[1].id.as_deref(), Some(base.id.as_str()));
    assert_eq!(rows[0].size, 18);

    // A commit of the commit stacks a third layer.
    let upper2 = f.dir.path().join("upper2");
    fs::create_dir_all(upper2.join("data")).unwrap();
    fs::write(upper2.join("data/third"), b"3").unwrap();
    let grandchild = f.commit(&child, &upper2, Some("child:v2"), &[]).unwrap();
    assert_eq!(grandchild.layers.len(), 3);
    assert_eq!(&grandchild.layers[..2], &child.layers[..]);
    assert_eq!(f.store.history("child:v2").unwrap().len(), 3);
}

#[test]
fn an_unchanged_container_adds_history_but_no_layer() {
    let f = Fixture::new();
    let base = f.base();
    let upper = f.upper();
    // Only what the runtime put there: a placeholder to bind-mount /etc/hosts on, in a
    // copied-up /etc whose mode and owner are the parent's.
    fs::create_dir(upper.join("etc")).unwrap();
    let lower_etc = fs::metadata(base.layers[0].join("etc")).unwrap();
    fs::set_permissions(upper.join("etc"), lower_etc.permissions()).unwrap();
    fs::write(upper.join("etc/hosts"), b"").unwrap();
    let image = f
        .commit(
            &base,
            &upper,
            None,
            &[PathBuf::from("/etc/hosts"), PathBuf::from("/proc")],
        )
        .unwrap();
    assert_eq!(image.layers, base.layers);
    let history = image.config.history().clone().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].empty_layer(), Some(true));
    assert!(image.references.is_empty());
    let rows = f.store.history(&image.id).unwrap();
    assert!(rows[0].empty_layer && rows[0].size == 0);

    // A change next to the placeholder brings /etc back, the placeholder still left out.
    fs::write(upper.join("etc/motd"), b"hi").unwrap();
    let image = f
        .commit(&base, &upper, None, &[PathBuf::from("/etc/hosts")])
        .unwrap();
    let got: Vec<String> = members(&blob(&f, &top_diff_id(&image)))
        .into_iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(got, ["etc/", "etc/motd"]);
}

#[test]
fn a_commit_is_refused_before_anything_is_read() {
    let f = Fixture::new();
    let base = f.base();
    let before = snapshot(&f.images_dir());
    let request = |reference: &str, change: &str| CommitRequest {
        parent: base.clone(),
        config: Config::default(),
        changes: vec![change.to_string()],
        comment: None,
        author: None,
        created_by: String::new(),
        reference: Some(reference.to_string()),
    };
    for reference in ["UPPER:case", "app:", ""] {
        let err = f
            .store
            .begin_commit(request(reference, "ENV A=1"))
            .err()
            .unwrap();
        assert!(
            matches!(err, ImageError::InvalidReference { .. }),
            "{reference}: {err}"
        );
    }
    let err = f
        .store
        .begin_commit(request("ok", "RUN rm -rf /"))
        .err()
        .unwrap();
    assert!(matches!(err, ImageError::InvalidChange { .. }), "{err}");
    assert_eq!(snapshot(&f.images_dir()), before);
}

/// The archive `save` wrote, as (path, content) in order.
fn unpack_archive(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut a = tar::Archive::new(archive);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_dir() {
            continue;
        }
        let path = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.push((path, data));
    }
    out
}

enum Member {
    File(Vec<u8>),
    Symlink(&'static str),
}

fn pack(members: &[(String, Member)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, member) in members {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(MTIME);
        match member {
            Member::File(data) => {
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, path, &data[..]).unwrap();
            }
            Member::Symlink(target) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, path, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn files(entries: Vec<(String, Vec<u8>)>) -> Vec<(String, Member)> {
    entries
        .into_iter()
        .map(|(p, d)| (p, Member::File(d)))
        .collect()
}

fn config_json(diff_ids: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": Arch::default().to_string(),
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>()},
    }))
    .unwrap()
}

/// A one-layer docker-archive (legacy layout) named `tag`.
fn docker_archive(layer: &[u8], tag: &str) -> Vec<u8> {
    let plain_diff = sha256_hex(layer);
    let config = config_json(&[&plain_diff]);
    let config_name = format!("{}.json", sha256_hex(&config));
    let manifest =
        serde_json::json!([{"Config": config_name, "RepoTags": [tag], "Layers": ["l1/layer.tar"]}]);
    pack(&[
        (
            "manifest.json".into(),
            Member::File(serde_json::to_vec(&manifest).unwrap()),
        ),
        (config_name, Member::File(config)),
        ("l1/layer.tar".into(), Member::File(layer.to_vec())),
    ])
}

fn simple_layer(name: &str) -> Vec<u8> {
    let mut tar = Tar::new();
    tar.dir("data/", 0o755)
        .file(&format!("data/{name}"), name.as_bytes(), 0o644);
    tar.finish()
}

#[test]
fn save_then_load_into_an_empty_store_is_identical() {
    let f = Fixture::new();
    let base = f.base();
    let upper = f.upper();
    fs::create_dir_all(upper.join("data")).unwrap();
    fs::write(upper.join("data/new"), b"new").unwrap();
    let child = f.commit(&base, &upper, Some("child"), &[]).unwrap();
    f.store.tag("child", "alias:1").unwrap();

    let mut archive = Vec::new();
    f.store
        .save(
            &["child".into(), "alias:1".into(), base.id.clone()],
            &mut archive,
        )
        .unwrap();
    let other = f.second_store();
    let loaded = other.load_file(temp_file(&archive)).unwrap();
    let summary: Vec<(String, Vec<String>)> =
        loaded.into_iter().map(|l| (l.id, l.references)).collect();
    assert_eq!(
        summary,
        [
            (
                child.id.clone(),
                vec!["child:latest".into(), "alias:1".into()]
            ),
            (base.id.clone(), vec![]),
        ]
    );
    let copy = other.resolve("child").unwrap();
    assert_eq!(copy.id, child.id, "the config is kept byte for byte");
    assert_eq!(
        copy.config.rootfs().diff_ids(),
        child.config.rootfs().diff_ids()
    );
    for (a, b) in child.layers.iter().zip(&copy.layers) {
        assert_eq!(snapshot(a), snapshot(b), "unpacked layers equal");
    }
    assert_eq!(copy.size, child.size);
    assert!(
        other.resolve(&base.id).unwrap().references.is_empty(),
        "saved by id: untagged"
    );
    for diff in child.config.rootfs().diff_ids() {
        assert!(
            layer_blob(&other, &diff[7..]) == layer_blob(&f.store, &diff[7..]),
            "layer blob {diff} digest-identical"
        );
    }

    // Loading again changes nothing; saving the copy gives the same archive.
    let before = snapshot(&f.dir.path().join("other/images"));
    other.load(&archive[..]).unwrap();
    assert_eq!(snapshot(&f.dir.path().join("other/images")), before);
    let mut again = Vec::new();
    other
        .save(
            &["child".into(), "alias:1".into(), base.id.clone()],
            &mut again,
        )
        .unwrap();
    assert_eq!(unpack_archive(&again), unpack_archive(&archive));
}

#[test]
fn docker_archives_legacy_and_gzip_with_shared_layers_load() {
    let f = Fixture::new();
    let shared = simple_layer("shared");
    let top = simple_layer("top");
    let shared_diff = sha256_hex(&shared);
    let top_diff = sha256_hex(&top);
    let one = config_json(&[&shared_diff]);
    let two = config_json(&[&shared_diff, &top_diff]);
    let (one_hex, two_hex) = (sha256_hex(&one), sha256_hex(&two));
    let manifest = serde_json::json!([
        {"Config": format!("{one_hex}.json"), "RepoTags": ["docker.io/library/one:latest"], "Layers": ["a/layer.tar"]},
        {"Config": format!("{two_hex}.json"), "RepoTags": ["two:v2"], "Layers": ["b/layer.tar", "c/layer.tar"]},
    ]);
    let archive = pack(&[
        (
            "manifest.json".into(),
            Member::File(serde_json::to_vec(&manifest).unwrap()),
        ),
        (format!("{one_hex}.json"), Member::File(one)),
        (format!("{two_hex}.json"), Member::File(two)),
        ("a/layer.tar".into(), Member::File(shared.clone())),
        // docker stores a layer two images share once, and links to it.
        ("b/layer.tar".into(), Member::Symlink("../a/layer.tar")),
        ("c/layer.tar".into(), Member::File(gzip(&top))),
    ]);
    let loaded = f.store.load_file(temp_file(&gzip(&archive))).unwrap();
    assert_eq!(loaded[0].references, ["one:latest"]);
    // The plain archive, read in place, into another store: the same.
    let other = f.second_store();
    let in_place = other.load_file(temp_file(&archive)).unwrap();
    assert_eq!(in_place, loaded);
    let two_there = other.resolve("two:v2").unwrap();
    assert_eq!(
        fs::read(two_there.layers[1].join("data/top")).unwrap(),
        b"top"
    );
    assert_eq!(loaded[1].references, ["two:v2"]);
    let two = f.store.resolve("two:v2").unwrap();
    assert_eq!(two.layers[0], f.store.resolve("one").unwrap().layers[0]);
    assert_eq!(fs::read(two.layers[1].join("data/top")).unwrap(), b"top");
    assert_eq!(
        fs::read_dir(f.images_dir().join("layers")).unwrap().count(),
        4,
        "2 layers + sidecars"
    );
    // The gzip blob is kept as it was (its digest is what a save writes).
    assert!(
        f.images_dir()
            .join("blobs/sha256")
            .join(sha256_hex(&gzip(&top)))
            .exists()
    );
}

#[test]
fn oci_archives_with_nested_indexes_load_this_platform() {
    let f = Fixture::new();
    let layer = gzip(&simple_layer("oci"));
    let diff = sha256_hex(&simple_layer("oci"));
    let config = config_json(&[&diff]);
    let desc = |media: &str, bytes: &[u8]| serde_json::json!({"mediaType": media, "digest": format!("sha256:{}", sha256_hex(bytes)), "size": bytes.len()});
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", &config),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", &layer)],
    }))
    .unwrap();
    let mut ours = desc("application/vnd.oci.image.manifest.v1+json", &manifest);
    ours["platform"] =
        serde_json::json!({"os": "linux", "architecture": Arch::default().to_string()});
    let mut foreign = desc("application/vnd.oci.image.manifest.v1+json", b"elsewhere");
    foreign["platform"] = serde_json::json!({"os": "linux", "architecture": "s390x"});
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [foreign, ours],
    }))
    .unwrap();
    let mut top = desc("application/vnd.oci.image.index.v1+json", &nested);
    top["annotations"] =
        serde_json::json!({"org.opencontainers.image.ref.name": "localhost/multi:1"});
    let index =
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [top]})).unwrap();
    let blob = |bytes: &[u8]| {
        (
            format!("blobs/sha256/{}", sha256_hex(bytes)),
            Member::File(bytes.to_vec()),
        )
    };
    let archive = pack(&[
        (
            "oci-layout".into(),
            Member::File(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ),
        ("index.json".into(), Member::File(index)),
        blob(&nested),
        blob(&manifest),
        blob(&config),
        blob(&layer),
    ]);
    let loaded = f.store.load_file(temp_file(&archive)).unwrap();
    assert_eq!(loaded[0].references, ["localhost/multi:1"]);
    let image = f.store.resolve("localhost/multi:1").unwrap();
    assert_eq!(fs::read(image.layers[0].join("data/oci")).unwrap(), b"oci");
}

/// Loads `archive` as a stream and as a file, expects an error whose text has `needle`, and
/// proves nothing changed.
#[track_caller]
fn assert_refused(f: &Fixture, archive: &[u8], needle: &str) {
    let before = snapshot(f.dir.path());
    let err = f.store.load(archive).expect_err("the load should fail");
    assert!(
        err.to_string().contains(needle),
        "stream: {needle:?} not in: {err}"
    );
    assert_eq!(
        snapshot(f.dir.path()),
        before,
        "a failed load changed files ({err})"
    );
    let err = f
        .store
        .load_file(temp_file(archive))
        .expect_err("the load should fail");
    assert!(
        err.to_string().contains(needle),
        "file: {needle:?} not in: {err}"
    );
    assert_eq!(
        snapshot(f.dir.path()),
        before,
        "a failed load changed files ({err})"
    );
}

/// `bytes` in an (unlinked) temporary file.
fn temp_file(bytes: &[u8]) -> fs::File {
    let mut file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut file, bytes).unwrap();
    file
}

#[test]
fn broken_and_hostile_archives_are_refused_without_a_trace() {
    let f = Fixture::new();
    f.base();
    let good = {
        let mut out = Vec::new();
        f.store.save(&["base".into()], &mut out).unwrap();
        out
    };
    let entries = unpack_archive(&good);
    let layer_path = entries
        .iter()
        .find(|(_, d)| d.len() > 1000)
        .map(|(p, _)| p.clone())
        .unwrap();

    assert_refused(&f, &good[..good.len() / 2], "end of file");
    assert_refused(&f, b"", "empty");
    assert_refused(&f, &[0x42u8; 3000], "not an image archive");
    assert_refused(
        &f,
        &pack(&[("x".into(), Member::File(b"x".to_vec()))]),
        "neither manifest.json",
    );

    // A blob whose content is not what its digest says.
    let mut wrong = entries.clone();
    for (path, data) in &mut wrong {
        if *path == layer_path {
            let last = data.len() - 1100;
            data[last] ^= 0xff;
        }
    }
    assert_refused(&f, &pack(&files(wrong)), "does not match its digest");

    // A manifest naming a blob the archive does not have.
    let missing: Vec<_> = entries
        .iter()
        .filter(|(p, _)| *p != layer_path)
        .cloned()
        .collect();
    assert_refused(&f, &pack(&files(missing)), "has no");
    // The same through the OCI index (no manifest.json).
    let oci_only: Vec<_> = entries
        .iter()
        .filter(|(p, _)| *p != layer_path && p != "manifest.json")
        .cloned()
        .collect();
    assert_refused(&f, &pack(&files(oci_only)), "has no");

    // Names that are not references.
    for tag in ["UPPER:case", "app:"] {
        assert_refused(
            &f,
            &docker_archive(&simple_layer("x"), tag),
            "invalid reference format",
        );
    }

    // A layer that is not the layer its config names.
    let mut lying = unpack_archive(&docker_archive(&simple_layer("x"), "liar:1"));
    for (path, data) in &mut lying {
        if path == "l1/layer.tar" {
            *data = simple_layer("y");
        }
    }
    assert_refused(&f, &pack(&files(lying)), "does not match the diff_id");

    // Layers that try to write outside themselves.
    let mut dotdot = Tar::new();
    dotdot.file("../escape", b"x", 0o644);
    assert_refused(
        &f,
        &docker_archive(&dotdot.finish(), "evil:1"),
        "escapes the layer",
    );
    let mut absolute = Tar::new();
    absolute.file("/abs", b"x", 0o644);
    assert_refused(
        &f,
        &docker_archive(&absolute.finish(), "evil:2"),
        "escapes the layer",
    );
    let mut through = Tar::new();
    through
        .symlink("link", "/tmp")
        .file("link/victim", b"x", 0o644);
    assert_refused(
        &f,
        &docker_archive(&through.finish(), "evil:3"),
        "escapes the layer",
    );
    // …and archives whose own paths do.
    let mut evil_path = Tar::new();
    evil_path.file("../manifest.json", b"[]", 0o644);
    assert_refused(&f, &evil_path.finish(), "escapes");

    // Compression carton cannot read is named.
    let mut zstd = vec![0x28, 0xb5, 0x2f, 0xfd];
    zstd.extend_from_slice(&[0u8; 64]);
    assert_refused(&f, &docker_archive(&zstd, "z:1"), "zstd");
}

#[test]
fn removing_layered_images_collects_what_only_they_used() {
    let f = Fixture::new();
    let base = f.base();
    let upper = f.upper();
    fs::create_dir_all(upper.join("data")).unwrap();
    fs::write(upper.join("data/new"), b"new").unwrap();
    let child = f.commit(&base, &upper, Some("child"), &[]).unwrap();
    let links = f.images_dir().join("l");
    assert_eq!(
        fs::read_dir(&links).unwrap().count(),
        2,
        "a short link per layer"
    );
    for layer in &child.layers {
        let short = short_layer_path(layer);
        assert!(short.starts_with(&links), "{}", short.display());
        assert_eq!(
            fs::canonicalize(&short).unwrap(),
            fs::canonicalize(layer).unwrap()
        );
    }

    assert_eq!(
        f.store.remove("child", false).unwrap(),
        [
            Removal::Untagged("child:latest".into()),
            Removal::Deleted(child.id.clone())
        ]
    );
    assert!(!child.layers[1].exists(), "the commit's layer is collected");
    assert!(base.layers[0].is_dir(), "the parent's is still used");
    assert!(
        !f.images_dir()
            .join("blobs/sha256")
            .join(top_diff_id(&child))
            .exists()
    );
    assert_eq!(fs::read_dir(&links).unwrap().count(), 1);
    f.store.remove("base", false).unwrap();
    for dir in ["blobs/sha256", "layers", "l", "tmp"] {
        assert_eq!(
            fs::read_dir(f.images_dir().join(dir)).unwrap().count(),
            0,
            "{dir}"
        );
    }
}

#[test]
fn a_short_link_is_only_used_when_it_points_at_its_layer() {
    let f = Fixture::new();
    let base = f.base();
    let layer = &base.layers[0];
    let link = short_layer_path(layer);
    assert_ne!(&link, layer);
    // Someone else's layer under the same short name: the full path is used.
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("../layers/other", &link).unwrap();
    assert_eq!(&short_layer_path(layer), layer);
    assert_eq!(
        short_layer_path(Path::new("/not/a/layer")),
        Path::new("/not/a/layer")
    );
}

#[test]
fn oci_whiteouts_become_overlay_whiteouts_on_unpack() {
    let f = Fixture::new();
    let mut tar = Tar::new();
    tar.dir("d/", 0o755)
        // A whiteout of a file this layer has: whiteouts only hide lower layers.
        .file("d/kept", b"kept", 0o644)
        .file("d/.wh.kept", b"", 0o644)
        // A whiteout followed by the same name: the entry wins.
        .file("d/.wh.back", b"", 0o644)
        .file("d/back", b"back", 0o644)
        // A plain deletion, and one in a directory the archive never lists.
        .file("d/.wh.deleted", b"", 0o644)
        .file("implicit/.wh.x", b"", 0o644)
        .dir("opaque/", 0o700)
        .file("opaque/.wh..wh..opq", b"", 0o644)
        .file("opaque/new", b"new", 0o644)
        // aufs bookkeeping is dropped.
        .dir(".wh..wh.plnk/", 0o700)
        .file(".wh..wh.plnk/123", b"x", 0o644)
        .pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere")])
        .file("redirected", b"r", 0o644);
    let image = f.store.import(&tar.finish()[..], None, &[]).unwrap();
    let layer = &image.layers[0];
    let kind = |p: &str| {
        fs::symlink_metadata(layer.join(p)).map(|m| (m.file_type().is_char_device(), m.rdev()))
    };
    assert_eq!(fs::read(layer.join("d/kept")).unwrap(), b"kept");
    assert_eq!(fs::read(layer.join("d/back")).unwrap(), b"back");
    assert_eq!(kind("d/deleted").unwrap(), (true, 0));
    assert_eq!(kind("implicit/x").unwrap(), (true, 0));
    assert!(!layer.join("d/.wh.deleted").exists() && !layer.join(".wh..wh.plnk").exists());
    assert_eq!(fs::read(layer.join("opaque/new")).unwrap(), b"new");
    assert!(!layer.join("opaque/.wh..wh..opq").exists());
    if is_root() {
        assert_eq!(
            get_xattr(&layer.join("opaque"), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(
            get_xattr(&layer.join("redirected"), "trusted.overlay.redirect"),
            None
        );
    }
    assert_eq!(
        fs::metadata(layer.join("opaque")).unwrap().mode() & 0o7777,
        0o700
    );

    let mut empty = Tar::new();
    empty.file("d/.wh.", b"", 0o644);
    let err = f.store.import(&empty.finish()[..], None, &[]).unwrap_err();
    assert!(err.to_string().contains("does not name a file"), "{err}");
}
