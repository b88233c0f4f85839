//! `history IMAGE`: the image's history entries, newest first, each with the size of the layer
//! it made and — when an image of the store is exactly the image up to that entry (a parent
//! committed or loaded here) — that image's id, as docker shows it.

use super::store::{Loaded, find};
use super::{ImageError, ImageStore};
use oci_spec::image::{History, ImageConfiguration};

/// One row of `history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// The id of the image that ends with this entry, when the store has it.
    pub id: Option<String>,
    pub created: Option<String>,
    pub created_by: String,
    /// Unpacked bytes of the layer this entry made (0 for an empty layer).
    pub size: u64,
    pub comment: String,
    pub empty_layer: bool,
}

impl ImageStore {
    /// The history of the image `reference` names, newest entry first.
    pub fn history(&self, reference: &str) -> Result<Vec<HistoryRow>, ImageError> {
        let loaded = self.loaded()?;
        let (i, _) = find(&loaded, reference)?;
        let image = &loaded[i].image;
        let sizes = image
            .config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| self.layer_size(d))
            .collect::<Vec<u64>>();
        Ok(rows(&image.config, &sizes, &loaded))
    }

    fn layer_size(&self, diff_id: &str) -> u64 {
        let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
        super::layout::LayerInfo::read(&self.layout.layer_sidecar(hex))
            .map(|info| info.size)
            .unwrap_or(0)
    }
}

/// The rows for `config` (newest first), given each layer's size and the store's images.
fn rows(config: &ImageConfiguration, sizes: &[u64], images: &[Loaded]) -> Vec<HistoryRow> {
    let entries = entries_of(config);
    let mut rows = Vec::with_capacity(entries.len());
    let mut layer = 0;
    for (i, entry) in entries.iter().enumerate() {
        let empty = entry.empty_layer().unwrap_or(false);
        let size = if empty {
            0
        } else {
            let size = sizes.get(layer).copied().unwrap_or(0);
            layer += 1;
            size
        };
        let prefix = &entries[..=i];
        let id = images
            .iter()
            .find(|l| {
                entries_of(&l.image.config) == prefix
                    && l.image.config.rootfs().diff_ids().as_slice()
                        == &config.rootfs().diff_ids()
                            [..layer.min(config.rootfs().diff_ids().len())]
            })
            .map(|l| l.image.id.clone());
        rows.push(HistoryRow {
            id,
            created: entry.created().clone(),
            created_by: entry.created_by().clone().unwrap_or_default(),
            size,
            comment: entry.comment().clone().unwrap_or_default(),
            empty_layer: empty,
        });
    }
    rows.reverse();
    rows
}

/// The config's history; an image without one (some tools omit it) gets an anonymous entry
/// per layer so that `history` still lists its layers.
fn entries_of(config: &ImageConfiguration) -> Vec<History> {
    match config.history() {
        Some(history) if !history.is_empty() => history.clone(),
        _ => config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|_| History::default())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Image;
    use oci_spec::image::RootFs;

    fn entry(by: &str, empty: bool) -> History {
        let mut h = History::default();
        h.set_created_by(Some(by.into()));
        h.set_empty_layer(empty.then_some(true));
        h
    }

    fn config(history: Vec<History>, diffs: &[&str]) -> ImageConfiguration {
        let mut c = ImageConfiguration::default();
        let mut rootfs = RootFs::default();
        rootfs.set_diff_ids(diffs.iter().map(|d| d.to_string()).collect());
        c.set_rootfs(rootfs);
        c.set_history(Some(history));
        c
    }

    fn loaded(id: &str, config: ImageConfiguration) -> Loaded {
        Loaded {
            image: Image {
                id: id.into(),
                references: Vec::new(),
                config,
                layers: Vec::new(),
                size: 0,
            },
            manifests: Vec::new(),
        }
    }

    #[test]
    fn rows_are_newest_first_with_sizes_and_known_parents() {
        let base = config(vec![entry("import", false)], &["sha256:a"]);
        let child = config(
            vec![
                entry("import", false),
                entry("env", true),
                entry("sh -c x", false),
            ],
            &["sha256:a", "sha256:b"],
        );
        let images = [
            loaded("sha256:base", base),
            loaded("sha256:child", child.clone()),
        ];
        let rows = rows(&child, &[100, 7], &images);
        let summary: Vec<(Option<&str>, &str, u64, bool)> = rows
            .iter()
            .map(|r| {
                (
                    r.id.as_deref(),
                    r.created_by.as_str(),
                    r.size,
                    r.empty_layer,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (Some("sha256:child"), "sh -c x", 7, false),
                (None, "env", 0, true),
                (Some("sha256:base"), "import", 100, false),
            ]
        );
    }

    #[test]
    fn an_image_without_history_lists_its_layers() {
        let mut c = config(Vec::new(), &["sha256:a", "sha256:b"]);
        c.set_history(None);
        let rows = rows(&c, &[1, 2], &[]);
        assert_eq!(rows.iter().map(|r| r.size).collect::<Vec<_>>(), [2, 1]);
        assert!(rows.iter().all(|r| r.id.is_none()));
    }
}
