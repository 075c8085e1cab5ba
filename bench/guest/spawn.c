/* Process creation: fork+exit+wait and fork+exec+wait round trips, the
 * median of N each, in microseconds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof *v, cmp);
	return v[n / 2];
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "exit"))
		return 0;
	int n = argc > 1 ? atoi(argv[1]) : 30;
	if (n < 1 || n > 10000)
		n = 30;
	double *t = malloc(n * sizeof *t);
	int st;
	for (int i = 0; i < n; i++) {
		double t0 = now_us();
		pid_t pid = fork();
		if (pid == 0)
			_exit(0);
		waitpid(pid, &st, 0);
		t[i] = now_us() - t0;
	}
	printf("fork_us %.1f\n", median(t, n));
	for (int i = 0; i < n; i++) {
		double t0 = now_us();
		pid_t pid = fork();
		if (pid == 0) {
			execl("/proc/self/exe", "spawn", "exit", (char *)NULL);
			_exit(127);
		}
		waitpid(pid, &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			return 1;
		t[i] = now_us() - t0;
	}
	printf("spawn_us %.1f\n", median(t, n));
	return 0;
}
