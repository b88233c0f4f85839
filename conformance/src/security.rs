//! What the security suite needs beyond the common harness: capability masks as
//! /proc/<pid>/status shows them, a one-syscall probe program (a tiny static x86-64 ELF written
//! byte by byte, since the busybox image has no compiler and busybox has no `keyctl`), hostile
//! variants of the busybox image (a top-level entry replaced by a symlink), commands that
//! inherit an extra file descriptor, the host's block devices, and the container cgroups that
//! exist on the host.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Kernel capability names by bit number (as `capsh` prints them, without `CAP_`).
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// docker's default capability set.
pub const DOCKER_DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The same set as a mask (`0xa80425fb`).
pub const DOCKER_DEFAULT_MASK: u64 = 0xa804_25fb;

/// Bit number of a capability named with or without `CAP_`, any case.
pub fn capability_bit(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITY_NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| i as u32)
}

/// Mask of the named capabilities; panics on an unknown name.
pub fn capability_mask(names: &[&str]) -> u64 {
    names.iter().fold(0, |mask, name| {
        mask | 1u64 << capability_bit(name).unwrap_or_else(|| panic!("unknown capability {name}"))
    })
}

/// Names in a mask, for readable failures (`bit42` for bits beyond the table).
pub fn capability_names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| {
            CAPABILITY_NAMES
                .get(bit as usize)
                .map_or_else(|| format!("bit{bit}"), |n| n.to_string())
        })
        .collect()
}

/// The five capability sets of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSets {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

impl CapSets {
    /// From the text of /proc/<pid>/status (`CapInh:` … `CapAmb:` lines, hex).
    pub fn parse(status: &str) -> Option<CapSets> {
        let field = |name: &str| -> Option<u64> {
            let value = status_field(status, name)?;
            u64::from_str_radix(&value, 16).ok()
        };
        Some(CapSets {
            inheritable: field("CapInh")?,
            permitted: field("CapPrm")?,
            effective: field("CapEff")?,
            bounding: field("CapBnd")?,
            ambient: field("CapAmb")?,
        })
    }

    /// The test process's own sets: what carton, started from here, holds.
    pub fn of_self() -> CapSets {
        let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
        CapSets::parse(&status).expect("capability lines in /proc/self/status")
    }

    /// Every set equal to `mask`, ambient empty.
    pub fn uniform(mask: u64) -> CapSets {
        CapSets {
            inheritable: mask,
            permitted: mask,
            effective: mask,
            bounding: mask,
            ambient: 0,
        }
    }
}

impl std::fmt::Display for CapSets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, mask) in [
            ("CapInh", self.inheritable),
            ("CapPrm", self.permitted),
            ("CapEff", self.effective),
            ("CapBnd", self.bounding),
            ("CapAmb", self.ambient),
        ] {
            writeln!(
                f,
                "{name}: {mask:016x} {}",
                capability_names(mask).join(",")
            )?;
        }
        Ok(())
    }
}

/// The value of a `Name:\tvalue` line of a /proc status file, trimmed.
pub fn status_field(status: &str, name: &str) -> Option<String> {
    status.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key == name).then(|| value.trim().to_string())
    })
}

/// An argument of a [`SyscallProbe`].
#[derive(Debug, Clone)]
pub enum Arg {
    /// A register value.
    Int(i64),
    /// The address of this NUL-terminated string, stored in the program image.
    Str(&'static str),
}

/// A static x86-64 Linux program that makes one system call with fixed arguments and exits
/// with 0 when the call returned a non-negative value, else with the errno (EPERM → 1,
/// ENOSYS → 38 …). It links nothing and touches no memory besides its own strings, so it runs
/// in any rootfs, and a seccomp filter's errno reaches the exit code unchanged.
#[derive(Debug, Clone)]
pub struct SyscallProbe {
    pub nr: u32,
    pub args: Vec<Arg>,
}

/// Whether [`SyscallProbe`] programs run on this machine.
pub fn probes_supported() -> bool {
    cfg!(target_arch = "x86_64")
}

const LOAD_ADDRESS: u64 = 0x40_0000;
const ELF_HEADER: usize = 64;
const PROGRAM_HEADER: usize = 56;

impl SyscallProbe {
    pub fn new(nr: u32, args: &[Arg]) -> SyscallProbe {
        assert!(args.len() <= 6, "a system call has at most 6 arguments");
        SyscallProbe {
            nr,
            args: args.to_vec(),
        }
    }

