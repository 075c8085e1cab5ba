/* fdbomb: exhausts the job's descriptors, as a leaking or hostile program
 * would: raises its soft RLIMIT_NOFILE to the hard limit, opens /dev/null
 * until open fails, then makes pipes until pipe fails, then closes them
 * all and checks that open works again. Prints why each stopped and
 * whether the counts agree with the limit (not the counts themselves: the
 * limit is the caller's). Exits 0 if every step went as on Linux. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

int main(void)
{
	struct rlimit r;
	if (getrlimit(RLIMIT_NOFILE, &r)) {
		perror("getrlimit");
		return 1;
	}
	/* Bounded, so a host with a huge hard limit is not asked for millions. */
	if (r.rlim_max > 65536)
		r.rlim_max = 65536;
	r.rlim_cur = r.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &r)) {
		perror("setrlimit");
		return 1;
	}
	long opened = 0, highest = -1;
	int fd;
	while ((fd = open("/dev/null", O_RDONLY)) >= 0) {
		opened++;
		if (fd > highest)
			highest = fd;
	}
	int open_errno = errno;
	/* Descriptors the VMM holds itself may come off a limit it cannot
	 * raise above the caller's hard one: a few, never many. */
	long short_by = (long)r.rlim_cur - (highest + 1);
	printf("open: %s after filling the table, %s\n", strerror(open_errno),
	       short_by == 0 ? "at the limit" : short_by > 0 && short_by < 64 ? "a few short of the limit" : "FAR from the limit");
	/* Room for pipes: close the last 64 descriptors opened. */
	for (long i = highest; i > highest - 64; i--)
		close((int)i);
	long pipes = 0;
	int p[2];
	while (pipe(p) == 0)
		pipes++;
	int pipe_errno = errno;
	printf("pipe: %s after %s\n", strerror(pipe_errno), pipes == 32 ? "32 pipes" : "a wrong number of pipes");
	for (long i = 3; i <= highest; i++)
		close((int)i);
	fd = open("/dev/null", O_RDONLY);
	printf("open after closing: %s\n", fd == 3 ? "descriptor 3" : "WRONG");
	fprintf(stderr, "fdbomb: %ld descriptors of a limit of %lu\n", highest + 1, (unsigned long)r.rlim_cur);
	return open_errno == EMFILE && pipe_errno == EMFILE && pipes == 32 && fd == 3 && short_by >= 0 && short_by < 64 ? 0 : 1;
}
