/* File mappings the way dynamic loaders and programs use them: a whole
 * file, then MAP_FIXED pieces over a PROT_NONE reservation, partial pages
 * past the end of the file, MAP_FIXED over memory in use, mprotect,
 * munmap of parts, MAP_SHARED read-only, mremap, offsets. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PG 4096
#define FILE_LEN (3 * PG + 1000)

static unsigned sum(const unsigned char *p, size_t n) {
    unsigned s = 0;
    for (size_t i = 0; i < n; i++) s = s * 31 + p[i];
    return s;
}

static int zeros(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

int main(int argc, char **argv) {
    /* With "wait": first reads stdin to its end (a test moves the job
     * meanwhile, so what follows runs away from home). */
    if (argc > 1 && argv[1][0] == 'w') {
        char line[256];
        while (fgets(line, sizeof line, stdin)) {
        }
    }
    static unsigned char data[FILE_LEN];
    for (int i = 0; i < FILE_LEN; i++) data[i] = (unsigned char)(i * 7 + i / PG);
    int fd = open("mapped.bin", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, data, FILE_LEN) != FILE_LEN) return 1;

    /* The whole file, read-only: the rest of its last page reads as zeros. */
    unsigned char *all = mmap(NULL, FILE_LEN, PROT_READ, MAP_PRIVATE, fd, 0);
    printf("whole file: same %d, tail zeros %d\n", memcmp(all, data, FILE_LEN) == 0,
           zeros(all + FILE_LEN, 4 * PG - FILE_LEN));

    /* A PROT_NONE reservation with pieces mapped over it, as ld.so does. */
    unsigned char *res = mmap(NULL, 16 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *a = mmap(res, 2 * PG, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED, fd, 0);
    unsigned char *b = mmap(res + 4 * PG, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 2 * PG);
    printf("fixed pieces: at place %d %d, same %d %d\n", a == res, b == res + 4 * PG, memcmp(a, data, 2 * PG) == 0,
           memcmp(b, data + 2 * PG, FILE_LEN - 2 * PG) == 0);
    /* bss: the rest of the data page zeroed by hand, then anonymous pages. */
    memset(b + (FILE_LEN - 2 * PG), 0, 2 * PG - (FILE_LEN - 2 * PG));
    unsigned char *bss = mmap(res + 6 * PG, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS, -1, 0);
    printf("bss zeros %d, data page tail zeros %d\n", zeros(bss, 3 * PG), zeros(b + FILE_LEN - 2 * PG, 100));
    /* Private writes never reach the file. */
    b[0] = 0xAA;
    unsigned char back;
    pread(fd, &back, 1, 2 * PG);
    printf("private write stays private: %d\n", back == data[2 * PG]);
    /* RELRO: writable, then read-only. */
    printf("mprotect: %s\n", mprotect(b, PG, PROT_READ) == 0 ? "ok" : strerror(errno));
    /* munmap of part of the reservation, and a hole that mmap(NULL) may reuse. */
    printf("munmap part: %s\n", munmap(res + 10 * PG, 2 * PG) == 0 ? "ok" : strerror(errno));

    /* MAP_FIXED over memory in use: the old bytes are gone, past the end
     * of the file too. */
    unsigned char *anon = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(anon, 0x55, 4 * PG);
    unsigned char *over = mmap(anon, 4 * PG, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
    printf("fixed over data: same %d, tail zeros %d\n", memcmp(over, data, FILE_LEN) == 0,
           zeros(over + FILE_LEN, 4 * PG - FILE_LEN));

    /* MAP_SHARED, read-only, at an offset. */
    unsigned char *sh = mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, PG);
    printf("shared read-only at offset: %d\n", sh != MAP_FAILED && memcmp(sh, data + PG, PG) == 0);

    /* mremap of a file mapping keeps its bytes (past the end of the file
     * Linux raises SIGBUS, which a job cannot get: not looked at). */
    unsigned char *big = mremap(all, 4 * PG, 64 * PG, MREMAP_MAYMOVE);
    printf("mremap: %d\n", big != MAP_FAILED && memcmp(big, data, FILE_LEN) == 0);

    /* Errors as Linux gives them. */
    errno = 0;
    void *bad = mmap(NULL, PG, PROT_READ, MAP_PRIVATE, fd, 100);
    printf("unaligned offset: %s\n", bad == MAP_FAILED ? strerror(errno) : "mapped?");
    errno = 0;
    bad = mmap(NULL, PG, PROT_READ, MAP_PRIVATE, 99, 0);
    printf("bad descriptor: %s\n", bad == MAP_FAILED ? strerror(errno) : "mapped?");
    errno = 0;
    bad = mmap(NULL, 0, PROT_READ, MAP_PRIVATE, fd, 0);
    printf("zero length: %s\n", bad == MAP_FAILED ? strerror(errno) : "mapped?");
    printf("checksum %u\n", sum(over, FILE_LEN));
    close(fd);
    /* The mapping outlives its descriptor. */
    printf("after close: %d\n", memcmp(sh, data + PG, PG) == 0);
    unlink("mapped.bin");
    return 0;
}
