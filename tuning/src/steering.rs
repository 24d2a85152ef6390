//! Reuseport CPU steering: a classic-BPF program for `SO_ATTACH_REUSEPORT_CBPF` that hands each
//! new connection to the listener of the shard running on the CPU that received it.
//!
//! Owns: building the program and the one `setsockopt` that attaches it. With queue IRQs (or
//! RPS) pinned to the shard CPUs by the plan, a flow's packets, its socket and its shard then
//! share one core. Does not own: creating listeners. The caller must create each port's
//! listeners in shard order, so that reuseport group index `i` is shard `i`'s socket.
//!
//! The program, for shard CPUs `cpu[0..n]`:
//!
//! ```text
//!     ld  [SKF_AD_OFF + SKF_AD_CPU]   ; A = CPU processing the SYN
//!     jeq #cpu[0], 0, 1 ; ret #0      ; one pair per shard
//!     ...
//!     jeq #cpu[n-1], 0, 1 ; ret #n-1
//!     mod #n                          ; a CPU without a shard (control core, RPS elsewhere)
//!     ret a                           ;   gets shard cpu % n
//! ```
//!
//! Jumps are relative and never longer than one instruction, so the program has no 255-jump
//! limit; its only bound is `BPF_MAXINSNS` (see [`MAX_STEERED_SHARDS`]).

use std::os::fd::RawFd;

use crate::error::TuningError;

/// `SO_ATTACH_REUSEPORT_CBPF` from include/uapi/asm-generic/socket.h (51 on every
/// architecture shardgate targets: x86_64, aarch64).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Most shards one program can steer: `1 + 2n + 2` instructions must fit in `BPF_MAXINSNS`.
pub const MAX_STEERED_SHARDS: usize = (libc::BPF_MAXINSNS as usize - 3) / 2;

/// One classic-BPF instruction.
fn instruction(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        // Every opcode built here is a combination of 8-bit class/size/mode/op bits.
        code: (code & 0xffff) as u16,
        jt,
        jf,
        k,
    }
}

