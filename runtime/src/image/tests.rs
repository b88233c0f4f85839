//! Store-level tests: imports of real-looking and hostile archives, resolution, removal and
//! garbage collection, all in throwaway state roots.

use super::digest::sha256_hex;
use super::testutil::{MTIME, Spec, Tar, gzip, is_root, layer_blob, snapshot};
use super::{Image, ImageError, ImageStore, Removal};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tar::EntryType;

/// A state root with an opened store, and a sentinel directory next to it that hostile
/// archives aim at.
struct Fixture {
    dir: tempfile::TempDir,
    store: ImageStore,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sentinel")).unwrap();
        fs::write(dir.path().join("sentinel/file"), b"keep me").unwrap();
        let store = ImageStore::open(&dir.path().join("state")).unwrap();
        Fixture { dir, store }
    }

    fn sentinel(&self) -> PathBuf {
        self.dir.path().join("sentinel")
    }

    fn images_dir(&self) -> PathBuf {
        self.dir.path().join("state/images")
    }

    fn import(&self, archive: &[u8], reference: Option<&str>) -> Result<Image, ImageError> {
        self.store.import(archive, reference, &[])
    }

    /// Imports `archive`, expects an error mentioning `needle`, and checks that nothing
    /// changed anywhere under the fixture: store, sentinel, and the directory holding both.
    fn assert_rejected(&self, archive: &[u8], needle: &str) -> ImageError {
        let before = snapshot(self.dir.path());
        let err = self
            .import(archive, Some("hostile:latest"))
            .expect_err("the import should have failed");
        assert!(
            err.to_string().contains(needle),
            "error {err:?} ({err}) should mention {needle:?}"
        );
        assert_eq!(
            before,
            snapshot(self.dir.path()),
            "a failed import changed files ({err})"
        );
        assert!(
            self.store
                .list()
                .unwrap()
                .iter()
                .all(|i| !i.references.contains(&"hostile:latest".to_string()))
        );
        err
    }
}

