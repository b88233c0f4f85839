//! `inspect IMAGE`: an image as docker's JSON shows it.

use serde_json::{Value, json};

use super::Image;

pub fn inspect(image: &Image) -> Value {
    let config = image.config.config().clone().unwrap_or_default();
    // docker's Comment is the message of the commit that made the image: its last entry's.
    let comment = image
        .config
        .history()
        .as_ref()
        .and_then(|h| h.last())
        .and_then(|h| h.comment().clone())
        .unwrap_or_default();
    json!({
        "Id": image.id,
        "RepoTags": image.references,
        "Created": image.created().unwrap_or_default(),
        "Author": image.config.author().clone().unwrap_or_default(),
        "Comment": comment,
        "Architecture": image.config.architecture().to_string(),
        "Os": image.config.os().to_string(),
        "Size": image.size,
        "Config": {
            "Cmd": config.cmd(),
            "Entrypoint": config.entrypoint(),
            "Env": config.env(),
            "WorkingDir": config.working_dir().clone().unwrap_or_default(),
            "User": config.user().clone().unwrap_or_default(),
            "Labels": config.labels(),
        },
        "RootFS": {
            "Type": "layers",
            "Layers": image.config.rootfs().diff_ids(),
        },
    })
}
