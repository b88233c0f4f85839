//! `carton save`, `carton load`, `carton export`: image and rootfs archives in and out.
//!
//! An archive written to a file (`-o`) appears only when complete: it is written next to its
//! destination under a temporary name and renamed at the end, so a failed save or export never
//! leaves a truncated archive that looks like a good one.

use std::fs::{self, File};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use crate::container;
use crate::image::ImageStore;
use crate::state::StateStore;

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to this file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Images: name[:tag], id or id prefix.
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn save(root: &Path, args: SaveArgs) -> anyhow::Result<()> {
    let store = ImageStore::open(root)?;
    write_output(args.output.as_deref(), "save", |out| {
        Ok(store.save(&args.images, out)?)
    })
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this file instead of stdin (a docker-archive or oci-archive, plain or gzip).
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Do not print the loaded images.
    #[arg(short, long)]
    quiet: bool,
}

pub fn load(root: &Path, args: LoadArgs) -> anyhow::Result<()> {
    let store = ImageStore::open(root)?;
    let loaded = match &args.input {
        // A file can be read in place (see ImageStore::load_file).
        Some(path) => store.load_file(
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )?,
        None if io::stdin().is_terminal() => {
            bail!("requested load from stdin, but stdin is a terminal: use -i FILE or a pipe")
        }
        None => store.load(io::stdin().lock())?,
    };
    if !args.quiet {
        for image in loaded {
            if image.references.is_empty() {
                println!("Loaded image ID: {}", image.id);
            }
            for reference in image.references {
                println!("Loaded image: {reference}");
            }
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to this file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// The container: id, id prefix or name.
    container: String,
}

pub fn export(root: &Path, args: ExportArgs) -> anyhow::Result<()> {
    let states = StateStore::new(root);
    write_output(args.output.as_deref(), "export", |out| {
        Ok(container::export(&states, &args.container, out)?)
    })
}

/// Runs `write` into `path` (atomically) or into stdout (refused when it is a terminal).
fn write_output(
    path: Option<&Path>,
    what: &str,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Some(path) = path else {
        if io::stdout().is_terminal() {
            bail!("cowardly refusing to {what} to a terminal: use -o FILE or redirect stdout");
        }
        // Straight to fd 1: Rust's stdout is line-buffered, which binary data would defeat.
        let fd = io::stdout().as_fd().try_clone_to_owned()?;
        let mut out = BufWriter::with_capacity(1 << 20, File::from(fd));
        write(&mut out)?;
        out.flush()?;
        return Ok(());
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let mut random = [0u8; 6];
    crate::state::fill_random(&mut random);
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let temp = path.with_file_name(format!(".{}.carton-{suffix}", name.to_string_lossy()));
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    let result = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&temp, path).with_context(|| format!("cannot write {}", path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}