/// A small rootfs with one member of each kind.
fn rootfs() -> Vec<u8> {
    let mut tar = Tar::new();
    tar.dir("./", 0o755)
        .dir("./bin/", 0o755)
        .file("./bin/busybox", b"#!busybox binary", 0o755)
        .hardlink("./bin/sh", "./bin/busybox")
        .symlink("./bin/ls", "busybox")
        .file("./bin/su", b"setuid", 0o4755)
        .dir("./etc/", 0o755)
        .file("./etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644)
        .symlink("./etc/mtab", "/proc/mounts")
        .dir("./tmp/", 0o1777)
        .raw(Spec {
            mode: 0o600,
            ..Spec::new("./run/initctl", EntryType::Fifo)
        })
        .dir("./ro/", 0o555)
        .file(
            "./ro/inside",
            b"written before the dir became read-only",
            0o444,
        );
    tar.finish()
}

const ROOTFS_FILE_BYTES: u64 = 16 + 6 + 26 + 39;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn mtime(path: &Path) -> i64 {
    fs::symlink_metadata(path).unwrap().mtime()
}

#[test]
fn round_trip_of_every_entry_type_plain_and_gzip() {
    for compress in [false, true] {
        let f = Fixture::new();
        let plain = rootfs();
        let input = if compress {
            gzip(&plain)
        } else {
            plain.clone()
        };
        let image = f.import(&input, Some("busybox")).unwrap();
        assert_eq!(image.references, vec!["busybox:latest".to_string()]);
        assert_eq!(image.layers.len(), 1);
        assert_eq!(image.size, ROOTFS_FILE_BYTES);
        let layer = &image.layers[0];
        assert_eq!(
            layer,
            &f.images_dir().join("layers").join(sha256_hex(&plain))
        );

        assert_eq!(
            fs::read(layer.join("bin/busybox")).unwrap(),
            b"#!busybox binary"
        );
        assert_eq!(mode(&layer.join("bin/busybox")), 0o755);
        assert_eq!(mode(&layer.join("bin/su")), 0o4755, "setuid bit kept");
        assert_eq!(mode(&layer.join("tmp")), 0o1777, "sticky bit kept");
        assert_eq!(mode(&layer.join("ro")), 0o555);
        assert_eq!(mode(&layer.join("etc/passwd")), 0o644);
        assert_eq!(mode(layer), 0o755);
        let sh = fs::metadata(layer.join("bin/sh")).unwrap();
        assert_eq!(
            sh.ino(),
            fs::metadata(layer.join("bin/busybox")).unwrap().ino()
        );
        assert_eq!(sh.nlink(), 2);
        assert_eq!(
            fs::read_link(layer.join("bin/ls")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read_link(layer.join("etc/mtab")).unwrap(),
            Path::new("/proc/mounts")
        );
        assert!(
            fs::symlink_metadata(layer.join("run/initctl"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_eq!(mode(&layer.join("run/initctl")), 0o600);
        assert_eq!(mode(&layer.join("run")), 0o755, "implicit parent");
        assert_eq!(fs::read(layer.join("ro/inside")).unwrap().len(), 39);
        for p in [
            "bin",
            "bin/busybox",
            "bin/ls",
            "etc/mtab",
            "ro",
            "tmp",
            "run/initctl",
            "",
        ] {
            assert_eq!(mtime(&layer.join(p)), MTIME as i64, "mtime of {p:?}");
        }
        // Nothing but the rootfs in the layer directory.
        let mut top: Vec<String> = fs::read_dir(layer)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert_eq!(top, ["bin", "etc", "ro", "run", "tmp"]);

        // The OCI layout: blob as given (a plain one kept as its record, given back byte for
        // byte), config and manifest content-addressed.
        let blobs = f.images_dir().join("blobs/sha256");
        let blob_hex = sha256_hex(&input);
        assert!(
            layer_blob(&f.store, &blob_hex) == input,
            "the blob as imported"
        );
        assert_eq!(
            blobs.join(&blob_hex).exists(),
            compress,
            "a blob file for gzip only"
        );
        let config_bytes = fs::read(blobs.join(&image.id["sha256:".len()..])).unwrap();
        assert_eq!(format!("sha256:{}", sha256_hex(&config_bytes)), image.id);
        let config: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap();
        assert_eq!(config["os"], "linux");
        assert_eq!(
            config["architecture"],
            if cfg!(target_arch = "x86_64") {
                "amd64"
            } else {
                std::env::consts::ARCH
            }
        );
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(&plain))
        );
        assert_eq!(config["history"][0]["created_by"], "carton import");
        assert_eq!(
            config["created"],
            serde_json::json!(image.created().unwrap())
        );
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(f.images_dir().join("index.json")).unwrap()).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"],
            "busybox:latest"
        );
        let manifest_hex = entry["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(blobs.join(manifest_hex)).unwrap()).unwrap();
        let want_type = if compress {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        assert_eq!(manifest["layers"][0]["mediaType"], want_type);
        assert_eq!(
            manifest["layers"][0]["digest"],
            format!("sha256:{}", sha256_hex(&input))
        );
        assert_eq!(manifest["layers"][0]["size"], input.len());
        assert_eq!(manifest["config"]["digest"], image.id);
        assert_eq!(
            fs::read_to_string(f.images_dir().join("oci-layout"))
                .unwrap()
                .trim(),
            r#"{"imageLayoutVersion":"1.0.0"}"#
        );
        let sidecar = f
            .images_dir()
            .join("layers")
            .join(format!("{}.json", sha256_hex(&plain)));
        assert!(sidecar.is_file());
        assert_eq!(
            fs::read_dir(f.images_dir().join("tmp")).unwrap().count(),
            0,
            "staging removed"
        );

        // What list() reads back matches what import() returned.
        let listed = f.store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, image.id);
        assert_eq!(listed[0].size, image.size);
        assert_eq!(listed[0].layers, image.layers);
        assert_eq!(listed[0].short_id(), &image.id[7..19]);
    }
}

#[test]
fn ownership_devices_and_xattrs_need_root() {
    if !is_root() {
        println!("SKIP ownership_devices_and_xattrs_need_root: not running as root");
        return;
    }
    let f = Fixture::new();
    let capability: &[u8] = &[
        0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let mut tar = Tar::new();
    tar.raw(Spec {
        uid: 1000,
        gid: 1000,
        mode: 0o750,
        ..Spec::new("home/user/", EntryType::Directory)
    })
    .raw(Spec {
        uid: 1000,
        gid: 100,
        data: b"secret",
        mode: 0o4750,
        ..Spec::new("home/user/tool", EntryType::Regular)
    })
    .raw(Spec {
        uid: 1000,
        gid: 1000,
        link: b"tool",
        ..Spec::new("home/user/link", EntryType::Symlink)
    })
    .raw(Spec {
        mode: 0o666,
        device: (1, 3),
        ..Spec::new("dev/null", EntryType::Char)
    })
    .raw(Spec {
        mode: 0o660,
        gid: 6,
        device: (7, 0),
        ..Spec::new("dev/loop0", EntryType::Block)
    })
    .pax(&[
        ("SCHILY.xattr.security.capability", capability),
        ("SCHILY.xattr.user.note", b"hello"),
    ])
    .file("bin/ping", b"ping", 0o755);
    let image = f.import(&tar.finish(), None).unwrap();
    let layer = &image.layers[0];
    let meta = |p: &str| fs::symlink_metadata(layer.join(p)).unwrap();
    assert_eq!(
        (meta("home/user").uid(), meta("home/user").gid()),
        (1000, 1000)
    );
    assert_eq!(mode(&layer.join("home/user")), 0o750);
    assert_eq!(
        (meta("home/user/tool").uid(), meta("home/user/tool").gid()),
        (1000, 100)
    );
    assert_eq!(
        mode(&layer.join("home/user/tool")),
        0o4750,
        "setuid survives chown"
    );
    assert_eq!(
        (meta("home/user/link").uid(), meta("home/user/link").gid()),
        (1000, 1000)
    );
    assert!(meta("dev/null").file_type().is_char_device());
    assert_eq!(meta("dev/null").rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(mode(&layer.join("dev/null")), 0o666);
    assert!(meta("dev/loop0").file_type().is_block_device());
    assert_eq!(meta("dev/loop0").gid(), 6);
    let read_xattr = |p: &Path, name: &str| {
        let path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let name = std::ffi::CString::new(name).unwrap();
        let mut buf = vec![0u8; 256];
        // SAFETY: valid NUL-terminated strings and a buffer of the given length.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert!(
            n >= 0,
            "xattr {name:?} missing: {}",
            io::Error::last_os_error()
        );
        buf.truncate(n as usize);
        buf
    };
    assert_eq!(
        read_xattr(&layer.join("bin/ping"), "security.capability"),
        capability
    );
    assert_eq!(read_xattr(&layer.join("bin/ping"), "user.note"), b"hello");
}

#[test]
fn paths_with_and_without_dot_slash_long_names_and_pax() {
    let f = Fixture::new();
    let long_dir = "d".repeat(90);
    let long_path = format!("{long_dir}/{}", "f".repeat(80));
    let pax_path = format!("pax/{}", "p".repeat(150));
    let mut tar = Tar::new();
    tar.file("plain", b"1", 0o644)
        .file("./dotted", b"2", 0o644)
        .file(".//odd/./path", b"3", 0o644)
        .long(&long_path, b"4")
        .pax(&[("path", pax_path.as_bytes()), ("mtime", b"1500000000.25")])
        .file("ignored-name", b"5", 0o644);
    let image = f.import(&tar.finish(), None).unwrap();
    let layer = &image.layers[0];
    assert_eq!(fs::read(layer.join("plain")).unwrap(), b"1");
    assert_eq!(fs::read(layer.join("dotted")).unwrap(), b"2");
    assert_eq!(fs::read(layer.join("odd/path")).unwrap(), b"3");
    assert_eq!(fs::read(layer.join(&long_path)).unwrap(), b"4");
    assert_eq!(fs::read(layer.join(&pax_path)).unwrap(), b"5");
    assert!(!layer.join("ignored-name").exists());
    let meta = fs::metadata(layer.join(&pax_path)).unwrap();
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_500_000_000, 250_000_000)
    );
    assert!(image.references.is_empty());
}

#[test]
fn modes_are_exact_whatever_the_umask() {
    // Files are created with their final permission bits where the umask allows it; the
    // rest (group/other write, setuid/setgid/sticky, nothing at all) must still be exact.
    let f = Fixture::new();
    let mut tar = Tar::new();
    let modes = [0o644, 0o666, 0o777, 0o000, 0o2755, 0o6711, 0o1644, 0o400];
    for (i, m) in modes.iter().enumerate() {
        tar.file(&format!("f{i}"), b"x", *m);
    }
    let image = f.import(&tar.finish(), None).unwrap();
    let layer = &image.layers[0];
    for (i, m) in modes.iter().enumerate() {
        assert_eq!(mode(&layer.join(format!("f{i}"))), *m, "mode {m:o}");
    }
}

#[test]
fn later_entries_replace_earlier_ones() {
    let f = Fixture::new();
    let mut tar = Tar::new();
    tar.file("a", b"first", 0o644)
        .file("a", b"second", 0o600)
        .dir("d/", 0o700)
        .file("d/x", b"x", 0o644)
        .dir("d/", 0o750)
        .dir("gone/", 0o755)
        .file("gone/deep", b"deep", 0o644)
        .file("gone", b"now a file", 0o644)
        .file("f", b"file", 0o644)
        .dir("f/", 0o711)
        .symlink("s", "/etc/passwd")
        .file("s", b"not through the link", 0o644)
        .symlink("l", "/etc")
        .dir("l/", 0o700);
    let image = f.import(&tar.finish(), None).unwrap();
    let layer = &image.layers[0];
    assert_eq!(fs::read(layer.join("a")).unwrap(), b"second");
    assert_eq!(mode(&layer.join("a")), 0o600);
    assert_eq!(
        mode(&layer.join("d")),
        0o750,
        "the last directory entry wins"
    );
    assert!(layer.join("d/x").exists());
    assert_eq!(fs::read(layer.join("gone")).unwrap(), b"now a file");
    assert!(fs::metadata(layer.join("f")).unwrap().is_dir());
    assert_eq!(mode(&layer.join("f")), 0o711);
    assert!(fs::symlink_metadata(layer.join("s")).unwrap().is_file());
    assert_eq!(fs::read(layer.join("s")).unwrap(), b"not through the link");
    let l = fs::symlink_metadata(layer.join("l")).unwrap();
    assert!(
        l.is_dir(),
        "a directory replaces the symlink instead of following it"
    );
    assert_eq!(mode(&layer.join("l")), 0o700);
    // Replaced content does not count: a, d/x, gone, s.
    assert_eq!(image.size, 6 + 1 + 10 + 20);
}

#[test]
fn refuses_entries_that_escape_the_layer() {
    let f = Fixture::new();
    // Something valid exists first, so a refusal also proves the partial layer is dropped.
    let sentinel = f.sentinel();
    let sentinel_file = format!("{}/pwned", sentinel.display());
    let sentinel_dir = sentinel.display().to_string();
    let ok = |tar: &mut Tar| {
        tar.dir("./", 0o755).file("./ok", b"fine", 0o644);
    };
    type Case<'a> = (&'a str, Box<dyn Fn(&mut Tar) + 'a>);
    let cases: Vec<Case> = vec![
        (
            "dotdot",
            Box::new(|t| {
                t.file("../x", b"x", 0o644);
            }),
        ),
        (
            "dot-slash dotdot",
            Box::new(|t| {
                t.file("./../x", b"x", 0o644);
            }),
        ),
        (
            "inner dotdot",
            Box::new(|t| {
                t.file("a/../../x", b"x", 0o644);
            }),
        ),
        (
            "dotdot dir",
            Box::new(|t| {
                t.dir("../d/", 0o755);
            }),
        ),
        (
            "absolute",
            Box::new(|t| {
                t.file(&sentinel_file, b"x", 0o644);
            }),
        ),
        (
            "absolute symlink then write through it",
            Box::new(|t| {
                t.symlink("evil", &sentinel_dir)
                    .file("evil/pwned", b"x", 0o644);
            }),
        ),
        (
            "relative symlink then write through it",
            Box::new(|t| {
                t.symlink("evil", "..").file("evil/pwned", b"x", 0o644);
            }),
        ),
        (
            "deep relative symlink",
            Box::new(|t| {
                t.dir("a/", 0o755)
                    .symlink("a/up", "../../../sentinel")
                    .file("a/up/pwned", b"x", 0o644);
            }),
        ),
        (
            "symlink then mkdir through it",
            Box::new(|t| {
                t.symlink("evil", &sentinel_dir).dir("evil/sub/", 0o755);
            }),
        ),
        (
            "symlink then symlink through it",
            Box::new(|t| {
                t.symlink("evil", &sentinel_dir).symlink("evil/link", "/");
            }),
        ),
        (
            "symlink then fifo through it",
            Box::new(|t| {
                t.symlink("evil", &sentinel_dir)
                    .raw(Spec::new("evil/fifo", EntryType::Fifo));
            }),
        ),
        (
            "directory replaced by a symlink between two of its files",
            Box::new(|t| {
                t.dir("d/", 0o755)
                    .file("d/first", b"x", 0o644)
                    .symlink("d", &sentinel_dir)
                    .file("d/pwned", b"x", 0o644);
            }),
        ),
        (
            "symlink to a dir inside, still a symlink",
            Box::new(|t| {
                t.dir("real/", 0o755)
                    .symlink("alias", "real")
                    .file("alias/x", b"x", 0o644);
            }),
        ),
        (
            "hard link to dotdot",
            Box::new(|t| {
                t.hardlink("h", "../outside");
            }),
        ),
        (
            "hard link to an absolute path",
            Box::new(|t| {
                t.hardlink("h", "/etc/passwd");
            }),
        ),
        (
            "hard link through a symlink",
            Box::new(|t| {
                t.symlink("evil", &sentinel_dir).hardlink("h", "evil/file");
            }),
        ),
        (
            "hard link placed through a symlink",
            Box::new(|t| {
                t.symlink("evil", &sentinel_dir).hardlink("evil/h", "ok");
            }),
        ),
    ];
    for (name, build) in cases {
        let mut tar = Tar::new();
        ok(&mut tar);
        build(&mut tar);
        let err = f.assert_rejected(&tar.finish(), "escapes");
        assert!(matches!(err, ImageError::Escapes { .. }), "{name}: {err}");
    }
    assert_eq!(fs::read(sentinel.join("file")).unwrap(), b"keep me");
    assert_eq!(fs::read_dir(&sentinel).unwrap().count(), 1);
}

#[test]
fn other_bad_links_are_refused_without_side_effects() {
    let f = Fixture::new();
    let mut tar = Tar::new();
    tar.dir("d/", 0o755).hardlink("h", "d");
    f.assert_rejected(&tar.finish(), "directory");
    let mut tar = Tar::new();
    tar.hardlink("h", "missing");
    f.assert_rejected(&tar.finish(), "archive");
    let mut tar = Tar::new();
    tar.file("f", b"x", 0o644).file("f/below", b"y", 0o644);
    f.assert_rejected(&tar.finish(), "not a directory");
    let mut tar = Tar::new();
    tar.symlink(".", "elsewhere");
    f.assert_rejected(&tar.finish(), "layer root");
}

#[test]
fn corrupt_archives_are_refused_without_side_effects() {
    let f = Fixture::new();
    let big = vec![b'z'; 5000];
    let mut tar = Tar::new();
    tar.dir("bin/", 0o755)
        .file("bin/big", &big, 0o644)
        .file("bin/small", b"s", 0o644);
    let unterminated = tar.unterminated();
    let whole = tar.finish();
    // One member, cut exactly after its padded data: every member complete, no end marker.
    let mut one = Tar::new();
    one.file("only", b"data", 0o644);
    let one_unterminated = one.unterminated();
    let zipped = gzip(&whole);
    let mut bad_checksum = whole.clone();
    bad_checksum[0] ^= 0x55;
    let mut corrupt_gzip = zipped.clone();
    let middle = corrupt_gzip.len() / 2;
    corrupt_gzip[middle] ^= 0xff;
    corrupt_gzip[middle + 1] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty input", Vec::new()),
        ("no entries", vec![0; 1024]),
        (
            "garbage",
            b"this is not a tar archive, just some words".repeat(30),
        ),
        ("short garbage", b"hello".to_vec()),
        ("bad header checksum", bad_checksum),
        ("cut inside data", whole[..512 + 512 + 2000].to_vec()),
        ("cut inside a header", whole[..512 + 100].to_vec()),
        (
            "cut inside padding",
            whole[..512 + 512 + 5000 + 10].to_vec(),
        ),
        ("no end marker", unterminated),
        ("single member, no end marker", one_unterminated),
        ("truncated gzip", zipped[..zipped.len() / 2].to_vec()),
        ("gzip without trailer", zipped[..zipped.len() - 4].to_vec()),
        ("corrupt gzip", corrupt_gzip),
        (
            "gzip with trailing garbage",
            [zipped.clone(), b"junk".to_vec()].concat(),
        ),
        ("gzip of garbage", gzip(&b"not tar".repeat(100))),
        ("xz", vec![0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2, 3]),
        ("zstd", vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0]),
        ("bzip2", b"BZh91AY&SY".to_vec()),
    ];
    for (name, bytes) in cases {
        let err = f.assert_rejected(&bytes, "archive");
        assert!(
            matches!(
                err,
                ImageError::InvalidArchive(_) | ImageError::UnsupportedCompression(_)
            ),
            "{name}: {err:?}"
        );
    }
    // The complete archive (and its gzip) still import fine.
    f.import(&whole, None).unwrap();
    f.import(&zipped, None).unwrap();
}

