/* SPDX-License-Identifier: MIT */
/*
 * Precopy completion acknowledged by the destination (config.return_path,
 * QEMU's "return-path" capability without postcopy).
 *
 * The source asks for a return path at the start of the stream
 * (OPEN_RETURN_PATH, right after the header).  The destination answers on
 * the same socket, in the other direction, with SHUT once its load ended:
 * 0 when it loaded the whole stream, non-zero when it failed.  After the
 * source's last byte (EOF) it reads the return path until SHUT:
 *
 *  - SHUT 0: the destination has everything; the migration completed;
 *  - SHUT non-zero, the connection ending or breaking first, a hostile
 *    message, a cancel or the channel's I/O timeout: the migration fails,
 *    and since nothing was switched over, migram_migration_run() resumes
 *    the source guest (resume_guest), which then holds the only copy.
 *
 * Without the return path the source cannot know, and reports completed
 * once its last byte is written, as QEMU does without one.  Postcopy
 * migrations always have a return path; their precopy completion waits
 * for SHUT the same way (postcopy-src.c).
 */
#include <sys/socket.h>
#include <time.h>

#include "migram-common.h"
#include "migram/migram.h"
#include "return-path.h"
#include "sender-internal.h"
#include "stream-error.h"
#include "stream-internal.h"

static bool open_rp(MigramMigration *m, void *state, GError **error)
{
	(void)state;
	int type;
	socklen_t len = sizeof(type);

	if (getsockopt(migram_channel_fd(m->ch), SOL_SOCKET, SO_TYPE, &type,
		       &len) != 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			    "return_path: the channel (fd %d) is not a socket, "
			    "so the destination cannot answer on it",
			    migram_channel_fd(m->ch));
		return false;
	}
	migram_stream_writer_command(m->w, MIGRAM_CMD_OPEN_RETURN_PATH, NULL,
				     0);
	return true;
}

static bool await_shut(MigramMigration *m, void *state, GError **error)
{
	(void)state;
	for (;;) {
		MigramRpMessage msg;
		GError *e = NULL;

		if (!migram_rp_read(m->ch, &msg, &e)) {
			if (g_atomic_int_get(&m->cancelled)) {
				g_clear_error(&e);
				return migram_sender_check(m, error);
			}
			g_propagate_prefixed_error(
				error, e,
				"the destination did not confirm that it "
				"loaded the stream (%" G_GUINT64_FORMAT
				" bytes sent): ",
				migram_channel_bytes_sent(m->ch));
			return false;
		}
		switch (msg.type) {
		case MIGRAM_RP_PONG:
			continue; /* harmless; precopy sends no PING */
		case MIGRAM_RP_SHUT:
			if (msg.value == 0)
				return true;
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
				    "return path byte %" G_GUINT64_FORMAT
				    ": the destination failed to load the "
				    "stream (SHUT %u)",
				    msg.at, msg.value);
			return false;
		default:
			return migram_rp_fail(error, msg.at,
					      "message type %u in a precopy "
					      "migration (only SHUT expected)",
					      msg.type);
		}
	}
}

/* A hook user with no state: setup asks for the return path, precopy_done
 * waits for SHUT (sender-internal.h, "Sender hooks"). */
const MigramSenderHooks migram_completion_hooks = {
	.name = "completion",
	.setup = open_rp,
	.precopy_done = await_shut,
};

struct timespec migram_deadline_after(unsigned int ms)
{
	struct timespec t;
	long ns;

	clock_gettime(CLOCK_REALTIME, &t);
	ns = t.tv_nsec + (long)(ms % 1000) * 1000000L;
	t.tv_sec += (time_t)(ms / 1000) + ns / 1000000000L;
	t.tv_nsec = ns % 1000000000L;
	return t;
}

bool migram_sender_shut_stalled(MigramMigration *m, unsigned int ms,
				GError **error)
{
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
		    "return path on fd %d stalled: no SHUT from the "
		    "destination for %u ms after the last byte (io_timeout_ms)",
		    migram_channel_fd(m->ch), ms);
	return false;
}
