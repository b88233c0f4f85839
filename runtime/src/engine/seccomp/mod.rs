//! seccomp: the OCI `linux.seccomp` section compiled to a BPF filter by carton's own compiler
//! ([`bpf`]) and installed as the last privileged step before exec.

pub mod bpf;
mod syscalls;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use bpf::{Action, Compare, Condition, Filter, Instruction, Rule};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("invalid seccomp profile: {0}")]
    Invalid(String),
    #[error("seccomp profile too complex: {0}")]
    TooComplex(String),
    #[error("seccomp action {0} is not supported")]
    Unsupported(String),
}

/// A compiled filter and the flags to install it with.
#[derive(Debug, Clone)]
pub struct Program {
    pub instructions: Vec<Instruction>,
    pub flags: libc::c_ulong,
}

/// Compiles an OCI seccomp section. Syscall names this architecture does not have are
/// skipped (profiles list syscalls of every architecture), as libseccomp does.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Program, SeccompError> {
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut rules = Vec::new();
    for syscall in seccomp.syscalls().iter().flatten() {
        let action = action(syscall.action(), syscall.errno_ret())?;
        let conditions = syscall
            .args()
            .iter()
            .flatten()
            .map(|arg| {
                let value = arg.value();
                let compare = match arg.op() {
                    LinuxSeccompOperator::ScmpCmpEq => Compare::Eq(value),
                    LinuxSeccompOperator::ScmpCmpNe => Compare::Ne(value),
                    LinuxSeccompOperator::ScmpCmpLt => Compare::Lt(value),
                    LinuxSeccompOperator::ScmpCmpLe => Compare::Le(value),
                    LinuxSeccompOperator::ScmpCmpGt => Compare::Gt(value),
                    LinuxSeccompOperator::ScmpCmpGe => Compare::Ge(value),
                    LinuxSeccompOperator::ScmpCmpMaskedEq => Compare::MaskedEq {
                        mask: value,
                        value: arg.value_two().unwrap_or(0),
                    },
                };
                let arg = u8::try_from(arg.index()).map_err(|_| {
                    SeccompError::Invalid(format!("argument index {}", arg.index()))
                })?;
                Ok(Condition { arg, compare })
            })
            .collect::<Result<Vec<_>, SeccompError>>()?;
        for name in syscall.names() {
            let Some(nr) = syscalls::number(name) else {
                continue;
            };
            rules.push(Rule {
                syscall: nr as u32,
                conditions: conditions.clone(),
                action,
            });
        }
    }
    let instructions = bpf::compile(&Filter { default, rules })?;
    let mut flags = 0;
    for flag in seccomp.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // One thread at exec time: synchronising threads is moot.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 0,
            other => return Err(SeccompError::Unsupported(format!("flag {other:?}"))),
        };
    }
    Ok(Program {
        instructions,
        flags,
    })
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<Action, SeccompError> {
    let errno = u16::try_from(errno.unwrap_or(libc::EPERM as u32))
        .map_err(|_| SeccompError::Invalid("errnoRet out of range".into()))?;
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => Action::Allow,
        LinuxSeccompAction::ScmpActErrno => Action::Errno(errno),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            Action::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => Action::KillProcess,
        LinuxSeccompAction::ScmpActTrap => Action::Trap,
        LinuxSeccompAction::ScmpActTrace => Action::Trace(errno),
        LinuxSeccompAction::ScmpActLog => Action::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Unsupported("SCMP_ACT_NOTIFY".into()));
        }
    })
}

/// Installs the filter on the calling thread. Needs no_new_privs or CAP_SYS_ADMIN.
pub fn install(program: &Program) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: program.instructions.len() as u16,
        filter: program.instructions.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: seccomp(2) reads `len` instructions from the live vector.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            program.flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_profile_compiles_and_unknown_names_are_skipped() {
        let seccomp: LinuxSeccomp = serde_json::from_str(
            r#"{
                "defaultAction": "SCMP_ACT_ERRNO",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [
                    {"names": ["read", "write", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                    {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}
                ]
            }"#,
        )
        .unwrap();
        let program = compile(&seccomp).unwrap();
        assert!(program.instructions.len() > 10);
        let notify: LinuxSeccomp =
            serde_json::from_str(r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#).unwrap();
        assert!(compile(&notify).is_err());
    }
}