    /// The program image.
    pub fn elf(&self) -> Vec<u8> {
        // Strings follow the code; the code's length does not depend on their addresses
        // (every argument is a 10-byte `mov r64, imm64`), so lay the code out once to size it.
        let code_len = self.code(&[]).len();
        let data_start = (ELF_HEADER + PROGRAM_HEADER + code_len) as u64;
        let mut data = Vec::new();
        let mut addresses = Vec::new();
        for arg in &self.args {
            if let Arg::Str(s) = arg {
                assert!(!s.contains('\0'), "probe strings are NUL-terminated");
                addresses.push(LOAD_ADDRESS + data_start + data.len() as u64);
                data.extend_from_slice(s.as_bytes());
                data.push(0);
            }
        }
        let code = self.code(&addresses);
        assert_eq!(code.len(), code_len);
        let total = ELF_HEADER + PROGRAM_HEADER + code.len() + data.len();
        let entry = LOAD_ADDRESS + (ELF_HEADER + PROGRAM_HEADER) as u64;

        let mut image = Vec::with_capacity(total);
        // ELF header: 64-bit, little endian, version 1, System V ABI.
        image.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
        image.extend_from_slice(&[0; 8]);
        image.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        image.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
        image.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
        image.extend_from_slice(&entry.to_le_bytes());
        image.extend_from_slice(&(ELF_HEADER as u64).to_le_bytes()); // e_phoff
        image.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        image.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        image.extend_from_slice(&(ELF_HEADER as u16).to_le_bytes());
        image.extend_from_slice(&(PROGRAM_HEADER as u16).to_le_bytes());
        image.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
        image.extend_from_slice(&[0; 6]); // no section headers
        // One PT_LOAD segment, read + execute, mapping the whole file.
        image.extend_from_slice(&1u32.to_le_bytes());
        image.extend_from_slice(&5u32.to_le_bytes());
        image.extend_from_slice(&0u64.to_le_bytes());
        image.extend_from_slice(&LOAD_ADDRESS.to_le_bytes());
        image.extend_from_slice(&LOAD_ADDRESS.to_le_bytes());
        image.extend_from_slice(&(total as u64).to_le_bytes());
        image.extend_from_slice(&(total as u64).to_le_bytes());
        image.extend_from_slice(&0x1000u64.to_le_bytes());
        image.extend_from_slice(&code);
        image.extend_from_slice(&data);
        assert_eq!(image.len(), total);
        image
    }

    /// Machine code; `addresses` are those of the string arguments, in order (zeros while
    /// sizing).
    fn code(&self, addresses: &[u64]) -> Vec<u8> {
        // mov r64, imm64 for rdi, rsi, rdx, r10, r8, r9 (the syscall argument registers).
        const MOV: [[u8; 2]; 6] = [
            [0x48, 0xbf],
            [0x48, 0xbe],
            [0x48, 0xba],
            [0x49, 0xba],
            [0x49, 0xb8],
            [0x49, 0xb9],
        ];
        let mut code = Vec::new();
        let mut strings = addresses.iter();
        for (arg, mov) in self.args.iter().zip(MOV) {
            let value = match arg {
                Arg::Int(v) => *v as u64,
                Arg::Str(_) => strings.next().copied().unwrap_or(0),
            };
            code.extend_from_slice(&mov);
            code.extend_from_slice(&value.to_le_bytes());
        }
        code.extend_from_slice(&[0x48, 0xb8]); // mov rax, nr
        code.extend_from_slice(&u64::from(self.nr).to_le_bytes());
        code.extend_from_slice(&[
            0x0f, 0x05, // syscall
            0x48, 0x85, 0xc0, // test rax, rax
            0x78, 0x04, // js negative
            0x31, 0xff, // xor edi, edi
            0xeb, 0x06, // jmp exit
            0x48, 0xf7, 0xd8, // negative: neg rax
            0x48, 0x89, 0xc7, // mov rdi, rax
            0xb8, 0xe7, 0x00, 0x00, 0x00, // exit: mov eax, 231 (exit_group)
            0x0f, 0x05, // syscall
        ]);
        code
    }

