//! A seccomp filter compiler: syscall rules (number, argument conditions, action) to classic
//! BPF, as the kernel runs it on every system call.
//!
//! Layout: check the architecture (anything but x86_64 gets the default action), refuse the
//! x32 ABI, then one block per rule in order — `if nr == N { conditions…; return action }` —
//! and the default action at the end. Each block is short, so the 8-bit jump offsets of
//! classic BPF always reach past it; a block with conditions reloads the syscall number at its
//! end, since the checks overwrite the accumulator. The first matching rule wins.

use super::SeccompError;

// struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Classic BPF opcodes.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_JMP_JGT_K: u16 = 0x25;
const BPF_JMP_JA: u16 = 0x05;
const BPF_ALU_AND_K: u16 = 0x54;
const BPF_RET_K: u16 = 0x06;

/// The kernel's limit on a filter's length.
const MAX_INSTRUCTIONS: usize = 4096;

/// What happens to a matching syscall (the kernel's SECCOMP_RET_* values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Errno(u16),
    KillThread,
    KillProcess,
    Trap,
    Trace(u16),
    Log,
}

impl Action {
    pub fn ret(self) -> u32 {
        match self {
            Action::Allow => 0x7fff_0000,
            Action::Errno(e) => 0x0005_0000 | u32::from(e),
            Action::KillThread => 0x0000_0000,
            Action::KillProcess => 0x8000_0000,
            Action::Trap => 0x0003_0000,
            Action::Trace(v) => 0x7ff0_0000 | u32::from(v),
            Action::Log => 0x7ffc_0000,
        }
    }
}

/// A comparison of one 64-bit syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Eq(u64),
    Ne(u64),
    Lt(u64),
    Le(u64),
    Gt(u64),
    Ge(u64),
    /// (argument & mask) == value
    MaskedEq {
        mask: u64,
        value: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition {
    /// Argument index, 0–5.
    pub arg: u8,
    pub compare: Compare,
}

/// `if nr == syscall && all(conditions) { action }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub syscall: u32,
    pub conditions: Vec<Condition>,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub default: Action,
    pub rules: Vec<Rule>,
}

/// One classic BPF instruction (struct sock_filter).
pub type Instruction = libc::sock_filter;

fn stmt(code: u16, k: u32) -> Instruction {
    Instruction {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Instruction {
    Instruction { code, jt, jf, k }
}

/// Compiles the filter; refuses programs the kernel would not load.
pub fn compile(filter: &Filter) -> Result<Vec<Instruction>, SeccompError> {
    let default = filter.default.ret();
    let mut program = vec![
        stmt(BPF_LD_W_ABS, OFFSET_ARCH),
        jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, default),
        stmt(BPF_LD_W_ABS, OFFSET_NR),
        jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, default),
    ];
    for rule in &filter.rules {
        let block = rule_block(rule)?;
        let skip = u8::try_from(block.len())
            .map_err(|_| SeccompError::TooComplex(format!("rule for syscall {}", rule.syscall)))?;
        program.push(jump(BPF_JMP_JEQ_K, rule.syscall, 0, skip));
        program.extend(block);
    }
    program.push(stmt(BPF_RET_K, default));
    if program.len() > MAX_INSTRUCTIONS {
        return Err(SeccompError::TooComplex(format!(
            "{} BPF instructions, the kernel takes at most {MAX_INSTRUCTIONS}",
            program.len()
        )));
    }
    Ok(program)
}

/// The instructions after the syscall-number match: the condition checks, the return, and —
/// when conditions clobbered the accumulator — a reload of the number where failed checks land.
fn rule_block(rule: &Rule) -> Result<Vec<Instruction>, SeccompError> {
    if rule.conditions.is_empty() {
        return Ok(vec![stmt(BPF_RET_K, rule.action.ret())]);
    }
    // Each check is built with "fail" jumps marked by FAIL and patched once the block's length
    // is known (they go to the reload at its end).
    const FAIL: u8 = u8::MAX;
    let mut block: Vec<Instruction> = Vec::new();
    for condition in &rule.conditions {
        if condition.arg > 5 {
            return Err(SeccompError::Invalid(format!(
                "argument index {} (a syscall has 6)",
                condition.arg
            )));
        }
        block.extend(check(condition, FAIL));
    }
    block.push(stmt(BPF_RET_K, rule.action.ret()));
    let reload_at = block.len(); // index of the reload instruction
    for (i, ins) in block.iter_mut().enumerate() {
        let to_reload = u8::try_from(reload_at - i - 1).map_err(|_| {
            SeccompError::TooComplex(format!("conditions of syscall {}", rule.syscall))
        })?;
        if ins.code != BPF_RET_K && ins.code != BPF_LD_W_ABS && ins.code != BPF_ALU_AND_K {
            if ins.jt == FAIL {
                ins.jt = to_reload;
            }
            if ins.jf == FAIL {
                ins.jf = to_reload;
            }
            if ins.code == BPF_JMP_JA && ins.k == u32::from(FAIL) {
                ins.k = u32::from(to_reload);
            }
        }
    }
    block.push(stmt(BPF_LD_W_ABS, OFFSET_NR));
    Ok(block)
}

