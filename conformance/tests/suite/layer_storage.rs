//! How carton keeps an imported layer, as a user sees it: `save` gives back the tarball that
//! was imported byte for byte — whatever its headers (GNU long names, ustar prefixes, PAX
//! records), its padding after the end-of-archive marker, or the paths it writes more than
//! once — and a gzip one as the gzip it was, so that the layer's digest and the image id
//! survive; a container sees the last writer of a path; the layer takes its size on disk once,
//! not once as a blob and once unpacked; and a layer changed behind carton's back is not saved
//! (the archive would carry a blob that does not match its digest), while the image can still
//! be listed and removed.

use std::path::Path;

use conformance::host::sha256_hex;
use conformance::images::{disk_usage, read_archive};
use conformance::tarball::{TarBuilder, garbage, gzip};
use conformance::{Carton, EXIT_CARTON_ERROR, is_image_id, lines};
use rstest::rstest;
use serde_json::Value;

/// GNU tar's record size (`-b 20`): it pads an archive with zero blocks up to a multiple of it.
const TAR_RECORD: usize = 10240;

/// Writes `tarball` to the scratch directory and imports it as `reference`; returns the id.
#[track_caller]
fn import(ct: &Carton, tarball: &[u8], reference: &str) -> String {
    let file = ct.path(&format!("{}.import", reference.replace(':', "-")));
    std::fs::write(&file, tarball).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let out = ct.cmd().arg("import").arg(&file).arg(reference).stdout_ok();
    let id = out.trim().to_string();
    assert!(is_image_id(&id), "import printed {out:?}, not an image id");
    id
}

/// The one layer of `image` as `carton save -o` writes it: its descriptor in the image's OCI
/// manifest, and the blob's bytes. Checks that docker's manifest.json names the same blob.
#[track_caller]
fn saved_layer(ct: &Carton, image: &str) -> (Value, Vec<u8>) {
    let file = ct.path("saved.tar");
    ct.cmd()
        .args(["save", "-o"])
        .arg(&file)
        .arg(image)
        .stdout_ok();
    let members = read_archive(&std::fs::read(&file).expect("read the saved archive"));
    std::fs::remove_file(&file).expect("remove the saved archive");
    let member = |path: &str| -> &[u8] {
        members
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, data)| &data[..])
            .unwrap_or_else(|| panic!("no {path} in the saved archive of {image}"))
    };
    let json = |path: &str| -> Value {
        serde_json::from_slice(member(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let blob_path = |digest: &Value| {
        let digest = digest.as_str().unwrap_or_default();
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("digest {digest:?}"));
        format!("blobs/sha256/{hex}")
    };
    let index = json("index.json");
    let manifest = json(&blob_path(&index["manifests"][0]["digest"]));
    let layers = manifest["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no layers in the manifest {manifest}"));
    assert_eq!(layers.len(), 1, "one layer expected: {manifest}");
    let descriptor = layers[0].clone();
    let path = blob_path(&descriptor["digest"]);
    assert_eq!(
        json("manifest.json")[0]["Layers"],
        serde_json::json!([path]),
        "docker's manifest.json names another layer blob than the OCI manifest"
    );
    let blob = member(&path).to_vec();
    (descriptor, blob)
}

/// Asserts that the layer of `image` saves as exactly `expected` (digest, size and bytes).
#[track_caller]
fn assert_saved_as(ct: &Carton, image: &str, expected: &[u8]) {
    let (descriptor, blob) = saved_layer(ct, image);
    let digest = format!("sha256:{}", sha256_hex(expected));
    assert_eq!(descriptor["digest"], digest.as_str(), "{descriptor}");
    assert_eq!(descriptor["size"], expected.len(), "{descriptor}");
    if blob != expected {
        let at = blob
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(blob.len().min(expected.len()));
        panic!(
            "the saved layer of {image} is not the tarball that was imported: {} bytes for {}, \
             first difference at byte {at} (block {}, offset {} in it)",
            blob.len(),
            expected.len(),
            at / 512,
            at % 512
        );
    }
}