    /// Writes the program to `path`, mode 0755.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.elf())
            .unwrap_or_else(|e| panic!("write probe {}: {e}", path.display()));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod probe {}: {e}", path.display()));
    }
}

/// Copies the busybox rootfs tarball `from` to `to` with the top-level entry `name` (and
/// everything below it) replaced by a symlink to `target`, or added when the image has none.
pub fn busybox_with_symlink(from: &Path, to: &Path, name: &str, target: &str) -> io::Result<()> {
    assert!(!name.contains('/'), "top-level names only: {name}");
    assert!(
        target.len() < 100,
        "symlink target too long for a ustar header"
    );
    let mut archive = tar::Archive::new(std::fs::File::open(from)?);
    let mut builder = tar::Builder::new(std::fs::File::create(to)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let top = path
            .components()
            .find(|c| !matches!(c, std::path::Component::CurDir))
            .map(|c| c.as_os_str().to_os_string());
        if top.as_deref() == Some(std::ffi::OsStr::new(name)) {
            continue;
        }
        let header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        builder.append(&header, &data[..])?;
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_path(name)?;
    header.set_link_name_literal(target)?;
    header.set_mode(0o777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(946_684_800);
    header.set_size(0);
    header.set_cksum();
    builder.append(&header, io::empty())?;
    builder.into_inner()?.sync_all()
}

/// Runs `cmd` with `fd` duplicated (without close-on-exec) to descriptor `target` in the child
/// only, stdin /dev/null, output collected; kills it and panics after `timeout`.
pub fn output_with_inherited_fd(
    mut cmd: Command,
    fd: &OwnedFd,
    target: i32,
    timeout: Duration,
) -> Output {
    let raw = fd.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; it runs in the child between fork and exec. The
    // duplicate does not carry FD_CLOEXEC, so the program sees it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, target) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    crate::output_within(cmd, timeout)
}

/// A block device of the host, for the device allow-list scenario.
#[derive(Debug, Clone)]
pub struct BlockDevice {
    pub name: String,
    pub major: u64,
    pub minor: u64,
    /// Whether it holds the host's root filesystem.
    pub is_root_disk: bool,
}

/// The host's block devices that the test process itself can open for reading (the only ones
/// whose reachability from a container can be proven): the one holding `/` first, then whole
/// disks, then partitions, loop devices last. Devices this host refuses even to its root (a
/// sandbox, an LSM) are left out: a container's refusal of them would prove nothing.
pub fn readable_block_devices() -> Vec<BlockDevice> {
    let root_dev = std::fs::metadata("/")
        .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
        .ok();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/dev/block") else {
        return found;
    };
    for entry in entries.flatten() {
        let numbers = entry.file_name().to_string_lossy().into_owned();
        let Some((major, minor)) = numbers.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u64>(), minor.parse::<u64>()) else {
            continue;
        };
        let uevent = std::fs::read_to_string(entry.path().join("uevent")).unwrap_or_default();
        let Some(name) = status_field_eq(&uevent, "DEVNAME") else {
            continue;
        };
        let node = PathBuf::from("/dev").join(&name);
        let same = std::fs::metadata(&node).is_ok_and(|m| {
            let rdev = std::os::unix::fs::MetadataExt::rdev(&m);
            libc::major(rdev) as u64 == major && libc::minor(rdev) as u64 == minor
        });
        if !same || std::fs::File::open(&node).is_err() {
            continue;
        }
        let dev = libc::makedev(major as u32, minor as u32);
        found.push(BlockDevice {
            is_root_disk: root_dev == Some(dev),
            name,
            major,
            minor,
        });
    }
    let rank = |d: &BlockDevice| (!d.is_root_disk, d.name.starts_with("loop"), d.name.clone());
    found.sort_by_key(rank);
    found
}

