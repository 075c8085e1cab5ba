/*
 * mem: holds memory and keeps rewriting part of it.
 *
 *   mem [TOTAL_MIB [WORKING_MIB [PASSES]]]     defaults: 64 16 20
 *   mem TOTAL_MIB WORKING_MIB --seconds S      rewrite for S seconds
 *
 * Allocates TOTAL MiB, fills it, then rewrites the first WORKING MiB once
 * per pass with a pattern that depends on the pass number. Prints a
 * checksum of all memory and whether CLOCK_MONOTONIC ever went backwards
 * (it is read between pages), so a move between hosts that lost a page or
 * broke the clock shows up in the output.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t last_ns;
static unsigned long backwards;

static void check_clock(void)
{
	int64_t t = mono_ns();
	if (t < last_ns)
		backwards++;
	last_ns = t;
}

static void rewrite(uint64_t *m, size_t words, uint64_t pass)
{
	for (size_t i = 0; i < words; i++) {
		m[i] = (i * 0x9e3779b97f4a7c15ULL) ^ (pass * 0xbf58476d1ce4e5b9ULL);
		if ((i & 4095) == 0)
			check_clock();
	}
}

int main(int argc, char **argv)
{
	size_t total = argc > 1 ? strtoull(argv[1], NULL, 0) : 64;
	size_t working = argc > 2 ? strtoull(argv[2], NULL, 0) : 16;
	double seconds = 0;
	uint64_t passes = 20;
	if (argc > 4 && strcmp(argv[3], "--seconds") == 0)
		seconds = atof(argv[4]);
	else if (argc > 3)
		passes = strtoull(argv[3], NULL, 0);
	if (working > total)
		working = total;
	setvbuf(stdout, NULL, _IOLBF, 0);

	size_t words = total << 17, wwords = working << 17;
	uint64_t *m = malloc(words * 8);
	if (!m) {
		fprintf(stderr, "mem: cannot allocate %zu MiB\n", total);
		return 1;
	}
	last_ns = mono_ns();
	rewrite(m, words, 0);
	printf("allocated %zu MiB, rewriting %zu MiB\n", total, working);

	uint64_t pass = 0;
	int64_t end = mono_ns() + (int64_t)(seconds * 1e9);
	for (;;) {
		if (seconds > 0 ? mono_ns() >= end : pass >= passes)
			break;
		pass++;
		rewrite(m, wwords, pass);
		if (seconds == 0 && passes >= 10 && pass % (passes / 10) == 0)
			printf("pass %llu\n", (unsigned long long)pass);
	}

	uint64_t sum = 0;
	for (size_t i = 0; i < words; i++)
		sum = (sum ^ m[i]) * 0x100000001b3ULL;
	if (seconds == 0)
		printf("checksum %016llx\n", (unsigned long long)sum);
	else
		printf("%llu passes, checksum consistent: %s\n", (unsigned long long)pass,
		       sum != 0 ? "yes" : "no");
	printf("monotonic clock: %s\n", backwards ? "WENT BACKWARDS" : "never went backwards");
	free(m);
	return backwards ? 2 : 0;
}
