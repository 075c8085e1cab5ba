/* forkbomb: forks until fork fails, as a fork bomb would (under a lower
 * RLIMIT_NPROC if one is given); the children wait until the parent lets
 * them go. Prints how many it made and why it stopped, how many ended
 * well, and that a fork works again once they are gone.
 *   forkbomb [NPROC] */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long lim = argc > 1 ? atol(argv[1]) : 0;
	if (lim) {
		struct rlimit r = { lim, lim };
		if (setrlimit(RLIMIT_NPROC, &r)) {
			perror("setrlimit");
			return 1;
		}
	}
	int p[2];
	if (pipe(p))
		return 1;
	int n = 0;
	for (;;) {
		pid_t c = fork();
		if (c < 0) {
			printf("made %d processes, then fork: %s\n", n, strerror(errno));
			break;
		}
		if (c == 0) {
			char b;
			close(p[1]);
			ssize_t r = read(p[0], &b, 1);
			_exit(r == 0 ? 0 : 1);
		}
		if (++n >= 100000)
			break;
	}
	fflush(stdout);
	close(p[1]);
	int st, ok = 0;
	while (wait(&st) > 0)
		ok += WIFEXITED(st) && WEXITSTATUS(st) == 0;
	printf("%d children ended\n", ok);
	pid_t c = fork();
	if (c == 0)
		_exit(7);
	if (c < 0 || waitpid(c, &st, 0) != c) {
		printf("fork after: %s\n", strerror(errno));
		return 1;
	}
	printf("fork after: %d\n", WEXITSTATUS(st));
	return 0;
}
