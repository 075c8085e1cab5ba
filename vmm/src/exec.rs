//! Putting a program into a job's machine, as Linux's execve does: the
//! ring-0 tables, the ELF's segments, page tables, the initial stack and
//! the address space, then a vCPU at the program's entry. `Vm::new` does
//! it on fresh memory; the execve system call does it over the old
//! program's memory in the same VM (the job keeps its pid, files, signal
//! mask and timers; see `Job::exec`).

use std::path::PathBuf;

use kvm_bindings::kvm_regs;
use kvm_ioctls::VcpuFd;

use crate::cpu::{self, CpuFeatures};
use crate::elf::{ElfFile, Program};
use crate::job::Ids;
use crate::memory::GuestRam;
use crate::mm::{AddressSpace, VmaKind};
use crate::paging;
use crate::stack::{self, AuxInfo};
use crate::vm::{Vm, VmError};

/// The flags a program starts with (IF set, as Linux leaves them).
pub(crate) const USER_RFLAGS: u64 = 0x202;

/// What a program starts with besides its file.
pub struct Start<'a> {
    pub argv: &'a [&'a [u8]],
    pub env: &'a [&'a [u8]],
    /// The file name as given (AT_EXECFN).
    pub execfn: &'a [u8],
    pub ids: &'a Ids,
    pub features: &'a CpuFeatures,
    /// I/O ports the job may use from CPL3 (the exit benchmark's).
    pub extra_ports: &'a [u16],
}

/// A program loaded into guest memory.
pub struct Image {
    /// The user registers at its entry point.
    pub user: kvm_regs,
    pub cr3: u64,
    pub mm: AddressSpace,
    /// End of its highest segment (where the break starts).
    pub end: u64,
}

/// An ELF to load: what it is and where its bytes are.
#[derive(Clone, Copy)]
pub struct Elf<'a> {
    pub program: &'a Program,
    pub file: &'a dyn ElfFile,
}

fn prot_of(r: &paging::ImageRange) -> u32 {
    (libc::PROT_READ
        | if r.perms.write { libc::PROT_WRITE } else { 0 }
        | if r.perms.exec { libc::PROT_EXEC } else { 0 }) as u32
}

/// Writes the machine tables, `program` (with its dynamic loader
/// `interp`, if it has one) and its initial stack into `ram`, which must
/// read as zeros. With a loader, the job starts at the loader's entry, and
/// the auxiliary vector tells the loader where the program is (AT_PHDR,
/// AT_ENTRY) and where it is itself (AT_BASE), as Linux does.
pub fn load(ram: &GuestRam, program: Elf, interp: Option<Elf>, start: &Start) -> Result<Image, VmError> {
    cpu::write_machine_tables(ram, start.extra_ports)?;
    let (base, ibase) = program.program.place(interp.map(|i| i.program), ram.size())?;
    let loaded = program.program.load(ram, program.file, base)?;
    let iloaded = match (interp, ibase) {
        (Some(i), Some(ibase)) => Some(i.program.load(ram, i.file, ibase)?),
        _ => None,
    };
    let mut ranges = loaded.ranges.clone();
    if let Some(l) = &iloaded {
        ranges.extend_from_slice(&l.ranges);
    }
    let cr3 = paging::build(ram, &ranges)?;
    let layout = *ram.user_layout();
    let mut random = [0u8; 16];
    // SAFETY: random is a valid 16-byte buffer.
    unsafe { libc::getrandom(random.as_mut_ptr().cast(), 16, 0) };
    let f = start.features;
    let aux = AuxInfo {
        phdr: loaded.phdr,
        phnum: loaded.phnum,
        entry: loaded.entry,
        base: iloaded.as_ref().map_or(0, |l| l.base),
        uid: start.ids.uid,
        euid: start.ids.euid,
        gid: start.ids.gid,
        egid: start.ids.egid,
        hwcap: f.hwcap as u64,
        hwcap2: if f.fsgsbase { 2 } else { 0 },
        minsigstksz: crate::signal::frame::SIZE + f.xsave_size as u64 + 64 + 128,
        random,
    };
    let sp = stack::build(ram, layout.mem_end, layout.stack_limit, start.argv, start.env, start.execfn, &aux)?;
    let image: Vec<(u64, u64, u32)> = loaded.ranges.iter().map(|r| (r.start, r.end, prot_of(r))).collect();
    // The break starts at the page after the program, as on Linux.
    let brk = crate::layout::page_ceil(loaded.end);
    let mut mm = AddressSpace::new(layout, &image, brk);
    if let Some(l) = &iloaded {
        // The loader's pages are a file mapping of the job's, as on Linux.
        for r in &l.ranges {
            mm.add(r.start, r.end, prot_of(r), VmaKind::File);
        }
    }
    let entry = iloaded.as_ref().map_or(loaded.entry, |l| l.entry);
    Ok(Image { user: kvm_regs { rip: entry, rsp: sp, rflags: USER_RFLAGS, ..Default::default() }, cr3, mm, end: brk })
}

