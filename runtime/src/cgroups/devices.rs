//! The device allow-list of a container: which device nodes its processes may create (mknod)
//! and open for reading or writing. cgroup v1 has a `devices` controller for it; cgroup v2 has
//! none, so there the list becomes a small eBPF program attached to the container's cgroup —
//! generated here, instruction by instruction.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::CgroupError;

/// One rule, in the OCI `linux.resources.devices` sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    /// 'c', 'b', or `None` for every type ('a').
    pub kind: Option<char>,
    /// `None` = any.
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// Some of "rwm".
    pub access: String,
}

impl DeviceRule {
    /// Reads OCI `linux.resources.devices`.
    pub fn from_oci(rules: &[oci_spec::runtime::LinuxDeviceCgroup]) -> Vec<DeviceRule> {
        use oci_spec::runtime::LinuxDeviceType;
        rules
            .iter()
            .map(|r| DeviceRule {
                allow: r.allow(),
                kind: match r.typ() {
                    Some(LinuxDeviceType::B) => Some('b'),
                    Some(LinuxDeviceType::C | LinuxDeviceType::U) => Some('c'),
                    Some(LinuxDeviceType::P) => Some('p'),
                    Some(LinuxDeviceType::A) | None => None,
                },
                major: r
                    .major()
                    .map(|m| m as u32)
                    .filter(|_| r.major() != Some(-1)),
                minor: r
                    .minor()
                    .map(|m| m as u32)
                    .filter(|_| r.minor() != Some(-1)),
                access: r.access().clone().unwrap_or_else(|| "rwm".to_string()),
            })
            .collect()
    }

    /// As OCI JSON (for config.json).
    pub fn to_oci_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"allow": self.allow, "access": self.access});
        v["type"] = serde_json::json!(self.kind.unwrap_or('a').to_string());
        if let Some(major) = self.major {
            v["major"] = serde_json::json!(major);
        }
        if let Some(minor) = self.minor {
            v["minor"] = serde_json::json!(minor);
        }
        v
    }

    /// The line v1's devices.allow / devices.deny take: `c 1:3 rwm`, `a *:* rwm`.
    pub fn v1_line(&self) -> String {
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |v| v.to_string());
        format!(
            "{} {}:{} {}",
            self.kind.unwrap_or('a'),
            num(self.major),
            num(self.minor),
            self.access
        )
    }
}

/// v1: deny everything, then allow the list (the order the kernel needs: an allow-list over a
/// cgroup that starts with "a *:* rwm" from its parent).
pub fn apply_v1(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    use std::io::Write;
    // One rule per write(2), as the controller parses them, but each file opened once: a
    // container's list is a dozen rules or more, on the start path of every `run`.
    let (mut allow, mut deny): (Option<std::fs::File>, Option<std::fs::File>) = (None, None);
    for rule in rules {
        let (name, slot) = if rule.allow {
            ("devices.allow", &mut allow)
        } else {
            ("devices.deny", &mut deny)
        };
        let path = dir.join(name);
        let line = rule.v1_line();
        let write_error = |source| CgroupError::Write {
            path: path.clone(),
            value: line.clone(),
            source,
        };
        let file = match slot {
            Some(file) => file,
            None => slot.insert(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(write_error)?,
            ),
        };
        file.write_all(line.as_bytes()).map_err(write_error)?;
    }
    Ok(())
}

/// An eBPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const LDX_MEM_W: u8 = 0x61;
const MOV64_IMM: u8 = 0xb7;
const MOV32_REG: u8 = 0xbc;
const AND32_IMM: u8 = 0x54;
const RSH32_IMM: u8 = 0x74;
const JNE_IMM: u8 = 0x55;
const EXIT: u8 = 0x95;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

// struct bpf_cgroup_dev_ctx { __u32 access_type; __u32 major; __u32 minor; }
// access_type: device type in the low 16 bits, requested access in the high 16.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |bits, c| {
        bits | match c {
            'm' => ACC_MKNOD,
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            _ => 0,
        }
    })
}

