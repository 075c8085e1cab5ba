//! The hypercall ABI: how guest code reaches the VMM.
//!
//! Every exit is an `out` to one of these ports. The port says why the guest
//! left; everything else is in the registers and on the ring-0 stack, which
//! the VMM reads itself.

/// A system call: `syscall` entered ring 0 at `SYSCALL_ENTRY`, which writes
/// this port. rax holds the number, rdi/rsi/rdx/r10/r8/r9 the arguments,
/// rcx the user rip and r11 the user rflags (as the `syscall` instruction
/// leaves them).
pub const SYSCALL_PORT: u16 = 0xe0;

/// An exception: the stub pushed the vector on top of the CPU's frame
/// (`[vector] [error code]? rip cs rflags rsp ss`) and wrote this port.
pub const FAULT_PORT: u16 = 0xe1;

/// A bare exit used by the benchmarks: user code with IOPL 3 writes it
/// directly, so the VMM can measure the cost of an exit on its own.
pub const BENCH_PORT: u16 = 0xe2;
