//! The layered image store ("overlay commit"): a container's changes become a layer — and a
//! container of the new image sees exactly them (renamed lower directories included), with its
//! config carried over and `--change`s applied; history, tag, rmi, inspect, the `images` table;
//! save → load into an empty root (mtimes and xattrs kept); export of stopped and running
//! containers; a running container frozen for its commit unless `--pause=false`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use conformance::containers::{IDLE_UNTIL_TERM, SYNC_SH};
use conformance::images::{
    CHANGES, ETC_MOUNTS, FreezerState, LIST_TREE_SH, StoppedCommit, age_of,
    assert_mtimes_and_xattrs, assert_mtimes_and_xattrs_in_container, base_image, bytes_of,
    disk_usage, freezer_state, mark_xattrs, read_archive,
};
use conformance::{Carton, Snapshot, cgroup, lines};

#[test]
fn overlay_commit_captures_exactly_the_containers_changes() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let base = base_image(&ct);
    let base_tree = ct.tree_in(&base, "/data");
    let base_layers = ct.image_layers(&base);
    let layer_snapshots: Vec<Snapshot> = layer_dirs(&ct, &base_layers)
        .iter()
        .map(|d| Snapshot::of(d))
        .collect();

    // The changes, then the container's own view of /data ($1 of the listing script).
    let script = format!("{CHANGES} || exit 1\n{LIST_TREE_SH}");
    let seen_inside = ct.run_ok([
        "--name", "changer", &base, "sh", "-c", &script, "list", "/data",
    ]);
    let expected = conformance::images::parse_tree(&seen_inside);
    assert!(expected.contains_key("./old/fresh") && !expected.contains_key("./gone"));

    let id = ct.commit(&["-m", "the changes", "changer", "changed:v1"]);
    let tree = ct.tree_in("changed:v1", "/data");
    assert_eq!(
        tree, expected,
        "a container of the committed image sees what the container left"
    );
    assert!(tree["./mode"].contains("|600|"), "{}", tree["./mode"]);
    assert!(
        tree["./owned"].contains("|1000:1000|"),
        "{}",
        tree["./owned"]
    );
    assert!(
        tree["./new"].ends_with("|2"),
        "hard link count: {}",
        tree["./new"]
    );
    assert_eq!(tree["./sym"], "link:keep|777|0:0");
    assert!(!tree.contains_key("./old/inner") && !tree.contains_key("./dir"));

    // Nothing else: the new layer holds /data's changes only (no /etc placeholders, no
    // whiteout of anything else), and the rest of the rootfs is the parent's.
    let layers = ct.image_layers("changed:v1");
    assert_eq!(layers.len(), base_layers.len() + 1);
    assert_eq!(&layers[..base_layers.len()], &base_layers[..]);
    let members = layer_members(&ct, "changed:v1", layers.last().unwrap());
    assert_eq!(
        members,
        [
            "data/",
            "data/.wh.dir",
            "data/.wh.gone",
            "data/hard",
            "data/mode",
            "data/modify",
            "data/new",
            "data/old/",
            "data/old/.wh..wh..opq",
            "data/old/fresh",
            "data/owned",
            "data/sym",
        ]
    );
    for dir in ["/bin", "/etc", "/root", "/tmp"] {
        let tree = |image: &str| {
            let mut tree = ct.tree_in(image, dir);
            // Bind-mounted per container: not the image's.
            tree.retain(|path, _| dir != "/etc" || !ETC_MOUNTS.contains(&path.as_str()));
            tree
        };
        assert_eq!(tree("changed:v1"), tree(&base), "{dir} differs");
    }

    // The parent is unchanged, on disk and as containers see it.
    assert_eq!(ct.tree_in(&base, "/data"), base_tree);
    for (before, dir) in layer_snapshots.iter().zip(layer_dirs(&ct, &base_layers)) {
        before.assert_unchanged(&Snapshot::of(&dir), "a parent layer after the commit");
    }

    // history: one more row, newest first, with the command and the message.
    let rows = ct.history_rows("changed:v1");
    let parent_rows = ct.history_rows(&base);
    assert_eq!(rows.len(), parent_rows.len() + 1);
    assert_eq!(rows[0][0], id);
    assert!(rows[0][1].contains("echo more >> /data/modify"), "{rows:?}");
    assert_eq!(rows[0][3], "the changes");
    assert_eq!(rows[1..], parent_rows[..]);
    let inspect = ct.inspect_image("changed:v1");
    assert_eq!(inspect["Id"], id.as_str());
    assert_eq!(inspect["RepoTags"], serde_json::json!(["changed:v1"]));
    ct.finish();
}