/// The program: registers r2 = type, r3 = requested access, r4 = major, r5 = minor; each rule
/// in turn returns its verdict when all its fields match; no match denies. Rules are checked
/// last to first, so that a later rule wins, as with v1's files.
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),      // r2 = ctx->access_type
        insn(MOV32_REG, 3, 2, 0, 0),      // w3 = w2
        insn(RSH32_IMM, 3, 0, 0, 16),     // w3 >>= 16: access
        insn(AND32_IMM, 2, 0, 0, 0xffff), // w2 &= 0xffff: type
        insn(LDX_MEM_W, 4, 1, 4, 0),      // r4 = ctx->major
        insn(LDX_MEM_W, 5, 1, 8, 0),      // r5 = ctx->minor
    ];
    for rule in rules.iter().rev() {
        let mut checks: Vec<(Insn, bool)> = Vec::new(); // (instruction, is a "next rule" jump)
        if let Some(kind) = rule.kind {
            let t = if kind == 'b' { DEV_BLOCK } else { DEV_CHAR };
            checks.push((insn(JNE_IMM, 2, 0, 0, t), true));
        }
        let wanted = access_bits(&rule.access);
        if wanted != ACC_MKNOD | ACC_READ | ACC_WRITE {
            // Requested access must lie within the rule's: (access & ~wanted) == 0.
            checks.push((insn(MOV32_REG, 6, 3, 0, 0), false));
            checks.push((insn(AND32_IMM, 6, 0, 0, !wanted & 0x7), false));
            checks.push((insn(JNE_IMM, 6, 0, 0, 0), true));
        }
        if let Some(major) = rule.major {
            checks.push((insn(JNE_IMM, 4, 0, 0, major as i32), true));
        }
        if let Some(minor) = rule.minor {
            checks.push((insn(JNE_IMM, 5, 0, 0, minor as i32), true));
        }
        if checks.is_empty() {
            // A rule matching every access decides everything not decided before it: the
            // rules after it (earlier in the list) could never run, and the verifier refuses
            // unreachable instructions.
            p.push(insn(MOV64_IMM, 0, 0, 0, i32::from(rule.allow)));
            p.push(insn(EXIT, 0, 0, 0, 0));
            return p;
        }
        // After the checks: r0 = verdict; exit. A failed check jumps past those two.
        let len = checks.len();
        for (i, (mut ins, is_jump)) in checks.into_iter().enumerate() {
            if is_jump {
                ins.off = (len - i - 1 + 2) as i16;
            }
            p.push(ins);
        }
        p.push(insn(MOV64_IMM, 0, 0, 0, i32::from(rule.allow)));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(MOV64_IMM, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The parts of `union bpf_attr` used for BPF_PROG_LOAD.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    _rest: [u64; 12],
}

/// The parts of `union bpf_attr` used for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    _rest: [u64; 14],
}

/// v2: loads the program for `rules` and attaches it to the cgroup directory `dir`. The
/// program lives as long as the cgroup.
pub fn attach_v2(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    let err = |what: &str, source: io::Error| CgroupError::Write {
        path: dir.to_path_buf(),
        value: what.to_string(),
        source,
    };
    let prog = load_program(rules).map_err(|(source, verifier)| {
        err(
            &format!("the device eBPF program (load; verifier: {verifier})"),
            source,
        )
    })?;
    attach_program(dir, &prog).map_err(|(what, source)| err(what, source))
}

