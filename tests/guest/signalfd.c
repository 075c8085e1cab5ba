/* signalfd: blocked signals read as struct signalfd_siginfo, through
 * read, poll and epoll; masks, flags and errors as Linux. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

static void show(const char *what, int fd)
{
	struct signalfd_siginfo si[4];
	long n = read(fd, si, sizeof si);
	if (n < 0) {
		printf("%s: %s\n", what, strerror(errno));
		return;
	}
	printf("%s: %ld bytes", what, n);
	for (long i = 0; i < n / (long)sizeof si[0]; i++)
		printf(" [signo %u code %d pid-is-mine %d]", si[i].ssi_signo, si[i].ssi_code,
		       si[i].ssi_code == SI_USER || si[i].ssi_code == SI_TKILL ? si[i].ssi_pid == (unsigned)getpid() : -1);
	printf("\n");
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR1);
	sigaddset(&m, SIGUSR2);
	sigaddset(&m, SIGALRM);
	sigprocmask(SIG_BLOCK, &m, NULL);
	int fd = signalfd(-1, &m, SFD_NONBLOCK | SFD_CLOEXEC);
	printf("signalfd: %s\n", fd >= 0 ? "ok" : strerror(errno));
	show("nothing pending", fd);
	struct pollfd p = { .fd = fd, .events = POLLIN };
	printf("poll nothing: %d\n", poll(&p, 1, 0));
	kill(getpid(), SIGUSR1);
	printf("poll after kill: %d revents %#x\n", poll(&p, 1, 0), p.revents);
	syscall(SYS_tgkill, getpid(), gettid(), SIGUSR2);
	show("two pending", fd);
	printf("poll after read: %d\n", poll(&p, 1, 0));
	char small[64];
	kill(getpid(), SIGUSR1);
	printf("short buffer: %s\n", read(fd, small, sizeof small) < 0 ? strerror(errno) : "read");
	show("still pending", fd);
	printf("write: %s\n", write(fd, small, 8) < 0 ? strerror(errno) : "wrote");

	/* Through epoll, blocking until a timer's signal. */
	int ep = epoll_create1(0);
	struct epoll_event e = { .events = EPOLLIN, .data.u64 = 77 };
	epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
	struct itimerval iv = { .it_value = { 0, 50000 } };
	setitimer(ITIMER_REAL, &iv, NULL);
	struct epoll_event out;
	int n = epoll_wait(ep, &out, 1, 5000);
	printf("epoll woken by the timer's signal: %d data %llu\n", n, n > 0 ? (unsigned long long)out.data.u64 : 0ULL);
	show("the alarm", fd);
	printf("epoll after reading: %d\n", epoll_wait(ep, &out, 1, 0));

	/* A new mask; an ordinary descriptor is not a signalfd. */
	sigset_t only2;
	sigemptyset(&only2);
	sigaddset(&only2, SIGUSR2);
	printf("new mask: %s\n", signalfd(fd, &only2, 0) == fd ? "same fd" : strerror(errno));
	kill(getpid(), SIGUSR1);
	show("USR1 not in the mask", fd);
	printf("bad size: %s\n", syscall(SYS_signalfd4, -1, &m, 4, 0) < 0 ? strerror(errno) : "made");
	printf("bad flags: %s\n", signalfd(-1, &m, 0x1234) < 0 ? strerror(errno) : "made");
	printf("not a signalfd: %s\n", signalfd(0, &m, 0) < 0 ? strerror(errno) : "made");
	printf("closed fd: %s\n", signalfd(999, &m, 0) < 0 ? strerror(errno) : "made");
	int fd2 = signalfd(-1, &m, 0);
	show("blocking read with one pending", fd2);
	setitimer(ITIMER_REAL, &iv, NULL);
	show("blocking read waits for the alarm", fd2);
	char link[64] = { 0 }, path[32];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	readlink(path, link, sizeof link - 1);
	printf("link %s\n", link);
	return 0;
}
