/*
 * cpu: CPU-bound work with a checksum.
 *
 *   cpu [ITERATIONS]      fixed work (default 2e9), progress every 10%
 *   cpu --seconds S       run for S seconds, progress every second
 *
 * The final line is "checksum <hex> after <n> iterations". For a fixed
 * iteration count the output does not depend on speed, so a run that was
 * moved between hosts prints exactly what an unmoved run prints.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A dependent chain of integer ops: nothing to vectorize or hoist. */
static inline uint64_t step(uint64_t x, uint64_t i)
{
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return x + i;
}

#define CHUNK 50000000ULL

int main(int argc, char **argv)
{
	uint64_t x = 0x9e3779b97f4a7c15ULL, done = 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 2 && strcmp(argv[1], "--seconds") == 0) {
		double secs = atof(argv[2]), start = now(), next = start + 1;
		int tick = 0;
		while (now() - start < secs) {
			for (uint64_t i = 0; i < CHUNK; i++)
				x = step(x, done + i);
			done += CHUNK;
			if (now() >= next) {
				printf("progress %d s, %llu iterations\n", ++tick, (unsigned long long)done);
				next += 1;
			}
		}
	} else {
		uint64_t total = argc > 1 ? strtoull(argv[1], NULL, 0) : 2000000000ULL;
		uint64_t tenth = total / 10 ? total / 10 : 1;
		int pct = 0;
		while (done < total) {
			uint64_t n = total - done < tenth ? total - done : tenth;
			for (uint64_t i = 0; i < n; i++)
				x = step(x, done + i);
			done += n;
			pct = (int)(done * 100 / total);
			printf("progress %d%%\n", pct);
		}
	}
	printf("checksum %016llx after %llu iterations\n", (unsigned long long)x, (unsigned long long)done);
	return 0;
}
