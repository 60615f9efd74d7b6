/* Stand-in listeners: the host sockets that stand in for a guest's
 * listeners on the host loopback.
 *
 * The port table (lr_ports) decides which bindings exist; this room does
 * their I/O through the table's hooks: open an exclusive listener through
 * the platform layer, close it, tell the guest when a port's state changed,
 * retry conflicts on a timer, and hand accepted clients to lr_conn. Kept
 * apart from the connections so that what a guest can make the host bind
 * is decided and logged in one place. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_host_int.h"
#include "lr_log.h"

#define STANDIN_BACKLOG 511

static void standin_free(uv_handle_t *h) {
  lr_standin_t *s = (lr_standin_t *)h;
  lr_guest_t *g = s->g;
  free(s);
  lr_guest_unref(g);
}

/* Budget: host listening sockets per guest, counted after de-duplication
 * (two guest listeners sharing a stand-in cost one). */
static int standin_budget_left(lr_guest_t *g, const lr_binding_t *b, uint16_t port) {
  unsigned max = g->cfg.max_standins;
  if (g->nstandins < max) return 1;
  lr_guest_warn(g, &g->standins_log,
                "maxStandins (%u host sockets) reached: host %s:%u denied; retried when a "
                "stand-in closes",
                max, lr_guest_host_str(g, b->key.family), port ? port : b->key.port);
  return 0;
}

static void on_client(uv_stream_t *server, int status) {
  lr_standin_t *s = server->data;
  LR_HOOK(s->g->host, "accept");
  if (status < 0) {
    char what[340];
    snprintf(what, sizeof what, "%s: stand-in port %u", s->g->name, s->b ? s->b->actual_port : 0);
    lr_log_accept_error(&s->g->accept_log, s->g->host->loop, what, status);
    return;
  }
  if (!s->b) return;
  lr_conn_accept(s->g, s);
}

/* See lr_host_int.h. */
void lr_standin_find_holder(lr_guest_t *g, lr_binding_t *b, uint16_t port) {
  lr_host_t *h = g->host;
  /* The wanted port, the first time it is found taken (a retry or a remap
   * attempt on another port does not look again). */
  if (port != b->key.port || b->state == LR_BINDING_CONFLICT || b->state == LR_BINDING_REMAPPED)
    return;
  lr_holder_t *hd = calloc(1, sizeof *hd);
  if (!hd) return;
  for (lr_guest_t *o = h->guests; o && !hd->guest[0]; o = o->next) {
    if (o == g || strcmp(lr_guest_host_str(o, b->key.family), lr_guest_host_str(g, b->key.family)))
      continue;
    for (lr_binding_t *ob = o->ports.bindings; ob; ob = ob->next)
      if (ob->io && ob->key.family == b->key.family && ob->key.udp == b->key.udp &&
          ob->actual_port == port) {
        snprintf(hd->guest, sizeof hd->guest, "%s", o->name);
        break;
      }
  }
  if (!hd->guest[0]) {
    struct sockaddr_storage ss;
    lr_guest_sockaddr(g, b->key.family, port, &ss);
    if (!h->pal->port_holder ||
        h->pal->port_holder((struct sockaddr *)&ss, b->key.udp, &hd->pid, hd->command,
                            sizeof hd->command) != 0) {
      free(hd);
      hd = NULL;
    }
  }
  free(b->holder);
  b->holder = hd;
}

static const char *standin_name(void *data) { return ((lr_guest_t *)data)->name; }

static const char *standin_holder_str(const lr_binding_t *b, char *buf, size_t len, void *data) {
  (void)data;
  if (!b->holder) return NULL;
  if (b->holder->guest[0])
    snprintf(buf, len, "guest %s", b->holder->guest);
  else
    snprintf(buf, len, "pid %lu (%s)", (unsigned long)b->holder->pid, b->holder->command);
  return buf;
}

