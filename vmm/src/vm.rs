//! A job's micro-VM: building it (KVM, memory, machine tables, program,
//! stack, vCPU) and running it until the job ends.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use std::sync::Arc;
use std::time::Duration;

use kvm_bindings::{kvm_cpuid_entry2, kvm_regs, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VmFd};
use thiserror::Error;

use agent::{BENCH_PORT, FAULT_PORT, SYSCALL_PORT};

use crate::clock::Clock;
use crate::control::{Command, Control, ControlRx, Verdict};
use crate::cpu::{self, CpuFeatures};
use crate::elf::{ElfError, HostFile, Program};
use crate::errno::Errno;
use crate::exec;
use crate::job::{Ids, Job, JobExit, JobStats, Log, RestoreEnv};
use crate::layout::*;
use crate::memory::{GuestRam, MemoryError};
use crate::paging::PagingError;
use crate::signal::{self, SigInfo, Signals};
use crate::site::{LocalSite, Purpose, Site, SiteConfig};
use crate::stack::StackError;
use crate::state::{VmState, STATE_VERSION};
use crate::sys::Flow;
use crate::vcpu::{Exit, Vcpu};

/// The running thread, as the vCPU loop hands it back to user mode.
enum Cur {
    /// Returns to user mode with these registers.
    Runs(kvm_regs),
    /// Waits (`Job::wait`); its context is in `Job::wait_ctx`.
    Waits,
    /// Exited; another thread takes the vCPU.
    Gone,
    /// Exited, and it was the last: the job ends with this status.
    Last(i32),
    /// Another thread was just loaded (see `continue_with`).
    Switched,
}

/// How a wait ended.
#[derive(Clone, Copy)]
enum Woken {
    Deadline,
    Ready,
    Signal,
}

/// The system call's result for a thread whose wait ended, and whether it
/// is to be restarted (the restart logic of signal delivery takes it then).
fn woken_result(w: crate::thread::Wait, how: Woken) -> (u64, bool) {
    use crate::thread::Wait;
    let neg = |e: Errno| (-(e.0 as i64)) as u64;
    match (w, how) {
        // As the sleeping path (`Job::sleep_until`): a wait without a
        // timeout is restarted unless a handler says otherwise.
        (Wait::Futex { deadline: None, .. }, Woken::Signal) => (neg(Errno::ERESTARTSYS), true),
        (Wait::Futex { .. }, Woken::Signal) => (neg(Errno::EINTR), false),
        (Wait::Futex { .. }, _) => (neg(Errno::ETIMEDOUT), false),
        (Wait::Sleep { .. }, Woken::Signal) => (neg(Errno::ERESTARTNOHAND), true),
        (Wait::Sleep { .. }, _) => (0, false),
        (Wait::Fd { .. } | Wait::Retry { .. } | Wait::Child { .. }, _) => (neg(Errno::ERESTARTSYS), true),
    }
}

/// After `load_next`: the loaded thread runs, or waits.
fn continue_with(cur: &mut Cur, job: &mut Job) {
    *cur = if job.wait.is_some() { Cur::Waits } else { Cur::Runs(job.wait_ctx.take().expect("a loaded thread")) };
}

/// The rip at a system-call exit: just past the entry's `out`.
const SYSCALL_EXIT_RIP: u64 = RING0_CODE_ADDR + agent::IRET as u64;
const IRET_RIP: u64 = RING0_CODE_ADDR + agent::IRET as u64;
const IRET_FRAME: u64 = RING0_STACK_TOP - 40;
/// How often a throttled vCPU is stopped (the migration sender kicks it at this period).
pub const THROTTLE_PERIOD: Duration = Duration::from_millis(10);

