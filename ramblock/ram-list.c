/* SPDX-License-Identifier: MIT */
/*
 * The RCU-protected RAM list.
 *
 * Readers (vCPU, device and migration threads) walk list->blocks with
 * acquire loads of `next` inside an RCU read-side section and take no
 * lock.  Updaters take list->mutex, change the list with the RCU list
 * primitives, bump list->version with a release store, and call the
 * listeners before dropping the mutex.  A removed block is freed by
 * call_rcu() once every reader that could hold it has left its section.
 *
 * The most-recently-used cache.  find_by_addr() remembers the block it
 * found in list->mru so that repeated lookups in one block cost one load.
 * Any reader may write the cache, so a reader that found block B in the
 * list just before B was removed may store B into the cache *after* the
 * remover cleared it.  Clearing once and freeing after a grace period is
 * therefore not enough: a reader arriving after that grace period could
 * still pick B out of the cache.  remove() instead (1) unlinks B and clears
 * the cache, (2) waits for a grace period, after which no reader can find B
 * in the list and so none will store it again (a cache hit never stores),
 * (3) clears the cache once more, and (4) frees B after a further grace
 * period, which covers readers that picked B from the cache before (3).
 *
 * Offsets.  Each block owns [offset, offset + max_length) of one global
 * RAM address space.  A new block takes the smallest gap between existing
 * blocks that fits (best fit, lowest address on a tie), else the space
 * after the last block; starts are aligned to 64 target pages (so a block's
 * bits start on a word of any global bitmap) and to the block's page size.
 */
#include <pthread.h>
#include <string.h>

#include "migram-common.h"
#include "migram/migram.h"
#include "ramblock-internal.h"

static inline MigramRamBlock *load_mru(MigramRamList *list)
{
	return __atomic_load_n(&list->mru, __ATOMIC_ACQUIRE);
}

static inline void store_mru(MigramRamList *list, MigramRamBlock *b)
{
	__atomic_store_n(&list->mru, b, __ATOMIC_RELEASE);
}

static void clear_mru_if(MigramRamList *list, MigramRamBlock *b)
{
	MigramRamBlock *expected = b;

	__atomic_compare_exchange_n(&list->mru, &expected, NULL, false,
				    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static void bump_version(MigramRamList *list)
{
	__atomic_add_fetch(&list->version, 1, __ATOMIC_RELEASE);
}

/* A held list refuses changes.  Mutex held; false with *error set. */
static bool check_not_held(MigramRamList *list, const char *what,
			   const char *idstr, GError **error)
{
	if (!list->held)
		return true;
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_BUSY,
		    "cannot %s ram block '%s': the list is held (%s)", what,
		    idstr, list->held_why);
	return false;
}

static void notify(MigramRamList *list, MigramRamEvent event, MigramRamBlock *b)
{
	for (guint i = 0; i < list->listeners->len; i++) {
		RamListener *l = &g_array_index(list->listeners, RamListener,
						i);

		l->fn(list, event, b, l->opaque);
	}
}

static void reclaim_block(struct rcu_head *head)
{
	MigramRamBlock *b = caa_container_of(head, MigramRamBlock, rcu);

	/*
	 * TSan's view of what liburcu guarantees: the updater's handover
	 * (release on b in remove) and the grace period that call_rcu ran.
	 */
	migram_tsan_acquire(b);
	migram_tsan_acquire(&migram_rcu_grace_key);
	migram_ram_block_free_bitmaps(b);
	migram_ram_backend_unmap(b);
	b->magic = RAM_BLOCK_DEAD;
	b->canary = RAM_BLOCK_DEAD;
	g_free(b);
}

/* Lookup by name with the mutex held (the updater's own view). */
static MigramRamBlock *find_locked(MigramRamList *list, const char *idstr)
{
	MigramRamBlock *b;

	cds_list_for_each_entry(b, &list->blocks, node) {
		if (strcmp(b->idstr, idstr) == 0)
			return b;
	}
	return NULL;
}

MIGRAM_EXPORT MigramRamList *migram_ram_list_new(void)
{
	MigramRamList *list = g_new0(MigramRamList, 1);

	pthread_mutex_init(&list->mutex, NULL);
	CDS_INIT_LIST_HEAD(&list->blocks);
	list->listeners = g_array_new(FALSE, FALSE, sizeof(RamListener));
	list->next_listener_id = 1;
	return list;
}

MIGRAM_EXPORT void migram_ram_list_free(MigramRamList *list)
{
	g_autoptr(GPtrArray) dead = NULL;
	MigramRamBlock *b, *tmp;

	if (!list)
		return;
	MIGRAM_ASSERT_NOT_RCU_READER();
	dead = g_ptr_array_new();
	pthread_mutex_lock(&list->mutex);
	cds_list_for_each_entry_safe(b, tmp, &list->blocks, node) {
		/* b->node.next stays valid for readers: keep b elsewhere. */
		ram_list_unlink(&b->node);
		g_ptr_array_add(dead, b);
	}
	store_mru(list, NULL);
	pthread_mutex_unlock(&list->mutex);

	/* No reader may still hold a block; then free them here. */
	migram_rcu_synchronize();
	for (guint i = 0; i < dead->len; i++) {
		b = g_ptr_array_index(dead, i);
		reclaim_block(&b->rcu);
	}
	/* And wait for blocks removed earlier whose call_rcu is pending. */
	urcu_memb_barrier();

	g_array_unref(list->listeners);
	pthread_mutex_destroy(&list->mutex);
	g_free(list);
}

static bool check_idstr(const char *idstr, GError **error)
{
	size_t n = idstr ? strlen(idstr) : 0;

	if (n == 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "ram block idstr is empty");
		return false;
	}
	if (n > MIGRAM_RAM_IDSTR_MAX) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "ram block idstr '%.32s...' is %zu bytes, longer "
			    "than %d",
			    idstr, n, MIGRAM_RAM_IDSTR_MAX);
		return false;
	}
	return true;
}