#[test]
fn input_errors_and_bad_arguments_leave_the_store_untouched() {
    struct FailsAfter(Vec<u8>);
    impl Read for FailsAfter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("connection reset"));
            }
            let n = buf.len().min(self.0.len()).min(700);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }
    let f = Fixture::new();
    let before = snapshot(f.dir.path());
    let err = f
        .store
        .import(FailsAfter(rootfs()[..3000].to_vec()), None, &[])
        .unwrap_err();
    assert!(matches!(err, ImageError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("connection reset"), "{err}");
    let err = f
        .store
        .import(&rootfs()[..], Some("Bad:Ref"), &[])
        .unwrap_err();
    assert!(
        matches!(err, ImageError::InvalidReference { .. }),
        "{err:?}"
    );
    let err = f
        .store
        .import(&rootfs()[..], None, &["RUN rm -rf /".to_string()])
        .unwrap_err();
    assert!(matches!(err, ImageError::InvalidChange { .. }), "{err:?}");
    assert_eq!(before, snapshot(f.dir.path()));
}

#[test]
fn changes_are_applied_to_the_config() {
    let f = Fixture::new();
    let changes: Vec<String> = [
        r#"CMD ["/bin/sh", "-l"]"#,
        "ENTRYPOINT /init",
        "ENV PATH=/usr/bin:/bin LANG=C.UTF-8",
        "WORKDIR /srv",
        "USER nobody",
        "EXPOSE 8080",
        "LABEL org.example=yes",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let image = f
        .store
        .import(&rootfs()[..], Some("app:1"), &changes)
        .unwrap();
    let resolved = f.store.resolve("app:1").unwrap();
    for image in [image, resolved] {
        let config = image.config.config().clone().unwrap();
        assert_eq!(config.cmd().clone().unwrap(), ["/bin/sh", "-l"]);
        assert_eq!(
            config.entrypoint().clone().unwrap(),
            ["/bin/sh", "-c", "/init"]
        );
        assert_eq!(
            config.env().clone().unwrap(),
            ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]
        );
        assert_eq!(config.working_dir().as_deref(), Some("/srv"));
        assert_eq!(config.user().as_deref(), Some("nobody"));
        assert_eq!(config.exposed_ports().clone().unwrap(), ["8080/tcp"]);
        assert_eq!(config.labels().clone().unwrap()["org.example"], "yes");
    }
}

