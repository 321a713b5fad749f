// Ignore marks against a directory's permission mark (issue 19, point 1):
// which kernel tools let the neighbours of a protected file go past the
// responder without opening a hole. Build: gcc -O2 -pthread -o nb nb.c
// Run as root: ./nb DIR (an empty directory on ext4 or tmpfs).
#include "../deny/fan.h"
#ifndef FAN_MARK_EVICTABLE
#define FAN_MARK_EVICTABLE 0x200
#endif
static int g, evict;
static volatile int events;
static char last[4096];
static const uint64_t PERM = FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM;
static void *resp(void *a) {
	(void)a;
	char buf[8192];
	for (;;) {
		ssize_t n = read(g, buf, sizeof buf);
		if (n <= 0) continue;
		for (struct fanotify_event_metadata *m = (void *)buf; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
			char p[64]; snprintf(p, sizeof p, "/proc/self/fd/%d", m->fd);
			ssize_t l = readlink(p, last, sizeof last - 1); if (l >= 0) last[l] = 0;
			const char *b = strrchr(last, '/');
			if (b && b[1] == 'n') // neighbour: ignore before the answer
				if (fanotify_mark(g, FAN_MARK_ADD | FAN_MARK_IGNORE | evict, PERM, m->fd, NULL) < 0)
					perror("ignore");
			__sync_fetch_and_add(&events, 1);
			struct fanotify_response r = {m->fd, FAN_ALLOW};
			if (write(g, &r, sizeof r) < 0) perror("answer");
			close(m->fd);
		}
	}
	return 0;
}
static int opens(const char *p) {
	int before = events, fd = open(p, O_RDONLY);
	if (fd < 0) { perror(p); return -1; }
	close(fd);
	return events - before;
}
static double loop(const char *p, int n) {
	for (int i = 0; i < n / 10; i++) close(open(p, O_RDONLY));
	double t = now();
	for (int i = 0; i < n; i++) close(open(p, O_RDONLY));
	return (now() - t) / n * 1e6;
}
static void wr(const char *p, const char *s) {
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (write(fd, s, strlen(s)) < 0) perror("write");
	close(fd);
}
int main(int argc, char **argv) {
	if (argc < 2) { fprintf(stderr, "usage: nb DIR\n"); return 2; }
	char d[4096], n1[4200], n2[4200], n3[4200], n4[4200], p[4200], far[4200], prot[4200];
	snprintf(d, sizeof d, "%s", argv[1]);
	snprintf(n1, sizeof n1, "%s/n1", d); snprintf(n2, sizeof n2, "%s/n2", d);
	snprintf(n3, sizeof n3, "%s/n3", d); snprintf(n4, sizeof n4, "%s/n4", d);
	snprintf(p, sizeof p, "%s/p", d); snprintf(prot, sizeof prot, "%s/prot", d);
	snprintf(far, sizeof far, "%s.far", d);
	wr(n1, "a"); wr(n2, "b"); wr(n3, "c"); wr(n4, "d"); wr(prot, "s"); wr(far, "f");
	evict = argc > 2 && !strcmp(argv[2], "evictable") ? FAN_MARK_EVICTABLE : 0;
	g = fanotify_init(FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_UNLIMITED_QUEUE, O_RDONLY);
	if (g < 0) { perror("init"); return 1; }
	if (fanotify_mark(g, FAN_MARK_ADD, PERM | FAN_EVENT_ON_CHILD, AT_FDCWD, d) < 0) { perror("dir mark"); return 1; }
	if (fanotify_mark(g, FAN_MARK_ADD, PERM, AT_FDCWD, prot) < 0) { perror("prot mark"); return 1; }
	pthread_t t; pthread_create(&t, 0, resp, 0);
	printf("evictable ignore marks: %s\n", evict ? "yes" : "no");
	int o1 = opens(n1), o2 = opens(n1);
	printf("n1 first open: %d event(s); second: %d\n", o1, o2);
	int fd = open(n1, O_WRONLY); // this open is ignored; the write clears
	if (write(fd, "x", 1) < 0) perror("w");
	close(fd);
	o1 = opens(n1), o2 = opens(n1);
	printf("n1 after a write: %d; next: %d\n", o1, o2);
	fd = open(n1, O_RDWR); if (ftruncate(fd, 0) < 0) perror("ft"); close(fd);
	printf("n1 after ftruncate: %d\n", opens(n1));
	if (truncate(n1, 0) < 0) perror("truncate");
	printf("n1 after truncate(path): %d\n", opens(n1));
	if (chmod(n1, 0600) < 0) perror("chmod");
	printf("n1 after chmod (no write): %d\n", opens(n1));
	fd = open(n1, O_RDWR); if (ftruncate(fd, 4096) < 0) perror("ft");
	o1 = opens(n1); // ignore again (after the truncate)
	o2 = opens(n1);
	printf("n1 reopened with a writable fd held: %d then %d\n", o1, o2);
	char *m = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m != MAP_FAILED) { memcpy(m, "mmapped", 7); msync(m, 4096, MS_SYNC); munmap(m, 4096); }
	close(fd);
	printf("n1 after a write through mmap + msync (that fd was open for write when the ignore was asked for): %d\n", opens(n1));
	o1 = opens(n1);
	fd = open(n1, O_RDWR); // no writer before: the ignore holds, this open is not an event
	m = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m != MAP_FAILED) { memcpy(m, "mmapped2", 8); msync(m, 4096, MS_SYNC); munmap(m, 4096); }
	o2 = opens(n1);
	printf("n1 ignored (%d), opened O_RDWR, written through mmap only, unmapped: next open %d (0: an mmap write keeps the ignore)\n", o1, o2);
	opens(n2);
	if (rename(n2, p) < 0) perror("rename");
	printf("n2 ignored, renamed to p (no write): open p gives %d (0: the ignore follows the inode)\n", opens(p));
	int r = fanotify_mark(g, FAN_MARK_ADD, PERM | (argc > 3 ? FAN_PRE_ACCESS : 0), AT_FDCWD, p);
	printf("perm mark added to p's inode: %s; open p gives %d (0: the ignore still wins)\n", r ? strerror(errno) : "ok", opens(p));
	r = fanotify_mark(g, FAN_MARK_REMOVE | FAN_MARK_IGNORE, PERM, AT_FDCWD, p);
	printf("ignore removed from p: %s; open p gives %d\n", r ? strerror(errno) : "ok", opens(p));
	r = fanotify_mark(g, FAN_MARK_REMOVE | FAN_MARK_IGNORE, PERM, AT_FDCWD, far);
	printf("removing an ignore from an unmarked inode: %s\n", r ? strerror(errno) : "ok");
	r = fanotify_mark(g, FAN_MARK_REMOVE | FAN_MARK_IGNORE, PERM, AT_FDCWD, prot);
	printf("removing an ignore from a marked inode with none: %s; prot gives %d\n", r ? strerror(errno) : "ok", opens(prot));
	opens(n3);
	if (link(n3, n4) < 0) { unlink(n4); if (link(n3, n4) < 0) perror("link"); }
	printf("n3 ignored, hard link n4 -> n3: open n4 gives %d\n", opens(n4));
	// timing
	int N = 200000;
	opens(n3);
	double tn = loop(n3, N), tf = loop(far, N), tp = loop(prot, N / 4);
	printf("open+close us: ignored neighbour %.2f, another directory %.2f, protected (answered) %.2f\n", tn, tf, tp);
	printf("events during the ignored neighbour's loop would show here: total %d\n", events);
	return 0;
}
