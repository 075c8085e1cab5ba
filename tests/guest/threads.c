/* Threads: creation, join, TLS, mutex and condition variable, a pipe
 * between threads, sleeping beside computing, signals to one thread. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 8

static __thread int tls_value;
static long work = 20000000;
static uint64_t partial[WORKERS];

static void *worker(void *arg)
{
	int id = (int)(intptr_t)arg;
	tls_value = id * 100;
	uint64_t x = (uint64_t)id + 1, sum = 0;
	for (long i = 0; i < work; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		sum += x & 0xff;
	}
	partial[id] = sum + (uint64_t)tls_value;
	return (void *)(intptr_t)(tls_value == id * 100);
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int queue[64], head, tail, done;

static void *producer(void *arg)
{
	(void)arg;
	for (int i = 1; i <= 1000; i++) {
		pthread_mutex_lock(&lock);
		while (tail - head == 64)
			pthread_cond_wait(&cond, &lock);
		queue[tail++ % 64] = i;
		pthread_cond_broadcast(&cond);
		pthread_mutex_unlock(&lock);
	}
	pthread_mutex_lock(&lock);
	done = 1;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
	return NULL;
}

static void *consumer(void *arg)
{
	long sum = 0;
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&lock);
		while (head == tail && !done)
			pthread_cond_wait(&cond, &lock);
		if (head == tail && done) {
			pthread_mutex_unlock(&lock);
			break;
		}
		sum += queue[head++ % 64];
		pthread_cond_broadcast(&cond);
		pthread_mutex_unlock(&lock);
	}
	return (void *)sum;
}

static int fds[2];

static void *reader(void *arg)
{
	char buf[64] = { 0 };
	(void)arg;
	ssize_t n = read(fds[0], buf, sizeof buf - 1);
	printf("reader got %zd bytes: %s\n", n, buf);
	return NULL;
}

static void *sleeper(void *arg)
{
	struct timespec t = { 0, 200000000 };
	(void)arg;
	nanosleep(&t, NULL);
	return (void *)1;
}

static volatile sig_atomic_t hit_tid;
static void on_usr1(int sig)
{
	(void)sig;
	hit_tid = (sig_atomic_t)syscall(SYS_gettid);
}

/* A thread whose sleep a handler cuts short: EINTR and the time left. */
static volatile int napper_ready;
static void *napper(void *arg)
{
	struct timespec t = { 5, 0 }, left = { 0, 0 };
	(void)arg;
	napper_ready = 1;
	int r = nanosleep(&t, &left);
	int ok = r == -1 && errno == EINTR && left.tv_sec < 5 && (left.tv_sec > 0 || left.tv_nsec > 0);
	return (void *)(intptr_t)ok;
}

static volatile pid_t target_tid;
static volatile int target_ready, target_stop;
static void *target(void *arg)
{
	(void)arg;
	target_tid = (pid_t)syscall(SYS_gettid);
	target_ready = 1;
	while (!target_stop)
		sched_yield();
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		work = atol(argv[1]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	pthread_t t[WORKERS];
	for (int i = 0; i < WORKERS; i++)
		pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
	int tls_ok = 1;
	for (int i = 0; i < WORKERS; i++) {
		void *r;
		pthread_join(t[i], &r);
		tls_ok &= (int)(intptr_t)r;
	}
	uint64_t total = 0;
	for (int i = 0; i < WORKERS; i++)
		total += partial[i];
	printf("workers: total %llu, each saw its own TLS: %d\n", (unsigned long long)total, tls_ok);

	pthread_t p, c;
	pthread_create(&c, NULL, consumer, NULL);
	pthread_create(&p, NULL, producer, NULL);
	void *sum;
	pthread_join(p, NULL);
	pthread_join(c, &sum);
	printf("producer/consumer: sum %ld\n", (long)sum);

	pipe(fds);
	pthread_t r;
	pthread_create(&r, NULL, reader, NULL);
	struct timespec pause_ = { 0, 50000000 };
	nanosleep(&pause_, NULL);
	write(fds[1], "hello thread", 12);
	pthread_join(r, NULL);

	pthread_t s;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	pthread_create(&s, NULL, sleeper, NULL);
	volatile uint64_t spin = 0;
	for (int i = 0; i < 50000000; i++)
		spin += i;
	pthread_join(s, NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double el = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
	printf("sleeper beside a spinner: joined, at least 0.2 s: %d\n", el >= 0.2);

	signal(SIGUSR1, on_usr1);
	pthread_t tg;
	pthread_create(&tg, NULL, target, NULL);
	while (!target_ready)
		sched_yield();
	pthread_kill(tg, SIGUSR1);
	while (!hit_tid)
		sched_yield();
	target_stop = 1;
	pthread_join(tg, NULL);
	printf("pthread_kill reached the right thread: %d\n", hit_tid == target_tid);

	pthread_t n;
	pthread_create(&n, NULL, napper, NULL);
	while (!napper_ready)
		sched_yield();
	struct timespec settle = { 0, 20000000 };
	nanosleep(&settle, NULL);
	pthread_kill(n, SIGUSR1);
	void *nap_ok;
	pthread_join(n, &nap_ok);
	printf("interrupted sleep: EINTR with the time left: %d\n", (int)(intptr_t)nap_ok);
	printf("main thread is the process: %d\n", (pid_t)syscall(SYS_gettid) == getpid());
	return 0;
}
