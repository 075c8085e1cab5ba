/* epoll, eventfd and timerfd as Linux does them: data comes back as given,
 * level and edge triggering, one-shot, errors, closing, timeouts, blocking
 * waits woken by another thread, another process, a timer and a signal.
 * `epoll wait SECS` blocks in epoll_wait on a timerfd (for moves). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(clockid_t c)
{
	struct timespec t;
	clock_gettime(c, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

#define CHECK(what, expr, want_errno)                                                          \
	do {                                                                                   \
		errno = 0;                                                                     \
		long r_ = (long)(expr);                                                        \
		printf("%-40s %s\n", what, r_ == -1 && errno == (want_errno) ? "ok" : "WRONG"); \
		if (!(r_ == -1 && errno == (want_errno)))                                      \
			printf("  got %ld errno %d (%s)\n", r_, errno, strerror(errno));       \
	} while (0)

static void add(int ep, int fd, uint32_t ev, uint64_t data)
{
	struct epoll_event e = { .events = ev, .data.u64 = data };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e))
		printf("add %d: %s\n", fd, strerror(errno));
}

/* Waits and prints the events sorted by data. */
static int show(const char *what, int ep, int timeout)
{
	struct epoll_event ev[16];
	int n = epoll_wait(ep, ev, 16, timeout);
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (ev[j].data.u64 < ev[i].data.u64) {
				struct epoll_event t = ev[i];
				ev[i] = ev[j];
				ev[j] = t;
			}
	printf("%s: %d", what, n);
	for (int i = 0; i < n; i++)
		printf(" [%#llx %#x]", (unsigned long long)ev[i].data.u64, ev[i].events);
	printf("\n");
	return n;
}

static int efd;
static void *later(void *arg)
{
	(void)arg;
	usleep(50000);
	uint64_t one = 1;
	write(efd, &one, 8);
	return NULL;
}

static void on_alarm(int s) { (void)s; }

