/* execve from inside a job: another dynamic program, a #! script, a
 * missing program and a missing interpreter; fork, exec and wait. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int run(char *const argv[]) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[0], argv);
        printf("execv %s: %s\n", argv[0], strerror(errno));
        fflush(stdout);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "wait-exec") == 0) {
        /* Reads stdin to its end (a test moves the job meanwhile), then
         * becomes a script run by a dynamic shell, all from home. */
        char line[256];
        while (fgets(line, sizeof line, stdin)) {
        }
        char *sh[] = {"./script.sh", "after", "a move", NULL};
        fflush(stdout);
        execv(sh[0], sh);
        printf("execv: %s\n", strerror(errno));
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "child") == 0) {
        printf("child running, argc %d, last %s\n", argc, argv[argc - 1]);
        return 7;
    }
    /* Strings near the end of a mapping, as zsh leaves them. */
    char *self = argv[0];
    char *args[] = {self, "child", "one", "two", NULL};
    printf("self: %d\n", run(args));
    char *sh[] = {"./script.sh", "from", "execve", NULL};
    printf("script: %d\n", run(sh));
    char *none[] = {"./no-such-program", NULL};
    printf("missing: %d\n", run(none));
    char *badinterp[] = {"./bad-interp", NULL};
    printf("missing interpreter: %d\n", run(badinterp));
    char *sorted[] = {"/usr/bin/sort", "-r", "words.txt", NULL};
    printf("sort: %d\n", run(sorted));
    /* And exec in place, from the main process. */
    fflush(stdout);
    char *env[] = {"LAST=1", NULL};
    char *last[] = {"/usr/bin/env", NULL};
    execve(last[0], last, env);
    printf("execve: %s\n", strerror(errno));
    return 1;
}
