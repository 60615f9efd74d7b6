/* Listener sets: sort, dedupe, self-exclusion and diff (see lr_listeners.h).
 * No I/O here, so the diff the host relies on for add/remove messages is
 * tested on its own. */
#include "lr_listeners.h"

#include <stdlib.h>

static int cmp_qsort(const void *a, const void *b) {
  return lr_listener_cmp((const lr_listener_t *)a, (const lr_listener_t *)b);
}

size_t lr_listeners_sort_unique(lr_listener_t *v, size_t n) {
  if (n < 2) return n;
  qsort(v, n, sizeof *v, cmp_qsort);
  size_t w = 1;
  for (size_t i = 1; i < n; i++)
    if (lr_listener_cmp(&v[i], &v[w - 1]) != 0) v[w++] = v[i];
  return w;
}

size_t lr_listeners_from_dump(const lr_sockdiag_entry_t *e, size_t n, const uint32_t *own,
                              size_t nown, lr_listener_t *out) {
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    int mine = 0;
    for (size_t j = 0; j < nown && !mine; j++) mine = e[i].inode == own[j];
    if (!mine) out[w++] = e[i].l;
  }
  return lr_listeners_sort_unique(out, w);
}

void lr_listeners_diff(const lr_listener_t *old, size_t nold, const lr_listener_t *cur,
                       size_t ncur, lr_listener_t *adds, size_t *nadds, lr_listener_t *dels,
                       size_t *ndels) {
  size_t i = 0, j = 0, na = 0, nd = 0;
  while (i < nold || j < ncur) {
    int c;
    if (i == nold)
      c = 1;
    else if (j == ncur)
      c = -1;
    else
      c = lr_listener_cmp(&old[i], &cur[j]);
    if (c == 0) {
      i++;
      j++;
    } else if (c < 0) {
      dels[nd++] = old[i++];
    } else {
      adds[na++] = cur[j++];
    }
  }
  *nadds = na;
  *ndels = nd;
}
