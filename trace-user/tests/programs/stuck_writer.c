/* A writer that blocks on a full send buffer and one that loops on EAGAIN, for the
 * `--stacks` tests. Both write to loopback connections whose reading end sleeps first.
 * Prints what it measured itself: the time spent inside the blocking write() calls, and
 * the EAGAINs it got. Built by the test with frame pointers and debug info. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

/* A connected loopback pair with small buffers, so that the writer fills them fast. */
static void pair(int *writer, int *reader)
{
	int small = 64 * 1024;
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof a;
	if (l < 0 || setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) ||
	    bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &len))
		die("listen");
	*writer = socket(AF_INET, SOCK_STREAM, 0);
	if (setsockopt(*writer, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) ||
	    connect(*writer, (struct sockaddr *)&a, sizeof a))
		die("connect");
	*reader = accept(l, NULL, NULL);
	if (*reader < 0)
		die("accept");
	close(l);
}

struct reader {
	int fd;
	long hold_ms;
};

/* Reads nothing for a while, then everything until the writer closes. */
static void *drain(void *arg)
{
	struct reader *r = arg;
	char buf[65536];
	usleep(r->hold_ms * 1000);
	while (read(r->fd, buf, sizeof buf) > 0)
		;
	return NULL;
}

/* Blocking writes of `total` bytes; returns the nanoseconds spent inside write(). */
__attribute__((noinline)) long push_until_full(int fd, long total)
{
	static char buf[65536];
	long in_write = 0;
	while (total > 0) {
		long t = now_ns();
		ssize_t n = write(fd, buf, total < (long)sizeof buf ? total : (long)sizeof buf);
		in_write += now_ns() - t;
		if (n < 0)
			die("write");
		total -= n;
	}
	return in_write;
}

/* Non-blocking writes of `total` bytes, retrying after each EAGAIN; returns the EAGAINs. */
__attribute__((noinline)) long retry_on_eagain(int fd, long total)
{
	static char buf[65536];
	long eagains = 0;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	while (total > 0) {
		ssize_t n = write(fd, buf, total < (long)sizeof buf ? total : (long)sizeof buf);
		if (n < 0) {
			if (errno != EAGAIN)
				die("write");
			eagains++;
			usleep(2000);
			continue;
		}
		total -= n;
	}
	return eagains;
}

static void run(long hold_ms, long total, int blocking)
{
	int w, r;
	pthread_t t;
	pair(&w, &r);
	struct reader rd = { r, hold_ms };
	pthread_create(&t, NULL, drain, &rd);
	if (blocking)
		printf("push_until_full_ns %ld\n", push_until_full(w, total));
	else
		printf("retry_on_eagain_eagains %ld\n", retry_on_eagain(w, total));
	fflush(stdout);
	close(w);
	pthread_join(t, NULL);
	close(r);
}

int main(int argc, char **argv)
{
	/* The test starts tracing first, then says go (a line on stdin). */
	char go[8];
	if (!fgets(go, sizeof go, stdin))
		return 1;
	long hold_ms = argc > 1 ? atol(argv[1]) : 1000;
	/* Little more than the buffers hold: the time inside write() is nearly all asleep,
	 * even under emulation, where copying is slow. */
	run(hold_ms, 1L << 20, 1);
	run(hold_ms / 2, 1L << 20, 0);
	return 0;
}