static int standin_bind(lr_binding_t *b, uint16_t port, void *data) {
  lr_guest_t *g = data;
  lr_host_t *h = g->host;
  struct sockaddr_storage ss;
  if (!standin_budget_left(g, b, port)) return LR_BIND_BUDGET;
  if (b->key.udp) return lr_udp_bind(g, b, port);
  lr_standin_t *s = calloc(1, sizeof *s);
  if (!s) return LR_BIND_INUSE;
  s->g = g;
  lr_guest_ref(g); /* until standin_free */
  lr_guest_sockaddr(g, b->key.family, port, &ss);
  int rc = h->pal->listen_loopback(h->loop, &s->tcp, (struct sockaddr *)&ss, STANDIN_BACKLOG,
                                   on_client, standin_free);
  if (rc == 0) {
    struct sockaddr_storage got;
    int len = sizeof got;
    if (uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&got, &len) == 0)
      port = ntohs(((struct sockaddr_in *)&got)->sin_port);
    s->b = b;
    s->tcp.data = s;
    b->io = s;
    b->actual_port = port;
    g->nstandins++;
    if (!b->probing)
      LR_STANDIN_LOG(g, "%s: forwarding host %s:%u", g->name,
                     lr_guest_host_str(g, b->key.family), port);
    return LR_BIND_OK;
  }
  /* The platform is closing s: standin_free drops the guest's reference
   * (a close callback never runs before we return). */
  if (rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT) return LR_BIND_UNAVAILABLE;
  if (rc != UV_EADDRINUSE && rc != UV_EACCES)
    LR_WARN("%s: stand-in %s:%u: %s", g->name, lr_guest_host_str(g, b->key.family), port,
            uv_strerror(rc));
  if (rc == UV_EADDRINUSE) lr_standin_find_holder(g, b, port);
  return LR_BIND_INUSE;
}

static void standin_unbind(lr_binding_t *b, void *data) {
  lr_guest_t *g = data;
  lr_standin_t *s = b->io;
  if (!s) return;
  if (b->key.udp) {
    lr_udp_unbind(g, b);
    return;
  }
  s->b = NULL;
  b->io = NULL;
  g->nstandins--;
  if (!b->probing)
    LR_STANDIN_LOG(g, "%s: stopped forwarding host %s:%u", g->name,
                   lr_guest_host_str(g, b->key.family), b->actual_port);
  uv_close((uv_handle_t *)&s->tcp, standin_free);
}

static void standin_state_changed(const lr_port_entry_t *e, lr_port_state_t st, void *data) {
  lr_guest_t *g = data;
  /* Before the added hook this is the entry's first state: port-added
   * shows it. */
  if (e->announced && lr_status_listed(e)) {
    lr_event_t ev = {LR_EV_PORT_STATE, g, e, e->previous, NULL, 0};
    lr_host_event(g->host, &ev);
  }
  lr_port_state_msg_t m;
  uint8_t buf[64];
  memset(&m, 0, sizeof m);
  m.listener = e->listener;
  m.state = (uint8_t)st;
  if (e->nb) m.host_port = e->b[0]->actual_port ? e->b[0]->actual_port : e->b[0]->key.port;
  if (g->state == LR_G_CONNECTED)
    lr_session_send(g, buf, lr_encode_port_state(buf, sizeof buf, &m));
}

/* The watch stream's port-added and port-removed come from the table's
 * own hooks, so every way an entry comes or goes (a report, a resync's
 * sweep, a guest gone stale) is seen. */
static void standin_added(lr_port_entry_t *e, void *data) {
  lr_guest_t *g = data;
  e->announced = 1;
  if (!lr_status_listed(e)) return;
  lr_event_t ev = {LR_EV_PORT_ADDED, g, e, LR_PORT_FORWARDING, NULL, 0};
  lr_host_event(g->host, &ev);
}

static void standin_removed(const lr_port_entry_t *e, void *data) {
  lr_guest_t *g = data;
  if (!e->announced || !lr_status_listed(e)) return;
  lr_event_t ev = {LR_EV_PORT_REMOVED, g, e, LR_PORT_FORWARDING, NULL, 0};
  lr_host_event(g->host, &ev);
}

static const char *standin_host_str(int family, void *data) {
  return lr_guest_host_str(data, family);
}

static uint64_t standin_now_ms(void *data) {
  lr_guest_t *g = data;
  return uv_now(g->host->loop);
}

lr_ports_ops_t lr_standin_ops(lr_guest_t *g) {
  lr_ports_ops_t ops = {.bind = standin_bind,
                        .unbind = standin_unbind,
                        .state_changed = standin_state_changed,
                        .data = g,
                        .added = standin_added,
                        .removed = standin_removed,
                        .host_str = standin_host_str,
                        .now_ms = standin_now_ms,
                        .name = standin_name,
                        .holder_str = standin_holder_str};
  return ops;
}

static void conflict_tick(uv_timer_t *t) {
  lr_guest_t *g = t->data;
  if (lr_ports_retry_conflicts(&g->ports) == 0) uv_timer_stop(&g->conflict_timer);
}

void lr_standin_arm_retry(lr_guest_t *g) {
  unsigned ms = g->cfg.conflict_retry_ms;
  if (g->stopping) return;
  if (lr_ports_conflicts(&g->ports) > 0 &&
      (!uv_is_active((uv_handle_t *)&g->conflict_timer) ||
       uv_timer_get_repeat(&g->conflict_timer) != ms))
    uv_timer_start(&g->conflict_timer, conflict_tick, ms, ms);
}