#[test]
fn a_renamed_lower_directory_is_committed_under_its_new_name_with_all_its_content() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.run_ok([
        "--name",
        "setup",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /srv/tree/sub/deeper /srv/a/x /srv/b && echo top > /srv/tree/top \
         && echo b > /srv/tree/sub/b && echo c > /srv/tree/sub/deeper/c \
         && ln -s sub/b /srv/tree/link && chmod 750 /srv/tree/sub && chown 5:6 /srv/tree/sub/b \
         && echo f > /srv/file && echo old > /srv/a/x/old && echo new > /srv/b/new",
    ]);
    ct.commit(&["setup", "tree:1"]);
    let base = ct.tree_in("tree:1", "/srv");

    // Renames of lower-layer entries: a directory tree, a file into it, and a directory onto
    // the name of a deleted one. (Overlay without redirect_dir answers EXDEV for a lower
    // directory, and mv copies it: upper/ must then hold all of it, not a pointer.)
    let script = format!(
        "mv /srv/tree /srv/moved && mv /srv/file /srv/moved/renamed \
         && rm -rf /srv/a && mv /srv/b /srv/a || exit 1\n{LIST_TREE_SH}"
    );
    let seen_inside = ct.run_ok([
        "--name",
        "mover",
        "--network",
        "none",
        "tree:1",
        "sh",
        "-c",
        &script,
        "list",
        "/srv",
    ]);
    let expected = conformance::images::parse_tree(&seen_inside);
    ct.commit(&["mover", "tree:2"]);
    let tree = ct.tree_in("tree:2", "/srv");
    assert_eq!(
        tree, expected,
        "a container of the commit sees what the container left"
    );

    // The new names hold everything the old ones did, the old names are gone.
    for (path, description) in &base {
        if let Some(rest) = path.strip_prefix("./tree") {
            let moved = format!("./moved{rest}");
            assert_eq!(tree.get(&moved), Some(description), "{moved} (was {path})");
        }
    }
    assert_eq!(tree.get("./moved/renamed"), base.get("./file"));
    assert_eq!(tree.get("./a/new"), base.get("./b/new"));
    for gone in [
        "./tree",
        "./tree/top",
        "./file",
        "./b",
        "./a/x",
        "./a/x/old",
    ] {
        assert!(!tree.contains_key(gone), "{gone} is still there: {tree:#?}");
    }
    assert_eq!(
        tree.keys().filter(|p| p.starts_with("./moved/")).count(),
        base.keys().filter(|p| p.starts_with("./tree/")).count() + 1,
        "{tree:#?}"
    );
    // And so does a load of it elsewhere, which has no access to this store's layers.
    let archive = ct.path("tree.tar");
    ct.cmd()
        .args(["save", "-o"])
        .arg(&archive)
        .arg("tree:2")
        .stdout_ok();
    let Some(other) = Carton::new() else { return };
    other.cmd().arg("load").arg("-i").arg(&archive).stdout_ok();
    assert_eq!(other.tree_in("tree:2", "/srv"), expected);
    ct.cmd().args(["rm", "setup", "mover"]).stdout_ok();
    other.finish();
    ct.finish();
}

