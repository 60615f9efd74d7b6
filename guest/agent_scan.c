/* The agent's listener scans: a sock_diag dump, the agent's own sockets
 * left out, and the diff against the set last reported.
 *
 * Kept apart from the control stream that reports the result so that the
 * scan state (the netlink socket, four arrays swapped rather than copied
 * every 100 ms) has one owner. The arrays only ever grow, so a steady
 * system scans without allocating. Own-inode exclusion lives here because
 * it is a property of the scan: the transport listener and every published
 * (reverse) listener are the agent's, and reporting them would make the
 * host forward the agent to itself. */
#include "agent_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_listeners.h"
#include "lr_log.h"

static int ensure_cap(agent_scan_t *s, size_t n) {
  if (n <= s->cap) return 0;
  size_t ncap = s->cap ? s->cap : 64;
  while (ncap < n) ncap *= 2;
  lr_listener_t **arr[4] = {&s->cur, &s->next, &s->adds, &s->dels};
  for (int i = 0; i < 4; i++) {
    lr_listener_t *p = realloc(*arr[i], ncap * sizeof *p);
    if (!p) return -1;
    *arr[i] = p;
  }
  s->cap = ncap;
  return 0;
}

int agent_scan_init(lr_agent_t *a, char *err, size_t errlen) {
  agent_scan_t *s = &a->scan;
  lr_sockdiag_list_init(&s->raw);
  if (lr_sockdiag_open(&s->sd, err, errlen) != 0) return -1;
  if (ensure_cap(s, 64) != 0) {
    snprintf(err, errlen, "out of memory");
    agent_scan_free(a);
    return -1;
  }
  return 0;
}

void agent_scan_free(lr_agent_t *a) {
  agent_scan_t *s = &a->scan;
  lr_sockdiag_close(&s->sd);
  lr_sockdiag_list_free(&s->raw);
  free(s->cur);
  free(s->next);
  free(s->adds);
  free(s->dels);
  free(s->own);
  s->cur = s->next = s->adds = s->dels = NULL;
  s->own = NULL;
  s->ncur = s->cap = s->nown = 0;
}

/* Dumps the kernel's listeners into scan.next; returns the count or -1.
 * The error is logged once per distinct message, not every 100 ms. */
static long scan_now(agent_scan_t *s) {
  char err[256] = "";
  s->raw.n = 0;
  if (lr_sockdiag_dump(&s->sd, &s->raw, err, sizeof err) != 0 ||
      ensure_cap(s, s->raw.n > s->ncur ? s->raw.n : s->ncur) != 0) {
    if (!err[0]) snprintf(err, sizeof err, "out of memory");
    if (strcmp(err, s->last_err) != 0) {
      LR_ERROR("listener scan failed: %s", err);
      snprintf(s->last_err, sizeof s->last_err, "%s", err);
    }
    return -1;
  }
  if (s->last_err[0]) {
    LR_INFO("listener scan works again");
    s->last_err[0] = 0;
  }
  return (long)lr_listeners_from_dump(s->raw.v, s->raw.n, s->own, s->nown, s->next);
}

static void swap_in_next(agent_scan_t *s, size_t n) {
  lr_listener_t *t = s->cur;
  s->cur = s->next;
  s->next = t;
  s->ncur = n;
}

void agent_scan_full(lr_agent_t *a) {
  long n = scan_now(&a->scan);
  if (n >= 0) swap_in_next(&a->scan, (size_t)n);
}

int agent_scan_diff(lr_agent_t *a, size_t *nadds, size_t *ndels) {
  agent_scan_t *s = &a->scan;
  long n = scan_now(s);
  if (n < 0) return -1;
  lr_listeners_diff(s->cur, s->ncur, s->next, (size_t)n, s->adds, nadds, s->dels, ndels);
  swap_in_next(s, (size_t)n);
  return 0;
}

void agent_scan_own_rebuild(lr_agent_t *a) {
  agent_scan_t *s = &a->scan;
  size_t n = (a->have_own_inode ? 1 : 0);
  for (size_t i = 0; i < a->rev.n; i++) n += a->rev.v[i]->bound;
  uint32_t *own = realloc(s->own, (n ? n : 1) * sizeof *own);
  if (!own) return; /* keeps the old list: at worst a published port is reported */
  s->own = own;
  s->nown = 0;
  if (a->have_own_inode) own[s->nown++] = a->own_inode;
  for (size_t i = 0; i < a->rev.n; i++)
    if (a->rev.v[i]->bound) own[s->nown++] = a->rev.v[i]->inode;
}
