/* Processes: fork, vfork, posix_spawn, execve, wait4/waitid, pipes
 * between processes, kill, SIGCHLD, what execve keeps and what it drops.
 * Prints only what is the same natively and in a micro-VM (no pids). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
static int global = 1;
static volatile sig_atomic_t chld_seen;

static void on_chld(int sig) { (void)sig; chld_seen++; }
static void on_usr2(int sig) { (void)sig; }

static void report(const char *what, int st)
{
	if (WIFEXITED(st))
		printf("%s: exited %d\n", what, WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		printf("%s: killed by %s\n", what, strsignal(WTERMSIG(st)));
	else
		printf("%s: status %#x\n", what, st);
}

/* The program again, after execve, in one of its roles. */
static int role(int argc, char **argv)
{
	const char *r = argv[1];
	if (!strcmp(r, "exit")) {
		return atoi(argv[2]);
	}
	if (!strcmp(r, "args")) {
		printf("exec'd: argc %d", argc);
		for (int i = 2; i < argc; i++)
			printf(" [%s]", argv[i]);
		printf(" PROCS_VAR=%s\n", getenv("PROCS_VAR") ? getenv("PROCS_VAR") : "(unset)");
		/* argv[2], argv[3]: a close-on-exec and an inherited descriptor. */
		int cloexec_fd = atoi(argv[2]), kept_fd = atoi(argv[3]);
		errno = 0;
		int r1 = fcntl(cloexec_fd, F_GETFD);
		printf("cloexec fd after exec: %s\n", r1 < 0 && errno == EBADF ? "closed" : "OPEN");
		char buf[16] = {0};
		ssize_t n = read(kept_fd, buf, sizeof buf - 1);
		printf("inherited fd after exec: read %zd [%s]\n", n, buf);
		struct sigaction sa;
		sigaction(SIGUSR1, NULL, &sa);
		printf("SIGUSR1 after exec: %s\n", sa.sa_handler == SIG_IGN ? "ignored" : "not ignored");
		sigaction(SIGUSR2, NULL, &sa);
		printf("SIGUSR2 after exec: %s\n", sa.sa_handler == SIG_DFL ? "default" : "NOT DEFAULT");
		sigset_t set;
		sigprocmask(SIG_BLOCK, NULL, &set);
		printf("SIGHUP blocked after exec: %s\n", sigismember(&set, SIGHUP) ? "yes" : "no");
		printf("global after exec: %d\n", global);
		fflush(stdout);
		return 7;
	}
	if (!strcmp(r, "spawned")) {
		printf("spawned child says %s\n", argv[2]);
		return 0;
	}
	if (!strcmp(r, "sleep")) {
		struct timespec ts = {5, 0};
		nanosleep(&ts, NULL);
		return 0;
	}
	fprintf(stderr, "unknown role %s\n", r);
	return 2;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		return role(argc, argv);
	const char *self = "/proc/self/exe";
	int st;

	/* fork: exit statuses, memory copies, identities. */
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		global = 42;
		_exit(getppid() == parent && getpid() != parent ? 3 : 99);
	}
	waitpid(pid, &st, 0);
	report("fork child", st);
	printf("global in parent: %d\n", global);

	pid = fork();
	if (pid == 0)
		abort();
	waitpid(pid, &st, 0);
	report("aborting child", st);

	pid = fork();
	if (pid == 0) {
		volatile int *p = NULL;
		*p = 1;
		_exit(0);
	}
	waitpid(pid, &st, 0);
	report("crashing child", st);

	/* A pipe between processes: the child writes, the parent reads to EOF. */
	int p[2];
	pipe(p);
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		for (int i = 0; i < 1000; i++)
			dprintf(p[1], "line %d\n", i);
		_exit(0);
	}
	close(p[1]);
	char buf[4096];
	long total = 0, lines = 0;
	ssize_t n;
	while ((n = read(p[0], buf, sizeof buf)) > 0) {
		total += n;
		for (ssize_t i = 0; i < n; i++)
			lines += buf[i] == '\n';
	}
	close(p[0]);
	waitpid(pid, &st, 0);
	printf("pipe from child: %ld bytes, %ld lines\n", total, lines);

	/* WNOHANG while the child runs, then kill it; SIGCHLD arrives. */
	signal(SIGCHLD, on_chld);
	pid = fork();
	if (pid == 0) {
		execl(self, "procs", "sleep", (char *)NULL);
		_exit(127);
	}
	printf("WNOHANG on a running child: %d\n", (int)waitpid(pid, &st, WNOHANG));
	kill(pid, SIGTERM);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	report("killed child", st);
	for (int i = 0; i < 100 && !chld_seen; i++)
		usleep(10000);
	printf("SIGCHLD handler ran: %s\n", chld_seen ? "yes" : "no");
	signal(SIGCHLD, SIG_DFL);

	/* execve: arguments, environment, descriptors, signals. */
	int cloexec_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int q[2];
	pipe(q);
	write(q[1], "kept", 4);
	close(q[1]);
	pid = fork();
	if (pid == 0) {
		char a[16], b[16];
		snprintf(a, sizeof a, "%d", cloexec_fd);
		snprintf(b, sizeof b, "%d", q[0]);
		signal(SIGUSR1, SIG_IGN);
		signal(SIGUSR2, on_usr2);
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGHUP);
		sigprocmask(SIG_BLOCK, &set, NULL);
		global = 5;
		char *args[] = {"procs", "args", a, b, "two words", "", NULL};
		char *env[] = {"PROCS_VAR=from-parent", NULL};
		execve(self, args, env);
		_exit(126);
	}
	close(q[0]);
	waitpid(pid, &st, 0);
	report("exec'd child", st);

	/* vfork + exec, and vfork + _exit. */
	pid = vfork();
	if (pid == 0) {
		execl(self, "procs", "exit", "9", (char *)NULL);
		_exit(127);
	}
	waitpid(pid, &st, 0);
	report("vfork+exec", st);
	pid = vfork();
	if (pid == 0)
		_exit(4);
	waitpid(pid, &st, 0);
	report("vfork+_exit", st);

	/* posix_spawn with the child's stdout on a pipe. */
	int r[2];
	pipe(r);
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, r[1], 1);
	posix_spawn_file_actions_addclose(&fa, r[0]);
	char *sargs[] = {"procs", "spawned", "hello", NULL};
	fflush(stdout);
	int e = posix_spawn(&pid, self, &fa, NULL, sargs, environ);
	close(r[1]);
	n = read(r[0], buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = 0;
	waitpid(pid, &st, 0);
	printf("posix_spawn: %d, child wrote: %s", e, buf);
	report("spawned child", st);

	/* waitid, and errors. */
	pid = fork();
	if (pid == 0)
		_exit(11);
	siginfo_t si;
	memset(&si, 0, sizeof si);
	waitid(P_PID, pid, &si, WEXITED);
	printf("waitid: pid matches %s, code %d, status %d\n", si.si_pid == pid ? "yes" : "no", si.si_code,
	       si.si_status);
	errno = 0;
	int w = wait(&st);
	printf("wait with no children: %d %s\n", w, strerror(errno));
	errno = 0;
	execl("/nonexistent/program", "x", (char *)NULL);
	printf("exec of a missing file: %s\n", strerror(errno));
	errno = 0;
	execl("/proc/self/maps", "x", (char *)NULL);
	printf("exec of a non-program: %s\n", strerror(errno));

	/* Many short children in a row. */
	int ok = 0;
	for (int i = 0; i < 20; i++) {
		pid = fork();
		if (pid == 0)
			_exit(i);
		waitpid(pid, &st, 0);
		ok += WIFEXITED(st) && WEXITSTATUS(st) == i;
	}
	printf("20 children: %d right\n", ok);
	fflush(stdout);

	/* SIGCHLD ignored: children are reaped by the system; wait waits
	 * for them all to end, then fails with ECHILD. */
	signal(SIGCHLD, SIG_IGN);
	for (int i = 0; i < 3; i++)
		if (fork() == 0) {
			usleep(20000 * i);
			_exit(0);
		}
	errno = 0;
	w = wait(&st);
	printf("wait with SIGCHLD ignored: %d %s\n", w, strerror(errno));
	signal(SIGCHLD, SIG_DFL);
	fflush(stdout);

	/* Finally, become another program. */
	execl(self, "procs", "exit", "5", (char *)NULL);
	return 1;
}
