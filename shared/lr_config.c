/* INI configuration on top of inih; see lr_config.h.
 *
 * inih's handler does not get line numbers from Debian's build of the
 * library, so we feed it through ini_parse_stream with a reader that counts
 * the lines it hands out: the handler runs right after its line was read,
 * so the count is that line's number. */
#include "lr_config.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "lr_addr.h"
#include "lr_file.h"
#include "lr_log.h"
#include "lr_sbuf.h"

void lr_config_defaults(lr_config_t *c) {
  memset(c, 0, sizeof *c);
  c->localhost_forwarding = 1;
  c->ipv6 = 1;
  c->remap_on_conflict = 0;
  c->log_level = LR_LOG_INFO;
  c->scan_interval_ms = 100;
  c->ebpf = 1;
  c->ebpf_scan_interval_ms = 2000;
  c->conflict_retry_ms = 1000;
  c->conflict_grace_s = 10;
  c->forward_ports.n = 1;
  c->forward_ports.r[0].lo = 1024;
  c->forward_ports.r[0].hi = 65535;
  c->max_standins = 4096;
  c->max_connections = 8192;
  c->max_connections_per_port = 6144;
  c->max_pending_reverse = 64;
  c->udp = 1;
  c->udp_idle_timeout_s = 60;
  c->udp_scan_interval_ms = 250;
  c->max_udp_flows = 4096;
  c->max_udp_flows_per_port = 1024;
  c->control_queue_bytes = 1024 * 1024;
  c->max_status_clients = 32;
  c->status_idle_timeout_ms = 5000;
  c->zero_copy = 1;
  c->one_hop = 1;
  c->zero_copy_after = 65536;
  snprintf(c->status_group, sizeof c->status_group, "lorelay");
}

char *lr_portset_format(const lr_portset_t *s, char *out, size_t len) {
  size_t off = 0;
  out[0] = '\0';
  if (!s->n) snprintf(out, len, "none");
  for (size_t i = 0; i < s->n && off < len; i++) {
    int n = s->r[i].lo == s->r[i].hi
                ? snprintf(out + off, len - off, "%s%u", i ? "," : "", s->r[i].lo)
                : snprintf(out + off, len - off, "%s%u-%u", i ? "," : "", s->r[i].lo, s->r[i].hi);
    if (n < 0) break;
    off += (size_t)n;
  }
  return out;
}

int lr_parse_bool(const char *s) {
  static const char *const yes[] = {"true", "yes", "on", "1"};
  static const char *const no[] = {"false", "no", "off", "0"};
  for (size_t i = 0; i < 4; i++) {
    if (lr_streq_nocase(s, yes[i])) return 1;
    if (lr_streq_nocase(s, no[i])) return 0;
  }
  return -1;
}

static const char *skip_ws(const char *p) {
  while (*p == ' ' || *p == '\t') p++;
  return p;
}

/* Strict decimal port 1..65535; *end past the digits. */
static int parse_port(const char *p, const char **end) {
  long v = 0;
  const char *q = p;
  while (*q >= '0' && *q <= '9') {
    v = v * 10 + (*q - '0');
    if (v > 65535) return -1;
    q++;
  }
  if (q == p || v == 0) return -1;
  *end = q;
  return (int)v;
}

int lr_portset_parse(lr_portset_t *s, const char *text, char *err, size_t errlen) {
  const char *p = text;
  s->n = 0;
  p = skip_ws(p);
  if (*p == '\0') return 0;
  for (;;) {
    const char *item = p, *q;
    int lo = parse_port(p, &q), hi;
    if (lo < 0) goto bad;
    p = skip_ws(q);
    hi = lo;
    if (*p == '-') {
      p = skip_ws(p + 1);
      hi = parse_port(p, &q);
      if (hi < 0) goto bad;
      if (hi < lo) {
        snprintf(err, errlen, "range %d-%d is reversed", lo, hi);
        return -1;
      }
      p = skip_ws(q);
    }
    if (s->n == LR_PORTSET_MAX_RANGES) {
      snprintf(err, errlen, "more than %d entries", LR_PORTSET_MAX_RANGES);
      return -1;
    }
    s->r[s->n].lo = (uint16_t)lo;
    s->r[s->n].hi = (uint16_t)hi;
    s->n++;
    if (*p == '\0') return 0;
    if (*p != ',') goto bad;
    p = skip_ws(p + 1);
    continue;
  bad : {
    size_t n = strcspn(item, ",");
    snprintf(err, errlen, "'%.*s' is not a port (1-65535) or range (LO-HI)", (int)n, item);
    return -1;
  }
  }
}

