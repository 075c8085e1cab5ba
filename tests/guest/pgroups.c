/* Process groups and sessions: setpgid, setsid, getpgid, getsid and
 * getpgrp with Linux's rules and errors, across fork and execve, and
 * kill(0, sig) / kill(-pgid, sig) reaching exactly the group. Prints
 * relations (never raw ids), so a native run and a job's compare equal. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void say(const char *what, long r) {
    if (r < 0)
        printf("%s: -1 %s\n", what, strerror(errno));
    else
        printf("%s: %ld\n", what, r);
    fflush(stdout);
}

static volatile sig_atomic_t got;
static void on_usr1(int s) { (void)s; got = 1; }

/* A child that waits for a byte on `fd`, then reports whether it got
 * SIGUSR1 and its group relation, as its exit status. */
static pid_t waiter(int fd, pid_t expect_pgid) {
    pid_t p = fork();
    if (p == 0) {
        char c;
        while (read(fd, &c, 1) < 0 && errno == EINTR) {
        }
        exit((got ? 1 : 0) | (getpgrp() == (expect_pgid ? expect_pgid : getpid()) ? 2 : 0));
    }
    return p;
}

static int status_of(pid_t p) {
    int st;
    if (waitpid(p, &st, 0) != p)
        return -1;
    if (WIFSIGNALED(st))
        return 100 + WTERMSIG(st);
    return WEXITSTATUS(st);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "exec-check") == 0) {
        /* After execve: the group and session stay. */
        say("exec: pgrp is pid", getpgrp() == getpid());
        say("exec: sid is parent's", getsid(0) == atol(argv[2]));
        return 0;
    }
    pid_t me = getpid();
    say("start: pgrp == getpgid(0)", getpgrp() == getpgid(0));
    say("start: getpgid(me) == getpgid(0)", getpgid(me) == getpgid(0));
    say("start: getsid(me) == getsid(0)", getsid(me) == getsid(0));

    /* Errors. */
    say("setpgid(0, -1)", setpgid(0, -1));
    say("setpgid(no such pid)", setpgid(999999999, 0));
    say("getpgid(no such pid)", getpgid(999999999));
    say("getsid(no such pid)", getsid(999999999));

    /* A group of our own, then setsid refused to a group leader. */
    say("setpgid(0, 0)", setpgid(0, 0));
    say("pgrp is pid", getpgrp() == me);
    say("getpgid(0) is pid", getpgid(0) == me);
    say("setpgid(me, me) again", setpgid(me, me));
    say("setsid as group leader", setsid());
    pid_t sid = getsid(0);

    /* A child: inherits the group, makes its own session, and is then
     * refused a group change (a session leader). */
    pid_t c = fork();
    if (c == 0) {
        say("child: pgrp is parent's", getpgrp() == me);
        say("child: sid is parent's", getsid(0) == sid);
        say("child: setsid is pid", setsid() == getpid());
        say("child: sid is pid", getsid(0) == getpid());
        say("child: pgrp is pid", getpgrp() == getpid());
        say("child: setsid again", setsid());
        say("child: setpgid as session leader", setpgid(0, 0));
        say("child: setpgid into parent's group", setpgid(0, me));
        exit(0);
    }
    say("child ended", status_of(c));

    /* The parent puts a child into a new group (the shell's way, before
     * the child execs); a group in another session is refused. */
    int go[2];
    if (pipe(go) != 0)
        return 1;
    signal(SIGUSR1, on_usr1);
    pid_t other = waiter(go[0], 0);
    say("setpgid(child, child)", setpgid(other, other));
    say("getpgid(child) is child", getpgid(other) == other);
    say("getsid(child) is ours", getsid(other) == sid);
    pid_t same = waiter(go[0], me);
    say("getpgid(same) is ours", getpgid(same) == me);
    say("setpgid(child, nonexistent group)", setpgid(same, 999999998));

    /* kill(0): this group only (us and `same`), not `other`'s. */
    say("kill(0, SIGUSR1)", kill(0, SIGUSR1));
    for (int i = 0; i < 1000 && !got; i++)
        usleep(1000);
    say("parent got SIGUSR1", got);
    if (write(go[1], "xx", 2) != 2)
        return 1;
    say("same: usr1|pgrp", status_of(same));
    say("other: usr1|pgrp", status_of(other));

    /* kill(-pgid) of another group, and waitpid(-pgid). */
    pid_t g1 = fork();
    if (g1 == 0) {
        setpgid(0, 0);
        pause();
        exit(7);
    }
    setpgid(g1, g1);
    pid_t g2 = fork();
    if (g2 == 0) {
        pause();
        exit(7);
    }
    say("setpgid(g2, g1)", setpgid(g2, g1));
    say("kill(-g1, SIGTERM)", kill(-g1, SIGTERM));
    int st, n = 0, killed = 0;
    pid_t w;
    while ((w = waitpid(-g1, &st, 0)) > 0) {
        n++;
        killed += WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM;
    }
    say("reaped from group g1", n);
    say("killed by SIGTERM", killed);
    say("kill(-g1) once it is gone", kill(-g1, 0));
    say("waitpid(-g1) once it is gone", waitpid(-g1, &st, WNOHANG));

    /* execve keeps group and session. */
    pid_t e = fork();
    if (e == 0) {
        char sidbuf[32];
        setpgid(0, 0);
        snprintf(sidbuf, sizeof sidbuf, "%ld", (long)sid);
        execl(argv[0], argv[0], "exec-check", sidbuf, (char *)0);
        _exit(99);
    }
    say("exec child ended", status_of(e));
    return 0;
}
