//! Container and image lifecycle: names, `ps`, `rm`, `--rm`, `import`, `images`, `rmi`.

use std::collections::BTreeSet;

use conformance::snapshot::Kind;
use conformance::{Carton, Snapshot, host, is_hex, is_image_id, lines, tarball};
use nix::sys::signal::Signal;
use predicates::prelude::*;
use rstest::rstest;

/// Asserts that a table header names `columns`, in this order.
#[track_caller]
fn assert_header(header: &str, columns: &[&str]) {
    let mut at = 0;
    for col in columns {
        let pos = header[at..]
            .find(col)
            .unwrap_or_else(|| panic!("column {col:?} missing or out of order in {header:?}"));
        at += pos + col.len();
    }
}

const PS_COLUMNS: [&str; 7] = [
    "CONTAINER ID",
    "IMAGE",
    "COMMAND",
    "CREATED",
    "STATUS",
    "PORTS",
    "NAMES",
];
const IMAGES_COLUMNS: [&str; 5] = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"];

/// The row of `ps` output whose last column (NAMES) is `name`.
fn row_named<'a>(table: &'a str, name: &str) -> Option<&'a str> {
    table
        .lines()
        .skip(1)
        .find(|l| l.split_whitespace().last() == Some(name))
}

#[test]
fn named_container_is_listed_as_exited() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.run(["--name", "web1", "busybox", "sh", "-c", "exit 3"])
        .assert()
        .code(3);

    let running = ct.cmd().arg("ps").stdout_ok();
    assert_header(running.lines().next().unwrap_or(""), &PS_COLUMNS);
    assert!(
        row_named(&running, "web1").is_none(),
        "`ps` lists an exited container:\n{running}"
    );

    let all = ct.cmd().args(["ps", "-a"]).stdout_ok();
    assert_header(all.lines().next().unwrap_or(""), &PS_COLUMNS);
    let row = row_named(&all, "web1").unwrap_or_else(|| panic!("web1 not in `ps -a`:\n{all}"));
    let short = ct.cmd().args(["ps", "-aq"]).stdout_ok();
    assert!(
        row.starts_with(short.trim()),
        "row does not start with the short id {short:?}: {row}"
    );
    assert!(row.contains("busybox"), "IMAGE: {row}");
    assert!(row.contains("Exited (3)"), "STATUS: {row}");
    assert!(row.contains(" ago"), "STATUS: {row}");
    ct.finish();
}

#[test]
fn ps_q_prints_ids() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.run_ok(["busybox", "true"]);
    ct.run_ok(["busybox", "true"]);
    let short = lines(&ct.cmd().args(["ps", "-aq"]).stdout_ok());
    let full = lines(&ct.cmd().args(["ps", "-aq", "--no-trunc"]).stdout_ok());
    assert_eq!(short.len(), 2, "{short:?}");
    assert_eq!(full.len(), 2, "{full:?}");
    assert!(short.iter().all(|s| is_hex(s, 12)), "{short:?}");
    assert!(full.iter().all(|s| is_hex(s, 64)), "{full:?}");
    let truncated: BTreeSet<&str> = full.iter().map(|f| &f[..12]).collect();
    let short: BTreeSet<&str> = short.iter().map(String::as_str).collect();
    assert_eq!(short, truncated);
    assert_eq!(
        ct.cmd().args(["ps", "-q"]).stdout_ok(),
        "",
        "nothing is running"
    );
    ct.finish();
}

/// A running container is `Up`; `rm` refuses it, `rm -f` kills and removes it.
#[test]
fn running_container_is_up_and_rm_needs_force() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let mut running = ct
        .run([
            "--name",
            "sleeper",
            "busybox",
            "sh",
            "-c",
            "echo ready; sleep 60",
        ])
        .spawn();
    running.wait_for_stdout("ready");

    let table = ct.cmd().arg("ps").stdout_ok();
    let row =
        row_named(&table, "sleeper").unwrap_or_else(|| panic!("sleeper not in `ps`:\n{table}"));
    assert!(row.contains("Up "), "STATUS: {row}");
    let id = ct.only_container_id();
    assert_eq!(lines(&ct.cmd().args(["ps", "-q"]).stdout_ok()), [&id[..12]]);

    ct.cmd()
        .args(["rm", "sleeper"])
        .assert()
        .code(125)
        .stderr(predicate::str::is_empty().not());
    assert!(
        running.try_wait().is_none(),
        "rm without -f stopped the container"
    );
    assert_eq!(ct.container_ids(), std::slice::from_ref(&id));

    ct.cmd()
        .args(["rm", "-f", "sleeper"])
        .assert()
        .success()
        .stdout("sleeper\n");
    running.assert().code(128 + Signal::SIGKILL as i32);
    assert_eq!(ct.container_ids(), Vec::<String>::new());
    assert!(!ct.root().join("containers").join(&id).exists());
    ct.finish();
}

