/* SPDX-License-Identifier: MIT */
#include "migram-test-util.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include <sys/mman.h>
#include <unistd.h>

#include <linux/kvm.h>

#include <migram/bitmap.h>
#include <migram/channel.h>
#include <migram/receiver.h>
#include <urcu/urcu-memb.h>

/* Naive on purpose: it checks the library, so it must not rely on it. */
static bool bit(const unsigned long *map, size_t b)
{
	return (map[b / MIGRAM_BITS_PER_LONG] >> (b % MIGRAM_BITS_PER_LONG)) &
	       1;
}

char *migram_test_ranges(const unsigned long *map, size_t nbits)
{
	GString *s = g_string_new(NULL);

	for (size_t b = 0; b < nbits; b++) {
		size_t e = b;

		if (!bit(map, b))
			continue;
		while (e + 1 < nbits && bit(map, e + 1))
			e++;
		if (s->len)
			g_string_append_c(s, ',');
		if (e == b)
			g_string_append_printf(s, "%zu", b);
		else
			g_string_append_printf(s, "%zu-%zu", b, e);
		b = e;
	}
	return g_string_free(s, FALSE);
}

void migram_test_assert_ranges_at(const char *file, int line,
				  const unsigned long *map, size_t nbits,
				  const char *expected)
{
	g_autofree char *got = migram_test_ranges(map, nbits);

	if (g_strcmp0(got, expected) != 0)
		g_error("%s:%d: bitmap is \"%s\", expected \"%s\"", file, line,
			got, expected);
}

unsigned int migram_test_scale(unsigned int normal)
{
	return g_test_thorough() ? normal * 10 : normal;
}

void migram_test_put8(GByteArray *a, guint8 v)
{
	g_byte_array_append(a, &v, 1);
}

void migram_test_put32(GByteArray *a, guint32 v)
{
	guint32 be = GUINT32_TO_BE(v);

	g_byte_array_append(a, (guint8 *)&be, 4);
}

void migram_test_put64(GByteArray *a, guint64 v)
{
	guint64 be = GUINT64_TO_BE(v);

	g_byte_array_append(a, (guint8 *)&be, 8);
}

void migram_test_putstr(GByteArray *a, const char *s)
{
	migram_test_put8(a, (guint8)strlen(s));
	g_byte_array_append(a, (const guint8 *)s, (guint)strlen(s));
}

MigramChannel *migram_test_channel_over(const void *bytes, gsize len)
{
	int fd = memfd_create("test-stream", MFD_CLOEXEC);

	g_assert_cmpint(fd, >=, 0);
	g_assert_cmpint(write(fd, bytes, len), ==, (gssize)len);
	lseek(fd, 0, SEEK_SET);
	return migram_channel_new(fd, true);
}

struct MigramTestReceiver {
	MigramRamList *list;
	MigramChannel *ch;
	gboolean create_blocks;
	unsigned int multifd_channels; /* data channels, fds borrowed */
	const int *multifd_fds;
	gboolean ok;
	GError *error;
	GThread *thread;
};

static gpointer test_receiver_main(gpointer p)
{
	MigramTestReceiver *rx = p;
	MigramReceiver *r = migram_receiver_new(
		rx->list, &(MigramReceiverConfig){
				  .create_blocks = rx->create_blocks,
				  .multifd_channels = rx->multifd_channels,
				  .multifd_fds = rx->multifd_fds });

	urcu_memb_register_thread();
	rx->ok = migram_receiver_load(r, rx->ch, &rx->error);
	urcu_memb_unregister_thread();
	migram_receiver_free(r);
	return NULL;
}

MigramTestReceiver *migram_test_receiver_start(MigramRamList *list, int fd,
					       gboolean create_blocks)
{
	MigramTestReceiver *rx = g_new0(MigramTestReceiver, 1);

	rx->list = list;
	rx->ch = migram_channel_new(fd, true);
	rx->create_blocks = create_blocks;
	rx->thread = g_thread_new("test-receiver", test_receiver_main, rx);
	return rx;
}

MigramTestReceiver *migram_test_receiver_start_multifd(MigramRamList *list,
						       int fd, unsigned int n,
						       const int *fds)
{
	MigramTestReceiver *rx = g_new0(MigramTestReceiver, 1);

	rx->list = list;
	rx->ch = migram_channel_new(fd, true);
	rx->multifd_channels = n;
	rx->multifd_fds = fds;
	rx->thread = g_thread_new("test-receiver", test_receiver_main, rx);
	return rx;
}

gboolean migram_test_receiver_join(MigramTestReceiver *rx, GError **error)
{
	gboolean ok;

	g_thread_join(rx->thread);
	ok = rx->ok;
	if (rx->error)
		g_propagate_error(error, rx->error);
	migram_channel_free(rx->ch);
	g_free(rx);
	return ok;
}

int migram_test_xioctl(int fd, unsigned long req, void *arg)
{
	int r;

	do
		r = ioctl(fd, req, arg);
	while (r < 0 && errno == EINTR);
	return r;
}

void migram_test_flat_pm(int vcpu_fd)
{
	struct kvm_segment cs = { .limit = 0xffffffff,
				  .selector = 8,
				  .type = 11,
				  .present = 1,
				  .db = 1,
				  .s = 1,
				  .g = 1 };
	struct kvm_segment ds = cs;
	struct kvm_sregs sregs;

	g_assert_cmpint(migram_test_xioctl(vcpu_fd, KVM_GET_SREGS, &sregs), ==,
			0);
	ds.type = 3;
	ds.selector = 16;
	sregs.cs = cs;
	sregs.ds = sregs.es = sregs.ss = sregs.fs = sregs.gs = ds;
	sregs.cr0 |= 1; /* PE */
	g_assert_cmpint(migram_test_xioctl(vcpu_fd, KVM_SET_SREGS, &sregs), ==,
			0);
}

const guint8 migram_test_pm_pass_code[] = {
	0x8b, 0x07,       /* mov eax, [edi] */
	0x40,             /* inc eax */
	0x89, 0x07,       /* mov [edi], eax */
	0x89, 0xde,       /* mov esi, ebx */
	0x89, 0xcd,       /* mov ebp, ecx */
	0xff, 0x06,       /* 1: inc dword [esi] */
	0x89, 0x46, 0x04, /* mov [esi + 4], eax */
	0x01, 0xd6,       /* add esi, edx */
	0x4d,             /* dec ebp */
	0x75, 0xf6,       /* jnz 1b */
	0xf4,             /* hlt */
};
const size_t migram_test_pm_pass_code_len = sizeof(migram_test_pm_pass_code);
