/* A hostile job: tries every spelling known to reach the VMM's own /proc
 * entry (the job's pid is the VMM's), whose mem, fd/N and root would let a
 * job out of its micro-VM. Prints one line per attempt, "WHAT: VERDICT":
 *
 *   blocked  a forbidden path did not open (good)
 *   OPEN     a forbidden path opened, or an allowed one showed the VMM (bad)
 *   safe     another spelling of an allowed file opened and showed the job
 *   works    something that must keep working did
 *   BROKEN   something that must keep working did not (bad)
 *   skipped  could not be tried here (e.g. the job owns that descriptor)
 *   info     neither good nor bad (e.g. whether chdir(/proc/self) is allowed)
 *
 * Exits 0 only if nothing is OPEN or BROKEN. Natively, on a plain kernel,
 * the forbidden paths open (they are the process's own): exit 1 there. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef O_PATH
#define O_PATH 010000000
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif

static int failures, checks;
static char comm[16];
static char exe_real[PATH_MAX];
static char tmp[PATH_MAX];

/* Values for the @NAME@ tokens of path templates. */
static struct {
	const char *name;
	char value[PATH_MAX];
} tokens[] = { { "PID", "" }, { "TID", "" }, { "PPID", "" }, { "TMP", "" }, { "UP", "" }, { "UPMANY", "" },
	{ "RFD", "" }, { "TFD", "" }, { "N", "" } };

static void set_token(const char *name, const char *fmt, ...)
{
	for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
		if (strcmp(tokens[i].name, name) == 0) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(tokens[i].value, sizeof tokens[i].value, fmt, ap);
			va_end(ap);
		}
	}
}

/* Copies `tmpl` to `out`, replacing @NAME@ with its value. */
static const char *expand(const char *tmpl, char *out, size_t size)
{
	size_t n = 0;
	for (const char *p = tmpl; *p && n + 1 < size;) {
		if (*p == '@') {
			const char *end = strchr(p + 1, '@');
			int done = 0;
			for (size_t i = 0; end && !done && i < sizeof tokens / sizeof tokens[0]; i++) {
				size_t len = strlen(tokens[i].name);
				if ((size_t)(end - p - 1) == len && strncmp(p + 1, tokens[i].name, len) == 0) {
					for (const char *v = tokens[i].value; *v && n + 1 < size; v++)
						out[n++] = *v;
					p = end + 1;
					done = 1;
				}
			}
			if (done)
				continue;
		}
		out[n++] = *p++;
	}
	out[n] = 0;
	return out;
}

static void report(const char *what, const char *verdict, int bad)
{
	checks++;
	failures += bad;
	printf("%s: %s\n", what, verdict);
	fflush(stdout);
}

static const char *mode_name(int mode)
{
	switch (mode) {
	case O_RDONLY:
		return "O_RDONLY";
	case O_WRONLY:
		return "O_WRONLY";
	case O_RDWR:
		return "O_RDWR";
	case O_PATH:
		return "O_PATH";
	case O_WRONLY | O_CREAT | O_TRUNC:
		return "O_WRONLY|O_CREAT|O_TRUNC";
	case O_RDONLY | O_NOFOLLOW:
		return "O_RDONLY|O_NOFOLLOW";
	case O_RDONLY | O_DIRECTORY:
		return "O_RDONLY|O_DIRECTORY";
	default:
		return "O_?";
	}
}

/* "open(P, M)" or "openat(fd of D, P, M)"; `where` names the cwd if it matters. */
static void label(char *out, size_t size, const char *where, const char *dir, const char *path, int mode)
{
	char ctx[PATH_MAX + 16] = "";
	if (where)
		snprintf(ctx, sizeof ctx, "in %s ", where);
	if (dir)
		snprintf(out, size, "%sopenat(fd of %s, %s, %s)", ctx, dir, path, mode_name(mode));
	else
		snprintf(out, size, "%sopen(%s, %s)", ctx, path, mode_name(mode));
}

