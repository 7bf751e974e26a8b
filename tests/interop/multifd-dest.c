/* SPDX-License-Identifier: MIT */
/*
 * multifd-dest: a migram destination for QEMU's multifd (tests/interop).
 * Listens on 127.0.0.1:PORT, accepts the main connection and then N data
 * connections (QEMU connects main first), loads the RAM with N data
 * channels (blocks created from the stream's list), stops at the first
 * device section, reads the rest of the main stream to its end, and
 * writes block BLOCK's memory to OUT.
 *
 *   multifd-dest PORT N BLOCK OUT
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/channel.h>
#include <migram/migram.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int one = 1, lfd, fd, n, fds[16];
	g_autoptr(GError) error = NULL;
	MigramRamList *list;
	MigramReceiver *r;
	MigramChannel *ch;
	MigramRamBlock *b;
	char sink[65536];
	bool ok;

	if (argc != 5 || (n = atoi(argv[2])) < 1 || n > 16)
		return 2;
	a.sin_port = htons((uint16_t)atoi(argv[1]));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 32)) {
		perror("multifd-dest: listen");
		return 1;
	}
	printf("listening\n");
	fflush(stdout);
	fd = accept(lfd, NULL, NULL);
	for (int i = 0; i < n; i++)
		fds[i] = accept(lfd, NULL, NULL);
	urcu_memb_register_thread();
	list = migram_ram_list_new();
	r = migram_receiver_new(list, &(MigramReceiverConfig){
					      .create_blocks = true,
					      .stop_at_devices = true,
					      .multifd_channels = (unsigned)n,
					      .multifd_fds = fds });
	ch = migram_channel_new(fd, false);
	ok = migram_receiver_load(r, ch, &error);
	migram_channel_free(ch);
	migram_receiver_free(r);
	if (!ok) {
		fprintf(stderr, "multifd-dest: %s\n", error->message);
		migram_ram_list_free(list);
		return 1;
	}
	/* the device state: read to the end so the source completes */
	while (read(fd, sink, sizeof(sink)) > 0)
		;
	urcu_memb_read_lock();
	b = migram_ram_list_find(list, argv[3]);
	if (b) {
		FILE *f = fopen(argv[4], "wb");

		ok = f && fwrite(migram_ram_block_host(b), 1,
				 migram_ram_block_used_length(b),
				 f) == migram_ram_block_used_length(b);
		if (f)
			fclose(f);
	}
	urcu_memb_read_unlock();
	/* The blocks the load created belong to the list (LeakSanitizer). */
	migram_ram_list_free(list);
	if (!b || !ok) {
		fprintf(stderr, "multifd-dest: no block '%s' or write failed\n",
			argv[3]);
		return 1;
	}
	return 0;
}
