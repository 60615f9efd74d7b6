/* Status: the documents lorelayctl shows, and the endpoint it asks.
 *
 * Both documents are rendered from the same port table, so the table and
 * the JSON never disagree. The endpoint is a libuv pipe (a Unix socket, or
 * a named pipe on Windows): one request line, one document, close. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_host_int.h"
#include "lr_log.h"

/* One lorelayctl connection; owned by the host's client list, closed by
 * status_client_close, freed in its close callback. */
struct lr_status_client_s {
  uv_pipe_t pipe;
  lr_host_t *host;
  char line[64];
  size_t len;
  lr_sbuf_t out;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  uv_timer_t timer; /* the client's whole budget: statusIdleTimeoutMs */
  int open_handles, closing;
  lr_status_client_t *next;
};

static void binding_addr(const lr_binding_t *b, char *out, size_t len) {
  uint16_t port = b->state == LR_BINDING_BOUND || b->state == LR_BINDING_REMAPPED
                      ? b->actual_port
                      : b->key.port;
  snprintf(out, len, "%s:%u", lr_loopback_str(b->key.family), port);
}

static const char *guest_state_name(const lr_guest_t *g) {
  return g->state == LR_G_CONNECTED ? "connected" : "connecting";
}

/* A binding that holds no socket and never will without a change on the
 * host is not a host address a client could use. */
static int binding_shown(const lr_binding_t *b) {
  return b->state != LR_BINDING_UNAVAILABLE && b->state != LR_BINDING_BUDGET;
}

static void deny_reason(lr_host_t *h, const lr_port_entry_t *e, char *out, size_t len) {
  if (e->rule == LR_RULE_DENIED)
    lr_rules_deny_reason(&e->listener, h->cfg, out, len);
  else
    snprintf(out, len, "maxStandins (%u host sockets) reached", h->cfg->max_standins);
}

/* Listeners on specific non-loopback addresses are never forwarded and
 * would only crowd the status of a real VM: they are tracked, not shown. */
static int status_listed(const lr_port_entry_t *e) { return e->rule != LR_RULE_NOT_LOOPBACK; }

typedef struct {
  uint64_t conns, active, to_guest, to_host, drops;
} entry_stats_t;

static const char *entry_proto(const lr_port_entry_t *e) {
  return e->listener.flags & LR_LISTENER_UDP ? "udp" : "tcp";
}

static entry_stats_t entry_stats(const lr_port_entry_t *e) {
  entry_stats_t s = {0, 0, 0, 0, 0};
  for (int i = 0; i < e->nb; i++) {
    s.conns += e->b[i]->connections;
    s.active += e->b[i]->active;
    s.to_guest += e->b[i]->bytes_to_guest;
    s.to_host += e->b[i]->bytes_to_host;
    s.drops += e->b[i]->drops;
  }
  return s;
}