int lr_portset_contains(const lr_portset_t *s, uint16_t port) {
  for (size_t i = 0; i < s->n; i++)
    if (port >= s->r[i].lo && port <= s->r[i].hi) return 1;
  return 0;
}

int lr_portmap_parse(lr_portmap_t *m, const char *text, char *err, size_t errlen) {
  const char *p = skip_ws(text);
  m->n = 0;
  if (*p == '\0') return 0;
  for (;;) {
    const char *item = p, *q;
    int gp = parse_port(p, &q), hp;
    if (gp < 0) goto bad;
    p = skip_ws(q);
    if (*p != ':') goto bad;
    p = skip_ws(p + 1);
    hp = parse_port(p, &q);
    if (hp < 0) goto bad;
    p = skip_ws(q);
    for (size_t i = 0; i < m->n; i++) {
      if (m->m[i].guest == gp) {
        snprintf(err, errlen, "guest port %d is mapped twice", gp);
        return -1;
      }
      if (m->m[i].host == hp) {
        snprintf(err, errlen, "host port %d is the target of two guest ports", hp);
        return -1;
      }
    }
    if (m->n == LR_PORTMAP_MAX) {
      snprintf(err, errlen, "more than %d entries", LR_PORTMAP_MAX);
      return -1;
    }
    m->m[m->n].guest = (uint16_t)gp;
    m->m[m->n].host = (uint16_t)hp;
    m->n++;
    if (*p == '\0') return 0;
    if (*p != ',') goto bad;
    p = skip_ws(p + 1);
    continue;
  bad : {
    size_t n = strcspn(item, ",");
    snprintf(err, errlen, "'%.*s' is not GUEST:HOST (two ports 1-65535)", (int)n, item);
    return -1;
  }
  }
}

int lr_portmap_has(const lr_portmap_t *m, uint16_t guest_port) {
  for (size_t i = 0; i < m->n; i++)
    if (m->m[i].guest == guest_port) return 1;
  return 0;
}

uint16_t lr_portmap_host(const lr_portmap_t *m, uint16_t guest_port) {
  for (size_t i = 0; i < m->n; i++)
    if (m->m[i].guest == guest_port) return m->m[i].host;
  return guest_port;
}

char *lr_portmap_format(const lr_portmap_t *m, char *out, size_t len) {
  size_t off = 0;
  out[0] = '\0';
  for (size_t i = 0; i < m->n && off < len; i++) {
    int n = snprintf(out + off, len - off, "%s%u:%u", i ? ", " : "", m->m[i].guest, m->m[i].host);
    if (n < 0) break;
    off += (size_t)n;
  }
  return out;
}

typedef struct {
  char name[140]; /* "lorelay", "guest NAME" */
  int line, nkeys;
} section_seen_t;

typedef struct {
  int section; /* index in sections */
  char key[64];
  int line;
} key_seen_t;

typedef struct {
  lr_config_t *c;
  lr_config_file_t *file; /* NULL: [guest NAME] sections are skipped */
  const char *source;
  int line;
  int errors;
  char first_error[400];
  /* what the file held so far: duplicates and empty sections are errors */
  section_seen_t *sections;
  size_t nsections;
  key_seen_t *keys;
  size_t nkeys;
  /* string reader state */
  const char *text;
  /* file reader state */
} parse_ctx_t;

/* One error line naming the source and line; the first is kept for status. */
static void LR_PRINTF(3, 4) cerr(parse_ctx_t *ctx, int line, const char *fmt, ...) {
  char msg[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (line > 0)
    LR_ERROR("%s:%d: %s", ctx->source, line, msg);
  else
    LR_ERROR("%s: %s", ctx->source, msg);
  if (!ctx->errors) {
    if (line > 0)
      snprintf(ctx->first_error, sizeof ctx->first_error, "%.80s:%d: %s", ctx->source, line, msg);
    else
      snprintf(ctx->first_error, sizeof ctx->first_error, "%.80s: %s", ctx->source, msg);
  }
  ctx->errors++;
}

static int parse_uint_range(const char *v, unsigned lo, unsigned hi, unsigned *out) {
  char *end;
  errno = 0;
  unsigned long x = strtoul(v, &end, 10);
  if (errno || end == v || *skip_ws(end) != '\0' || *v == '-' || x < lo || x > hi) return -1;
  *out = (unsigned)x;
  return 0;
}

int lr_config_guest_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n >= LR_GUEST_NAME_MAX || s[0] == '-' || s[0] == '.') return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '.' || *s == '_' || *s == '-'))
      return 0;
  return 1;
}

