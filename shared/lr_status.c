/* Status documents: what lorelayctl shows, as a table or JSON, and the
 * event lines of `lorelayctl watch`.
 *
 * Everything is rendered from the same port table, so the table, the JSON
 * and the events never disagree, and each object is built in one place:
 * port_json builds a port, guest_json a guest, port_row and guest_rows
 * their table lines; the watch events reuse port_json and port_text. Part
 * of what is shown is guest text (a listener owner's command line), so the
 * JSON is built with cJSON rather than by hand, and the human formats
 * escape control characters (lr_text_escape): a hostile command line can
 * neither forge a table row nor send the terminal an escape sequence. The
 * endpoint that serves these documents is lr_ctlsrv.c. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "lr_host_int.h"
#include "lr_log.h"

static void binding_addr(const lr_guest_t *g, const lr_binding_t *b, char *out, size_t len) {
  uint16_t port = b->state == LR_BINDING_BOUND || b->state == LR_BINDING_REMAPPED
                      ? b->actual_port
                      : b->key.port;
  snprintf(out, len, "%s:%u", lr_guest_host_str(g, b->key.family), port);
}

static const char *guest_state_name(const lr_guest_t *g) {
  return g->state == LR_G_CONNECTED ? "connected" : "connecting";
}

/* A binding that holds no socket and never will without a change on the
 * host is not a host address a client could use. */
static int binding_shown(const lr_binding_t *b) {
  return b->state != LR_BINDING_UNAVAILABLE && b->state != LR_BINDING_BUDGET;
}

static void deny_reason(const lr_guest_t *g, const lr_port_entry_t *e, char *out, size_t len) {
  if (e->rule == LR_RULE_DENIED)
    lr_rules_deny_reason(&e->listener, &g->cfg, out, len);
  else
    snprintf(out, len, "maxStandins (%u host sockets) reached", g->cfg.max_standins);
}

typedef struct {
  uint64_t conns, active, to_guest, to_host, drops, connect_failures;
} entry_stats_t;

static const char *entry_proto(const lr_port_entry_t *e) {
  return e->listener.flags & LR_LISTENER_UDP ? "udp" : "tcp";
}

static entry_stats_t entry_stats(const lr_port_entry_t *e) {
  entry_stats_t s = {0, 0, 0, 0, 0, 0};
  for (int i = 0; i < e->nb; i++) {
    s.connect_failures += e->b[i]->connect_failures;
    s.conns += e->b[i]->connections;
    s.active += e->b[i]->active;
    s.to_guest += e->b[i]->bytes_to_guest;
    s.to_host += e->b[i]->bytes_to_host;
    s.drops += e->b[i]->drops;
  }
  return s;
}

uint64_t lr_guest_uptime_s(const lr_guest_t *g) {
  if (g->state != LR_G_CONNECTED) return 0;
  return (uv_now(g->host->loop) - g->connected_at) / 1000;
}

/* The error shown as last_error: the current one, else the one that ended
 * the previous connection. */
static const char *guest_last_error(const lr_guest_t *g) {
  if (g->last_err[0]) return g->last_err;
  return g->prev_err[0] ? g->prev_err : NULL;
}

/* ---- JSON ------------------------------------------------------------------ */

/* Counters as exact integers: cJSON keeps numbers as doubles, which print
 * in exponent form past 10^15. */
static void json_u64(cJSON *o, const char *name, uint64_t v) {
  char s[24];
  snprintf(s, sizeof s, "%llu", (unsigned long long)v);
  cJSON_AddItemToObject(o, name, cJSON_CreateRaw(s));
}

static void json_str(cJSON *o, const char *name, const char *s) {
  cJSON_AddItemToObject(o, name, s ? cJSON_CreateString(s) : cJSON_CreateNull());
}

/* Who holds the host port of a port in conflict (or remapped): the first
 * binding that knows. */
static const lr_holder_t *entry_holder(const lr_port_entry_t *e) {
  for (int i = 0; i < e->nb; i++)
    if (e->b[i]->holder &&
        (e->b[i]->state == LR_BINDING_CONFLICT || e->b[i]->state == LR_BINDING_REMAPPED))
      return e->b[i]->holder;
  return NULL;
}

