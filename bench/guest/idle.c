/* idle: fills N MiB, says so, then sleeps S seconds and checks the memory. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 64;
	double secs = argc > 2 ? atof(argv[2]) : 10;
	size_t words = mib << 17;
	uint64_t *m = malloc(words * 8);
	if (!m)
		return 1;
	for (size_t i = 0; i < words; i++)
		m[i] = i * 0x9e3779b97f4a7c15ULL;
	printf("holding %zu MiB\n", mib);
	fflush(stdout);
	struct timespec ts = { (time_t)secs, (long)((secs - (time_t)secs) * 1e9) };
	nanosleep(&ts, NULL);
	for (size_t i = 0; i < words; i++)
		if (m[i] != i * 0x9e3779b97f4a7c15ULL) {
			printf("memory changed at word %zu\n", i);
			return 2;
		}
	printf("memory intact\n");
	return 0;
}
