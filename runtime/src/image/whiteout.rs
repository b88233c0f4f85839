//! The two spellings of "deleted in this layer": overlayfs' and the OCI image spec's.
//!
//! ```text
//!                      overlay (upper dir, unpacked layer)        OCI layer tar
//! deleted file/dir X   X = character device 0/0                   .wh.X   (empty regular file)
//! replaced dir D       D with xattr trusted.overlay.opaque = "y"  D/ + D/.wh..wh..opq
//! ```
//!
//! Commit converts the left column to the right one (`layer_tar`), unpack the other way
//! (`unpack`). Both sides only ask this module, so the rules live in one place. Everything
//! else overlayfs keeps in `trusted.overlay.*` (origin, impure, redirect, metacopy…) is its
//! private bookkeeping about *this* mount's lower layers: never written to a layer, and never
//! accepted from an archive (a planted redirect or metacopy xattr would make overlay look up
//! another layer's files).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

/// Prefix of an OCI whiteout: `.wh.X` deletes `X` of the layers below.
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// An empty file of this name makes its directory opaque: nothing below shows through.
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// aufs' metadata names (`.wh..wh.plnk`, `.wh..wh.aufs`) start like this; docker drops them.
const META_PREFIX: &[u8] = b".wh..wh.";

/// The xattr by which overlayfs marks an opaque directory, and its "opaque" value.
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
pub(crate) const OPAQUE_VALUE: &[u8] = b"y";
/// overlayfs' private xattr namespace.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// What an entry name of an OCI layer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OciName<'a> {
    /// An ordinary entry.
    Plain,
    /// `.wh.X`: `X` is deleted (the name after the prefix).
    Whiteout(&'a [u8]),
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// Another `.wh..wh.*` name: aufs bookkeeping, ignored.
    AufsMeta,
}

/// Classifies the last component of an OCI layer entry.
pub(crate) fn classify(name: &[u8]) -> OciName<'_> {
    if name == OPAQUE_MARKER {
        OciName::Opaque
    } else if name.starts_with(META_PREFIX) {
        OciName::AufsMeta
    } else if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
        OciName::Whiteout(target)
    } else {
        OciName::Plain
    }
}

/// The OCI name that deletes `name`: `.wh.<name>`.
pub(crate) fn whiteout_name(name: &[u8]) -> Vec<u8> {
    [WHITEOUT_PREFIX, name].concat()
}

/// True for overlayfs' whiteout: a character device with device number 0/0.
pub(crate) fn is_overlay_whiteout(mode: u32, rdev: u64) -> bool {
    mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0
}

/// True when the `trusted.overlay.opaque` value marks the directory opaque. Kernels ≥ 6.7
/// also write "x" (a directory holding xattr-whiteouts, which is *not* opaque).
pub(crate) fn is_opaque_value(value: &[u8]) -> bool {
    value == OPAQUE_VALUE
}

/// Whether an xattr may travel in a layer (anything but overlayfs' private ones).
pub(crate) fn is_portable_xattr(name: &[u8]) -> bool {
    !name.starts_with(OVERLAY_XATTR_PREFIX)
}

/// Whether `layer` (one unpacked layer, overlay format) hides `path` of the layers below it:
/// the path or one of its ancestors is whited out or replaced by a non-directory, or an
/// ancestor is an opaque directory. Also true when the layer has `path` itself, whatever its
/// type: what the layer holds wins over anything below. Never follows symlinks.
pub fn layer_hides(layer: &Path, path: &Path) -> bool {
    let components: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let mut current = layer.to_path_buf();
    for (i, name) in components.iter().enumerate() {
        current.push(name);
        let Ok(meta) = fs::symlink_metadata(&current) else {
            // Nothing of the layer covers this name, so nothing below it either.
            return false;
        };
        let last = i + 1 == components.len();
        if last || is_overlay_whiteout(meta.mode(), meta.rdev()) || !meta.is_dir() {
            return true;
        }
        if is_opaque_dir(&current) {
            return true;
        }
    }
    false
}

fn is_opaque_dir(dir: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let name = c"trusted.overlay.opaque";
    let mut value = [0u8; 4];
    // SAFETY: NUL-terminated strings and a buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n > 0 && is_opaque_value(&value[..n as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified() {
        assert_eq!(classify(b"passwd"), OciName::Plain);
        assert_eq!(classify(b".wh.passwd"), OciName::Whiteout(b"passwd"));
        assert_eq!(classify(b".wh..hidden"), OciName::Whiteout(b".hidden"));
        assert_eq!(classify(b".wh..wh..opq"), OciName::Opaque);
        assert_eq!(classify(b".wh..wh.plnk"), OciName::AufsMeta);
        assert_eq!(classify(b".wh..wh.aufs"), OciName::AufsMeta);
        // The empty target is classified; the unpacker refuses it.
        assert_eq!(classify(b".wh."), OciName::Whiteout(b""));
        assert_eq!(classify(b"x.wh.y"), OciName::Plain);
        assert_eq!(whiteout_name(b"passwd"), b".wh.passwd");
        assert_eq!(classify(&whiteout_name(b"a b")), OciName::Whiteout(b"a b"));
    }

    #[test]
    fn overlay_markers() {
        assert!(is_overlay_whiteout(libc::S_IFCHR, 0));
        assert!(is_overlay_whiteout(libc::S_IFCHR | 0o644, 0));
        assert!(!is_overlay_whiteout(libc::S_IFCHR, libc::makedev(1, 3)));
        assert!(!is_overlay_whiteout(libc::S_IFBLK, 0));
        assert!(!is_overlay_whiteout(libc::S_IFREG, 0));
        assert!(is_opaque_value(b"y"));
        assert!(!is_opaque_value(b"x"));
        assert!(!is_opaque_value(b"n"));
        assert!(!is_portable_xattr(b"trusted.overlay.opaque"));
        assert!(!is_portable_xattr(b"trusted.overlay.redirect"));
        assert!(is_portable_xattr(b"user.comment"));
        assert!(is_portable_xattr(b"security.capability"));
        assert!(is_portable_xattr(b"trusted.other"));
    }

    #[test]
    fn layers_hide_what_they_hold_and_what_they_delete() {
        let layer = tempfile::tempdir().unwrap();
        let l = layer.path();
        fs::create_dir_all(l.join("etc")).unwrap();
        fs::write(l.join("etc/passwd"), "x").unwrap();
        fs::write(l.join("opt"), "a file where a directory was").unwrap();
        std::os::unix::fs::symlink("/etc", l.join("link")).unwrap();
        assert!(layer_hides(l, Path::new("/etc/passwd")), "held");
        assert!(!layer_hides(l, Path::new("/etc/group")), "absent");
        assert!(!layer_hides(l, Path::new("/usr/bin/sh")), "absent parent");
        assert!(
            layer_hides(l, Path::new("/opt/app")),
            "parent replaced by a file"
        );
        assert!(
            layer_hides(l, Path::new("/link/group")),
            "parent is a symlink"
        );
        // A whiteout (0/0 device) needs no privilege since Linux 5.8; skip where refused.
        let dev = l.join("etc/group");
        if nix::sys::stat::mknod(
            &dev,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .is_ok()
        {
            assert!(layer_hides(l, Path::new("/etc/group")), "whited out");
        }
    }
}