static void attempt(int dirfd, const char *where, const char *dir, const char *path, int mode)
{
	char what[3 * PATH_MAX];
	label(what, sizeof what, where, dir, path, mode);
	int fd = dir ? openat(dirfd, path, mode | O_CLOEXEC | O_NOCTTY) : open(path, mode | O_CLOEXEC | O_NOCTTY);
	if (fd >= 0) {
		char link[64], target[PATH_MAX] = "?";
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, target, sizeof target - 1);
		target[n > 0 ? n : 1] = 0;
		fprintf(stderr, "procescape: %s opened (descriptor %d, %s)\n", what, fd, target);
		close(fd);
	}
	report(what, fd >= 0 ? "OPEN" : "blocked", fd >= 0);
}

/* A path that must not open, for reading, for writing and as an O_PATH
 * handle (which /proc/self/fd/N could reopen). */
static void forbid_at(int dirfd, const char *where, const char *dir, const char *tmpl)
{
	char path[PATH_MAX];
	expand(tmpl, path, sizeof path);
	static const int modes[] = { O_RDONLY, O_RDWR, O_PATH };
	for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
		attempt(dirfd, where, dir, path, modes[i]);
}

static void forbid(const char *tmpl)
{
	forbid_at(AT_FDCWD, NULL, NULL, tmpl);
}

static void forbid_in(const char *cwd, const char *tmpl)
{
	forbid_at(AT_FDCWD, cwd, NULL, tmpl);
}

/* The whole of a small file, NUL-terminated (empty if it cannot be read). */
static char *slurp_fd(int fd)
{
	static char buf[1 << 16];
	size_t got = 0;
	ssize_t n;
	while (got < sizeof buf - 1 && (n = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
		got += n;
	buf[got] = 0;
	return buf;
}

enum view { NONE, MAPS, STATUS };

/* Whether `content` of a maps or status file is the VMM's, not the job's. */
static int shows_vmm(enum view v, const char *content)
{
	if (v == MAPS)
		return content[0] == 0 || strstr(content, "kvm") != NULL;
	if (v == STATUS) {
		char want[64];
		snprintf(want, sizeof want, "Name:\t%s\n", comm);
		return strstr(content, want) == NULL;
	}
	return 0;
}

/* Another spelling of an allowed file: it may be refused, but if it opens
 * it must show the job, not the VMM. */
static void alias(const char *tmpl, enum view v)
{
	char path[PATH_MAX], what[PATH_MAX + 32];
	expand(tmpl, path, sizeof path);
	label(what, sizeof what, NULL, NULL, path, O_RDONLY);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		report(what, "blocked", 0);
		return;
	}
	int leak = shows_vmm(v, slurp_fd(fd));
	close(fd);
	if (leak)
		fprintf(stderr, "procescape: %s shows the VMM's file\n", what);
	report(what, leak ? "OPEN" : "safe", leak);
}

/* Something that must keep working (and, for maps and status, show the job). */
static void must_open(const char *tmpl, int mode, enum view v)
{
	char path[PATH_MAX], what[PATH_MAX + 32];
	expand(tmpl, path, sizeof path);
	label(what, sizeof what, NULL, NULL, path, mode);
	int fd = open(path, mode | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "procescape: %s failed: %s\n", what, strerror(errno));
		report(what, "BROKEN", 1);
		return;
	}
	int leak = v != NONE && shows_vmm(v, slurp_fd(fd));
	close(fd);
	if (leak)
		fprintf(stderr, "procescape: %s shows the VMM's file\n", what);
	report(what, leak ? "OPEN" : "works", leak);
}

/* readlink of an exe link: if it answers, it must name the job's program. */
static void exe_link(const char *tmpl, int must)
{
	char path[PATH_MAX], what[PATH_MAX + 16], target[PATH_MAX];
	expand(tmpl, path, sizeof path);
	snprintf(what, sizeof what, "readlink(%s)", path);
	ssize_t n = readlink(path, target, sizeof target - 1);
	if (n < 0) {
		report(what, must ? "BROKEN" : "blocked", must);
		return;
	}
	target[n] = 0;
	if (strcmp(target, exe_real) == 0) {
		report(what, must ? "works" : "safe", 0);
		return;
	}
	fprintf(stderr, "procescape: %s names %s, not the program %s\n", what, target, exe_real);
	report(what, "OPEN", 1);
}

