/* System calls with bad pointers and lengths must fail with EFAULT (or
 * the error Linux gives), never crash the VMM. Raw syscalls, so that libc
 * does not touch the pointers first. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void check(const char *what, long r)
{
	printf("%-34s -> %ld %s\n", what, r, r < 0 ? strerror(errno) : "");
}

int main(void)
{
	char buf[64];
	void *wild = (void *)0x1;
	void *kernel = (void *)0xffff800000000000ULL;
	void *huge = (void *)0x7fffffffff00ULL;
	check("write(1, 0x1, 10)", syscall(SYS_write, 1, wild, 10));
	check("write(1, kernel, 10)", syscall(SYS_write, 1, kernel, 10));
	check("write(1, buf, -1)", syscall(SYS_write, 1, buf, (size_t)-1));
	int self = open("/proc/self/exe", O_RDONLY);
	check("read(file, NULL, 10)", syscall(SYS_read, self, NULL, 10));
	check("read(file, kernel, 10)", syscall(SYS_read, self, kernel, 10));
	check("open(0x1)", syscall(SYS_open, wild, O_RDONLY));
	check("openat(AT_FDCWD, kernel)", syscall(SYS_openat, AT_FDCWD, kernel, O_RDONLY));
	check("stat(\"/\", 0x1)", syscall(SYS_stat, "/", wild));
	check("fstat(1, huge)", syscall(SYS_fstat, 1, huge));
	check("clock_gettime(0, 0x1)", syscall(SYS_clock_gettime, 0, wild));
	check("gettimeofday(kernel)", syscall(SYS_gettimeofday, kernel, NULL));
	check("uname(0x1)", syscall(SYS_uname, wild));
	check("getcwd(0x1, 100)", syscall(SYS_getcwd, wild, 100));
	check("writev(1, 0x1, 1)", syscall(SYS_writev, 1, wild, 1));
	struct { void *base; size_t len; } iov = { wild, 5 };
	check("writev(1, {0x1, 5}, 1)", syscall(SYS_writev, 1, &iov, 1));
	check("rt_sigaction(10, 0x1, 0)", syscall(SYS_rt_sigaction, 10, wild, NULL, 8));
	check("getrandom(0x1, 16)", syscall(SYS_getrandom, wild, 16, 0));
	check("nanosleep(0x1)", syscall(SYS_nanosleep, wild, NULL));
	check("pipe(0x1)", syscall(SYS_pipe, wild));
	check("arch_prctl(GET_FS, 0x1)", syscall(SYS_arch_prctl, 0x1003, wild));
	check("close(12345)", syscall(SYS_close, 12345));
	check("read(-1)", syscall(SYS_read, -1, buf, 1));
	check("munmap(unaligned)", syscall(SYS_munmap, (void *)0x1001, 4096));
	check("mmap(len 0)", syscall(SYS_mmap, NULL, 0, 3, 0x22, -1, 0) == -1 ? -1 : 0);
	/* A long path with no NUL in the first PATH_MAX bytes. */
	static char longpath[8192];
	memset(longpath, 'a', sizeof longpath - 1);
	check("open(8191-byte path)", syscall(SYS_open, longpath, O_RDONLY));
	/* Processes: wild names, argument arrays and result pointers. */
	char *argv_wild[] = {"x", (char *)wild, NULL};
	char *argv_ok[] = {"x", NULL};
	check("execve(0x1, ok, ok)", syscall(SYS_execve, wild, argv_ok, argv_ok + 1));
	check("execve(exe, 0x1, NULL)", syscall(SYS_execve, "/proc/self/exe", wild, NULL));
	check("execve(exe, {x, 0x1}, NULL)", syscall(SYS_execve, "/proc/self/exe", argv_wild, NULL));
	check("execve(exe, ok, kernel)", syscall(SYS_execve, "/proc/self/exe", argv_ok, kernel));
	check("execve(8191-byte path)", syscall(SYS_execve, longpath, argv_ok, NULL));
	check("execveat(-1, \"\", EMPTY_PATH)", syscall(SYS_execveat, -1, "", argv_ok, NULL, 0x1000));
	check("execveat(bad flags)", syscall(SYS_execveat, AT_FDCWD, "/proc/self/exe", argv_ok, NULL, 0x4));
	check("wait4(-1, 0x1) no child", syscall(SYS_wait4, -1, wild, 0, NULL));
	check("waitid(P_ALL, 0x1) no child", syscall(SYS_waitid, 0, 0, wild, 4, NULL));
	check("waitid(99, ..)", syscall(SYS_waitid, 99, 0, buf, 4, NULL));
	long child = syscall(SYS_fork);
	if (child == 0)
		syscall(SYS_exit_group, 3);
	check("wait4(child, 0x1)", syscall(SYS_wait4, child, wild, 0, NULL));
	check("wait4(child, ok, 0, kernel)", syscall(SYS_wait4, child, buf, 0, kernel));
	check("wait4(child, bad options)", syscall(SYS_wait4, child, buf, 0x100, NULL));
	child = syscall(SYS_fork);
	if (child == 0)
		syscall(SYS_exit_group, 4);
	check("wait4(child, bad options)", syscall(SYS_wait4, child, buf, 0x100, NULL));
	check("wait4(child, ok, 0, kernel)", syscall(SYS_wait4, child, buf, 0, kernel));
	check("wait4(child) after EFAULT", syscall(SYS_wait4, child, buf, 0, NULL));
	printf("still alive\n");
	return 0;
}
