/* SPDX-License-Identifier: MIT */
/*
 * migram's RCU primitives: liburcu's urcu-memb calls, made visible to
 * ThreadSanitizer.  Internal; never installed.
 *
 * Why wrappers.  liburcu is not built with -fsanitize=thread, and urcu-memb
 * orders readers against a grace period with membarrier(2) and compiler
 * barriers, which TSan cannot observe; rcu_xchg_pointer() is inline asm on
 * x86.  So in a TSan build every RCU-protected object looks racy in two
 * places, although the code is correct:
 *
 *   publication   the updater initialises an object and publishes it with
 *                 rcu_xchg_pointer(); a reader that reaches it through
 *                 rcu_dereference() has no happens-before edge with the
 *                 initialisation;
 *   reclamation   the updater frees the old object after
 *                 urcu_memb_synchronize_rcu(); a reader's accesses before
 *                 its urcu_memb_read_unlock() have no edge with the free.
 *
 * The wrappers add exactly those two edges as TSan annotations, and only
 * when compiled with -fsanitize=thread; otherwise they are the liburcu calls
 * and nothing else:
 *
 *   migram_rcu_xchg_pointer(pp, v)   release on pp, then the exchange
 *   migram_rcu_dereference(p)        the load, then acquire on &p
 *   migram_rcu_read_unlock()         release on the grace-period key, then
 *                                    the unlock
 *   migram_rcu_synchronize()         the grace period, then acquire on the
 *                                    grace-period key
 *
 * The grace-period key is one library-wide address: every read-side
 * critical section that ended before synchronize returned happens-before the
 * code after it, which is what a grace period guarantees (it also orders a
 * few sections that merely happened to end in time, which can hide a race
 * but never invents one).  docs/tsan.md has the longer story.
 *
 * Code that reads or updates RCU-protected pointers uses these, not the
 * urcu_memb_* and rcu_* names directly.
 */
#ifndef MIGRAM_RCU_H
#define MIGRAM_RCU_H

#define URCU_INLINE_SMALL_FUNCTIONS
#include <urcu/urcu-memb.h>
#include <urcu/pointer.h>

#if defined(__SANITIZE_THREAD__)
#define MIGRAM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MIGRAM_TSAN 1
#endif
#endif
#ifndef MIGRAM_TSAN
#define MIGRAM_TSAN 0
#endif

#if MIGRAM_TSAN
#include <sanitizer/tsan_interface.h>

/* The grace period's synchronisation address (common/migram.c). */
extern const char migram_rcu_grace_key;

#define migram_tsan_acquire(addr) __tsan_acquire((void *)(addr))
#define migram_tsan_release(addr) __tsan_release((void *)(addr))

/* Dynamic annotations exported by libtsan. */
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
/*
 * Reads that race with writers on purpose: the sender reading guest pages
 * while the guest runs (precopy; the dirty log makes it correct).
 */
#define migram_tsan_ignore_reads_begin()                                       \
	AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define migram_tsan_ignore_reads_end()                                         \
	AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
#else
#define migram_tsan_acquire(addr) ((void)0)
#define migram_tsan_release(addr) ((void)0)
#define migram_tsan_ignore_reads_begin() ((void)0)
#define migram_tsan_ignore_reads_end() ((void)0)
#endif

/* Enter a read-side critical section (the thread must be registered). */
static inline void migram_rcu_read_lock(void)
{
	urcu_memb_read_lock();
}

/* Leave a read-side critical section. */
static inline void migram_rcu_read_unlock(void)
{
	migram_tsan_release(&migram_rcu_grace_key);
	urcu_memb_read_unlock();
}

/* Wait for a grace period.  Never inside a read-side critical section. */
static inline void migram_rcu_synchronize(void)
{
	urcu_memb_synchronize_rcu();
	migram_tsan_acquire(&migram_rcu_grace_key);
}

/* Load an RCU-protected pointer; use only inside a read-side section. */
#define migram_rcu_dereference(p)                                              \
	__extension__({                                                        \
		__typeof__(p) migram_rcu_p_ = rcu_dereference(p);              \
		migram_tsan_acquire(&(p));                                     \
		migram_rcu_p_;                                                 \
	})

/* Publish v at *pp and return the old pointer (a full barrier). */
#define migram_rcu_xchg_pointer(pp, v)                                         \
	__extension__({                                                        \
		migram_tsan_release(pp);                                       \
		rcu_xchg_pointer(pp, v);                                       \
	})

#endif /* MIGRAM_RCU_H */