static cJSON *port_json(const lr_guest_t *g, const lr_port_entry_t *e) {
  char s[80];
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  entry_stats_t st = entry_stats(e);
  json_str(o, "proto", entry_proto(e));
  json_str(o, "guest", lr_listener_format(&e->listener, s, sizeof s));
  cJSON *hosts = cJSON_AddArrayToObject(o, "host");
  for (int i = 0; i < e->nb; i++) {
    if (!binding_shown(e->b[i])) continue;
    binding_addr(g, e->b[i], s, sizeof s);
    cJSON_AddItemToArray(hosts, cJSON_CreateString(s));
  }
  lr_port_state_t pst = lr_ports_entry_state(e);
  json_str(o, "state", lr_port_state_name(pst));
  if (pst == LR_PORT_DENIED) {
    char why[200];
    deny_reason(g, e, why, sizeof why);
    json_str(o, "reason", why);
  }
  const lr_holder_t *hd = entry_holder(e);
  if (hd && (pst == LR_PORT_CONFLICT || pst == LR_PORT_REMAPPED)) {
    cJSON *ho = cJSON_AddObjectToObject(o, "holder");
    if (hd->guest[0]) {
      json_str(ho, "guest", hd->guest);
    } else {
      json_u64(ho, "pid", hd->pid);
      json_str(ho, "command", hd->command);
    }
  }
  json_u64(o, "connections", st.conns);
  json_u64(o, "active", st.active);
  json_u64(o, "connect_failures", st.connect_failures);
  json_u64(o, "bytes_to_guest", st.to_guest);
  json_u64(o, "bytes_to_host", st.to_host);
  /* UDP: flows are the connections; drops are datagrams a flow that fell
   * behind did not carry. */
  if (e->listener.flags & LR_LISTENER_UDP) json_u64(o, "drops", st.drops);
  if (e->owner) {
    cJSON *p = cJSON_AddObjectToObject(o, "process");
    json_u64(p, "pid", e->owner->pid);
    json_str(p, "command", e->owner->cmd);
  }
  return o;
}

/* Reverse forwarding: a host port published on the guest loopback. */
static cJSON *reverse_json(const lr_guest_t *g, const lr_binding_t *b) {
  char s[40];
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  json_str(o, "proto", "tcp");
  cJSON *guest = cJSON_AddArrayToObject(o, "guest");
  snprintf(s, sizeof s, "127.0.0.1:%u", b->key.port);
  cJSON_AddItemToArray(guest, cJSON_CreateString(s));
  if (g->cfg.ipv6) {
    snprintf(s, sizeof s, "[::1]:%u", b->key.port);
    cJSON_AddItemToArray(guest, cJSON_CreateString(s));
  }
  snprintf(s, sizeof s, "localhost:%u", b->key.port);
  json_str(o, "host", s);
  json_u64(o, "connections", b->connections);
  json_u64(o, "active", b->active);
  json_u64(o, "bytes_to_guest", b->bytes_to_guest);
  json_u64(o, "bytes_to_host", b->bytes_to_host);
  return o;
}

static cJSON *guest_json(const lr_guest_t *g) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  json_str(o, "name", g->name);
  json_str(o, "transport", g->transport);
  json_str(o, "state", guest_state_name(g));
  json_str(o, "detection", lr_detection_name(g->detection));
  json_u64(o, "uptime_s", lr_guest_uptime_s(g));
  /* Where the stand-ins listen, when not on loopback (listenAddress is LAN exposure). */
  if (g->cfg.host_address[0]) json_str(o, "host_address", g->cfg.host_address);
  if (g->cfg.listen_address[0]) json_str(o, "listen_address", g->cfg.listen_address);
  if (g->state != LR_G_CONNECTED && g->last_err[0]) json_str(o, "error", g->last_err);
  json_str(o, "last_error", guest_last_error(g));
  cJSON *ports = cJSON_AddArrayToObject(o, "ports");
  for (lr_port_entry_t *e = g->ports.entries; e; e = e->next)
    if (lr_status_listed(e)) cJSON_AddItemToArray(ports, port_json(g, e));
  cJSON *rev = cJSON_AddArrayToObject(o, "reverse");
  for (size_t i = 0; i < g->nrev; i++) cJSON_AddItemToArray(rev, reverse_json(g, g->rev[i]));
  return o;
}