#[derive(Debug, Error)]
pub enum VmError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error("cannot open /dev/kvm: {0} (mosvm needs KVM: load the kvm module and make /dev/kvm accessible)")]
    NoKvm(kvm_ioctls::Error),
    #[error("KVM {op} failed: {source}")]
    Kvm { op: &'static str, source: kvm_ioctls::Error },
    #[error("guest memory size {0} MiB is out of range ({min}..={max} MiB)", min = MIN_MEM >> 20, max = MAX_MEM >> 20)]
    MemSize(u64),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Paging(#[from] PagingError),
    #[error("cannot build the initial stack: {0}")]
    Stack(#[from] StackError),
    #[error("cannot set up the job's files: {0}")]
    Site(std::io::Error),
    #[error("the micro-VM failed: {0}")]
    Machine(String),
}

impl From<crate::vcpu::StateError> for VmError {
    fn from(e: crate::vcpu::StateError) -> Self {
        VmError::Kvm { op: e.op, source: e.source }
    }
}

pub(crate) fn kvm_err(op: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { op, source }
}

/// What to run and how.
pub struct VmConfig {
    pub mem_size: u64,
    /// The program (host path) and its argv; argv[0] is passed as given.
    pub program: PathBuf,
    pub argv: Vec<OsString>,
    /// The environment as `K=V` strings.
    pub env: Vec<OsString>,
    pub cwd: PathBuf,
    pub stdio: [RawFd; 3],
    /// Descriptors above 2 the caller passed (`prog 3<file`): job fd and
    /// host descriptor. The site takes them over (keeps a duplicate and
    /// closes the original), so the job closing one is a real close.
    pub inherited: Vec<(i32, RawFd)>,
    /// Lets the job write the benchmark port; only for the exit benchmark.
    pub allow_user_io: bool,
    pub log: Log,
    /// Log every system call.
    pub trace: bool,
}

/// The longest a vCPU thread waits at home for a descriptor in one go.
const REMOTE_WAIT_MS: i32 = 50;

/// struct pollfd records for the descriptors the job's threads wait on.
fn fd_waits(job: &Job) -> Vec<u8> {
    let mut recs = Vec::new();
    let waits = job.wait.iter().chain(job.threads.parked.iter().filter_map(|p| p.state.wait.as_ref()));
    for (w, _) in waits {
        if let crate::thread::Wait::Fd { fd, events } = *w {
            recs.extend_from_slice(&fd.to_le_bytes());
            recs.extend_from_slice(&events.to_le_bytes());
            recs.extend_from_slice(&[0, 0]);
        }
    }
    recs
}

/// How `Vm::run` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job ended here.
    Exited(JobExit),
    /// The job was moved to another host (or handed over), which now runs it.
    Moved(String),
}

pub struct Vm {
    pub(crate) _kvm: Kvm,
    pub(crate) vm_fd: Arc<VmFd>,
    pub vcpu: Vcpu,
    pub job: Job,
    pub(crate) cpuid: Vec<kvm_cpuid_entry2>,
    pub(crate) control: Arc<Control>,
    pub(crate) control_rx: ControlRx,
    /// Percentage of time the vCPU is held stopped (auto-converge).
    pub(crate) throttle: u8,
    pub(crate) allow_user_io: bool,
    /// This process is a forked copy of a job: it ends when its job does.
    pub(crate) forked: bool,
    /// Bare exits taken on the benchmark port.
    pub bench_exits: u64,
    /// The move in flight, for every handle.
    pub(crate) progress: Arc<crate::migration::Progress>,
    /// The link the next move's body presents, for every handle: a
    /// failed move can fence generations off, so it is kept up to date.
    pub(crate) next_link: Arc<std::sync::Mutex<Option<crate::site::HomeLink>>>,
}

/// A VM that has not run yet, to hand to the thread that will run it (a
/// body coming home is rebuilt on the deputy's connection thread).
pub struct Unstarted(pub Vm);

// SAFETY: a vCPU binds to a thread (its kvm_run page, the kick target)
// only when `Vm::run` starts; before that the VM's descriptors and memory
// may be used from any one thread at a time.
unsafe impl Send for Unstarted {}

/// What other threads (the migration sender, the API server) hold of a VM.
#[derive(Clone)]
pub struct VmHandle {
    pub ram: Arc<GuestRam>,
    pub vm_fd: Arc<VmFd>,
    pub control: Arc<Control>,
    pub info: Arc<JobInfo>,
    /// The move in flight, if one is (`progress.get()`).
    pub progress: Arc<crate::migration::Progress>,
    /// The remote site calls of a body away from home; None at home.
    pub site_calls: Option<Arc<crate::site::CallStats>>,
    /// What the body of the next move presents to the deputy (None: the
    /// job has no deputy).
    pub next_link: Arc<std::sync::Mutex<Option<crate::site::HomeLink>>>,
}

/// Facts about a job that do not change while it runs.
#[derive(Debug, Clone)]
pub struct JobInfo {
    pub program: String,
    pub xcr0: u64,
    /// The CPUID the job sees (the destination sets it up front).
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// The job's deputy, if it has one (at home or away).
    pub home: Option<std::net::SocketAddr>,
}

/// A KVM VM with guest memory and one vCPU, not yet set up. A migration
/// receiver makes it before the pages arrive, to keep it out of the downtime.
pub struct Machine {
    ram: GuestRam,
    kvm: Kvm,
    vm: VmFd,
    vcpu: kvm_ioctls::VcpuFd,
}

impl Machine {
    /// `cpuid`: what the job to be restored saw (set now, off the downtime).
    pub fn new(ram: GuestRam, cpuid: &[kvm_cpuid_entry2]) -> Result<Machine, VmError> {
        let (kvm, vm, vcpu) = create_machine(&ram)?;
        set_cpuid(&vcpu, cpuid)?;
        // Looked up now rather than in the restore, which is downtime.
        crate::clock::host_uses_tsc();
        Ok(Machine { ram, kvm, vm, vcpu })
    }

    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }
}

/// Gives a fresh vCPU the CPUID a job saw.
pub(crate) fn set_cpuid(vcpu: &kvm_ioctls::VcpuFd, cpuid: &[kvm_cpuid_entry2]) -> Result<(), VmError> {
    let entries = kvm_bindings::CpuId::from_entries(cpuid)
        .map_err(|_| VmError::Machine(format!("{} CPUID entries are too many", cpuid.len())))?;
    vcpu.set_cpuid2(&entries).map_err(kvm_err("KVM_SET_CPUID2"))
}

