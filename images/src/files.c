/*
 * files: reads INPUT, writes a transformed OUTPUT in the working
 * directory, and prints a digest of what it wrote.
 *
 *   files INPUT OUTPUT [ROUNDS]
 *
 * The transformation numbers each line and reverses its bytes; with ROUNDS
 * > 1 the output is read back and transformed again. Exercises open, read,
 * write, lseek, fstat, rename and unlink on the job's home file system.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t fnv(const unsigned char *p, size_t n, uint64_t h)
{
	while (n--)
		h = (h ^ *p++) * 0x100000001b3ULL;
	return h;
}

static char *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "files: %s: %s\n", path, strerror(errno));
		exit(1);
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		perror("files: fstat");
		exit(1);
	}
	char *buf = malloc(st.st_size + 1);
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, st.st_size - got);
		if (n <= 0) {
			perror("files: read");
			exit(1);
		}
		got += n;
	}
	close(fd);
	*len = got;
	return buf;
}

static void transform(const char *in, size_t len, FILE *out)
{
	size_t line = 0, start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || in[i] == '\n') {
			if (i == len && start == len)
				break;
			fprintf(out, "%6zu ", ++line);
			for (size_t k = i; k > start; k--)
				fputc(in[k - 1], out);
			fputc('\n', out);
			start = i + 1;
		}
	}
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: files INPUT OUTPUT [ROUNDS]\n");
		return 2;
	}
	int rounds = argc > 3 ? atoi(argv[3]) : 1;
	const char *src = argv[1];
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", argv[2]);
	for (int r = 0; r < rounds; r++) {
		size_t len;
		char *in = slurp(src, &len);
		FILE *out = fopen(tmp, "w");
		if (!out) {
			fprintf(stderr, "files: %s: %s\n", tmp, strerror(errno));
			return 1;
		}
		transform(in, len, out);
		if (fclose(out) != 0) {
			perror("files: write");
			return 1;
		}
		free(in);
		if (rename(tmp, argv[2]) < 0) {
			perror("files: rename");
			return 1;
		}
		src = argv[2];
	}
	size_t len;
	char *result = slurp(argv[2], &len);
	printf("wrote %s: %zu bytes, %d round(s), digest %016llx\n", argv[2], len, rounds,
	       (unsigned long long)fnv((unsigned char *)result, len, 0xcbf29ce484222325ULL));
	free(result);
	return 0;
}
