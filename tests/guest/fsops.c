/* File-system calls on the job's working directory. Run in an empty
 * directory; prints only what is the same on every host. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static int cmp(const void *a, const void *b)
{
	return strcmp(*(char **)a, *(char **)b);
}

static void list(const char *dir)
{
	DIR *d = opendir(dir);
	char *names[64];
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)) && n < 64)
		names[n++] = strdup(e->d_name);
	if (d)
		closedir(d);
	qsort(names, n, sizeof *names, cmp);
	printf("ls %s:", dir);
	for (int i = 0; i < n; i++)
		printf(" %s", names[i]);
	printf("\n");
}

int main(void)
{
	printf("mkdir: %d\n", mkdir("d", 0755));
	printf("mkdir again: %d %s\n", mkdir("d", 0755), strerror(errno));
	int fd = open("d/a.txt", O_CREAT | O_WRONLY | O_TRUNC, 0644);
	struct iovec iov[2] = { { "hello ", 6 }, { "world\n", 6 } };
	printf("writev: %zd\n", writev(fd, iov, 2));
	printf("pwrite: %zd\n", pwrite(fd, "W", 1, 6));
	close(fd);
	fd = open("d/a.txt", O_RDONLY);
	char buf[64] = { 0 };
	printf("pread: %zd [%.*s]\n", pread(fd, buf, 5, 6), 5, buf);
	printf("lseek end: %ld\n", (long)lseek(fd, 0, SEEK_END));
	struct stat st;
	fstat(fd, &st);
	printf("fstat size=%ld regular=%d mode=%o\n", (long)st.st_size, S_ISREG(st.st_mode), st.st_mode & 0777);
	int d2 = dup2(fd, 10);
	printf("dup2 -> %d, cloexec=%d\n", d2, fcntl(d2, F_GETFD));
	fcntl(d2, F_SETFD, FD_CLOEXEC);
	printf("F_SETFD -> cloexec=%d\n", fcntl(d2, F_GETFD));
	printf("F_GETFL accmode=%d\n", fcntl(fd, F_GETFL) & O_ACCMODE);
	close(fd);
	close(d2);
	printf("rename: %d\n", rename("d/a.txt", "d/b.txt"));
	printf("symlink: %d\n", symlink("b.txt", "d/link"));
	ssize_t n = readlink("d/link", buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = 0;
	printf("readlink: %zd [%s]\n", n, buf);
	printf("lstat is link: %d\n", lstat("d/link", &st) == 0 && S_ISLNK(st.st_mode));
	printf("access: %d, missing: %d %s\n", access("d/b.txt", R_OK), access("d/nope", F_OK), strerror(errno));
	list("d");
	char cwd[4096], cwd2[4096];
	getcwd(cwd, sizeof cwd);
	printf("chdir: %d\n", chdir("d"));
	getcwd(cwd2, sizeof cwd2);
	printf("cwd moved into d: %d\n", strlen(cwd2) == strlen(cwd) + 2 && !strcmp(cwd2 + strlen(cwd), "/d"));
	printf("open relative to new cwd: %d\n", (fd = open("b.txt", O_RDONLY)) >= 0);
	close(fd);
	chdir("..");
	int p[2];
	printf("pipe: %d\n", pipe(p));
	write(p[1], "ping", 4);
	struct pollfd pfd = { .fd = p[0], .events = POLLIN };
	printf("poll readable: %d revents=%#x\n", poll(&pfd, 1, 1000), pfd.revents);
	fd_set rs;
	FD_ZERO(&rs);
	FD_SET(p[0], &rs);
	struct timeval tv = { 1, 0 };
	printf("select readable: %d\n", select(p[0] + 1, &rs, NULL, NULL, &tv));
	printf("read pipe: %zd\n", read(p[0], buf, 4));
	pfd.revents = 0;
	printf("poll empty with timeout: %d\n", poll(&pfd, 1, 20));
	close(p[1]);
	printf("read at EOF: %zd\n", read(p[0], buf, 4));
	printf("unlink: %d %d\n", unlink("d/link"), unlink("d/b.txt"));
	printf("rmdir: %d\n", rmdir("d"));
	printf("stat removed: %d %s\n", stat("d", &st), strerror(errno));
	printf("write to closed fd: %zd %s\n", write(42, "x", 1), strerror(errno));
	return 0;
}
