/* Clocks through the vDSO and through system calls agree: interleaved
 * reads never go backwards, the wall clock matches, sleeps never end
 * early by the job's own clock. `clocks calls N` only reads the clocks
 * through libc (N times each), for counting the exits they make. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

static long long libc_now(clockid_t id)
{
	struct timespec t;
	clock_gettime(id, &t);
	return ns(t);
}

static long long sys_now(clockid_t id)
{
	struct timespec t;
	syscall(SYS_clock_gettime, id, &t);
	return ns(t);
}

int main(int argc, char **argv)
{
	if (argc > 2 && !strcmp(argv[1], "calls")) {
		int n = atoi(argv[2]);
		struct timeval tv;
		long long sum = 0;
		for (int i = 0; i < n; i++) {
			sum += libc_now(CLOCK_MONOTONIC) & 1;
			gettimeofday(&tv, NULL);
			sum += time(NULL) & 1;
		}
		printf("done %d\n", sum >= 0 ? n : -1);
		return 0;
	}
	printf("vDSO: %s\n", getauxval(AT_SYSINFO_EHDR) ? "yes" : "no");

	const clockid_t mono[] = {CLOCK_MONOTONIC, CLOCK_MONOTONIC_RAW, CLOCK_BOOTTIME, CLOCK_MONOTONIC_COARSE};
	const char *names[] = {"MONOTONIC", "MONOTONIC_RAW", "BOOTTIME", "MONOTONIC_COARSE"};
	for (int c = 0; c < 4; c++) {
		long long prev = 0;
		int backwards = 0;
		for (int i = 0; i < 20000; i++) {
			long long t = (i % 100 == 0) ? sys_now(mono[c]) : libc_now(mono[c]);
			backwards += t < prev;
			prev = t;
		}
		printf("%s: backwards %d\n", names[c], backwards);
	}
	/* The monotonic clocks are one clock (COARSE may lag by a tick). */
	long long a = libc_now(CLOCK_MONOTONIC), b = libc_now(CLOCK_BOOTTIME), d = libc_now(CLOCK_MONOTONIC);
	printf("BOOTTIME within MONOTONIC reads: %s\n", b >= a && b <= d + 1000000000LL ? "yes" : "no");

	long long r1 = libc_now(CLOCK_REALTIME), r2 = sys_now(CLOCK_REALTIME), r3 = libc_now(CLOCK_REALTIME);
	printf("REALTIME vDSO vs system call: %s\n", r2 >= r1 - 1000000 && r2 <= r3 + 1000000 ? "agree" : "DIFFER");
	struct timeval tv;
	gettimeofday(&tv, NULL);
	long long g = tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL;
	printf("gettimeofday vs REALTIME: %s\n", llabs(g - r3) < 50000000 ? "agree" : "DIFFER");
	time_t tt;
	time_t t0 = time(&tt);
	printf("time(): %s\n", t0 == tt && llabs((long long)t0 - r3 / 1000000000LL) <= 1 ? "agrees" : "DIFFERS");
	struct timespec res;
	printf("clock_getres MONOTONIC: %d\n", clock_getres(CLOCK_MONOTONIC, &res) == 0 && ns(res) > 0);

	/* Absolute sleeps end at or after their deadline, read through the vDSO. */
	int early = 0;
	for (int i = 1; i <= 20; i++) {
		struct timespec now, until;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long long deadline = ns(now) + i * 500000LL;
		until.tv_sec = deadline / 1000000000LL;
		until.tv_nsec = deadline % 1000000000LL;
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL);
		early += libc_now(CLOCK_MONOTONIC) < deadline;
		usleep(300);
	}
	printf("absolute sleeps ending early: %d\n", early);

	long long c1 = libc_now(CLOCK_PROCESS_CPUTIME_ID);
	volatile unsigned long spin = 0;
	for (unsigned long i = 0; i < 20000000; i++)
		spin += i;
	long long c2 = libc_now(CLOCK_PROCESS_CPUTIME_ID);
	printf("CPU time advances: %s\n", c2 > c1 ? "yes" : "no");
	return 0;
}
