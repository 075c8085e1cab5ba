/* Memory mapping semantics a VMM doing bookkeeping must still honour. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static int all(const unsigned char *p, size_t n, unsigned char v)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v)
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	size_t pg = 4096;
	unsigned char *a = mmap(NULL, 16 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	printf("mmap: %s, zeroed: %d\n", a == MAP_FAILED ? "failed" : "ok", all(a, 16 * pg, 0));
	memset(a, 0xab, 16 * pg);
	munmap(a + 4 * pg, 4 * pg);
	unsigned char *b = mmap(a + 4 * pg, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	printf("remap fixed at hole: %d, zeroed again: %d, neighbours kept: %d\n", b == a + 4 * pg, all(b, 4 * pg, 0),
	       all(a, 4 * pg, 0xab) && all(a + 8 * pg, 8 * pg, 0xab));
	unsigned char *c = mremap(a, 16 * pg, 64 * pg, MREMAP_MAYMOVE);
	printf("mremap grow: %s, data kept: %d, tail zero: %d\n", c == MAP_FAILED ? "failed" : "ok",
	       all(c, 4 * pg, 0xab) && all(c + 8 * pg, 8 * pg, 0xab), all(c + 16 * pg, 48 * pg, 0));
	c = mremap(c, 64 * pg, 2 * pg, 0);
	printf("mremap shrink in place: %s\n", c == MAP_FAILED ? "failed" : "ok");
	printf("mprotect: %d\n", mprotect(c, 2 * pg, PROT_READ));
	int r = mprotect((void *)(((uintptr_t)c + 64 * pg)), pg, PROT_READ);
	printf("mprotect unmapped: %d %s\n", r, errno == ENOMEM ? "ENOMEM" : strerror(errno));
	printf("madvise dontneed zeroes: ");
	unsigned char *d = mmap(NULL, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(d, 1, 4 * pg);
	madvise(d, 4 * pg, MADV_DONTNEED);
	printf("%d\n", all(d, 4 * pg, 0));
	void *nr = mmap(d, pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	printf("MAP_FIXED_NOREPLACE over a mapping: %s\n", nr == MAP_FAILED && errno == EEXIST ? "EEXIST" : "mapped");

	/* A private file mapping sees the file's bytes, and zeros past its end. */
	int fd = open(argv[0], O_RDONLY);
	off_t size = lseek(fd, 0, SEEK_END);
	unsigned char *f = mmap(NULL, size + pg, PROT_READ, MAP_PRIVATE, fd, 0);
	unsigned char head[4];
	pread(fd, head, 4, 0);
	printf("file map: %s, ELF magic: %d, tail zero: %d\n", f == MAP_FAILED ? "failed" : "ok",
	       memcmp(f, head, 4) == 0 && f[1] == 'E', f[size] == 0);
	close(fd);
	void *w = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_SHARED, open(argv[0], O_RDONLY), 0);
	printf("shared writable map of a read-only fd: %s\n", w == MAP_FAILED ? "refused" : "mapped");

	/* brk grows and shrinks (raw calls: musl's sbrk only reads the break). */
	uintptr_t b0 = (syscall(SYS_brk, 0) + pg - 1) & ~(pg - 1);
	uintptr_t b1 = syscall(SYS_brk, b0 + (1 << 20));
	memset((void *)b0, 3, 1 << 20);
	syscall(SYS_brk, b0);
	uintptr_t b2 = syscall(SYS_brk, b0 + (1 << 20));
	printf("brk grew: %d, regrown memory zeroed: %d\n", b1 == b0 + (1 << 20) && b2 == b1,
	       all((unsigned char *)b0, 1 << 20, 0));
	return 0;
}