/// Sets the vCPU's special registers, MSRs and XCR0 for a program whose
/// page tables are at `cr3`.
pub fn reset_cpu(vcpu: &VcpuFd, cr3: u64, features: &CpuFeatures) -> Result<(), VmError> {
    use crate::vm::kvm_err as kvm;
    let sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    vcpu.set_sregs(&cpu::initial_sregs(sregs, cr3, features)).map_err(kvm("KVM_SET_SREGS"))?;
    vcpu.set_msrs(&cpu::initial_msrs()).map_err(kvm("KVM_SET_MSRS"))?;
    if features.xsave {
        vcpu.set_xcrs(&cpu::initial_xcrs(features)).map_err(kvm("KVM_SET_XCRS"))?;
    }
    Ok(())
}

/// A program execve is to run, found and checked while the caller could
/// still get an error back (see `sys::exec`).
#[derive(Debug)]
pub struct ExecRequest {
    /// The program's host path (/proc/self/exe).
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub program: Program,
    /// Its dynamic loader and the loader's bytes, if it has one.
    pub interp: Option<(Program, Vec<u8>)>,
    pub argv: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    /// The file name the caller passed.
    pub execfn: Vec<u8>,
}

impl Vm {
    /// Replaces the job's program (execve past its point of no return):
    /// fresh memory, the new image and a vCPU at its entry. Returns the
    /// registers it starts with. An error here ends the job, as a failed
    /// exec after the old image is gone does on Linux.
    pub(crate) fn exec(&mut self, req: &ExecRequest) -> Result<kvm_regs, VmError> {
        let ram = self.job.ram.clone();
        // Dropping every page also makes KVM drop every mapping it built
        // from the old page tables (its MMU notifier), so under shadow
        // paging the new tables are walked afresh, as in a new VM. The
        // pages are marked dirty: a pre-copy in flight sends them again.
        ram.discard(0, ram.size())?;
        let argv: Vec<&[u8]> = req.argv.iter().map(|a| a.as_slice()).collect();
        let env: Vec<&[u8]> = req.env.iter().map(|a| a.as_slice()).collect();
        let extra_ports: &[u16] = if self.allow_user_io { &[agent::BENCH_PORT] } else { &[] };
        let start = Start {
            argv: &argv,
            env: &env,
            execfn: &req.execfn,
            ids: &self.job.ids,
            features: &self.job.features,
            extra_ports,
        };
        let program = Elf { program: &req.program, file: &req.bytes };
        let interp = req.interp.as_ref().map(|(p, b)| Elf { program: p, file: b as &dyn ElfFile });
        let image = load(&ram, program, interp, &start)?;
        reset_cpu(self.vcpu.fd(), image.cr3, &self.job.features)?;
        self.vcpu.reset_fpu().map_err(crate::vm::kvm_err("KVM_SET_XSAVE"))?;
        self.job.exec(image.mm, image.end, req);
        Ok(image.user)
    }
}
