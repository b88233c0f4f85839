//! What an image archive says it holds, in either format, as a list of [`Planned`] images:
//! where each config and layer is in the archive, the digests the archive promises for them,
//! and the names to give.
//!
//! - docker-archive (`docker save`, `podman save`, `skopeo copy docker-archive:`):
//!   `manifest.json` = `[{"Config": path, "RepoTags": [...], "Layers": [paths]}]`, paths either
//!   legacy (`<hex>.json`, `<id>/layer.tar`) or into an OCI layout (`blobs/sha256/<hex>`);
//! - oci-archive (`skopeo copy oci-archive:`, `podman save --format oci-archive`, umoci):
//!   `index.json` → manifests, possibly through nested indexes (a multi-platform image: the
//!   entry for this machine's platform is taken).
//!
//! When both are present (docker ≥ 25 and carton write both) `manifest.json` is used, as docker
//! does. Names from other registries' conventions are shortened the way docker shows them:
//! `docker.io/library/busybox:latest` is `busybox:latest` here.

use super::ImageError;
use super::digest::sha256_hex;
use super::load_archive::ArchiveFiles;
use super::reference::normalize_reference;
use super::save::ANNOTATION_IMAGE_NAME;
use super::store::sha256_hex_of;
use oci_spec::image::{
    ANNOTATION_REF_NAME, Arch, Descriptor, ImageIndex, ImageManifest, MediaType, Os,
};

/// Nested indexes followed at most this deep.
const MAX_DEPTH: usize = 4;

/// One image to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    pub(crate) config: Blob,
    pub(crate) layers: Vec<Blob>,
    /// Normalised `name:tag` references.
    pub(crate) references: Vec<String>,
}

/// A file of the archive and what the archive promises about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blob {
    pub(crate) path: String,
    /// Expected sha256 hex (when the format names one).
    pub(crate) digest: Option<String>,
    pub(crate) size: Option<u64>,
}

/// The images in the archive, in the archive's order.
pub(crate) fn plan(files: &ArchiveFiles) -> Result<Vec<Planned>, ImageError> {
    let planned = if files.contains("manifest.json") {
        docker(files.json("manifest.json")?)?
    } else if files.contains("index.json") {
        let index: ImageIndex = files.json("index.json")?;
        oci(files, &index)?
    } else {
        return Err(ImageError::InvalidArchive(
            "the archive has neither manifest.json (docker-archive) nor index.json (oci-archive)"
                .into(),
        ));
    };
    if planned.is_empty() {
        return Err(ImageError::InvalidArchive(
            "the archive holds no image".into(),
        ));
    }
    Ok(planned)
}

#[derive(Debug, serde::Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

fn docker(entries: Vec<DockerEntry>) -> Result<Vec<Planned>, ImageError> {
    entries
        .into_iter()
        .map(|entry| {
            let references = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|r| loaded_name(r))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Planned {
                config: docker_blob(&entry.config),
                layers: entry.layers.iter().map(|l| docker_blob(l)).collect(),
                references,
            })
        })
        .collect()
}

/// A docker-archive path, with the digest its name promises: `blobs/sha256/<hex>`, or the
/// legacy config name `<hex>.json` (legacy `<id>/layer.tar` promises nothing: the config's
/// diff_ids check those layers).
fn docker_blob(path: &str) -> Blob {
    let name = path.rsplit('/').next().unwrap_or(path);
    let is_hex = |s: &str| super::digest::is_sha256_hex(s);
    let digest = if path.trim_start_matches("./").starts_with("blobs/sha256/") && is_hex(name) {
        Some(name.to_string())
    } else {
        name.strip_suffix(".json")
            .filter(|h| is_hex(h))
            .map(str::to_string)
    };
    Blob {
        path: path.to_string(),
        digest,
        size: None,
    }
}

fn oci(files: &ArchiveFiles, index: &ImageIndex) -> Result<Vec<Planned>, ImageError> {
    let mut out: Vec<Planned> = Vec::new();
    for descriptor in index.manifests() {
        let names = names_of(descriptor)?;
        descend(files, descriptor, names, 0, &mut out)?;
    }
    Ok(out)
}

enum Kind {
    Manifest,
    Index,
    Other,
}

fn kind_of(media_type: &MediaType) -> Kind {
    match media_type {
        MediaType::ImageManifest => Kind::Manifest,
        MediaType::ImageIndex => Kind::Index,
        MediaType::Other(t) if t == "application/vnd.docker.distribution.manifest.v2+json" => {
            Kind::Manifest
        }
        MediaType::Other(t) if t == "application/vnd.docker.distribution.manifest.list.v2+json" => {
            Kind::Index
        }
        _ => Kind::Other,
    }
}