/// The steering program for shards on `shard_cpus` (in reuseport group order): a connection
/// received on `shard_cpus[i]` goes to group index `i`; one received on any other CPU goes to
/// index `cpu % n`. The first occurrence of a repeated CPU wins. An empty list gives a program
/// that always picks index 0. [`attach_reuseport_cpu_steering`] refuses empty, repeated or
/// over-long lists before building.
pub fn reuseport_cpu_program(shard_cpus: &[usize]) -> Vec<libc::sock_filter> {
    if shard_cpus.is_empty() {
        return vec![instruction(libc::BPF_RET | libc::BPF_K, 0, 0, 0)];
    }
    // SKF_AD_OFF is negative by design: the kernel reads "ancillary" data at that offset.
    let cpu_offset = (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32;
    let mut program = Vec::with_capacity(3 + 2 * shard_cpus.len());
    program.push(instruction(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        0,
        0,
        cpu_offset,
    ));
    for (index, &cpu) in shard_cpus.iter().enumerate() {
        // A CPU number or index beyond u32 cannot occur on Linux; such an entry could never
        // match, so it is left out rather than truncated into a wrong match.
        let (Ok(cpu), Ok(index)) = (u32::try_from(cpu), u32::try_from(index)) else {
            continue;
        };
        program.push(instruction(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            cpu,
        ));
        program.push(instruction(libc::BPF_RET | libc::BPF_K, 0, 0, index));
    }
    let shards = u32::try_from(shard_cpus.len()).unwrap_or(u32::MAX);
    program.push(instruction(
        libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K,
        0,
        0,
        shards,
    ));
    program.push(instruction(libc::BPF_RET | libc::BPF_A, 0, 0, 0));
    program
}

/// Attach the steering program for `shard_cpus` to the reuseport group of listener `fd`.
/// Once per port is enough (the program belongs to the group); call it after all of the
/// port's listeners are bound, in shard order.
pub fn attach_reuseport_cpu_steering(fd: RawFd, shard_cpus: &[usize]) -> Result<(), TuningError> {
    if shard_cpus.is_empty() {
        return Err(TuningError::NoShardCpus);
    }
    if shard_cpus.len() > MAX_STEERED_SHARDS {
        return Err(TuningError::TooManyShards(shard_cpus.len()));
    }
    for (index, cpu) in shard_cpus.iter().enumerate() {
        if shard_cpus[..index].contains(cpu) {
            return Err(TuningError::DuplicateShardCpu(*cpu));
        }
    }
    let mut program = reuseport_cpu_program(shard_cpus);
    let len =
        u16::try_from(program.len()).map_err(|_| TuningError::TooManyShards(shard_cpus.len()))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_mut_ptr(),
    };
    let optlen = std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t;
    // SAFETY: `fprog` points at `program`, which lives until the end of this function; the
    // kernel copies the instructions during the call and keeps no pointer to them. `optlen` is
    // the size of the `sock_fprog` passed. A bad `fd` makes the call fail with EBADF/ENOTSOCK,
    // it cannot touch memory of ours.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::from_ref(&fprog).cast::<libc::c_void>(),
            optlen,
        )
    };
    if rc != 0 {
        return Err(TuningError::AttachSteering {
            fd,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `program` the way the kernel would for a packet received on `cpu`, supporting the
    /// instructions the builder emits. Returns the value of the `ret`.
    fn run(program: &[libc::sock_filter], cpu: u32) -> u32 {
        let cpu_offset = (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32;
        let mut accumulator = 0u32;
        let mut pc = 0usize;
        loop {
            let insn = program[pc];
            let code = u32::from(insn.code);
            pc += 1;
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                assert_eq!(
                    insn.k, cpu_offset,
                    "only the CPU ancillary load is expected"
                );
                accumulator = cpu;
            } else if code == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K {
                pc += usize::from(if accumulator == insn.k {
                    insn.jt
                } else {
                    insn.jf
                });
            } else if code == libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K {
                accumulator %= insn.k;
            } else if code == libc::BPF_RET | libc::BPF_K {
                return insn.k;
            } else if code == libc::BPF_RET | libc::BPF_A {
                return accumulator;
            } else {
                panic!("unexpected opcode {code:#x}");
            }
        }
    }

    #[test]
    fn shard_cpus_map_to_their_group_index_and_others_fall_back_to_modulo() {
        let program = reuseport_cpu_program(&[2, 3, 5]);
        assert_eq!(program.len(), 1 + 2 * 3 + 2);
        assert_eq!(run(&program, 2), 0);
        assert_eq!(run(&program, 3), 1);
        assert_eq!(run(&program, 5), 2);
        assert_eq!(run(&program, 0), 0);
        assert_eq!(run(&program, 1), 1);
        assert_eq!(run(&program, 4), 1);
        assert_eq!(run(&program, 7), 1);
    }

    #[test]
    fn the_largest_program_fits_the_kernel_limit_and_still_steers() {
        let cpus: Vec<usize> = (0..MAX_STEERED_SHARDS).rev().collect();
        let program = reuseport_cpu_program(&cpus);
        assert!(program.len() <= libc::BPF_MAXINSNS as usize);
        assert_eq!(run(&program, 0), (MAX_STEERED_SHARDS - 1) as u32);
        assert_eq!(run(&program, (MAX_STEERED_SHARDS - 1) as u32), 0);
    }

    #[test]
    fn empty_list_picks_index_zero() {
        assert_eq!(run(&reuseport_cpu_program(&[]), 9), 0);
    }

    #[test]
    fn attach_refuses_bad_shard_lists_and_bad_descriptors() {
        assert!(matches!(
            attach_reuseport_cpu_steering(0, &[]),
            Err(TuningError::NoShardCpus)
        ));
        assert!(matches!(
            attach_reuseport_cpu_steering(0, &[1, 1]),
            Err(TuningError::DuplicateShardCpu(1))
        ));
        let too_many: Vec<usize> = (0..=MAX_STEERED_SHARDS).collect();
        assert!(matches!(
            attach_reuseport_cpu_steering(0, &too_many),
            Err(TuningError::TooManyShards(_))
        ));
        let err = attach_reuseport_cpu_steering(-1, &[0]).unwrap_err();
        assert!(
            matches!(err, TuningError::AttachSteering { fd: -1, .. }),
            "{err}"
        );
    }
}
