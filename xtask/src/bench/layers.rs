//! Row 6: moving a 200 MiB tree in and out of images, against GNU tar on the same files.
//!
//! Everything happens on a tmpfs mounted in the bench's private mount namespace (its own
//! carton `--root` there): ext4 on the VM this was written on is erratic (creating a file costs
//! up to 0.6 ms in some directories), which would measure the disk, not the tools.
//!
//! - 6a `carton commit` of a container whose writable layer holds the tree, vs
//!   `tar -c | tar -x` of that layer's directory (commit = read the tree, write the layer blob,
//!   unpack it into the store);
//! - 6b `carton import` of a tarball of the tree, vs `tar -x` of the same tarball;
//! - 6c `carton load -i` of the image saved by `carton save` (the same layer), vs `tar -x`
//!   (the same measurement as 6b's peer).
//!
//! Each round removes what the previous one made (untimed), so every run really writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::cmd;

use super::measure::{Invocation, Stats};
use super::ns;
use super::report::{Better, Line, Role, Row};
use super::setup::{Bench, IMAGE};

const TREE_MIB: u64 = 200;
const SOURCE: &str = "bench-tree";

pub fn rows(b: &Bench, rounds: usize) -> Vec<Row> {
    let mut a = Row::new(
        "layers",
        "6a",
        "commit of a container holding a 200 MiB tree",
        "s",
        Better::Lower,
    );
    let mut i = Row::new(
        "layers",
        "6b",
        "import of a 200 MiB tree (tarball)",
        "s",
        Better::Lower,
    );
    let mut l = Row::new(
        "layers",
        "6c",
        "load of a saved 200 MiB image",
        "s",
        Better::Lower,
    );
    let tmp = b.work.join("tmpfs");
    let result = (|| -> Result<Vec<Row>> {
        std::fs::create_dir_all(&tmp)?;
        ns::mount_tmpfs(&tmp, "size=4g,mode=755")?;
        let r = measure(b, &tmp, rounds, [&mut a, &mut i, &mut l]);
        let _ = ns::unmount(&tmp);
        r?;
        Ok(Vec::new())
    })();
    if let Err(e) = result {
        let reason = format!("{e:#}");
        for row in [&mut a, &mut i, &mut l] {
            if row.lines.is_empty() {
                row.lines.push(Line::missing(
                    "carton",
                    "carton",
                    Role::Carton,
                    reason.clone(),
                ));
            }
        }
    }
    for row in [&mut a, &mut i, &mut l] {
        row.compute_ratios();
    }
    a.notes.push(format!(
        "on a tmpfs in the benchmark's mount namespace (carton's --root there too); the tree: \
         4096 files of 1–64 KiB in 64 directories plus 8 files of ~14 MiB, {TREE_MIB} MiB, \
         incompressible; {rounds} round(s), the five commands in rotated order"
    ));
    l.notes
        .push("the tar -x line is the same measurement as in 6b".into());
    vec![a, i, l]
}

