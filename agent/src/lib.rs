//! The guest side of mosvm.
//!
//! A job's VM has no kernel. The only code that runs at CPL0 is the handful
//! of instructions in this crate: a system-call entry and one stub per
//! exception vector. Ring-0 code is emulated on nested KVM (about a million
//! instructions per second), so every path here is a few instructions that
//! leave through an I/O port; the VMM does the real work.
//!
//! The code is position independent and is copied by the VMM onto one guest
//! page (see [`code_page`]).

pub mod abi;
pub mod vdso;

pub use abi::*;

/// Byte offset of the system-call entry (the target of `MSR_LSTAR`).
pub const SYSCALL_ENTRY: usize = 0;
/// Byte offset of the `iretq` the VMM resumes the guest at. The VMM writes an
/// iret frame on the ring-0 stack, points rsp at it and sets rip here; this
/// is how it returns to CPL3 after a system call, after a fault, or into a
/// signal handler.
pub const IRET: usize = 2;
/// Byte offset of the first exception stub.
pub const EXCEPTION_STUBS: usize = 16;
/// Size of one exception stub slot.
pub const EXCEPTION_STUB_SIZE: usize = 8;
/// Number of exception vectors with a stub (the architectural ones).
pub const EXCEPTION_VECTORS: usize = 32;

/// Byte offset of the stub for exception `vector`.
pub const fn exception_stub(vector: u8) -> usize {
    EXCEPTION_STUBS + vector as usize * EXCEPTION_STUB_SIZE
}

const OUT_IMM8_AL: u8 = 0xe6;
const IRETQ: [u8; 2] = [0x48, 0xcf];
const PUSH_IMM8: u8 = 0x6a;
const HLT: u8 = 0xf4;
const JMP_REL8: u8 = 0xeb;

/// The ring-0 code page.
///
/// ```text
/// 0:        out SYSCALL_PORT, al     ; exit to the VMM with the user registers intact
/// 2:        iretq                    ; the VMM has written the frame
/// 16+8*v:   push v                   ; the CPU already pushed the error code, if any
///           out FAULT_PORT, al
///           hlt                      ; never reached: the VMM moves rip on
///           jmp .-1
/// ```
///
/// `out imm8, al` is used because it clobbers no register: at the syscall
/// exit every general register still holds the caller's value.
pub fn code_page() -> [u8; 4096] {
    let mut page = [HLT; 4096];
    page[SYSCALL_ENTRY] = OUT_IMM8_AL;
    page[SYSCALL_ENTRY + 1] = SYSCALL_PORT as u8;
    page[IRET..IRET + 2].copy_from_slice(&IRETQ);
    for vector in 0..EXCEPTION_VECTORS as u8 {
        let at = exception_stub(vector);
        page[at..at + 8].copy_from_slice(&[
            PUSH_IMM8,
            vector,
            OUT_IMM8_AL,
            FAULT_PORT as u8,
            HLT,
            JMP_REL8,
            0xfd, // back to the hlt
            HLT,
        ]);
    }
    page
}

/// Exception vectors for which the CPU pushes an error code.
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_fit_and_are_distinct() {
        let page = code_page();
        assert_eq!(&page[0..4], &[0xe6, SYSCALL_PORT as u8, 0x48, 0xcf]);
        for v in 0..EXCEPTION_VECTORS as u8 {
            let at = exception_stub(v);
            assert!(at + EXCEPTION_STUB_SIZE <= 4096);
            assert_eq!(page[at], PUSH_IMM8);
            assert_eq!(page[at + 1], v);
            assert_eq!(page[at + 3], FAULT_PORT as u8);
            // jmp rel8 -3 from the end of the jmp lands on the hlt
            assert_eq!(at + 7 - 3, at + 4);
        }
        assert!(exception_stub(0) >= IRET + 2);
    }

    #[test]
    fn error_code_vectors() {
        assert!(has_error_code(14));
        assert!(has_error_code(13));
        assert!(!has_error_code(0));
        assert!(!has_error_code(6));
    }
}