static int cmp_offset(gconstpointer a, gconstpointer b)
{
	const MigramRamBlock *x = *(MigramRamBlock *const *)a;
	const MigramRamBlock *y = *(MigramRamBlock *const *)b;

	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* Best-fit offset for size bytes aligned to align.  Mutex held. */
static uint64_t find_offset_locked(MigramRamList *list, uint64_t size,
				   uint64_t align)
{
	g_autoptr(GPtrArray) by_off = g_ptr_array_new();
	uint64_t best = UINT64_MAX, best_gap = UINT64_MAX, end = 0;
	MigramRamBlock *b;

	cds_list_for_each_entry(b, &list->blocks, node)
		g_ptr_array_add(by_off, b);
	g_ptr_array_sort(by_off, cmp_offset);

	for (guint i = 0; i < by_off->len; i++) {
		MigramRamBlock *next = g_ptr_array_index(by_off, i);
		uint64_t start = align_up(end, align);

		if (start + size <= next->offset &&
		    next->offset - end < best_gap) {
			best = start;
			best_gap = next->offset - end;
		}
		end = MAX(end, next->offset + next->max_length);
	}
	return best != UINT64_MAX ? best : align_up(end, align);
}

/* Keep the list sorted by max_length, largest first.  Mutex held. */
static void insert_sorted_locked(MigramRamList *list, MigramRamBlock *nb)
{
	MigramRamBlock *b;

	cds_list_for_each_entry(b, &list->blocks, node) {
		if (b->max_length < nb->max_length) {
			ram_list_insert_before(&nb->node, &b->node);
			return;
		}
	}
	ram_list_insert_before(&nb->node, &list->blocks);
}

MIGRAM_EXPORT MigramRamBlock *
migram_ram_list_add(MigramRamList *list, const MigramRamBlockConfig *config,
		    GError **error)
{
	MigramRamBlock *b;
	uint64_t align;

	g_return_val_if_fail(list != NULL && config != NULL, NULL);
	if (!check_idstr(config->idstr, error))
		return NULL;

	b = g_new0(MigramRamBlock, 1);
	b->magic = RAM_BLOCK_MAGIC;
	b->list = list;
	g_strlcpy(b->idstr, config->idstr, sizeof(b->idstr));
	b->backend = config->backend;
	b->flags = config->flags & (MIGRAM_RAM_SHARED | MIGRAM_RAM_RESIZEABLE |
				    MIGRAM_RAM_NO_THP);
	if (!config->not_migratable)
		b->flags |= MIGRAM_RAM_MIGRATABLE;
	b->resized = config->resized;
	b->resized_opaque = config->resized_opaque;

	pthread_mutex_lock(&list->mutex);
	if (!check_not_held(list, "add", b->idstr, error)) {
		pthread_mutex_unlock(&list->mutex);
		g_free(b);
		return NULL;
	}
	if (find_locked(list, b->idstr)) {
		pthread_mutex_unlock(&list->mutex);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_EXISTS,
			    "ram block '%s' already exists", b->idstr);
		g_free(b);
		return NULL;
	}
	if (!migram_ram_backend_map(b, config, error)) {
		pthread_mutex_unlock(&list->mutex);
		g_free(b);
		return NULL;
	}
	if (b->max_length > config->used_length)
		b->flags |= MIGRAM_RAM_RESIZEABLE;
	b->used_length = config->used_length;
	b->postcopy_length = config->used_length;
	align = MAX((uint64_t)RAM_OFFSET_ALIGN_PAGES * MIGRAM_TARGET_PAGE_SIZE,
		    b->page_size);
	b->offset = find_offset_locked(list, b->max_length, align);
	b->canary = RAM_BLOCK_MAGIC ^ b->offset;

	insert_sorted_locked(list, b);
	__atomic_add_fetch(&list->count, 1, __ATOMIC_RELAXED);
	bump_version(list);
	notify(list, MIGRAM_RAM_EVENT_ADDED, b);
	pthread_mutex_unlock(&list->mutex);
	return b;
}

