/* The endpoint lorelayctl talks to: a libuv pipe (a Unix socket, or a named
 * pipe on Windows) that takes one request line.
 *
 *   status json | status table   one document (lr_status.c), then close
 *   watch json  | watch table    "ok", the current ports as port-added
 *                                events marked snapshot, "snapshot-end",
 *                                then one line per event until either
 *                                side closes
 *
 * followed by options: guest=NAME (one guest; an unknown name is an
 * error line) and, for the table, width=N (fit N columns).
 *
 * Requests and watchers share one budget, maxStatusClients, so the
 * endpoint never holds more descriptors than that; at most half of it
 * (at least one) may be watchers, so `status` always has room. A status
 * client has statusIdleTimeoutMs for its whole exchange; a watcher is idle
 * by design and is exempt once subscribed.
 *
 * A watcher that does not read must never slow the daemon or grow its
 * memory: each has a bounded queue (WATCH_QUEUE_BYTES of written but not
 * yet accepted lines, on top of the kernel's socket buffer). Past the bound
 * its events are dropped and counted, and once its queue has drained to
 * half, it is told how many ("dropped" line) before anything else. An
 * event is rendered at most once per format, whatever the number of
 * watchers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_host_int.h"
#include "lr_log.h"

#define WATCH_QUEUE_BYTES (64 * 1024)

enum { WATCH_NONE = 0, WATCH_JSON, WATCH_TEXT };

/* One lorelayctl connection; owned by the host's client list, closed by
 * client_close, freed in its close callback (after libuv has called back
 * every write still queued, cancelled). */
struct lr_status_client_s {
  uv_pipe_t pipe;
  lr_host_t *host;
  char line[512];
  size_t len;
  char guest[300]; /* watch: only this guest's events; "": all */
  lr_sbuf_t out;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  uv_timer_t timer; /* the client's whole budget: statusIdleTimeoutMs (not for watchers) */
  int open_handles, closing;
  int watch;        /* WATCH_*: a subscriber */
  int answered;     /* its request line was complete: being answered or watching */
  size_t queued;    /* watcher: bytes handed to uv_write and not yet written */
  uint64_t dropped; /* watcher: events dropped since it was last told */
  lr_status_client_t *next;
};

/* The status server and each client hold a host reference while their
 * handles close (lr_host_int.h). */
static void status_server_closed(uv_handle_t *hd) { lr_host_unref(hd->data); }

static void client_handle_closed(uv_handle_t *hd) {
  lr_status_client_t *c = hd->data;
  lr_host_t *h = c->host;
  if (--c->open_handles == 0) {
    for (lr_status_client_t **pp = &h->clients; *pp; pp = &(*pp)->next)
      if (*pp == c) {
        *pp = c->next;
        break;
      }
    h->nclients--;
    if (c->watch) h->nwatchers--;
    lr_sbuf_free(&c->out);
    free(c);
  }
  lr_host_unref(h);
}

static void client_close(lr_status_client_t *c) {
  if (c->closing) return;
  c->closing = 1;
  lr_host_ref(c->host);
  lr_host_ref(c->host);
  uv_close((uv_handle_t *)&c->pipe, client_handle_closed);
  uv_close((uv_handle_t *)&c->timer, client_handle_closed);
}

/* A status client gets statusIdleTimeoutMs for its whole exchange: one that
 * connects and says nothing, or never reads the answer, is cut, so idle
 * clients can never pile up and starve forwarding of descriptors. */
static void client_expired(uv_timer_t *t) { client_close(t->data); }

static void status_shut(uv_shutdown_t *req, int st) {
  (void)st;
  client_close(req->data);
}

static void status_written(uv_write_t *req, int st) {
  lr_status_client_t *c = req->data;
  if (c->closing) return;
  if (st < 0 || uv_shutdown(&c->sreq, (uv_stream_t *)&c->pipe, status_shut) != 0)
    client_close(c);
}

/* ---- watchers ---------------------------------------------------------------- */

typedef struct {
  uv_write_t req;
  lr_status_client_t *c;
  size_t len;
  char data[];
} watch_write_t;

static void watch_send(lr_status_client_t *c, const char *p, size_t len);

/* Tells the watcher what it missed, once its queue has room again. */
static void watch_flush_dropped(lr_status_client_t *c) {
  if (!c->dropped || c->closing || c->queued > WATCH_QUEUE_BYTES / 2) return;
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  lr_status_dropped(c->dropped, c->watch == WATCH_JSON, &b);
  if (!b.err) {
    c->dropped = 0;
    watch_send(c, b.p, b.len);
  }
  lr_sbuf_free(&b);
}

static void watch_written(uv_write_t *req, int st) {
  watch_write_t *w = (watch_write_t *)req;
  lr_status_client_t *c = w->c;
  c->queued -= w->len;
  free(w);
  if (c->closing) return;
  if (st < 0) {
    client_close(c);
    return;
  }
  watch_flush_dropped(c);
}