/* Prints doc as one line (and frees it). An allocation that failed
 * anywhere in building it fails the whole document. */
static void json_line(cJSON *doc, lr_sbuf_t *out) {
  char *txt = doc ? cJSON_PrintUnformatted(doc) : NULL;
  cJSON_Delete(doc);
  if (!txt) {
    out->err = 1;
    return;
  }
  lr_sbuf_puts(out, txt);
  lr_sbuf_puts(out, "\n");
  cJSON_free(txt);
}

static void time_or_null(cJSON *o, const char *name, int64_t t) {
  char s[40];
  if (!t) {
    json_str(o, name, NULL);
    return;
  }
  lr_status_time(t, 0, s, sizeof s);
  json_str(o, name, s);
}

/* Which file is in effect, and whether the last reload took. */
static cJSON *config_json(const lr_host_t *h) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  json_str(o, "path", h->config_info.path[0] ? h->config_info.path : NULL);
  time_or_null(o, "loaded_at", h->config_info.loaded_at);
  cJSON *r = cJSON_AddObjectToObject(o, "last_reload");
  if (r) {
    cJSON_AddItemToObject(r, "ok", cJSON_CreateBool(h->config_info.reload_ok));
    json_str(r, "error", h->config_info.reload_error[0] ? h->config_info.reload_error : NULL);
    time_or_null(r, "time", h->config_info.reload_time);
  }
  return o;
}

void lr_host_status_json(lr_host_t *h, lr_sbuf_t *out) { lr_host_status_json_for(h, NULL, out); }

int lr_host_status_json_for(lr_host_t *h, const char *guest, lr_sbuf_t *out) {
  if (guest && !lr_host_find_guest(h, guest)) return -1;
  cJSON *doc = cJSON_CreateObject();
  cJSON_AddItemToObject(doc, "config", config_json(h));
  cJSON *guests = cJSON_AddArrayToObject(doc, "guests");
  for (lr_guest_t *g = h->guests; g; g = g->next)
    if (!guest || !strcmp(g->name, guest)) cJSON_AddItemToArray(guests, guest_json(g));
  json_line(doc, out);
  return 0;
}

/* ---- text ---------------------------------------------------------------- */

void lr_text_escape(lr_sbuf_t *out, const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '\\')
      lr_sbuf_puts(out, "\\\\");
    else if (*p < 0x20 || *p == 0x7f)
      lr_sbuf_printf(out, "\\x%02x", *p);
    else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) /* C1 controls: CSI is U+009B */
      lr_sbuf_printf(out, "\\u%04x", *++p);
    else
      lr_sbuf_append(out, (const char *)p, 1);
  }
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

static void human_duration(uint64_t s, char *out, size_t len) {
  if (s < 60)
    snprintf(out, len, "%llus", (unsigned long long)s);
  else if (s < 3600)
    snprintf(out, len, "%llum%02llus", (unsigned long long)(s / 60), (unsigned long long)(s % 60));
  else if (s < 86400)
    snprintf(out, len, "%lluh%02llum", (unsigned long long)(s / 3600),
             (unsigned long long)(s / 60 % 60));
  else
    snprintf(out, len, "%llud%02lluh", (unsigned long long)(s / 86400),
             (unsigned long long)(s / 3600 % 24));
}

static void host_list(const lr_guest_t *g, const lr_port_entry_t *e, char *hosts, size_t len) {
  char s[80];
  hosts[0] = '\0';
  for (int i = 0; i < e->nb; i++) {
    if (!binding_shown(e->b[i])) continue;
    binding_addr(g, e->b[i], s, sizeof s);
    size_t l = strlen(hosts);
    snprintf(hosts + l, len - l, "%s%s", l ? "," : "", s);
  }
  if (!hosts[0]) snprintf(hosts, len, "-");
}

