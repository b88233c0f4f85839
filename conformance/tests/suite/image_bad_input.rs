//! Bad input to the layered image commands: truncated, corrupt, lying or hostile archives for
//! `load`, invalid references for `commit`/`tag`, unknown images and containers. Each fails with
//! exit code 125 and a clear message, and leaves the store (the whole `--root`) byte-identical —
//! no half-loaded image, no orphan blob — and nothing written outside it.

use conformance::images::{docker_archive, read_archive, write_archive};
use conformance::tarball::{TarBuilder, garbage, gzip};
use conformance::{Carton, EXIT_CARTON_ERROR, Snapshot};
use rstest::rstest;

/// Runs `carton <args>` (stdin: `input`), expects exit 125 and one of `messages` on stderr,
/// and checks that nothing under the test's directory changed except `allowed` files.
#[track_caller]
fn assert_refused(ct: &Carton, args: &[&str], input: Option<Vec<u8>>, messages: &[&str]) {
    let before = Snapshot::of(ct.base());
    let root_before = ct.snapshot_root();
    let mut cmd = ct.cmd();
    cmd.args(args);
    if let Some(input) = input {
        cmd.write_stdin(input);
    }
    let assert = cmd.assert().code(EXIT_CARTON_ERROR);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        messages.iter().any(|m| stderr.contains(m)),
        "`carton {}`: stderr names none of {messages:?}: {stderr:?}",
        args.join(" ")
    );
    assert!(stderr.starts_with("carton: "), "{stderr:?}");
    root_before.assert_unchanged(
        &ct.snapshot_root(),
        &format!("the store after `{}`", args.join(" ")),
    );
    before.assert_unchanged(&Snapshot::of(ct.base()), "the test directory");
}

/// A good archive of the busybox image, as `carton save` writes it.
fn saved(ct: &Carton) -> Vec<u8> {
    let out = ct.cmd().args(["save", "busybox"]).output();
    assert!(out.status.success());
    out.stdout
}

/// The saved archive with its members changed by `edit`.
fn edited(ct: &Carton, edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) -> Vec<u8> {
    let mut members = read_archive(&saved(ct));
    edit(&mut members);
    write_archive(&members)
}

/// The biggest member: the layer blob.
fn layer_index(members: &[(String, Vec<u8>)]) -> usize {
    (0..members.len())
        .max_by_key(|&i| members[i].1.len())
        .expect("members")
}

#[derive(Debug, Clone, Copy)]
enum BadArchive {
    Empty,
    Garbage,
    Truncated,
    TruncatedGzip,
    WrongDigest,
    MissingBlob,
    MissingBlobOci,
    LyingDiffId,
    BadRepoTag,
    EmptyTag,
    LayerDotDot,
    LayerAbsolute,
    LayerSymlinkThenWrite,
    ArchivePathDotDot,
}

fn bad_archive(ct: &Carton, bad: BadArchive) -> Vec<u8> {
    let sentinel = ct.work().join("sentinel");
    let layer = |hostile: &dyn Fn(&mut TarBuilder)| {
        let mut b = TarBuilder::new();
        b.dir("etc", 0o755);
        hostile(&mut b);
        b.file("etc/after", 0o644, b"after\n");
        b.finish()
    };
    match bad {
        BadArchive::Empty => Vec::new(),
        BadArchive::Garbage => garbage(20 * 1024, 7),
        BadArchive::Truncated => {
            let good = saved(ct);
            good[..good.len() * 2 / 3].to_vec()
        }
        BadArchive::TruncatedGzip => {
            let z = gzip(&saved(ct));
            z[..z.len() / 2].to_vec()
        }
        BadArchive::WrongDigest => edited(ct, |m| {
            let i = layer_index(m);
            let at = m[i].1.len() / 2;
            m[i].1[at] ^= 0x55;
        }),
        BadArchive::MissingBlob => edited(ct, |m| {
            let i = layer_index(m);
            m.remove(i);
        }),
        BadArchive::MissingBlobOci => edited(ct, |m| {
            let i = layer_index(m);
            m.remove(i);
            m.retain(|(p, _)| p != "manifest.json");
        }),
        BadArchive::LyingDiffId => {
            let real = layer(&|b| {
                b.file("etc/real", 0o644, b"real\n");
            });
            let claimed = format!("sha256:{}", "ab".repeat(32));
            docker_archive(&[real], Some(vec![claimed]), "liar:1")
        }
        BadArchive::BadRepoTag => docker_archive(&[layer(&|_| {})], None, "UPPER:case"),
        BadArchive::EmptyTag => docker_archive(&[layer(&|_| {})], None, "app:"),
        BadArchive::LayerDotDot => docker_archive(
            &[layer(&|b| {
                b.file(
                    "../../../../../../../../../../../../tmp/escaped",
                    0o644,
                    b"x",
                );
            })],
            None,
            "evil:1",
        ),
        BadArchive::LayerAbsolute => docker_archive(
            &[layer(&|b| {
                b.file(&format!("{}/absolute", sentinel.display()), 0o644, b"x");
            })],
            None,
            "evil:2",
        ),
        BadArchive::LayerSymlinkThenWrite => docker_archive(
            &[layer(&|b| {
                b.symlink("link", &sentinel.display().to_string());
                b.file("link/through-link", 0o644, b"x");
            })],
            None,
            "evil:3",
        ),
        BadArchive::ArchivePathDotDot => {
            let mut b = TarBuilder::new();
            b.file("../manifest.json", 0o644, b"[]");
            b.finish()
        }
    }
}

