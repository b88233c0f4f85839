//! `carton import`, `carton images`, `carton rmi`, `carton tag`.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::format::{human_duration, human_size, table};
use crate::container;
use crate::image::{ImageStore, Removal};
use crate::state::{StateStore, Timestamp};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction to the image config (CMD, ENTRYPOINT, ENV, WORKDIR, USER…).
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    change: Vec<String>,
    /// Tarball to import, or `-` for stdin.
    file: PathBuf,
    /// Name for the image: REPO[:TAG].
    reference: Option<String>,
}

pub fn import(root: &Path, args: ImportArgs) -> anyhow::Result<()> {
    let store = ImageStore::open(root)?;
    let input: Box<dyn Read> = if args.file.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(
            File::open(&args.file)
                .with_context(|| format!("cannot open {}", args.file.display()))?,
        )
    };
    let image = store.import(input, args.reference.as_deref(), &args.change)?;
    println!("{}", image.id);
    Ok(())
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only show image ids.
    #[arg(short, long)]
    quiet: bool,
    /// Show full ids.
    #[arg(long)]
    no_trunc: bool,
}

pub fn images(root: &Path, args: ImagesArgs) -> anyhow::Result<()> {
    let store = ImageStore::open(root)?;
    let images = store.list()?;
    let id = |image: &crate::image::Image| {
        if args.no_trunc {
            image.id.clone()
        } else {
            image.short_id().to_string()
        }
    };
    if args.quiet {
        let mut seen = Vec::new();
        for image in &images {
            if !seen.contains(&image.id) {
                println!("{}", id(image));
                seen.push(image.id.clone());
            }
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    for image in &images {
        let created = image
            .created()
            .and_then(|c| Timestamp::parse_rfc3339(&c))
            .map_or_else(
                || "N/A".to_string(),
                |t| format!("{} ago", human_duration(t.elapsed())),
            );
        let names: Vec<(String, String)> = if image.references.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            image
                .references
                .iter()
                .map(|r| split_reference(r))
                .collect()
        };
        for (repo, tag) in names {
            rows.push(vec![
                repo,
                tag,
                id(image),
                created.clone(),
                human_size(image.size),
            ]);
        }
    }
    print!(
        "{}",
        table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows)
    );
    Ok(())
}

/// `registry:5000/repo:tag` → (`registry:5000/repo`, `tag`).
fn split_reference(reference: &str) -> (String, String) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (reference.to_string(), "latest".to_string()),
    }
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove an image referenced by several names.
    #[arg(short, long)]
    force: bool,
    /// Images: name[:tag], id or id prefix.
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn rmi(root: &Path, args: RmiArgs) -> anyhow::Result<i32> {
    let states = StateStore::new(root);
    let mut failed = false;
    for reference in &args.images {
        match container::remove_image(&states, reference, args.force) {
            Ok(removals) => {
                for removal in removals {
                    match removal {
                        Removal::Untagged(r) => println!("Untagged: {r}"),
                        Removal::Deleted(id) => println!("Deleted: {id}"),
                    }
                }
            }
            Err(e) => {
                eprintln!("carton: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { super::EXIT_CARTON_ERROR } else { 0 })
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image to name: name[:tag], id or id prefix.
    source: String,
    /// The new name: REPO[:TAG].
    target: String,
}

pub fn tag(root: &Path, args: TagArgs) -> anyhow::Result<()> {
    ImageStore::open(root)?.tag(&args.source, &args.target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_tag() {
        assert_eq!(
            split_reference("busybox:latest"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            split_reference("localhost:5000/app:v1"),
            ("localhost:5000/app".into(), "v1".into())
        );
        assert_eq!(
            split_reference("localhost:5000/app"),
            ("localhost:5000/app".into(), "latest".into())
        );
    }
}