/* readlink of a descriptor link the job does not own: must fail. */
static void fd_link(const char *tmpl)
{
	char path[PATH_MAX], what[PATH_MAX + 16], target[PATH_MAX];
	expand(tmpl, path, sizeof path);
	snprintf(what, sizeof what, "readlink(%s)", path);
	ssize_t n = readlink(path, target, sizeof target - 1);
	if (n >= 0) {
		target[n] = 0;
		fprintf(stderr, "procescape: %s names %s\n", what, target);
	}
	report(what, n >= 0 ? "OPEN" : "blocked", n >= 0);
}

/* Descriptors 3..20 are the VMM's (/dev/kvm, the VM, vCPUs...) unless the
 * job opened them itself: run before the job opens anything. */
static void host_descriptors(void)
{
	static const char *opens[] = { "/dev/fd/@N@", "/proc/self/fd/@N@", "/proc/@PID@/fd/@N@",
		"/proc/thread-self/fd/@N@", "/proc/self/task/@TID@/fd/@N@", "//proc/./self/fd/@N@", "/dev/fd/../fd/@N@" };
	static const char *links[] = { "/dev/fd/@N@", "/proc/self/fd/@N@", "/proc/@PID@/fd/@N@",
		"/proc/self/task/@PID@/fd/@N@" };
	for (int n = 3; n <= 20; n++) {
		set_token("N", "%d", n);
		char path[PATH_MAX], what[PATH_MAX + 32];
		if (fcntl(n, F_GETFD) >= 0) {
			snprintf(what, sizeof what, "descriptor %d", n);
			report(what, "skipped", 0);
			continue;
		}
		for (size_t i = 0; i < sizeof opens / sizeof opens[0]; i++) {
			expand(opens[i], path, sizeof path);
			attempt(AT_FDCWD, NULL, NULL, path, O_RDONLY);
			attempt(AT_FDCWD, NULL, NULL, path, O_RDWR);
		}
		expand("/proc/self/fdinfo/@N@", path, sizeof path);
		attempt(AT_FDCWD, NULL, NULL, path, O_RDONLY);
		for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
			fd_link(links[i]);
	}
}

/* Raw system calls, in case libc's open is not the only way in. */
static void raw_calls(void)
{
	static const char *paths[] = { "/proc/self/mem", "//proc/./self/../self/mem" };
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		const char *p = paths[i];
		char what[PATH_MAX + 64];
		long fd;
		snprintf(what, sizeof what, "SYS_open(%s, O_RDWR)", p);
		fd = syscall(SYS_open, p, O_RDWR | O_CLOEXEC);
		report(what, fd >= 0 ? "OPEN" : "blocked", fd >= 0);
		if (fd >= 0)
			close(fd);
		snprintf(what, sizeof what, "SYS_openat(AT_FDCWD, %s, O_RDWR)", p);
		fd = syscall(SYS_openat, AT_FDCWD, p, O_RDWR | O_CLOEXEC);
		report(what, fd >= 0 ? "OPEN" : "blocked", fd >= 0);
		if (fd >= 0)
			close(fd);
		struct {
			uint64_t flags, mode, resolve;
		} how = { O_RDWR | O_CLOEXEC, 0, 0 };
		snprintf(what, sizeof what, "SYS_openat2(AT_FDCWD, %s, O_RDWR)", p);
		fd = syscall(SYS_openat2, AT_FDCWD, p, &how, sizeof how);
		report(what, fd >= 0 ? "OPEN" : "blocked", fd >= 0);
		if (fd >= 0)
			close(fd);
		snprintf(what, sizeof what, "creat(%s)", p);
		fd = creat(p, 0600);
		report(what, fd >= 0 ? "OPEN" : "blocked", fd >= 0);
		if (fd >= 0)
			close(fd);
	}
	attempt(AT_FDCWD, NULL, NULL, "/proc/self/mem", O_WRONLY | O_CREAT | O_TRUNC);
	attempt(AT_FDCWD, NULL, NULL, "/proc/self/mem", O_WRONLY);
}