/// Loads the device program for `rules`; on failure, the error and the verifier's last line.
fn load_program(rules: &[DeviceRule]) -> Result<OwnedFd, (io::Error, String)> {
    let insns = program(rules);
    // Without a log first: a verbose log that outgrows its buffer fails the load with ENOSPC
    // on newer kernels. Only a refused program is loaded again, with a log, to say why.
    let first = match bpf_prog_load(&insns, None) {
        // Before Linux 5.11 a program's memory is charged to its user's RLIMIT_MEMLOCK, which
        // every container's program (all loaded by root) draws on: with a few dozen
        // containers the load fails with EPERM. Lift the limit for this one load, as runc
        // does, then put it back: the container's init must not inherit the raised limit.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            with_memlock_lifted(|| bpf_prog_load(&insns, None)).unwrap_or(Err(e))
        }
        other => other,
    };
    match first {
        Ok(fd) => Ok(fd),
        Err(source) => {
            let mut log = vec![0u8; 1 << 20];
            let _ = bpf_prog_load(&insns, Some(&mut log));
            let verifier = String::from_utf8_lossy(&log);
            let verifier = verifier.trim_end_matches('\0').trim();
            log::debug!("device program refused: {verifier}");
            let last = verifier.lines().last().unwrap_or("no log").to_string();
            Err((source, last))
        }
    }
}

/// Runs `f` with RLIMIT_MEMLOCK raised to unlimited, then restores it; `None` when it cannot
/// be raised (no CAP_SYS_RESOURCE).
fn with_memlock_lifted<T>(f: impl FnOnce() -> T) -> Option<T> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with valid pointers.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut old) != 0 {
            return None;
        }
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) != 0 {
            return None;
        }
        let result = f();
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &old);
        Some(result)
    }
}

fn bpf_prog_load(insns: &[Insn], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        ..ProgLoadAttr::default()
    };
    // SAFETY: bpf(2) reads the attribute struct and the instruction array, writes the log.
    let prog = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &load as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if prog < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd from bpf(2).
    Ok(unsafe { OwnedFd::from_raw_fd(prog as i32) })
}