fn descend(
    files: &ArchiveFiles,
    descriptor: &Descriptor,
    names: Vec<String>,
    depth: usize,
    out: &mut Vec<Planned>,
) -> Result<(), ImageError> {
    match kind_of(descriptor.media_type()) {
        Kind::Manifest => {
            let blob = oci_blob(descriptor)?;
            let manifest: ImageManifest = parse(&blob, &verified_bytes(files, &blob)?)?;
            let planned = Planned {
                config: oci_blob(manifest.config())?,
                layers: manifest
                    .layers()
                    .iter()
                    .map(oci_blob)
                    .collect::<Result<_, _>>()?,
                references: names,
            };
            // The same manifest under several names (one index entry per tag): one image.
            match out
                .iter_mut()
                .find(|p| p.config == planned.config && p.layers == planned.layers)
            {
                Some(existing) => {
                    for name in planned.references {
                        if !existing.references.contains(&name) {
                            existing.references.push(name);
                        }
                    }
                }
                None => out.push(planned),
            }
            Ok(())
        }
        Kind::Index => {
            if depth >= MAX_DEPTH {
                return Err(ImageError::InvalidArchive(format!(
                    "image indexes nested more than {MAX_DEPTH} deep"
                )));
            }
            let blob = oci_blob(descriptor)?;
            let index: ImageIndex = parse(&blob, &verified_bytes(files, &blob)?)?;
            let chosen = index
                .manifests()
                .iter()
                .find(|d| for_this_platform(d))
                .ok_or_else(|| {
                    ImageError::InvalidArchive(format!(
                        "the image index {} has no image for {}/{}",
                        descriptor.digest(),
                        Os::default(),
                        Arch::default()
                    ))
                })?;
            descend(files, chosen, names, depth + 1, out)
        }
        Kind::Other => {
            log::info!(
                "skipping {} of type {}: not an image",
                descriptor.digest(),
                descriptor.media_type()
            );
            Ok(())
        }
    }
}

/// An index entry this machine can run: no platform given, or linux on this architecture.
/// Attestations (buildkit's `unknown/unknown` entries) are never chosen.
fn for_this_platform(descriptor: &Descriptor) -> bool {
    if matches!(kind_of(descriptor.media_type()), Kind::Other) {
        return false;
    }
    match descriptor.platform() {
        None => true,
        Some(platform) => {
            *platform.os() == Os::default() && *platform.architecture() == Arch::default()
        }
    }
}

/// `blobs/sha256/<hex>` for a descriptor, with its promised digest and size.
fn oci_blob(descriptor: &Descriptor) -> Result<Blob, ImageError> {
    let hex = sha256_hex_of(descriptor.digest()).ok_or_else(|| {
        ImageError::InvalidArchive(format!(
            "unsupported digest {} (carton reads sha256 only)",
            descriptor.digest()
        ))
    })?;
    Ok(Blob {
        path: format!("blobs/sha256/{hex}"),
        digest: Some(hex),
        size: Some(descriptor.size()),
    })
}

/// The bytes of a (small) blob — a manifest, an index, a config — once checked against what
/// the archive promised for it.
pub(crate) fn verified_bytes(files: &ArchiveFiles, blob: &Blob) -> Result<Vec<u8>, ImageError> {
    let bytes = files.bytes(&blob.path)?;
    check_promise(blob, &sha256_hex(&bytes), bytes.len() as u64)?;
    Ok(bytes)
}

/// Checks a blob's actual digest and size against what the archive promised for it.
pub(crate) fn check_promise(blob: &Blob, sha256: &str, size: u64) -> Result<(), ImageError> {
    if let Some(digest) = &blob.digest {
        if sha256 != digest {
            return Err(ImageError::InvalidArchive(format!(
                "{} does not match its digest sha256:{digest} (it hashes to sha256:{sha256})",
                blob.path
            )));
        }
    }
    if let Some(promised) = blob.size {
        if size != promised {
            return Err(ImageError::InvalidArchive(format!(
                "{} is {size} bytes, its descriptor says {promised}",
                blob.path
            )));
        }
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(blob: &Blob, bytes: &[u8]) -> Result<T, ImageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ImageError::InvalidArchive(format!("{}: {e}", blob.path)))
}