fn status_field_eq(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k == key).then(|| v.trim().to_string())
    })
}

/// Ids (directory names) below `carton/` in every cgroup hierarchy of the host.
pub fn carton_cgroup_ids() -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for root in crate::cgroup::roots() {
        if let Ok(entries) = std::fs::read_dir(root.join("carton")) {
            ids.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    ids
}

/// Names in the host's `/`, without the sentinels other suites create there while they run.
pub fn host_root_names() -> BTreeSet<OsString> {
    std::fs::read_dir("/")
        .expect("list /")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().starts_with("carton-conf-sentinel"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_mask() {
        assert_eq!(
            capability_mask(&DOCKER_DEFAULT_CAPABILITIES),
            DOCKER_DEFAULT_MASK
        );
        assert_eq!(capability_bit("cap_sys_admin"), Some(21));
        assert_eq!(capability_bit("NET_RAW"), Some(13));
        assert_eq!(capability_bit("bogus"), None);
        assert_eq!(capability_names(1 << 21 | 1), ["CHOWN", "SYS_ADMIN"]);
    }

    #[test]
    fn cap_sets_from_status() {
        let status = "Name:\tsh\nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\n\
                      CapEff:\t00000000a80425fb\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n\
                      Seccomp:\t2\n";
        let sets = CapSets::parse(status).unwrap();
        assert_eq!(sets.permitted, DOCKER_DEFAULT_MASK);
        assert_eq!(sets.bounding, 0x1ff_ffff_ffff);
        assert_eq!(sets.inheritable, 0);
        assert_eq!(status_field(status, "Seccomp").as_deref(), Some("2"));
    }

    #[test]
    fn probe_image_is_a_static_elf_with_its_strings() {
        let probe = SyscallProbe::new(248, &[Arg::Str("user"), Arg::Int(-2)]);
        let image = probe.elf();
        assert_eq!(&image[..4], b"\x7fELF");
        assert!(image.ends_with(b"user\0"));
        let entry = u64::from_le_bytes(image[24..32].try_into().unwrap());
        assert_eq!(entry, LOAD_ADDRESS + 120);
        // The string's address is the immediate of the first mov.
        let addr = u64::from_le_bytes(image[122..130].try_into().unwrap());
        assert_eq!(addr - LOAD_ADDRESS, (image.len() - 5) as u64);
    }

    /// The probe really runs and reports errno: getpid succeeds, close(-1) is EBADF.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn probe_runs_on_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("getpid");
        SyscallProbe::new(39, &[]).write(&ok);
        assert_eq!(Command::new(&ok).status().unwrap().code(), Some(0));
        let bad = dir.path().join("close");
        SyscallProbe::new(3, &[Arg::Int(-1)]).write(&bad);
        assert_eq!(
            Command::new(&bad).status().unwrap().code(),
            Some(libc::EBADF)
        );
        let open = dir.path().join("open");
        SyscallProbe::new(
            257,
            &[
                Arg::Int(-100),
                Arg::Str("/nonexistent-carton-probe"),
                Arg::Int(0),
            ],
        )
        .write(&open);
        assert_eq!(
            Command::new(&open).status().unwrap().code(),
            Some(libc::ENOENT)
        );
    }
}