MIGRAM_EXPORT bool migram_ram_list_remove(MigramRamList *list,
					  const char *idstr, GError **error)
{
	MigramRamBlock *b;

	g_return_val_if_fail(list != NULL && idstr != NULL, false);
	MIGRAM_ASSERT_NOT_RCU_READER();
	pthread_mutex_lock(&list->mutex);
	if (!check_not_held(list, "remove", idstr, error)) {
		pthread_mutex_unlock(&list->mutex);
		return false;
	}
	b = find_locked(list, idstr);
	if (!b) {
		pthread_mutex_unlock(&list->mutex);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND,
			    "no ram block '%s' to remove", idstr);
		return false;
	}
	ram_list_unlink(&b->node);
	clear_mru_if(list, b);
	__atomic_sub_fetch(&list->count, 1, __ATOMIC_RELAXED);
	bump_version(list);
	notify(list, MIGRAM_RAM_EVENT_REMOVED, b);
	pthread_mutex_unlock(&list->mutex);

	/* See the file comment: why the cache is cleared twice. */
	migram_rcu_synchronize();
	clear_mru_if(list, b);
	migram_tsan_release(b); /* pairs with reclaim_block's acquire */
	urcu_memb_call_rcu(&b->rcu, reclaim_block);
	return true;
}

MIGRAM_EXPORT bool migram_ram_list_resize(MigramRamList *list,
					  const char *idstr,
					  uint64_t new_length, GError **error)
{
	MigramRamBlock *b;
	uint64_t old;

	g_return_val_if_fail(list != NULL && idstr != NULL, false);
	pthread_mutex_lock(&list->mutex);
	b = find_locked(list, idstr);
	if (!b) {
		pthread_mutex_unlock(&list->mutex);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND,
			    "no ram block '%s' to resize", idstr);
		return false;
	}
	if (new_length != b->used_length &&
	    !check_not_held(list, "resize", idstr, error)) {
		pthread_mutex_unlock(&list->mutex);
		return false;
	}
	if (!(b->flags & MIGRAM_RAM_RESIZEABLE) || new_length == 0 ||
	    new_length > b->max_length || new_length % b->page_size) {
		pthread_mutex_unlock(&list->mutex);
		g_set_error(
			error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			"ram block '%s': cannot resize to %#" G_GINT64_MODIFIER
			"x (%s; max_length %#" G_GINT64_MODIFIER
			"x, page size %#" G_GINT64_MODIFIER "x)",
			idstr, new_length,
			(b->flags & MIGRAM_RAM_RESIZEABLE)
				? "out of bounds or unaligned"
				: "not resizeable",
			b->max_length, b->page_size);
		return false;
	}
	old = b->used_length;
	if (old != new_length) {
		__atomic_store_n(&b->used_length, new_length, __ATOMIC_RELEASE);
		bump_version(list);
		if (b->resized)
			b->resized(b, old, new_length, b->resized_opaque);
		notify(list, MIGRAM_RAM_EVENT_RESIZED, b);
	}
	pthread_mutex_unlock(&list->mutex);
	return true;
}

MIGRAM_EXPORT uint64_t migram_ram_list_hold(MigramRamList *list,
					    const char *why)
{
	uint64_t v;

	g_return_val_if_fail(list != NULL, 0);
	pthread_mutex_lock(&list->mutex);
	if (list->held++ == 0)
		g_strlcpy(list->held_why, why ? why : "no reason given",
			  sizeof(list->held_why));
	v = __atomic_load_n(&list->version, __ATOMIC_ACQUIRE);
	pthread_mutex_unlock(&list->mutex);
	return v;
}

MIGRAM_EXPORT void migram_ram_list_release(MigramRamList *list)
{
	g_return_if_fail(list != NULL);
	pthread_mutex_lock(&list->mutex);
	if (list->held == 0) {
		pthread_mutex_unlock(&list->mutex);
		g_return_if_reached();
	}
	list->held--;
	pthread_mutex_unlock(&list->mutex);
}