static void watch_send(lr_status_client_t *c, const char *p, size_t len) {
  watch_write_t *w = malloc(sizeof *w + len);
  if (!w) {
    c->dropped++;
    return;
  }
  w->c = c;
  w->len = len;
  memcpy(w->data, p, len);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  c->queued += len;
  if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, watch_written) != 0) {
    c->queued -= len;
    free(w);
    client_close(c);
  }
}

/* One event line for one watcher: queued if it fits, else counted. */
static void watch_offer(lr_status_client_t *c, const lr_sbuf_t *line) {
  if (c->closing || !c->watch) return;
  watch_flush_dropped(c);
  if (c->dropped || c->queued + line->len > WATCH_QUEUE_BYTES) {
    c->dropped++;
    return;
  }
  watch_send(c, line->p, line->len);
}

void lr_host_event(lr_host_t *h, const lr_event_t *ev) {
  if (!h->nwatchers || h->stopping) return;
  lr_sbuf_t json, text;
  lr_sbuf_init(&json);
  lr_sbuf_init(&text);
  for (lr_status_client_t *c = h->clients; c; c = c->next) {
    if (c->closing || !c->watch) continue;
    if (c->guest[0] && strcmp(c->guest, ev->g->name)) continue;
    lr_sbuf_t *line = c->watch == WATCH_JSON ? &json : &text;
    if (!line->len && !line->err) {
      if (c->watch == WATCH_JSON)
        lr_status_event_json(h, ev, line);
      else
        lr_status_event_text(h, ev, line);
    }
    if (line->err)
      c->dropped++;
    else
      watch_offer(c, line);
  }
  lr_sbuf_free(&json);
  lr_sbuf_free(&text);
}

static unsigned max_watchers(const lr_host_t *h) {
  unsigned n = h->cfg->max_status_clients / 2;
  return n ? n : 1;
}

/* "ok", then events; the idle timer no longer applies. */
static void watch_start(lr_status_client_t *c, int mode) {
  lr_host_t *h = c->host;
  if (h->nwatchers >= max_watchers(h)) {
    if (lr_ratelimit_pass(&h->status_budget_log, uv_now(h->loop), LR_BUDGET_LOG_MS))
      LR_WARN("status endpoint: %u watchers connected (at most half of maxStatusClients = "
              "%u): refusing another",
              h->nwatchers, h->cfg->max_status_clients);
    lr_sbuf_printf(&c->out, "error: too many watchers (at most %u, half of maxStatusClients)\n",
                   max_watchers(h));
    return;
  }
  c->watch = mode;
  h->nwatchers++;
  uv_timer_stop(&c->timer);
  LR_DEBUG("status endpoint: a watcher subscribed (%u now)", h->nwatchers);
  watch_send(c, "ok\n", 3);
  /* Start from the present: every port as it is now, then the mark; the
   * loop runs nothing in between, so no event falls in a gap. */
  for (lr_guest_t *g = h->guests; g; g = g->next) {
    if (c->guest[0] && strcmp(c->guest, g->name)) continue;
    for (lr_port_entry_t *e = g->ports.entries; e; e = e->next) {
      if (!lr_status_listed(e)) continue;
      lr_event_t ev = {LR_EV_PORT_ADDED, g, e, LR_PORT_FORWARDING, NULL, 1};
      lr_sbuf_t line;
      lr_sbuf_init(&line);
      if (mode == WATCH_JSON)
        lr_status_event_json(h, &ev, &line);
      else
        lr_status_event_text(h, &ev, &line);
      if (line.err)
        c->dropped++;
      else
        watch_offer(c, &line);
      lr_sbuf_free(&line);
    }
  }
  lr_sbuf_t end;
  lr_sbuf_init(&end);
  lr_status_snapshot_end(mode == WATCH_JSON, &end);
  if (!end.err) watch_offer(c, &end);
  lr_sbuf_free(&end);
}

/* "status json guest=web width=120": the words after the first two. 0, or
 * -1 with an error line in c->out. */
static int parse_options(lr_status_client_t *c, char *opts, unsigned *width) {
  char *save = NULL;
  for (char *w = strtok_r(opts, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
    if (!strncmp(w, "guest=", 6) && w[6] && strlen(w + 6) < sizeof c->guest) {
      snprintf(c->guest, sizeof c->guest, "%s", w + 6);
    } else if (!strncmp(w, "width=", 6)) {
      char *end;
      unsigned long v = strtoul(w + 6, &end, 10);
      if (*end || v > 100000) goto bad;
      *width = (unsigned)v;
    } else {
      goto bad;
    }
    continue;
  bad:
    lr_sbuf_puts(&c->out, "error: unknown request option (known: guest=NAME, width=N)\n");
    return -1;
  }
  return 0;
}

static void unknown_guest(lr_status_client_t *c) {
  lr_sbuf_puts(&c->out, "error: no guest named '");
  lr_text_escape(&c->out, c->guest);
  lr_sbuf_puts(&c->out, "' (guests:");
  if (!c->host->guests) lr_sbuf_puts(&c->out, " none");
  for (lr_guest_t *g = c->host->guests; g; g = g->next) {
    lr_sbuf_puts(&c->out, " ");
    lr_text_escape(&c->out, g->name);
  }
  lr_sbuf_puts(&c->out, ")\n");
}

/* ---- requests ---------------------------------------------------------------- */

static void status_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *buf) {
  lr_status_client_t *c = hd->data;
  (void)sz;
  if (c->watch) { /* a watcher's input is read only to see it close */
    buf->base = c->line;
    buf->len = sizeof c->line;
    return;
  }
  buf->base = c->line + c->len;
  buf->len = sizeof c->line - 1 - c->len;
}

