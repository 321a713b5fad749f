/*
 * minresp: the smallest fanotify responder, the baseline of `make bench`.
 *
 *   minresp allow FILE...   permission group, FAN_OPEN_PERM inode marks on
 *                           FILEs, answers FAN_ALLOW to every event
 *   minresp deny FILE...    the same, answering FAN_DENY
 *   minresp work FILE...    allow, doing what the daemon must for an allowed
 *                           open: the file's directory marked too (children,
 *                           as a block filter does), FAN_OPEN_EXEC_PERM in
 *                           the mask, and per event fstat(2) of the event fd
 *                           and stat(2) of /proc/PID/exe: the floor of the
 *                           daemon's design, written in C
 *   minresp preread FILE... pre-content group (Linux 6.14), FAN_OPEN_PERM
 *                           and FAN_PRE_ACCESS inode marks on FILEs,
 *                           answers FAN_ALLOW to every event: the floor
 *                           of a read of a file whose content is guarded
 *   minresp notif DIR...    notification group (FAN_REPORT_DFID_NAME,
 *                           bounded queue, as the daemon's), marks the
 *                           directories for changes of their children and
 *                           counts events; SIGTERM prints
 *                           "events N bits N overflows N" and exits
 *
 * minresp -fifo PRIO MODE FILE... runs the responder at SCHED_FIFO PRIO,
 * as the daemon runs its permission loop (SCHED_FIFO 10), for a fair
 * comparison under floods of openers.
 *
 * It prints "ready" on stdout once its marks are placed. Blocking reads of
 * a 64 KiB batch, one write(2) per answer, the event fd closed after its
 * answer: nothing a real responder could leave out.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <unistd.h>

/* Older kernel headers lack the pre-content API (Linux 6.14). */
#ifndef FAN_CLASS_PRE_CONTENT
#define FAN_CLASS_PRE_CONTENT 0x00000008
#endif
#ifndef FAN_PRE_ACCESS
#define FAN_PRE_ACCESS 0x00100000
#endif

static volatile unsigned long long n_events, n_bits, n_overflows;

static void die(const char *what) {
	perror(what);
	exit(1);
}

static int putnum(char *p, unsigned long long v) {
	char tmp[24];
	int n = 0, i = 0;
	do {
		tmp[n++] = '0' + v % 10;
		v /= 10;
	} while (v);
	while (n)
		p[i++] = tmp[--n];
	return i;
}

static void on_term(int sig) {
	(void)sig;
	char buf[128];
	int n = 0;
	memcpy(buf + n, "events ", 7), n += 7;
	n += putnum(buf + n, n_events);
	memcpy(buf + n, " bits ", 6), n += 6;
	n += putnum(buf + n, n_bits);
	memcpy(buf + n, " overflows ", 11), n += 11;
	n += putnum(buf + n, n_overflows);
	buf[n++] = '\n';
	(void)!write(1, buf, n);
	_exit(0);
}

static _Noreturn void perm(int argc, char **argv, unsigned int verdict, int work, int pre) {
	int fd = fanotify_init((pre ? FAN_CLASS_PRE_CONTENT : FAN_CLASS_CONTENT) | FAN_UNLIMITED_QUEUE | FAN_CLOEXEC,
	                       O_RDONLY | O_LARGEFILE | O_CLOEXEC);
	if (fd < 0)
		die("fanotify_init");
	uint64_t mask = FAN_OPEN_PERM | (work ? FAN_OPEN_EXEC_PERM : 0) | (pre ? FAN_PRE_ACCESS : 0);
	for (int i = 2; i < argc; i++) {
		if (fanotify_mark(fd, FAN_MARK_ADD, mask, AT_FDCWD, argv[i]) < 0)
			die(argv[i]);
		if (work) {
			char dir[4096];
			snprintf(dir, sizeof dir, "%s", argv[i]);
			char *slash = strrchr(dir, '/');
			if (slash && slash != dir)
				*slash = 0;
			if (fanotify_mark(fd, FAN_MARK_ADD, mask | FAN_EVENT_ON_CHILD, AT_FDCWD, dir) < 0)
				die(dir);
		}
	}
	printf("ready\n");
	fflush(stdout);
	static char buf[64 << 10] __attribute__((aligned(8)));
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			die("read");
		}
		struct fanotify_event_metadata *m = (void *)buf;
		for (; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
			if (m->fd < 0)
				continue;
			if (work) {
				struct stat st;
				char exe[64];
				fstat(m->fd, &st);
				snprintf(exe, sizeof exe, "/proc/%d/exe", m->pid);
				stat(exe, &st);
			}
			if (m->mask & (FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM | FAN_PRE_ACCESS)) {
				struct fanotify_response r = {.fd = m->fd, .response = verdict};
				if (write(fd, &r, sizeof r) != sizeof r)
					perror("write response");
			}
			close(m->fd);
		}
	}
}

static _Noreturn void notif(int argc, char **argv) {
	struct sigaction sa = {.sa_handler = on_term};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	int fd = fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME | FAN_CLOEXEC, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("fanotify_init");
	uint64_t mask = FAN_MODIFY | FAN_ATTRIB | FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM |
	                FAN_MOVED_TO | FAN_EVENT_ON_CHILD;
	for (int i = 2; i < argc; i++)
		if (fanotify_mark(fd, FAN_MARK_ADD, mask, AT_FDCWD, argv[i]) < 0)
			die(argv[i]);
	printf("ready\n");
	fflush(stdout);
	static char buf[256 << 10] __attribute__((aligned(8)));
	const uint64_t change = FAN_MODIFY | FAN_ATTRIB | FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			die("read");
		}
		struct fanotify_event_metadata *m = (void *)buf;
		for (; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
			if (m->mask & FAN_Q_OVERFLOW) {
				n_overflows++;
				continue;
			}
			n_events++;
			n_bits += __builtin_popcountll(m->mask & change);
		}
	}
}

int main(int argc, char **argv) {
	if (argc > 3 && !strcmp(argv[1], "-fifo")) {
		struct sched_param sp = {.sched_priority = atoi(argv[2])};
		if (sched_setscheduler(0, SCHED_FIFO, &sp))
			die("sched_setscheduler SCHED_FIFO");
		argv[2] = argv[0];
		argv += 2;
		argc -= 2;
	}
	if (argc < 3) {
		fprintf(stderr, "usage: minresp [-fifo PRIO] allow|deny|work|preread|notif PATH...\n");
		return 2;
	}
	if (!strcmp(argv[1], "allow"))
		perm(argc, argv, FAN_ALLOW, 0, 0);
	if (!strcmp(argv[1], "deny"))
		perm(argc, argv, FAN_DENY, 0, 0);
	if (!strcmp(argv[1], "work"))
		perm(argc, argv, FAN_ALLOW, 1, 0);
	if (!strcmp(argv[1], "preread"))
		perm(argc, argv, FAN_ALLOW, 0, 1);
	if (!strcmp(argv[1], "notif"))
		notif(argc, argv);
	fprintf(stderr, "minresp: unknown mode %s\n", argv[1]);
	return 2;
}