/// `rm` takes names, full ids and unique id prefixes, and echoes each as given.
#[test]
fn rm_accepts_name_id_and_prefix() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.run_ok(["--name", "by-name", "busybox", "true"]);
    ct.run_ok(["busybox", "true"]);
    ct.run_ok(["busybox", "true"]);
    let table = ct.cmd().args(["ps", "-a", "--no-trunc"]).stdout_ok();
    let named_id = row_named(&table, "by-name")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("by-name not in:\n{table}"))
        .to_string();
    let ids = ct.container_ids();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let others: Vec<&String> = ids.iter().filter(|i| **i != named_id).collect();
    assert_eq!(others.len(), 2, "{ids:?} / {named_id}");
    let (by_id, for_prefix) = (others[0].clone(), others[1].clone());
    // The shortest prefix (at least 4) that no other id shares.
    let prefix = (4..=64)
        .map(|n| &for_prefix[..n])
        .find(|p| ids.iter().filter(|i| i.starts_with(p)).count() == 1)
        .unwrap()
        .to_string();

    ct.cmd()
        .args(["rm", "by-name", &by_id, &prefix])
        .assert()
        .success()
        .stdout(format!("by-name\n{by_id}\n{prefix}\n"));
    assert_eq!(ct.container_ids(), Vec::<String>::new());
    assert_eq!(ct.container_dirs(), Vec::<String>::new());
    ct.finish();
}

#[test]
fn rm_unknown_container_fails() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.cmd()
        .args(["rm", "nosuchcontainer"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("No such container"));
    ct.finish();
}

/// `--rm` leaves no container directory, no record, no mount; keeps the exit code; frees the name.
#[rstest]
#[case::success(&["sh", "-c", "echo hi > /x"], 0)]
#[case::failure(&["sh", "-c", "exit 5"], 5)]
#[case::command_not_found(&["nosuchcmd"], 127)]
fn rm_flag_leaves_nothing_behind(#[case] command: &[&str], #[case] code: i32) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let images = Snapshot::of(&ct.root().join("images"));
    let mut args = vec!["--rm", "--name", "ephemeral", "busybox"];
    args.extend_from_slice(command);
    ct.run(&args).assert().code(code);

    assert_eq!(ct.container_ids(), Vec::<String>::new(), "record left");
    assert_eq!(
        ct.container_dirs(),
        Vec::<String>::new(),
        "container directory left"
    );
    assert_eq!(
        host::mount_lines_mentioning(ct.root()),
        Vec::<String>::new(),
        "mount left"
    );
    images.assert_unchanged(
        &Snapshot::of(&ct.root().join("images")),
        "image store after --rm",
    );
    // The name is free again.
    ct.run_ok(["--rm", "--name", "ephemeral", "busybox", "true"]);
    ct.finish();
}

#[test]
fn import_prints_an_id_and_images_lists_it() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let id = ct.busybox_id().to_string();
    let hex = &id["sha256:".len()..];
    let table = ct.cmd().arg("images").stdout_ok();
    assert_header(table.lines().next().unwrap_or(""), &IMAGES_COLUMNS);
    let row: Vec<&str> = table
        .lines()
        .skip(1)
        .find(|l| l.starts_with("busybox "))
        .unwrap_or_else(|| panic!("busybox not in `images`:\n{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[..3], ["busybox", "latest", &hex[..12]], "{table}");
    assert_eq!(
        lines(&ct.cmd().args(["images", "-q"]).stdout_ok()),
        [&hex[..12]]
    );

    // Another tag of the same tarball.
    ct.import_busybox("busybox:v2", &[]);
    let table = ct.cmd().arg("images").stdout_ok();
    let tags: BTreeSet<(&str, &str)> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?))
        })
        .collect();
    assert_eq!(
        tags,
        BTreeSet::from([("busybox", "latest"), ("busybox", "v2")]),
        "{table}"
    );
    ct.finish();
}

