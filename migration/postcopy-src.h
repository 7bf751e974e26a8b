/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the source (postcopy-src*.c): a sender hook user.  The
 * core attaches migram_postcopy_src_hooks when cfg.postcopy is set; its
 * entries follow the contract of MigramSenderHooks (sender-internal.h):
 * setup writes OPEN_RETURN_PATH, PING and ADVISE and opens the preempt
 * writer; listen starts the return-path thread; check reports a hostile
 * return-path message; should_switch is start_postcopy() or the planned
 * switch; run switches over and serves page requests to the end
 * (recovering lost connections); precopy_done waits for the
 * destination's SHUT; cleanup stops the return-path thread; wake wakes
 * waits on cancel.  Never installed.
 */
#ifndef MIGRAM_POSTCOPY_SRC_H
#define MIGRAM_POSTCOPY_SRC_H

#include "sender-internal.h"

extern const MigramSenderHooks migram_postcopy_src_hooks;

#endif /* MIGRAM_POSTCOPY_SRC_H */
