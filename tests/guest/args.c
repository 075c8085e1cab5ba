/* Prints argv, chosen environment variables and the auxv entries that do
 * not depend on where the program runs, for comparison with a native run. */
#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

int main(int argc, char **argv, char **envp)
{
	printf("argc=%d\n", argc);
	for (int i = 1; i < argc; i++)
		printf("argv[%d]=[%s]\n", i, argv[i]);
	const char *names[] = { "MOSVM_TEST_A", "MOSVM_TEST_B", "MOSVM_TEST_EMPTY", "HOME" };
	for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
		const char *v = getenv(names[i]);
		printf("env %s=%s\n", names[i], v ? v : "(unset)");
	}
	int n = 0;
	for (char **e = envp; *e; e++)
		n++;
	printf("envc>0: %s\n", n > 0 ? "yes" : "no");
	printf("AT_PAGESZ=%lu\n", getauxval(AT_PAGESZ));
	printf("AT_UID=%lu AT_EUID=%lu AT_GID=%lu AT_EGID=%lu\n", getauxval(AT_UID), getauxval(AT_EUID),
	       getauxval(AT_GID), getauxval(AT_EGID));
	printf("AT_SECURE=%lu\n", getauxval(AT_SECURE));
	printf("AT_CLKTCK=%lu\n", getauxval(AT_CLKTCK));
	printf("AT_PHENT=%lu AT_PHNUM=%lu\n", getauxval(AT_PHENT), getauxval(AT_PHNUM));
	printf("AT_ENTRY=%#lx\n", getauxval(AT_ENTRY));
	printf("AT_PHDR=%#lx\n", getauxval(AT_PHDR));
	printf("AT_BASE=%#lx\n", getauxval(AT_BASE));
	printf("AT_PLATFORM=%s\n", (char *)getauxval(AT_PLATFORM));
	printf("AT_EXECFN=%s\n", (char *)getauxval(AT_EXECFN));
	unsigned char *r = (unsigned char *)getauxval(AT_RANDOM);
	int nonzero = 0;
	for (int i = 0; r && i < 16; i++)
		nonzero |= r[i];
	printf("AT_RANDOM: %s\n", r && nonzero ? "16 random bytes" : "missing");
	printf("AT_HWCAP has FPU and SSE2: %s\n",
	       (getauxval(AT_HWCAP) & 1) && (getauxval(AT_HWCAP) & (1 << 26)) ? "yes" : "no");
	printf("uid=%d euid=%d gid=%d egid=%d\n", getuid(), geteuid(), getgid(), getegid());
	printf("pid matches getppid's child: %s\n", getpid() > 0 && getppid() > 0 ? "yes" : "no");
	char cwd[4096];
	printf("cwd=%s\n", getcwd(cwd, sizeof cwd) ? cwd : "(error)");
	return argc;
}