fn measure(b: &Bench, tmp: &Path, rounds: usize, rows: [&mut Row; 3]) -> Result<()> {
    let sh = &b.sh;
    let carton = &b.carton;
    let root = tmp.join("carton");
    let busybox_tar = &b.busybox_tar;
    cmd!(sh, "{carton} --root {root} import {busybox_tar} {IMAGE}")
        .quiet()
        .ignore_stdout()
        .run()
        .context("carton import busybox (tmpfs root)")?;
    let tree = tmp.join("tree");
    println!("  writing the {TREE_MIB} MiB tree");
    write_tree(&tree)?;
    let volume = format!("{}:/src:ro", tree.display());
    cmd!(
        sh,
        "{carton} --root {root} run --name {SOURCE} --network none -v {volume} {IMAGE} cp -a /src /data"
    )
    .quiet()
    .run()
    .context("copying the tree into a container")?;
    let inspect: serde_json::Value = serde_json::from_str(
        &cmd!(sh, "{carton} --root {root} inspect {SOURCE}")
            .quiet()
            .read()?,
    )?;
    let id = inspect[0]["Id"]
        .as_str()
        .context("inspect without Id")?
        .to_string();
    let upper = root.join("containers").join(&id).join("upper");
    if !upper.join("data").is_dir() {
        bail!("{} has no data/ after the copy", upper.display());
    }
    let tree_tar = tmp.join("tree.tar");
    cmd!(sh, "tar -C {upper} -cf {tree_tar} .").quiet().run()?;
    // The image for `load`: committed and saved once, then removed from the store.
    cmd!(sh, "{carton} --root {root} commit {SOURCE} bench-saved")
        .quiet()
        .ignore_stdout()
        .run()?;
    let image_tar = tmp.join("image.tar");
    cmd!(sh, "{carton} --root {root} save -o {image_tar} bench-saved")
        .quiet()
        .run()?;
    cmd!(sh, "{carton} --root {root} rmi bench-saved")
        .quiet()
        .ignore_stdout()
        .run()?;

    let at = |args: &[&str]| b.carton_at(&root).args(args);
    let commit = at(&["commit", SOURCE, "bench-commit"]);
    let import = at(&["import"]).arg(&tree_tar).arg("bench-import");
    let load = at(&["load", "-i"]).arg(&image_tar);
    let dest = tmp.join("tar-dest");
    let tar_c = Invocation::new("tar")
        .arg("-C")
        .arg(&upper)
        .args(["-cf", "-", "."]);
    let tar_x_pipe = Invocation::new("tar")
        .arg("-C")
        .arg(&dest)
        .args(["-xf", "-"]);
    let tar_x = Invocation::new("tar")
        .arg("-C")
        .arg(&dest)
        .arg("-xf")
        .arg(&tree_tar);

    let clean_dest = || -> Result<()> {
        if dest.exists() {
            std::fs::remove_dir_all(&dest)?;
        }
        std::fs::create_dir_all(&dest)?;
        Ok(())
    };
    let rmi = |name: &str| -> Result<()> {
        cmd!(sh, "{carton} --root {root} rmi {name}")
            .quiet()
            .ignore_stdout()
            .run()?;
        Ok(())
    };
    let log = b.logs.join("layers.stderr");
    let mut t: [Vec<f64>; 5] = Default::default(); // commit, tar-c|x, import, tar-x, load
    let mut errors: [Option<String>; 5] = Default::default();
    for round in 0..rounds {
        println!("  round {} of {rounds}", round + 1);
        for k in 0..5 {
            let which = (round + k) % 5;
            if errors[which].is_some() {
                continue;
            }
            let r: Result<Duration, String> = match which {
                0 => commit
                    .time(&log)
                    .and_then(|d| rmi("bench-commit").map(|_| d).map_err(|e| e.to_string())),
                1 => clean_dest()
                    .map_err(|e| e.to_string())
                    .and_then(|_| time_pipeline(&tar_c, &tar_x_pipe)),
                2 => import
                    .time(&log)
                    .and_then(|d| rmi("bench-import").map(|_| d).map_err(|e| e.to_string())),
                3 => clean_dest()
                    .map_err(|e| e.to_string())
                    .and_then(|_| tar_x.time(&log)),
                _ => load
                    .time(&log)
                    .and_then(|d| rmi("bench-saved").map(|_| d).map_err(|e| e.to_string())),
            };
            match r {
                Ok(d) => t[which].push(d.as_secs_f64()),
                Err(e) => {
                    println!("  failed: {e}");
                    errors[which] = Some(e);
                }
            }
        }
    }
    let _ = clean_dest();
    let _ = cmd!(sh, "{carton} --root {root} rm -f {SOURCE}")
        .quiet()
        .ignore_stdout()
        .run();
    let _ = cmd!(sh, "{carton} --root {root} rmi {IMAGE}")
        .quiet()
        .ignore_stdout()
        .run();

    let result = |i: usize| match &errors[i] {
        Some(e) => Err(e.clone()),
        None => Stats::of(t[i].clone()).ok_or_else(|| "no rounds".to_string()),
    };
    let pipe = format!("{} | {}", tar_c.display(), tar_x_pipe.display());
    let [a, i, l] = rows;
    a.lines.push(Line::from_result(
        "carton",
        "carton commit",
        Role::Carton,
        commit.display(),
        result(0),
    ));
    a.lines.push(Line::from_result(
        "tar",
        "tar -c | tar -x (same files)",
        Role::Peer,
        pipe,
        result(1),
    ));
    i.lines.push(Line::from_result(
        "carton",
        "carton import",
        Role::Carton,
        import.display(),
        result(2),
    ));
    i.lines.push(Line::from_result(
        "tar",
        "tar -x (same tarball)",
        Role::Peer,
        tar_x.display(),
        result(3),
    ));
    l.lines.push(Line::from_result(
        "carton",
        "carton load -i",
        Role::Carton,
        load.display(),
        result(4),
    ));
    l.lines.push(Line::from_result(
        "tar",
        "tar -x (same tarball)",
        Role::Peer,
        tar_x.display(),
        result(3),
    ));
    Ok(())
}

/// `a | b`, timed from the first spawn to the second exit.
fn time_pipeline(a: &Invocation, b: &Invocation) -> Result<Duration, String> {
    let start = Instant::now();
    let mut first = a
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pipe = first.stdout.take().ok_or("no pipe")?;
    let second = b
        .command()
        .stdin(pipe)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    let first = first.wait().map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    if first.success() && second.success() {
        Ok(elapsed)
    } else {
        Err(format!("tar pipeline: {first}, {second}"))
    }
}

/// 64 directories × 64 files cycling through 1, 4, 16, 64 KiB, then 8 large files filling up
/// to 200 MiB; pseudo-random bytes (xorshift), so nothing compresses or deduplicates.
fn write_tree(dir: &Path) -> Result<()> {
    use std::io::Write;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut fill = |buf: &mut Vec<u8>, len: usize| {
        buf.clear();
        while buf.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            buf.extend_from_slice(&state.to_le_bytes());
        }
        buf.truncate(len);
    };
    let mut buf = Vec::new();
    let mut written: u64 = 0;
    for d in 0..64 {
        let sub = dir.join(format!("d{d:02}"));
        std::fs::create_dir_all(&sub)?;
        for f in 0..64 {
            let len = 1024usize << (2 * (f % 4));
            fill(&mut buf, len);
            std::fs::write(sub.join(format!("f{f:02}")), &buf)?;
            written += len as u64;
        }
    }
    let total = TREE_MIB << 20;
    let big = (total - written) / 8;
    let large: PathBuf = dir.join("large");
    std::fs::create_dir_all(&large)?;
    for n in 0..8 {
        let mut file = std::fs::File::create(large.join(format!("blob{n}")))?;
        let mut left = big as usize;
        while left > 0 {
            let chunk = left.min(1 << 20);
            fill(&mut buf, chunk);
            file.write_all(&buf)?;
            left -= chunk;
        }
    }
    let _ = Command::new("sync").status();
    Ok(())
}