static void spellings(void)
{
	static const char *mem[] = {
		"/proc/self/mem",
		"/proc/@PID@/mem",
		"/proc/thread-self/mem",
		"/proc/./@PID@/mem",
		"/proc/./self/mem",
		"//proc/@PID@/mem",
		"//proc//self//mem",
		"/proc//@PID@//mem",
		"/proc/@PID@/./mem",
		"/proc/@PID@/mem/",
		"/./proc/self/mem",
		"/../proc/self/mem",
		"/proc/../proc/self/mem",
		"/proc/self/../self/mem",
		"/proc/self/../@PID@/mem",
		"/proc/@PID@/../self/mem",
		"/proc/self/task/@TID@/mem",
		"/proc/@PID@/task/@PID@/mem",
		"/proc/self/task/999999/mem",
		"/proc/self/task/@TID@/../../mem",
		"/proc/thread-self/../@TID@/mem",
		"/proc/thread-self/../../mem",
		"/proc/@PID@/root/proc/@PID@/mem",
		"/proc/self/root/proc/self/mem",
		"/proc/self/root/../proc/self/mem",
		"/proc/self/root/proc/self/root/proc/thread-self/mem",
		"/proc/self/net/../mem",
		"/proc/net/../mem",
		"/proc/self/fdinfo/../mem",
		"/proc/self/fd/../mem",
		"/dev/fd/../mem",
		"/dev/fd/./../mem",
		"/proc/self/fd/@RFD@/proc/self/mem",
		"/proc/@PID@/fd/@RFD@/proc/@PID@/mem",
		"/dev/fd/@RFD@/proc/self/mem",
		"/proc/self/fd/@TFD@/@UP@proc/self/mem",
		"/proc/1/root/proc/@PID@/mem",
		"/proc/@PPID@/root/proc/@PID@/mem",
		"/proc/@PPID@/task/@PPID@/root/proc/@PID@/mem",
		"/proc/1/cwd/@UPMANY@proc/@PID@/mem",
		"/proc/@PPID@/cwd/@UPMANY@proc/@PID@/mem",
	};
	for (size_t i = 0; i < sizeof mem / sizeof mem[0]; i++)
		forbid(mem[i]);

	/* Entries that are the VMM's whatever is done with them. */
	static const char *names[] = { "root", "cwd", "map_files", "pagemap", "syscall", "stack", "auxv",
		"personality", "io" };
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		char t[64];
		snprintf(t, sizeof t, "/proc/self/%s", names[i]);
		forbid(t);
		snprintf(t, sizeof t, "//proc/@PID@/./%s", names[i]);
		forbid(t);
	}
	forbid("/proc/self/root/");
	forbid("/proc/self/task/@TID@/root");
	forbid("/proc/self/cwd/");

	/* Other spellings of maps and status: the job's or nothing. */
	static const char *maps[] = { "//proc/@PID@/maps", "/proc/./self/maps", "/proc/@PID@/task/@PID@/maps",
		"/proc/thread-self/maps", "/proc/self/root/proc/self/maps", "/proc/self/../self/maps", "/dev/fd/../maps",
		"/proc/net/../maps", "/proc/self/task/@TID@/../../maps" };
	for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++)
		alias(maps[i], MAPS);
	static const char *status[] = { "/proc/@PID@/status", "//proc/self/status", "/proc/thread-self/status",
		"/proc/self/task/@TID@/status", "/proc/self/root/proc/@PID@/status" };
	for (size_t i = 0; i < sizeof status / sizeof status[0]; i++)
		alias(status[i], STATUS);

	static const char *exes[] = { "/proc/@PID@/exe", "//proc/./self/exe", "/proc/thread-self/exe",
		"/proc/self/task/@TID@/exe", "/proc/self/root/proc/self/exe" };
	for (size_t i = 0; i < sizeof exes / sizeof exes[0]; i++)
		exe_link(exes[i], 0);
}

