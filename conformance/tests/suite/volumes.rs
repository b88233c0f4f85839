//! Bind-mount volumes: `-v SRC:DST[:ro|rw]`.
//!
//! Every test ends with `finish()`, which also fails when a volume's bind mount shows up in the
//! host's mount table (all host directories used here live under the test's directory).

use std::fs;

use conformance::{Carton, lines};
use predicates::prelude::*;
use rstest::rstest;

/// A read-write volume: the container reads the host's files and its writes appear on the host.
#[rstest]
#[case::default_mode("")]
#[case::explicit_rw(":rw")]
fn rw_volume_is_shared_with_the_host(#[case] mode: &str) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let vol = ct.path("vol");
    fs::create_dir(&vol).unwrap();
    fs::write(vol.join("from-host"), "hello from host\n").unwrap();
    let spec = format!("{}:/data{mode}", vol.display());
    let out = ct.run_ok([
        "-v",
        &spec,
        "busybox",
        "sh",
        "-c",
        "cat /data/from-host && echo from-ctr > /data/from-ctr && mkdir /data/sub && echo deep > /data/sub/f",
    ]);
    assert_eq!(out, "hello from host\n");
    assert_eq!(
        fs::read_to_string(vol.join("from-ctr")).unwrap(),
        "from-ctr\n"
    );
    assert_eq!(fs::read_to_string(vol.join("sub/f")).unwrap(), "deep\n");
    ct.finish();
}

/// `:ro` is enforced inside (new files and appends fail with EROFS) and not leaked to the host.
#[test]
fn ro_volume_refuses_writes() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let vol = ct.path("vol");
    fs::create_dir(&vol).unwrap();
    fs::write(vol.join("from-host"), "hello from host\n").unwrap();
    let spec = format!("{}:/data:ro", vol.display());
    ct.run([
        "-v",
        &spec,
        "busybox",
        "sh",
        "-c",
        "cat /data/from-host; echo x >> /data/from-host && echo appended; touch /data/new && echo created; exit 9",
    ])
    .assert()
    .code(9)
    .stdout("hello from host\n")
    .stderr(predicate::str::contains("Read-only file system"));
    assert_eq!(
        fs::read_to_string(vol.join("from-host")).unwrap(),
        "hello from host\n"
    );
    assert!(
        !vol.join("new").exists(),
        "a file was created through a :ro volume"
    );
    // The host's own view of the directory is still writable.
    fs::write(vol.join("host-write"), "ok").expect("host directory became read-only");
    ct.finish();
}

/// A host directory that does not exist is created (as docker does), with its parents.
#[test]
fn missing_host_dir_is_created() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let vol = ct.path("missing/deeper");
    assert!(!ct.path("missing").exists());
    let spec = format!("{}:/data", vol.display());
    ct.run_ok(["-v", &spec, "busybox", "sh", "-c", "echo x > /data/f"]);
    assert!(vol.is_dir(), "{} was not created", vol.display());
    assert_eq!(fs::read_to_string(vol.join("f")).unwrap(), "x\n");
    ct.finish();
}

/// Several volumes at once: rw, ro, a destination that does not exist in the image, and one
/// nested in another volume's destination.
#[test]
fn several_volumes_at_once() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let mut specs = Vec::new();
    for (name, file, dst, mode) in [
        ("v1", "a", "/v1", ""),
        ("v2", "b", "/v2", ":ro"),
        ("v3", "c", "/deep/nested/v3", ""),
        ("v4", "d", "/v1/inner", ""),
    ] {
        let dir = ct.path(name);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(file), format!("{name}\n")).unwrap();
        specs.push("-v".to_string());
        specs.push(format!("{}:{dst}{mode}", dir.display()));
    }
    let mut args = specs;
    args.extend(
        [
            "busybox",
            "sh",
            "-c",
            "cat /v1/a /v2/b /deep/nested/v3/c /v1/inner/d; \
             echo w > /v1/w; echo w > /deep/nested/v3/w; echo w > /v1/inner/w; \
             touch /v2/w 2>/dev/null || echo v2-ro",
        ]
        .map(String::from),
    );
    let out = ct.run_ok(&args);
    assert_eq!(lines(&out), ["v1", "v2", "v3", "v4", "v2-ro"]);
    for written in ["v1/w", "v3/w", "v4/w"] {
        assert_eq!(
            fs::read_to_string(ct.path(written)).unwrap(),
            "w\n",
            "{written}"
        );
    }
    assert!(!ct.path("v2/w").exists());
    ct.finish();
}

/// A single file as a volume, read-write then read-only.
#[test]
fn file_volume() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let file = ct.path("app.conf");
    fs::write(&file, "key=value\n").unwrap();
    let spec = format!("{}:/etc/app.conf", file.display());
    let out = ct.run_ok([
        "-v",
        &spec,
        "busybox",
        "sh",
        "-c",
        "cat /etc/app.conf && echo more >> /etc/app.conf && [ -f /etc/app.conf ] && echo is-file",
    ]);
    assert_eq!(lines(&out), ["key=value", "is-file"]);
    assert_eq!(fs::read_to_string(&file).unwrap(), "key=value\nmore\n");

    let spec_ro = format!("{spec}:ro");
    ct.run([
        "-v",
        &spec_ro,
        "busybox",
        "sh",
        "-c",
        "cat /etc/app.conf; echo again >> /etc/app.conf || exit 4",
    ])
    .assert()
    .code(4)
    .stdout("key=value\nmore\n")
    .stderr(predicate::str::contains("Read-only file system"));
    assert_eq!(fs::read_to_string(&file).unwrap(), "key=value\nmore\n");
    ct.finish();
}
