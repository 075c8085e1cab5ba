/* Hostile arguments to the event and descriptor-table calls (wild and
 * kernel pointers, huge counts, bad descriptors, random flags and
 * clocks): the VMM answers each as an error or a result, never fails.
 *   fuzzfds [SEED [COUNT]] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

static char buf[4096];

static uint64_t arg(void)
{
	switch (next() % 9) {
	case 0: return 0;
	case 1: return (uint64_t)buf;
	case 2: return (uint64_t)buf + next() % sizeof buf;
	case 3: return 0xffff800000000000ULL + next() % 4096;
	case 4: return next() % 64;
	case 5: return (uint64_t)-1;
	case 6: return next() % 4;
	case 7: return 1ULL << (next() % 64);
	default: return next();
	}
}

int main(int argc, char **argv)
{
	if (argc > 1)
		s = strtoull(argv[1], 0, 0) | 1;
	long count = argc > 2 ? atol(argv[2]) : 20000;
	static const long calls[] = {
		SYS_epoll_create, SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_wait, SYS_epoll_pwait, SYS_epoll_pwait2,
		SYS_eventfd, SYS_eventfd2, SYS_timerfd_create, SYS_timerfd_settime, SYS_timerfd_gettime,
		SYS_signalfd, SYS_signalfd4, SYS_fadvise64, SYS_readahead, SYS_mknodat, SYS_close_range, SYS_read,
		SYS_write, SYS_dup3, SYS_fcntl, SYS_getdents64, SYS_lseek, SYS_readlinkat,
	};
	for (long i = 0; i < count; i++) {
		long nr = calls[next() % (sizeof calls / sizeof calls[0])];
		uint64_t a[6];
		for (int k = 0; k < 6; k++)
			a[k] = arg();
		/* Descriptors small, waits short, nothing that blocks for long. */
		a[0] = nr == SYS_mknodat || nr == SYS_readlinkat ? (uint64_t)-100 : 3 + next() % 40; /* not stdio */
		if (nr == SYS_mknodat) {
			snprintf(buf, 32, "n%u", (unsigned)(next() % 8));
			a[1] = (uint64_t)buf;
		}
		if (nr == SYS_readlinkat) {
			snprintf(buf, 32, "/proc/self/fd/%u", (unsigned)(next() % 40));
			a[1] = (uint64_t)buf;
		}
		if (nr == SYS_epoll_wait || nr == SYS_epoll_pwait)
			a[3] = next() % 2;
		static const struct { long s, ns; } zero;
		if (nr == SYS_epoll_pwait2)
			a[3] = (uint64_t)&zero;
		if (nr == SYS_close_range && a[0] < 3)
			a[0] = 3;
		if (nr == SYS_read || nr == SYS_write) {
			if (a[0] < 3)
				a[0] += 3;
			a[2] %= 64;
		}
		if (nr == SYS_dup3 && a[1] < 3)
			a[1] = 3 + next() % 40;
		if (nr == SYS_fcntl)
			a[1] = next() % 12 == 4 ? 3 : next() % 12 % 7; /* never F_SETFL, F_SETLKW */
		if (nr == SYS_fcntl && a[1] == 4)
			a[1] = 3;
		/* A signalfd read or a timerfd read may block: non-blocking ones only. */
		if (nr == SYS_signalfd4 || nr == SYS_timerfd_create || nr == SYS_eventfd2)
			a[nr == SYS_signalfd4 ? 3 : 1] |= 04000;
		if (nr == SYS_eventfd || nr == SYS_signalfd)
			continue;
		syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
	}
	printf("done\n");
	return 0;
}
