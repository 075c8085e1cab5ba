/* The machine as a program sees it, every way it can ask: the CPU count
 * (sysconf, sched_getaffinity, /proc/cpuinfo, /proc/stat,
 * /sys/devices/system/cpu/online and possible), memory and uptime
 * (sysinfo against /proc/meminfo and /proc/uptime), load (sysinfo against
 * /proc/loadavg) and the descriptor limit (getrlimit against what open
 * and dup allow). Prints agreements; the one line that differs between a
 * 2-CPU host and a 1-vCPU job starts with "cpus:". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <unistd.h>

static char buf[1 << 16];

static const char *slurp(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return "";
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(fd, buf + n, sizeof buf - 1 - n)) > 0)
        n += r;
    buf[n] = 0;
    close(fd);
    return buf;
}

static long count_lines(const char *text, const char *prefix) {
    long n = 0;
    size_t len = strlen(prefix);
    for (const char *p = text; *p;) {
        if (!strncmp(p, prefix, len))
            n++;
        const char *nl = strchr(p, '\n');
        if (!nl)
            break;
        p = nl + 1;
    }
    return n;
}

/* CPUs in a list like "0-3,5". */
static long list_count(const char *s) {
    long n = 0;
    while (*s && *s != '\n') {
        char *end;
        long a = strtol(s, &end, 10), b = a;
        if (*end == '-')
            b = strtol(end + 1, &end, 10);
        n += b - a + 1;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

static long meminfo(const char *key) {
    const char *m = slurp("/proc/meminfo");
    const char *p = strstr(m, key);
    return p ? strtol(p + strlen(key) + 1, 0, 10) : -1;
}

int main(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    long aff = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : -1;
    long onln = sysconf(_SC_NPROCESSORS_ONLN), conf = sysconf(_SC_NPROCESSORS_CONF);
    long info = count_lines(slurp("/proc/cpuinfo"), "processor");
    long stat = count_lines(slurp("/proc/stat"), "cpu") - 1;
    long online = list_count(slurp("/sys/devices/system/cpu/online"));
    long possible = list_count(slurp("/sys/devices/system/cpu/possible"));
    long present = list_count(slurp("/sys/devices/system/cpu/present"));
    printf("cpus: %ld\n", aff);
    printf("cpu counts agree: %d\n", aff == onln && aff == conf && aff == info && aff == stat && aff == online &&
                                         aff == possible && aff == present && aff == get_nprocs() &&
                                         aff == get_nprocs_conf());
    if (!(aff == onln && aff == info && aff == online))
        printf("  affinity %ld sysconf %ld/%ld cpuinfo %ld stat %ld online %ld possible %ld present %ld\n", aff, onln,
               conf, info, stat, online, possible, present);
    printf("sched_getcpu in range: %d\n", sched_getcpu() >= 0 && sched_getcpu() < aff);
    const char *ci = slurp("/proc/cpuinfo");
    printf("cpuinfo has model name, flags: %d %d\n", strstr(ci, "model name") != 0, strstr(ci, "\nflags") != 0);

    /* Memory: sysinfo and /proc/meminfo describe the same machine. */
    long total = meminfo("MemTotal:"), free_kb = meminfo("MemFree:"), avail = meminfo("MemAvailable:");
    struct sysinfo si;
    sysinfo(&si);
    unsigned long long unit = si.mem_unit ? si.mem_unit : 1;
    printf("MemTotal == sysinfo totalram: %d\n", (unsigned long long)total == si.totalram * unit / 1024);
    long long dfree = (long long)free_kb - (long long)(si.freeram * unit / 1024);
    printf("MemFree ~ sysinfo freeram: %d\n", dfree < 65536 && dfree > -65536);
    printf("free <= available <= total: %d\n", free_kb <= avail && avail <= total && free_kb > 0);
    printf("swap agrees: %d\n", (unsigned long long)meminfo("SwapTotal:") == si.totalswap * unit / 1024);
    /* Uptime and load. */
    double up = strtod(slurp("/proc/uptime"), 0);
    printf("uptime agrees: %d\n", up - si.uptime > -2 && up - si.uptime < 2);
    double l1;
    sscanf(slurp("/proc/loadavg"), "%lf", &l1);
    printf("loadavg agrees: %d\n", l1 - si.loads[0] / 65536.0 > -0.5 && l1 - si.loads[0] / 65536.0 < 0.5);
    printf("procs > 0: %d\n", si.procs > 0);

    /* The descriptor limit is the one the open calls obey. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    printf("nofile: %llu %llu\n", (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
    int last = -1, fd;
    while ((fd = open("/dev/null", O_RDONLY)) >= 0)
        last = fd;
    int e = errno;
    printf("open until %s, last fd + 1 == soft limit: %d\n", strerror(e), (rlim_t)last + 1 == rl.rlim_cur);
    if ((rlim_t)last + 1 != rl.rlim_cur)
        printf("  last fd %d\n", last);
    for (int i = 3; i <= last; i++)
        close(i);
    struct rlimit small = {64, rl.rlim_max};
    printf("setrlimit 64: %d\n", setrlimit(RLIMIT_NOFILE, &small));
    last = -1;
    while ((fd = dup(0)) >= 0)
        last = fd;
    printf("dup until %s at %d\n", strerror(errno), last + 1);
    for (int i = 3; i <= last; i++)
        close(i);
    int r = dup2(0, 100);
    e = errno;
    printf("dup2 to 100: %d %s\n", r, strerror(e));
    r = fcntl(0, F_DUPFD, 100);
    e = errno;
    printf("F_DUPFD 100: %d %s\n", r, strerror(e));
    printf("setrlimit back: %d\n", setrlimit(RLIMIT_NOFILE, &rl));
    printf("dup2 to 100 now: %d\n", dup2(0, 100));
    struct rlimit bad = {rl.rlim_max + 1, rl.rlim_max};
    r = setrlimit(RLIMIT_NOFILE, &bad);
    e = errno;
    printf("soft above hard: %d %s\n", r, strerror(e));
    struct rlimit huge = {1 << 30, 1 << 30};
    r = setrlimit(RLIMIT_NOFILE, &huge);
    e = errno;
    printf("above nr_open: %d %s\n", r, strerror(e));
    struct rlimit st;
    getrlimit(RLIMIT_STACK, &st);
    printf("stack soft limit: %llu\n", (unsigned long long)st.rlim_cur);
    return 0;
}
