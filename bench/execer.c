/*
 * execer N PROG: vfork(2)+execve(2) PROG N times (after N/10 warm-up
 * rounds), waiting for each child, and print "ns_per_exec EXECS": the
 * mean wall time (CLOCK_MONOTONIC) of one spawn, exec, exit and wait.
 * A child that does not exit 0 is fatal.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void once(char *prog) {
	char *argv[] = {prog, "fsmon-bench", "exec", NULL};
	char *envp[] = {"PATH=/usr/bin:/bin", NULL};
	pid_t p = vfork();
	if (p < 0) {
		perror("vfork");
		exit(1);
	}
	if (p == 0) {
		execve(prog, argv, envp);
		_exit(127);
	}
	int st;
	if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "execer: %s did not exit 0 (status %d)\n", prog, st);
		exit(1);
	}
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: execer N PROG\n");
		return 2;
	}
	long n = atol(argv[1]);
	for (long i = 0; i < n / 10; i++)
		once(argv[2]);
	long long t0 = now_ns();
	for (long i = 0; i < n; i++)
		once(argv[2]);
	long long t1 = now_ns();
	printf("%.0f %ld\n", (double)(t1 - t0) / n, n);
	return 0;
}
