/*
 * sockspin: CPU-bound work, like images/src/cpu.c, by a job that holds a
 * UDP socket all along (so it cannot move).
 *
 *   sockspin ITERATIONS
 *
 * Prints "socket open" at start and "checksum <hex> after <n> iterations"
 * at the end.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000000ULL;
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0) {
		perror("socket");
		return 1;
	}
	printf("socket open\n");
	fflush(stdout);
	for (uint64_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		x += i;
	}
	printf("checksum %016llx after %llu iterations\n", (unsigned long long)x, (unsigned long long)n);
	close(s);
	return 0;
}
