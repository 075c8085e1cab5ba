//! The mosvm micro-VM.
//!
//! A job is a static x86-64 Linux program running at CPL3 in its own KVM
//! virtual machine, with no guest kernel: the VMM builds the machine state,
//! loads the program and serves its system calls (see `sys`). Guest memory
//! plus vCPU registers plus the small `Job` table are the whole job state.

pub mod children;
pub mod clock;
pub mod confine;
pub mod control;
pub mod cpu;
pub mod elf;
pub mod errno;
pub mod exec;
pub mod fork;
pub mod fuzz;
pub mod job;
pub mod layout;
pub mod memory;
pub mod migration;
pub mod mm;
pub mod notice;
pub mod paging;
pub mod procfs;
pub mod signal;
pub mod site;
pub mod stack;
pub mod state;
pub mod sys;
pub mod thread;
pub mod timers;
pub mod vcpu;
pub mod vm;

pub use job::RestoreEnv;
pub use job::{JobExit, Log};
pub use vm::{Outcome, Unstarted, Vm, VmConfig, VmError, VmHandle};
