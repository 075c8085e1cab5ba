/*
 * exits: the cost of a bare I/O-port exit and of a system call, measured
 * inside one micro-VM (run by the benchmark with IOPL 3 so that user code
 * may write the benchmark port).
 *
 *   exits N     prints "bare_exit_ns X" and "getpid_ns Y"
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int64_t now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	/* interleave rounds so drift affects both alike */
	int64_t bare = 0, sys = 0;
	for (int round = 0; round < 10; round++) {
		int64_t t0 = now();
		for (long i = 0; i < n / 10; i++)
			__asm__ volatile("outb %%al, $0xe2" ::"a"(0));
		int64_t t1 = now();
		for (long i = 0; i < n / 10; i++)
			syscall(SYS_getpid);
		int64_t t2 = now();
		bare += t1 - t0;
		sys += t2 - t1;
	}
	printf("bare_exit_ns %.1f\n", (double)bare / n);
	printf("getpid_ns %.1f\n", (double)sys / n);
	return 0;
}
