/*
 * rewriter SECS FILE...: for SECS seconds, write 4096 bytes at a moving
 * offset into each FILE in turn (one pwrite(2) each, the files opened
 * once): a stream of modify events of large files, each of which asks
 * the daemon to hash the file. Prints "writes N secs S".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: rewriter SECS FILE...\n");
		return 2;
	}
	double secs = atof(argv[1]);
	int n = argc - 2;
	int *fds = calloc(n, sizeof *fds);
	off_t *sizes = calloc(n, sizeof *sizes);
	for (int i = 0; i < n; i++) {
		fds[i] = open(argv[i + 2], O_WRONLY | O_CLOEXEC);
		struct stat st;
		if (fds[i] < 0 || fstat(fds[i], &st) != 0 || st.st_size < 4096) {
			perror(argv[i + 2]);
			return 1;
		}
		sizes[i] = st.st_size;
	}
	char buf[4096];
	memset(buf, 'r', sizeof buf);
	long writes = 0;
	double start = now(), end = start + secs;
	for (off_t off = 0; now() < end; off += sizeof buf) {
		for (int i = 0; i < n; i++) {
			if (pwrite(fds[i], buf, sizeof buf, off % (sizes[i] - (off_t)sizeof buf)) != (ssize_t)sizeof buf) {
				perror("pwrite");
				return 1;
			}
			writes++;
		}
	}
	printf("writes %ld secs %.3f\n", writes, now() - start);
	return 0;
}
