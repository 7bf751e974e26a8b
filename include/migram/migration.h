/* SPDX-License-Identifier: MIT */
/**
 * @file migration.h
 * The sender's header before issue 18: MigramMigration is declared in
 * sender.h (the header named after its role, as receiver.h is).  Kept so
 * embedders that include this name still build.
 */
#ifndef MIGRAM_MIGRATION_H
#define MIGRAM_MIGRATION_H

#include <migram/sender.h>

#endif /* MIGRAM_MIGRATION_H */
