/*
 * opener N FILE: open(2)+close(2) FILE N times (after N/10 warm-up rounds)
 * and print "ns_per_op OPS ok OK eperm EPERM": the mean wall time of one
 * open+close (CLOCK_MONOTONIC), over every round, denied ones included.
 * Any error other than EPERM is fatal.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int once(const char *path, long *ok, long *eperm) {
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		(*ok)++;
		return 0;
	}
	if (errno == EPERM) {
		(*eperm)++;
		return 0;
	}
	perror(path);
	return -1;
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: opener N FILE\n");
		return 2;
	}
	long n = atol(argv[1]), ok = 0, eperm = 0;
	const char *path = argv[2];
	for (long i = 0; i < n / 10 + 1; i++)
		if (once(path, &ok, &eperm))
			return 1;
	ok = eperm = 0;
	long long t0 = now_ns();
	for (long i = 0; i < n; i++)
		if (once(path, &ok, &eperm))
			return 1;
	long long t1 = now_ns();
	printf("%.1f ops %ld ok %ld eperm %ld\n", (double)(t1 - t0) / n, n, ok, eperm);
	return 0;
}