int lr_config_check_address(const char *s, int loopback4, char *err, size_t errlen) {
  unsigned char a[16];
  if (strlen(s) >= LR_ADDRESS_MAX) {
    snprintf(err, errlen, "too long");
    return -1;
  }
  if (uv_inet_pton(AF_INET, s, a) == 0) {
    if (loopback4 && a[0] != 127) {
      snprintf(err, errlen,
               "not an IPv4 loopback address (127.x.y.z); to expose a guest on another "
               "address use listenAddress");
      return -1;
    }
    return 0;
  }
  if (loopback4) {
    snprintf(err, errlen, "expected an IPv4 loopback address such as 127.0.0.2");
    return -1;
  }
  if (uv_inet_pton(AF_INET6, s, a) == 0) return 0;
  snprintf(err, errlen, "not an IPv4 or IPv6 address (such as 0.0.0.0, 192.168.1.10 or ::)");
  return -1;
}

enum { K_BOOL, K_UINT, K_PORTS, K_LEVEL, K_ADDR, K_HOSTADDR, K_PORTMAP, K_GROUP, K_IDENT };

#define OFF(f) offsetof(lr_config_t, f)
/* Every key, in the order the sample files list them. */
const lr_config_key_t lr_config_keys[] = {
    {"localhostForwarding", K_BOOL, LR_KEY_ANY, OFF(localhost_forwarding), 0, 0, NULL},
    {"ipv6", K_BOOL, LR_KEY_ANY, OFF(ipv6), 0, 0, NULL},
    {"ignorePorts", K_PORTS, LR_KEY_ANY, OFF(ignore_ports), 0, 0, NULL},
    {"reversePorts", K_PORTS, LR_KEY_ANY, OFF(reverse_ports), 0, 0, NULL},
    {"forwardPorts", K_PORTS, LR_KEY_ANY, OFF(forward_ports), 0, 0, NULL},
    {"portMap", K_PORTMAP, LR_KEY_ANY, OFF(port_map), 0, 0, NULL},
    {"remapOnConflict", K_BOOL, LR_KEY_ANY, OFF(remap_on_conflict), 0, 0, NULL},
    {"logLevel", K_LEVEL, LR_KEY_DAEMON, OFF(log_level), 0, 0, NULL},
    {"conflictRetryMs", K_UINT, LR_KEY_ANY, OFF(conflict_retry_ms), 100, 60000, "milliseconds"},
    {"conflictGraceSeconds", K_UINT, LR_KEY_ANY, OFF(conflict_grace_s), 0, 3600, "seconds"},
    {"listenAddress", K_ADDR, LR_KEY_ANY, OFF(listen_address), 0, 0, NULL},
    {"udp", K_BOOL, LR_KEY_ANY, OFF(udp), 0, 0, NULL},
    {"udpIdleTimeout", K_UINT, LR_KEY_ANY, OFF(udp_idle_timeout_s), 1, 86400, "seconds"},
    {"oneHop", K_BOOL, LR_KEY_ANY, OFF(one_hop), 0, 0, NULL},
    {"zeroCopy", K_BOOL, LR_KEY_DAEMON, OFF(zero_copy), 0, 0, NULL},
    {"zeroCopyAfter", K_UINT, LR_KEY_DAEMON, OFF(zero_copy_after), 0, 1024u * 1024 * 1024,
     "bytes"},
    {"statusGroup", K_GROUP, LR_KEY_DAEMON, OFF(status_group), 0, 0, NULL},
    {"maxStandins", K_UINT, LR_KEY_ANY, OFF(max_standins), 1, 131072, "sockets"},
    {"maxConnections", K_UINT, LR_KEY_ANY, OFF(max_connections), 1, 1000000, "connections"},
    {"maxConnectionsPerPort", K_UINT, LR_KEY_ANY, OFF(max_connections_per_port), 1, 1000000,
     "connections"},
    {"maxPendingReverse", K_UINT, LR_KEY_ANY, OFF(max_pending_reverse), 1, 65536,
     "connections"},
    {"maxUdpFlows", K_UINT, LR_KEY_ANY, OFF(max_udp_flows), 1, 1000000, "flows"},
    {"maxUdpFlowsPerPort", K_UINT, LR_KEY_ANY, OFF(max_udp_flows_per_port), 1, 1000000, "flows"},
    {"controlQueueBytes", K_UINT, LR_KEY_ANY, OFF(control_queue_bytes), 65536,
     1024u * 1024 * 1024, "bytes"},
    {"maxStatusClients", K_UINT, LR_KEY_DAEMON, OFF(max_status_clients), 1, 4096, "clients"},
    {"statusIdleTimeoutMs", K_UINT, LR_KEY_DAEMON, OFF(status_idle_timeout_ms), 100, 600000,
     "milliseconds"},
    {"scanIntervalMs", K_UINT, LR_KEY_AGENT, OFF(scan_interval_ms), 10, 10000, "milliseconds"},
    {"ebpf", K_BOOL, LR_KEY_AGENT, OFF(ebpf), 0, 0, NULL},
    {"ebpfScanIntervalMs", K_UINT, LR_KEY_AGENT, OFF(ebpf_scan_interval_ms), 100, 600000,
     "milliseconds"},
    {"udpScanIntervalMs", K_UINT, LR_KEY_AGENT, OFF(udp_scan_interval_ms), 10, 10000,
     "milliseconds"},
    {"netns", K_IDENT, LR_KEY_GUEST, 0, 0, 0, NULL},
    {"transport", K_IDENT, LR_KEY_GUEST, 0, 0, 0, NULL},
    {"tokenFile", K_IDENT, LR_KEY_GUEST, 0, 0, 0, NULL},
    {"hostAddress", K_HOSTADDR, LR_KEY_GUEST, OFF(host_address), 0, 0, NULL},
};
#undef OFF
const size_t lr_config_nkeys = sizeof lr_config_keys / sizeof lr_config_keys[0];

