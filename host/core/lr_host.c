/* The host object; see lr_host.h for the API and lr_host_int.h for the
 * rooms it is built from and the lifetime model.
 *
 * This file holds what belongs to no single room: creating the host and its
 * guests, stopping them, the references of the host and its guests, and
 * the drain that frees dead records outside every callback. */
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

int lr_guest_refuse_fds(lr_guest_t *g, lr_endpoint_t *ep, const char *what) {
  if (ep->kind != LR_EP_PIPE || uv_pipe_pending_count(&ep->u.pipe) <= 0) return 0;
  lr_guest_warn(g, &g->fds_log, "the agent sent file descriptors on %s: closed them and dropped "
                "the stream (lorelayd takes no descriptor from a guest)", what);
  return 1;
}

const char *lr_guest_err_text(const lr_guest_t *g, const char *err) {
  size_t n = strlen(g->transport);
  if (err && !strcmp(g->name, g->transport) && !strncmp(err, g->transport, n) && err[n] == ':' &&
      err[n + 1] == ' ')
    return err + n + 2;
  return err;
}

/* ---- references and the drain (the model: lr_host_int.h) ---------------- */

static void guest_free(lr_guest_t *g);

static void drain_closed(uv_handle_t *i) { free(i); }

/* Frees what died since the last iteration (a freed connection may be its
 * guest's last reference, a freed guest the host's), then, once the host
 * is stopping and holds nothing, runs done: last, since done may free h. */
static void host_drain(uv_idle_t *i) {
  lr_host_t *h = i->data;
  while (h->dead_conns || h->dead_guests) {
    while (h->dead_conns) {
      lr_conn_t *c = h->dead_conns;
      h->dead_conns = c->dead_next;
      lr_conn_free(c);
    }
    while (h->dead_guests) {
      lr_guest_t *g = h->dead_guests;
      h->dead_guests = g->dead_next;
      guest_free(g);
      lr_host_unref(h);
    }
  }
  uv_idle_stop(i);
  if (h->stopping && !h->refs && h->done) {
    void (*done)(void *) = h->done;
    h->done = NULL;
    h->drain = NULL;
    uv_close((uv_handle_t *)i, drain_closed);
    done(h->done_data);
  }
}

void lr_host_defer(lr_host_t *h) {
  if (h->drain) uv_idle_start(h->drain, host_drain);
}

void lr_host_ref(lr_host_t *h) { h->refs++; }

void lr_host_unref(lr_host_t *h) {
  if (--h->refs == 0 && h->stopping) lr_host_defer(h);
}

void lr_guest_ref(lr_guest_t *g) { g->refs++; }

void lr_guest_unref(lr_guest_t *g) {
  if (--g->refs) return;
  lr_host_t *h = g->host;
  g->dead_next = h->dead_guests;
  h->dead_guests = g;
  lr_host_defer(h);
}

const char *lr_guest_host_str(const lr_guest_t *g, int family) {
  return g->bind_str[family == 6];
}

void lr_guest_sockaddr(const lr_guest_t *g, int family, uint16_t port,
                       struct sockaddr_storage *ss) {
  *ss = g->bind_sa[family == 6];
  if (family == 6)
    ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
  else
    ((struct sockaddr_in *)ss)->sin_port = htons(port);
}

/* The stand-in addresses of g from its configuration: listenAddress for
 * its own family, else hostAddress for IPv4, else loopback. Returns 1 when
 * they changed. */
static int guest_set_addresses(lr_guest_t *g) {
  struct sockaddr_storage sa[2];
  char str[2][sizeof g->bind_str[0]];
  for (int i = 0; i < 2; i++) {
    lr_loopback_sockaddr(i ? 6 : 4, 0, &sa[i]);
    snprintf(str[i], sizeof str[i], "%s", lr_loopback_str(i ? 6 : 4));
  }
  const char *v4 = NULL, *v6 = NULL, *la = g->cfg.listen_address;
  if (la[0]) *(strchr(la, ':') ? &v6 : &v4) = la;
  if (!v4 && g->cfg.host_address[0]) v4 = g->cfg.host_address;
  /* The config checked both, so these parse. */
  if (v4 && uv_ip4_addr(v4, 0, (struct sockaddr_in *)&sa[0]) == 0)
    snprintf(str[0], sizeof str[0], "%s", v4);
  if (v6 && uv_ip6_addr(v6, 0, (struct sockaddr_in6 *)&sa[1]) == 0)
    snprintf(str[1], sizeof str[1], "[%s]", v6);
  int changed = memcmp(sa, g->bind_sa, sizeof sa) != 0;
  memcpy(g->bind_sa, sa, sizeof sa);
  memcpy(g->bind_str, str, sizeof str);
  return changed;
}

/* LAN exposure is opt-in and said once, when it starts. A loopback
 * listenAddress (127.0.0.3, say) exposes nothing, so it is not warned of.
 * Reads the address guest_set_addresses parsed into bind_sa. */