void lr_host_status_json(lr_host_t *h, lr_sbuf_t *out) {
  char s[80];
  lr_sbuf_puts(out, "{\"guests\":[");
  for (lr_guest_t *g = h->guests; g; g = g->next) {
    lr_sbuf_puts(out, "{\"name\":");
    lr_sbuf_json_str(out, g->name);
    lr_sbuf_puts(out, ",\"transport\":");
    lr_sbuf_json_str(out, g->transport);
    lr_sbuf_printf(out, ",\"state\":\"%s\"", guest_state_name(g));
    lr_sbuf_printf(out, ",\"detection\":\"%s\"", lr_detection_name(g->detection));
    if (g->state != LR_G_CONNECTED && g->last_err[0]) {
      lr_sbuf_puts(out, ",\"error\":");
      lr_sbuf_json_str(out, g->last_err);
    }
    lr_sbuf_puts(out, ",\"ports\":[");
    int first_entry = 1;
    for (lr_port_entry_t *e = g->ports.entries; e; e = e->next) {
      if (!status_listed(e)) continue;
      entry_stats_t st = entry_stats(e);
      if (!first_entry) lr_sbuf_puts(out, ",");
      first_entry = 0;
      lr_sbuf_printf(out, "{\"proto\":\"%s\",\"guest\":\"%s\",\"host\":[", entry_proto(e),
                     lr_listener_format(&e->listener, s, sizeof s));
      int first = 1;
      for (int i = 0; i < e->nb; i++) {
        if (!binding_shown(e->b[i])) continue;
        binding_addr(e->b[i], s, sizeof s);
        lr_sbuf_printf(out, "%s\"%s\"", first ? "" : ",", s);
        first = 0;
      }
      lr_port_state_t pst = lr_ports_entry_state(e);
      lr_sbuf_printf(out, "],\"state\":\"%s\"", lr_port_state_name(pst));
      if (pst == LR_PORT_DENIED) {
        char why[200];
        deny_reason(h, e, why, sizeof why);
        lr_sbuf_puts(out, ",\"reason\":");
        lr_sbuf_json_str(out, why);
      }
      lr_sbuf_printf(out,
                     ",\"connections\":%llu,\"active\":%llu,"
                     "\"bytes_to_guest\":%llu,\"bytes_to_host\":%llu",
                     (unsigned long long)st.conns, (unsigned long long)st.active,
                     (unsigned long long)st.to_guest, (unsigned long long)st.to_host);
      /* UDP: flows are the connections; drops are datagrams a flow that
       * fell behind did not carry. */
      if (e->listener.flags & LR_LISTENER_UDP)
        lr_sbuf_printf(out, ",\"drops\":%llu", (unsigned long long)st.drops);
      lr_sbuf_puts(out, "}");
    }
    /* Reverse forwarding: host ports published on the guest loopback. */
    lr_sbuf_puts(out, "],\"reverse\":[");
    for (size_t i = 0; i < g->nrev; i++) {
      const lr_binding_t *b = g->rev[i];
      lr_sbuf_printf(out, "%s{\"proto\":\"tcp\",\"guest\":[\"127.0.0.1:%u\"", i ? "," : "",
                     b->key.port);
      if (h->cfg->ipv6) lr_sbuf_printf(out, ",\"[::1]:%u\"", b->key.port);
      lr_sbuf_printf(out,
                     "],\"host\":\"localhost:%u\",\"connections\":%llu,\"active\":%u,"
                     "\"bytes_to_guest\":%llu,\"bytes_to_host\":%llu}",
                     b->key.port, (unsigned long long)b->connections, b->active,
                     (unsigned long long)b->bytes_to_guest, (unsigned long long)b->bytes_to_host);
    }
    lr_sbuf_printf(out, "]}%s", g->next ? "," : "");
  }
  lr_sbuf_puts(out, "]}\n");
}