static const lr_config_key_t *key_find(const char *name) {
  for (size_t i = 0; i < lr_config_nkeys; i++)
    if (lr_streq_nocase(name, lr_config_keys[i].name)) return &lr_config_keys[i];
  return NULL;
}

void lr_config_key_default(const lr_config_key_t *k, char *out, size_t len) {
  lr_config_t d;
  lr_config_defaults(&d);
  const char *f = (const char *)&d + k->off;
  out[0] = '\0';
  switch (k->kind) {
    case K_BOOL: snprintf(out, len, "%s", *(const int *)(const void *)f ? "true" : "false"); break;
    case K_UINT: snprintf(out, len, "%u", *(const unsigned *)(const void *)f); break;
    case K_PORTS: {
      const lr_portset_t *ps = (const void *)f;
      if (ps->n) lr_portset_format(ps, out, len);
      break;
    }
    case K_PORTMAP: lr_portmap_format((const void *)f, out, len); break;
    case K_LEVEL: snprintf(out, len, "%s", lr_log_level_name(*(const int *)(const void *)f)); break;
    case K_ADDR:
    case K_GROUP: snprintf(out, len, "%s", f); break;
    default: break;
  }
}

/* Case-insensitive Levenshtein distance, for "did you mean". */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b), row[64], i, j;
  if (la >= 63 || lb >= 63) return 99;
  for (j = 0; j <= lb; j++) row[j] = j;
  for (i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (j = 1; j <= lb; j++) {
      char x = a[i - 1], y = b[j - 1];
      if (x >= 'A' && x <= 'Z') x = (char)(x + 32);
      if (y >= 'A' && y <= 'Z') y = (char)(y + 32);
      size_t up = row[j], best = diag + (x != y);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      diag = up;
      row[j] = best;
    }
  }
  return row[lb];
}

const char *lr_config_suggest(const char *name) {
  const char *best = NULL;
  size_t bd = 99, n = strlen(name);
  for (size_t i = 0; i < lr_config_nkeys; i++) {
    size_t d = edit_distance(name, lr_config_keys[i].name);
    if (d < bd) bd = d, best = lr_config_keys[i].name;
  }
  /* a near miss: a typo or two, or a third of the word at most */
  return best && (bd <= 2 || bd * 3 <= n) ? best : NULL;
}

static const char *scope_where(int scope) {
  switch (scope) {
    case LR_KEY_DAEMON: return "it is one value for the whole lorelayd: set it in [lorelay]";
    case LR_KEY_AGENT: return "it is read by lorelay-agent from its own config's [lorelay]";
    default: return "it belongs in a [guest NAME] section";
  }
}

/* One key into c: from the [lorelay] section, or (in_guest) a [guest NAME]
 * section's key replayed over the guest's copy of [lorelay]. */
