/* SPDX-License-Identifier: MIT */
/*
 * RCU stress of the RAM list: reader threads walk and look up blocks
 * continuously, checking every block they see (canaries, geometry, memory
 * contents, bitmaps, and that each lookup path agrees with the others),
 * while an updater adds, resizes and removes blocks and sets up and tears
 * down migration bitmaps for a bounded number of rounds.
 *
 * A freed block has its canaries overwritten before the free, so a reader
 * handed freed memory fails a canary check in a plain build, and the ASan
 * build reports the use-after-free itself.
 *
 * Under valgrind (one command, see docs/ramblock.md):
 *   meson test -C build --wrap='valgrind --error-exitcode=1' \
 *       test-ramblock-stress
 */
#include <string.h>
#include <sys/mman.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/migram.h>
#include <migram/ramblock.h>

#include "ramblock-internal.h"
#include "migram-test-util.h"

#define N_READERS 4
#define SLOTS 12
#define STAMP(addr) ((addr) ^ UINT64_C(0x5eed5eed5eed5eed))

typedef struct {
	MigramRamList *list;
	int *stop;
	guint64 checks;
	guint64 errors;
	GString *first_error;
} Reader;

static void fail(Reader *r, const char *what, const MigramRamBlock *b)
{
	if (r->errors++ == 0)
		g_string_printf(r->first_error, "%s (block %p)", what,
				(const void *)b);
}

static void check_block(Reader *r, MigramRamBlock *b)
{
	uint64_t used, max, off, page, stamp;
	MigramRamBlock *again;
	const uint64_t *host;
	unsigned long *bmap;

	if (b->magic != RAM_BLOCK_MAGIC)
		return fail(r, "magic", b);
	off = migram_ram_block_offset(b);
	if (b->canary != (RAM_BLOCK_MAGIC ^ off))
		return fail(r, "canary", b);
	if (strncmp(migram_ram_block_idstr(b), "stress-", 7) != 0)
		return fail(r, "idstr", b);
	used = migram_ram_block_used_length(b);
	max = migram_ram_block_max_length(b);
	page = migram_ram_block_page_size(b);
	if (used == 0 || used > max || used % page)
		return fail(r, "lengths", b);

	/*
	 * Caller-owned memory was stamped before the block was added;
	 * memory migram mapped is zero until the updater stamps it.
	 */
	host = migram_ram_block_host(b);
	stamp = __atomic_load_n(&host[0], __ATOMIC_RELAXED);
	if (stamp != STAMP((uint64_t)(uintptr_t)host) &&
	    ((migram_ram_block_flags(b) & MIGRAM_RAM_CALLER_OWNED) ||
	     stamp != 0))
		return fail(r, "memory stamp", b);

	/* Every lookup path finds this very block, or (raced) nothing. */
	again = migram_ram_list_find(r->list, migram_ram_block_idstr(b));
	if (again && again != b)
		return fail(r, "find by name", b);
	again = migram_ram_list_find_by_addr(r->list, off, NULL);
	if (again && again != b)
		return fail(r, "find by address", b);
	again = migram_ram_list_find_by_host(r->list, host, NULL);
	if (again && again != b)
		return fail(r, "find by host", b);

	/* Bitmaps, when set up, are readable to max_length. */
	bmap = migram_ram_block_bmap(b);
	if (bmap && migram_bitmap_count(bmap, 0, max / 4096) > max / 4096)
		return fail(r, "bmap", b);
	r->checks++;
}

static gpointer reader_main(gpointer p)
{
	Reader *r = p;

	urcu_memb_register_thread();
	while (!g_atomic_int_get(r->stop)) {
		urcu_memb_read_lock();
		for (MigramRamBlock *b = migram_ram_list_next(r->list, NULL); b;
		     b = migram_ram_list_next(r->list, b))
			check_block(r, b);
		urcu_memb_read_unlock();
	}
	urcu_memb_unregister_thread();
	return NULL;
}

typedef struct {
	char *id;
	void *mem; /* caller-owned memory, or NULL */
	size_t mem_len;
} Slot;

/*
 * Even slots: caller-owned memory, stamped before the block is added, so
 * readers can demand the stamp from the first instant the block is visible.
 * Odd slots: a memfd migram maps, stamped just after the add.
 */
