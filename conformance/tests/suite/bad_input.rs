//! Bad input: each case fails with exit code 125 and a clear message on stderr, and leaves the
//! store — indeed the test's whole directory (the `--root` tree and the scratch files next to
//! it) — byte-identical. Hostile tarballs write nothing outside the layer directory.

use std::path::{Path, PathBuf};

use conformance::tarball::{TarBuilder, garbage, gzip};
use conformance::{Carton, EXIT_CARTON_ERROR, Snapshot, unique};
use rstest::rstest;

/// Runs `carton --root R <args>` and checks: exit 125, stderr names one of `messages` (and
/// carries the `carton: ` prefix when `prefixed`), no image id printed, nothing changed under
/// the test's directory.
#[track_caller]
fn assert_refused(ct: &Carton, args: &[String], messages: &[&str], prefixed: bool) {
    let before = Snapshot::of(ct.base());
    let assert = ct.cmd().args(args).assert().code(EXIT_CARTON_ERROR);
    let out = assert.get_output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        messages.iter().any(|m| stderr.contains(m)),
        "stderr does not mention any of {messages:?}: {stderr:?}"
    );
    if prefixed {
        assert!(
            stderr.contains("carton: "),
            "stderr lacks the `carton: ` prefix: {stderr:?}"
        );
    }
    assert!(!stdout.contains("sha256:"), "an id was printed: {stdout:?}");
    before.assert_unchanged(
        &Snapshot::of(ct.base()),
        &format!("after `carton {}`", args.join(" ")),
    );
}

fn expand(ct: &Carton, args: &[&str]) -> Vec<String> {
    let work = ct.work().display().to_string();
    args.iter().map(|a| a.replace("{work}", &work)).collect()
}

#[rstest]
#[case::unknown_image(&["run", "nosuchimage", "true"], "No such image", true)]
#[case::unknown_tag(&["run", "busybox:nosuchtag", "true"], "No such image", true)]
#[case::volume_relative_source(&["run", "-v", "relative:/x", "busybox", "true"], "invalid volume", true)]
#[case::volume_relative_destination(&["run", "-v", "{work}/a:relative", "busybox", "true"], "invalid volume", true)]
#[case::volume_bogus_mode(&["run", "-v", "{work}/a:/b:bogus", "busybox", "true"], "invalid volume", true)]
#[case::volume_empty_source(&["run", "-v", ":/b", "busybox", "true"], "invalid volume", true)]
#[case::env_empty_name(&["run", "-e", "=x", "busybox", "true"], "invalid environment variable", true)]
#[case::env_empty(&["run", "-e", "", "busybox", "true"], "invalid environment variable", true)]
#[case::unknown_run_flag(&["run", "--no-such-flag", "busybox", "true"], "--no-such-flag", false)]
#[case::unknown_global_flag(&["--no-such-flag", "ps"], "--no-such-flag", false)]
#[case::unknown_network(&["run", "--network", "no-such-net", "busybox", "true"], "no-such-net", true)]
#[case::missing_env_file(&["run", "--env-file", "{work}/missing.env", "busybox", "true"], "missing.env", true)]
fn bad_run_is_refused(#[case] args: &[&str], #[case] message: &str, #[case] prefixed: bool) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    assert_refused(&ct, &expand(&ct, args), &[message], prefixed);
    // Nothing was half-created on the host either (e.g. the volume's source).
    assert!(!ct.path("a").exists());
    ct.finish();
}

#[test]
fn duplicate_name_is_refused() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    ct.run_ok(["--name", "dup", "busybox", "true"]);
    let args = expand(&ct, &["run", "--name", "dup", "busybox", "true"]);
    assert_refused(&ct, &args, &["is already in use"], true);
    assert_eq!(ct.container_ids().len(), 1);
    ct.finish();
}

/// A sentinel directory outside the store that hostile archives aim at.
struct Sentinel {
    dir: PathBuf,
}

impl Sentinel {
    fn new(ct: &Carton) -> Sentinel {
        let dir = ct.path("sentinel");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("victim"), "original\n").unwrap();
        Sentinel { dir }
    }

    /// The sentinel's path relative to `/` (for `../../…/<rel>` names).
    fn rel(&self) -> String {
        self.dir
            .display()
            .to_string()
            .trim_start_matches('/')
            .to_string()
    }

    #[track_caller]
    fn assert_untouched(&self) {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["victim"],
            "files appeared in {}",
            self.dir.display()
        );
        assert_eq!(
            std::fs::read_to_string(self.dir.join("victim")).unwrap(),
            "original\n",
            "the victim file was overwritten"
        );
    }
}

/// `../` enough times to climb from any layer directory up to `/`.
fn climb() -> String {
    "../".repeat(40)
}

/// An archive that starts like a real rootfs, has `hostile` in the middle and a normal file
/// after it (so partial extraction shows up as a changed store).
fn archive_with(hostile: impl FnOnce(&mut TarBuilder)) -> Vec<u8> {
    let mut b = TarBuilder::new();
    b.dir("etc", 0o755);
    b.file("etc/hostname", 0o644, b"before\n");
    hostile(&mut b);
    b.file("etc/after", 0o644, b"after\n");
    b.finish()
}

#[derive(Debug, Clone, Copy)]
enum Bad {
    Garbage,
    TruncatedInData,
    TruncatedInHeader,
    TruncatedGzip,
    DotDot,
    DotDotToSentinel,
    Absolute,
    SymlinkAbsoluteThenWrite,
    SymlinkDotDotThenWrite,
    SymlinkClimbThenWrite,
    HardlinkAbsolute,
    HardlinkClimb,
}