static int apply_key(parse_ctx_t *ctx, lr_config_t *c, const char *name, const char *value,
                     int in_guest) {
  char err[160];
  int b;
  const lr_config_key_t *k = key_find(name);
  if (!k) {
    const char *nearest = lr_config_suggest(name);
    if (nearest)
      cerr(ctx, ctx->line, "unknown key '%s': did you mean `%s`?", name, nearest);
    else
      cerr(ctx, ctx->line, "unknown key '%s' (the keys are listed in the sample lorelay.ini)",
           name);
    return 1;
  }
  if ((in_guest && (k->scope == LR_KEY_DAEMON || k->scope == LR_KEY_AGENT)) ||
      (!in_guest && k->scope == LR_KEY_GUEST)) {
    cerr(ctx, ctx->line, "%s cannot be set in %s: %s", k->name,
         in_guest ? "a [guest NAME] section" : "[lorelay]", scope_where(k->scope));
    return 1;
  }
  char *f = (char *)c + k->off;
  switch (k->kind) {
    case K_ADDR:
    case K_HOSTADDR:
      if (*value && lr_config_check_address(value, k->kind == K_HOSTADDR, err, sizeof err) != 0) {
        cerr(ctx, ctx->line, "%s = '%s': %s", k->name, value, err);
        return 1;
      }
      snprintf(f, LR_ADDRESS_MAX, "%s", value);
      return 1;
    case K_BOOL:
      if ((b = lr_parse_bool(value)) < 0)
        cerr(ctx, ctx->line, "%s = '%s' is not a boolean (true/false)", k->name, value);
      else
        *(int *)(void *)f = b;
      return 1;
    case K_PORTS:
      if (lr_portset_parse((lr_portset_t *)(void *)f, value, err, sizeof err)) {
        cerr(ctx, ctx->line, "%s: %s", k->name, err);
        ((lr_portset_t *)(void *)f)->n = 0;
      }
      return 1;
    case K_PORTMAP:
      if (lr_portmap_parse((lr_portmap_t *)(void *)f, value, err, sizeof err)) {
        cerr(ctx, ctx->line, "%s: %s", k->name, err);
        ((lr_portmap_t *)(void *)f)->n = 0;
      }
      return 1;
    case K_LEVEL: {
      int lvl = lr_log_level_parse(value);
      if (lvl < 0)
        cerr(ctx, ctx->line, "logLevel = '%s' is not one of error, warn, info, debug", value);
      else
        *(int *)(void *)f = lvl;
      return 1;
    }
    case K_GROUP: {
      size_t n = strlen(value);
      int ok = n > 0 && n < LR_GROUP_MAX && value[0] != '-';
      for (const char *p = value; ok && *p; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
             *p == '_' || *p == '-' || *p == '.';
      if (!ok)
        cerr(ctx, ctx->line, "%s = '%s' is not a group name (1-%d letters, digits, '_', '-', '.')",
             k->name, value, LR_GROUP_MAX - 1);
      else
        snprintf(f, LR_GROUP_MAX, "%s", value);
      return 1;
    }
    case K_UINT: {
      unsigned v;
      if (parse_uint_range(value, k->lo, k->hi, &v))
        cerr(ctx, ctx->line, "%s = '%s' is not a number of %s in %u..%u", k->name, value, k->what,
             k->lo, k->hi);
      else
        *(unsigned *)(void *)f = v;
      return 1;
    }
    default: return 1; /* K_IDENT: guest_key keeps those */
  }
}

static int prefix_nocase(const char *s, const char *prefix) {
  for (; *prefix; s++, prefix++) {
    char a = *s >= 'A' && *s <= 'Z' ? (char)(*s + 32) : *s;
    if (a != *prefix) return 0;
  }
  return 1;
}

/* "guest NAME" -> NAME (trimmed), or NULL for any other section. */
static const char *guest_section_name(const char *section, char *out, size_t len) {
  if (!prefix_nocase(section, "guest") || (section[5] != ' ' && section[5] != '\t' &&
                                                       section[5] != '\0'))
    return NULL;
  const char *p = skip_ws(section + 5);
  size_t n = strlen(p);
  while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
  snprintf(out, len, "%.*s", (int)n, p);
  return out;
}

static lr_guest_conf_t *guest_get(parse_ctx_t *ctx, const char *name) {
  lr_config_file_t *f = ctx->file;
  for (size_t i = 0; i < f->nguests; i++)
    if (!strcmp(f->guests[i].name, name)) return &f->guests[i];
  if (f->nguests == LR_MAX_GUESTS) {
    cerr(ctx, ctx->line, "more than %d [guest] sections", LR_MAX_GUESTS);
    return NULL;
  }
  lr_guest_conf_t *g = realloc(f->guests, (f->nguests + 1) * sizeof *g);
  if (!g) {
    cerr(ctx, ctx->line, "out of memory");
    return NULL;
  }
  f->guests = g;
  g = &f->guests[f->nguests++];
  memset(g, 0, sizeof *g);
  snprintf(g->name, sizeof g->name, "%.*s", LR_GUEST_NAME_MAX - 1, name);
  g->line = ctx->line;
  return g;
}

/* A key of a [guest NAME] section: its identity keys are kept as they are,
 * anything else is recorded and replayed over a copy of [lorelay] once the
 * whole file is read (the [lorelay] section may come after it). */
static int guest_key(parse_ctx_t *ctx, const char *gname, const char *name, const char *value) {
  if (!lr_config_guest_name_ok(gname)) {
    cerr(ctx, ctx->line, "[guest %s]: a guest name is 1-%d letters, digits, '.', '_' or '-'",
         gname, LR_GUEST_NAME_MAX - 1);
    return 1;
  }
  lr_guest_conf_t *g = guest_get(ctx, gname);
  if (!g) return 1;
  struct {
    const char *key;
    char *dst;
    size_t len;
  } ids[] = {{"netns", g->netns, sizeof g->netns},
             {"transport", g->transport, sizeof g->transport},
             {"tokenFile", g->token_file, sizeof g->token_file}};
  for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
    if (!lr_streq_nocase(name, ids[i].key)) continue;
    if (!*value || strlen(value) >= ids[i].len) {
      cerr(ctx, ctx->line, "[guest %s] %s: expected 1-%zu characters", gname, ids[i].key,
           ids[i].len - 1);
    } else if (!strcmp(ids[i].key, "netns") && !lr_config_guest_name_ok(value)) {
      cerr(ctx, ctx->line,
           "[guest %s] netns = '%s' is not a namespace name (letters, digits, '.', '_', '-')",
           gname, value);
    } else {
      snprintf(ids[i].dst, ids[i].len, "%s", value);
    }
    return 1;
  }
  lr_guest_override_t *o = realloc(g->overrides, (g->noverrides + 1) * sizeof *o);
  if (!o || g->noverrides >= 256) {
    if (o) g->overrides = o;
    cerr(ctx, ctx->line, "[guest %s]: too many keys", gname);
    return 1;
  }
  g->overrides = o;
  o = &g->overrides[g->noverrides++];
  o->key = strdup(name);
  o->value = strdup(value);
  o->line = ctx->line;
  if (!o->key || !o->value) cerr(ctx, ctx->line, "out of memory");
  return 1;
}