MIGRAM_EXPORT guint migram_ram_list_add_listener(MigramRamList *list,
						 MigramRamListenerFunc fn,
						 void *opaque)
{
	RamListener l = { .fn = fn, .opaque = opaque };

	g_return_val_if_fail(list != NULL && fn != NULL, 0);
	pthread_mutex_lock(&list->mutex);
	l.id = list->next_listener_id++;
	g_array_append_val(list->listeners, l);
	pthread_mutex_unlock(&list->mutex);
	return l.id;
}

MIGRAM_EXPORT void migram_ram_list_remove_listener(MigramRamList *list,
						   guint id)
{
	g_return_if_fail(list != NULL);
	pthread_mutex_lock(&list->mutex);
	for (guint i = 0; i < list->listeners->len; i++) {
		if (g_array_index(list->listeners, RamListener, i).id == id) {
			g_array_remove_index(list->listeners, i);
			break;
		}
	}
	pthread_mutex_unlock(&list->mutex);
}

MIGRAM_EXPORT uint64_t migram_ram_list_version(const MigramRamList *list)
{
	return __atomic_load_n(&list->version, __ATOMIC_ACQUIRE);
}

MIGRAM_EXPORT guint migram_ram_list_count(const MigramRamList *list)
{
	return __atomic_load_n(&list->count, __ATOMIC_RELAXED);
}

MIGRAM_EXPORT MigramRamBlock *migram_ram_list_find(MigramRamList *list,
						   const char *idstr)
{
	MigramRamBlock *b;

	MIGRAM_ASSERT_RCU_READER();
	for (struct cds_list_head *n = ram_list_next_rcu(&list->blocks);
	     n != &list->blocks; n = ram_list_next_rcu(n)) {
		b = caa_container_of(n, MigramRamBlock, node);
		if (strcmp(b->idstr, idstr) == 0)
			goto out;
	}
	b = NULL;
out:
	ram_reader_done();
	return b;
}

static inline bool holds_addr(const MigramRamBlock *b, uint64_t addr)
{
	return addr >= b->offset &&
	       addr - b->offset < migram_ram_block_used_length(b);
}

MIGRAM_EXPORT MigramRamBlock *migram_ram_list_find_by_addr(MigramRamList *list,
							   uint64_t ram_addr,
							   uint64_t *offset)
{
	MigramRamBlock *b;

	MIGRAM_ASSERT_RCU_READER();
	b = load_mru(list);
	if (b && holds_addr(b, ram_addr))
		goto found;
	for (struct cds_list_head *n = ram_list_next_rcu(&list->blocks);
	     n != &list->blocks; n = ram_list_next_rcu(n)) {
		b = caa_container_of(n, MigramRamBlock, node);
		if (holds_addr(b, ram_addr)) {
			store_mru(list, b);
			goto found;
		}
	}
	ram_reader_done();
	return NULL;
found:
	if (offset)
		*offset = ram_addr - b->offset;
	ram_reader_done();
	return b;
}

MIGRAM_EXPORT MigramRamBlock *migram_ram_list_find_by_host(MigramRamList *list,
							   const void *host,
							   uint64_t *offset)
{
	uintptr_t p = (uintptr_t)host;

	MIGRAM_ASSERT_RCU_READER();
	for (struct cds_list_head *n = ram_list_next_rcu(&list->blocks);
	     n != &list->blocks; n = ram_list_next_rcu(n)) {
		MigramRamBlock *b = caa_container_of(n, MigramRamBlock, node);
		uintptr_t h = (uintptr_t)b->host;

		if (p >= h && p - h < migram_ram_block_used_length(b)) {
			if (offset)
				*offset = p - h;
			ram_reader_done();
			return b;
		}
	}
	ram_reader_done();
	return NULL;
}

MIGRAM_EXPORT MigramRamBlock *migram_ram_list_next(MigramRamList *list,
						   MigramRamBlock *prev)
{
	struct cds_list_head *n;

	MIGRAM_ASSERT_RCU_READER();
	/* A removed block keeps its next pointer, so iteration goes on. */
	n = ram_list_next_rcu(prev ? &prev->node : &list->blocks);
	ram_reader_done();
	if (n == &list->blocks)
		return NULL;
	return caa_container_of(n, MigramRamBlock, node);
}

MIGRAM_EXPORT MigramRamBlock *
migram_ram_list_next_migratable(MigramRamList *list, MigramRamBlock *prev)
{
	MigramRamBlock *b = migram_ram_list_next(list, prev);

	while (b && !(b->flags & MIGRAM_RAM_MIGRATABLE))
		b = migram_ram_list_next(list, b);
	return b;
}