/// Attaches a loaded program to the cgroup directory `dir`; on failure, what failed.
fn attach_program(dir: &Path, prog: &OwnedFd) -> Result<(), (&'static str, io::Error)> {
    let path = CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
        (
            "the device eBPF program",
            io::Error::from_raw_os_error(libc::EINVAL),
        )
    })?;
    // SAFETY: open with a NUL-terminated path.
    let cgroup = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if cgroup < 0 {
        return Err((
            "the device eBPF program (open cgroup)",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: fresh fd.
    let cgroup = unsafe { OwnedFd::from_raw_fd(cgroup) };
    let attach = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        // Programs of ancestors (systemd's) keep applying too.
        attach_flags: BPF_F_ALLOW_MULTI,
        ..ProgAttachAttr::default()
    };
    // SAFETY: bpf(2) reads the attribute struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attach as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if rc != 0 {
        return Err((
            "the device eBPF program (attach)",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// docker's default list, one step stricter: only the standard nodes may be opened, character
/// nodes may be created (images and init scripts make their own /dev entries), block nodes may
/// not (docker allows `b *:* m`; a disk node has no use in a container that cannot open it,
/// and refusing it keeps `mknod` of a disk failing, as carton's security scenarios ask).
pub fn default_rules() -> Vec<DeviceRule> {
    let rule =
        |allow: bool, kind: Option<char>, major: Option<u32>, minor: Option<u32>, access: &str| {
            DeviceRule {
                allow,
                kind,
                major,
                minor,
                access: access.to_string(),
            }
        };
    vec![
        rule(false, None, None, None, "rwm"),
        rule(true, Some('c'), None, None, "m"),
        rule(true, Some('c'), Some(1), Some(3), "rwm"), // null
        rule(true, Some('c'), Some(1), Some(5), "rwm"), // zero
        rule(true, Some('c'), Some(1), Some(7), "rwm"), // full
        rule(true, Some('c'), Some(1), Some(8), "rwm"), // random
        rule(true, Some('c'), Some(1), Some(9), "rwm"), // urandom
        rule(true, Some('c'), Some(5), Some(0), "rwm"), // tty
        rule(true, Some('c'), Some(5), Some(1), "rwm"), // console
        rule(true, Some('c'), Some(5), Some(2), "rwm"), // ptmx
        rule(true, Some('c'), Some(136), None, "rwm"),  // pts
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the generated program for one access, as the kernel would.
    fn verdict(p: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> u64 {
        let ctx = [(kind | access << 16) as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[(i.off / 4) as usize]),
                MOV64_IMM => r[dst] = i.imm as u64,
                MOV32_REG => r[dst] = r[src] & 0xffff_ffff,
                AND32_IMM => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                RSH32_IMM => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                JNE_IMM => {
                    if r[dst] != i.imm as u32 as u64 {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                EXIT => return r[0],
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn default_list_allows_the_standard_nodes_only() {
        let p = program(&default_rules());
        let rw = ACC_READ | ACC_WRITE;
        assert_eq!(verdict(&p, DEV_CHAR, rw, 1, 3), 1, "null");
        assert_eq!(verdict(&p, DEV_CHAR, ACC_READ, 136, 7), 1, "a pty");
        assert_eq!(verdict(&p, DEV_BLOCK, ACC_READ, 8, 0), 0, "a disk");
        assert_eq!(
            verdict(&p, DEV_BLOCK, ACC_MKNOD, 8, 0),
            0,
            "mknod of a disk is refused"
        );
        assert_eq!(
            verdict(&p, DEV_CHAR, ACC_MKNOD, 10, 200),
            1,
            "character nodes may be made"
        );
        assert_eq!(verdict(&p, DEV_BLOCK, ACC_MKNOD | ACC_READ, 8, 0), 0);
        assert_eq!(verdict(&p, DEV_CHAR, ACC_READ, 1, 1), 0, "/dev/mem");
    }

    /// The kernel's verifier has the last word (unreachable instructions, jump ranges): load
    /// the programs of a few rule lists for real. Needs root (CAP_BPF); skipped otherwise.
    #[test]
    fn kernel_verifier_accepts_the_programs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: loading a BPF program needs root");
            return;
        }
        let mut allow_all_last = default_rules();
        allow_all_last.push(DeviceRule {
            allow: true,
            kind: None,
            major: None,
            minor: None,
            access: "rwm".into(),
        });
        let lists = [
            default_rules(),
            allow_all_last,
            vec![],
            default_rules()[1..].to_vec(),
        ];
        for rules in &lists {
            if let Err((e, verifier)) = load_program(rules) {
                panic!("the kernel refused the program for {rules:?}: {e}: {verifier}");
            }
        }
    }

    #[test]
    fn memlock_is_restored_after_the_lifted_load() {
        let limit = || nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK);
        let before = limit().unwrap();
        let inside = with_memlock_lifted(limit);
        assert_eq!(limit().unwrap(), before, "the limit was not put back");
        if let Some(inside) = inside {
            assert_eq!(
                inside.unwrap().0,
                libc::RLIM_INFINITY,
                "the load did not run unlimited"
            );
        } else {
            eprintln!("NOTE: RLIMIT_MEMLOCK cannot be raised here (no CAP_SYS_RESOURCE)");
        }
    }

    #[test]
    fn a_catch_all_rule_ends_the_program() {
        // Everything after the deny-all that opens docker's list would be unreachable.
        let p = program(&default_rules());
        assert_eq!(p.last().unwrap().code, EXIT);
        assert_eq!(
            p.iter().filter(|i| i.code == EXIT).count(),
            default_rules().len(),
            "one exit per rule, none after the catch-all"
        );
    }

    #[test]
    fn v1_lines() {
        let rules = default_rules();
        assert_eq!(rules[0].v1_line(), "a *:* rwm");
        assert_eq!(rules[1].v1_line(), "c *:* m");
        assert_eq!(rules[2].v1_line(), "c 1:3 rwm");
        assert_eq!(rules[10].v1_line(), "c 136:* rwm");
    }

    #[test]
    fn later_rules_win() {
        let mut rules = default_rules();
        rules.push(DeviceRule {
            allow: true,
            kind: Some('b'),
            major: Some(8),
            minor: Some(0),
            access: "r".into(),
        });
        let p = program(&rules);
        assert_eq!(verdict(&p, DEV_BLOCK, ACC_READ, 8, 0), 1);
        assert_eq!(verdict(&p, DEV_BLOCK, ACC_WRITE, 8, 0), 0);
    }
}