/* "1234 python3 -m http.server", escaped, or "-". */
static void process_text(const lr_port_entry_t *e, lr_sbuf_t *out) {
  if (!e->owner) {
    lr_sbuf_puts(out, "-");
    return;
  }
  lr_sbuf_printf(out, "%lu ", (unsigned long)e->owner->pid);
  lr_text_escape(out, e->owner->cmd);
}

/* The port table's columns. Widths are the widest cell (so a quiet guest
 * prints narrow rows); past the terminal's width the wide, free-text
 * columns give way, PROCESS first, and their cells end in "~". */
enum { C_PROTO, C_GUEST, C_HOST, C_STATE, C_CONNS, C_OPEN, C_FAIL, C_TOG, C_TOH, C_PROC, NCOL };
static const char *const col_head[NCOL] = {"PROTO", "GUEST", "HOST",     "STATE",   "CONNS",
                                           "OPEN",  "FAIL",  "TO GUEST", "TO HOST", "PROCESS"};
static const int col_right[NCOL] = {0, 0, 0, 0, 1, 1, 1, 1, 1, 0};

typedef struct {
  char *cell[NCOL];
  char *note; /* a line under the row ("denied: ...", "conflict: ..."), or NULL */
} row_t;

/* Display columns of UTF-8 text (escaped already: no control bytes). */
static size_t text_cols(const char *s) {
  size_t n = 0;
  for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
  return n;
}

/* s in exactly w columns: cut (ending in '~') or padded. */
static void put_cell(lr_sbuf_t *out, const char *s, size_t w, int right, int last) {
  size_t cols = text_cols(s);
  if (cols > w) {
    size_t keep = w ? w - 1 : 0, c = 0;
    const char *p = s;
    while (*p && c < keep) {
      p++;
      while (((unsigned char)*p & 0xC0) == 0x80) p++;
      c++;
    }
    lr_sbuf_append(out, s, (size_t)(p - s));
    if (w) lr_sbuf_puts(out, "~");
    return;
  }
  if (right)
    for (size_t i = cols; i < w; i++) lr_sbuf_puts(out, " ");
  lr_sbuf_puts(out, s);
  if (!right && !last)
    for (size_t i = cols; i < w; i++) lr_sbuf_puts(out, " ");
}

static char *dup_sbuf(lr_sbuf_t *b) {
  char *p = b->err || !b->p ? NULL : strdup(b->p);
  lr_sbuf_free(b);
  return p ? p : strdup("?");
}