/// A fresh KVM VM with `ram` as its memory and one vCPU.
pub(crate) fn create_machine(ram: &GuestRam) -> Result<(Kvm, VmFd, kvm_ioctls::VcpuFd), VmError> {
    let kvm = Kvm::new().map_err(VmError::NoKvm)?;
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: ram.size(),
        userspace_addr: ram.host_base() as u64,
    };
    // SAFETY: the region is our own mapping, which outlives the VM (both live in Vm).
    unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    let vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
    Ok((kvm, vm, vcpu))
}

impl Vm {
    pub fn new(config: VmConfig) -> Result<Vm, VmError> {
        if !(MIN_MEM..=MAX_MEM).contains(&config.mem_size) {
            return Err(VmError::MemSize(config.mem_size >> 20));
        }
        let mem_size = config.mem_size.div_ceil(LARGE_PAGE_SIZE) * LARGE_PAGE_SIZE;
        let read_err = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| VmError::Read { path, source }
        };
        let file = HostFile::open(&config.program).map_err(read_err(&config.program))?;
        let program = Program::parse(&config.program, &file)?;
        // The dynamic loader comes from this (the home) host, as on Linux
        // from the file system of the exec.
        let interp = match program.interp() {
            Some(name) => {
                let path = PathBuf::from(std::ffi::OsStr::from_bytes(name));
                let ifile = HostFile::open(&path).map_err(read_err(&path))?;
                let iprog = Program::parse(&path, &ifile)?;
                Some((iprog, ifile))
            }
            None => None,
        };

        let ram = GuestRam::new(mem_size)?;
        let (kvm, vm, vcpu_fd) = create_machine(&ram)?;
        let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let features = CpuFeatures::from_cpuid(&cpuid);

        let extra_ports: &[u16] = if config.allow_user_io { &[BENCH_PORT] } else { &[] };
        let ids = Ids::of_this_process();
        let argv: Vec<&[u8]> = config.argv.iter().map(|a| a.as_bytes()).collect();
        let env: Vec<&[u8]> = config.env.iter().map(|a| a.as_bytes()).collect();
        let execfn = config.argv.first().map_or(config.program.as_os_str().as_bytes(), |a| a.as_bytes());
        let start = exec::Start { argv: &argv, env: &env, execfn, ids: &ids, features: &features, extra_ports };
        let image = exec::load(
            &ram,
            exec::Elf { program: &program, file: &file },
            interp.as_ref().map(|(p, f)| exec::Elf { program: p, file: f }),
            &start,
        )?;
        drop(file);
        drop(interp);

        let cpuid = cpu::job_cpuid(cpuid);
        vcpu_fd.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        let cpuid = cpuid.as_slice().to_vec();
        exec::reset_cpu(&vcpu_fd, image.cr3, &features)?;
        let vcpu = Vcpu::new(vcpu_fd, &kvm);
        let clock = Clock::starting_at(crate::clock::host_monotonic(), vcpu.clock_tsc_khz());
        clock.publish(&ram);

        let exe = std::fs::canonicalize(&config.program).unwrap_or(config.program.clone());
        let site = Site::local(
            LocalSite::new(SiteConfig {
                stdio: config.stdio,
                inherited: config.inherited.clone(),
                cwd: config.cwd.clone(),
                exe: exe.clone(),
                umask: None,
                pid: ids.pid,
            })
            .map_err(VmError::Site)?,
        );
        let job = Job {
            ram: Arc::new(ram),
            mm: image.mm,
            site,
            signals: Signals::default(),
            timers: Default::default(),
            clock,
            tid: ids.pid,
            wait: None,
            wait_ctx: None,
            threads: crate::thread::Threads { next_tid: ids.pid + 1, ..Default::default() },
            ids,
            features,
            rlimits: crate::sys::process::initial_rlimits(mem_size, STACK_LIMIT.min(mem_size / 4)),
            image_end: image.end,
            tid_address: 0,
            robust_list: 0,
            comm: crate::job::comm_of(config.program.as_os_str().as_bytes()),
            exe,
            cmdline: config.argv.iter().flat_map(|a| a.as_bytes().iter().copied().chain([0])).collect(),
            environ: config.env.iter().flat_map(|a| a.as_bytes().iter().copied().chain([0])).collect(),
            stats: JobStats::default(),
            log: config.log,
            trace: config.trace,
            restart_nr: None,
            restart_deadline: None,
            saved_mask: None,
            current_rsp: image.user.rsp,
            kick: vcpu.kick_flag(),
            unknown_reported: Default::default(),
            cur_nr: 0,
            pending_cputime: None,
            children: Default::default(),
        };