/* Directory descriptors: *at calls relative to /, /proc and /proc/self. */
static void dirfds(void)
{
	int root = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root >= 0) {
		forbid_at(root, NULL, "/", "proc/self/mem");
		forbid_at(root, NULL, "/", "./proc/@PID@/mem");
		forbid_at(root, NULL, "/", "/proc/self/mem");
		close(root);
	} else {
		report("open(/, O_RDONLY|O_DIRECTORY)", "BROKEN", 1);
	}
	int proc = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (proc >= 0) {
		forbid_at(proc, NULL, "/proc", "self/mem");
		forbid_at(proc, NULL, "/proc", "@PID@/mem");
		forbid_at(proc, NULL, "/proc", "thread-self/mem");
		forbid_at(proc, NULL, "/proc", "./self/../@PID@/./mem");
		close(proc);
	} else {
		report("open(/proc, O_RDONLY|O_DIRECTORY)", "skipped", 0);
	}
	/* Whether the job may hold its /proc/self as a directory is not this
	 * test's business; what it reaches through it is. */
	static const char *selves[] = { "/proc/self", "/proc/@PID@", "/proc/thread-self", "/proc/self/task" };
	for (size_t i = 0; i < sizeof selves / sizeof selves[0]; i++) {
		char dir[PATH_MAX], what[PATH_MAX + 32];
		expand(selves[i], dir, sizeof dir);
		snprintf(what, sizeof what, "open(%s, O_RDONLY|O_DIRECTORY)", dir);
		int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		report(what, d >= 0 ? "info opened" : "info refused", 0);
		if (d < 0)
			continue;
		if (i == 2) {
			/* /proc/<pid>/task/<tid> */
			forbid_at(d, NULL, dir, "mem");
			forbid_at(d, NULL, dir, "../@TID@/mem");
			forbid_at(d, NULL, dir, "../../mem");
			forbid_at(d, NULL, dir, "root/proc/self/mem");
		} else if (i == 3) {
			forbid_at(d, NULL, dir, "@TID@/mem");
			forbid_at(d, NULL, dir, "../mem");
		} else {
			forbid_at(d, NULL, dir, "mem");
			forbid_at(d, NULL, dir, "./mem");
			forbid_at(d, NULL, dir, "map_files");
			forbid_at(d, NULL, dir, "root/proc/self/mem");
			forbid_at(d, NULL, dir, "../self/mem");
			forbid_at(d, NULL, dir, "task/@TID@/mem");
			forbid_at(d, NULL, dir, "fd/../mem");
		}
		close(d);
	}
}

/* Relative paths from several working directories. */
static void cwds(const char *home)
{
	if (chdir("/") == 0) {
		forbid_in("/", "proc/self/mem");
		forbid_in("/", "proc/@PID@/mem");
		forbid_in("/", "./proc/../proc/self/mem");
		forbid_in("/", "/proc/self/cwd/proc/self/mem");
		forbid_in("/", "/proc/@PID@/cwd/proc/@PID@/mem");
		forbid_in("/", "/proc/self/cwd/./proc/thread-self/mem");
	} else {
		report("chdir(/)", "BROKEN", 1);
	}
	if (tmp[0] && chdir(tmp) == 0) {
		forbid_in(tmp, "@UP@proc/self/mem");
		forbid_in(tmp, "@UPMANY@proc/@PID@/mem");
		forbid_in(tmp, "lnk/mem");
		forbid_in(tmp, "./chain/../self/mem");
		forbid_in(tmp, "/proc/self/cwd/lnk/mem");
		forbid_in(tmp, "/proc/self/cwd/@UP@proc/self/mem");
		forbid_in(tmp, "/proc/@PID@/cwd/@UPMANY@proc/@PID@/mem");
	}
	if (chdir("/proc") == 0) {
		forbid_in("/proc", "self/mem");
		forbid_in("/proc", "@PID@/mem");
		forbid_in("/proc", "thread-self/mem");
		forbid_in("/proc", "./self/./mem");
		forbid_in("/proc", "net/../mem");
		forbid_in("/proc", "../proc/self/mem");
	} else {
		report("chdir(/proc)", "skipped", 0);
	}
	if (chdir("/dev") == 0) {
		forbid_in("/dev", "fd/../mem");
		forbid_in("/dev", "./fd/./../mem");
	}
	static const char *selves[] = { "/proc/self", "/proc/@PID@", "/proc/thread-self", "/proc/self/fd" };
	for (size_t i = 0; i < sizeof selves / sizeof selves[0]; i++) {
		char dir[PATH_MAX], what[PATH_MAX + 16];
		expand(selves[i], dir, sizeof dir);
		snprintf(what, sizeof what, "chdir(%s)", dir);
		int ok = chdir(dir) == 0;
		report(what, ok ? "info allowed" : "info refused", 0);
		if (!ok)
			continue;
		if (i == 2) {
			forbid_in(dir, "mem");
			forbid_in(dir, "../@TID@/mem");
			forbid_in(dir, "../../mem");
			forbid_in(dir, "/proc/self/cwd/mem");
			forbid_in(dir, "/proc/self/cwd/../../mem");
		} else if (i == 3) {
			forbid_in(dir, "../mem");
			forbid_in(dir, "@RFD@/proc/self/mem");
		} else {
			forbid_in(dir, "mem");
			forbid_in(dir, "./mem");
			forbid_in(dir, "task/@TID@/mem");
			forbid_in(dir, "root/proc/self/mem");
			forbid_in(dir, "/proc/self/cwd/mem");
			forbid_in(dir, "/proc/self/cwd/../self/mem");
		}
	}
	if (chdir(home) != 0)
		report("chdir back", "BROKEN", 1);
}