static char *fmt_dup(const char *fmt, ...) LR_PRINTF(1, 2);
static char *fmt_dup(const char *fmt, ...) {
  char buf[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return strdup(buf);
}

static void port_cells(const lr_guest_t *g, const lr_port_entry_t *e, row_t *r) {
  char s[80], hosts[200], tg[32], th[32];
  entry_stats_t st = entry_stats(e);
  host_list(g, e, hosts, sizeof hosts);
  human_bytes(st.to_guest, tg, sizeof tg);
  human_bytes(st.to_host, th, sizeof th);
  lr_port_state_t pst = lr_ports_entry_state(e);
  lr_sbuf_t proc;
  lr_sbuf_init(&proc);
  process_text(e, &proc);
  r->cell[C_PROTO] = strdup(entry_proto(e));
  r->cell[C_GUEST] = strdup(lr_listener_format(&e->listener, s, sizeof s));
  r->cell[C_HOST] = strdup(hosts);
  r->cell[C_STATE] = strdup(lr_port_state_name(pst));
  r->cell[C_CONNS] = fmt_dup("%llu", (unsigned long long)st.conns);
  r->cell[C_OPEN] = fmt_dup("%llu", (unsigned long long)st.active);
  r->cell[C_FAIL] = fmt_dup("%llu", (unsigned long long)st.connect_failures);
  r->cell[C_TOG] = strdup(tg);
  r->cell[C_TOH] = strdup(th);
  r->cell[C_PROC] = dup_sbuf(&proc);
  r->note = NULL;
  const lr_holder_t *hd = entry_holder(e);
  if (pst == LR_PORT_DENIED) {
    char why[200];
    deny_reason(g, e, why, sizeof why);
    r->note = fmt_dup("        denied: %s", why);
  } else if (hd && (pst == LR_PORT_CONFLICT || pst == LR_PORT_REMAPPED)) {
    lr_sbuf_t n;
    lr_sbuf_init(&n);
    lr_sbuf_puts(&n, "        host port held by ");
    if (hd->guest[0]) {
      lr_sbuf_puts(&n, "guest ");
      lr_text_escape(&n, hd->guest);
    } else {
      lr_sbuf_printf(&n, "pid %lu ", (unsigned long)hd->pid);
      lr_text_escape(&n, hd->command);
    }
    r->note = dup_sbuf(&n);
  }
}

static void row_free(row_t *r) {
  for (int i = 0; i < NCOL; i++) free(r->cell[i]);
  free(r->note);
}

/* One guest's port rows, fitted to width (0: no limit). */
static void port_table(const lr_guest_t *g, unsigned width, lr_sbuf_t *out) {
  size_t n = 0, k = 0, w[NCOL];
  for (lr_port_entry_t *e = g->ports.entries; e; e = e->next) n += lr_status_listed(e);
  row_t *rows = calloc(n ? n : 1, sizeof *rows);
  if (!rows) {
    out->err = 1;
    return;
  }
  for (lr_port_entry_t *e = g->ports.entries; e; e = e->next)
    if (lr_status_listed(e)) port_cells(g, e, &rows[k++]);
  for (int c = 0; c < NCOL; c++) {
    w[c] = strlen(col_head[c]);
    for (size_t i = 0; i < n; i++)
      if (rows[i].cell[c] && text_cols(rows[i].cell[c]) > w[c]) w[c] = text_cols(rows[i].cell[c]);
  }
  if (width) {
    /* 2 of indent, 1 between columns */
    size_t total = 2 + NCOL - 1;
    for (int c = 0; c < NCOL; c++) total += w[c];
    static const int shrink[] = {C_PROC, C_HOST, C_GUEST};
    static const size_t floor_w[] = {7, 12, 12};
    for (int i = 0; i < 3 && total > width; i++) {
      size_t c = (size_t)shrink[i], over = total - width;
      size_t can = w[c] > floor_w[i] ? w[c] - floor_w[i] : 0;
      size_t cut = over < can ? over : can;
      w[c] -= cut;
      total -= cut;
    }
  }
  lr_sbuf_puts(out, "  ");
  for (int c = 0; c < NCOL; c++) {
    put_cell(out, col_head[c], w[c], col_right[c], c == NCOL - 1);
    lr_sbuf_puts(out, c == NCOL - 1 ? "\n" : " ");
  }
  for (size_t i = 0; i < n; i++) {
    lr_sbuf_puts(out, "  ");
    for (int c = 0; c < NCOL; c++) {
      put_cell(out, rows[i].cell[c] ? rows[i].cell[c] : "?", w[c], col_right[c], c == NCOL - 1);
      lr_sbuf_puts(out, c == NCOL - 1 ? "\n" : " ");
    }
    if (rows[i].note) {
      put_cell(out, rows[i].note, width ? width : text_cols(rows[i].note), 0, 1);
      lr_sbuf_puts(out, "\n");
    }
    row_free(&rows[i]);
  }
  free(rows);
}

/* The guest's heading line, its error and its reverse ports. */
static void guest_rows(const lr_guest_t *g, lr_sbuf_t *out) {
  char tg[32], th[32], up[32];
  lr_sbuf_puts(out, "guest ");
  lr_text_escape(out, g->name);
  lr_sbuf_puts(out, "  ");
  lr_text_escape(out, g->transport);
  lr_sbuf_printf(out, "  %s  detection %s", guest_state_name(g), lr_detection_name(g->detection));
  if (g->state == LR_G_CONNECTED) {
    human_duration(lr_guest_uptime_s(g), up, sizeof up);
    lr_sbuf_printf(out, "  up %s", up);
  }
  lr_sbuf_puts(out, "\n");
  const char *err = guest_last_error(g);
  if (err) {
    lr_sbuf_puts(out, "  last error: ");
    lr_text_escape(out, err);
    lr_sbuf_puts(out, "\n");
  }
  if (g->cfg.listen_address[0])
    lr_sbuf_printf(out, "  listenAddress %s: reachable from other machines\n",
                   g->cfg.listen_address);
  else if (g->cfg.host_address[0])
    lr_sbuf_printf(out, "  hostAddress %s\n", g->cfg.host_address);
  for (size_t i = 0; i < g->nrev; i++) {
    const lr_binding_t *b = g->rev[i];
    human_bytes(b->bytes_to_guest, tg, sizeof tg);
    human_bytes(b->bytes_to_host, th, sizeof th);
    lr_sbuf_printf(out, "  reverse: guest localhost:%-5u -> host localhost:%-5u  %llu conns, "
                        "%u open, %s to guest, %s to host\n",
                   b->key.port, b->key.port, (unsigned long long)b->connections, b->active, tg,
                   th);
  }
}

static void config_rows(const lr_host_t *h, lr_sbuf_t *out) {
  char t[40];
  lr_sbuf_puts(out, "config ");
  if (h->config_info.path[0]) {
    lr_text_escape(out, h->config_info.path);
    if (h->config_info.loaded_at) {
      lr_status_time(h->config_info.loaded_at, 0, t, sizeof t);
      lr_sbuf_printf(out, "  loaded %s", t);
    }
  } else {
    lr_sbuf_puts(out, "(none: defaults)");
  }
  if (h->config_info.reload_time) {
    lr_status_time(h->config_info.reload_time, 0, t, sizeof t);
    lr_sbuf_printf(out, "  last reload %s ", t);
    if (h->config_info.reload_ok) {
      lr_sbuf_puts(out, "ok");
    } else {
      lr_sbuf_puts(out, "FAILED: ");
      lr_text_escape(out, h->config_info.reload_error);
    }
  }
  lr_sbuf_puts(out, "\n");
}

void lr_host_status_table(lr_host_t *h, lr_sbuf_t *out) {
  lr_host_status_table_for(h, NULL, 0, out);
}

int lr_host_status_table_for(lr_host_t *h, const char *guest, unsigned width, lr_sbuf_t *out) {
  if (guest && !lr_host_find_guest(h, guest)) return -1;
  config_rows(h, out);
  if (!h->guests) lr_sbuf_puts(out, "no guests\n");
  for (lr_guest_t *g = h->guests; g; g = g->next) {
    if (guest && strcmp(g->name, guest)) continue;
    guest_rows(g, out);
    if (!g->ports.entries) {
      lr_sbuf_puts(out, "  (no listening ports reported)\n");
      continue;
    }
    port_table(g, width, out);
  }
  return 0;
}

/* ---- watch events ------------------------------------------------------------ */

/* Days since 1970-01-01 to a civil date (proleptic Gregorian), so that the
 * core needs no gmtime_r / gmtime_s. */
static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  unsigned doe = (unsigned)(z - era * 146097);
  unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t yy = (int64_t)yoe + era * 400;
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int)(yy + (*m <= 2));
}

