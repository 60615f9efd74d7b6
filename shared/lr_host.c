/* The host object; see lr_host.h for the API and lr_host_int.h for the
 * rooms it is built from and who owns what.
 *
 * This file holds what belongs to no single room: creating the host and its
 * guests, and stopping them. Stopping is counted: every handle closed on
 * the way out is registered with lr_host_closing, and the done callback
 * runs exactly when the last one is gone, with no guest still connecting
 * or resolving and no connection left. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_host_int.h"
#include "lr_log.h"

#define TICK_MS 1000

void lr_guest_warn(lr_guest_t *g, lr_ratelimit_t *gate, const char *fmt, ...) {
  char line[600];
  uint64_t before = gate->suppressed;
  if (!lr_ratelimit_pass(gate, uv_now(g->host->loop), LR_BUDGET_LOG_MS)) return;
  gate->suppressed = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (before)
    LR_WARN("%s: %s (%llu more like it in the last %d s)", g->name, line,
            (unsigned long long)before, LR_BUDGET_LOG_MS / 1000);
  else
    LR_WARN("%s: %s", g->name, line);
}

void lr_host_closing(lr_host_t *h) { h->closing_handles++; }

void lr_host_closed(lr_host_t *h) {
  h->closing_handles--;
  lr_host_maybe_done(h);
}

void lr_host_maybe_done(lr_host_t *h) {
  if (!h->stopping || h->closing_handles) return;
  for (lr_guest_t *g = h->guests; g; g = g->next)
    if (g->conns || g->ctl || g->state == LR_G_RESOLVING) return;
  if (h->done) {
    void (*done)(void *) = h->done;
    h->done = NULL;
    done(h->done_data);
  }
}

lr_host_t *lr_host_new(uv_loop_t *loop, const lr_pal_t *pal, const lr_config_t *cfg) {
  lr_host_t *h = calloc(1, sizeof *h);
  if (!h) return NULL;
  h->loop = loop;
  h->pal = pal;
  h->cfg = cfg;
  size_t n = sizeof h->hostname;
  if (uv_os_gethostname(h->hostname, &n) != 0) snprintf(h->hostname, sizeof h->hostname, "host");
  return h;
}

int lr_host_add_guest(lr_host_t *h, const lr_guest_opts_t *o, char *err, size_t errlen) {
  lr_taddr_t a;
  if (!o->transport) {
    snprintf(err, errlen, "no guest address given");
    return -1;
  }
  memset(&a, 0, sizeof a);
  if (!o->resolve && lr_taddr_parse(o->transport, &a, err, errlen) != 0) return -1;
  if (a.kind == LR_TADDR_TCP && o->token_len == 0) {
    snprintf(err, errlen,
             "%s: the tcp transport needs a shared token (--token-file) on both sides",
             o->transport);
    return -1;
  }
  if (lr_auth_key_check(h->pal, o->token_len, err, errlen) != 0) return -1;
  lr_guest_t *g = calloc(1, sizeof *g);
  if (!g) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  g->host = h;
  g->addr = a;
  g->resolve = o->resolve;
  g->resolve_data = o->resolve_data;
  if (o->resolve)
    snprintf(g->transport, sizeof g->transport, "%s", o->transport);
  else
    lr_taddr_format(&a, g->transport, sizeof g->transport);
  snprintf(g->name, sizeof g->name, "%s", o->name && *o->name ? o->name : g->transport);
  if (o->token_len) memcpy(g->token, o->token, o->token_len);
  g->token_len = o->token_len;
  g->pass_fd = o->pass_fd && a.kind == LR_TADDR_UNIX && h->pal->adopt_passed_socket;
  lr_ports_ops_t ops = lr_standin_ops(g);
  lr_ports_init(&g->ports, h->cfg, &ops);
  if (lr_conn_reverse_init(g, err, errlen) != 0) {
    lr_conn_reverse_free(g);
    free(g);
    return -1;
  }
  uv_timer_init(h->loop, &g->retry_timer);
  uv_timer_init(h->loop, &g->conflict_timer);
  uv_timer_init(h->loop, &g->tick_timer);
  g->retry_timer.data = g->conflict_timer.data = g->tick_timer.data = g;
  uv_timer_start(&g->tick_timer, lr_session_tick, TICK_MS, TICK_MS);
  g->next = h->guests;
  h->guests = g;
  LR_INFO("%s: guest agent at %s", g->name, g->transport);
  lr_session_start(g);
  return 0;
}

static void guest_timer_closed(uv_handle_t *t) {
  lr_guest_t *g = t->data;
  lr_host_closed(g->host);
}

void lr_host_shutdown(lr_host_t *h, void (*done)(void *), void *data) {
  h->stopping = 1;
  h->done = done;
  h->done_data = data;
  lr_status_stop(h);
  for (lr_guest_t *g = h->guests; g; g = g->next) {
    g->stopping = 1;
    uv_timer_t *timers[3] = {&g->retry_timer, &g->conflict_timer, &g->tick_timer};
    for (int i = 0; i < 3; i++) {
      lr_host_closing(h);
      uv_close((uv_handle_t *)timers[i], guest_timer_closed);
    }
    lr_session_stop(g);
    lr_ports_clear(&g->ports);
    lr_conn_close_all(g);
  }
  lr_host_maybe_done(h);
}

void lr_host_free(lr_host_t *h) {
  while (h->guests) {
    lr_guest_t *g = h->guests;
    h->guests = g->next;
    lr_conn_reverse_free(g);
    free(g);
  }
  free(h);
}
