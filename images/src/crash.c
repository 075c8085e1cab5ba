/*
 * crash: dies the way buggy programs do.
 *
 *   crash [null|div|ud|gp|abort|stack]     default: null (a NULL write)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile int zero = 0;

/* Each frame keeps a page of stack alive until the stack runs out. */
static int recurse(volatile char *prev)
{
	volatile char pad[4096];
	pad[0] = prev ? prev[0] + 1 : 0;
	return recurse(pad) + pad[1];
}

int main(int argc, char **argv)
{
	const char *how = argc > 1 ? argv[1] : "null";
	printf("crash: %s\n", how);
	fflush(stdout);
	if (!strcmp(how, "null")) {
		volatile int *volatile p = (int *)16;
		*p = 1;
	} else if (!strcmp(how, "div")) {
		int q, d = zero;
		/* An explicit idiv: C division by zero is undefined and may be folded away. */
		__asm__ volatile("cltd; idivl %2" : "=a"(q) : "a"(1), "r"(d) : "edx");
		printf("%d\n", q);
	} else if (!strcmp(how, "ud")) {
		__asm__ volatile("ud2");
	} else if (!strcmp(how, "gp")) {
		volatile int *volatile p = (int *)0x8000000000000000ULL; /* non-canonical */
		*p = 1;
	} else if (!strcmp(how, "abort")) {
		abort();
	} else if (!strcmp(how, "stack")) {
		return recurse(NULL);
	}
	fprintf(stderr, "crash: unknown mode %s\n", how);
	return 2;
}
