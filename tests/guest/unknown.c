/* Unknown and unsupported system calls return ENOSYS. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
	long r = syscall(999);
	printf("syscall(999) = %ld, errno %s\n", r, strerror(errno));
	r = syscall(999);
	printf("again = %ld, errno %s\n", r, strerror(errno));
	r = syscall(100000);
	printf("syscall(100000) = %ld, errno %s\n", r, strerror(errno));
	return 0;
}