static void guest_warn_exposure(lr_guest_t *g) {
  const char *la = g->cfg.listen_address;
  if (!la[0]) return;
  if (lr_sockaddr_is_loopback(&g->bind_sa[strchr(la, ':') != NULL]))
    LR_INFO("%s: listenAddress = %s: stand-ins listen there (a loopback address, "
            "reachable from this machine only)", g->name, la);
  else
    LR_WARN("%s: listenAddress = %s: this guest's ports are reachable from other machines "
            "on that address, not only from this one",
            g->name, g->cfg.listen_address);
}

lr_host_t *lr_host_new(uv_loop_t *loop, const lr_host_pal_t *pal, const lr_config_t *cfg) {
  lr_host_t *h = calloc(1, sizeof *h);
  if (!h) return NULL;
  h->loop = loop;
  h->pal = pal;
  h->cfg = cfg;
  h->refs = 1; /* the host's own, until lr_host_shutdown */
  h->drain = malloc(sizeof *h->drain);
  if (!h->drain) {
    free(h);
    return NULL;
  }
  uv_idle_init(loop, h->drain);
  h->drain->data = h;
  h->config_info.reload_ok = 1; /* no reload has failed */
  size_t n = sizeof h->hostname;
  if (uv_os_gethostname(h->hostname, &n) != 0) snprintf(h->hostname, sizeof h->hostname, "host");
  return h;
}

static int guest_check(lr_host_t *h, const lr_guest_opts_t *o, lr_taddr_t *a, char *err,
                       size_t errlen) {
  if (!o->transport) {
    snprintf(err, errlen, "no guest address given");
    return -1;
  }
  memset(a, 0, sizeof *a);
  if (!o->resolve && lr_taddr_parse(o->transport, a, err, errlen) != 0) return -1;
  if (a->kind == LR_TADDR_TCP && o->token_len == 0) {
    snprintf(err, errlen,
             "%s: the tcp transport needs a shared token (--token-file) on both sides",
             o->transport);
    return -1;
  }
  return lr_auth_key_check(&h->pal->base, o->token_len, err, errlen);
}

int lr_host_check_guest(lr_host_t *h, const lr_guest_opts_t *o, char *err, size_t errlen) {
  lr_taddr_t a;
  return guest_check(h, o, &a, err, errlen);
}

void lr_host_set_config_info(lr_host_t *h, const char *path, int64_t loaded_at,
                             int64_t reload_time, int reload_ok, const char *reload_error) {
  snprintf(h->config_info.path, sizeof h->config_info.path, "%s", path ? path : "");
  h->config_info.loaded_at = loaded_at;
  h->config_info.reload_time = reload_time;
  h->config_info.reload_ok = reload_ok;
  snprintf(h->config_info.reload_error, sizeof h->config_info.reload_error, "%s",
           reload_error ? reload_error : "");
}

int lr_host_add_guest(lr_host_t *h, const lr_guest_opts_t *o, char *err, size_t errlen) {
  lr_taddr_t a;
  if (guest_check(h, o, &a, err, errlen) != 0) return -1;
  lr_guest_t *g = calloc(1, sizeof *g);
  if (!g) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  g->host = h;
  g->cfg = o->cfg ? *o->cfg : *h->cfg;
  g->addr = a;
  g->resolve = o->resolve;
  g->resolve_data = o->resolve_data;
  if (o->resolve)
    snprintf(g->transport, sizeof g->transport, "%s", o->transport);
  else
    lr_taddr_format(&a, g->transport, sizeof g->transport);
  snprintf(g->name, sizeof g->name, "%s", o->name && *o->name ? o->name : g->transport);
  if (lr_host_find_guest(h, g->name)) {
    snprintf(err, errlen, "two guests named '%s': each needs its own name", g->name);
    free(g);
    return -1;
  }
  guest_set_addresses(g);
  if (o->token_len) memcpy(g->token, o->token, o->token_len);
  g->token_len = o->token_len;
  g->ipc_reads = o->one_hop_netns && a.kind == LR_TADDR_UNIX;
  if (o->one_hop_netns && h->pal->nsock_open) {
    g->nsock = h->pal->nsock_open(h->loop, o->one_hop_netns, lr_conn_ns_ready, g, err, errlen);
    if (!g->nsock) {
      free(g);
      return -1;
    }
  }
  g->one_hop = g->nsock && g->cfg.one_hop;
  lr_ports_ops_t ops = lr_standin_ops(g);
  lr_ports_init(&g->ports, &g->cfg, &ops);
  if (lr_conn_reverse_init(g, err, errlen) != 0) {
    lr_conn_reverse_free(g);
    if (g->nsock) h->pal->nsock_close(g->nsock);
    free(g);
    return -1;
  }
  uv_timer_init(h->loop, &g->retry_timer);
  uv_timer_init(h->loop, &g->conflict_timer);
  uv_timer_init(h->loop, &g->tick_timer);
  g->retry_timer.data = g->conflict_timer.data = g->tick_timer.data = g;
  g->refs = 4; /* its place in h->guests and its three timers */
  lr_host_ref(h);
  uv_timer_start(&g->tick_timer, lr_session_tick, TICK_MS, TICK_MS);
  g->added_at = uv_now(h->loop);
  /* Appended: status lists guests in the order they were given. */
  lr_guest_t **pp = &h->guests;
  while (*pp) pp = &(*pp)->next;
  *pp = g;
  LR_INFO("%s: guest agent at %s", g->name, g->transport);
  if (g->cfg.host_address[0]) LR_INFO("%s: stand-ins on %s", g->name, g->cfg.host_address);
  guest_warn_exposure(g);
  lr_session_start(g);
  return 0;
}