static void status_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  lr_status_client_t *c = s->data;
  (void)buf;
  if (n < 0) {
    client_close(c);
    return;
  }
  if (c->watch) return;
  c->len += (size_t)n;
  c->line[c->len] = '\0';
  char *nl = strchr(c->line, '\n');
  if (!nl && c->len < sizeof c->line - 1) return;
  if (nl) *nl = '\0';
  c->answered = 1;
  size_t l = strlen(c->line);
  if (l && c->line[l - 1] == '\r') c->line[l - 1] = '\0';
  /* "VERB FORMAT [options]"; the bare "status" and "watch" are tables. */
  char verb[16] = "", fmt[16] = "", *opts = c->line;
  unsigned width = 0;
  int nw = 0;
  while (*opts == ' ') opts++;
  for (; nw < 2 && *opts; nw++) {
    size_t wl = strcspn(opts, " ");
    snprintf(nw ? fmt : verb, sizeof verb, "%.*s", (int)(wl < 15 ? wl : 15), opts);
    opts += wl;
    while (*opts == ' ') opts++;
  }
  int json = !strcmp(fmt, "json") || !strcmp(fmt, "--json");
  int known_fmt = json || !strcmp(fmt, "table") || !fmt[0];
  int is_status = !strcmp(verb, "status"), is_watch = !strcmp(verb, "watch");
  if (!known_fmt || (!is_status && !is_watch)) {
    lr_sbuf_printf(&c->out, "error: unknown request (try: status json, status table, "
                            "watch json, watch table)\n");
  } else if (parse_options(c, opts, &width) == 0) {
    const char *only = c->guest[0] ? c->guest : NULL;
    if (only && !lr_host_find_guest(c->host, only))
      unknown_guest(c);
    else if (is_status && json)
      lr_host_status_json_for(c->host, only, &c->out);
    else if (is_status)
      lr_host_status_table_for(c->host, only, width, &c->out);
    else
      watch_start(c, json ? WATCH_JSON : WATCH_TEXT);
  }
  if (c->watch) return; /* keeps reading: EOF ends the subscription */
  uv_read_stop(s);
  if (c->out.err || !c->out.len) {
    client_close(c);
    return;
  }
  uv_buf_t b = uv_buf_init(c->out.p, (unsigned)c->out.len);
  c->wreq.data = c;
  c->sreq.data = c;
  if (uv_write(&c->wreq, s, &b, 1, status_written) != 0) client_close(c);
}

static void status_conn(uv_stream_t *server, int status) {
  lr_host_t *h = server->data;
  if (status < 0) {
    lr_log_accept_error(&h->status_accept_log, h->loop, "status endpoint", status);
    return;
  }
  if (h->stopping) return;
  if (h->nclients >= h->cfg->max_status_clients) {
    /* At the budget, the oldest client that has not sent a whole request
     * makes room, whether it sent nothing or part of a line: a real
     * lorelayctl sends its line at once and is answered within
     * milliseconds, so neither idle nor half-spoken connections can lock
     * it out. If every slot is busy answering or watching, the newcomer is
     * accepted and closed (a listener whose callback does not accept stops
     * accepting). */
    lr_status_client_t *oldest = NULL;
    for (lr_status_client_t *c = h->clients; c; c = c->next)
      if (!c->closing && !c->answered && !c->watch) oldest = c; /* newest first */
    if (lr_ratelimit_pass(&h->status_budget_log, uv_now(h->loop), LR_BUDGET_LOG_MS))
      LR_WARN("status endpoint: maxStatusClients (%u) connected: %s (%llu times so far)",
              h->cfg->max_status_clients,
              oldest ? "cutting the oldest one without a whole request" : "refusing new ones",
              (unsigned long long)(h->status_budget_log.suppressed + 1));
    if (!oldest) {
      lr_drop_pending(server);
      return;
    }
    client_close(oldest);
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
  uv_timer_start(&c->timer, client_expired, h->cfg->status_idle_timeout_ms, 0);
  if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0 ||
      uv_read_start((uv_stream_t *)&c->pipe, status_alloc, status_read) != 0)
    client_close(c);
}

void lr_status_stop(lr_host_t *h) {
  for (lr_status_client_t *c = h->clients; c; c = c->next) client_close(c);
  if (!h->status_open) return;
  h->status_open = 0;
  h->status.data = h;
  lr_host_ref(h);
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
    if (rc == 0 && h->pal->endpoint_group && h->cfg->status_group[0]) {
      char msg[700];
      int g = h->pal->endpoint_group(path, h->cfg->status_group, msg, sizeof msg);
      if (g == 0)
        LR_INFO("%s", msg);
      else if (g == 2)
        LR_DEBUG("%s", msg);
      else
        LR_WARN("%s", msg);
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
