//! The initial process stack: argc, argv, envp and the auxiliary vector,
//! laid out exactly as Linux's execve leaves them.

use crate::layout::PAGE_SIZE;
use crate::memory::{GuestRam, MemoryError};

pub const AT_NULL: u64 = 0;
pub const AT_PHDR: u64 = 3;
pub const AT_PHENT: u64 = 4;
pub const AT_PHNUM: u64 = 5;
pub const AT_PAGESZ: u64 = 6;
pub const AT_BASE: u64 = 7;
pub const AT_FLAGS: u64 = 8;
pub const AT_ENTRY: u64 = 9;
pub const AT_UID: u64 = 11;
pub const AT_EUID: u64 = 12;
pub const AT_GID: u64 = 13;
pub const AT_EGID: u64 = 14;
pub const AT_PLATFORM: u64 = 15;
pub const AT_HWCAP: u64 = 16;
pub const AT_CLKTCK: u64 = 17;
pub const AT_SECURE: u64 = 23;
pub const AT_RANDOM: u64 = 25;
pub const AT_HWCAP2: u64 = 26;
pub const AT_EXECFN: u64 = 31;
pub const AT_SYSINFO_EHDR: u64 = 33;
pub const AT_MINSIGSTKSZ: u64 = 51;

/// Everything the stack needs besides the strings.
#[derive(Debug, Clone)]
pub struct AuxInfo {
    pub phdr: u64,
    pub phnum: u64,
    pub entry: u64,
    /// Where the dynamic loader is (0 without one).
    pub base: u64,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    pub hwcap: u64,
    pub hwcap2: u64,
    pub minsigstksz: u64,
    pub random: [u8; 16],
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("argument list too long ({0} bytes)")]
    TooLong(usize),
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