static void human_bytes(uint64_t v, char *out, size_t len) {
  static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double d = (double)v;
  int u = 0;
  while (d >= 1024 && u < 4) {
    d /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(out, len, "%llu B", (unsigned long long)v);
  else
    snprintf(out, len, "%.1f %s", d, units[u]);
}

void lr_host_status_table(lr_host_t *h, lr_sbuf_t *out) {
  char s[80], hosts[200], tg[32], th[32];
  if (!h->guests) lr_sbuf_puts(out, "no guests\n");
  for (lr_guest_t *g = h->guests; g; g = g->next) {
    lr_sbuf_printf(out, "guest %s  %s  %s  detection %s\n", g->name, g->transport,
                   guest_state_name(g), lr_detection_name(g->detection));
    if (g->state != LR_G_CONNECTED && g->last_err[0])
      lr_sbuf_printf(out, "  last error: %s\n", g->last_err);
    for (size_t i = 0; i < g->nrev; i++) {
      const lr_binding_t *b = g->rev[i];
      human_bytes(b->bytes_to_guest, tg, sizeof tg);
      human_bytes(b->bytes_to_host, th, sizeof th);
      lr_sbuf_printf(out, "  reverse: guest localhost:%-5u -> host localhost:%-5u  %llu conns, "
                          "%u open, %s to guest, %s to host\n",
                     b->key.port, b->key.port, (unsigned long long)b->connections, b->active, tg,
                     th);
    }
    if (!g->ports.entries) {
      lr_sbuf_puts(out, "  (no listening ports reported)\n");
      continue;
    }
    lr_sbuf_printf(out, "  %-5s %-28s %-34s %-10s %6s %6s %10s %10s\n", "PROTO", "GUEST", "HOST",
                   "STATE", "CONNS", "OPEN", "TO GUEST", "TO HOST");
    for (lr_port_entry_t *e = g->ports.entries; e; e = e->next) {
      if (!status_listed(e)) continue;
      entry_stats_t st = entry_stats(e);
      hosts[0] = '\0';
      for (int i = 0; i < e->nb; i++) {
        if (!binding_shown(e->b[i])) continue;
        binding_addr(e->b[i], s, sizeof s);
        size_t l = strlen(hosts);
        snprintf(hosts + l, sizeof hosts - l, "%s%s", l ? "," : "", s);
      }
      if (!hosts[0]) snprintf(hosts, sizeof hosts, "-");
      human_bytes(st.to_guest, tg, sizeof tg);
      human_bytes(st.to_host, th, sizeof th);
      lr_port_state_t pst = lr_ports_entry_state(e);
      lr_sbuf_printf(out, "  %-5s %-28s %-34s %-10s %6llu %6llu %10s %10s\n", entry_proto(e),
                     lr_listener_format(&e->listener, s, sizeof s), hosts,
                     lr_port_state_name(pst), (unsigned long long)st.conns,
                     (unsigned long long)st.active, tg, th);
      if (pst == LR_PORT_DENIED) {
        char why[200];
        deny_reason(h, e, why, sizeof why);
        lr_sbuf_printf(out, "        denied: %s\n", why);
      }
    }
  }
}

/* ---- the endpoint ----------------------------------------------------------- */

static void status_server_closed(uv_handle_t *hd) { lr_host_closed(hd->data); }

static void status_client_handle_closed(uv_handle_t *hd) {
  lr_status_client_t *c = hd->data;
  lr_host_t *h = c->host;
  if (--c->open_handles == 0) {
    for (lr_status_client_t **pp = &h->clients; *pp; pp = &(*pp)->next)
      if (*pp == c) {
        *pp = c->next;
        break;
      }
    h->nclients--;
    lr_sbuf_free(&c->out);
    free(c);
  }
  lr_host_closed(h);
}

static void status_client_close(lr_status_client_t *c) {
  if (c->closing) return;
  c->closing = 1;
  lr_host_closing(c->host);
  lr_host_closing(c->host);
  uv_close((uv_handle_t *)&c->pipe, status_client_handle_closed);
  uv_close((uv_handle_t *)&c->timer, status_client_handle_closed);
}

/* A status client gets statusIdleTimeoutMs for its whole exchange: one that
 * connects and says nothing, or never reads the answer, is cut, so idle
 * clients can never pile up and starve forwarding of descriptors. */
static void status_client_expired(uv_timer_t *t) { status_client_close(t->data); }

static void status_shut(uv_shutdown_t *req, int st) {
  (void)st;
  status_client_close(req->data);
}

static void status_written(uv_write_t *req, int st) {
  lr_status_client_t *c = req->data;
  if (c->closing) return;
  if (st < 0 || uv_shutdown(&c->sreq, (uv_stream_t *)&c->pipe, status_shut) != 0)
    status_client_close(c);
}

static void status_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *buf) {
  lr_status_client_t *c = hd->data;
  (void)sz;
  buf->base = c->line + c->len;
  buf->len = sizeof c->line - 1 - c->len;
}

static void status_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  lr_status_client_t *c = s->data;
  (void)buf;
  if (n < 0) {
    status_client_close(c);
    return;
  }
  c->len += (size_t)n;
  c->line[c->len] = '\0';
  char *nl = strchr(c->line, '\n');
  if (!nl && c->len < sizeof c->line - 1) return;
  uv_read_stop(s);
  if (nl) *nl = '\0';
  size_t l = strlen(c->line);
  if (l && c->line[l - 1] == '\r') c->line[l - 1] = '\0';
  if (strcmp(c->line, "status json") == 0 || strcmp(c->line, "status --json") == 0)
    lr_host_status_json(c->host, &c->out);
  else if (strcmp(c->line, "status table") == 0 || strcmp(c->line, "status") == 0)
    lr_host_status_table(c->host, &c->out);
  else
    lr_sbuf_printf(&c->out, "error: unknown request (try: status json, status table)\n");
  if (c->out.err || !c->out.len) {
    status_client_close(c);
    return;
  }
  uv_buf_t b = uv_buf_init(c->out.p, (unsigned)c->out.len);
  c->wreq.data = c;
  c->sreq.data = c;
  if (uv_write(&c->wreq, s, &b, 1, status_written) != 0) status_client_close(c);
}