#[test]
fn identical_layers_are_stored_once() {
    let f = Fixture::new();
    let a = f.import(&rootfs(), Some("a")).unwrap();
    let b = f.import(&rootfs(), Some("b")).unwrap();
    let c = f.import(&gzip(&rootfs()), Some("c")).unwrap();
    assert_ne!(
        a.id, b.id,
        "each import is its own image (own creation time)"
    );
    assert_eq!(a.layers, b.layers);
    assert_eq!(a.layers, c.layers, "gzip or not, the diff_id is the same");
    let layers: Vec<_> = fs::read_dir(f.images_dir().join("layers"))
        .unwrap()
        .collect();
    assert_eq!(
        layers.len(),
        3,
        "one layer dir, its sidecar and the plain blob's record"
    );
    // Blob files: the gzip layer, 3 configs, 3 manifests.
    assert_eq!(
        fs::read_dir(f.images_dir().join("blobs/sha256"))
            .unwrap()
            .count(),
        7
    );
    assert_eq!(fs::read_dir(f.images_dir().join("tmp")).unwrap().count(), 0);
    let listed = f.store.list().unwrap();
    let ids: Vec<&str> = listed.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        [c.id.as_str(), b.id.as_str(), a.id.as_str()],
        "newest first"
    );
}

#[test]
fn resolves_names_ids_and_prefixes() {
    let f = Fixture::new();
    let mut tiny = Tar::new();
    tiny.file("x", b"x", 0o644);
    let tiny = tiny.finish();
    let image = f.import(&tiny, Some("busybox")).unwrap();
    let tagged = f
        .import(&tiny, Some("registry.local:5000/team/app:v2"))
        .unwrap();
    let hex = &image.id["sha256:".len()..];
    for reference in [
        "busybox",
        "busybox:latest",
        &image.id,
        hex,
        image.short_id(),
        &hex[..5],
    ] {
        assert_eq!(
            f.store.resolve(reference).unwrap().id,
            image.id,
            "{reference}"
        );
    }
    let found = f.store.resolve(&format!("sha256:{}", &hex[..8])).unwrap();
    assert_eq!(found.id, image.id);
    assert_eq!(
        f.store
            .resolve("registry.local:5000/team/app:v2")
            .unwrap()
            .id,
        tagged.id
    );
    for missing in [
        "busybox:other",
        "nothing",
        "registry.local:5000/team/app",
        &"0".repeat(64),
    ] {
        let err = f.store.resolve(missing).unwrap_err();
        assert_eq!(err.to_string(), format!("No such image: {missing}"));
    }
    // Enough images that two ids must share a first hex digit.
    let mut ids = vec![image.id.clone(), tagged.id.clone()];
    while ids.len() <= 16 {
        ids.push(f.import(&tiny, None).unwrap().id);
    }
    let shared = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|d| {
            ids.iter()
                .filter(|id| id[7..].starts_with(d.as_str()))
                .count()
                > 1
        })
        .unwrap();
    let err = f.store.resolve(&shared).unwrap_err();
    assert!(matches!(err, ImageError::Ambiguous { .. }), "{err:?}");
    assert_eq!(f.store.list().unwrap().len(), 17);
}