        // The first entry is a return to user mode, like every later one.
        let user = image.user;
        let (control, control_rx) = Control::new();
        let mut this = Vm {
            _kvm: kvm,
            vm_fd: Arc::new(vm),
            vcpu,
            job,
            cpuid,
            control,
            control_rx,
            throttle: 0,
            allow_user_io: config.allow_user_io,
            forked: false,
            bench_exits: 0,
            progress: Default::default(),
            next_link: Default::default(),
        };
        this.resume_user(&user)?;
        Ok(this)
    }

    /// Rebuilds a job from its state over `ram`, which already holds its
    /// pages (a move or a snapshot). The job's clocks continue from where
    /// they stopped plus the time in between.
    pub fn restore(state: VmState, machine: Machine, env: RestoreEnv) -> Result<Vm, VmError> {
        let Machine { ram, kvm, vm, vcpu: vcpu_fd } = machine;
        if state.mem_size != ram.size() {
            return Err(VmError::Machine(format!(
                "state is for {} MiB of memory, not {}",
                state.mem_size >> 20,
                ram.size() >> 20
            )));
        }
        let mut vcpu = Vcpu::new(vcpu_fd, &kvm);
        let elapsed_ns = (crate::clock::realtime_ns() - state.job.clock.realtime).max(0) as u128;
        let tsc = match vcpu.tsc_khz() {
            Some(khz) => state.vcpu.tsc.wrapping_add((elapsed_ns * khz as u128 / 1_000_000) as u64),
            None => state.vcpu.tsc,
        };
        vcpu.restore(&state.vcpu, tsc)?;
        let ram = Arc::new(ram);
        let khz = vcpu.clock_tsc_khz();
        let job =
            Job::restore(state.job, ram, vcpu.kick_flag(), env, khz).map_err(|e| VmError::Machine(e.to_string()))?;
        let (control, control_rx) = Control::new();
        Ok(Vm {
            _kvm: kvm,
            vm_fd: Arc::new(vm),
            vcpu,
            job,
            cpuid: state.vcpu.cpuid,
            control,
            control_rx,
            throttle: 0,
            allow_user_io: false,
            forked: false,
            bench_exits: 0,
            progress: Default::default(),
            next_link: Default::default(),
        })
    }

    /// The job's state as data; the vCPU must not be running (call from
    /// the vCPU thread between entries). What the job holds that cannot
    /// move is told apart from other failures.
    fn capture(&mut self, purpose: Purpose) -> Result<VmState, crate::control::PauseError> {
        use crate::control::PauseError;
        use crate::site::SiteError;
        self.shared_files_stay()?;
        let vcpu = self.vcpu.capture(&self.cpuid).map_err(|e| PauseError::Failed(e.to_string()))?;
        let job = self.job.capture(purpose).map_err(|e| match e {
            SiteError::Unmovable { .. } | SiteError::Children(_) => PauseError::Unmovable(e.to_string()),
            e => PauseError::Failed(e.to_string()),
        })?;
        Ok(VmState { version: STATE_VERSION, mem_size: self.job.ram.size(), vcpu, job })
    }

    /// A job whose memory maps a host file shared and writable cannot be
    /// copied: its writes must keep reaching that file.
    fn shared_files_stay(&self) -> Result<(), crate::control::PauseError> {
        if self.job.ram.has_shared_file_maps() {
            return Err(crate::control::PauseError::Unmovable(
                "the job maps a file shared and writable (MAP_SHARED); it cannot move while it does".into(),
            ));
        }
        Ok(())
    }

    /// A handle for other threads: memory, dirty logging and control.
    pub fn handle(&self) -> VmHandle {
        VmHandle {
            ram: self.job.ram.clone(),
            vm_fd: self.vm_fd.clone(),
            control: self.control.clone(),
            info: Arc::new(JobInfo {
                program: self.job.exe.display().to_string(),
                xcr0: self.job.features.xcr0,
                cpuid: self.cpuid.clone(),
                home: self.job.site.home_addr(),
            }),
            progress: self.progress.clone(),
            site_calls: self.job.site.call_stats(),
            next_link: {
                *self.next_link.lock().unwrap() = self.job.site.next_link();
                self.next_link.clone()
            },
        }
    }

    /// Gives the job a deputy: from now on a move leaves its site here,
    /// served by `home` to the body wherever it runs.
    pub fn set_home(&mut self, home: Arc<crate::site::Home>) {
        if let Site::Local { home: h, .. } = &mut self.job.site {
            *h = Some(home);
        }
    }

    /// The job has ended: commands from other threads (a move waiting to
    /// pause it) fail from now on instead of waiting for a VM that will
    /// not run again.
    pub fn close_control(&mut self) {
        self.control.mark_ended();
        let (_, dead) = std::sync::mpsc::channel();
        self.control_rx = ControlRx { rx: dead };
    }

    /// Did the job's deputy give the job to this body (it is away, or
    /// came home)? Then no other body may run it.
    pub fn has_deputy(&self) -> bool {
        self.job.site.has_deputy()
    }

    /// Is this the body of a job away from its home?
    pub fn is_away(&self) -> bool {
        self.job.site.is_remote()
    }

    /// The job's site, once its body has moved away (`Outcome::Moved`).
    pub fn into_site(self) -> Site {
        self.job.site
    }

    /// The job ended here: a body away from home reports it to the deputy.
    pub fn report_exit(&mut self, status: i32, message: &str) {
        self.job.site.report_exit(status, message);
    }

    /// Serves commands from other threads at a safe point. Returns the
    /// outcome if the job was handed over.
    fn serve_control(&mut self) -> Result<Option<Outcome>, VmError> {
        while let Ok(cmd) = self.control_rx.rx.try_recv() {
            match cmd {
                Command::Throttle(p) => self.throttle = p.min(99),
                Command::Probe { purpose, answer } => {
                    let r = self.shared_files_stay().and_then(|()| {
                        self.job.check_movable(purpose).map_err(|e| match e {
                            crate::site::SiteError::Unmovable { .. } | crate::site::SiteError::Children(_) => {
                                crate::control::PauseError::Unmovable(e.to_string())
                            }
                            e => crate::control::PauseError::Failed(e.to_string()),
                        })
                    });
                    let _ = answer.send(r);
                }
                Command::Pause { state, verdict, purpose } => {
                    // No write may be in flight when another body takes over.
                    self.job.site.flush();
                    let stopped = std::time::Instant::now();
                    let captured = self.capture(purpose).map(|s| (s, stopped));
                    let ok = captured.is_ok();
                    let _ = state.send(captured);
                    if ok {
                        let (to, resumed) = match verdict.recv() {
                            Ok(Verdict::Release(to)) => return Ok(Some(Outcome::Moved(to))),
                            Ok(Verdict::Settle { to, resumed }) => (to, Some(resumed)),
                            Err(_) => ("the body its deputy chose".into(), None),
                        };
                        // The move failed; but if the deputy already gave the
                        // job to the new body, this one must not go on.
                        let resume = self.job.site.may_resume();
                        // Before the sender hears it, so its next move
                        // presents a generation the deputy has not fenced.
                        *self.next_link.lock().unwrap() = self.job.site.next_link();
                        if let Some(answer) = resumed {
                            let _ = answer.send(resume);
                        }
                        if !resume {
                            return Ok(Some(Outcome::Moved(to)));
                        }
                    }
                }
            }
        }
        if self.throttle > 0 {
            // Stopped for p% of each kick period (the sender kicks every THROTTLE_PERIOD).
            let p = self.throttle as u64;
            std::thread::sleep(THROTTLE_PERIOD * p as u32 / (100 - p as u32));
        }
        Ok(None)
    }

    /// Returns to the job at `user` (CPL3 registers) through the ring-0
    /// `iretq`: the frame goes on the ring-0 stack.
    fn resume_user(&mut self, user: &kvm_regs) -> Result<(), VmError> {
        let frame = [user.rip, USER_CS as u64, user.rflags, user.rsp, USER_DS as u64];
        let mut g = self.job.ram.slice_mut(IRET_FRAME, 40)?;
        for (i, w) in frame.iter().enumerate() {
            g[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        drop(g);
        let mut regs = *user;
        regs.rip = IRET_RIP;
        regs.rsp = IRET_FRAME;
        self.vcpu.set_regs(&regs);
        Ok(())
    }

    /// The job's registers from an iret frame the VMM wrote.
    fn user_from_iret_frame(&self, regs: &kvm_regs) -> Result<kvm_regs, VmError> {
        let mut user = *regs;
        user.rip = self.job.ram.read_u64(regs.rsp)?;
        user.rflags = self.job.ram.read_u64(regs.rsp + 16)?;
        user.rsp = self.job.ram.read_u64(regs.rsp + 24)?;
        Ok(user)
    }

    /// Runs the job until it ends here or is moved away. In a process the
    /// job forked, this ends the process when the job ends.
    pub fn run(&mut self) -> Result<Outcome, VmError> {
        let r = self.run_job();
        if self.forked {
            self.exit_forked(r);
        }
        r
    }

    fn run_job(&mut self) -> Result<Outcome, VmError> {
        self.control.set_kicker(self.vcpu.bind());
        self.job.attach_to_vcpu_thread();
        self.job.threads.slice_start = self.job.clock.monotonic();
        let mut first = true;
        loop {
            if first || self.vcpu.kick_pending() {
                first = false;
                self.vcpu.take_kick();
                if let Some(outcome) = self.serve_control()? {
                    return Ok(outcome);
                }
                // A thread that waits (here, or since a restore) runs only
                // once something wakes it.
                if self.job.wait.is_some() {
                    if let Some(o) = self.return_to_user(Cur::Waits)? {
                        return Ok(o);
                    }
                    continue;
                }
            }
            if self.job.clock.follow_realtime() {
                self.job.clock.publish(&self.job.ram);
            }
            let exit = self.vcpu.run();
            self.job.stats.exits += 1;
            let next = match exit {
                Exit::IoOut { port: SYSCALL_PORT } => {
                    let regs = self.vcpu.regs();
                    if regs.rip != SYSCALL_EXIT_RIP {
                        return Err(VmError::Machine(format!("system-call exit from rip {:#x}", regs.rip)));
                    }
                    let mut user = regs;
                    user.rip = regs.rcx;
                    user.rflags = regs.r11;
                    self.job.current_rsp = user.rsp;
                    match self.job.syscall(&mut self.vcpu, &mut user) {
                        Flow::Exit(e) => return Ok(Outcome::Exited(e)),
                        Flow::ThreadExit(status) => self.thread_exit(status),
                        Flow::Continue if self.job.wait.is_some() => Cur::Waits,
                        Flow::Continue => Cur::Runs(user),
                        Flow::Fork(args) => Cur::Runs(self.fork(args, &user)?),
                        Flow::Exec(req) => match self.exec(&req) {
                            Ok(user) => Cur::Runs(user),
                            Err(e) => {
                                // The old program is gone: Linux kills the process then.
                                (self.job.log)(&format!("execve of {} failed: {e}", req.path.display()));
                                return Ok(Outcome::Exited(JobExit::Signaled(signal::SIGSEGV)));
                            }
                        },
                    }
                }
                Exit::IoOut { port: FAULT_PORT } => match self.handle_fault()? {
                    Ok(user) => Cur::Runs(user),
                    Err(e) => return Ok(Outcome::Exited(e)),
                },
                Exit::IoOut { port: BENCH_PORT } if self.allow_user_io => {
                    self.bench_exits += 1;
                    continue;
                }
                Exit::Interrupted => {
                    let regs = self.vcpu.regs_now();
                    if regs.rip == IRET_RIP {
                        // About to return to the job: its context is the frame.
                        Cur::Runs(self.user_from_iret_frame(&regs)?)
                    } else if (RING0_CODE_ADDR..RING0_CODE_ADDR + PAGE_SIZE).contains(&regs.rip) {
                        // On the way to an exit; signals and switches happen there.
                        continue;
                    } else {
                        self.job.current_rsp = regs.rsp;
                        Cur::Runs(regs)
                    }
                }
                Exit::Other(code) if code == 0x8000_0000 | libc::EFAULT as u32 && self.job.ram.has_file_maps() => {
                    // KVM found no page behind a file-mapped one: its file
                    // was cut short under the job. Linux sends SIGBUS for
                    // such an access; the job ends by it.
                    (self.job.log)("job killed by SIGBUS (a file its memory maps was truncated)");
                    return Ok(Outcome::Exited(JobExit::Signaled(signal::SIGBUS)));
                }
                Exit::Shutdown => {
                    let regs = self.vcpu.regs_now();
                    return Err(VmError::Machine(format!("the guest shut down (triple fault) at rip {:#x}", regs.rip)));
                }
                other => {
                    let regs = self.vcpu.regs_now();
                    return Err(VmError::Machine(format!("unexpected exit {other:?} at rip {:#x}", regs.rip)));
                }
            };
            if let Some(outcome) = self.return_to_user(next)? {
                return Ok(outcome);
            }
        }
    }

    /// The running thread called exit(2).
    fn thread_exit(&mut self, status: i32) -> Cur {
        if !self.job.has_threads() {
            return Cur::Last(status);
        }
        // pthread_join waits for this word to become 0.
        let addr = self.job.tid_address;
        if addr != 0 && self.job.ram.write_user_u32(addr, 0).is_ok() {
            self.job.futex_wake(addr, 1, u32::MAX);
        }
        Cur::Gone
    }

    /// Back to user mode: wakes threads whose wait ended, picks the thread
    /// to run (switching when the running one waits, exited, yielded or
    /// used up its slice), delivers its signals and sets up the vCPU.
    /// Returns the job's end, if it ended. Returns early, with the running
    /// thread still waiting, when the vCPU is kicked while every thread waits.
    fn return_to_user(&mut self, mut cur: Cur) -> Result<Option<Outcome>, VmError> {
        loop {
            if self.job.has_threads() || matches!(cur, Cur::Waits) {
                self.wake_threads();
            }
            cur = match cur {
                Cur::Last(status) => return Ok(Some(Outcome::Exited(JobExit::Exited(status)))),
                Cur::Runs(mut user) => {
                    let turn_over = self.job.has_threads()
                        && (std::mem::take(&mut self.job.threads.yield_now)
                            || self.job.clock.monotonic() - self.job.threads.slice_start >= crate::thread::SLICE_NS);
                    if turn_over && self.job.threads.runnable() > 0 {
                        self.park_running(user);
                        self.load_next();
                        continue_with(&mut cur, &mut self.job);
                        continue;
                    }
                    if let Err(e) = self.job.deliver_signals(&mut self.vcpu, &mut user) {
                        return Ok(Some(Outcome::Exited(e)));
                    }
                    self.resume_user(&user)?;
                    // Others waiting to run: come back when this slice ends;
                    // others waiting for a time: when it comes.
                    let slice_end = (self.job.threads.runnable() > 0)
                        .then_some(self.job.threads.slice_start + crate::thread::SLICE_NS);
                    let preempt = slice_end.into_iter().chain(self.job.threads.next_deadline()).min();
                    if self.job.timers.preempt != preempt {
                        self.job.timers.preempt = preempt;
                        self.job.timers.rearm(self.job.clock.host_offset());
                    }
                    return Ok(None);
                }
                Cur::Waits => {
                    if self.job.wait.is_none() {
                        // Its wait ended (wake_threads set the result).
                        Cur::Runs(self.job.wait_ctx.take().expect("a waiting thread has a context"))
                    } else if self.job.threads.runnable() > 0 {
                        let ctx = self.job.wait_ctx.take().expect("a waiting thread has a context");
                        self.park_running(ctx);
                        self.load_next();
                        Cur::Switched
                    } else {
                        if self.idle() {
                            // Kicked: serve it; the thread still waits.
                            return Ok(None);
                        }
                        Cur::Waits
                    }
                }
                Cur::Gone => {
                    self.load_next();
                    Cur::Switched
                }
                Cur::Switched => unreachable!(),
            };
            if matches!(cur, Cur::Switched) {
                continue_with(&mut cur, &mut self.job);
            }
        }
    }

    /// Parks the running thread with `ctx` as its user context.
    fn park_running(&mut self, ctx: kvm_regs) {
        let state = self.job.take_thread();
        let parked = crate::thread::Parked {
            state,
            regs: ctx,
            fs_base: self.vcpu.get_msr(cpu::MSR_FS_BASE),
            gs_base: self.vcpu.get_msr(cpu::MSR_GS_BASE),
            fpu: self.vcpu.xsave_bytes(),
        };
        self.job.threads.parked.push_back(parked);
    }

    /// Makes the next thread (the first runnable one, else the first) the
    /// running one; its context goes to `wait_ctx` (see `continue_with`).
    fn load_next(&mut self) {
        let t = &mut self.job.threads;
        let i = t.parked.iter().position(|p| p.state.wait.is_none()).unwrap_or(0);
        let p = t.parked.remove(i).expect("a thread to load");
        t.slice_start = self.job.clock.monotonic();
        self.vcpu.set_msr(cpu::MSR_FS_BASE, p.fs_base);
        self.vcpu.set_msr(cpu::MSR_GS_BASE, p.gs_base);
        let _ = self.vcpu.set_xsave_bytes(&p.fpu);
        self.job.put_thread(p.state);
        self.job.wait_ctx = Some(p.regs);
    }

    /// Ends waits that are over: deadlines passed, descriptors ready,
    /// signals a waiting thread would take.
    fn wake_threads(&mut self) {
        let job = &mut self.job;
        job.collect_events();
        let now = job.clock.monotonic();
        // Descriptors threads wait on, polled (through the site) without blocking.
        let mut recs = fd_waits(job);
        if !recs.is_empty() {
            let _ = job.site.poll(&mut recs, 0);
        }
        let ready = |fd: i32| {
            recs.chunks_exact(8).any(|r| i32::from_le_bytes(r[..4].try_into().unwrap()) == fd && r[6..8] != [0, 0])
        };
        let children = &job.children;
        let signals = &job.signals;
        let cause = |w: &crate::thread::Wait, blocked: u64, pending: u64| -> Option<Woken> {
            if signals.interrupts_thread(blocked, pending) {
                return Some(Woken::Signal);
            }
            match *w {
                crate::thread::Wait::Futex { deadline, .. } | crate::thread::Wait::Sleep { deadline, .. } => {
                    deadline.filter(|&d| d <= now).map(|_| Woken::Deadline)
                }
                crate::thread::Wait::Fd { fd, .. } => ready(fd).then_some(Woken::Ready),
                crate::thread::Wait::Retry { at } => (at <= now).then_some(Woken::Deadline),
                crate::thread::Wait::Child { pid } => children.ready(pid).then_some(Woken::Ready),
            }
        };
        let mut ends = Vec::new();
        for (i, p) in job.threads.parked.iter().enumerate() {
            if let Some((w, _)) = &p.state.wait {
                if let Some(c) = cause(w, p.state.blocked, p.state.pending) {
                    ends.push((i, c));
                }
            }
        }
        let current = job.wait.as_ref().and_then(|(w, _)| cause(w, job.signals.blocked, job.signals.pending));
        // A relative sleep cut short reports the time it had left.
        let ram = &job.ram;
        let write_rem = |w: &crate::thread::Wait, c: Woken| {
            if let (crate::thread::Wait::Sleep { deadline: Some(d), rem }, Woken::Signal) = (*w, c) {
                if rem != 0 {
                    let _ = ram.write_user(rem, &crate::clock::Timespec::from_nanos((d - now).max(0)).to_bytes());
                }
            }
        };
        for (i, c) in ends {
            let p = &mut job.threads.parked[i];
            let (w, nr) = p.state.wait.take().unwrap();
            write_rem(&w, c);
            let (rax, restart) = woken_result(w, c);
            p.regs.rax = rax;
            if restart {
                p.state.restart_nr = Some(nr);
            }
        }
        if let Some(c) = current {
            let (w, nr) = job.wait.take().unwrap();
            write_rem(&w, c);
            let (rax, restart) = woken_result(w, c);
            if let Some(ctx) = job.wait_ctx.as_mut() {
                ctx.rax = rax;
            }
            if restart {
                job.restart_nr = Some(nr);
            }
        }
    }

    /// Every thread waits: sleeps until the earliest deadline, a descriptor
    /// a thread waits on, a signal or a kick. Returns true if kicked.
    fn idle(&mut self) -> bool {
        let job = &mut self.job;
        let mut deadline = job.timers.next;
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut remote_fds = false;
        let waits = job.wait.iter().chain(job.threads.parked.iter().filter_map(|p| p.state.wait.as_ref()));
        for (w, _) in waits {
            match *w {
                crate::thread::Wait::Futex { deadline: Some(d), .. }
                | crate::thread::Wait::Sleep { deadline: Some(d), .. } => {
                    deadline = Some(deadline.map_or(d, |x: i64| x.min(d)));
                }
                crate::thread::Wait::Fd { fd, events } => match job.site.host_fd(fd) {
                    Some(h) => fds.push(libc::pollfd { fd: h, events, revents: 0 }),
                    None => remote_fds = true,
                },
                crate::thread::Wait::Retry { at } => deadline = Some(deadline.map_or(at, |x: i64| x.min(at))),
                crate::thread::Wait::Child { pid } => job.children.poll_fds(pid, &mut fds),
                _ => {}
            }
        }
        if remote_fds {
            // Descriptors served at home: wait there, in short slices so a
            // kick or a deadline here is not missed for long.
            let mut recs = fd_waits(job);
            let left = deadline.map_or(REMOTE_WAIT_MS, |d| ((d - job.clock.monotonic()).max(0) / 1_000_000) as i32);
            let _ = job.site.poll(&mut recs, left.clamp(0, REMOTE_WAIT_MS));
        } else {
            job.wait_for(deadline, &mut fds);
        }
        self.vcpu.kick_pending()
    }
    /// An exception stub exited: turn the fault into the signal Linux would
    /// send. Returns the job's end if the signal kills it.
    fn handle_fault(&mut self) -> Result<Result<kvm_regs, JobExit>, VmError> {
        let regs = self.vcpu.regs();
        let ram = &self.job.ram;
        let sp = regs.rsp;
        let vector = ram.read_u64(sp)? as u8;
        let has_err = agent::has_error_code(vector);
        let err = if has_err { ram.read_u64(sp + 8)? } else { 0 };
        let f = sp + 8 + if has_err { 8 } else { 0 };
        let (rip, cs, rflags, rsp) =
            (ram.read_u64(f)?, ram.read_u64(f + 8)?, ram.read_u64(f + 16)?, ram.read_u64(f + 24)?);
        if cs & 3 != 3 {
            return Err(VmError::Machine(format!(
                "exception {vector} in ring 0 at rip {rip:#x} (error code {err:#x})"
            )));
        }
        let cr2 = if vector == 14 { self.vcpu.sregs().cr2 } else { 0 };
        let mut user = regs;
        user.rip = rip;
        user.rflags = rflags;
        user.rsp = rsp;
        self.job.current_rsp = rsp;
        let (sig, info, what) = fault_signal(vector, err, cr2, rip);
        self.job.force_signal(sig, info);
        match self.job.deliver_signals(&mut self.vcpu, &mut user) {
            Err(exit) => {
                if exit == JobExit::Signaled(sig) {
                    let addr = if info.code > 0 { info.addr } else { 0 };
                    (self.job.log)(&format!(
                        "job killed by {} ({what}) at rip {rip:#x}, address {addr:#x}",
                        signal::name(sig)
                    ));
                }
                Ok(Err(exit))
            }
            Ok(()) => Ok(Ok(user)),
        }
    }
}

/// The signal, siginfo and a description for an exception, as Linux maps them.
fn fault_signal(vector: u8, err: u64, cr2: u64, rip: u64) -> (u32, SigInfo, String) {
    use signal::*;
    let info = |code: i32, addr: u64| SigInfo { code, addr, trapno: vector as u64, err, value: 0 };
    match vector {
        0 => (SIGFPE, info(FPE_INTDIV, rip), "divide error".into()),
        1 | 3 => (SIGTRAP, info(if vector == 3 { SI_KERNEL } else { TRAP_BRKPT }, 0), "breakpoint".into()),
        6 => (SIGILL, info(ILL_ILLOPN, rip), "invalid opcode".into()),
        11 | 12 => (SIGBUS, info(SI_KERNEL, 0), "segment fault".into()),
        13 => (SIGSEGV, info(SI_KERNEL, 0), "general protection fault".into()),
        14 => {
            let code = if err & 1 != 0 { SEGV_ACCERR } else { SEGV_MAPERR };
            let access = if err & 16 != 0 {
                "instruction fetch"
            } else if err & 2 != 0 {
                "write"
            } else {
                "read"
            };
            let kind = if err & 1 != 0 { "protection violation" } else { "unmapped address" };
            (SIGSEGV, info(code, cr2), format!("page fault: {access}, {kind}"))
        }
        16 | 19 => (SIGFPE, info(FPE_FLTINV, rip), "floating-point exception".into()),
        17 => (SIGBUS, info(BUS_ADRALN, cr2), "alignment check".into()),
        _ => (SIGSEGV, info(SI_KERNEL, 0), format!("exception {vector}")),
    }
}