void lr_status_time(int64_t sec, int32_t usec, char *out, size_t len) {
  int y;
  unsigned mo, d;
  int64_t days = sec >= 0 ? sec / 86400 : -((-sec + 86399) / 86400);
  int64_t rem = sec - days * 86400;
  civil_from_days(days, &y, &mo, &d);
  snprintf(out, len, "%04d-%02u-%02uT%02u:%02u:%02u.%03uZ", y, mo, d, (unsigned)(rem / 3600),
           (unsigned)(rem / 60 % 60), (unsigned)(rem % 60), (unsigned)(usec / 1000));
}

static void now_text(char *out, size_t len) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0) tv.tv_sec = 0, tv.tv_usec = 0;
  lr_status_time(tv.tv_sec, tv.tv_usec, out, len);
}

static const char *const event_names[] = {"port-added", "port-removed", "port-state",
                                          "guest-connected", "guest-disconnected"};

const char *lr_event_name(lr_event_kind_t k) {
  return (unsigned)k < sizeof event_names / sizeof event_names[0] ? event_names[k] : "unknown";
}

void lr_status_event_json(lr_host_t *h, const lr_event_t *ev, lr_sbuf_t *out) {
  char t[40];
  now_text(t, sizeof t);
  cJSON *o = cJSON_CreateObject();
  json_str(o, "time", t);
  json_str(o, "guest", ev->g->name);
  json_str(o, "event", lr_event_name(ev->kind));
  if (ev->snapshot) cJSON_AddItemToObject(o, "snapshot", cJSON_CreateTrue());
  switch (ev->kind) {
    case LR_EV_PORT_STATE:
      json_str(o, "previous", lr_port_state_name(ev->previous));
      /* fall through */
    case LR_EV_PORT_ADDED:
    case LR_EV_PORT_REMOVED:
      cJSON_AddItemToObject(o, "port", port_json(ev->g, ev->e));
      break;
    case LR_EV_GUEST_CONNECTED:
      json_str(o, "transport", ev->g->transport);
      break;
    case LR_EV_GUEST_DISCONNECTED:
      json_str(o, "transport", ev->g->transport);
      json_str(o, "error", ev->reason && ev->reason[0] ? ev->reason : NULL);
      break;
  }
  json_line(o, out);
}

