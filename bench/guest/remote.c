/*
 * remote: the deputy-link benchmarks' guest. Sleeps SETTLE_MS first (so a
 * move can happen before the work starts), then does one of:
 *   remote fstat ROUNDS CALLS      ROUNDS lines "fstat_ns N": mean ns per
 *                                  fstat of an open file, over CALLS calls
 *   remote copy IN OUT SETTLE_MS   copies IN to OUT with 64 KiB reads and
 *                                  writes; prints "copy_mb_s N"
 *   remote lines N SETTLE_MS       writes N short lines to stdout, one
 *                                  write each; prints "lines_ms N" on stderr
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void settle(const char *ms)
{
	long n = atol(ms);
	struct timespec t = { n / 1000, (n % 1000) * 1000000 };
	nanosleep(&t, NULL);
}

int main(int argc, char **argv)
{
	if (argc >= 4 && strcmp(argv[1], "fstat") == 0) {
		int rounds = atoi(argv[2]), calls = atoi(argv[3]);
		int fd = open("/proc/self/exe", O_RDONLY);
		if (fd < 0)
			fd = 0;
		for (int r = 0; r < rounds; r++) {
			struct stat st;
			double t = now();
			for (int i = 0; i < calls; i++)
				fstat(fd, &st);
			printf("fstat_ns %.0f\n", (now() - t) * 1e9 / calls);
			fflush(stdout);
		}
		return 0;
	}
	if (argc >= 5 && strcmp(argv[1], "copy") == 0) {
		settle(argv[4]);
		int in = open(argv[2], O_RDONLY), out = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (in < 0 || out < 0) {
			perror("remote: copy");
			return 1;
		}
		static char buf[65536];
		long total = 0;
		double t = now();
		ssize_t n;
		while ((n = read(in, buf, sizeof buf)) > 0) {
			if (write(out, buf, n) != n) {
				perror("remote: write");
				return 1;
			}
			total += n;
		}
		if (n < 0 || close(out) < 0) {
			perror("remote: copy");
			return 1;
		}
		printf("copy_mb_s %.1f\n", total / 1e6 / (now() - t));
		return 0;
	}
	if (argc >= 4 && strcmp(argv[1], "lines") == 0) {
		long n = atol(argv[2]);
		settle(argv[3]);
		double t = now();
		char line[32];
		for (long i = 0; i < n; i++) {
			int len = snprintf(line, sizeof line, "line %ld\n", i);
			if (write(1, line, len) != len)
				return 1;
		}
		fprintf(stderr, "lines_ms %.1f\n", (now() - t) * 1e3);
		return 0;
	}
	fprintf(stderr, "usage: remote fstat ROUNDS CALLS | copy IN OUT SETTLE_MS | lines N SETTLE_MS\n");
	return 2;
}
