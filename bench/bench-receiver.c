/* SPDX-License-Identifier: MIT */
/*
 * Receiver load throughput: GB/s of pages placed from a socketpair, as a
 * ratio to the limits measured in the same run:
 *
 *   memcpy       a plain memcpy of the same bytes between two buffers
 *   socketpair   raw throughput of the same bytes through a socketpair
 *                (1 MiB writes, reads into one reused buffer)
 *   receiver     a sender thread writes a QEMU stream of 1 GiB of non-zero
 *                pages (page refs gathered by the channel); the receiver
 *                loads it into a destination block
 *
 * Destination memory is touched once before the timed runs, so first-touch
 * page faults (erratic on this machine kind, see docs/performance.md) stay
 * out of every figure.  Median of 3 runs each.
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/channel.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>
#include <migram/stream.h>

#define SIZE (UINT64_C(1) << 30)
#define PAGE 4096u
#define RUNS 3

static double now(void)
{
	return (double)g_get_monotonic_time() / 1e6;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v)
{
	qsort(v, RUNS, sizeof(*v), cmp);
	return v[RUNS / 2];
}

typedef struct {
	int fd;
	const guint8 *src;
	bool stream; /* a migration stream, or raw bytes */
} Sender;

static gpointer send_main(gpointer p)
{
	Sender *s = p;
	MigramChannel *ch = migram_channel_new(s->fd, true);

	if (s->stream) {
		MigramStreamWriter *w = migram_stream_writer_new(ch);
		MigramStreamBlock b = { "pc.ram", SIZE, 0 };

		migram_stream_writer_begin(w, "none");
		migram_stream_writer_ram_start(w, &b, 1);
		migram_stream_writer_ram_open(w, true);
		for (uint64_t off = 0; off < SIZE; off += PAGE)
			migram_stream_writer_page(w, "pc.ram", off,
						  s->src + off);
		migram_stream_writer_ram_close(w);
		migram_stream_writer_finish(w, NULL);
		migram_stream_writer_free(w);
	} else {
		for (uint64_t off = 0; off < SIZE; off += 1 << 20) {
			migram_channel_put_ref(ch, s->src + off, 1 << 20);
			migram_channel_flush(ch, NULL);
		}
	}
	migram_channel_free(ch);
	return NULL;
}

static double run_socket(const guint8 *src, MigramRamList *dst, bool stream)
{
	int fds[2];
	Sender s = { .src = src, .stream = stream };
	GThread *t;
	double t0, dt;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0)
		return 0;
	s.fd = fds[0];
	t0 = now();
	t = g_thread_new("sender", send_main, &s);
	if (stream) {
		MigramChannel *ch = migram_channel_new(fds[1], true);
		MigramReceiver *r = migram_receiver_new(dst, NULL);
		GError *error = NULL;

		if (!migram_receiver_load(r, ch, &error)) {
			fprintf(stderr, "load: %s\n", error->message);
			exit(1);
		}
		migram_receiver_free(r);
		migram_channel_free(ch);
	} else {
		g_autofree guint8 *buf = g_malloc(1 << 20);
		uint64_t got = 0;

		while (got < SIZE) {
			ssize_t n = read(fds[1], buf, 1 << 20);

			if (n <= 0)
				break;
			got += (uint64_t)n;
		}
		close(fds[1]);
	}
	g_thread_join(t);
	dt = now() - t0;
	return SIZE / dt / 1e9;
}

int main(void)
{
	MigramRamList *dst = migram_ram_list_new();
	MigramRamBlock *b;
	guint8 *src = g_malloc(SIZE), *copy = g_malloc(SIZE), *host;
	double mc[RUNS], sock[RUNS], recv[RUNS];

	urcu_memb_register_thread();
	for (uint64_t i = 0; i < SIZE; i += 8)
		*(guint64 *)(src + i) = i * 0x9e3779b97f4a7c15ULL | 1;
	memset(copy, 1, SIZE);
	b = migram_ram_list_add(dst,
				&(MigramRamBlockConfig){ .idstr = "pc.ram",
							 .used_length = SIZE },
				NULL);
	host = migram_ram_block_host(b);
	memset(host, 1, SIZE); /* populate the destination once */

	for (int k = 0; k < RUNS; k++) {
		double t0 = now();

		memcpy(copy, src, SIZE);
		mc[k] = SIZE / (now() - t0) / 1e9;
		sock[k] = run_socket(src, dst, false);
		recv[k] = run_socket(src, dst, true);
	}
	if (memcmp(host, src, SIZE) != 0) {
		fprintf(stderr, "destination differs from source\n");
		return 1;
	}
	printf("receiver load of 1 GiB of non-zero pages from a socketpair; "
	       "median of %d runs\n\n",
	       RUNS);
	printf("%-36s %6.2f GB/s\n", "memcpy of the same bytes (limit)",
	       median(mc));
	printf("%-36s %6.2f GB/s\n", "raw socketpair, 1 MiB writes",
	       median(sock));
	printf("%-36s %6.2f GB/s  %.2f of memcpy, %.2f of raw socketpair\n",
	       "receiver (stream, pages placed)", median(recv),
	       median(recv) / median(mc), median(recv) / median(sock));
	urcu_memb_unregister_thread();
	migram_ram_list_free(dst);
	g_free(src);
	g_free(copy);
	return 0;
}
