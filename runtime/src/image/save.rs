//! `save`: images as one archive that both worlds read — an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/…`) for skopeo/umoci/podman's `oci-archive`, and docker's
//! `manifest.json` next to it, pointing at the same blobs, for `docker load` and
//! `docker-archive` readers. This is what `docker save` writes since docker 25; each blob is
//! stored once.
//!
//! The blobs are copied byte for byte from the store (so the layers and the image id survive a
//! save → load round trip), streamed, and re-hashed on the way: a store blob that no longer
//! matches its digest fails the save instead of spreading.

use super::digest::hex;
use super::split::reassembly_error;
use super::store::{Matched, find, parse_json, sha256_hex_of};
use super::tar_writer::{Kind, Member, TarWriter, buffered};
use super::{ImageError, ImageStore};
use oci_spec::image::{ANNOTATION_REF_NAME, ImageManifest};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

/// containerd's (and docker's) annotation for the full image name; `ref.name` holds the tag.
pub(crate) const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// One image to save, with the names it is saved under.
struct Selected {
    manifest_hex: String,
    manifest_size: u64,
    config_hex: String,
    layer_hexes: Vec<String>,
    platform: Value,
    tags: Vec<String>,
}

impl ImageStore {
    /// Writes the images `references` name as one archive to `out`. A name saves the image
    /// under that name; an id saves it untagged (docker's rule).
    pub fn save(&self, references: &[String], out: impl Write) -> Result<(), ImageError> {
        let loaded = self.loaded()?;
        let mut selected: Vec<Selected> = Vec::new();
        for reference in references {
            let (i, matched) = find(&loaded, reference)?;
            let tag = match matched {
                Matched::Name(name) => Some(name),
                Matched::Id => None,
            };
            let manifest_hex = loaded[i].manifests.first().cloned().ok_or_else(|| {
                ImageError::Corrupt(format!("image {} has no manifest", loaded[i].image.id))
            })?;
            if let Some(existing) = selected.iter_mut().find(|s| s.manifest_hex == manifest_hex) {
                existing
                    .tags
                    .extend(tag.filter(|t| !existing.tags.contains(t)));
                continue;
            }
            let bytes = self.layout.read_blob(&manifest_hex)?;
            let manifest: ImageManifest = parse_json(&bytes, &manifest_hex)?;
            let config_hex = sha256_hex_of(manifest.config().digest())
                .ok_or_else(|| ImageError::Corrupt("manifest with a bad config digest".into()))?;
            let layer_hexes = manifest
                .layers()
                .iter()
                .map(|l| {
                    sha256_hex_of(l.digest()).ok_or_else(|| {
                        ImageError::Corrupt(format!("unsupported layer digest {}", l.digest()))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let config = &loaded[i].image.config;
            selected.push(Selected {
                manifest_hex,
                manifest_size: bytes.len() as u64,
                config_hex,
                layer_hexes,
                platform: json!({
                    "architecture": config.architecture().to_string(),
                    "os": config.os().to_string(),
                }),
                tags: tag.into_iter().collect(),
            });
        }

        let mut tar = TarWriter::new(buffered(out));
        let write = |e: io::Error| ImageError::io("cannot write the archive")(e);
        tar.append(
            &file_member("oci-layout", 30),
            Some(&mut &b"{\"imageLayoutVersion\":\"1.0.0\"}"[..]),
        )
        .map_err(write)?;
        for (name, value) in [
            ("index.json", oci_index(&selected)),
            ("manifest.json", docker_manifest(&selected)),
        ] {
            let mut bytes = serde_json::to_vec(&value)
                .map_err(|e| ImageError::Corrupt(format!("cannot serialise {name}: {e}")))?;
            bytes.push(b'\n');
            tar.append(
                &file_member(name, bytes.len() as u64),
                Some(&mut &bytes[..]),
            )
            .map_err(write)?;
        }
        for dir in ["blobs", "blobs/sha256"] {
            let mut member = file_member(dir, 0);
            member.kind = Kind::Dir;
            member.mode = 0o755;
            tar.append(&member, None).map_err(write)?;
        }
        let mut written: Vec<&str> = Vec::new();
        for image in &selected {
            let blobs = std::iter::once(&image.manifest_hex)
                .chain(std::iter::once(&image.config_hex))
                .chain(&image.layer_hexes);
            for blob in blobs {
                if written.contains(&blob.as_str()) {
                    continue;
                }
                self.copy_blob(&mut tar, blob)?;
                written.push(blob);
            }
        }
        tar.finish().map_err(write)?;
        Ok(())
    }

    /// Streams one store blob into the archive, checking its digest on the way.
    fn copy_blob<W: Write>(
        &self,
        tar: &mut TarWriter<std::io::BufWriter<W>>,
        blob: &str,
    ) -> Result<(), ImageError> {
        let (stream, size) = self.layout.open_layer_blob(blob)?;
        let mut reader = DigestingReader {
            inner: stream,
            hasher: Sha256::new(),
        };
        tar.append(
            &file_member(&format!("blobs/sha256/{blob}"), size),
            Some(&mut reader),
        )
        .map_err(|e| reassembly_error(e, ImageError::io("cannot write the archive")))?;
        if hex(&reader.hasher.finalize()) != blob {
            return Err(ImageError::Corrupt(format!(
                "blob sha256:{blob} does not match its digest"
            )));
        }
        Ok(())
    }
}

/// index.json: one descriptor per name (ref.name = the tag, the full name in containerd's
/// annotation, as docker writes it), one without annotations for an untagged image.
fn oci_index(selected: &[Selected]) -> Value {
    let mut manifests = Vec::new();
    for image in selected {
        let descriptor = |annotations: Option<Value>| {
            let mut d = json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{}", image.manifest_hex),
                "size": image.manifest_size,
                "platform": image.platform,
            });
            if let Some(a) = annotations {
                d["annotations"] = a;
            }
            d
        };
        if image.tags.is_empty() {
            manifests.push(descriptor(None));
        }
        for tag in &image.tags {
            let short = tag.rsplit_once(':').map_or("latest", |(_, t)| t);
            manifests.push(descriptor(Some(json!({
                ANNOTATION_IMAGE_NAME: tag,
                ANNOTATION_REF_NAME: short,
            }))));
        }
    }
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    })
}