static void status_conn(uv_stream_t *server, int status) {
  lr_host_t *h = server->data;
  if (status < 0) {
    lr_log_accept_error(&h->status_accept_log, h->loop, "status endpoint", status);
    return;
  }
  if (h->stopping) return;
  if (h->nclients >= h->cfg->max_status_clients) {
    /* At the budget, the oldest client that has not even sent its request
     * makes room: a real lorelayctl asks at once and is answered within
     * milliseconds, so idle connections cannot lock it out. If every slot
     * is busy answering, the newcomer is accepted and closed (a listener
     * whose callback does not accept stops accepting). */
    lr_status_client_t *oldest = NULL;
    for (lr_status_client_t *c = h->clients; c; c = c->next)
      if (!c->closing && !c->len) oldest = c; /* the list is newest first */
    if (lr_ratelimit_pass(&h->status_budget_log, uv_now(h->loop), LR_BUDGET_LOG_MS))
      LR_WARN("status endpoint: maxStatusClients (%u) connected: %s (%llu times so far)",
              h->cfg->max_status_clients,
              oldest ? "cutting the oldest idle one" : "refusing new ones",
              (unsigned long long)(h->status_budget_log.suppressed + 1));
    if (!oldest) {
      lr_drop_pending(server);
      return;
    }
    status_client_close(oldest);
  }
  lr_status_client_t *c = calloc(1, sizeof *c);
  if (!c) return;
  c->host = h;
  lr_sbuf_init(&c->out);
  uv_pipe_init(h->loop, &c->pipe, 0);
  uv_timer_init(h->loop, &c->timer);
  c->pipe.data = c->timer.data = c;
  c->open_handles = 2;
  c->next = h->clients;
  h->clients = c;
  h->nclients++;
  uv_timer_start(&c->timer, status_client_expired, h->cfg->status_idle_timeout_ms, 0);
  if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0 ||
      uv_read_start((uv_stream_t *)&c->pipe, status_alloc, status_read) != 0)
    status_client_close(c);
}

void lr_status_stop(lr_host_t *h) {
  for (lr_status_client_t *c = h->clients; c; c = c->next) status_client_close(c);
  if (!h->status_open) return;
  h->status_open = 0;
  h->status.data = h;
  lr_host_closing(h);
  uv_close((uv_handle_t *)&h->status, status_server_closed);
}

int lr_host_serve_status(lr_host_t *h, const char *path, char *err, size_t errlen) {
  int rc = uv_pipe_init(h->loop, &h->status, 0);
  if (rc == 0) {
    h->status.data = h;
    h->status_open = 1;
    rc = uv_pipe_bind(&h->status, path);
    if (rc == UV_EADDRINUSE || rc == UV_EACCES) {
      snprintf(err, errlen,
               "status endpoint %s exists already: another lorelayd, or a program squatting "
               "the name; refusing to start",
               path);
      lr_status_stop(h);
      return -1;
    }
    /* Not for every local user: the platform narrows who may connect
     * (Linux: mode 0660; Windows: SYSTEM and Administrators). */
    if (rc == 0 && h->pal->secure_endpoint &&
        h->pal->secure_endpoint(&h->status, path, err, errlen) != 0) {
      lr_status_stop(h);
      return -1;
    }
    if (rc == 0) rc = uv_listen((uv_stream_t *)&h->status, 64, status_conn);
  }
  if (rc) {
    snprintf(err, errlen, "status endpoint %s: %s", path, uv_strerror(rc));
    lr_status_stop(h);
    return -1;
  }
  LR_INFO("status endpoint: %s", path);
  return 0;
}
