/* Random system calls with hostile arguments, across every family the
 * VMM implements: files, descriptors, memory, signals, time, futexes,
 * identity, limits. Wild and kernel pointers, huge lengths, bad
 * descriptors, random flags. The VMM must answer each (a result or an
 * error) and never fail, nor write outside the guest; the job ends
 * normally and says how many calls it made.
 *   fuzzsys [SEED [COUNT]]
 * What would end or stall the job itself is left out (exit, kill of
 * itself, pause, execve, fork, blocking reads of its stdin) or tamed
 * (timeouts zero, unmaps and protections only of its own scratch area,
 * every descriptor it makes non-blocking: a blocking read of its own empty
 * pipe, or a write to its full one, would stall a native run as well). */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static uint64_t s = 0x9e3779b97f4a7c15ULL;
static uint64_t next(void)
{
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return s;
}

static char buf[256]; /* paths it writes itself; never a call's output */
/* 64 pages a call may read, write, unmap and protect, then 64 MiB of
 * PROT_NONE: a huge length runs into the guard (EFAULT or a short count,
 * as on Linux), never over this program's own data. */
static char *scratch;
#define SCRATCH (64 * 4096)
#define GUARD (64 << 20)

static uint64_t arg(void)
{
	switch (next() % 12) {
	case 0: return 0;
	case 1: return (uint64_t)scratch;
	case 2: return (uint64_t)scratch + next() % SCRATCH;
	case 3: return 0xffff800000000000ULL + next() % 4096; /* the kernel's half */
	case 4: return next() % 64;
	case 5: return (uint64_t)-1;
	case 6: return next() % 4;
	case 7: return 1ULL << (next() % 64);
	case 8: return (uint64_t)scratch + (next() % 64) * 4096;
	case 9: return 0x1000 + next() % 0x100000; /* low, unmapped */
	case 10: return (uint64_t)scratch + SCRATCH - next() % 16; /* runs into the guard */
	default: return next();
	}
}

/* A page of non-NUL bytes before an inaccessible page: a name that never
 * ends. */
static char *nonul;

/* A path: one of its own names (its directory and below, its own /proc
 * entries), or a pointer nothing can be read from, or a name running into
 * an inaccessible page. Never whatever bytes its memory holds: the VMM
 * serves the job's files as its caller, and for a job of root "/" or ".."
 * would reach the host's own directories (a fuzzer once turned "/" to mode
 * 000 that way). Descriptors it names come from these opens only. */
static uint64_t path_arg(void)
{
	static const char *names[] = { "f0", "f1", "d0", "d0/f2", "/proc/self/fd/3", "/proc/self/maps", ".", "" };
	switch (next() % 6) {
	case 0: return 0;
	case 1: return 0xffff800000000000ULL + next() % 4096;
	case 2: return (uint64_t)nonul + 4096 - 1 - next() % 64;
	default:
		snprintf(buf, sizeof buf, "%s", names[next() % 8]);
		return (uint64_t)buf;
	}
}

static void on_signal(int sig) { (void)sig; }