#[test]
fn a_commit_of_a_commit_stacks_three_layers() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.run_ok(["--name", "one", "busybox", "sh", "-c", "echo a > /a"]);
    let first = ct.commit(&["one", "stack:1"]);
    ct.run_ok([
        "--name",
        "two",
        "stack:1",
        "sh",
        "-c",
        "echo b > /b && rm /a",
    ]);
    let second = ct.commit(&["two", "stack:2"]);
    let layers = ct.image_layers("stack:2");
    assert_eq!(layers.len(), 3);
    assert_eq!(&layers[..2], &ct.image_layers("stack:1")[..]);
    assert_eq!(
        lines(&ct.run_ok([
            "--rm",
            "stack:2",
            "sh",
            "-c",
            "cat /b; [ -e /a ] || echo a-gone"
        ])),
        ["b", "a-gone"]
    );
    assert_eq!(ct.run_ok(["--rm", "stack:1", "cat", "/a"]).trim(), "a");
    let ids: Vec<String> = ct
        .history_rows("stack:2")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let short = |id: &str| id.to_string();
    assert_eq!(ids, [short(&second), short(&first), short(ct.busybox_id())]);
    ct.finish();
}

#[test]
fn commit_carries_the_containers_config_and_change_instructions_override_it() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    // No command: the image's CMD (sh) runs, reading its script from stdin.
    ct.run(["-i", "--name", "configured", "--network", "none"])
        .args(["-e", "K=V", "-w", "/some/dir", "busybox"])
        .write_stdin("echo content > file\n")
        .stdout_ok();
    ct.commit(&["configured", "carried:1"]);

    let parent = ct.inspect_image("busybox");
    let config = &ct.inspect_image("carried:1")["Config"];
    assert_eq!(config["Cmd"], parent["Config"]["Cmd"], "{config}");
    assert_eq!(config["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(config["WorkingDir"], "/some/dir", "{config}");
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap_or_else(|| panic!("no Env in {config}"))
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(env.contains(&"K=V"), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("HOSTNAME=")),
        "a container's hostname is not the image's: {env:?}"
    );

    // A container of it without a command: sh again, in /some/dir, with K.
    let out = ct
        .run(["-i", "--rm", "--network", "none", "carried:1"])
        .write_stdin("echo \"K=$K\"; pwd; cat file\n")
        .stdout_ok();
    assert_eq!(lines(&out), ["K=V", "/some/dir", "content"]);

    // --change instructions apply on top of what the container carried.
    let id = ct.commit(&[
        "-m",
        "with changes",
        "-c",
        r#"CMD ["echo","hi"]"#,
        "-c",
        "ENV X=1",
        "-c",
        "WORKDIR /tmp",
        "configured",
        "carried:2",
    ]);
    let config = &ct.inspect_image("carried:2")["Config"];
    assert_eq!(config["Cmd"], serde_json::json!(["echo", "hi"]));
    assert_eq!(config["WorkingDir"], "/tmp");
    assert_eq!(
        ct.run_ok(["--rm", "--network", "none", "carried:2"]),
        "hi\n"
    );
    let out = ct.run_ok([
        "--rm",
        "--network",
        "none",
        "carried:2",
        "sh",
        "-c",
        "echo \"X=$X K=$K\"; pwd; cat /some/dir/file",
    ]);
    assert_eq!(lines(&out), ["X=1 K=V", "/tmp", "content"]);

    // history: the new layer, with its message, above busybox's.
    let rows = ct.history_rows("carried:2");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0], id);
    assert_eq!(rows[0][1], "sh", "created by the container's command");
    assert_eq!(rows[0][3], "with changes");
    assert_ne!(rows[0][2], "0B", "the layer holds /some/dir/file: {rows:?}");
    assert_eq!(rows[1][0], ct.busybox_id());

    // A new ENTRYPOINT drops the inherited CMD (["sh"] was an argument list for the old
    // entrypoint), as a Dockerfile's ENTRYPOINT does; a CMD in the same changes stays.
    ct.commit(&[
        "-c",
        r#"ENTRYPOINT ["echo","entry"]"#,
        "configured",
        "carried:3",
    ]);
    assert_eq!(
        ct.inspect_image("carried:3")["Config"]["Cmd"],
        serde_json::Value::Null
    );
    assert_eq!(
        ct.run_ok(["--rm", "--network", "none", "carried:3"]),
        "entry\n"
    );
    ct.commit(&[
        "-c",
        r#"ENTRYPOINT ["echo","entry"]"#,
        "-c",
        r#"CMD ["and","cmd"]"#,
        "configured",
        "carried:4",
    ]);
    assert_eq!(
        ct.run_ok(["--rm", "--network", "none", "carried:4"]),
        "entry and cmd\n"
    );
    ct.cmd().args(["rm", "configured"]).stdout_ok();
    ct.finish();
}