/// The names an index entry gives its image: containerd's full-name annotation, else the
/// OCI ref.name when it is a full reference (one with a `/` or `:`); a bare ref.name is a tag
/// without a repository, which names nothing here.
fn names_of(descriptor: &Descriptor) -> Result<Vec<String>, ImageError> {
    let annotations = descriptor.annotations().clone().unwrap_or_default();
    if let Some(name) = annotations.get(ANNOTATION_IMAGE_NAME) {
        return Ok(vec![loaded_name(name)?]);
    }
    match annotations.get(ANNOTATION_REF_NAME) {
        Some(name) if name.contains('/') || name.contains(':') => Ok(vec![loaded_name(name)?]),
        Some(tag) => {
            log::info!(
                "the archive's image tagged {tag:?} has no repository name: loaded untagged"
            );
            Ok(Vec::new())
        }
        None => Ok(Vec::new()),
    }
}

/// A name from an archive, shortened as docker shows it and normalised (an invalid one fails
/// the whole load: a partly named load would be a half-done one).
pub(crate) fn loaded_name(name: &str) -> Result<String, ImageError> {
    let short = [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
    ]
    .iter()
    .find_map(|prefix| name.strip_prefix(prefix))
    .unwrap_or(name);
    normalize_reference(short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_names_are_shortened_and_checked() {
        assert_eq!(
            loaded_name("docker.io/library/busybox:1.36").unwrap(),
            "busybox:1.36"
        );
        assert_eq!(
            loaded_name("docker.io/team/app").unwrap(),
            "team/app:latest"
        );
        assert_eq!(loaded_name("localhost/app:v1").unwrap(), "localhost/app:v1");
        assert_eq!(loaded_name("quay.io/x/y:z").unwrap(), "quay.io/x/y:z");
        assert!(loaded_name("UPPER:case").is_err());
        assert!(loaded_name("app:").is_err());
    }

    #[test]
    fn docker_manifest_paths_promise_digests() {
        let hex = "ab".repeat(32);
        let entries: Vec<DockerEntry> = serde_json::from_str(&format!(
            r#"[{{"Config":"{hex}.json","RepoTags":["docker.io/library/busybox:latest"],
                 "Layers":["0123/layer.tar","blobs/sha256/{hex}"]}},
               {{"Config":"blobs/sha256/{hex}","RepoTags":null,"Layers":[]}}]"#
        ))
        .unwrap();
        let planned = docker(entries).unwrap();
        assert_eq!(planned[0].references, ["busybox:latest"]);
        assert_eq!(planned[0].config.digest.as_deref(), Some(hex.as_str()));
        assert_eq!(planned[0].layers[0].digest, None, "legacy layer.tar");
        assert_eq!(planned[0].layers[1].digest.as_deref(), Some(hex.as_str()));
        assert!(planned[1].references.is_empty());
        assert_eq!(planned[1].config.digest.as_deref(), Some(hex.as_str()));

        let bad: Vec<DockerEntry> =
            serde_json::from_str(r#"[{"Config":"c.json","RepoTags":["Bad:Name"],"Layers":[]}]"#)
                .unwrap();
        assert!(matches!(
            docker(bad),
            Err(ImageError::InvalidReference { .. })
        ));
    }

    fn descriptor(json: &str) -> Descriptor {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn index_entries_name_and_select_images() {
        let digest = format!("sha256:{}", "cd".repeat(32));
        let named = descriptor(&format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":1,
                "annotations":{{"io.containerd.image.name":"docker.io/library/alpine:3","org.opencontainers.image.ref.name":"3"}}}}"#
        ));
        assert_eq!(names_of(&named).unwrap(), ["alpine:3"]);
        let full_ref = descriptor(&format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":1,
                "annotations":{{"org.opencontainers.image.ref.name":"localhost/app:v2"}}}}"#
        ));
        assert_eq!(names_of(&full_ref).unwrap(), ["localhost/app:v2"]);
        let bare = descriptor(&format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":1,
                "annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}"#
        ));
        assert!(names_of(&bare).unwrap().is_empty());

        let arch = Arch::default().to_string();
        let ours = descriptor(&format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":1,
                "platform":{{"os":"linux","architecture":"{arch}"}}}}"#
        ));
        let attestation = descriptor(&format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":1,
                "platform":{{"os":"unknown","architecture":"unknown"}}}}"#
        ));
        let other_arch = descriptor(&format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":1,
                "platform":{{"os":"linux","architecture":"{}"}}}}"#,
            if arch == "s390x" { "ppc64le" } else { "s390x" }
        ));
        assert!(for_this_platform(&ours));
        assert!(for_this_platform(&named), "no platform given");
        assert!(!for_this_platform(&attestation));
        assert!(!for_this_platform(&other_arch));
        let sha512 = descriptor(&format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha512:{}","size":1}}"#,
            "ef".repeat(64)
        ));
        assert!(oci_blob(&sha512).is_err());
        assert_eq!(
            oci_blob(&ours).unwrap().path,
            format!("blobs/sha256/{}", "cd".repeat(32))
        );
    }
}
