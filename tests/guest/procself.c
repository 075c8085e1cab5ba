/* /proc/self describes the job itself, not the VMM. Prints facts that
 * hold natively as well. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *slurp(const char *path, size_t *len)
{
	static char buf[1 << 16];
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return NULL;
	ssize_t n, got = 0;
	while ((n = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
		got += n;
	close(fd);
	buf[got] = 0;
	if (len)
		*len = got;
	return buf;
}

int main(int argc, char **argv)
{
	int local = 0;
	char *maps = slurp("/proc/self/maps", NULL);
	int stack_ok = 0, exe_ok = 0;
	for (char *line = strtok(maps, "\n"); line; line = strtok(NULL, "\n")) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) != 2)
			continue;
		if ((uintptr_t)&local >= lo && (uintptr_t)&local < hi && strstr(line, "[stack]"))
			stack_ok = 1;
		if ((uintptr_t)main >= lo && (uintptr_t)main < hi && strstr(line, "r-xp"))
			exe_ok = 1;
	}
	printf("maps: stack variable in [stack]: %d, main in an r-x mapping: %d\n", stack_ok, exe_ok);

	size_t len;
	char *cmd = slurp("/proc/self/cmdline", &len);
	size_t want = 0;
	for (int i = 0; i < argc; i++)
		want += strlen(argv[i]) + 1;
	printf("cmdline matches argv: %d\n", len == want && memcmp(cmd, argv[0], len) == 0);

	char *status = slurp("/proc/self/status", NULL);
	char *pid = strstr(status, "\nPid:\t");
	printf("status Pid is getpid(): %d\n", pid && atoi(pid + 6) == getpid());
	char *stat = slurp("/proc/self/stat", NULL);
	printf("stat starts with pid: %d\n", atoi(stat) == getpid());

	char a[4096] = { 0 }, b[4096] = { 0 };
	int fd = open(argv[0], O_RDONLY);
	char link[64];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	readlink(link, a, sizeof a - 1);
	realpath(argv[0], b);
	printf("fd link names the opened file: %d\n", strcmp(a, b) == 0);
	int again = open(link, O_RDONLY);
	char m[4];
	printf("reopen through /proc/self/fd: %d\n", again >= 0 && read(again, m, 4) == 4 && m[1] == 'E');
	readlink("/proc/self/exe", a, sizeof a - 1);
	printf("exe is the program: %d\n", strcmp(a, b) == 0);
	printf("missing fd: %d\n", open("/proc/self/fd/999", O_RDONLY) < 0);
	return 0;
}