/// Writes the initial stack below `top` and returns the initial rsp (which
/// points at argc, 16-byte aligned).
pub fn build(
    ram: &GuestRam,
    top: u64,
    limit: u64,
    argv: &[&[u8]],
    envp: &[&[u8]],
    execfn: &[u8],
    aux: &AuxInfo,
) -> Result<u64, StackError> {
    let strings: usize = argv.iter().chain(envp).map(|s| s.len() + 1).sum::<usize>() + execfn.len() + 1;
    // Linux allows a quarter of the stack limit for arguments and environment.
    if strings as u64 > (top - limit) / 4 {
        return Err(StackError::TooLong(strings));
    }
    let mut sp = top - 8; // a NULL word at the very top
    let mut push_str = |s: &[u8]| -> Result<u64, MemoryError> {
        sp -= s.len() as u64 + 1;
        let mut g = ram.slice_mut(sp, s.len() as u64 + 1)?;
        g[..s.len()].copy_from_slice(s);
        g[s.len()] = 0;
        Ok(sp)
    };
    let execfn_at = push_str(execfn)?;
    let mut env_at = Vec::with_capacity(envp.len());
    for s in envp.iter().rev() {
        env_at.push(push_str(s)?);
    }
    env_at.reverse();
    let mut arg_at = Vec::with_capacity(argv.len());
    for s in argv.iter().rev() {
        arg_at.push(push_str(s)?);
    }
    arg_at.reverse();
    let platform_at = push_str(b"x86_64")?;
    sp &= !15;
    sp -= 16;
    ram.write(sp, &aux.random)?;
    let random_at = sp;

    let auxv: [(u64, u64); 21] = [
        (AT_SYSINFO_EHDR, agent::vdso::VDSO_ADDR),
        (AT_MINSIGSTKSZ, aux.minsigstksz),
        (AT_HWCAP, aux.hwcap),
        (AT_PAGESZ, PAGE_SIZE),
        (AT_CLKTCK, 100),
        (AT_PHDR, aux.phdr),
        (AT_PHENT, 56),
        (AT_PHNUM, aux.phnum),
        (AT_BASE, aux.base),
        (AT_FLAGS, 0),
        (AT_ENTRY, aux.entry),
        (AT_UID, aux.uid as u64),
        (AT_EUID, aux.euid as u64),
        (AT_GID, aux.gid as u64),
        (AT_EGID, aux.egid as u64),
        (AT_SECURE, 0),
        (AT_RANDOM, random_at),
        (AT_HWCAP2, aux.hwcap2),
        (AT_EXECFN, execfn_at),
        (AT_PLATFORM, platform_at),
        (AT_NULL, 0),
    ];
    let words = 1 + arg_at.len() + 1 + env_at.len() + 1 + auxv.len() * 2;
    sp -= words as u64 * 8;
    sp &= !15;
    let mut table = Vec::with_capacity(words);
    table.push(argv.len() as u64);
    table.extend(&arg_at);
    table.push(0);
    table.extend(&env_at);
    table.push(0);
    for (k, v) in auxv {
        table.push(k);
        table.push(v);
    }
    let bytes: Vec<u8> = table.iter().flat_map(|w| w.to_le_bytes()).collect();
    ram.write(sp, &bytes)?;
    Ok(sp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cstr_at(ram: &GuestRam, addr: u64) -> Vec<u8> {
        ram.user_cstr(addr, 4096).unwrap().unwrap().to_vec()
    }

    #[test]
    fn layout_matches_execve() {
        let ram = GuestRam::new(32 << 20).unwrap();
        let top = 32 << 20;
        let aux = AuxInfo {
            phdr: 0x400040,
            phnum: 7,
            entry: 0x401000,
            base: 0x7f00000,
            uid: 1,
            euid: 2,
            gid: 3,
            egid: 4,
            hwcap: 0xdead,
            hwcap2: 2,
            minsigstksz: 4096,
            random: [7; 16],
        };
        let sp = build(&ram, top, top - (8 << 20), &[b"prog", b"a b"], &[b"K=V"], b"/bin/prog", &aux).unwrap();
        assert_eq!(sp % 16, 0);
        let w = |i: u64| ram.read_u64(sp + i * 8).unwrap();
        assert_eq!(w(0), 2);
        assert_eq!(cstr_at(&ram, w(1)), b"prog");
        assert_eq!(cstr_at(&ram, w(2)), b"a b");
        assert_eq!(w(3), 0);
        assert_eq!(cstr_at(&ram, w(4)), b"K=V");
        assert_eq!(w(5), 0);
        let mut i = 6;
        let mut found = std::collections::HashMap::new();
        loop {
            let (k, v) = (w(i), w(i + 1));
            i += 2;
            if k == AT_NULL {
                break;
            }
            found.insert(k, v);
        }
        assert_eq!(found[&AT_PHDR], 0x400040);
        assert_eq!(found[&AT_ENTRY], 0x401000);
        assert_eq!(found[&AT_BASE], 0x7f00000);
        assert_eq!(found[&AT_SECURE], 0);
        assert_eq!(found[&AT_PAGESZ], 4096);
        assert_eq!(found[&AT_EGID], 4);
        assert_eq!(cstr_at(&ram, found[&AT_EXECFN]), b"/bin/prog");
        assert_eq!(cstr_at(&ram, found[&AT_PLATFORM]), b"x86_64");
        assert_eq!(ram.user(found[&AT_RANDOM], 16).unwrap(), &[7; 16]);
    }

    #[test]
    fn too_long() {
        let ram = GuestRam::new(32 << 20).unwrap();
        let big = vec![b'x'; 3 << 20];
        let top = 32 << 20;
        assert!(matches!(
            build(
                &ram,
                top,
                top - (8 << 20),
                &[&big],
                &[],
                b"p",
                &AuxInfo {
                    phdr: 0,
                    phnum: 0,
                    entry: 0,
                    base: 0,
                    uid: 0,
                    euid: 0,
                    gid: 0,
                    egid: 0,
                    hwcap: 0,
                    hwcap2: 0,
                    minsigstksz: 0,
                    random: [0; 16]
                }
            ),
            Err(StackError::TooLong(_))
        ));
    }
}
