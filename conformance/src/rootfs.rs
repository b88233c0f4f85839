//! The busybox rootfs shared by the conformance suites and `cargo xtask demo`.
//!
//! One statically linked busybox is enough for a useful container: a shell, `ps`, `ip`, `mount`,
//! `id`… all as symlinks to a single file with no shared libraries to copy. Building the tarball here
//! (rather than downloading an image) keeps the tests offline and the bytes reproducible: the same
//! busybox always gives the same tarball, so image ids stay stable across runs.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// Environment variable naming the busybox to use; it overrides the standard locations.
pub const BUSYBOX_ENV: &str = "CARTON_BUSYBOX";

/// Where distributions install busybox (`busybox-static` on Debian puts it in /bin).
const STANDARD_LOCATIONS: [&str; 3] =
    ["/bin/busybox", "/usr/bin/busybox", "/usr/local/bin/busybox"];

/// Modification time of every entry (2000-01-01T00:00:00Z): any fixed value makes the bytes
/// reproducible; a non-zero one avoids tools that treat mtime 0 as "unset".
const MTIME: u64 = 946_684_800;

/// A statically linked busybox: $CARTON_BUSYBOX if set, else /bin/busybox, /usr/bin/busybox,
/// /usr/local/bin/busybox — only if it is a static ELF (no PT_INTERP program header).
///
/// A non-empty $CARTON_BUSYBOX is authoritative: when it does not name a static ELF the answer is
/// `None` (no silent fallback to another binary than the one asked for). An empty value counts as
/// unset.
pub fn find_static_busybox() -> Option<PathBuf> {
    match std::env::var_os(BUSYBOX_ENV) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            is_static_elf(&path).then_some(path)
        }
        _ => STANDARD_LOCATIONS
            .iter()
            .map(PathBuf::from)
            .find(|path| is_static_elf(path)),
    }
}

/// True when `path` is an executable regular file holding an ELF64 image without a PT_INTERP
/// program header, i.e. one the kernel runs without a dynamic loader. Such a binary works inside
/// a rootfs that contains nothing else. Static-PIE (ET_DYN without PT_INTERP) counts as static.
fn is_static_elf(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return false;
    }
    let Ok(file) = File::open(path) else {
        return false;
    };
    // ELF64 header (64 bytes) plus program headers are all near the start of any sane binary;
    // 64 KiB covers e_phoff + e_phnum * e_phentsize in practice and keeps the read bounded.
    let mut buf = Vec::new();
    if file.take(64 * 1024).read_to_end(&mut buf).is_err() {
        return false;
    }
    elf64_is_static(&buf).unwrap_or(false)
}

