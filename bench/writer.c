/*
 * writer DIR PREFIX N: create N new files DIR/PREFIX-i, write 64 bytes to
 * each with one write(2), close: one create and one modify for a watcher,
 * never merged with another file's. Prints "ns_per_file N".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc != 4) {
		fprintf(stderr, "usage: writer DIR PREFIX N\n");
		return 2;
	}
	long n = atol(argv[3]);
	char path[4096], data[64];
	memset(data, 'x', sizeof data);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		snprintf(path, sizeof path, "%s/%s-%ld", argv[1], argv[2], i);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0) {
			perror(path);
			return 1;
		}
		if (write(fd, data, sizeof data) != sizeof data) {
			perror("write");
			return 1;
		}
		close(fd);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
	printf("%.1f %ld\n", ns / n, n);
	return 0;
}