/// Regular files of every size class around the 512-byte block, a symlink, a hard link.
fn every_kind_of_entry(b: &mut TarBuilder) {
    b.dir("etc", 0o755);
    b.dir("data", 0o750);
    b.dir("data/empty-dir", 0o700);
    b.file("data/empty", 0o644, b"");
    b.file("data/one", 0o600, b"1");
    b.file("data/block", 0o644, &garbage(512, 1));
    b.file("data/big", 0o755, &garbage(70 * 1024, 2));
    b.symlink("data/sym", "one");
    b.symlink("data/abs-sym", "/data/big");
    b.hardlink("data/hard", "data/big");
}

/// A directory, a file, a symlink target and a hard link target longer than the 100 bytes of
/// a header's name field (GNU `././@LongLink` records).
fn gnu_long_names(b: &mut TarBuilder) {
    let dir = format!("data/{}", "d".repeat(120));
    let file = format!("{dir}/{}", "f".repeat(60));
    b.dir(&dir, 0o755);
    b.file(&file, 0o644, &garbage(3000, 3));
    b.symlink("data/long-target", &format!("/{}", "t/".repeat(80)));
    b.hardlink("data/hard-to-long", &file);
    b.symlink(&format!("{dir}/{}", "s".repeat(70)), &"../".repeat(40));
}

/// Entries as the `tar` crate writes them in ustar format (a long path split into the prefix
/// field, owners with names), and a PAX extended header naming the next entry's path.
fn ustar_and_pax() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(1000);
        h.set_gid(100);
        h.set_username("someone").unwrap();
        h.set_groupname("users").unwrap();
        h.set_mtime(1_600_000_000);
        h
    };
    let deep = format!("srv/{}", "p".repeat(90));
    for dir in ["srv", deep.as_str()] {
        builder
            .append_data(
                &mut header(tar::EntryType::Directory, 0o755, 0),
                dir,
                &[][..],
            )
            .unwrap();
    }
    let split = format!("{deep}/{}", "n".repeat(50));
    let data = garbage(777, 4);
    builder
        .append_data(
            &mut header(tar::EntryType::Regular, 0o640, data.len() as u64),
            &split,
            &data[..],
        )
        .unwrap();

    let pax_path = format!("srv/{}", "x".repeat(200));
    let records = [
        pax_record("path", &pax_path),
        pax_record("comment", "written by hand"),
    ]
    .concat();
    let mut pax = header(tar::EntryType::XHeader, 0o644, records.len() as u64);
    pax.set_path("srv/PaxHeaders/x").unwrap();
    pax.set_cksum();
    builder.append(&pax, &records[..]).unwrap();
    let data = b"named by a PAX header\n";
    builder
        .append_data(
            &mut header(tar::EntryType::Regular, 0o644, data.len() as u64),
            "srv/truncated-name",
            &data[..],
        )
        .unwrap();
    builder.into_inner().unwrap()
}

/// One PAX record: `<length> <key>=<value>\n`, the length counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = format!(" {key}={value}\n");
    let mut len = rest.len() + 1;
    while len.to_string().len() + rest.len() != len {
        len += 1;
    }
    format!("{len}{rest}").into_bytes()
}

#[derive(Debug, Clone, Copy)]
enum Tarball {
    EveryKindOfEntry,
    GnuLongNames,
    PaddedToATarRecord,
    UstarAndPax,
}

fn tarball(kind: Tarball) -> Vec<u8> {
    let mut b = TarBuilder::new();
    match kind {
        Tarball::EveryKindOfEntry => every_kind_of_entry(&mut b),
        Tarball::GnuLongNames => gnu_long_names(&mut b),
        Tarball::PaddedToATarRecord => {
            every_kind_of_entry(&mut b);
            gnu_long_names(&mut b);
            let mut bytes = b.finish();
            // 1 to 20 more zero blocks after the end-of-archive marker.
            bytes.resize(bytes.len() + TAR_RECORD - bytes.len() % TAR_RECORD, 0);
            return bytes;
        }
        Tarball::UstarAndPax => return ustar_and_pax(),
    }
    b.finish()
}