#[rstest]
#[case::empty(BadArchive::Empty, &["empty"])]
#[case::garbage(BadArchive::Garbage, &["not an image archive"])]
#[case::truncated(BadArchive::Truncated, &["end of file", "truncated"])]
#[case::truncated_gzip(BadArchive::TruncatedGzip, &["end of file", "truncated", "invalid archive"])]
#[case::wrong_digest(BadArchive::WrongDigest, &["does not match its digest"])]
#[case::missing_blob(BadArchive::MissingBlob, &["has no"])]
#[case::missing_blob_oci(BadArchive::MissingBlobOci, &["has no"])]
#[case::lying_diff_id(BadArchive::LyingDiffId, &["does not match the diff_id"])]
#[case::upper_case_name(BadArchive::BadRepoTag, &["invalid reference format"])]
#[case::empty_tag(BadArchive::EmptyTag, &["invalid reference format"])]
#[case::layer_dotdot(BadArchive::LayerDotDot, &["escapes"])]
#[case::layer_absolute(BadArchive::LayerAbsolute, &["escapes"])]
#[case::layer_symlink_then_write(BadArchive::LayerSymlinkThenWrite, &["escapes"])]
#[case::archive_path_dotdot(BadArchive::ArchivePathDotDot, &["escapes"])]
fn bad_archives_are_not_loaded(#[case] bad: BadArchive, #[case] messages: &[&str]) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    std::fs::create_dir(ct.work().join("sentinel")).unwrap();
    let bytes = bad_archive(&ct, bad);
    let file = ct.path("bad.tar");
    std::fs::write(&file, &bytes).unwrap();
    let file = file.display().to_string();
    assert_refused(&ct, &["load", "-i", &file], None, messages);
    // The same from stdin.
    assert_refused(&ct, &["load"], Some(bytes), messages);
    assert_eq!(
        std::fs::read_dir(ct.work().join("sentinel"))
            .unwrap()
            .count(),
        0,
        "something was written through the hostile layer"
    );
    assert!(!std::path::Path::new("/tmp/escaped").exists());
    ct.finish();
}

#[rstest]
#[case::commit_upper_case(&["commit", "ctr", "UPPER:case"], "invalid reference format")]
#[case::commit_empty_tag(&["commit", "ctr", "app:"], "invalid reference format")]
#[case::commit_bad_change(&["commit", "-c", "RUN rm -rf /", "ctr", "ok:1"], "invalid change")]
#[case::commit_unknown_container(&["commit", "nosuch", "ok:1"], "No such container")]
#[case::tag_upper_case(&["tag", "busybox", "UPPER:case"], "invalid reference format")]
#[case::tag_empty_tag(&["tag", "busybox", "app:"], "invalid reference format")]
#[case::tag_unknown_image(&["tag", "nosuch", "ok:1"], "No such image")]
#[case::history_unknown_image(&["history", "nosuch"], "No such image")]
#[case::save_unknown_image(&["save", "-o", "{work}/out.tar", "nosuch"], "No such image")]
#[case::export_unknown_container(&["export", "-o", "{work}/out.tar", "nosuch"], "No such container")]
fn bad_references_change_nothing(#[case] args: &[&str], #[case] message: &str) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.run_ok([
        "--name",
        "ctr",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo x > /x",
    ]);
    let work = ct.work().display().to_string();
    let args: Vec<String> = args.iter().map(|a| a.replace("{work}", &work)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_refused(&ct, &args, None, &[message]);
    assert!(
        !ct.path("out.tar").exists(),
        "a failed save/export left its output file"
    );
    ct.finish();
}