/* A key seen twice in one section is an error naming both lines (last
 * wins would hide which one is in effect). 0: first time. */
static int key_duplicate(parse_ctx_t *ctx, const char *name) {
  if (!ctx->nsections) return 0;
  int sec = (int)ctx->nsections - 1;
  ctx->sections[sec].nkeys++;
  for (size_t i = 0; i < ctx->nkeys; i++)
    if (ctx->keys[i].section == sec && lr_streq_nocase(ctx->keys[i].key, name)) {
      cerr(ctx, ctx->line, "%s is set twice in [%s] (first on line %d)", name,
           ctx->sections[sec].name, ctx->keys[i].line);
      return 1;
    }
  key_seen_t *k = realloc(ctx->keys, (ctx->nkeys + 1) * sizeof *k);
  if (!k) return 0;
  ctx->keys = k;
  k = &ctx->keys[ctx->nkeys++];
  k->section = sec;
  k->line = ctx->line;
  snprintf(k->key, sizeof k->key, "%s", name);
  return 0;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
  parse_ctx_t *ctx = user;
  char gname[128];
  if (!section[0]) {
    cerr(ctx, ctx->line, "key '%s' before any section: put it under [lorelay]", name);
    return 1;
  }
  if (key_duplicate(ctx, name)) return 1;
  if (lr_streq_nocase(section, "lorelay")) return apply_key(ctx, ctx->c, name, value, 0);
  if (guest_section_name(section, gname, sizeof gname)) {
    /* Read by lorelayd; a reader without a guest list (the agent) skips them. */
    return ctx->file ? guest_key(ctx, gname, name, value) : 1;
  }
  return 1; /* an unknown section: said once, at its header */
}

/* A section header: a duplicate or an unknown section is an error at its
 * line; an empty one is found when the next header or the end comes. */
