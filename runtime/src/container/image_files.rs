//! Reading files of an image (its /etc/passwd, /etc/group) before any container exists, from
//! the unpacked layers, with symlinks resolved inside each layer so a hostile image cannot make
//! carton read a host file.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::engine::in_root::RootDir;

/// The content of `path` as the topmost layer that has it provides; `None` if no layer does,
/// or if a layer above the one that has it deleted it (a whiteout, an opaque directory).
pub fn read(layers: &[PathBuf], path: &Path) -> Option<String> {
    for layer in layers.iter().rev() {
        if let Some(text) = read_in(layer, path) {
            return Some(text);
        }
        if crate::image::layer_hides(layer, path) {
            return None;
        }
    }
    None
}

/// The content of `path` inside the tree rooted at `root` (a layer, or a running container's
/// `/proc/<pid>/root`), symlinks resolved inside it.
pub fn read_in(root: &Path, path: &Path) -> Option<String> {
    let fd = RootDir::open(root)
        .ok()?
        .open_path(path, libc::O_RDONLY)
        .ok()?;
    let mut text = String::new();
    // A passwd file of more than a few MiB is not one carton wants to parse.
    File::from(fd)
        .take(4 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn upper_layers_win_and_symlinks_stay_inside() {
        let (low, high) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::create_dir_all(low.path().join("etc")).unwrap();
        fs::create_dir_all(high.path().join("etc")).unwrap();
        fs::write(low.path().join("etc/passwd"), "low").unwrap();
        fs::write(low.path().join("etc/group"), "low-group").unwrap();
        fs::write(high.path().join("etc/passwd"), "high").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", high.path().join("etc/shadow")).unwrap();
        let layers = [low.path().to_path_buf(), high.path().to_path_buf()];
        assert_eq!(
            read(&layers, Path::new("/etc/passwd")).as_deref(),
            Some("high")
        );
        assert_eq!(
            read(&layers, Path::new("/etc/group")).as_deref(),
            Some("low-group")
        );
        // Resolved inside the layer: /etc/hostname does not exist there.
        assert_eq!(read(&layers, Path::new("/etc/shadow")), None);
    }

    #[test]
    fn a_file_replaced_by_a_non_directory_above_is_gone() {
        let (low, high) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::create_dir_all(low.path().join("etc")).unwrap();
        fs::write(low.path().join("etc/passwd"), "low").unwrap();
        // The upper layer turned /etc into a file: nothing below /etc shows through.
        fs::write(high.path().join("etc"), "not a directory").unwrap();
        let layers = [low.path().to_path_buf(), high.path().to_path_buf()];
        assert_eq!(read(&layers, Path::new("/etc/passwd")), None);
    }
}