#[rstest]
#[case::every_kind_of_entry(Tarball::EveryKindOfEntry)]
#[case::gnu_long_names(Tarball::GnuLongNames)]
#[case::padded_to_a_tar_record(Tarball::PaddedToATarRecord)]
#[case::ustar_and_pax_headers(Tarball::UstarAndPax)]
fn save_gives_back_an_imported_tarball_byte_for_byte(#[case] kind: Tarball) {
    let Some(ct) = Carton::new() else {
        return;
    };
    let bytes = tarball(kind);
    import(&ct, &bytes, "imported:1");
    assert_eq!(
        ct.image_layers("imported:1"),
        [format!("sha256:{}", sha256_hex(&bytes))],
        "an uncompressed layer's diff_id is the digest of the tarball"
    );
    assert_saved_as(&ct, "imported:1", &bytes);
    // Again: saving does not change what is kept.
    assert_saved_as(&ct, "imported:1", &bytes);
    ct.finish();
}

#[test]
fn a_tarball_that_writes_a_path_twice_still_saves_byte_for_byte() {
    let Some(ct) = Carton::new() else {
        return;
    };
    let busybox = std::fs::read(ct.busybox()).expect("read busybox");
    let mut b = TarBuilder::new();
    b.dir("bin", 0o755);
    b.dir("etc", 0o755);
    b.file("bin/busybox", 0o755, &busybox);
    b.dir("data", 0o755);
    b.file("data/target", 0o644, b"target content\n");
    // The same path twice, the first content longer than the second.
    b.file(
        "data/twice",
        0o644,
        b"first writer, longer than the second\n",
    );
    // A file, then a directory of the same name with a file in it.
    b.file("data/became-dir", 0o644, b"a file at first\n");
    // A hard link, then a regular file of the same name (the link's target keeps its content).
    b.hardlink("data/was-link", "data/target");
    // A symlink, then a regular file of the same name (nothing is written through the link).
    b.symlink("data/was-sym", "target");
    b.file("data/twice", 0o600, b"second\n");
    b.dir("data/became-dir", 0o711);
    b.file("data/became-dir/inner", 0o644, b"inside\n");
    b.file("data/was-link", 0o644, b"own content\n");
    b.file("data/was-sym", 0o644, b"not a link\n");
    let bytes = b.finish();
    import(&ct, &bytes, "twice:1");

    let script = "cd /data && busybox cat twice && busybox stat -c %a twice \
                  && [ -d became-dir ] && busybox stat -c %a became-dir \
                  && busybox cat became-dir/inner \
                  && busybox cat was-link && busybox stat -c %h was-link \
                  && [ ! -L was-sym ] && busybox cat was-sym \
                  && busybox cat target && busybox stat -c %h target";
    let out = ct.run_ok([
        "--rm",
        "--network",
        "none",
        "twice:1",
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(
        lines(&out),
        [
            "second",
            "600",
            "711",
            "inside",
            "own content",
            "1",
            "not a link",
            "target content",
            "1",
        ],
        "a container sees the last writer of each path"
    );
    assert_saved_as(&ct, "twice:1", &bytes);
    ct.finish();
}

#[test]
fn a_gzip_tarball_is_saved_as_the_gzip_it_was() {
    let Some(ct) = Carton::new() else {
        return;
    };
    let mut b = TarBuilder::new();
    every_kind_of_entry(&mut b);
    gnu_long_names(&mut b);
    let tar = b.finish();
    let gz = gzip(&tar);
    import(&ct, &gz, "zipped:1");
    assert_eq!(
        ct.image_layers("zipped:1"),
        [format!("sha256:{}", sha256_hex(&tar))],
        "the diff_id is the digest of the uncompressed tarball"
    );
    let (descriptor, _) = saved_layer(&ct, "zipped:1");
    let media_type = descriptor["mediaType"].as_str().unwrap_or_default();
    assert!(
        media_type.ends_with("gzip"),
        "a gzip layer saved as {media_type:?}"
    );
    assert_saved_as(&ct, "zipped:1", &gz);
    ct.finish();
}

#[test]
fn an_imported_layer_is_stored_once() {
    let Some(ct) = Carton::new() else {
        return;
    };
    const PAYLOAD: usize = 32 << 20;
    let mut b = TarBuilder::new();
    b.dir("data", 0o755);
    b.file("data/noise", 0o644, &garbage(PAYLOAD, 5));
    b.file("data/small", 0o644, b"small\n");
    let bytes = b.finish();
    let images = ct.root().join("images");
    import(&ct, &bytes, "noise:1");
    let used = disk_usage(&images);
    assert!(
        used >= PAYLOAD as u64,
        "{used} bytes under {} for a layer of {PAYLOAD} incompressible bytes",
        images.display()
    );
    assert!(
        used < PAYLOAD as u64 * 5 / 4,
        "an imported layer of {PAYLOAD} bytes takes {used} bytes on disk: stored twice \
         (as a tar blob and unpacked)?"
    );
    assert_saved_as(&ct, "noise:1", &bytes);
    ct.finish();
}

#[test]
fn a_layer_changed_behind_carton_s_back_is_not_saved() {
    let Some(ct) = Carton::new() else {
        return;
    };
    let payload = garbage(4096, 6);
    let mut b = TarBuilder::new();
    b.dir("data", 0o755);
    b.file("data/payload", 0o644, &payload);
    b.file("data/other", 0o644, b"other\n");
    let bytes = b.finish();
    import(&ct, &bytes, "changed:1");
    let diff_id = sha256_hex(&bytes);

    // The unpacked file: same length, other bytes.
    let images = ct.root().join("images");
    let unpacked = images.join("layers").join(&diff_id).join("data/payload");
    assert_eq!(
        std::fs::read(&unpacked).unwrap_or_else(|e| panic!("{}: {e}", unpacked.display())),
        payload,
        "the unpacked layer is not where this scenario expects it"
    );
    let changed: Vec<u8> = payload.iter().map(|b| b ^ 0xff).collect();
    overwrite_in_place(&unpacked, 0, &changed);
    // And the tar blob, where one is kept: one byte of the file's data.
    let blob = images.join("blobs/sha256").join(&diff_id);
    if blob.exists() {
        let at = bytes
            .windows(payload.len())
            .position(|w| w == payload)
            .expect("the payload in the tarball");
        overwrite_in_place(&blob, at + 100, &[bytes[at + 100] ^ 0xff]);
    }

    let before: Vec<_> = scratch_entries(&ct);
    let out = ct.path("out.tar");
    let assert = ct
        .cmd()
        .args(["save", "-o"])
        .arg(&out)
        .arg("changed:1")
        .assert()
        .code(EXIT_CARTON_ERROR);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.starts_with("carton: "), "{stderr:?}");
    assert!(
        stderr.contains("sha256") && stderr.contains("does not match"),
        "save of a changed layer: {stderr:?}"
    );
    assert_eq!(
        scratch_entries(&ct),
        before,
        "a failed save left an archive (or its temporary file)"
    );

    // Still an image: listed, and removable.
    let rows = ct.images_rows();
    assert!(
        rows.iter().any(|r| r[0] == "changed" && r[1] == "1"),
        "{rows:?}"
    );
    let out = ct.cmd().args(["rmi", "changed:1"]).stdout_ok();
    let out = lines(&out);
    assert_eq!(out[0], "Untagged: changed:1", "{out:?}");
    assert!(
        out.iter().any(|l| l.starts_with("Deleted: sha256:")),
        "{out:?}"
    );
    assert_eq!(ct.images_rows(), Vec::<Vec<String>>::new());
    ct.finish();
}

/// Writes `data` over the bytes of `path` at `offset`, in place (same inode, same length).
#[track_caller]
fn overwrite_in_place(path: &Path, offset: usize, data: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.seek(SeekFrom::Start(offset as u64)).unwrap();
    file.write_all(data)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    drop(file);
    assert_eq!(std::fs::metadata(path).unwrap().len(), len);
}

/// Names in the scratch directory, sorted.
fn scratch_entries(ct: &Carton) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(ct.work())
        .expect("read the scratch directory")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
