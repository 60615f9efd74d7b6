/* INI configuration on top of inih; see lr_config.h.
 *
 * inih's handler does not get line numbers from Debian's build of the
 * library, so we feed it through ini_parse_stream with a reader that counts
 * the lines it hands out: the handler runs right after its line was read,
 * so the count is that line's number. */
#include "lr_config.h"

#include <errno.h>
#include <stddef.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

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

typedef struct {
  lr_config_t *c;
  lr_config_file_t *file; /* NULL: [guest NAME] sections are skipped */
  const char *source;
  int line;
  int errors;
  /* string reader state */
  const char *text;
  /* file reader state */
} parse_ctx_t;

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

/* One [lorelay] key into c: from the [lorelay] section, or (in_guest) a
 * [guest NAME] section's override replayed over the guest's copy. */
static int apply_key(parse_ctx_t *ctx, lr_config_t *c, const char *name, const char *value,
                     int in_guest) {
  char err[160];
  int b;
  if (lr_streq_nocase(name, "listenAddress") || lr_streq_nocase(name, "hostAddress")) {
    int host = lr_streq_nocase(name, "hostAddress");
    if (host && !in_guest) {
      LR_WARN("%s:%d: hostAddress belongs in a [guest NAME] section: ignored", ctx->source,
              ctx->line);
      return 1;
    }
    if (*value && lr_config_check_address(value, host, err, sizeof err) != 0) {
      LR_ERROR("%s:%d: %s = '%s': %s", ctx->source, ctx->line, host ? "hostAddress" : "listenAddress",
               value, err);
      ctx->errors++;
      return 1;
    }
    snprintf(host ? c->host_address : c->listen_address, sizeof c->listen_address, "%s", value);
    return 1;
  }
  if (in_guest && (lr_streq_nocase(name, "logLevel") || lr_streq_nocase(name, "maxStatusClients") ||
                   lr_streq_nocase(name, "statusIdleTimeoutMs"))) {
    LR_WARN("%s:%d: %s is daemon-wide: set it in [lorelay] (ignored here)", ctx->source,
            ctx->line, name);
    return 1;
  }
#define BOOL_KEY(key, field)                                                                  \
  if (lr_streq_nocase(name, key)) {                                                                       \
    if ((b = lr_parse_bool(value)) < 0) {                                                     \
      LR_ERROR("%s:%d: %s = '%s' is not a boolean (true/false)", ctx->source,    \
               ctx->line, key, value);                                                          \
      ctx->errors++;                                                                          \
    } else {                                                                                  \
      c->field = b;                                                                           \
    }                                                                                         \
    return 1;                                                                                 \
  }
  BOOL_KEY("localhostForwarding", localhost_forwarding)
  BOOL_KEY("ipv6", ipv6)
  BOOL_KEY("remapOnConflict", remap_on_conflict)
  BOOL_KEY("ebpf", ebpf)
  BOOL_KEY("zeroCopy", zero_copy)
  BOOL_KEY("oneHop", one_hop)
  BOOL_KEY("udp", udp)
#undef BOOL_KEY
  if (lr_streq_nocase(name, "ignorePorts") || lr_streq_nocase(name, "reversePorts") ||
      lr_streq_nocase(name, "forwardPorts")) {
    lr_portset_t *s = lr_streq_nocase(name, "ignorePorts")    ? &c->ignore_ports
                      : lr_streq_nocase(name, "reversePorts") ? &c->reverse_ports
                                                              : &c->forward_ports;
    if (lr_portset_parse(s, value, err, sizeof err)) {
      LR_ERROR("%s:%d: %s: %s", ctx->source, ctx->line, name, err);
      s->n = 0;
      ctx->errors++;
    }
    return 1;
  }
  if (lr_streq_nocase(name, "logLevel")) {
    int lvl = lr_log_level_parse(value);
    if (lvl < 0) {
      LR_ERROR("%s:%d: logLevel = '%s' is not one of error, warn, info, debug",
               ctx->source, ctx->line, value);
      ctx->errors++;
    } else {
      c->log_level = lvl;
    }
    return 1;
  }
  static const struct {
    const char *key, *what;
    size_t off;
    unsigned lo, hi;
  } numbers[] = {
      {"scanIntervalMs", "milliseconds", offsetof(lr_config_t, scan_interval_ms), 10, 10000},
      {"ebpfScanIntervalMs", "milliseconds", offsetof(lr_config_t, ebpf_scan_interval_ms), 100,
       600000},
      {"conflictRetryMs", "milliseconds", offsetof(lr_config_t, conflict_retry_ms), 100, 60000},
      {"conflictGraceSeconds", "seconds", offsetof(lr_config_t, conflict_grace_s), 0, 3600},
      {"maxStandins", "sockets", offsetof(lr_config_t, max_standins), 1, 131072},
      {"maxConnections", "connections", offsetof(lr_config_t, max_connections), 1, 1000000},
      {"maxConnectionsPerPort", "connections", offsetof(lr_config_t, max_connections_per_port), 1,
       1000000},
      {"maxPendingReverse", "connections", offsetof(lr_config_t, max_pending_reverse), 1, 65536},
      {"udpIdleTimeout", "seconds", offsetof(lr_config_t, udp_idle_timeout_s), 1, 86400},
      {"udpScanIntervalMs", "milliseconds", offsetof(lr_config_t, udp_scan_interval_ms), 10,
       10000},
      {"maxUdpFlows", "flows", offsetof(lr_config_t, max_udp_flows), 1, 1000000},
      {"maxUdpFlowsPerPort", "flows", offsetof(lr_config_t, max_udp_flows_per_port), 1, 1000000},
      {"controlQueueBytes", "bytes", offsetof(lr_config_t, control_queue_bytes), 65536,
       1024u * 1024 * 1024},
      {"maxStatusClients", "clients", offsetof(lr_config_t, max_status_clients), 1, 4096},
      {"statusIdleTimeoutMs", "milliseconds", offsetof(lr_config_t, status_idle_timeout_ms), 100,
       600000},
      {"zeroCopyAfter", "bytes", offsetof(lr_config_t, zero_copy_after), 0, 1024u * 1024 * 1024},
  };
  for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
    unsigned v;
    if (!lr_streq_nocase(name, numbers[i].key)) continue;
    if (parse_uint_range(value, numbers[i].lo, numbers[i].hi, &v)) {
      LR_ERROR("%s:%d: %s = '%s' is not a number of %s in %u..%u", ctx->source, ctx->line,
               numbers[i].key, value, numbers[i].what, numbers[i].lo, numbers[i].hi);
      ctx->errors++;
    } else {
      *(unsigned *)(void *)((char *)c + numbers[i].off) = v;
    }
    return 1;
  }
  LR_WARN("%s:%d: unknown key '%s' ignored", ctx->source, ctx->line, name);
  return 1;
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
    LR_ERROR("%s:%d: more than %d [guest] sections", ctx->source, ctx->line, LR_MAX_GUESTS);
    ctx->errors++;
    return NULL;
  }
  lr_guest_conf_t *g = realloc(f->guests, (f->nguests + 1) * sizeof *g);
  if (!g) {
    ctx->errors++;
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
    LR_ERROR("%s:%d: [guest %s]: a guest name is 1-%d letters, digits, '.', '_' or '-'",
             ctx->source, ctx->line, gname, LR_GUEST_NAME_MAX - 1);
    ctx->errors++;
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
      LR_ERROR("%s:%d: [guest %s] %s: expected 1-%zu characters", ctx->source, ctx->line,
               gname, ids[i].key, ids[i].len - 1);
      ctx->errors++;
    } else if (!strcmp(ids[i].key, "netns") && !lr_config_guest_name_ok(value)) {
      LR_ERROR("%s:%d: [guest %s] netns = '%s' is not a namespace name (letters, digits, "
               "'.', '_', '-')",
               ctx->source, ctx->line, gname, value);
      ctx->errors++;
    } else {
      snprintf(ids[i].dst, ids[i].len, "%s", value);
    }
    return 1;
  }
  lr_guest_override_t *o = realloc(g->overrides, (g->noverrides + 1) * sizeof *o);
  if (!o || g->noverrides >= 256) {
    if (o) g->overrides = o;
    LR_ERROR("%s:%d: [guest %s]: too many keys", ctx->source, ctx->line, gname);
    ctx->errors++;
    return 1;
  }
  g->overrides = o;
  o = &g->overrides[g->noverrides++];
  o->key = strdup(name);
  o->value = strdup(value);
  o->line = ctx->line;
  if (!o->key || !o->value) ctx->errors++;
  return 1;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
  parse_ctx_t *ctx = user;
  char gname[128];
  if (lr_streq_nocase(section, "lorelay")) return apply_key(ctx, ctx->c, name, value, 0);
  if (guest_section_name(section, gname, sizeof gname)) {
    /* Read by lorelayd; a reader without a guest list (the agent) skips them. */
    return ctx->file ? guest_key(ctx, gname, name, value) : 1;
  }
  LR_WARN("%s:%d: key '%s' in section [%s] ignored (lorelay reads [lorelay] and "
          "[guest NAME])",
          ctx->source, ctx->line, name, section);
  return 1;
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
    LR_ERROR("%s:%d: line longer than %d characters: ignored", ctx->source,
             ctx->line, INI_MAX_LINE - 2);
    ctx->errors++;
    str[0] = '\n';
    str[1] = '\0';
    return str;
  }
  size_t k = 0;
  while (k < n && (str[k] == ' ' || str[k] == '\t')) k++;
  if (k) memmove(str, str + k, n - k + 1);
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
    LR_ERROR("%s:%d: not a 'key = value' line or [section] header", ctx->source, rc);
    ctx->errors++;
  } else if (rc < 0) {
    LR_ERROR("%s: could not be parsed (out of memory)", ctx->source);
    ctx->errors++;
  }
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
      LR_ERROR("%s:%d: [guest %s] needs exactly one of netns = NAME or transport = ADDRESS",
               ctx->source, g->line, g->name);
      ctx->errors++;
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
static int read_config(const char *path, int missing_ok, char **text) {
  char err[600];
  size_t len;
  int rc = lr_file_read(path, "config", LR_CONFIG_FILE_MAX, text, &len, NULL, err, sizeof err);
  if (rc == UV_ENOENT && missing_ok) return 0;
  if (rc) {
    LR_ERROR("%s", err);
    return -1;
  }
  if (memchr(*text, '\0', len)) {
    LR_ERROR("config %s contains a NUL byte: not a text file", path);
    free(*text);
    *text = NULL;
    return -1;
  }
  return 0;
}

int lr_config_file_load(lr_config_file_t *f, const char *path, int missing_ok) {
  memset(f, 0, sizeof *f);
  lr_config_defaults(&f->base);
  char *text = NULL;
  if (read_config(path, missing_ok, &text) != 0) return -1;
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
  if (read_config(path, missing_ok, &text) != 0) return -1;
  if (!text) return 0;
  parse_ctx_t ctx = {.c = c, .source = path, .text = text};
  int rc = finish(&ctx, ini_parse_stream(string_reader, &ctx, handler, &ctx));
  free(text);
  return rc;
}
