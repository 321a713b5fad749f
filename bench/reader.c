/*
 * reader N FILE: open FILE once, then pread(2) its first 4 KiB N times
 * (after N/10 warm-up reads) and print "ns_per_read READS ok OK eperm
 * EPERM": the mean wall time of one read (CLOCK_MONOTONIC), denied ones
 * included. The cost of a read of a file whose content a pre-content
 * mark guards (FAN_PRE_ACCESS: one permission event per read). Any error
 * other than EPERM is fatal.
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

static char buf[4096];

static int once(int fd, const char *path, long *ok, long *eperm) {
	if (pread(fd, buf, sizeof buf, 0) >= 0) {
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
		fprintf(stderr, "usage: reader N FILE\n");
		return 2;
	}
	long n = atol(argv[1]), ok = 0, eperm = 0;
	const char *path = argv[2];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		perror(path);
		return 1;
	}
	for (long i = 0; i < n / 10 + 1; i++)
		if (once(fd, path, &ok, &eperm))
			return 1;
	ok = eperm = 0;
	long long t0 = now_ns();
	for (long i = 0; i < n; i++)
		if (once(fd, path, &ok, &eperm))
			return 1;
	long long t1 = now_ns();
	printf("%.1f reads %ld ok %ld eperm %ld\n", (double)(t1 - t0) / n, n, ok, eperm);
	return 0;
}
