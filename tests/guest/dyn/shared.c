/* Shared mappings: anonymous memory and files mapped MAP_SHARED are
 * shared with forked children and reach the file. (Futexes in shared
 * memory between processes, as POSIX semaphores use, are not served yet.) */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "hold") == 0) {
        /* Holds a shared writable file mapping until stdin ends. */
        int fd = open("held.bin", O_RDWR | O_CREAT | O_TRUNC, 0644);
        ftruncate(fd, 4096);
        char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        printf("mapped\n");
        fflush(stdout);
        char line[64];
        while (fgets(line, sizeof line, stdin)) {
        }
        strcpy(m, "still at home");
        munmap(m, 4096);
        char buf[16] = {0};
        pread(fd, buf, 13, 0);
        printf("%s\n", buf);
        return 0;
    }
    volatile int *counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    *counter = 1;
    pid_t pid = fork();
    if (pid == 0) {
        *counter += 41;
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    printf("anonymous shared with a child: %d\n", *counter);

    int fd = open("shared.bin", O_RDWR | O_CREAT | O_TRUNC, 0644);
    ftruncate(fd, 8192);
    char *f = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    strcpy(f, "written through a shared mapping");
    pid = fork();
    if (pid == 0) {
        strcpy(f + 4096, "and by a child");
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    char buf[64] = {0};
    pread(fd, buf, 40, 0);
    printf("file: %s\n", buf);
    pread(fd, buf, 20, 4096);
    printf("file page 2: %s\n", buf);
    /* Writes to the file show in the mapping. */
    pwrite(fd, "XY", 2, 0);
    printf("mapping sees the file: %.2s\n", f);
    munmap(f, 8192);
    /* Read-only descriptors cannot be mapped shared and writable. */
    int ro = open("shared.bin", O_RDONLY);
    void *bad = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0);
    printf("shared writable from read-only: %s\n", bad == MAP_FAILED ? strerror(errno) : "mapped?");
    void *ok = mmap(NULL, 4096, PROT_READ, MAP_SHARED, ro, 0);
    printf("shared read-only: %.2s\n", ok == MAP_FAILED ? "failed" : (char *)ok);

    unlink("shared.bin");
    return 0;
}
