/* Listener sets: what the agent reports and how it tells the host about
 * changes.
 *
 * A set is a sorted (lr_listener_cmp), duplicate-free array. Keeping it
 * sorted makes the per-scan diff a single merge pass and makes duplicates
 * (an SO_REUSEPORT group is several sockets on one address) adjacent, so
 * both stay linear in the number of listeners. Pure functions, unit-tested. */
#ifndef LR_LISTENERS_H
#define LR_LISTENERS_H

#include <stddef.h>
#include <stdint.h>
#include "lr_proto.h"
#include "lr_sockdiag.h"

/* Builds a set from a raw dump: entries whose inode is in own[] (the
 * agent's own listening sockets) are left out, the rest sorted and
 * deduplicated into out, which needs room for n entries. Returns the count. */
size_t lr_listeners_from_dump(const lr_sockdiag_entry_t *e, size_t n, const uint32_t *own,
                              size_t nown, lr_listener_t *out);

/* Sorts v and removes duplicates in place; returns the new count. */
size_t lr_listeners_sort_unique(lr_listener_t *v, size_t n);

/* Diff of two sets: adds = in cur but not in old (room for ncur), dels = in
 * old but not in cur (room for nold). Both outputs come out sorted. */
void lr_listeners_diff(const lr_listener_t *old, size_t nold, const lr_listener_t *cur,
                       size_t ncur, lr_listener_t *adds, size_t *nadds, lr_listener_t *dels,
                       size_t *ndels);

#endif
