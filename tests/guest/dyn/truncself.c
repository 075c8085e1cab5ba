/* Cuts its own program file short, then goes on running from it. Linux
 * refuses the open (ETXTBSY); a job whose program pages are mapped from
 * the file must at worst end by SIGBUS, never take its VMM down. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char table[64 << 10] = {1};

int main(int argc, char **argv) {
    (void)argc;
    int fd = open(argv[0], O_WRONLY | O_TRUNC);
    if (fd < 0) {
        printf("open: %s\n", strerror(errno));
        return 0;
    }
    close(fd);
    /* From the file's pages, which are gone. */
    ssize_t n = write(1, table + sizeof table - 4096, 4096);
    printf("still running, wrote %zd, table[0] %d\n", n, table[0]);
    return 1;
}