int main(int argc, char **argv)
{
	if (argc > 1)
		s = strtoull(argv[1], 0, 0) | 1;
	long count = argc > 2 ? atol(argv[2]) : 20000;
	scratch = mmap(0, SCRATCH + GUARD, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (scratch == MAP_FAILED || mprotect(scratch, SCRATCH, PROT_READ | PROT_WRITE))
		return 1;
	nonul = mmap(0, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (nonul == MAP_FAILED || mprotect(nonul + 4096, 4096, PROT_NONE))
		return 1;
	memset(nonul, 'a', 4096);
	mprotect(nonul, 4096, PROT_READ); /* no call may write a NUL into it */
	/* Signals a call may raise come here, not to the default action. */
	for (int sig = 1; sig < 32; sig++)
		if (sig != SIGKILL && sig != SIGSTOP && sig != SIGSEGV && sig != SIGBUS)
			signal(sig, on_signal);
	static const long calls[] = {
		SYS_read, SYS_write, SYS_pread64, SYS_pwrite64, SYS_readv, SYS_writev, SYS_openat, SYS_close,
		SYS_newfstatat, SYS_fstat, SYS_lseek, SYS_ioctl, SYS_fcntl, SYS_dup, SYS_dup3, SYS_pipe2,
		SYS_getdents64, SYS_getcwd, SYS_chdir, SYS_mkdirat, SYS_unlinkat, SYS_renameat, SYS_readlinkat,
		SYS_faccessat, SYS_fchmod, SYS_ftruncate, SYS_fsync, SYS_statx, SYS_utimensat, SYS_symlinkat,
		SYS_mmap, SYS_munmap, SYS_mprotect, SYS_madvise, SYS_brk, SYS_mremap, SYS_msync, SYS_mincore,
		SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigpending, SYS_sigaltstack, SYS_rt_sigtimedwait,
		SYS_clock_gettime, SYS_clock_getres, SYS_gettimeofday, SYS_nanosleep, SYS_clock_nanosleep,
		SYS_getitimer, SYS_setitimer, SYS_timer_create, SYS_timer_settime, SYS_timer_delete,
		SYS_futex, SYS_getpid, SYS_gettid, SYS_getppid, SYS_getuid, SYS_getgid, SYS_uname, SYS_sysinfo,
		SYS_getrlimit, SYS_prlimit64, SYS_getrusage, SYS_times, SYS_sched_getaffinity, SYS_sched_yield,
		SYS_getrandom, SYS_prctl, SYS_arch_prctl, SYS_set_tid_address, SYS_poll, SYS_ppoll, SYS_select,
		SYS_wait4, SYS_umask, SYS_getpgid, SYS_getsid, SYS_socket, SYS_sendfile, SYS_copy_file_range,
		SYS_eventfd2, SYS_epoll_create1, SYS_timerfd_create, SYS_getxattr, SYS_flock, SYS_fallocate,
		999, 1000, 335, 450, /* unknown numbers */
	};
	long made = 0;
	for (long i = 0; i < count; i++) {
		long nr = calls[next() % (sizeof calls / sizeof calls[0])];
		uint64_t a[6];
		for (int k = 0; k < 6; k++)
			a[k] = arg();
		/* Never its stdin, stdout or stderr: they are the caller's (a
		 * terminal, the test's pipes), and what it prints is checked. */
		switch (nr) {
		case SYS_read: case SYS_pread64: case SYS_readv: case SYS_write: case SYS_pwrite64:
		case SYS_writev: case SYS_close: case SYS_fstat: case SYS_lseek: case SYS_ioctl:
		case SYS_fcntl: case SYS_dup: case SYS_dup3: case SYS_getdents64: case SYS_fchmod:
		case SYS_ftruncate: case SYS_fsync: case SYS_flock: case SYS_fallocate: case SYS_sendfile:
			if (a[0] < 3) a[0] += 3;
			if (nr == SYS_dup3 && a[1] < 3) a[1] += 3;
			break;
		case SYS_copy_file_range:
			if (a[2] < 3) a[2] += 3;
			break;
		case SYS_mmap:
			if (a[4] < 3) a[4] += 3;
			break;
		default:
			break;
		}
		switch (nr) {
		case SYS_munmap: case SYS_mprotect: case SYS_madvise: case SYS_mremap: case SYS_msync:
			/* Only its own scratch pages: the rest is its code and stack. */
			a[0] = (uint64_t)scratch + (next() % 64) * 4096;
			a[1] %= SCRATCH - (a[0] - (uint64_t)scratch) + 1;
			if (nr == SYS_mremap) a[3] &= ~2ULL; /* no MREMAP_FIXED over its own pages */
			if (nr == SYS_madvise && a[2] == MADV_DONTFORK) a[2] = 0;
			break;
		case SYS_mmap:
			a[2] &= 7;
			a[3] &= ~(uint64_t)MAP_FIXED; /* MAP_FIXED would land on its code */
			a[3] &= ~(uint64_t)0x100000;  /* nor MAP_FIXED_NOREPLACE's cousins */
			break;
		case SYS_brk:
			a[0] = 0;
			break;
		case SYS_rt_sigaction:
			/* Never a fatal default for a signal it will get, nor SIGSEGV's handler. */
			if (a[0] == SIGSEGV || a[0] == SIGBUS || a[0] == SIGFPE || a[0] == SIGILL) a[0] = SIGUSR2;
			if (a[1] != 0) a[1] = 0;
			break;
		case SYS_rt_sigprocmask:
			a[1] = 0; /* reading the mask only: a blocked SIGSEGV would turn into a kill */
			break;
		case SYS_rt_sigtimedwait: {
			static const struct { long s, ns; } zero;
			a[2] = (uint64_t)&zero;
			break;
		}
		case SYS_sigaltstack:
			a[0] = 0;
			break;
		case SYS_nanosleep: case SYS_clock_nanosleep: {
			static const struct { long s, ns; } tiny = { 0, 1000 };
			if (nr == SYS_nanosleep) a[0] = (uint64_t)&tiny;
			else { a[0] &= 1; a[1] &= 1; a[2] = (uint64_t)&tiny; } /* a CPU-time clock would not advance while it sleeps */
			break;
		}
		case SYS_setitimer: case SYS_timer_settime: case SYS_timer_create:
			a[1] = 0; a[2] = 0; /* disarm or report only */
			break;
		case SYS_futex: {
			static const struct { long s, ns; } zero;
			a[3] = (uint64_t)&zero; /* waits time out at once */
			a[1] &= 0xff;
			if ((a[1] & 0x7f) == 9 || (a[1] & 0x7f) == 11) a[1] = 1; /* no PI or requeue waits */
			break;
		}
		case SYS_poll: case SYS_ppoll: case SYS_select:
			a[2] = 0;
			if (nr == SYS_ppoll) { static const struct { long s, ns; } zero; a[2] = (uint64_t)&zero; a[3] = 0; }
			if (nr == SYS_select) { static struct { long s, us; } zero; zero.s = zero.us = 0; a[4] = (uint64_t)&zero; }
			break;
		case SYS_wait4:
			a[2] |= 1; /* WNOHANG */
			break;
		case SYS_prctl:
			if (a[0] == 1 || a[0] == 4 || a[0] == 22 || a[0] == 29 || a[0] == 38)
				a[0] = 16; /* no PDEATHSIG, DUMPABLE, SECCOMP, TIMERSLACK (every sleep would last it), NO_NEW_PRIVS games */
			break;
		case SYS_arch_prctl:
			if (a[0] == 0x1001 || a[0] == 0x1002) a[0] = 0x1003; /* ARCH_SET_GS/FS: its TLS */
			break;
		case SYS_set_tid_address:
			a[0] = 0;
			break;
		case SYS_chdir:
			a[0] = (uint64_t)".";
			break;
		case SYS_openat: case SYS_mkdirat: case SYS_unlinkat: case SYS_renameat: case SYS_readlinkat:
		case SYS_faccessat: case SYS_newfstatat: case SYS_statx: case SYS_utimensat: case SYS_symlinkat:
		case SYS_getxattr:
			if (nr == SYS_getxattr) a[0] = path_arg(); else a[1] = path_arg();
			if (nr != SYS_getxattr && next() % 2) a[0] = (uint64_t)-100; /* AT_FDCWD */
			if (nr == SYS_openat) a[2] |= O_NONBLOCK; /* a FIFO's open would wait for a writer */
			if (nr == SYS_renameat || nr == SYS_symlinkat) a[2] = (uint64_t)-100, a[3] = (uint64_t)"f3";
			break;
		case SYS_pipe2:
			a[1] |= O_NONBLOCK;
			break;
		case SYS_eventfd2: case SYS_timerfd_create:
			a[1] |= O_NONBLOCK; /* EFD_NONBLOCK, TFD_NONBLOCK */
			break;
		case SYS_socket:
			a[1] |= O_NONBLOCK; /* SOCK_NONBLOCK */
			break;
		case SYS_fcntl:
			if (a[1] == F_SETFL) a[2] |= O_NONBLOCK;
			if (a[1] == F_SETLKW) a[1] = F_SETLK;
			break;
		case SYS_ioctl:
			if (a[1] == 0x5421) a[1] = 0x541b; /* not FIONBIO: FIONREAD */
			break;
		case SYS_flock:
			a[1] |= 4; /* LOCK_NB */
			break;
		case SYS_fallocate: case SYS_ftruncate:
			/* Sizes a test directory can hold. */
			if (nr == SYS_fallocate) a[2] %= 1 << 20, a[3] %= 1 << 20;
			else a[1] %= 1 << 20;
			break;
		case SYS_sendfile: case SYS_copy_file_range:
			/* A file sent to itself grows as long as the count lasts. */
			if (nr == SYS_sendfile) a[3] %= 1 << 20; else a[4] %= 1 << 20;
			break;
		case SYS_prlimit64:
			a[0] = 0; a[2] = 0; /* read only: a lower limit could starve it */
			break;
		case SYS_umask:
			a[0] &= 0777;
			break;
		}
		syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
		made++;
	}
	printf("made %ld calls\n", made);
	return 0;
}