/* Symlinks the job makes: to /proc/self and its relatives. */
static const struct {
	const char *name, *target;
} links[] = {
	{ "lnk", "/proc/self" },
	{ "pidlnk", "/proc/@PID@" },
	{ "rel", "@UP@proc/self" },
	{ "relmem", "@UP@proc/./self/mem" },
	{ "memlnk", "/proc/self/mem" },
	{ "chain", "lnk" },
	{ "chain2", "chain" },
	{ "fdlnk", "/dev/fd" },
	{ "rootlnk", "/" },
	{ "proclnk", "/proc" },
	{ "netlnk", "/proc/self/net" },
	{ "threadlnk", "/proc/thread-self" },
	{ "tasklnk", "/proc/self/task" },
};

static void make_links(void)
{
	for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
		char target[PATH_MAX], path[PATH_MAX], what[3 * PATH_MAX];
		expand(links[i].target, target, sizeof target);
		snprintf(path, sizeof path, "%s/%s", tmp, links[i].name);
		snprintf(what, sizeof what, "symlink(%s, %s)", target, path);
		int ok = symlink(target, path) == 0;
		if (!ok)
			fprintf(stderr, "procescape: %s: %s\n", what, strerror(errno));
		report(what, ok ? "works" : "BROKEN", !ok);
	}
}

static void through_links(void)
{
	static const char *mem[] = {
		"@TMP@/lnk/mem",
		"@TMP@/lnk/./mem",
		"@TMP@/lnk/../self/mem",
		"@TMP@/lnk/task/@TID@/mem",
		"@TMP@/lnk/root/proc/self/mem",
		"@TMP@/lnk/cwd/@UPMANY@proc/self/mem",
		"@TMP@/pidlnk/mem",
		"@TMP@/rel/mem",
		"@TMP@/relmem",
		"@TMP@/memlnk",
		"@TMP@/memlnk/",
		"@TMP@/chain/mem",
		"@TMP@/chain2/mem",
		"@TMP@/fdlnk/../mem",
		"@TMP@/fdlnk/@RFD@/proc/self/mem",
		"@TMP@/rootlnk/proc/self/mem",
		"@TMP@/rootlnk/proc/@PID@/mem",
		"@TMP@/proclnk/self/mem",
		"@TMP@/proclnk/@PID@/mem",
		"@TMP@/netlnk/../mem",
		"@TMP@/threadlnk/mem",
		"@TMP@/threadlnk/../../mem",
		"@TMP@/tasklnk/@TID@/mem",
		"@TMP@/tasklnk/../mem",
		"@TMP@//./lnk//mem",
	};
	for (size_t i = 0; i < sizeof mem / sizeof mem[0]; i++)
		forbid(mem[i]);
	char path[PATH_MAX];
	expand("@TMP@/memlnk", path, sizeof path);
	attempt(AT_FDCWD, NULL, NULL, path, O_RDONLY | O_NOFOLLOW);

	alias("@TMP@/lnk/maps", MAPS);
	alias("@TMP@/chain2/maps", MAPS);
	alias("@TMP@/rel/status", STATUS);
	exe_link("@TMP@/lnk/exe", 0);

	/* The links themselves are the job's: it can read and remove them. */
	char target[PATH_MAX], what[PATH_MAX + 16];
	snprintf(what, sizeof what, "readlink(%s)", path);
	ssize_t n = readlink(path, target, sizeof target - 1);
	target[n > 0 ? n : 0] = 0;
	int ok = n >= 0 && strcmp(target, "/proc/self/mem") == 0;
	if (!ok)
		fprintf(stderr, "procescape: %s gave %zd [%s]\n", what, n, target);
	report(what, ok ? "works" : "BROKEN", !ok);
	struct stat st;
	snprintf(what, sizeof what, "lstat(%s)", path);
	ok = lstat(path, &st) == 0 && S_ISLNK(st.st_mode);
	report(what, ok ? "works" : "BROKEN", !ok);
}

