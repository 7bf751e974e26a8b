/* SPDX-License-Identifier: MIT */
/*
 * The sender core's hook table (sender-internal.h): features that ride on
 * the core attach a MigramSenderHooks once, and the core calls every
 * attached table at its steps in attach order.  None of these allocate or
 * lock; the hooks themselves may.
 */
#include "sender-internal.h"

void migram_sender_attach(MigramMigration *m, const MigramSenderHooks *ops)
{
	MigramSenderHook *h;

	g_assert(m->n_hooks < MIGRAM_SENDER_HOOKS_MAX);
	h = &m->hooks[m->n_hooks++];
	h->ops = ops;
	h->state = ops->create ? ops->create(m) : NULL;
}

void *migram_sender_hook_state(const MigramMigration *m,
			       const MigramSenderHooks *ops)
{
	for (unsigned int i = 0; i < m->n_hooks; i++)
		if (m->hooks[i].ops == ops)
			return m->hooks[i].state;
	return NULL;
}

void migram_sender_hooks_destroy(MigramMigration *m)
{
	for (unsigned int i = 0; i < m->n_hooks; i++)
		if (m->hooks[i].ops->destroy)
			m->hooks[i].ops->destroy(m->hooks[i].state);
	m->n_hooks = 0;
}

/* Call a bool step of every table; stop at the first failure. */
#define EACH_STEP(m, step, error)                                              \
	do {                                                                   \
		for (unsigned int i_ = 0; i_ < (m)->n_hooks; i_++) {           \
			const MigramSenderHook *h_ = &(m)->hooks[i_];          \
			if (h_->ops->step &&                                   \
			    !h_->ops->step((m), h_->state, (error)))           \
				return false;                                  \
		}                                                              \
		return true;                                                   \
	} while (0)

bool migram_sender_hooks_setup(MigramMigration *m, GError **error)
{
	EACH_STEP(m, setup, error);
}

bool migram_sender_hooks_listen(MigramMigration *m, GError **error)
{
	EACH_STEP(m, listen, error);
}

bool migram_sender_hooks_check(MigramMigration *m, GError **error)
{
	EACH_STEP(m, check, error);
}

bool migram_sender_hooks_precopy_done(MigramMigration *m, GError **error)
{
	EACH_STEP(m, precopy_done, error);
}

const MigramSenderHook *migram_sender_hooks_switch(MigramMigration *m)
{
	for (unsigned int i = 0; i < m->n_hooks; i++) {
		const MigramSenderHook *h = &m->hooks[i];

		if (h->ops->should_switch && h->ops->run &&
		    h->ops->should_switch(m, h->state))
			return h;
	}
	return NULL;
}

void migram_sender_hooks_cleanup(MigramMigration *m)
{
	for (unsigned int i = 0; i < m->n_hooks; i++)
		if (m->hooks[i].ops->cleanup)
			m->hooks[i].ops->cleanup(m, m->hooks[i].state);
}

void migram_sender_hooks_wake(MigramMigration *m)
{
	for (unsigned int i = 0; i < m->n_hooks; i++)
		if (m->hooks[i].ops->wake)
			m->hooks[i].ops->wake(m, m->hooks[i].state);
}
