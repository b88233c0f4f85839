//! The guest's initramfs: a cpio archive (the kernel's "newc" format) written here, so building
//! it needs no cpio tool, no root and no device-node privileges.
//!
//! Two parts, concatenated (the kernel unpacks several archives in a row):
//! - per kernel: busybox, vm/init as /init, vm/run-tests, /dev/console and the boot modules
//!   (decompressed, with /modules/order giving the load order);
//! - per leg: /carton-vm.conf (shell settings), /nextest-args and /guest-env (one argument or
//!   KEY=VALUE per line).

use std::path::Path;

use anyhow::{Context, Result};

use super::bzimage;
use super::kernel::{self, Kernel};
use crate::util;

/// An in-memory newc cpio archive.
pub struct Cpio {
    data: Vec<u8>,
    next_ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

impl Cpio {
    pub fn new() -> Cpio {
        Cpio {
            data: Vec::new(),
            next_ino: 1,
        }
    }

    /// One entry: the 110-byte ASCII header, the NUL-terminated name and the data, each padded
    /// to a multiple of 4 bytes. Names are relative ("init", "bin/busybox").
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so the archive is reproducible
            data.len() as u32,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // checksum (unused by newc)
        ];
        self.data.extend_from_slice(b"070701");
        for field in fields {
            self.data
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, S_IFDIR | 0o755, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, S_IFREG | mode, (0, 0), data);
    }

    pub fn char_device(&mut self, name: &str, mode: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | mode, (major, minor), &[]);
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.data
    }
}

/// vm/<name>, read at run time: editing the guest scripts needs no rebuild of xtask.
fn vm_file(name: &str) -> Result<Vec<u8>> {
    let path = util::workspace_root().join("vm").join(name);
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// The per-kernel part: busybox, both guest stages, /dev/console and the boot modules.
pub fn base(kernel: &Kernel, boot_modules: &[String], busybox: &Path) -> Result<Vec<u8>> {
    let mut cpio = Cpio::new();
    for dir in [
        "bin", "dev", "proc", "sys", "modules", "lower", "rw", "newroot",
    ] {
        cpio.dir(dir);
    }
    // The kernel opens /dev/console for /init's stdio before anything is mounted.
    cpio.char_device("dev/console", 0o600, 5, 1);
    let busybox_bytes =
        std::fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    cpio.file("bin/busybox", 0o755, &busybox_bytes);
    cpio.file("init", 0o755, &vm_file("init")?);
    cpio.file("run-tests", 0o644, &vm_file("run-tests")?);

    let mut order = String::new();
    for path in kernel::resolve_modules(kernel, boot_modules)? {
        let file = path.file_name().unwrap().to_string_lossy();
        let name = file.split(".ko").next().unwrap().to_string();
        cpio.file(
            &format!("modules/{name}.ko"),
            0o644,
            &bzimage::module_bytes(&path)?,
        );
        order.push_str(&name);
        order.push('\n');
    }
    cpio.file("modules/order", 0o644, order.as_bytes());
    Ok(cpio.finish())
}

/// The per-leg part: the settings for vm/init and vm/run-tests, the nextest arguments and the
/// extra environment of the tests (`--guest-env`), one per line.
pub fn leg(conf: &str, nextest_args: &[String], env: &[String]) -> Vec<u8> {
    let lines = |items: &[String]| -> String { items.iter().map(|i| format!("{i}\n")).collect() };
    let mut cpio = Cpio::new();
    cpio.file("carton-vm.conf", 0o644, conf.as_bytes());
    cpio.file("nextest-args", 0o644, lines(nextest_args).as_bytes());
    cpio.file("guest-env", 0o644, lines(env).as_bytes());
    cpio.finish()
}

/// `value` quoted for a POSIX shell (single quotes; embedded ones as '\'').
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut cpio = Cpio::new();
        cpio.file("init", 0o755, b"#!/bin/sh\n");
        let data = cpio.finish();
        assert!(data.starts_with(b"070701"));
        // Header (110) + "init\0" (5) padded to 116, data (10) padded to 12.
        assert_eq!(&data[110..114], b"init");
        assert_eq!(&data[116..126], b"#!/bin/sh\n");
        assert!(data.len().is_multiple_of(4));
        let trailer = &data[128..];
        assert!(trailer.starts_with(b"070701"));
        assert_eq!(&trailer[110..120], b"TRAILER!!!");
        // The mode field (second) of the file: 0o100755.
        assert_eq!(&data[14..22], b"000081ed");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