/// Instructions that fall through when `condition` holds and jump to `fail` (a marker) when it
/// does not. 64-bit values are compared as high word, then low word.
fn check(condition: &Condition, fail: u8) -> Vec<Instruction> {
    let lo_offset = OFFSET_ARGS + 8 * u32::from(condition.arg);
    let hi_offset = lo_offset + 4;
    let split = |v: u64| ((v >> 32) as u32, v as u32);
    let load_hi = stmt(BPF_LD_W_ABS, hi_offset);
    let load_lo = stmt(BPF_LD_W_ABS, lo_offset);
    match condition.compare {
        Compare::Eq(v) => {
            let (hi, lo) = split(v);
            vec![
                load_hi,
                jump(BPF_JMP_JEQ_K, hi, 0, fail),
                load_lo,
                jump(BPF_JMP_JEQ_K, lo, 0, fail),
            ]
        }
        Compare::Ne(v) => {
            // Holds unless both words are equal: a differing high word passes at once.
            let (hi, lo) = split(v);
            vec![
                load_hi,
                jump(BPF_JMP_JEQ_K, hi, 0, 2),
                load_lo,
                jump(BPF_JMP_JEQ_K, lo, fail, 0),
            ]
        }
        Compare::MaskedEq { mask, value } => {
            let (mhi, mlo) = split(mask);
            let (vhi, vlo) = split(value & mask);
            vec![
                load_hi,
                stmt(BPF_ALU_AND_K, mhi),
                jump(BPF_JMP_JEQ_K, vhi, 0, fail),
                load_lo,
                stmt(BPF_ALU_AND_K, mlo),
                jump(BPF_JMP_JEQ_K, vlo, 0, fail),
            ]
        }
        Compare::Gt(v) | Compare::Ge(v) | Compare::Lt(v) | Compare::Le(v) => {
            let (hi, lo) = split(v);
            // High word decides unless equal; then the low word with the operator's own test.
            // "greater" forms: hi > H passes, hi < H fails. "less" forms: the reverse.
            let greater = matches!(condition.compare, Compare::Gt(_) | Compare::Ge(_));
            let low_test = match condition.compare {
                Compare::Gt(_) => jump(BPF_JMP_JGT_K, lo, 0, fail),
                Compare::Ge(_) => jump(BPF_JMP_JGE_K, lo, 0, fail),
                // lo < L  ⇔  !(lo >= L);  lo <= L  ⇔  !(lo > L)
                Compare::Lt(_) => jump(BPF_JMP_JGE_K, lo, fail, 0),
                _ => jump(BPF_JMP_JGT_K, lo, fail, 0),
            };
            let high = if greater {
                // hi > H → pass (skip 3: the eq test, the low load and test);
                // hi == H → low test; else fail.
                vec![
                    load_hi,
                    jump(BPF_JMP_JGT_K, hi, 3, 0),
                    jump(BPF_JMP_JEQ_K, hi, 0, fail),
                ]
            } else {
                // hi > H → fail; hi == H → low test; hi < H → pass (skip the low load and test).
                vec![
                    load_hi,
                    jump(BPF_JMP_JGT_K, hi, fail, 0),
                    jump(BPF_JMP_JEQ_K, hi, 0, 2),
                ]
            };
            let mut out = high;
            out.push(load_lo);
            out.push(low_test);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter of the instructions `compile` emits, to test filters without
    /// installing them.
    fn run(program: &[Instruction], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |offset: u32| -> u32 {
            match offset {
                OFFSET_NR => nr,
                OFFSET_ARCH => arch,
                o if o >= OFFSET_ARGS => {
                    let i = ((o - OFFSET_ARGS) / 8) as usize;
                    if (o - OFFSET_ARGS) % 8 == 0 {
                        args[i] as u32
                    } else {
                        (args[i] >> 32) as u32
                    }
                }
                _ => panic!("load of offset {offset}"),
            }
        };
        let mut a: u32 = 0;
        let mut pc = 0usize;
        loop {
            let ins = program[pc];
            pc += 1;
            match ins.code {
                BPF_LD_W_ABS => a = word(ins.k),
                BPF_ALU_AND_K => a &= ins.k,
                BPF_RET_K => return ins.k,
                BPF_JMP_JA => pc += ins.k as usize,
                BPF_JMP_JEQ_K | BPF_JMP_JGT_K | BPF_JMP_JGE_K => {
                    let taken = match ins.code {
                        BPF_JMP_JEQ_K => a == ins.k,
                        BPF_JMP_JGT_K => a > ins.k,
                        _ => a >= ins.k,
                    };
                    pc += if taken { ins.jt } else { ins.jf } as usize;
                }
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn filter(rules: Vec<Rule>) -> Vec<Instruction> {
        compile(&Filter {
            default: Action::Errno(1),
            rules,
        })
        .unwrap()
    }

    const EPERM: u32 = 0x0005_0001;
    const ALLOW: u32 = 0x7fff_0000;

    #[test]
    fn allow_list_with_default_errno() {
        let p = filter(vec![Rule {
            syscall: 0,
            conditions: vec![],
            action: Action::Allow,
        }]);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 0, [0; 6]), ALLOW);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 1, [0; 6]), EPERM);
        // Another architecture and the x32 ABI get the default action.
        assert_eq!(run(&p, 0x4000_0003, 0, [0; 6]), EPERM);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, [0; 6]), EPERM);
    }

    #[test]
    fn conditions_on_64_bit_arguments() {
        let cases: Vec<(Compare, Vec<(u64, bool)>)> = vec![
            (
                Compare::Eq(0xffff_ffff),
                vec![(0xffff_ffff, true), (0x1_ffff_ffff, false), (0, false)],
            ),
            (
                Compare::Ne(40),
                vec![(40, false), (41, true), (40 | 1 << 32, true)],
            ),
            (
                Compare::MaskedEq {
                    mask: 0x7e02_0000,
                    value: 0,
                },
                vec![
                    (0, true),
                    (0x0001_0000, true),
                    (0x1000_0000, false),
                    (0x0002_0000, false),
                ],
            ),
            (
                Compare::Gt(5),
                vec![(5, false), (6, true), (1 << 32, true), (0, false)],
            ),
            (Compare::Ge(5), vec![(5, true), (4, false), (1 << 40, true)]),
            (
                Compare::Lt(5),
                vec![(4, true), (5, false), (1 << 32, false)],
            ),
            (
                Compare::Le(5),
                vec![(5, true), (6, false), (0, true), (1 << 33, false)],
            ),
            (
                Compare::Gt(1 << 32),
                vec![
                    (1 << 32, false),
                    ((1 << 32) + 1, true),
                    (2 << 32, true),
                    (5, false),
                ],
            ),
        ];
        for (compare, samples) in cases {
            let p = filter(vec![Rule {
                syscall: 135,
                conditions: vec![Condition { arg: 2, compare }],
                action: Action::Allow,
            }]);
            for (value, allowed) in samples {
                let mut args = [0u64; 6];
                args[2] = value;
                let got = run(&p, AUDIT_ARCH_X86_64, 135, args);
                assert_eq!(got == ALLOW, allowed, "{compare:?} with {value:#x}");
            }
        }
    }

    #[test]
    fn first_matching_rule_wins_and_failed_conditions_fall_through() {
        let p = filter(vec![
            Rule {
                syscall: 135,
                conditions: vec![Condition {
                    arg: 0,
                    compare: Compare::Eq(8),
                }],
                action: Action::Allow,
            },
            Rule {
                syscall: 135,
                conditions: vec![Condition {
                    arg: 0,
                    compare: Compare::Eq(0),
                }],
                action: Action::Allow,
            },
            Rule {
                syscall: 1,
                conditions: vec![],
                action: Action::Errno(38),
            },
        ]);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 135, [8, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 135, [0, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 135, [3, 0, 0, 0, 0, 0]), EPERM);
        // After a failed condition the next rule sees the syscall number again.
        assert_eq!(
            run(&p, AUDIT_ARCH_X86_64, 1, [3, 0, 0, 0, 0, 0]),
            0x0005_0026
        );
    }

    #[test]
    fn bad_argument_index_is_refused() {
        let err = compile(&Filter {
            default: Action::Allow,
            rules: vec![Rule {
                syscall: 1,
                conditions: vec![Condition {
                    arg: 6,
                    compare: Compare::Eq(0),
                }],
                action: Action::Allow,
            }],
        });
        assert!(err.is_err());
    }
}
