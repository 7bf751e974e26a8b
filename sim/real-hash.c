/* SPDX-License-Identifier: MIT */
/*
 * Real mode: verification through the library (migram/verify.h: the
 * destination sends its per-page hashes after the run, the source
 * compares), byte comparison, CPU time.
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

/*
 * The destination's answer: its figures ("#cpu", "#postcopy"), then
 * "#hashes" and the library's verification stream (migram/verify.h).
 */
bool real_send_hashes(MigramRamList *list, MigramChannel *ch, GError **error)
{
	migram_channel_put_counted_string(ch, "#hashes");
	return migram_verify_send(list, ch, error);
}

/* skip: the pages the KVM guest wrote on the destination (any block). */
static bool skip_written(const char *block, uint64_t offset, void *opaque)
{
	(void)block;
	return migram_bitmap_test_bit(opaque, (size_t)(offset / PAGE));
}

/* Read the destination's figures into rep (if any), up to "#hashes". */
static bool read_figures(MigramChannel *ch, SimReport *rep, GError **error)
{
	char name[MIGRAM_RAM_IDSTR_MAX + 1];

	for (;;) {
		if (!migram_channel_get_counted_string(ch, name, error))
			return false;
		if (strcmp(name, "#hashes") == 0)
			return true;
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
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "destination's answer: unknown record '%s'", name);
		return false;
	}
}

/* Compare the peer's hashes with list's pages; a detail string. */
bool real_compare_hashes(MigramRamList *list, MigramChannel *ch, char **detail,
			 SimReport *rep, const unsigned long *skip,
			 GError **error)
{
	MigramVerifyResult res;

	if (!read_figures(ch, rep, error) ||
	    !migram_verify_compare(list, ch, skip ? skip_written : NULL,
				   (void *)skip, &res, error))
		return false;
	*detail = migram_verify_result_describe(&res);
	if (res.diff == MIGRAM_VERIFY_EQUAL && res.skipped) {
		char *d = g_strconcat(*detail,
				      " (the guest's working set is vouched "
				      "for by its invariant)",
				      NULL);

		g_free(*detail);
		*detail = d;
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