#[test]
fn a_name_wins_over_an_id_prefix() {
    let f = Fixture::new();
    let mut tiny = Tar::new();
    tiny.file("x", b"x", 0o644);
    let first = f.import(&tiny.finish(), None).unwrap();
    let prefix = first.short_id()[..4].to_string();
    let second = f.import(&rootfs(), Some(&prefix)).unwrap();
    assert_eq!(f.store.resolve(&prefix).unwrap().id, second.id);
    assert_eq!(f.store.resolve(first.short_id()).unwrap().id, first.id);
}

#[test]
fn remove_untags_then_deletes_and_collects_layers() {
    let f = Fixture::new();
    let mut other = Tar::new();
    other.file("other", b"other layer", 0o644);
    let shared_a = f.import(&rootfs(), Some("a:1")).unwrap();
    f.store.tag("a:1", "a:2").unwrap();
    let shared_b = f.import(&gzip(&rootfs()), Some("b")).unwrap();
    let lone = f.import(&other.finish(), Some("lone")).unwrap();
    assert_eq!(f.store.resolve("a:2").unwrap().references, ["a:1", "a:2"]);

    // A name with other names left: untag only.
    assert_eq!(
        f.store.remove("a:1", false).unwrap(),
        [Removal::Untagged("a:1".into())]
    );
    assert_eq!(f.store.resolve(&shared_a.id).unwrap().references, ["a:2"]);
    assert!(f.store.resolve("a:1").is_err());

    // By id with several names: refused without force, everything with it.
    f.store.tag("a:2", "a:3").unwrap();
    let err = f.store.remove(shared_a.short_id(), false).unwrap_err();
    assert!(err.to_string().contains("must be forced"), "{err}");
    assert_eq!(
        f.store.remove(shared_a.short_id(), true).unwrap(),
        [
            Removal::Untagged("a:2".into()),
            Removal::Untagged("a:3".into()),
            Removal::Deleted(shared_a.id.clone()),
        ]
    );
    // The layer is still used by b: it survives; a's config and manifest are gone.
    assert!(shared_a.layers[0].is_dir());
    assert!(
        !f.images_dir()
            .join("blobs/sha256")
            .join(&shared_a.id[7..])
            .exists()
    );
    assert_eq!(f.store.resolve("b").unwrap().layers, shared_a.layers);
    // The plain blob of a is no longer referenced (b's blob is gzip).
    assert!(
        !f.images_dir()
            .join("blobs/sha256")
            .join(sha256_hex(&rootfs()))
            .exists()
    );

    // The last name deletes, and the now unused layer goes with it.
    assert_eq!(
        f.store.remove("b:latest", false).unwrap(),
        [
            Removal::Untagged("b:latest".into()),
            Removal::Deleted(shared_b.id.clone())
        ]
    );
    assert!(!shared_b.layers[0].exists());
    assert!(lone.layers[0].is_dir());
    assert_eq!(f.store.remove(&lone.id, false).unwrap().len(), 2);
    assert!(matches!(
        f.store.remove("lone", false),
        Err(ImageError::NotFound(_))
    ));

    // Empty again: only the layout skeleton is left.
    let images = f.images_dir();
    assert!(f.store.list().unwrap().is_empty());
    for dir in ["blobs/sha256", "layers", "tmp"] {
        assert_eq!(
            fs::read_dir(images.join(dir)).unwrap().count(),
            0,
            "{dir} not empty"
        );
    }
}

