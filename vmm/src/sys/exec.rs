//! execve and execveat up to their point of no return: the arguments and
//! environment are copied out of the job, the program is found through
//! the job's site (its cwd, its descriptors), `#!` scripts lead to their
//! interpreter, and the ELF is checked to fit the VM. Any failure so far
//! is an error return to the old program; the VM then swaps the image
//! (`Vm::exec`).

use crate::elf::{ElfError, Program};
use crate::errno::Errno;
use crate::exec::ExecRequest;
use crate::job::Job;

/// Interpreters a script may chain through (Linux allows 4 levels).
const MAX_INTERP_DEPTH: usize = 4;
/// An ELF interpreter that is no usable ELF (Linux's answer then).
const ELIBBAD: Errno = Errno(libc::ELIBBAD);
/// How much of a script's first line Linux reads for `#!`.
const SHEBANG_MAX: usize = 256;

/// A `#!` line: the interpreter and its one optional argument.
fn parse_shebang(bytes: &[u8]) -> Result<(Vec<u8>, Option<Vec<u8>>), Errno> {
    let head = &bytes[2..bytes.len().min(SHEBANG_MAX)];
    let line = match head.iter().position(|&b| b == b'\n') {
        Some(n) => &head[..n],
        // A line cut short must at least hold the whole interpreter name.
        None => head,
    };
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let line = {
        let start = line.iter().position(|b| !blank(b)).unwrap_or(line.len());
        let end = line.iter().rposition(|b| !blank(b)).map_or(start, |e| e + 1);
        &line[start..end.max(start)]
    };
    if line.is_empty() {
        return Err(Errno::ENOEXEC);
    }
    let split = line.iter().position(blank).unwrap_or(line.len());
    let interp = line[..split].to_vec();
    if split == line.len() && !head.contains(&b'\n') && head.len() + 2 >= SHEBANG_MAX {
        return Err(Errno::ENOEXEC);
    }
    let rest = &line[split..];
    let rest = &rest[rest.iter().position(|b| !blank(b)).unwrap_or(rest.len())..];
    Ok((interp, (!rest.is_empty()).then(|| rest.to_vec())))
}

impl Job {
    /// A NULL-terminated array of strings in the job's memory, counted
    /// against `budget` bytes (E2BIG past it).
    fn user_strings(&self, mut at: u64, budget: &mut usize) -> Result<Vec<Vec<u8>>, Errno> {
        let mut out = Vec::new();
        if at == 0 {
            return Ok(out);
        }
        loop {
            let p = self.ram.read_user_u64(at)?;
            if p == 0 {
                return Ok(out);
            }
            let s = self.ram.user_cstr(p, *budget)?.ok_or(Errno::E2BIG)?;
            *budget = budget.checked_sub(s.len() + 1 + 8).ok_or(Errno::E2BIG)?;
            out.push(s.to_vec());
            at = at.checked_add(8).ok_or(Errno::EFAULT)?;
        }
    }

    /// An ELF's dynamic loader, read through the job's site (from home
    /// after a move), with the errors Linux's execve gives: the loader's
    /// open errors (ENOENT when it is missing), ELIBBAD when it is no
    /// usable ELF.
    fn read_interp(&mut self, name: &[u8]) -> Result<(Program, Vec<u8>), Errno> {
        let (bytes, path) = self.site.read_program(libc::AT_FDCWD, name, 0, self.ram.size())?;
        match Program::parse(&path, &bytes) {
            Ok(p) => Ok((p, bytes)),
            Err(e) => {
                (self.log)(&format!("execve: {e}"));
                Err(ELIBBAD)
            }
        }
    }

    pub(super) fn sys_execve(
        &mut self,
        dirfd: i32,
        path: u64,
        argv: u64,
        envp: u64,
        flags: i32,
    ) -> Result<Box<ExecRequest>, Errno> {
        if flags & !(libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW) != 0 {
            return Err(Errno::EINVAL);
        }
        let filename = self.ram.user_cstr(path, libc::PATH_MAX as usize)?.ok_or(Errno::ENAMETOOLONG)?.to_vec();
        // Linux's limit: a quarter of the stack for strings and pointers.
        let layout = *self.ram.user_layout();
        let mut budget = ((layout.mem_end - layout.stack_limit) / 4) as usize;
        let mut args = self.user_strings(argv, &mut budget)?;
        let env = self.user_strings(envp, &mut budget)?;
        if args.is_empty() {
            // As Linux since 5.18: programs may rely on argv[0] existing.
            args.push(Vec::new());
        }
        let (mut dirfd, mut file, mut flags) = (dirfd, filename.clone(), flags);
        for _ in 0..=MAX_INTERP_DEPTH {
            let (bytes, host_path) = self.site.read_program(dirfd, &file, flags, self.ram.size())?;
            if bytes.starts_with(b"#!") {
                let (interp, arg) = parse_shebang(&bytes)?;
                let mut new_args = vec![interp.clone()];
                new_args.extend(arg);
                new_args.push(file.clone());
                new_args.extend(args.drain(..).skip(1));
                budget = budget.checked_sub(new_args.iter().take(3).map(|a| a.len() + 9).sum()).ok_or(Errno::E2BIG)?;
                args = new_args;
                (dirfd, file, flags) = (libc::AT_FDCWD, interp, 0);
                continue;
            }
            let program = match Program::parse(&host_path, &bytes) {
                Ok(p) => p,
                Err(_) => return Err(Errno::ENOEXEC),
            };
            let interp = match program.interp() {
                Some(name) => Some(self.read_interp(name)?),
                None => None,
            };
            if let Err(e) = program.place(interp.as_ref().map(|(p, _)| p), self.ram.size()) {
                (self.log)(&format!("execve: {e}"));
                return Err(match e {
                    ElfError::OutOfRange { .. } => Errno::ENOMEM,
                    _ => ELIBBAD,
                });
            }
            return Ok(Box::new(ExecRequest {
                path: host_path,
                bytes,
                program,
                interp,
                argv: args,
                env,
                execfn: filename,
            }));
        }
        Err(Errno::ELOOP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_lines() {
        assert_eq!(parse_shebang(b"#!/bin/sh\necho").unwrap(), (b"/bin/sh".to_vec(), None));
        assert_eq!(
            parse_shebang(b"#! /usr/bin/env  python3 -u \nx").unwrap(),
            (b"/usr/bin/env".to_vec(), Some(b"python3 -u".to_vec()))
        );
        assert_eq!(parse_shebang(b"#!/bin/busybox sh").unwrap(), (b"/bin/busybox".to_vec(), Some(b"sh".to_vec())));
        assert_eq!(parse_shebang(b"#!  \n").unwrap_err(), Errno::ENOEXEC);
        let mut long = b"#!/".to_vec();
        long.extend(std::iter::repeat_n(b'a', 300));
        assert_eq!(parse_shebang(&long).unwrap_err(), Errno::ENOEXEC);
    }
}
