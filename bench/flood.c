/*
 * flood threads|procs N SECONDS FILE: N threads of one process, or N
 * processes, open(2) FILE in a loop for SECONDS and close it; each open
 * that succeeds also reads one byte (a leak is content read, not only a
 * descriptor). All start together (they wait on one pipe that is closed
 * at once). Prints
 *
 *   opens N ok N eperm N read N seconds S
 *
 * opens = every answered open, ok = opens that succeeded, eperm = opens
 * denied, read = successful opens whose read(2) returned data, seconds =
 * the measured window (from the start signal to the stop flag). Any other
 * error is fatal.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct counts {
	long ok, eperm, read, err;
	char pad[64 - 4 * sizeof(long)]; /* one cache line each */
};

static const char *path;
static int startfd;
static volatile int *stop;
static struct counts *counts;

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void work(struct counts *c) {
	char b;
	(void)!read(startfd, &b, 1); /* returns 0 when the pipe is closed */
	while (!*stop) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			if (errno == EPERM)
				c->eperm++;
			else if (errno != EINTR)
				c->err++;
			continue;
		}
		c->ok++;
		if (read(fd, &b, 1) == 1)
			c->read++;
		close(fd);
	}
}

static void *thread(void *arg) {
	work(arg);
	return NULL;
}

int main(int argc, char **argv) {
	if (argc != 5 || (strcmp(argv[1], "threads") && strcmp(argv[1], "procs"))) {
		fprintf(stderr, "usage: flood threads|procs N SECONDS FILE\n");
		return 2;
	}
	int procs = !strcmp(argv[1], "procs");
	int n = atoi(argv[2]);
	double secs = atof(argv[3]);
	path = argv[4];
	if (n < 1 || secs <= 0)
		return 2;
	/* Shared with the children in procs mode. */
	void *shm = mmap(NULL, sizeof(int) + 64 + (size_t)n * sizeof(struct counts), PROT_READ | PROT_WRITE,
	                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	stop = shm;
	counts = (struct counts *)((char *)shm + 64);
	int p[2];
	if (pipe(p)) {
		perror("pipe");
		return 1;
	}
	startfd = p[0];
	pthread_t *t = calloc(n, sizeof *t);
	pid_t *pids = calloc(n, sizeof *pids);
	for (int i = 0; i < n; i++) {
		if (procs) {
			pid_t pid = fork();
			if (pid < 0) {
				perror("fork");
				*stop = 1;
				close(p[1]);
				return 1;
			}
			if (pid == 0) {
				close(p[1]);
				work(&counts[i]);
				_exit(0);
			}
			pids[i] = pid;
		} else if (pthread_create(&t[i], NULL, thread, &counts[i])) {
			perror("pthread_create");
			return 1;
		}
	}
	double t0 = now();
	close(p[1]); /* go */
	struct timespec d = {(time_t)secs, (long)((secs - (time_t)secs) * 1e9)};
	while (nanosleep(&d, &d) && errno == EINTR)
		;
	*stop = 1;
	double t1 = now();
	for (int i = 0; i < n; i++) {
		if (procs)
			waitpid(pids[i], NULL, 0);
		else
			pthread_join(t[i], NULL);
	}
	long ok = 0, eperm = 0, rd = 0, err = 0;
	for (int i = 0; i < n; i++) {
		ok += counts[i].ok;
		eperm += counts[i].eperm;
		rd += counts[i].read;
		err += counts[i].err;
	}
	if (err) {
		fprintf(stderr, "flood: %ld opens failed with an error other than EPERM\n", err);
		return 1;
	}
	printf("opens %ld ok %ld eperm %ld read %ld seconds %.3f\n", ok + eperm, ok, eperm, rd, t1 - t0);
	return 0;
}