/// manifest.json: docker's format, paths into the OCI layout's blobs.
fn docker_manifest(selected: &[Selected]) -> Value {
    Value::Array(
        selected
            .iter()
            .map(|image| {
                json!({
                    "Config": format!("blobs/sha256/{}", image.config_hex),
                    "RepoTags": if image.tags.is_empty() { Value::Null } else { json!(image.tags) },
                    "Layers": image
                        .layer_hexes
                        .iter()
                        .map(|h| format!("blobs/sha256/{h}"))
                        .collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

fn file_member(path: &str, size: u64) -> Member {
    Member {
        path: path.as_bytes().to_vec(),
        kind: Kind::File(size),
        mode: 0o644,
        uid: 0,
        gid: 0,
        // Fixed: the same images always give the same archive.
        mtime: 0,
        xattrs: Vec::new(),
    }
}

struct DigestingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for DigestingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tags: &[&str]) -> Selected {
        Selected {
            manifest_hex: "m".repeat(64),
            manifest_size: 10,
            config_hex: "c".repeat(64),
            layer_hexes: vec!["a".repeat(64), "b".repeat(64)],
            platform: json!({"architecture": "amd64", "os": "linux"}),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn both_manifests_point_at_the_same_blobs() {
        let selected = [
            image(&["busybox:latest", "localhost:5000/app:v1"]),
            image(&[]),
        ];
        let index = oci_index(&selected);
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(
            manifests.len(),
            3,
            "one per name, one for the untagged image"
        );
        assert_eq!(manifests[0]["annotations"][ANNOTATION_REF_NAME], "latest");
        assert_eq!(
            manifests[0]["annotations"][ANNOTATION_IMAGE_NAME],
            "busybox:latest"
        );
        assert_eq!(manifests[1]["annotations"][ANNOTATION_REF_NAME], "v1");
        assert!(manifests[2].get("annotations").is_none());
        let docker = docker_manifest(&selected);
        assert_eq!(
            docker[0]["RepoTags"],
            json!(["busybox:latest", "localhost:5000/app:v1"])
        );
        assert_eq!(docker[1]["RepoTags"], Value::Null);
        assert_eq!(
            docker[0]["Layers"][1],
            format!("blobs/sha256/{}", "b".repeat(64))
        );
        assert_eq!(
            docker[0]["Config"],
            format!("blobs/sha256/{}", "c".repeat(64))
        );
    }
}