static void section_begin(parse_ctx_t *ctx, const char *line) {
  char raw[140], canon[140], gname[128];
  const char *end = strchr(line + 1, ']');
  if (!end) return; /* inih reports the line */
  snprintf(raw, sizeof raw, "%.*s", (int)(end - line - 1), line + 1);
  if (guest_section_name(raw, gname, sizeof gname))
    snprintf(canon, sizeof canon, "guest %s", gname);
  else if (lr_streq_nocase(raw, "lorelay"))
    snprintf(canon, sizeof canon, "lorelay");
  else {
    snprintf(canon, sizeof canon, "%s", raw);
    cerr(ctx, ctx->line, "unknown section [%s] (lorelay reads [lorelay] and [guest NAME])", raw);
  }
  for (size_t i = 0; i < ctx->nsections; i++)
    if (!strcmp(ctx->sections[i].name, canon)) {
      cerr(ctx, ctx->line, "section [%s] appears twice (first on line %d): merge them", canon,
           ctx->sections[i].line);
      break;
    }
  section_seen_t *s = realloc(ctx->sections, (ctx->nsections + 1) * sizeof *s);
  if (!s) return;
  ctx->sections = s;
  s = &ctx->sections[ctx->nsections++];
  snprintf(s->name, sizeof s->name, "%s", canon);
  s->line = ctx->line;
  s->nkeys = 0;
}

static void sections_check(parse_ctx_t *ctx) {
  /* [lorelay] with every key commented out is the shipped samples' shape
   * (all defaults); an empty [guest NAME] is a guest that cannot start. */
  for (size_t i = 0; i < ctx->nsections; i++)
    if (!ctx->sections[i].nkeys && !strncmp(ctx->sections[i].name, "guest ", 6))
      cerr(ctx, ctx->sections[i].line,
           "section [%s] is empty (a guest needs netns = NAME or transport = ADDRESS)",
           ctx->sections[i].name);
  free(ctx->sections);
  free(ctx->keys);
  ctx->sections = NULL;
  ctx->keys = NULL;
  ctx->nsections = ctx->nkeys = 0;
}

/* Every line passes through here on its way to inih:
 * - leading blanks go, so an indented key is a key (Debian's inih treats
 *   an indented line as the continuation of the previous value, which a
 *   .wslconfig-style file never means);
 * - a line longer than inih's buffer is an error naming its line, instead
 *   of reaching inih cut in two. */
static char *deliver_line(parse_ctx_t *ctx, char *str, size_t n, int complete) {
  ctx->line++;
  if (!complete) {
    cerr(ctx, ctx->line, "line longer than %d characters", INI_MAX_LINE - 2);
    str[0] = '\n';
    str[1] = '\0';
    return str;
  }
  size_t k = 0;
  while (k < n && (str[k] == ' ' || str[k] == '\t')) k++;
  if (k) memmove(str, str + k, n - k + 1);
  if (str[0] == '[') section_begin(ctx, str);
  return str;
}

static char *string_reader(char *str, int num, void *stream) {
  parse_ctx_t *ctx = stream;
  const char *p = ctx->text;
  if (!*p) return NULL;
  size_t len = strcspn(p, "\n");
  size_t adv = len + (p[len] == '\n');
  ctx->text = p + adv;
  if (adv > (size_t)num - 1) return deliver_line(ctx, str, 0, 0);
  memcpy(str, p, adv);
  str[adv] = '\0';
  return deliver_line(ctx, str, adv, 1);
}

static int finish(parse_ctx_t *ctx, int rc) {
  if (rc > 0) {
    /* inih reports the first line it could not parse (no '=' or ']'). */
    cerr(ctx, rc, "not a 'key = value' line or [section] header");
  } else if (rc < 0) {
    cerr(ctx, 0, "could not be parsed (out of memory)");
  }
  sections_check(ctx);
  if (ctx->file && ctx->errors)
    snprintf(ctx->file->first_error, sizeof ctx->file->first_error, "%s", ctx->first_error);
  return ctx->errors ? -1 : 0;
}

int lr_config_parse_string(lr_config_t *c, const char *text, const char *source) {
  parse_ctx_t ctx = {.c = c, .source = source ? source : "config", .text = text};
  return finish(&ctx, ini_parse_stream(string_reader, &ctx, handler, &ctx));
}

/* After the whole file: each guest's effective configuration is [lorelay]
 * with its section's keys replayed on top, checked with the same code and
 * the same line numbers as [lorelay] itself. */