void lr_status_event_text(lr_host_t *h, const lr_event_t *ev, lr_sbuf_t *out) {
  char t[40], s[80], hosts[200];
  (void)h;
  now_text(t, sizeof t);
  lr_sbuf_printf(out, "%s  ", t);
  lr_text_escape(out, ev->g->name);
  lr_sbuf_printf(out, "  %s", lr_event_name(ev->kind));
  switch (ev->kind) {
    case LR_EV_PORT_ADDED:
    case LR_EV_PORT_REMOVED:
    case LR_EV_PORT_STATE:
      host_list(ev->g, ev->e, hosts, sizeof hosts);
      lr_sbuf_printf(out, "  %s %s -> %s  %s", entry_proto(ev->e),
                     lr_listener_format(&ev->e->listener, s, sizeof s), hosts,
                     lr_port_state_name(lr_ports_entry_state(ev->e)));
      if (ev->kind == LR_EV_PORT_STATE)
        lr_sbuf_printf(out, " (was %s)", lr_port_state_name(ev->previous));
      if (ev->e->owner) {
        lr_sbuf_puts(out, "  process ");
        process_text(ev->e, out);
      }
      break;
    case LR_EV_GUEST_CONNECTED:
      lr_sbuf_puts(out, "  ");
      lr_text_escape(out, ev->g->transport);
      break;
    case LR_EV_GUEST_DISCONNECTED:
      if (ev->reason && ev->reason[0]) {
        lr_sbuf_puts(out, "  ");
        lr_text_escape(out, ev->reason);
      }
      break;
  }
  if (ev->snapshot) lr_sbuf_puts(out, "  (snapshot)");
  lr_sbuf_puts(out, "\n");
}

void lr_status_snapshot_end(int json, lr_sbuf_t *out) {
  char t[40];
  now_text(t, sizeof t);
  if (!json) {
    lr_sbuf_printf(out, "%s  snapshot-end: live events follow\n", t);
    return;
  }
  cJSON *o = cJSON_CreateObject();
  json_str(o, "time", t);
  json_str(o, "event", "snapshot-end");
  json_line(o, out);
}

void lr_status_dropped(uint64_t count, int json, lr_sbuf_t *out) {
  char t[40];
  now_text(t, sizeof t);
  if (!json) {
    lr_sbuf_printf(out, "%s  dropped %llu event(s): this watcher did not keep up\n", t,
                   (unsigned long long)count);
    return;
  }
  cJSON *o = cJSON_CreateObject();
  json_str(o, "time", t);
  json_str(o, "event", "dropped");
  json_u64(o, "count", count);
  json_line(o, out);
}