fn bad_tarball(bad: Bad, s: &Sentinel, busybox_tar: &Path) -> Vec<u8> {
    let abs = s.dir.display().to_string();
    let rel = s.rel();
    let up = climb();
    match bad {
        Bad::Garbage => garbage(10 * 1024, 0x5eed),
        Bad::TruncatedInData => {
            let mut b = TarBuilder::new();
            b.dir("etc", 0o755);
            let big = b.file("etc/big", 0o644, &vec![b'b'; 64 * 1024]);
            let mut bytes = b.finish();
            // Cut inside the file's data, away from any block boundary.
            bytes.truncate(big.data + big.len / 2 + 100);
            bytes
        }
        Bad::TruncatedInHeader => {
            let mut b = TarBuilder::new();
            b.dir("etc", 0o755);
            b.file("etc/a", 0o644, b"a\n");
            let second = b.file("etc/b", 0o644, b"b\n");
            let mut bytes = b.finish();
            bytes.truncate(second.header + 200);
            bytes
        }
        Bad::TruncatedGzip => {
            let z = gzip(&std::fs::read(busybox_tar).unwrap());
            z[..z.len() / 2].to_vec()
        }
        Bad::DotDot => archive_with(|b| {
            b.file("../x", 0o644, b"escaped\n");
        }),
        Bad::DotDotToSentinel => archive_with(|b| {
            b.file(&format!("{up}{rel}/dotdot"), 0o644, b"escaped\n");
        }),
        Bad::Absolute => archive_with(|b| {
            b.file(&format!("{abs}/absolute"), 0o644, b"escaped\n");
        }),
        Bad::SymlinkAbsoluteThenWrite => archive_with(|b| {
            b.symlink("link", &abs);
            b.file("link/through-absolute-link", 0o644, b"escaped\n");
        }),
        Bad::SymlinkDotDotThenWrite => archive_with(|b| {
            b.symlink("up", "..");
            b.file(
                &format!("up/{}", unique("through-dotdot-link")),
                0o644,
                b"escaped\n",
            );
        }),
        Bad::SymlinkClimbThenWrite => archive_with(|b| {
            b.symlink("up", up.trim_end_matches('/'));
            b.file(
                &format!("up/{rel}/through-relative-link"),
                0o644,
                b"escaped\n",
            );
        }),
        Bad::HardlinkAbsolute => archive_with(|b| {
            b.hardlink("hl", &format!("{abs}/victim"));
            b.file("hl", 0o644, b"overwritten\n");
        }),
        Bad::HardlinkClimb => archive_with(|b| {
            b.hardlink("hl", &format!("{up}{rel}/victim"));
            b.file("hl", 0o644, b"overwritten\n");
        }),
    }
}

/// Corrupt, truncated and hostile archives are refused as a whole: exit 125, a message naming
/// the problem, the store unchanged, nothing written outside it.
#[rstest]
#[case::garbage(Bad::Garbage, &["archive"])]
#[case::truncated_in_data(Bad::TruncatedInData, &["archive"])]
#[case::truncated_in_header(Bad::TruncatedInHeader, &["archive"])]
#[case::truncated_gzip(Bad::TruncatedGzip, &["archive"])]
#[case::dotdot_entry(Bad::DotDot, &["escapes"])]
#[case::dotdot_entry_to_sentinel(Bad::DotDotToSentinel, &["escapes"])]
#[case::absolute_entry(Bad::Absolute, &["escapes"])]
#[case::symlink_absolute_then_write(Bad::SymlinkAbsoluteThenWrite, &["escapes"])]
#[case::symlink_dotdot_then_write(Bad::SymlinkDotDotThenWrite, &["escapes"])]
#[case::symlink_climb_then_write(Bad::SymlinkClimbThenWrite, &["escapes"])]
// A hard link's target outside the layer either "escapes" or does not exist in the archive.
#[case::hardlink_absolute(Bad::HardlinkAbsolute, &["escapes", "archive"])]
#[case::hardlink_climb(Bad::HardlinkClimb, &["escapes", "archive"])]
fn bad_import_is_refused(#[case] bad: Bad, #[case] messages: &[&str]) {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let sentinel = Sentinel::new(&ct);
    let file = ct.path("bad.tar");
    std::fs::write(&file, bad_tarball(bad, &sentinel, ct.busybox_tar())).unwrap();
    let args = vec![
        "import".to_string(),
        file.display().to_string(),
        "hostile:latest".to_string(),
    ];
    assert_refused(&ct, &args, messages, true);
    sentinel.assert_untouched();
    let images = ct.cmd().args(["images"]).stdout_ok();
    assert!(
        !images.contains("hostile"),
        "a refused import is listed:\n{images}"
    );
    ct.finish();
}

/// The same refusal when the archive comes on stdin.
#[test]
fn bad_import_from_stdin_is_refused() {
    let Some(ct) = Carton::with_busybox() else {
        return;
    };
    let sentinel = Sentinel::new(&ct);
    let bytes = bad_tarball(Bad::SymlinkAbsoluteThenWrite, &sentinel, ct.busybox_tar());
    let before = Snapshot::of(ct.base());
    ct.cmd()
        .args(["import", "-", "hostile"])
        .write_stdin(bytes)
        .assert()
        .code(EXIT_CARTON_ERROR)
        .stderr(predicates::str::contains("escapes"));
    before.assert_unchanged(
        &Snapshot::of(ct.base()),
        "after a hostile import from stdin",
    );
    sentinel.assert_untouched();
    ct.finish();
}