#[test]
fn committing_a_running_container_freezes_it_and_thaws_it() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    if cgroup::version().is_none() {
        conformance::skip("no cgroups: nothing to freeze a container with");
        return;
    }
    if cgroup::version() == Some(cgroup::Version::V1) && !cgroup::has_controller("freezer") {
        conformance::skip("the v1 freezer controller is not mounted");
        return;
    }
    let sync = ct.handshake();
    // A big file the commit reads for a while: it is caught (stopped) while it holds the file
    // open. The counter shows the container running; `ping-N` files are answered by `pong-N`.
    let script = format!(
        "{SYNC_SH} dd if=/dev/zero of=/big bs=1M count=96 2>/dev/null; s ready; \
         i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; \
         for p in /sync/ping-*; do [ -e \"$p\" ] && s \"pong-${{p#/sync/ping-}}\"; done; \
         sleep 0.01; done"
    );
    let id = ct.run_detached([
        "-v",
        &sync.volume(),
        "--name",
        "busy",
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    sync.wait_for("ready");
    let big = ct.root().join("containers").join(&id).join("upper/big");
    let thawed = FreezerState {
        requested: false,
        frozen: false,
    };
    assert_eq!(freezer_state(&id), thawed, "before any commit");

    // Caught in the middle of reading the layer: the container is frozen.
    let commit = StoppedCommit::catch(&ct, &["busy", "frozen:1"], &big);
    let state = freezer_state(&id);
    assert!(
        state.requested && state.frozen,
        "the container is not frozen while its layer is read: {state:?}"
    );
    commit.resume();
    assert_eq!(freezer_state(&id), thawed, "after the commit");

    // It runs on: the counter moves. (`echo $i > /tmp/counter` truncates before it writes:
    // a read can land in between and see an empty file, which counts as "no value yet".)
    let read = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = ct
                .cmd()
                .args(["exec", "busy", "cat", "/tmp/counter"])
                .stdout_ok();
            if let Ok(value) = text.trim().parse::<u64>() {
                return value;
            }
            assert!(Instant::now() < deadline, "the counter file stays empty");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let before = read();
    let deadline = Instant::now() + Duration::from_secs(10);
    while read() == before {
        assert!(
            Instant::now() < deadline,
            "the counter stopped at {before}: still frozen?"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let size = ct.run_ok(["--rm", "frozen:1", "stat", "-c", "%s", "/big"]);
    assert_eq!(size.trim(), (96 << 20).to_string());

    // --pause=false: caught in the same place, the container is not frozen, and it answers.
    let commit = StoppedCommit::catch(&ct, &["--pause=false", "busy", "unpaused:1"], &big);
    assert_eq!(
        freezer_state(&id),
        thawed,
        "--pause=false froze the container for the read"
    );
    sync.release("ping-1");
    sync.wait_for("pong-1");
    commit.resume();
    assert_eq!(freezer_state(&id), thawed, "after the --pause=false commit");
    let size = ct.run_ok(["--rm", "unpaused:1", "stat", "-c", "%s", "/big"]);
    assert_eq!(size.trim(), (96 << 20).to_string());
    ct.cmd().args(["rm", "-f", "busy"]).stdout_ok();
    ct.finish();
}

#[test]
fn save_then_load_into_an_empty_root_runs_the_same_files() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let base = base_image(&ct);
    ct.run_ok(["--name", "changer", &base, "sh", "-c", CHANGES]);
    let xattrs = mark_xattrs(&ct, "changer");
    let id = ct.commit(&["changer", "changed:v1"]);
    let expected = ct.tree_in("changed:v1", "/data");
    // Explicit mtimes and xattrs: in the unpacked layer, and as a container sees them.
    let top_layer = |c: &Carton| {
        let layers = c.image_layers("changed:v1");
        c.root()
            .join("images/layers")
            .join(&layers.last().unwrap()[7..])
    };
    assert_mtimes_and_xattrs(&top_layer(&ct), xattrs, "the committed layer");
    assert_mtimes_and_xattrs_in_container(&ct, "changed:v1", xattrs);
    let archive = ct.path("changed.tar");
    ct.cmd()
        .args(["save", "-o"])
        .arg(&archive)
        .arg("changed:v1")
        .stdout_ok();

    let Some(other) = Carton::new() else { return };
    let out = other.cmd().arg("load").arg("-i").arg(&archive).stdout_ok();
    assert_eq!(lines(&out), ["Loaded image: changed:v1"]);
    assert_eq!(other.tree_in("changed:v1", "/data"), expected);
    assert_mtimes_and_xattrs(&top_layer(&other), xattrs, "the loaded layer");
    assert_mtimes_and_xattrs_in_container(&other, "changed:v1", xattrs);
    assert_eq!(
        other.inspect_image("changed:v1")["Id"],
        id.as_str(),
        "same image id"
    );
    let layers = ct.image_layers("changed:v1");
    assert_eq!(other.image_layers("changed:v1"), layers);
    // Digest-identical layer blobs from both stores.
    let blobs = |c: &Carton| {
        let file = c.path("again.tar");
        c.cmd()
            .args(["save", "-o"])
            .arg(&file)
            .arg("changed:v1")
            .stdout_ok();
        read_archive(&std::fs::read(&file).expect("read the saved archive"))
    };
    let (ours, theirs) = (blobs(&ct), blobs(&other));
    for diff_id in &layers {
        // Plain layers: the blob's digest is the diff_id.
        let path = format!("blobs/sha256/{}", &diff_id[7..]);
        let blob = |members: &[(String, Vec<u8>)]| {
            members
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, data)| data.clone())
                .unwrap_or_else(|| panic!("no layer blob {diff_id} saved"))
        };
        assert!(blob(&ours) == blob(&theirs), "layer blob {diff_id} differs");
    }
    assert_eq!(
        other.history_rows("changed:v1").len(),
        ct.history_rows("changed:v1").len()
    );

    // Through a pipe, gzip'ed on the way, into a third root.
    let saved = ct.cmd().args(["save", "changed:v1"]).output();
    assert!(saved.status.success());
    let gz = {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&saved.stdout).unwrap();
        enc.finish().unwrap()
    };
    let Some(third) = Carton::new() else { return };
    third.cmd().arg("load").write_stdin(gz).stdout_ok();
    assert_eq!(third.tree_in("changed:v1", "/data"), expected);
    assert_mtimes_and_xattrs(&top_layer(&third), xattrs, "the layer loaded from gzip");
    other.finish();
    third.finish();
    ct.finish();
}

