//! `carton inspect`: containers first, then images, as docker resolves names.

use std::path::Path;

use clap::Args;

use crate::container;
use crate::image::ImageStore;
use crate::state::{StateError, StateStore};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Containers or images.
    #[arg(required = true)]
    objects: Vec<String>,
}

pub fn inspect(root: &Path, args: InspectArgs) -> anyhow::Result<i32> {
    let states = StateStore::new(root);
    let images = ImageStore::open(root)?;
    let mut out = Vec::new();
    let mut failed = false;
    for reference in &args.objects {
        match states.resolve(reference) {
            Ok(record) => out.push(container::inspect(&states, &record)?),
            Err(StateError::NotFound(_)) => match images.resolve(reference) {
                Ok(image) => out.push(crate::image::inspect(&image)),
                Err(_) => {
                    eprintln!("carton: No such object: {reference}");
                    failed = true;
                }
            },
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if failed { super::EXIT_CARTON_ERROR } else { 0 })
}