static int finish_guests(parse_ctx_t *ctx, int rc) {
  lr_config_file_t *f = ctx->file;
  for (size_t i = 0; i < f->nguests; i++) {
    lr_guest_conf_t *g = &f->guests[i];
    g->cfg = f->base;
    for (size_t k = 0; k < g->noverrides; k++) {
      ctx->line = g->overrides[k].line;
      if (g->overrides[k].key && g->overrides[k].value)
        apply_key(ctx, &g->cfg, g->overrides[k].key, g->overrides[k].value, 1);
    }
    if (!!g->netns[0] == !!g->transport[0]) {
      cerr(ctx, g->line, "[guest %s] needs exactly one of netns = NAME or transport = ADDRESS",
           g->name);
    } else if (g->transport[0]) {
      /* A typo in an address is refused here, before anything running
       * changes, not when the guest would be started. */
      lr_taddr_t a;
      char err[200];
      if (lr_taddr_parse(g->transport, &a, err, sizeof err) != 0)
        cerr(ctx, g->line, "[guest %s] transport = '%s': %s", g->name, g->transport, err);
    }
    /* hostAddress gives a guest its own IPv4 loopback address; IPv6 has
     * only ::1, which every guest would share, so such a guest gets no
     * IPv6 stand-ins unless its listenAddress is an IPv6 address. */
    if (g->cfg.host_address[0] && !strchr(g->cfg.listen_address, ':')) g->cfg.ipv6 = 0;
  }
  return finish(ctx, rc);
}

int lr_config_file_parse_string(lr_config_file_t *f, const char *text, const char *source) {
  memset(f, 0, sizeof *f);
  lr_config_defaults(&f->base);
  parse_ctx_t ctx = {.c = &f->base, .file = f, .source = source ? source : "config", .text = text};
  return finish_guests(&ctx, ini_parse_stream(string_reader, &ctx, handler, &ctx));
}

/* The file whole, through lr_file_read: a regular file of at most
 * LR_CONFIG_FILE_MAX bytes with no NUL, or an error line (NULL text and 0
 * when it is missing and that is fine). -1 on error. */
static int read_config(const char *path, int missing_ok, char **text, char *first,
                       size_t firstlen) {
  char err[600];
  size_t len;
  int rc = lr_file_read(path, "config", LR_CONFIG_FILE_MAX, text, &len, NULL, err, sizeof err);
  if (rc == UV_ENOENT && missing_ok) return 0;
  if (!rc && memchr(*text, '\0', len)) {
    snprintf(err, sizeof err, "config %s contains a NUL byte: not a text file", path);
    free(*text);
    *text = NULL;
    rc = -1;
  }
  if (rc) {
    LR_ERROR("%s", err);
    if (first) snprintf(first, firstlen, "%.300s", err);
    return -1;
  }
  return 0;
}

int lr_config_file_load(lr_config_file_t *f, const char *path, int missing_ok) {
  memset(f, 0, sizeof *f);
  lr_config_defaults(&f->base);
  char *text = NULL;
  if (read_config(path, missing_ok, &text, f->first_error, sizeof f->first_error) != 0) return -1;
  if (!text) return 0;
  parse_ctx_t ctx = {.c = &f->base, .file = f, .source = path, .text = text};
  int rc = finish_guests(&ctx, ini_parse_stream(string_reader, &ctx, handler, &ctx));
  free(text);
  return rc;
}

const lr_guest_conf_t *lr_config_file_guest(const lr_config_file_t *f, const char *name) {
  for (size_t i = 0; i < f->nguests; i++)
    if (!strcmp(f->guests[i].name, name)) return &f->guests[i];
  return NULL;
}

void lr_config_file_free(lr_config_file_t *f) {
  for (size_t i = 0; i < f->nguests; i++) {
    for (size_t k = 0; k < f->guests[i].noverrides; k++) {
      free(f->guests[i].overrides[k].key);
      free(f->guests[i].overrides[k].value);
    }
    free(f->guests[i].overrides);
  }
  free(f->guests);
  f->guests = NULL;
  f->nguests = 0;
}

int lr_config_load_file(lr_config_t *c, const char *path, int missing_ok) {
  char *text = NULL;
  if (read_config(path, missing_ok, &text, NULL, 0) != 0) return -1;
  if (!text) return 0;
  parse_ctx_t ctx = {.c = c, .source = path, .text = text};
  int rc = finish(&ctx, ini_parse_stream(string_reader, &ctx, handler, &ctx));
  free(text);
  return rc;
}
