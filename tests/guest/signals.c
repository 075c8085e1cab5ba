/* Signal dispositions, masks, handlers, sigaltstack and fault handlers. */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t got[65];
static sigjmp_buf env;
static volatile void *fault_addr;
static volatile int on_alt;
static char altstack[65536];

static void handler(int sig)
{
	got[sig]++;
}

static void info_handler(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	got[sig]++;
	printf("  info: signo=%d code=%d pid_matches=%d\n", si->si_signo, si->si_code, si->si_pid == getpid());
}

static void segv_handler(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	char here;
	on_alt = &here >= altstack && &here < altstack + sizeof altstack;
	fault_addr = si->si_addr;
	got[sig]++;
	siglongjmp(env, 1);
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	signal(SIGUSR1, handler);
	raise(SIGUSR1);
	printf("SIGUSR1 handled: %d\n", got[SIGUSR1]);

	struct sigaction sa = { 0 };
	sa.sa_sigaction = info_handler;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGUSR2, &sa, NULL);
	kill(getpid(), SIGUSR2);
	printf("SIGUSR2 handled: %d\n", got[SIGUSR2]);

	sigset_t set, old, pending;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, &old);
	raise(SIGUSR1);
	sigpending(&pending);
	printf("blocked SIGUSR1 pending: %d, handled so far: %d\n", sigismember(&pending, SIGUSR1), got[SIGUSR1]);
	sigprocmask(SIG_SETMASK, &old, NULL);
	printf("after unblock handled: %d\n", got[SIGUSR1]);

	signal(SIGUSR1, SIG_IGN);
	raise(SIGUSR1);
	printf("ignored SIGUSR1 still alive, handled: %d\n", got[SIGUSR1]);

	/* A SIGSEGV handler on an alternate stack, escaping with siglongjmp. */
	stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0 };
	if (sigaltstack(&ss, NULL) != 0)
		printf("sigaltstack: %s\n", strerror(errno));
	sa.sa_sigaction = segv_handler;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigaction(SIGSEGV, &sa, NULL);
	if (sigsetjmp(env, 1) == 0) {
		*(volatile int *)(uintptr_t)0x40 = 7;
		printf("no fault?\n");
	}
	printf("SIGSEGV handled: %d at %p on altstack: %d\n", got[SIGSEGV], fault_addr, on_alt);
	/* sigsetjmp(env, 1) restored the mask, so it can fault again. */
	if (sigsetjmp(env, 1) == 0)
		*(volatile int *)(uintptr_t)0x80 = 7;
	printf("SIGSEGV handled again: %d at %p\n", got[SIGSEGV], fault_addr);

	/* Floating-point state survives a handler that uses it. */
	volatile double x = 1.5;
	signal(SIGUSR1, handler);
	raise(SIGUSR1);
	printf("fp after handler: %.3f\n", x * 2);

	/* SA_RESETHAND: the second delivery takes the default action... so
	 * use a harmless default (SIGWINCH is ignored by default). */
	sa.sa_handler = handler;
	sa.sa_flags = SA_RESETHAND;
	sigaction(SIGWINCH, &sa, NULL);
	raise(SIGWINCH);
	raise(SIGWINCH);
	printf("SIGWINCH handled once: %d\n", got[SIGWINCH]);

	/* Default action of SIGTERM ends the program: status 143. */
	printf("raising SIGTERM\n");
	raise(SIGTERM);
	printf("not reached\n");
	return 0;
}
