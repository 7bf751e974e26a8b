/* SPDX-License-Identifier: MIT */
/*
 * raw-tcp: the yardstick for bench/channels.py.  Moves BYTES of random
 * data over loopback TCP with K connections, from a source buffer filled
 * before the clock starts into fresh anonymous memory (the destination
 * faults every page in, as a migration destination does), and prints one
 * JSON line: wall time, GB/s, CPU seconds of each side.  The receiver is
 * a child process (its own CPU time); each connection carries BYTES / K
 * with one thread per connection on each side.
 *
 *   raw-tcp BYTES K PORT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXC 64

typedef struct {
	int fd;
	uint8_t *p;
	size_t n;
} Job;

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage u;

	getrusage(RUSAGE_SELF, &u);
	return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
	       (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static void *rx(void *o)
{
	Job *j = o;

	for (size_t d = 0; d < j->n;) {
		ssize_t k = read(j->fd, j->p + d, j->n - d);

		if (k <= 0) {
			perror("raw-tcp: read");
			exit(1);
		}
		d += (size_t)k;
	}
	return NULL;
}

static void *tx(void *o)
{
	Job *j = o;

	for (size_t d = 0; d < j->n;) {
		ssize_t k = write(j->fd, j->p + d, j->n - d);

		if (k <= 0) {
			perror("raw-tcp: write");
			exit(1);
		}
		d += (size_t)k;
	}
	return NULL;
}

static void run(Job *jobs, int k, void *(*fn)(void *))
{
	pthread_t t[MAXC];

	for (int i = 0; i < k; i++)
		pthread_create(&t[i], NULL, fn, &jobs[i]);
	for (int i = 0; i < k; i++)
		pthread_join(t[i], NULL);
}

int main(int argc, char **argv)
{
	size_t bytes, per;
	int k, port, one = 1, lfd, pfd[2];
	struct sockaddr_in a = { .sin_family = AF_INET };
	Job jobs[MAXC];
	uint8_t *src;
	double t0, t1, cpu0, dst_cpu = 0;
	pid_t pid;

	if (argc != 4)
		return 2;
	bytes = strtoull(argv[1], NULL, 0);
	k = atoi(argv[2]);
	port = atoi(argv[3]);
	if (k < 1 || k > MAXC)
		return 2;
	per = bytes / (size_t)k / 4096 * 4096;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, MAXC) ||
	    pipe(pfd)) {
		perror("raw-tcp: listen");
		return 1;
	}
	pid = fork();
	if (pid == 0) {
		uint8_t *dst = mmap(NULL, per * (size_t)k,
				    PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		double c0 = cpu_s(), c;

		for (int i = 0; i < k; i++)
			jobs[i] = (Job){ accept(lfd, NULL, NULL),
					 dst + per * (size_t)i, per };
		run(jobs, k, rx);
		c = cpu_s() - c0;
		if (write(pfd[1], &c, sizeof(c)) != sizeof(c))
			return 1;
		_exit(0);
	}
	close(lfd);
	src = mmap(NULL, per * (size_t)k, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (size_t i = 0; i < per * (size_t)k / 8; i++) /* xorshift */
		((uint64_t *)src)[i] = (i + 1) * 0x9E3779B97F4A7C15ull ^
				       (i << 13) ^ (i >> 7);
	t0 = now();
	cpu0 = cpu_s();
	for (int i = 0; i < k; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
			perror("raw-tcp: connect");
			return 1;
		}
		jobs[i] = (Job){ fd, src + per * (size_t)i, per };
	}
	run(jobs, k, tx);
	for (int i = 0; i < k; i++)
		shutdown(jobs[i].fd, SHUT_WR);
	if (read(pfd[0], &dst_cpu, sizeof(dst_cpu)) != sizeof(dst_cpu))
		return 1;
	t1 = now();
	waitpid(pid, NULL, 0);
	printf("{\"bytes\": %zu, \"connections\": %d, \"seconds\": %.6f, "
	       "\"gbps\": %.4f, \"cpu_src_s\": %.3f, \"cpu_dst_s\": %.3f}\n",
	       per * (size_t)k, k, t1 - t0,
	       (double)(per * (size_t)k) / (t1 - t0) / 1e9, cpu_s() - cpu0,
	       dst_cpu);
	return 0;
}
