/* A process group and session made while the job is away from home, kept
 * when it comes back: waits for cue files in its working directory
 * ("cue-away", "cue-home", "cue-end") that the test makes between moves. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void wait_for(const char *cue) {
    struct stat st;
    while (stat(cue, &st) != 0)
        usleep(10000);
}

int main(void) {
    pid_t me = getpid();
    printf("start: leader %d\n", getpgrp() == me);
    fflush(stdout);
    wait_for("cue-away");
    pid_t s = setsid();
    printf("away: setsid %d, sid is pid %d, pgrp is pid %d\n", s == me, getsid(0) == me, getpgrp() == me);
    int r = setsid();
    printf("away: setsid again %d %s\n", r, r < 0 ? strerror(errno) : "");
    r = setpgid(0, 0);
    printf("away: setpgid as session leader %d %s\n", r, r < 0 ? strerror(errno) : "");
    fflush(stdout);
    wait_for("cue-home");
    printf("home: sid is pid %d, pgrp is pid %d, getpgid(me) %d\n", getsid(0) == me, getpgrp() == me,
           getpgid(me) == me);
    fflush(stdout);
    wait_for("cue-end");
    return 0;
}
