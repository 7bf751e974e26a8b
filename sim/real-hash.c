/* SPDX-License-Identifier: MIT */
/*
 * Real mode: page hashes (the source's, sent to the destination after
 * the run, and the comparison), byte comparison, CPU time.
 */
#include "real-internal.h"

/* ---- pages and hashes ------------------------------------------------ */

/* CPU time (user + system) of this process so far, in µs. */
uint64_t real_cpu_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) *
		       G_USEC_PER_SEC +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static guint64 page_hash(const guint8 *p)
{
	const guint64 *w = (const guint64 *)p;
	guint64 h = 0x84222325cbf29ce4ULL;

	for (unsigned int i = 0; i < PAGE / 8; i++)
		h = (h ^ w[i]) * 0x100000001b3ULL;
	return h;
}

MigramRamList *real_source_list(const SimOptions *opt, GError **error)
{
	MigramRamList *list = migram_ram_list_new();

	for (guint i = 0; i < opt->blocks->len; i++) {
		SimBlockSpec *s = &g_array_index(opt->blocks, SimBlockSpec, i);
		MigramRamBlockConfig c = {
			.idstr = s->name,
			.used_length = s->bytes,
			.backend = s->hugetlb  ? MIGRAM_RAM_BACKEND_HUGETLB
				   : s->shared ? MIGRAM_RAM_BACKEND_MEMFD
					       : MIGRAM_RAM_BACKEND_ANON,
		};
		MigramRamBlock *b;

		sim_torture_block_config(opt, i, s, &c);
		b = migram_ram_list_add(list, &c, error);

		if (!b) {
			migram_ram_list_free(list);
			return NULL;
		}
		sim_fill_block(b, opt->fill);
	}
	return list;
}

/* Send "name, n, hashes" for every migratable block of list. */
bool real_send_hashes(MigramRamList *list, MigramChannel *ch, GError **error)
{
	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next_migratable(list, NULL); b;
	     b = migram_ram_list_next_migratable(list, b)) {
		uint64_t n = migram_ram_block_used_length(b) / PAGE;
		const guint8 *h = migram_ram_block_host(b);

		migram_channel_put_counted_string(ch,
						  migram_ram_block_idstr(b));
		migram_channel_put_be64(ch, n);
		for (uint64_t p = 0; p < n; p++)
			migram_channel_put_be64(ch, page_hash(h + p * PAGE));
	}
	urcu_memb_read_unlock();
	migram_channel_put_counted_string(ch, "");
	return migram_channel_flush(ch, error);
}

/* Compare the peer's hashes with list's pages; a detail string. */
bool real_compare_hashes(MigramRamList *list, MigramChannel *ch, char **detail,
			 SimReport *rep, const unsigned long *skip,
			 GError **error)
{
	char name[MIGRAM_RAM_IDSTR_MAX + 1];
	uint64_t blocks = 0, pages = 0, skipped = 0;

	for (;;) {
		MigramRamBlock *b;
		uint64_t n, want;

		if (!migram_channel_get_counted_string(ch, name, error))
			return false;
		if (!name[0])
			break;
		if (strcmp(name, "#cpu") == 0) {
			uint64_t us;

			if (!migram_channel_get_be64(ch, &us, error))
				return false;
			if (rep)
				rep->cpu_dst_ms = us / 1000;
			continue;
		}
		if (strcmp(name, "#postcopy") == 0) {
			uint64_t v[6 + 32];

			for (int i = 0; i < 6 + 32; i++)
				if (!migram_channel_get_be64(ch, &v[i], error))
					return false;
			if (rep) {
				rep->dest_figures = true;
				rep->faults = v[0];
				rep->fault_p50_us = v[1];
				rep->fault_p99_us = v[2];
				rep->fault_max_us = v[3];
				rep->blocked_ms = v[4] / 1000;
				rep->dest_touches = v[5];
				memcpy(rep->fault_hist, v + 6,
				       sizeof(rep->fault_hist));
			}
			continue;
		}
		if (!migram_channel_get_be64(ch, &n, error))
			return false;
		urcu_memb_read_lock();
		b = migram_ram_list_find(list, name);
		if (!b || migram_ram_block_used_length(b) / PAGE != n) {
			urcu_memb_read_unlock();
			*detail = g_strdup_printf(
				"block '%s' missing or of another size", name);
			return true;
		}
		for (uint64_t p = 0; p < n; p++) {
			const guint8 *h = migram_ram_block_host(b);

			if (!migram_channel_get_be64(ch, &want, error)) {
				urcu_memb_read_unlock();
				return false;
			}
			if (skip && migram_bitmap_test_bit(skip, (size_t)p)) {
				skipped++;
				continue;
			}
			if (!*detail && want != page_hash(h + p * PAGE))
				*detail = g_strdup_printf(
					"block '%s' page %" G_GUINT64_FORMAT
					" (offset %#" G_GINT64_MODIFIER
					"x) differs",
					name, p, p * PAGE);
		}
		urcu_memb_read_unlock();
		blocks++;
		pages += n;
	}
	if (!*detail) {
		*detail = g_strdup_printf(
			"%" G_GUINT64_FORMAT " blocks, %" G_GUINT64_FORMAT
			" pages equal (per-page hashes)%s",
			blocks, pages - skipped,
			skipped ? "; the guest's working set is vouched for "
				  "by its invariant"
				: "");
		return true;
	}
	return true;
}

void real_compare_bytes(const SimOptions *opt, MigramRamList *src,
			GPtrArray *maps, SimReport *rep)
{
	for (guint i = 0; i < opt->blocks->len && rep->verified; i++) {
		SimBlockSpec *s = &g_array_index(opt->blocks, SimBlockSpec, i);
		MigramRamBlock *b;
		const guint8 *a, *d = maps->pdata[i];

		urcu_memb_read_lock();
		b = migram_ram_list_find(src, s->name);
		a = migram_ram_block_host(b);
		for (uint64_t off = 0; off < s->bytes; off += PAGE) {
			if (memcmp(a + off, d + off, PAGE) != 0) {
				g_free(rep->verify_detail);
				rep->verify_detail = g_strdup_printf(
					"block '%s' page %" G_GUINT64_FORMAT
					" differs byte for byte",
					s->name, off / PAGE);
				rep->verified = false;
				break;
			}
		}
		urcu_memb_read_unlock();
	}
	if (rep->verified) {
		char *d = g_strconcat(rep->verify_detail, "; byte for byte too",
				      NULL);

		g_free(rep->verify_detail);
		rep->verify_detail = d;
	}
}
