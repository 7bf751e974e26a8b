/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the source (postcopy-src.c), driven by the sender.  Never
 * installed.
 */
#ifndef MIGRAM_POSTCOPY_SRC_H
#define MIGRAM_POSTCOPY_SRC_H

#include <stdbool.h>

#include <glib.h>

#include "sender-internal.h"

SrcPostcopy *migram_postcopy_src_new(void);
void migram_postcopy_src_free(SrcPostcopy *pc);
bool migram_postcopy_src_setup(MigramMigration *m, GError **error);
bool migram_postcopy_src_listen(MigramMigration *m, GError **error);
bool migram_postcopy_src_should_switch(MigramMigration *m);
bool migram_postcopy_src_run(MigramMigration *m, GError **error);
bool migram_postcopy_src_check(MigramMigration *m, GError **error);
bool migram_postcopy_src_precopy_done(MigramMigration *m, GError **error);
void migram_postcopy_src_cleanup(MigramMigration *m);
void migram_postcopy_src_wake(MigramMigration *m);

#endif /* MIGRAM_POSTCOPY_SRC_H */