/// Parses an ELF64 header and its program headers from `image`. `None` means "not a well-formed
/// ELF64 executable" (wrong magic, 32-bit, truncated, not ET_EXEC/ET_DYN).
fn elf64_is_static(image: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    const ET_EXEC: u16 = 2;
    const ET_DYN: u16 = 3;

    if image.get(..4)? != b"\x7fELF" || *image.get(4)? != 2 {
        return None; // not ELF, or ELFCLASS32
    }
    let little = match *image.get(5)? {
        1 => true,  // ELFDATA2LSB
        2 => false, // ELFDATA2MSB
        _ => return None,
    };
    let u16_at = |off: usize| -> Option<u16> {
        let b: [u8; 2] = image.get(off..off + 2)?.try_into().ok()?;
        Some(if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |off: usize| -> Option<u32> {
        let b: [u8; 4] = image.get(off..off + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let u64_at = |off: usize| -> Option<u64> {
        let b: [u8; 8] = image.get(off..off + 8)?.try_into().ok()?;
        Some(if little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };

    let e_type = u16_at(0x10)?;
    if e_type != ET_EXEC && e_type != ET_DYN {
        return None;
    }
    let e_phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let e_phentsize = usize::from(u16_at(0x36)?);
    let e_phnum = usize::from(u16_at(0x38)?);
    // An executable always has program headers; 0xffff (PN_XNUM) would need section 0: reject.
    if e_phnum == 0 || e_phnum == 0xffff || e_phentsize < 56 {
        return None;
    }
    for i in 0..e_phnum {
        let p_type = u32_at(e_phoff.checked_add(i.checked_mul(e_phentsize)?)?)?;
        if p_type == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

/// Writes a plain (uncompressed) tar of a minimal rootfs: bin/busybox plus one symlink per applet
/// at the path busybox reports (`busybox --list-full`, e.g. bin/sh, usr/bin/env, sbin/ip → pointing
/// at /bin/busybox), directories dev proc sys tmp(1777) root(0700) etc var var/tmp(1777) home
/// usr/bin usr/sbin sbin, etc/passwd, etc/group, owned by 0:0, fixed mtimes (reproducible bytes for
/// the same busybox).
///
/// The tarball is written to a temporary sibling and renamed, so `dest` is either the old file or
/// the complete new one.
pub fn write_busybox_rootfs_tar(busybox: &Path, dest: &Path) -> io::Result<()> {
    let applets = applet_paths(busybox)?;
    let binary = std::fs::read(busybox)?;

    let mut tmp_name = dest.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(&rootfs_tar_bytes(&binary, &applets)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Directories of the rootfs with their modes. Parents of applet paths that are not listed here
/// are added with 0755.
const DIRECTORIES: [(&str, u32); 14] = [
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("home", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("sbin", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// Asks busybox where each applet belongs. `--list-full` gives paths like `usr/bin/env`; an old or
/// trimmed busybox without it falls back to `--list`, placing every applet in bin/.
fn applet_paths(busybox: &Path) -> io::Result<Vec<PathBuf>> {
    let list = |flag: &str| -> io::Result<Option<String>> {
        // argv[0] = "busybox" so a binary saved under another name (busybox-x86_64) still runs
        // its own main instead of looking for an applet of that name.
        let out = Command::new(busybox).arg0("busybox").arg(flag).output()?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            .filter(|s| !s.trim().is_empty()))
    };
    let paths: Vec<PathBuf> = if let Some(full) = list("--list-full")? {
        full.lines().map(PathBuf::from).collect()
    } else if let Some(names) = list("--list")? {
        names.lines().map(|n| Path::new("bin").join(n)).collect()
    } else {
        return Err(io::Error::other(format!(
            "{} --list-full and --list printed no applets: is it busybox?",
            busybox.display()
        )));
    };

    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        if path.as_os_str().is_empty() {
            continue;
        }
        // The list comes from a binary we are about to package; still refuse anything that could
        // land outside the rootfs or replace a directory.
        if !path.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("busybox reported an unsafe applet path {}", path.display()),
            ));
        }
        out.push(path);
    }
    Ok(out)
}

/// Builds the tarball in memory (about the size of busybox), in a fixed order: directories
/// (parents first), bin/busybox, etc files, then the applet symlinks sorted by path.
fn rootfs_tar_bytes(binary: &[u8], applets: &[PathBuf]) -> io::Result<Vec<u8>> {
    let mut dirs: Vec<(PathBuf, u32)> = DIRECTORIES
        .iter()
        .map(|&(name, mode)| (PathBuf::from(name), mode))
        .collect();
    let known: BTreeSet<PathBuf> = dirs.iter().map(|(p, _)| p.clone()).collect();
    let mut extra = BTreeSet::new();
    for applet in applets {
        for parent in applet.ancestors().skip(1) {
            if !parent.as_os_str().is_empty() && !known.contains(parent) {
                extra.insert(parent.to_path_buf());
            }
        }
    }
    dirs.extend(extra.into_iter().map(|p| (p, 0o755)));
    // Path ordering compares component by component, so every parent sorts before its children.
    dirs.sort();

    let mut taken: BTreeSet<PathBuf> = dirs.iter().map(|(p, _)| p.clone()).collect();
    let mut builder = tar::Builder::new(Vec::new());

    for (dir, mode) in &dirs {
        let mut header = header(tar::EntryType::Directory, *mode, 0);
        builder.append_data(&mut header, dir, io::empty())?;
    }

    let files: [(&str, u32, &[u8]); 3] = [
        ("bin/busybox", 0o755, binary),
        ("etc/group", 0o644, GROUP.as_bytes()),
        ("etc/passwd", 0o644, PASSWD.as_bytes()),
    ];
    for (path, mode, data) in files {
        let mut header = header(tar::EntryType::Regular, mode, data.len() as u64);
        builder.append_data(&mut header, path, data)?;
        taken.insert(PathBuf::from(path));
    }

    let links: BTreeSet<&PathBuf> = applets.iter().collect();
    for link in links {
        // busybox lists itself (bin/busybox) on some builds; a link must not replace a file or dir.
        if !taken.insert(link.clone()) {
            continue;
        }
        let mut header = header(tar::EntryType::Symlink, 0o777, 0);
        builder.append_link(&mut header, link, OsStr::new("/bin/busybox"))?;
    }

    builder.into_inner()
}

/// A ustar header owned by root:root with the fixed mtime.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    // Names as well as ids so `tar tvf` shows root/root like an exported image would.
    let _ = header.set_username("root");
    let _ = header.set_groupname("root");
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Minimal ELF64 little-endian image: header plus `ptypes.len()` program headers.
    fn elf64(e_type: u16, ptypes: &[u32]) -> Vec<u8> {
        let mut image = vec![0u8; 64 + 56 * ptypes.len()];
        image[..4].copy_from_slice(b"\x7fELF");
        image[4] = 2; // ELFCLASS64
        image[5] = 1; // little endian
        image[6] = 1; // EV_CURRENT
        image[0x10..0x12].copy_from_slice(&e_type.to_le_bytes());
        image[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        image[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        image[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        image[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        image[0x38..0x3a].copy_from_slice(&(ptypes.len() as u16).to_le_bytes());
        for (i, t) in ptypes.iter().enumerate() {
            let off = 64 + 56 * i;
            image[off..off + 4].copy_from_slice(&t.to_le_bytes());
        }
        image
    }

    #[test]
    fn elf_parser_tells_static_from_dynamic() {
        const PT_LOAD: u32 = 1;
        const PT_INTERP: u32 = 3;
        const PT_PHDR: u32 = 6;
        assert_eq!(elf64_is_static(&elf64(2, &[PT_LOAD, PT_LOAD])), Some(true));
        // static-pie: ET_DYN without an interpreter
        assert_eq!(elf64_is_static(&elf64(3, &[PT_LOAD])), Some(true));
        assert_eq!(
            elf64_is_static(&elf64(3, &[PT_PHDR, PT_INTERP, PT_LOAD])),
            Some(false)
        );
        // relocatable objects (ET_REL) are not executables
        assert_eq!(elf64_is_static(&elf64(1, &[PT_LOAD])), None);
        // truncated program header table
        let mut cut = elf64(2, &[PT_LOAD, PT_LOAD]);
        cut.truncate(64 + 56);
        assert_eq!(elf64_is_static(&cut), None);
        // 32-bit, not ELF, empty
        let mut elf32 = elf64(2, &[PT_LOAD]);
        elf32[4] = 1;
        assert_eq!(elf64_is_static(&elf32), None);
        assert_eq!(elf64_is_static(b"#!/bin/sh\necho hi\n"), None);
        assert_eq!(elf64_is_static(b""), None);
    }

    #[test]
    fn elf_parser_reads_big_endian() {
        let mut image = vec![0u8; 64 + 56];
        image[..4].copy_from_slice(b"\x7fELF");
        image[4] = 2;
        image[5] = 2; // big endian
        image[0x10..0x12].copy_from_slice(&2u16.to_be_bytes());
        image[0x20..0x28].copy_from_slice(&64u64.to_be_bytes());
        image[0x36..0x38].copy_from_slice(&56u16.to_be_bytes());
        image[0x38..0x3a].copy_from_slice(&1u16.to_be_bytes());
        image[64..68].copy_from_slice(&3u32.to_be_bytes()); // PT_INTERP
        assert_eq!(elf64_is_static(&image), Some(false));
    }

    #[test]
    fn dynamic_host_binary_is_rejected() {
        // /bin/ls is dynamically linked on every distribution we build on (Debian, Ubuntu).
        assert!(Path::new("/bin/ls").exists(), "/bin/ls missing");
        assert!(!is_static_elf(Path::new("/bin/ls")));
        assert!(!is_static_elf(Path::new("/nonexistent/busybox")));
        assert!(!is_static_elf(Path::new("/")));
    }

    #[test]
    fn static_busybox_is_accepted_when_present() {
        let Some(bb) = STANDARD_LOCATIONS
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
        else {
            eprintln!("SKIP: no busybox in {STANDARD_LOCATIONS:?}");
            return;
        };
        let out = Command::new("file").arg("-L").arg(bb).output();
        match out {
            Ok(out) if out.status.success() => {
                let desc = String::from_utf8_lossy(&out.stdout);
                let expected = desc.contains("statically linked") || desc.contains("static-pie");
                assert_eq!(is_static_elf(bb), expected, "file(1) says: {desc}");
            }
            // Without file(1), rely on the package: Debian's busybox-static is static.
            _ => eprintln!("SKIP: file(1) unavailable to cross-check {}", bb.display()),
        }
    }

    #[test]
    fn non_executable_file_is_rejected() {
        let dir =
            std::env::temp_dir().join(format!("carton-rootfs-test-{}-nx", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("busybox");
        std::fs::write(&path, elf64(2, &[1])).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!is_static_elf(&path));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(is_static_elf(&path));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    struct Entry {
        kind: tar::EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        link: Option<PathBuf>,
        data: Vec<u8>,
    }

    fn read_tar(path: &Path) -> (Vec<PathBuf>, BTreeMap<PathBuf, Entry>) {
        let mut archive = tar::Archive::new(File::open(path).unwrap());
        let mut order = Vec::new();
        let mut map = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().into_owned();
            let h = entry.header();
            let (kind, mode, uid, gid, mtime) = (
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
            );
            let link = entry.link_name().unwrap().map(|l| l.into_owned());
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            order.push(path.clone());
            let dup = map.insert(
                path.clone(),
                Entry {
                    kind,
                    mode,
                    uid,
                    gid,
                    mtime,
                    link,
                    data,
                },
            );
            assert!(dup.is_none(), "duplicate entry {}", path.display());
        }
        (order, map)
    }

    /// A stand-in busybox: a script printing a fixed `--list-full`, so the tar layout is tested
    /// on any machine, busybox or not.
    fn fake_busybox(dir: &Path) -> PathBuf {
        let path = dir.join("busybox");
        std::fs::write(
            &path,
            "#!/bin/sh\n[ \"$1\" = --list-full ] || exit 1\n\
             printf 'bin/sh\\nusr/bin/env\\nsbin/ip\\nbin/busybox\\nlinuxrc\\nusr/local/bin/x\\n'\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A test thread forking while the file was open for writing holds a copy of that fd until
        // its exec, and exec of our script then fails with ETXTBSY: wait until it runs.
        for _ in 0..100 {
            match Command::new(&path).arg("--list-full").output() {
                Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => break,
            }
        }
        path
    }

    fn test_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("carton-rootfs-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn tar_has_layout_modes_owners_and_links() {
        let dir = test_dir("layout");
        let bb = fake_busybox(&dir);
        let tar_path = dir.join("rootfs.tar");
        write_busybox_rootfs_tar(&bb, &tar_path).unwrap();
        assert!(!dir.join("rootfs.tar.tmp").exists());
        let (order, entries) = read_tar(&tar_path);

        let dir_modes = [
            ("dev", 0o755),
            ("proc", 0o555),
            ("sys", 0o555),
            ("tmp", 0o1777),
            ("root", 0o700),
            ("etc", 0o755),
            ("var", 0o755),
            ("var/tmp", 0o1777),
            ("home", 0o755),
            ("usr/bin", 0o755),
            ("usr/sbin", 0o755),
            ("sbin", 0o755),
            ("bin", 0o755),
            ("usr/local", 0o755),
            ("usr/local/bin", 0o755),
        ];
        for (name, mode) in dir_modes {
            let e = &entries[Path::new(name)];
            assert_eq!(e.kind, tar::EntryType::Directory, "{name}");
            assert_eq!(e.mode, mode, "{name}: mode {:o}", e.mode);
        }

        let bin = &entries[Path::new("bin/busybox")];
        assert_eq!(bin.kind, tar::EntryType::Regular);
        assert_eq!(bin.mode, 0o755);
        assert_eq!(bin.data, std::fs::read(&bb).unwrap());

        let passwd = String::from_utf8(entries[Path::new("etc/passwd")].data.clone()).unwrap();
        assert!(passwd.lines().any(|l| l == "root:x:0:0:root:/root:/bin/sh"));
        assert!(
            passwd
                .lines()
                .any(|l| l == "nobody:x:65534:65534:nobody:/nonexistent:/bin/false")
        );
        let group = String::from_utf8(entries[Path::new("etc/group")].data.clone()).unwrap();
        assert!(group.lines().any(|l| l == "root:x:0:"));
        assert!(group.lines().any(|l| l == "nogroup:x:65534:"));
        assert_eq!(entries[Path::new("etc/passwd")].mode, 0o644);

        for link in [
            "bin/sh",
            "usr/bin/env",
            "sbin/ip",
            "linuxrc",
            "usr/local/bin/x",
        ] {
            let e = &entries[Path::new(link)];
            assert_eq!(e.kind, tar::EntryType::Symlink, "{link}");
            assert_eq!(e.link.as_deref(), Some(Path::new("/bin/busybox")), "{link}");
        }

        for (path, e) in &entries {
            assert_eq!((e.uid, e.gid), (0, 0), "{} owner", path.display());
            assert_eq!(e.mtime, MTIME, "{} mtime", path.display());
        }
        // Every entry's parent directory comes before it, so extractors never invent a directory.
        for (i, path) in order.iter().enumerate() {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                let at = order.iter().position(|p| p == parent);
                assert!(
                    at.is_some_and(|at| at < i),
                    "{} before its parent",
                    path.display()
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tar_bytes_are_reproducible() {
        let dir = test_dir("repro");
        let bb = fake_busybox(&dir);
        write_busybox_rootfs_tar(&bb, &dir.join("a.tar")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        write_busybox_rootfs_tar(&bb, &dir.join("b.tar")).unwrap();
        assert_eq!(
            std::fs::read(dir.join("a.tar")).unwrap(),
            std::fs::read(dir.join("b.tar")).unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn not_busybox_is_an_error_and_leaves_no_file() {
        let dir = test_dir("notbb");
        let tar_path = dir.join("rootfs.tar");
        let err = write_busybox_rootfs_tar(Path::new("/bin/false"), &tar_path).unwrap_err();
        assert!(err.to_string().contains("printed no applets"), "{err}");
        assert!(!tar_path.exists());
        assert!(write_busybox_rootfs_tar(Path::new("/nonexistent"), &tar_path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn real_busybox_rootfs_has_a_shell() {
        let Some(bb) = find_static_busybox() else {
            eprintln!("SKIP: no static busybox (set {BUSYBOX_ENV} or install busybox-static)");
            return;
        };
        let dir = test_dir("real");
        let tar_path = dir.join("rootfs.tar");
        write_busybox_rootfs_tar(&bb, &tar_path).unwrap();
        let (_, entries) = read_tar(&tar_path);
        for link in ["bin/sh", "bin/ps", "bin/hostname", "usr/bin/id"] {
            let e = entries
                .get(Path::new(link))
                .unwrap_or_else(|| panic!("{link} missing"));
            assert_eq!(e.link.as_deref(), Some(Path::new("/bin/busybox")), "{link}");
        }
        assert_eq!(
            entries[Path::new("bin/busybox")].kind,
            tar::EntryType::Regular
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
