/* Bad arguments to the process and system calls: every answer is an
 * errno as Linux gives it, never a crash of the VMM. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/times.h>
#include <sys/utsname.h>
#include <unistd.h>

#define BAD ((void *)8)
#define CALL(...) report(#__VA_ARGS__, syscall(__VA_ARGS__))

static void report(const char *what, long r) {
    int e = errno;
    printf("%-60s %ld %s\n", what, r, r < 0 ? strerror(e) : "");
    fflush(stdout);
}

int main(void) {
    CALL(SYS_uname, BAD);
    CALL(SYS_sysinfo, BAD);
    CALL(SYS_getrlimit, RLIMIT_NOFILE, BAD);
    CALL(SYS_setrlimit, RLIMIT_NOFILE, BAD);
    CALL(SYS_getrlimit, 99, 0);
    CALL(SYS_prlimit64, 999999999, RLIMIT_NOFILE, 0, 0);
    CALL(SYS_prlimit64, 0, RLIMIT_NOFILE, BAD, 0);
    CALL(SYS_getrusage, 5, 0);
    CALL(SYS_getrusage, RUSAGE_SELF, BAD);
    CALL(SYS_sched_getaffinity, 0, 8, BAD);
    CALL(SYS_sched_getaffinity, 0, 3, 0);
    CALL(SYS_sched_getaffinity, 999999999, 128, 0);
    CALL(SYS_sched_setaffinity, 0, 8, BAD);
    CALL(SYS_sched_setaffinity, 999999999, 8, 0);
    CALL(SYS_sched_getparam, 0, BAD);
    CALL(SYS_sched_getparam, -1, 0);
    CALL(SYS_sched_getscheduler, -1);
    CALL(SYS_sched_getscheduler, 999999999);
    CALL(SYS_sched_setscheduler, 0, SCHED_OTHER, BAD);
    CALL(SYS_sched_setscheduler, 0, 12345, 0);
    CALL(SYS_sched_get_priority_max, 12345);
    CALL(SYS_sched_get_priority_min, SCHED_RR);
    CALL(SYS_sched_rr_get_interval, 0, BAD);
    CALL(SYS_getpriority, 12345, 0);
    CALL(SYS_getpriority, PRIO_PROCESS, 999999999);
    CALL(SYS_setpriority, PRIO_PROCESS, 999999999, 0);
    CALL(SYS_getcpu, BAD, 0, 0);
    CALL(SYS_prctl, PR_GET_PDEATHSIG, BAD);
    CALL(SYS_prctl, PR_SET_NAME, BAD);
    CALL(SYS_prctl, 0x7fffffff, 0);
    CALL(SYS_setpgid, -5, 0);
    CALL(SYS_setpgid, 0, -5);
    CALL(SYS_getpgid, -1);
    CALL(SYS_getsid, -1);
    CALL(SYS_kill, -2147483647 - 1, 0);
    CALL(SYS_kill, -999999999, 0);
    CALL(SYS_times, BAD);
    return 0;
}