lr_guest_t *lr_host_last_guest(lr_host_t *h) {
  lr_guest_t *g = h->guests;
  while (g && g->next) g = g->next;
  return g;
}

lr_guest_t *lr_host_find_guest(lr_host_t *h, const char *name) {
  for (lr_guest_t *g = h->guests; g; g = g->next)
    if (!strcmp(g->name, name)) return g;
  return NULL;
}

void lr_host_configure_guest(lr_guest_t *g, const lr_config_t *cfg) {
  char err[300];
  int reverse_changed = memcmp(&cfg->reverse_ports, &g->cfg.reverse_ports,
                               sizeof cfg->reverse_ports) != 0 ||
                        cfg->ipv6 != g->cfg.ipv6;
  int exposure_changed = strcmp(cfg->listen_address, g->cfg.listen_address) != 0;
  g->cfg = *cfg;
  /* oneHop: connections opened from now on follow it; open ones keep
   * the path they have. */
  if (g->one_hop != (g->nsock && cfg->one_hop)) {
    g->one_hop = g->nsock && cfg->one_hop;
    LR_INFO("%s: oneHop = %s for new connections", g->name, g->one_hop ? "true" : "false");
  }
  int moved = guest_set_addresses(g);
  if (exposure_changed) guest_warn_exposure(g);
  if (moved) {
    LR_INFO("%s: stand-ins move to %s and %s", g->name, g->bind_str[0], g->bind_str[1]);
    lr_ports_rebind(&g->ports);
  }
  int n = lr_ports_reconfigure(&g->ports);
  if (n) LR_INFO("%s: %d listener%s forwarded differently now", g->name, n, n == 1 ? "" : "s");
  if (reverse_changed) {
    lr_conn_reverse_free(g);
    if (lr_conn_reverse_init(g, err, sizeof err) != 0) {
      LR_ERROR("%s: %s", g->name, err);
      lr_conn_reverse_free(g);
    }
    if (g->state == LR_G_CONNECTED) lr_conn_reverse_send_set(g);
  }
  lr_standin_arm_retry(g);
}

static void guest_timer_closed(uv_handle_t *t) { lr_guest_unref(t->data); }

/* Takes g off the host's list (dropping that reference) and starts
 * closing everything it holds; each holder's callback drops its own
 * reference, and the last one sends g to the drain. Once per guest. */
static void guest_stop(lr_guest_t *g) {
  lr_host_t *h = g->host;
  if (g->stopping) return;
  g->stopping = 1;
  for (lr_guest_t **pp = &h->guests; *pp; pp = &(*pp)->next)
    if (*pp == g) {
      *pp = g->next;
      break;
    }
  g->next = NULL;
  uv_timer_t *timers[3] = {&g->retry_timer, &g->conflict_timer, &g->tick_timer};
  for (int i = 0; i < 3; i++) uv_close((uv_handle_t *)timers[i], guest_timer_closed);
  lr_session_stop(g);
  lr_ports_clear(&g->ports);
  lr_conn_close_all(g);
  if (g->nsock) { /* no record waits for it any more: close_all closed them */
    h->pal->nsock_close(g->nsock);
    g->nsock = NULL;
  }
  lr_guest_unref(g);
}

static void guest_free(lr_guest_t *g) {
  lr_conn_reverse_free(g);
  free(g);
}

void lr_host_remove_guest(lr_guest_t *g) {
  if (g->stopping) return;
  LR_INFO("%s: guest removed", g->name);
  guest_stop(g);
}

void lr_host_shutdown(lr_host_t *h, void (*done)(void *), void *data) {
  if (h->stopping) return;
  h->stopping = 1;
  h->done = done;
  h->done_data = data;
  lr_status_stop(h);
  while (h->guests) guest_stop(h->guests);
  lr_host_unref(h); /* the host's own */
}

void lr_host_set_test_hook(lr_host_t *h, lr_host_test_hook_fn fn, void *data) {
  h->test_hook = fn;
  h->test_hook_data = data;
}

/* After done nothing is left; without a shutdown (a daemon that failed to
 * start) the guests never ran a loop iteration. */
void lr_host_free(lr_host_t *h) {
  while (h->guests) {
    lr_guest_t *g = h->guests;
    h->guests = g->next;
    guest_free(g);
  }
  free(h->drain);
  free(h);
}
