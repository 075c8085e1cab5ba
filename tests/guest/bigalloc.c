/* Allocates and touches SIZE MiB (default 512), checksums it, frees it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 512;
	size_t n = mib << 20;
	uint8_t *p = malloc(n);
	if (!p) {
		printf("malloc(%zu MiB) failed\n", mib);
		return 1;
	}
	for (size_t i = 0; i < n; i += 4096)
		p[i] = (uint8_t)(i >> 12);
	uint64_t sum = 0;
	for (size_t i = 0; i < n; i += 4096)
		sum += p[i];
	printf("touched %zu MiB, sum %llu\n", mib, (unsigned long long)sum);
	free(p);
	void *again = malloc(n);
	printf("allocated again: %s\n", again ? "yes" : "no");
	return 0;
}
