/* alarm, setitimer and POSIX timers deliver their signals, also to a job
 * that never makes a system call. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t alarms, ticks, posix_hits, posix_value;

static void on_alarm(int sig) { (void)sig; alarms++; }
static void on_tick(int sig, siginfo_t *si, void *uc)
{
	(void)sig; (void)uc;
	if (si->si_code == SI_TIMER) {
		posix_hits++;
		posix_value = si->si_value.sival_int;
	} else {
		ticks++;
	}
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	signal(SIGALRM, on_alarm);
	alarm(1);
	printf("alarm left after re-arm: %u\n", alarm(1));
	/* spin with no system calls: only a host-side timer can interrupt us */
	volatile unsigned long spin = 0;
	while (!alarms)
		spin++;
	printf("alarm fired while spinning: %d\n", alarms);

	struct sigaction sa = { 0 };
	sa.sa_sigaction = on_tick;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGPROF, &sa, NULL);

	struct itimerval it = { { 0, 20000 }, { 0, 20000 } };
	signal(SIGALRM, SIG_IGN);
	sa.sa_sigaction = on_tick;
	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
	while (ticks < 5)
		pause();
	struct itimerval zero = { 0 }, old;
	setitimer(ITIMER_REAL, &zero, &old);
	printf("setitimer: %d ticks, interval kept %ldus\n", ticks >= 5, (long)old.it_interval.tv_usec);

	timer_t t;
	struct sigevent sev = { 0 };
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIGUSR1;
	sev.sigev_value.sival_int = 4242;
	printf("timer_create: %d\n", timer_create(CLOCK_MONOTONIC, &sev, &t));
	struct itimerspec ts = { { 0, 0 }, { 0, 30000000 } };
	timer_settime(t, 0, &ts, NULL);
	struct timespec nap = { 1, 0 };
	int r = nanosleep(&nap, NULL);
	printf("nanosleep interrupted: %d, posix timer hits %d value %d\n", r == -1, posix_hits, posix_value);
	struct itimerspec cur;
	timer_gettime(t, &cur);
	printf("one-shot disarmed: %d\n", cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0);
	printf("timer_delete: %d\n", timer_delete(t));

	/* An alarm with the default action ends the job: status 142. */
	signal(SIGALRM, SIG_DFL);
	alarm(1);
	for (;;)
		spin++;
}
