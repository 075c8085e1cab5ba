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
	printf("still alive\n");
	return 0;
}
