/* The job's descriptor table: descriptors inherited above 2, /dev/fd,
 * /dev/stdin and /proc/self/fd through the job's own table, FIFOs made
 * with mknod, fadvise, and the descriptor limit. Run with 3<FILE and
 * 5>FILE, stdin holding some text, and a soft RLIMIT_NOFILE of 4096. */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *err(long r) { return r < 0 ? strerror(errno) : "ok"; }

/* The other end of "fifo2", from another thread of the job. */
static void *fifo_writer(void *arg)
{
	usleep(50000);
	int w = open("fifo2", O_WRONLY);
	write(w, arg, strlen(arg));
	close(w);
	return NULL;
}

static void *fifo_reader(void *arg)
{
	usleep(50000);
	int r = open("fifo2", O_RDONLY);
	long n = read(r, arg, 63);
	((char *)arg)[n > 0 ? n : 0] = 0;
	close(r);
	return NULL;
}

static void link_of(int fd)
{
	char path[32], buf[256] = { 0 };
	snprintf(path, sizeof path, "/dev/fd/%d", fd);
	long n = readlink(path, buf, sizeof buf - 1);
	/* Pipes' inode numbers differ run to run; their kind does not. */
	char *br = strchr(buf, '[');
	if (br && n > 0)
		strcpy(br, "[N]");
	printf("readlink %s: %s\n", path, n < 0 ? strerror(errno) : buf);
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	/* Inherited descriptors. */
	char buf[256] = { 0 };
	long n = read(3, buf, sizeof buf - 1);
	printf("read fd 3: %ld %s", n, n > 0 ? buf : "\n");
	printf("write fd 5: %s\n", err(write(5, "to five\n", 8)));
	printf("fd 4: %s\n", err(fcntl(4, F_GETFD)));
	printf("fd 3 flags: %#x cloexec %ld\n", fcntl(3, F_GETFL) & O_ACCMODE, (long)fcntl(3, F_GETFD));

	/* /proc/self/fd lists the job's descriptors. */
	DIR *d = opendir("/proc/self/fd");
	int names[64], k = 0;
	struct dirent *e;
	while (d && (e = readdir(d)) && k < 64)
		if (e->d_name[0] != '.')
			names[k++] = atoi(e->d_name);
	for (int i = 0; i < k; i++)
		for (int j = i + 1; j < k; j++)
			if (names[j] < names[i]) {
				int t = names[i];
				names[i] = names[j];
				names[j] = t;
			}
	printf("/proc/self/fd:");
	for (int i = 0; i < k; i++)
		printf(" %d", names[i]);
	printf(" (dirfd %d)\n", d ? dirfd(d) : -1);
	if (d)
		closedir(d);
	struct stat st;
	long sr = stat("/proc/self/fd", &st);
	printf("stat /proc/self/fd: %s dir %d\n", err(sr), S_ISDIR(st.st_mode));
	d = opendir("/proc/self/fdinfo");
	printf("fdinfo dir: %s\n", d ? "ok" : strerror(errno));
	if (d)
		closedir(d);
	printf("open fd dir for writing: %s\n", err(open("/proc/self/fd", O_WRONLY)));
	link_of(3);
	link_of(5);
	link_of(99);
	int p[2];
	pipe(p);
	link_of(p[0]);

	/* /dev/fd/N opens the same file anew, the same pipe. */
	int again = open("/dev/fd/3", O_RDONLY);
	memset(buf, 0, sizeof buf);
	n = read(again, buf, 6);
	printf("reopened fd 3 from its start: %ld %s\n", n, buf);
	close(again);
	write(p[1], "piped", 5);
	char path[32];
	snprintf(path, sizeof path, "/dev/fd/%d", p[0]);
	int pr2 = open(path, O_RDONLY);
	memset(buf, 0, sizeof buf);
	n = read(pr2, buf, sizeof buf - 1);
	printf("through /dev/fd to the pipe: %ld %s\n", n, buf);
	printf("/proc/self/fd/999: %s\n", err(open("/proc/self/fd/999", O_RDONLY)));
	int in = open("/dev/stdin", O_RDONLY);
	memset(buf, 0, sizeof buf);
	n = read(in, buf, sizeof buf - 1);
	printf("/dev/stdin: %ld %s", n, buf);

	/* mknod: FIFOs and files; devices refused. */
	unlink("fifo");
	unlink("plain");
	printf("mkfifo: %s\n", err(mknod("fifo", S_IFIFO | 0666, 0)));
	printf("mkfifo again: %s\n", err(mknod("fifo", S_IFIFO | 0666, 0)));
	printf("mknod regular: %s\n", err(mknod("plain", 0644, 0)));
	stat("fifo", &st);
	printf("fifo is a fifo: %d mode %o\n", S_ISFIFO(st.st_mode), st.st_mode & 0777);
	stat("plain", &st);
	printf("plain is a file: %d mode %o\n", S_ISREG(st.st_mode), st.st_mode & 0777);
	printf("char device: %s\n", getuid() == 0 ? "Operation not permitted" : err(mknod("dev", S_IFCHR | 0600, makedev(1, 3))));
	printf("device in a missing dir: %s\n", getuid() == 0 ? "No such file or directory" : err(mknod("nodir/dev", S_IFBLK | 0600, 0)));
	printf("bad type: %s\n", err(mknod("bad", 0170000 | 0600, 0)));
	printf("directory type: %s\n", err(mknod("bad", S_IFDIR | 0600, 0)));
	printf("nonblocking writer, no reader: %s\n", err(open("fifo", O_WRONLY | O_NONBLOCK)));
	pid_t c = fork();
	if (c == 0) {
		int w = open("fifo", O_WRONLY);
		write(w, "through the fifo", 16);
		_exit(0);
	}
	int r = open("fifo", O_RDONLY); /* waits for the writer */
	memset(buf, 0, sizeof buf);
	n = 0;
	long k2;
	while ((k2 = read(r, buf + n, sizeof buf - 1 - n)) > 0)
		n += k2;
	printf("fifo read: %ld %s\n", n, buf);
	waitpid(c, NULL, 0);

	/* Threads: an open waiting for the FIFO's other end lets them run. */
	mkfifo("fifo2", 0600);
	pthread_t th;
	pthread_create(&th, NULL, fifo_writer, "from a thread");
	int r2 = open("fifo2", O_RDONLY);
	memset(buf, 0, sizeof buf);
	n = read(r2, buf, sizeof buf - 1);
	printf("threaded fifo read: %ld %s\n", n, buf);
	close(r2);
	pthread_join(th, NULL);
	char got[64] = { 0 };
	pthread_create(&th, NULL, fifo_reader, got);
	int w2 = open("fifo2", O_WRONLY);
	write(w2, "to a thread", 11);
	close(w2);
	pthread_join(th, NULL);
	printf("threaded fifo write: %s\n", got);
	unlink("fifo2");

	/* fadvise and readahead. */
	printf("fadvise file: %d\n", posix_fadvise(3, 0, 0, POSIX_FADV_SEQUENTIAL));
	printf("fadvise pipe: %s\n", strerror(posix_fadvise(p[0], 0, 0, POSIX_FADV_NORMAL)));
	printf("fadvise bad advice: %s\n", strerror(posix_fadvise(3, 0, 0, 99)));
	printf("fadvise bad fd: %s\n", strerror(posix_fadvise(99, 0, 0, POSIX_FADV_NORMAL)));
	printf("readahead file: %s\n", err(readahead(3, 0, 4096)));
	printf("readahead pipe: %s\n", err(readahead(p[0], 0, 4096)));

	/* The descriptor limit (RLIMIT_NOFILE 4096). */
	printf("dup2 to 3000: %s\n", err(dup2(0, 3000)));
	printf("dup2 to 4096: %s\n", err(dup2(0, 4096)));
	printf("F_DUPFD at 4096: %s\n", err(fcntl(0, F_DUPFD, 4096)));
	printf("F_DUPFD at 4000: %ld\n", (long)fcntl(0, F_DUPFD, 4000));
	int last = -1;
	for (;;) {
		int x = dup(0);
		if (x < 0) {
			printf("dup until %s, last %d\n", strerror(errno), last);
			break;
		}
		last = x;
	}
	printf("close_range: %s\n", err(syscall(436, 10, ~0U, 0)));
	printf("fd 3000 after close_range: %s\n", err(fcntl(3000, F_GETFD)));
	printf("fd 3 after close_range: %s\n", err(fcntl(3, F_GETFD)));
	unlink("fifo");
	unlink("plain");
	return 0;
}