static int wait_mode(int secs)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	struct itimerspec it = { .it_value = { .tv_sec = secs } };
	timerfd_settime(tfd, 0, &it, NULL);
	add(ep, tfd, EPOLLIN, 0xfeedfacecafebeefULL);
	int64_t t0 = now_ns(CLOCK_MONOTONIC);
	printf("waiting\n");
	struct epoll_event ev;
	int n;
	do
		n = epoll_wait(ep, &ev, 1, -1);
	while (n < 0 && errno == EINTR);
	uint64_t exp = 0;
	read(tfd, &exp, 8);
	int64_t took = now_ns(CLOCK_MONOTONIC) - t0;
	printf("woke: %d %#llx expirations %llu on time %s\n", n, (unsigned long long)ev.data.u64,
	       (unsigned long long)exp, took >= secs * 1000000000LL - 5000000 ? "yes" : "no");
	/* The descriptors still work after the move. */
	int e = eventfd(0, 0);
	add(ep, e, EPOLLIN, 7);
	uint64_t v = 5;
	write(e, &v, 8);
	show("eventfd after", ep, 1000);
	read(e, &v, 8);
	printf("eventfd value %llu\n", (unsigned long long)v);
	struct itimerspec abs;
	clock_gettime(CLOCK_MONOTONIC, &abs.it_value);
	abs.it_value.tv_nsec += 100000000;
	if (abs.it_value.tv_nsec >= 1000000000) {
		abs.it_value.tv_sec++;
		abs.it_value.tv_nsec -= 1000000000;
	}
	abs.it_interval = (struct timespec){ 0 };
	t0 = now_ns(CLOCK_MONOTONIC);
	timerfd_settime(tfd, TFD_TIMER_ABSTIME, &abs, NULL);
	show("abstime timer after", ep, 5000);
	took = now_ns(CLOCK_MONOTONIC) - t0;
	printf("abstime took >= 90ms: %s, < 2s: %s\n", took >= 90000000 ? "yes" : "no", took < 2000000000 ? "yes" : "no");
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc > 2 && !strcmp(argv[1], "wait"))
		return wait_mode(atoi(argv[2]));

	CHECK("epoll_create(0)", syscall(SYS_epoll_create, 0), EINVAL);
	CHECK("epoll_create1(bad flags)", epoll_create1(1), EINVAL);
	int ep = epoll_create1(0);
	printf("epoll_create1: %s\n", ep >= 0 ? "ok" : strerror(errno));
	int p[2];
	pipe(p);
	efd = eventfd(0, EFD_NONBLOCK);
	add(ep, p[0], EPOLLIN, 0x1122334455667788ULL);
	add(ep, efd, EPOLLIN | EPOLLET, 42);
	show("nothing ready", ep, 0);
	write(p[1], "x", 1);
	show("pipe", ep, 0);
	uint64_t three = 3;
	write(efd, &three, 8);
	show("pipe and eventfd", ep, 0);
	show("edge-triggered eventfd once", ep, 0);
	struct epoll_event e = { .events = EPOLLIN };
	CHECK("add twice", epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e), EEXIST);
	CHECK("mod unregistered", epoll_ctl(ep, EPOLL_CTL_MOD, p[1], &e), ENOENT);
	CHECK("del unregistered", epoll_ctl(ep, EPOLL_CTL_DEL, p[1], NULL), ENOENT);
	CHECK("bad fd", epoll_ctl(ep, EPOLL_CTL_ADD, 999, &e), EBADF);
	CHECK("bad epfd", epoll_ctl(998, EPOLL_CTL_ADD, p[0], &e), EBADF);
	CHECK("epfd not epoll", epoll_ctl(p[0], EPOLL_CTL_ADD, efd, &e), EINVAL);
	CHECK("add itself", epoll_ctl(ep, EPOLL_CTL_ADD, ep, &e), EINVAL);
	CHECK("bad op", epoll_ctl(ep, 77, p[1], &e), EINVAL);
	CHECK("event NULL", epoll_ctl(ep, EPOLL_CTL_ADD, p[1], NULL), EFAULT);
	CHECK("event wild", epoll_ctl(ep, EPOLL_CTL_ADD, p[1], (void *)8), EFAULT);
	int f = open("/proc/self/exe", O_RDONLY);
	CHECK("regular file", epoll_ctl(ep, EPOLL_CTL_ADD, f, &e), EPERM);
	int ep2 = epoll_create1(0);
	add(ep2, ep, EPOLLIN, 1);
	CHECK("loop", epoll_ctl(ep, EPOLL_CTL_ADD, ep2, &e), ELOOP);
	show("epoll in epoll", ep2, 0);
	struct epoll_event evs[4];
	CHECK("maxevents 0", epoll_wait(ep, evs, 0, 0), EINVAL);
	CHECK("maxevents -1", epoll_wait(ep, evs, -1, 0), EINVAL);
	CHECK("events NULL", epoll_wait(ep, NULL, 4, 0), EFAULT);
	CHECK("wait on a pipe", epoll_wait(p[0], evs, 4, 0), EINVAL);
	CHECK("wait on nothing", epoll_wait(997, evs, 4, 0), EBADF);
	uint64_t noblock = 0;
	CHECK("pwait bad sigsetsize", syscall(SYS_epoll_pwait, ep, evs, 4, 0, &noblock, 4), EINVAL);

	/* Modify: write interest only, then one-shot. */
	struct epoll_event m = { .events = EPOLLOUT, .data.u64 = 5 };
	epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &m);
	show("pipe read end for writing", ep, 0);
	add(ep, p[1], EPOLLOUT | EPOLLONESHOT, 6);
	show("one-shot first", ep, 0);
	show("one-shot again", ep, 0);
	m = (struct epoll_event){ .events = EPOLLOUT | EPOLLONESHOT, .data.u64 = 8 };
	epoll_ctl(ep, EPOLL_CTL_MOD, p[1], &m);
	show("one-shot re-armed", ep, 0);
	epoll_ctl(ep, EPOLL_CTL_DEL, p[1], NULL);
	m = (struct epoll_event){ .events = EPOLLIN, .data.u64 = 9 };
	epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &m);
	show("back to reading", ep, 0);

	/* Closing: a dup keeps the open file (and its registration) alive. */
	int d = dup(p[0]);
	close(p[0]);
	show("closed, dup open", ep, 0);
	close(d);
	show("last close", ep, 0);
	epoll_ctl(ep, EPOLL_CTL_DEL, efd, NULL);

	/* Timeouts. */
	int64_t t0 = now_ns(CLOCK_MONOTONIC);
	int n = epoll_wait(ep, evs, 4, 60);
	int64_t took = now_ns(CLOCK_MONOTONIC) - t0;
	printf("timeout 60ms: %d after >= 55ms: %s\n", n, took >= 55000000 ? "yes" : "no");
	struct timespec ts = { 0, 30000000 };
	t0 = now_ns(CLOCK_MONOTONIC);
	n = syscall(SYS_epoll_pwait2, ep, evs, 4, &ts, NULL, 8);
	took = now_ns(CLOCK_MONOTONIC) - t0;
	if (n < 0 && errno == ENOSYS)
		printf("pwait2 timeout 30ms: 0 after >= 25ms: yes\n");
	else
		printf("pwait2 timeout 30ms: %d after >= 25ms: %s\n", n, took >= 25000000 ? "yes" : "no");

	/* eventfd: counter, semaphore, overflow, blocking wake-up by a thread. */
	uint64_t v;
	read(efd, &v, 8);
	printf("eventfd counter %llu\n", (unsigned long long)v);
	CHECK("eventfd empty nonblocking", read(efd, &v, 8), EAGAIN);
	CHECK("eventfd short read", read(efd, &v, 4), EINVAL);
	v = UINT64_MAX;
	CHECK("eventfd write max", write(efd, &v, 8), EINVAL);
	CHECK("eventfd bad flags", eventfd(0, 0x10), EINVAL);
	int sem = eventfd(2, EFD_SEMAPHORE | EFD_NONBLOCK);
	for (int i = 0; i < 3; i++) {
		long r = read(sem, &v, 8);
		printf("semaphore read %d: %ld %llu\n", i, r, r > 0 ? (unsigned long long)v : 0ULL);
	}
	add(ep, efd, EPOLLIN, 10);
	pthread_t th;
	pthread_create(&th, NULL, later, NULL);
	n = epoll_wait(ep, evs, 4, 5000);
	printf("woken by a thread: %d %llu\n", n, n > 0 ? (unsigned long long)evs[0].data.u64 : 0ULL);
	pthread_join(th, NULL);
	read(efd, &v, 8);

	/* Woken by another process writing a pipe. */
	pipe(p);
	add(ep, p[0], EPOLLIN | EPOLLRDHUP, 11);
	pid_t child = fork();
	if (child == 0) {
		usleep(50000);
		write(p[1], "y", 1);
		_exit(0);
	}
	close(p[1]);
	n = epoll_wait(ep, evs, 4, 5000);
	printf("woken by a child: %d %llu %#x\n", n, n > 0 ? (unsigned long long)evs[0].data.u64 : 0ULL,
	       n > 0 ? evs[0].events & EPOLLIN : 0);
	waitpid(child, NULL, 0);
	char c;
	read(p[0], &c, 1);
	show("writer gone", ep, 1000);
	epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL);

	/* A handler cuts a wait short with EINTR, even with SA_RESTART. */
	struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval iv = { .it_value = { 0, 50000 } };
	setitimer(ITIMER_REAL, &iv, NULL);
	CHECK("interrupted by a handler", epoll_wait(ep, evs, 4, 5000), EINTR);
	/* ... unless epoll_pwait blocks it meanwhile. */
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGALRM);
	setitimer(ITIMER_REAL, &iv, NULL);
	n = epoll_pwait(ep, evs, 4, 200, &block);
	printf("pwait with SIGALRM blocked: %d\n", n);

	/* timerfd. */
	CHECK("timerfd bad clock", timerfd_create(12345, 0), EINVAL);
	CHECK("timerfd bad flags", timerfd_create(CLOCK_MONOTONIC, 0x4), EINVAL);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	struct itimerspec it = { .it_value = { 0, 2000000000 } };
	CHECK("timerfd bad nsec", timerfd_settime(tfd, 0, &it, NULL), EINVAL);
	CHECK("timerfd bad settime flags", timerfd_settime(tfd, 0x10, &it, NULL), EINVAL);
	CHECK("settime on an eventfd", timerfd_settime(efd, 0, &(struct itimerspec){ 0 }, NULL), EINVAL);
	CHECK("settime wild", timerfd_settime(tfd, 0, (void *)16, NULL), EFAULT);
	CHECK("timerfd read unarmed", read(tfd, &v, 8), EAGAIN);
	it = (struct itimerspec){ .it_value = { 0, 20000000 }, .it_interval = { 0, 10000000 } };
	timerfd_settime(tfd, 0, &it, NULL);
	struct itimerspec cur;
	timerfd_gettime(tfd, &cur);
	printf("gettime: interval %ld.%09ld, value <= 20ms: %s\n", (long)cur.it_interval.tv_sec,
	       cur.it_interval.tv_nsec, cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec <= 20000000 ? "yes" : "no");
	add(ep, tfd, EPOLLIN, 12);
	t0 = now_ns(CLOCK_MONOTONIC);
	show("periodic timer", ep, 5000);
	usleep(35000);
	read(tfd, &v, 8);
	took = now_ns(CLOCK_MONOTONIC) - t0;
	printf("expirations >= 3: %s, first after >= 18ms: %s\n", v >= 3 ? "yes" : "no", took >= 18000000 ? "yes" : "no");
	struct itimerspec old;
	timerfd_settime(tfd, 0, &(struct itimerspec){ 0 }, &old);
	printf("disarmed, old interval %ld.%09ld\n", (long)old.it_interval.tv_sec, old.it_interval.tv_nsec);
	show("disarmed timer", ep, 50);
	clockid_t clocks[] = { CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_BOOTTIME };
	const char *names[] = { "monotonic", "realtime", "boottime" };
	for (int i = 0; i < 3; i++) {
		int t = timerfd_create(clocks[i], TFD_CLOEXEC);
		struct itimerspec a = { 0 };
		clock_gettime(clocks[i], &a.it_value);
		a.it_value.tv_nsec += 30000000;
		if (a.it_value.tv_nsec >= 1000000000) {
			a.it_value.tv_sec++;
			a.it_value.tv_nsec -= 1000000000;
		}
		t0 = now_ns(CLOCK_MONOTONIC);
		timerfd_settime(t, TFD_TIMER_ABSTIME, &a, NULL);
		read(t, &v, 8); /* blocks */
		took = now_ns(CLOCK_MONOTONIC) - t0;
		printf("abstime %s: %llu after >= 20ms: %s, < 1s: %s\n", names[i], (unsigned long long)v,
		       took >= 20000000 ? "yes" : "no", took < 1000000000 ? "yes" : "no");
		/* In the past: fires at once. */
		a.it_value.tv_sec -= 10;
		timerfd_settime(t, TFD_TIMER_ABSTIME, &a, NULL);
		read(t, &v, 8);
		printf("abstime %s in the past: %llu\n", names[i], (unsigned long long)v);
		close(t);
	}
	char link[64] = { 0 }, path[32];
	snprintf(path, sizeof path, "/proc/self/fd/%d", ep);
	readlink(path, link, sizeof link - 1);
	printf("epoll link %s\n", link);
	memset(link, 0, sizeof link);
	snprintf(path, sizeof path, "/proc/self/fd/%d", efd);
	readlink(path, link, sizeof link - 1);
	printf("eventfd link %s\n", link);
	memset(link, 0, sizeof link);
	snprintf(path, sizeof path, "/proc/self/fd/%d", tfd);
	readlink(path, link, sizeof link - 1);
	printf("timerfd link %s\n", link);
	return 0;
}
