/*
 * homework: a batch job that uses its home. Reads INPUT from the working
 * directory, then for ROUNDS rounds: computes for a while, appends a line
 * to OUTPUT (created in the working directory), prints a line on stdout
 * and one on stderr. Ends with exit status 3, or with a segfault when the
 * last argument is "crash". Rename and unlink exercise the directory.
 *
 *   homework INPUT OUTPUT ROUNDS [crash]
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t spin(uint64_t seed, long n)
{
	for (long i = 0; i < n; i++)
		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
	return seed;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: homework INPUT OUTPUT ROUNDS [crash]\n");
		return 2;
	}
	int rounds = atoi(argv[3]);
	int fd = open(argv[1], O_RDONLY);
	if (fd < 0) {
		perror("homework: input");
		return 1;
	}
	char buf[4096];
	uint64_t h = 1469598103934665603ULL;
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0)
		for (ssize_t i = 0; i < n; i++)
			h = (h ^ (unsigned char)buf[i]) * 0x100000001b3ULL;
	close(fd);
	char tmp[256];
	snprintf(tmp, sizeof tmp, "%s.partial", argv[2]);
	int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (out < 0) {
		perror("homework: output");
		return 1;
	}
	for (int r = 1; r <= rounds; r++) {
		h = spin(h, 30000000);
		char line[128];
		int len = snprintf(line, sizeof line, "round %d %016llx\n", r, (unsigned long long)h);
		if (write(out, line, len) != len) {
			perror("homework: write");
			return 1;
		}
		struct stat st;
		if (fstat(out, &st) < 0 || st.st_size <= 0) {
			perror("homework: fstat");
			return 1;
		}
		printf("round %d of %d, output %lld bytes\n", r, rounds, (long long)st.st_size);
		fflush(stdout);
		fprintf(stderr, "note %d\n", r);
	}
	close(out);
	if (rename(tmp, argv[2]) < 0) {
		perror("homework: rename");
		return 1;
	}
	char cwd[512];
	if (getcwd(cwd, sizeof cwd) == NULL) {
		perror("homework: getcwd");
		return 1;
	}
	printf("done in %s\n", strrchr(cwd, '/') ? strrchr(cwd, '/') + 1 : cwd);
	fflush(stdout);
	if (argc > 4 && strcmp(argv[4], "crash") == 0)
		*(volatile int *)16 = 1;
	return 3;
}