#[test]
fn rmi_frees_the_disk_a_commit_used() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let images = ct.root().join("images");
    let before = Snapshot::of(&images);
    let usage = disk_usage(&images);
    ct.run_ok([
        "--name",
        "writer",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/payload bs=1M count=16 2>/dev/null",
    ]);
    let id = ct.commit(&["writer", "payload:1"]);
    ct.cmd().args(["tag", "payload:1", "payload:2"]).stdout_ok();
    assert!(disk_usage(&images) > usage + (15 << 20), "the layer stored");

    // In use by a container: deleting it is refused.
    ct.run_ok(["--name", "user", "payload:1", "true"]);
    let out = ct.cmd().args(["rmi", "-f", &id]).assert().code(125);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("is using its referenced image"), "{stderr}");
    ct.cmd().args(["rm", "user", "writer"]).stdout_ok();

    let out = ct.cmd().args(["rmi", "payload:1"]).stdout_ok();
    assert_eq!(lines(&out), ["Untagged: payload:1"]);
    let out = ct.cmd().args(["rmi", "payload:2"]).stdout_ok();
    assert_eq!(lines(&out)[0], "Untagged: payload:2");
    assert!(lines(&out)[1].starts_with("Deleted: sha256:"));
    before.assert_unchanged(&Snapshot::of(&images), "the store after rmi of the commit");
    assert!(disk_usage(&images) <= usage + 8192, "disk freed");
    ct.finish();
}