static void add_block(MigramRamList *list, GRand *rand, unsigned int round,
		      unsigned int slot, Slot *out)
{
	g_autoptr(GError) error = NULL;
	char id[48];
	uint64_t used = (uint64_t)g_rand_int_range(rand, 1, 32) * 64 * 1024;
	uint64_t max = used * (uint64_t)g_rand_int_range(rand, 1, 4);
	MigramRamBlockConfig c = { .idstr = id,
				   .backend = MIGRAM_RAM_BACKEND_MEMFD,
				   .used_length = used,
				   .max_length = max };
	MigramRamBlock *b;

	g_snprintf(id, sizeof(id), "stress-%u-%u", round, slot);
	out->mem = NULL;
	if (slot % 2 == 0) {
		out->mem_len = max;
		out->mem = mmap(NULL, max, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		g_assert_true(out->mem != MAP_FAILED);
		c.backend = MIGRAM_RAM_BACKEND_CALLER;
		c.host = out->mem;
	}
	/* The stamp derives from the host address, known before the add. */
	if (out->mem)
		((uint64_t *)out->mem)[0] =
			STAMP((uint64_t)(uintptr_t)out->mem);
	b = migram_ram_list_add(list, &c, &error);
	g_assert_no_error(error);
	/* Readers may look already: the late stamp is an atomic store. */
	if (!out->mem)
		__atomic_store_n(
			(uint64_t *)migram_ram_block_host(b),
			STAMP((uint64_t)(uintptr_t)migram_ram_block_host(b)),
			__ATOMIC_RELAXED);
	out->id = g_strdup(migram_ram_block_idstr(b));
}

static void remove_block(MigramRamList *list, Slot *slot)
{
	g_autoptr(GError) error = NULL;

	g_assert_true(migram_ram_list_remove(list, slot->id, &error));
	g_assert_no_error(error);
	if (slot->mem) {
		/* Caller memory outlives readers by one grace period. */
		urcu_memb_synchronize_rcu();
		munmap(slot->mem, slot->mem_len);
	}
	g_clear_pointer(&slot->id, g_free);
}

static void test_stress(void)
{
	MigramRamList *list = migram_ram_list_new();
	Reader r[N_READERS];
	GThread *t[N_READERS];
	Slot slots[SLOTS] = { { 0 } };
	GRand *rand = g_rand_new_with_seed(g_test_rand_int());
	unsigned int rounds = migram_test_scale(300);
	guint64 checks = 0, errors = 0;
	int stop = 0;

	urcu_memb_register_thread();
	/* Fill the slots before readers start, so all blocks are stamped. */
	for (unsigned int s = 0; s < SLOTS; s++)
		add_block(list, rand, 0, s, &slots[s]);
	for (int i = 0; i < N_READERS; i++) {
		r[i] = (Reader){ .list = list,
				 .stop = &stop,
				 .first_error = g_string_new(NULL) };
		t[i] = g_thread_new("ram-reader", reader_main, &r[i]);
	}

	for (unsigned int round = 1; round <= rounds; round++) {
		unsigned int s = (unsigned int)g_rand_int_range(rand, 0, SLOTS);
		g_autoptr(GError) error = NULL;
		MigramRamBlock *b;

		switch (g_rand_int_range(rand, 0, 4)) {
		case 0: /* replace a block (remove, add a new one) */
			remove_block(list, &slots[s]);
			add_block(list, rand, round, s, &slots[s]);
			break;
		case 1: { /* resize within max_length */
			uint64_t max, page, len;
			bool resizeable;

			urcu_memb_read_lock();
			b = migram_ram_list_find(list, slots[s].id);
			max = migram_ram_block_max_length(b);
			page = migram_ram_block_page_size(b);
			resizeable = migram_ram_block_flags(b) &
				     MIGRAM_RAM_RESIZEABLE;
			urcu_memb_read_unlock();
			len = page * (uint64_t)g_rand_int_range(
					     rand, 1, (gint32)(max / page) + 1);
			g_assert_cmpint(migram_ram_list_resize(
						list, slots[s].id, len, &error),
					==, resizeable);
			break;
		}
		case 2: /* migration bitmaps on, then off */
			if (migram_ram_list_bitmaps_init(list, 6, NULL))
				g_usleep(100);
			migram_ram_list_bitmaps_free(list);
			break;
		default:
			g_usleep(50);
			break;
		}
	}

	g_atomic_int_set(&stop, 1);
	for (int i = 0; i < N_READERS; i++) {
		g_thread_join(t[i]);
		if (r[i].errors)
			g_test_message("reader %d: first error: %s", i,
				       r[i].first_error->str);
		checks += r[i].checks;
		errors += r[i].errors;
		g_string_free(r[i].first_error, TRUE);
	}
	g_test_message("%u rounds, %" G_GUINT64_FORMAT " block checks", rounds,
		       checks);
	g_assert_cmpuint(errors, ==, 0);
	g_assert_cmpuint(checks, >, 1000);
	for (unsigned int s = 0; s < SLOTS; s++)
		remove_block(list, &slots[s]);
	g_rand_free(rand);
	urcu_memb_unregister_thread();
	migram_ram_list_free(list);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/ramblock/ramblock-stress/readers-vs-updater",
			test_stress);
	return g_test_run();
}