#[test]
fn retagging_leaves_a_dangling_image_and_ids_delete_it() {
    let f = Fixture::new();
    let old = f.import(&rootfs(), Some("app")).unwrap();
    let new = f.import(&rootfs(), Some("app")).unwrap();
    assert_eq!(f.store.resolve("app").unwrap().id, new.id);
    let dangling = f.store.resolve(&old.id).unwrap();
    assert!(dangling.references.is_empty());
    assert_eq!(f.store.list().unwrap().len(), 2);
    assert_eq!(
        f.store.remove(&old.id, false).unwrap(),
        [Removal::Deleted(old.id.clone())]
    );
    assert!(new.layers[0].is_dir(), "the shared layer stays");
    // Tagging an untagged image replaces its untagged index entry.
    let untagged = f.import(&rootfs(), None).unwrap();
    f.store.tag(untagged.short_id(), "named").unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(f.images_dir().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(f.store.resolve("named").unwrap().id, untagged.id);
}

#[test]
fn stale_staging_directories_are_swept_by_gc() {
    let f = Fixture::new();
    let tmp = f.images_dir().join("tmp");
    let stale = tmp.join("crashed");
    fs::create_dir_all(stale.join("layer/deep")).unwrap();
    fs::write(stale.join("lock"), b"").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::open(&stale).unwrap().set_modified(old).unwrap();
    fs::create_dir(tmp.join("fresh")).unwrap();
    let image = f.import(&rootfs(), Some("x")).unwrap();
    assert!(stale.exists(), "imports do not sweep");
    f.store.remove(&image.id, false).unwrap();
    assert!(!stale.exists());
    assert!(tmp.join("fresh").exists(), "too young to be declared dead");
}

/// `cargo test -p carton --lib image::tests::bench -- --ignored --nocapture`: imports a
/// busybox rootfs (the host's /usr/bin/busybox plus a symlink per applet) and prints timings.
#[test]
#[ignore = "benchmark: run explicitly"]
fn bench_busybox_rootfs_import() {
    let Ok(busybox) = fs::read("/usr/bin/busybox") else {
        println!("SKIP bench_busybox_rootfs_import: /usr/bin/busybox not installed");
        return;
    };
    let applets = std::process::Command::new("/usr/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    let applets = String::from_utf8(applets.stdout).unwrap();
    let mut tar = Tar::new();
    tar.dir("./", 0o755);
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "root",
    ] {
        tar.dir(&format!("./{dir}/"), 0o755);
    }
    tar.file("./bin/busybox", &busybox, 0o755);
    for applet in applets.lines().filter(|a| *a != "bin/busybox") {
        tar.symlink(&format!("./{applet}"), "/bin/busybox");
    }
    let archive = tar.finish();
    let zipped = gzip(&archive);
    let f = Fixture::new();
    for (name, input) in [
        ("plain", &archive),
        ("gzip", &zipped),
        ("plain again", &archive),
    ] {
        let usage = |who| {
            let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
            // SAFETY: getrusage fills the struct it is given.
            unsafe { libc::getrusage(who, u.as_mut_ptr()) };
            // SAFETY: initialised by getrusage above (or still zeroed).
            let u = unsafe { u.assume_init() };
            let t = |tv: libc::timeval| tv.tv_sec as f64 * 1e3 + tv.tv_usec as f64 / 1e3;
            (t(u.ru_utime), t(u.ru_stime))
        };
        let (user, system) = usage(libc::RUSAGE_THREAD);
        let start = std::time::Instant::now();
        let image = f.import(input, None).unwrap();
        let (user_after, system_after) = usage(libc::RUSAGE_THREAD);
        println!(
            "{name}: {} bytes in, {} entries, {} bytes unpacked: {:.1} ms wall, {:.1} ms user, {:.1} ms system",
            input.len(),
            applets.lines().count() + 10,
            image.size,
            start.elapsed().as_secs_f64() * 1e3,
            user_after - user,
            system_after - system,
        );
    }
}