#[test]
fn tag_names_an_image_and_images_lists_every_name() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.cmd().args(["tag", "busybox", "mine:1"]).stdout_ok();
    ct.cmd()
        .args(["tag", ct.busybox_id(), "localhost:5000/team/mine"])
        .stdout_ok();
    let out = ct.cmd().arg("images").stdout_ok();
    let rows = lines(&out);
    assert!(rows[0].starts_with("REPOSITORY"), "{out}");
    let short = &ct.busybox_id()[7..19];
    for (repo, tag) in [
        ("busybox", "latest"),
        ("mine", "1"),
        ("localhost:5000/team/mine", "latest"),
    ] {
        assert!(
            rows.iter().any(|r| {
                let cells: Vec<&str> = r.split_whitespace().collect();
                cells.len() >= 3 && cells[0] == repo && cells[1] == tag && cells[2] == short
            }),
            "no row {repo} {tag} {short} in:\n{out}"
        );
    }
    assert_eq!(ct.run_ok(["--rm", "mine:1", "echo", "ok"]).trim(), "ok");
    ct.finish();
}

#[test]
fn images_shows_how_long_ago_each_image_was_created_and_its_size() {
    let started = Instant::now();
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.run_ok([
        "--name",
        "writer",
        "--network",
        "none",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/mib",
        "bs=1M",
        "count=1",
    ]);
    let id = ct.commit(&["writer", "mib:1"]);
    let rows = ct.images_rows();
    let elapsed = started.elapsed().as_secs() + 1;
    let row = |repo: &str, tag: &str| {
        rows.iter()
            .find(|r| r[0] == repo && r[1] == tag)
            .unwrap_or_else(|| panic!("no {repo}:{tag} row in {rows:?}"))
            .clone()
    };
    let busybox = row("busybox", "latest");
    let mib = row("mib", "1");
    assert_eq!(busybox[2], ct.busybox_id()[7..19]);
    assert_eq!(mib[2], id[7..19]);

    // CREATED: docker's "… ago", no older than this scenario.
    for r in [&busybox, &mib] {
        let age = age_of(&r[3]).unwrap_or_else(|| panic!("CREATED {:?} in {r:?}", r[3]));
        assert!(
            *age.start() <= elapsed,
            "{:?}: created before this scenario started {elapsed} s ago",
            r[3]
        );
    }

    // SIZE: docker's units, the unpacked content (the regular files of busybox's rootfs; one
    // MiB more for the commit).
    let rootfs_bytes: u64 = {
        let tar = std::fs::read(ct.busybox_tar()).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.header().entry_type().is_file())
            .map(|e| e.header().size().unwrap())
            .sum()
    };
    let size = |r: &Vec<String>| {
        bytes_of(&r[4]).unwrap_or_else(|| panic!("SIZE {:?} is not in docker's units: {r:?}", r[4]))
    };
    let (busybox_size, busybox_error) = size(&busybox);
    let (mib_size, mib_error) = size(&mib);
    let near = |shown: f64, error: f64, actual: u64| (shown - actual as f64).abs() <= error + 1.0;
    assert!(
        near(busybox_size, busybox_error, rootfs_bytes),
        "busybox: {} for {rootfs_bytes} bytes",
        busybox[4]
    );
    assert!(
        near(mib_size, mib_error, rootfs_bytes + (1 << 20)),
        "mib:1: {} for {} bytes",
        mib[4],
        rootfs_bytes + (1 << 20)
    );
    assert!(mib_size > busybox_size, "{} vs {}", mib[4], busybox[4]);
    ct.cmd().args(["rm", "writer"]).stdout_ok();
    ct.finish();
}

