/* hold: touches N MiB, says so, and waits for stdin to close. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 64;
	char *p = malloc(mib << 20);
	memset(p, 1, mib << 20);
	printf("holding %zu MiB\n", mib);
	fflush(stdout);
	char c;
	while (read(0, &c, 1) > 0)
		;
	return p[mib] == 1 ? 0 : 1;
}
