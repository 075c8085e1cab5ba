/*
 * fuzz: thousands of system calls with hostile arguments (wild and kernel
 * pointers, huge lengths, bad descriptors, random flags). The VMM must
 * answer every one without failing; the job finishes and says "done".
 * Calls that would end or freeze the job itself, or damage files outside
 * the scratch directory it runs in, are left out.
 *
 *   fuzz [SEED [COUNT]]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The generator state lives on main's stack, far from the buffer that
 * calls scribble on (a call may legitimately write past it). */
static uint64_t *rng;
static uint64_t next(void)
{
	*rng ^= *rng << 13;
	*rng ^= *rng >> 7;
	*rng ^= *rng << 17;
	return *rng;
}

static const int skip[] = {
	SYS_exit, SYS_exit_group, SYS_rt_sigreturn, SYS_kill, SYS_tkill, SYS_tgkill, SYS_rt_sigqueueinfo,
	SYS_rt_tgsigqueueinfo, SYS_pause, SYS_rt_sigsuspend, SYS_nanosleep, SYS_clock_nanosleep, SYS_select,
	SYS_pselect6, SYS_poll, SYS_ppoll, SYS_epoll_wait, SYS_epoll_pwait, SYS_futex, SYS_rt_sigtimedwait,
	SYS_wait4, SYS_waitid, SYS_read, SYS_readv, SYS_pread64, SYS_preadv, SYS_preadv2, SYS_recvfrom,
	SYS_recvmsg, SYS_accept, SYS_accept4, SYS_flock, SYS_fcntl, SYS_msgrcv, SYS_semop, SYS_semtimedop,
	SYS_munmap, SYS_mremap, SYS_mmap, SYS_brk, SYS_madvise, SYS_arch_prctl, SYS_rt_sigaction,
	SYS_rt_sigprocmask, SYS_sigaltstack, SYS_set_tid_address, SYS_prctl, SYS_setrlimit, SYS_prlimit64,
	SYS_unlink, SYS_unlinkat, SYS_rmdir, SYS_rename, SYS_renameat, SYS_renameat2, SYS_chmod, SYS_fchmod,
	SYS_fchmodat, SYS_chown, SYS_fchown, SYS_lchown, SYS_fchownat, SYS_truncate, SYS_ftruncate, SYS_link,
	SYS_linkat, SYS_symlink, SYS_symlinkat, SYS_utimensat, SYS_utimes, SYS_utime, SYS_futimesat,
	SYS_chdir, SYS_fchdir, SYS_chroot, SYS_mount, SYS_umount2, SYS_pivot_root, SYS_swapon, SYS_swapoff,
	SYS_reboot, SYS_sethostname, SYS_setdomainname, SYS_settimeofday, SYS_clock_settime, SYS_adjtimex,
	SYS_clock_adjtime, SYS_kexec_load, SYS_init_module, SYS_delete_module, SYS_setpgid, SYS_setsid,
	SYS_vhangup, SYS_ioctl, SYS_sendfile, SYS_splice, SYS_tee, SYS_vmsplice, SYS_copy_file_range,
	SYS_fallocate, SYS_close, SYS_close_range, SYS_dup2, SYS_dup3, SYS_sync, SYS_syncfs, SYS_msync,
	SYS_mprotect, SYS_pkey_mprotect, SYS_remap_file_pages, SYS_io_uring_enter, SYS_mlockall,
	SYS_clone, SYS_clone3, SYS_fork, SYS_vfork, SYS_execve, SYS_execveat, SYS_ptrace, SYS_seccomp,
	SYS_setuid, SYS_setgid, SYS_setreuid, SYS_setregid, SYS_setresuid, SYS_setresgid, SYS_setgroups,
	SYS_setfsuid, SYS_setfsgid, SYS_capset, SYS_personality, SYS_unshare, SYS_setns, SYS_sched_setaffinity,
	SYS_sched_setscheduler, SYS_sched_setparam, SYS_setpriority, SYS_ioprio_set, SYS_mknod, SYS_mknodat,
	SYS_open, SYS_openat, SYS_creat, SYS_openat2, SYS_name_to_handle_at, SYS_open_by_handle_at,
	SYS_mkdir, SYS_mkdirat, SYS_umask, SYS_quotactl, SYS_acct, SYS_iopl, SYS_ioperm, SYS_modify_ldt,
	SYS_write, SYS_writev, SYS_pwrite64, SYS_pwritev, SYS_pwritev2, SYS_sendto, SYS_sendmsg,
	SYS_setxattr, SYS_lsetxattr, SYS_fsetxattr, SYS_removexattr, SYS_lremovexattr, SYS_fremovexattr,
	SYS_fanotify_mark, SYS_bpf, SYS_perf_event_open, SYS_userfaultfd,
	SYS_process_vm_writev, SYS_move_pages, SYS_mbind, SYS_set_mempolicy, SYS_migrate_pages,
	SYS_rseq, SYS_set_robust_list, SYS_getrandom, SYS_alarm, SYS_setitimer, SYS_timer_settime, SYS_timerfd_settime,
};

static int skipped(long nr)
{
	for (size_t i = 0; i < sizeof skip / sizeof *skip; i++)
		if (skip[i] == nr)
			return 1;
	return 0;
}

static struct {
	char buf[8192];
	char spill[1 << 20];
} area;
#define buf area.buf

static long arg(void)
{
	switch (next() % 12) {
	case 0: return 0;
	case 1: return -1;
	case 2: return next() % 64;
	case 3: return (long)buf;
	case 4: return (long)buf + (long)(next() % sizeof buf);
	case 5: return 1;
	case 6: return (long)0xffff800000000000ULL;
	case 7: return (long)(next() | 0x8000000000000000ULL);
	case 8: return (long)0x7ffffffff000ULL;
	case 9: return (long)(next() & 0xffffffff);
	case 10: return 0x1000;
	default: return (long)next();
	}
}

int main(int argc, char **argv)
{
	uint64_t state = argc > 1 ? strtoull(argv[1], NULL, 0) | 1 : 88172645463325252ULL;
	rng = &state;
	long count = argc > 2 ? atol(argv[2]) : 20000;
	long made = 0;
	while (made < count) {
		long nr = next() % 460;
		if (nr > 335 && nr < 424)
			continue;
		if (skipped(nr))
			continue;
		for (size_t i = 0; i < sizeof buf; i++)
			buf[i] = (char)next();
		buf[next() % sizeof buf] = 0;
		syscall(nr, arg(), arg(), arg(), arg(), arg(), arg());
		made++;
	}
	printf("done: %ld calls\n", made);
	return 0;
}