#[test]
fn export_writes_the_flattened_rootfs_of_stopped_and_running_containers() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let base = base_image(&ct);
    let sync = ct.handshake();
    let script = format!("{CHANGES} && {SYNC_SH} s ready; {IDLE_UNTIL_TERM}");
    ct.run_detached([
        "-v",
        &sync.volume(),
        "--name",
        "live",
        &base,
        "sh",
        "-c",
        &script,
    ]);
    sync.wait_for("ready");
    ct.run_ok(["--name", "stopped", &base, "sh", "-c", CHANGES]);

    let mut trees = Vec::new();
    for name in ["stopped", "live"] {
        let file = ct.path(&format!("{name}.tar"));
        ct.cmd()
            .args(["export", "-o"])
            .arg(&file)
            .arg(name)
            .stdout_ok();
        let members = read_archive(&std::fs::read(&file).unwrap());
        let names: Vec<&str> = members.iter().map(|(p, _)| p.as_str()).collect();
        assert!(
            names.contains(&"bin/busybox"),
            "{name}: the image's files are there"
        );
        assert!(names.contains(&"data/old/fresh") && names.contains(&"data/new"));
        for gone in ["data/gone", "data/old/inner", "data/dir/sub"] {
            assert!(!names.contains(&gone), "{name}: {gone} was deleted");
        }
        assert!(
            !names.iter().any(|n| n.contains(".wh.")),
            "{name}: flattened, no whiteouts"
        );
        // Mounts inside the container are not part of its rootfs.
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("proc/") || n.starts_with("sync/")),
            "{name}: {names:?}"
        );
        let data: BTreeMap<String, Vec<u8>> = members
            .into_iter()
            .filter(|(p, _)| p.starts_with("data/"))
            .collect();
        assert_eq!(data["data/modify"], b"modify\nmore\n");
        trees.push(data);
    }
    assert_eq!(trees[0], trees[1], "the same changes, running or stopped");
    assert!(
        ct.leaked_mounts().is_empty(),
        "export mounted on the host: {:?}",
        ct.leaked_mounts()
    );

    // An export imports back as a one-layer image with the same files.
    let out = ct
        .cmd()
        .args(["import", "-c", r#"CMD ["sh"]"#])
        .arg(ct.path("stopped.tar"))
        .arg("flat:1")
        .stdout_ok();
    assert!(out.starts_with("sha256:"));
    assert_eq!(ct.image_layers("flat:1").len(), 1);
    assert_eq!(ct.tree_in("flat:1", "/data"), {
        ct.commit(&["stopped", "committed:1"]);
        ct.tree_in("committed:1", "/data")
    });

    // To stdout as well; never to a terminal (not testable here) nor left half-written.
    let piped = ct.cmd().args(["export", "stopped"]).output();
    assert!(piped.status.success());
    assert_eq!(piped.stdout, std::fs::read(ct.path("stopped.tar")).unwrap());
    ct.cmd().args(["rm", "-f", "live"]).stdout_ok();
    ct.finish();
}

/// The unpacked directories of these diff_ids in the fixture's store.
fn layer_dirs(ct: &Carton, diff_ids: &[String]) -> Vec<std::path::PathBuf> {
    diff_ids
        .iter()
        .map(|d| ct.root().join("images/layers").join(&d[7..]))
        .collect()
}

/// Member names of the layer blob `diff_id` of `image`, read from a `save` of the image.
fn layer_members(ct: &Carton, image: &str, diff_id: &str) -> Vec<String> {
    let saved = ct.cmd().args(["save", image]).output();
    assert!(saved.status.success());
    let blob = read_archive(&saved.stdout)
        .into_iter()
        .find(|(p, _)| p == &format!("blobs/sha256/{}", &diff_id[7..]))
        .unwrap_or_else(|| panic!("layer {diff_id} not in the saved archive"))
        .1;
    let mut archive = tar::Archive::new(&blob[..]);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let mut name = e.path().unwrap().display().to_string();
            if e.header().entry_type().is_dir() && !name.ends_with('/') {
                name.push('/');
            }
            name
        })
        .collect()
}