static void remove_links(void)
{
	for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
		char path[PATH_MAX], what[PATH_MAX + 16];
		snprintf(path, sizeof path, "%s/%s", tmp, links[i].name);
		snprintf(what, sizeof what, "unlink(%s)", path);
		int ok = unlink(path) == 0;
		report(what, ok ? "works" : "BROKEN", !ok);
	}
	if (rmdir(tmp) != 0)
		report("rmdir(TMP)", "BROKEN", 1);
}

/* What must keep working. */
static void allowed(void)
{
	must_open("/proc/self/maps", O_RDONLY, MAPS);
	must_open("/proc/self/status", O_RDONLY, STATUS);
	must_open("/dev/fd/1", O_WRONLY, NONE);
	must_open("/proc/self/fd/1", O_WRONLY, NONE);
	must_open("/dev/stdout", O_WRONLY, NONE);
	exe_link("/proc/self/exe", 1);
}

int main(int argc, char **argv)
{
	(void)argc;
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *base = strrchr(argv[0], '/');
	snprintf(comm, sizeof comm, "%s", base ? base + 1 : argv[0]);
	if (!realpath(argv[0], exe_real))
		snprintf(exe_real, sizeof exe_real, "%s", argv[0]);
	char home[PATH_MAX];
	if (!getcwd(home, sizeof home))
		snprintf(home, sizeof home, "/");

	set_token("PID", "%d", (int)getpid());
	set_token("TID", "%ld", (long)syscall(SYS_gettid));
	set_token("PPID", "%d", (int)getppid());
	set_token("RFD", "%d", -1);
	set_token("TFD", "%d", -1);
	set_token("UPMANY", "../../../../../../../../../../../../");

	/* First, before any descriptor of the job's own exists. */
	host_descriptors();

	snprintf(tmp, sizeof tmp, "/tmp/procescape.XXXXXX");
	if (!mkdtemp(tmp)) {
		snprintf(tmp, sizeof tmp, "%.4000s/procescape.XXXXXX", home);
		if (!mkdtemp(tmp))
			tmp[0] = 0;
	}
	if (tmp[0]) {
		char real[PATH_MAX];
		if (realpath(tmp, real))
			snprintf(tmp, sizeof tmp, "%s", real);
		char up[PATH_MAX] = "";
		for (const char *p = tmp; *p; p++)
			if (*p == '/' && strlen(up) + 4 < sizeof up)
				strcat(up, "../");
		set_token("TMP", "%s", tmp);
		set_token("UP", "%s", up);
	} else {
		report("mkdtemp", "skipped", 0);
		set_token("TMP", "/nonexistent");
		set_token("UP", "../../");
	}

	/* Directory descriptors some spellings walk through. */
	int rfd = open("/", O_RDONLY | O_DIRECTORY);
	set_token("RFD", "%d", rfd);
	int tfd = tmp[0] ? open(tmp, O_RDONLY | O_DIRECTORY) : -1;
	set_token("TFD", "%d", tfd);

	raw_calls();
	spellings();
	dirfds();
	if (tmp[0]) {
		make_links();
		through_links();
	}
	cwds(home);
	allowed();
	if (tmp[0])
		remove_links();
	if (rfd >= 0)
		close(rfd);
	if (tfd >= 0)
		close(tfd);
	fprintf(stderr, "procescape: %d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