#[test]
fn import_from_stdin() {
    let Some(ct) = Carton::new() else {
        return;
    };
    let tar = std::fs::read(ct.busybox_tar()).unwrap();
    let out = ct
        .cmd()
        .args(["import", "-", "fromstdin:1"])
        .write_stdin(tar)
        .stdout_ok();
    assert!(is_image_id(out.trim()), "{out:?}");
    let table = ct.cmd().arg("images").stdout_ok();
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["fromstdin", "1"])),
        "{table}"
    );
    ct.run_ok(["--rm", "fromstdin:1", "true"]);
    ct.finish();
}

/// A gzip-compressed tarball (as `docker export | gzip` gives) imports and runs.
#[test]
fn import_gzip_and_run() {
    let Some(ct) = Carton::new() else {
        return;
    };
    let gz = ct.path("busybox.tar.gz");
    std::fs::write(
        &gz,
        tarball::gzip(&std::fs::read(ct.busybox_tar()).unwrap()),
    )
    .unwrap();
    let out = ct.cmd().arg("import").arg(&gz).arg("zipped").stdout_ok();
    assert!(is_image_id(out.trim()), "{out:?}");
    let out = ct.run_ok(["--rm", "zipped", "head", "-n1", "/etc/passwd"]);
    assert!(out.starts_with("root:x:0:0:"), "{out:?}");
    ct.finish();
}

/// True when some regular file under `dir` has the content hash `sha256`.
fn tree_holds_content(dir: &std::path::Path, sha256: &str) -> bool {
    Snapshot::of(dir)
        .entries
        .values()
        .any(|e| matches!(&e.kind, Kind::File { sha256: s, .. } if s == sha256))
}

/// `rmi` is refused while an exited container uses the image (store untouched), and works after
/// `rm`: the tag and the layer's content are gone.
#[test]
fn rmi_refused_while_a_container_uses_the_image() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.run_ok(["--name", "user", "busybox", "true"]);
    let before = ct.snapshot_root();
    ct.cmd()
        .args(["rmi", "busybox"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("is using"));
    before.assert_unchanged(&ct.snapshot_root(), "store after a refused rmi");
    assert_eq!(lines(&ct.cmd().args(["images", "-q"]).stdout_ok()).len(), 1);

    ct.cmd().args(["rm", "user"]).assert().success();
    let busybox_sha = host::sha256_file(ct.busybox());
    assert!(
        tree_holds_content(ct.root(), &busybox_sha),
        "no busybox in the store before rmi?"
    );
    ct.cmd()
        .args(["rmi", "busybox"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Untagged: busybox:latest"))
        .stdout(predicate::str::contains(format!(
            "Deleted: {}",
            ct.busybox_id()
        )));
    assert_eq!(ct.cmd().args(["images", "-q"]).stdout_ok(), "");
    assert!(
        !tree_holds_content(ct.root(), &busybox_sha),
        "the layer's files are still in the store"
    );
    ct.run(["busybox", "true"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("No such image"));
    ct.finish();
}

#[test]
fn rmi_refused_while_a_container_runs() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let mut running = ct
        .run([
            "--name",
            "busy",
            "busybox",
            "sh",
            "-c",
            "echo ready; sleep 60",
        ])
        .spawn();
    running.wait_for_stdout("ready");
    ct.cmd()
        .args(["rmi", "busybox"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("is using"));
    assert!(
        running.try_wait().is_none(),
        "refused rmi stopped the container"
    );
    ct.cmd().args(["rm", "-f", "busy"]).assert().success();
    running.wait();
    ct.cmd().args(["rmi", "busybox"]).assert().success();
    ct.finish();
}

#[test]
fn rmi_unknown_image_fails() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.cmd()
        .args(["rmi", "nosuchimage"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("No such image"));
    ct.finish();
}
