/* libFuzzer target: the configuration parser (lr_config_parse_string, on
 * top of Debian's inih) and the port list parser (lr_portset_parse).
 *
 * Each input is read as a whole INI file and as a port list value. Beyond
 * memory safety, the contract of docs/protocol.md is checked: a bad value
 * is an error (so a failed parse logged at least one error line, and a
 * clean one none), every log line is one line, the values that come out
 * are in their documented ranges, and a configuration written back as INI
 * parses to the same values (so nothing the parser accepts is a value it
 * cannot represent). */
#include <string.h>

#include "fuzz_common.h"
#include "lr_config.h"
#include "lr_log.h"

static int g_errors;

static void sink(lr_log_level_t level, const char *line, void *data) {
  (void)data;
  if (level == LR_LOG_ERROR) g_errors++;
  FZ_CHECK(strchr(line, '\n') == NULL && strchr(line, '\r') == NULL);
}

static void check_portset(const lr_portset_t *s) {
  FZ_CHECK(s->n <= LR_PORTSET_MAX_RANGES);
  for (size_t i = 0; i < s->n; i++) {
    FZ_CHECK(s->r[i].lo >= 1 && s->r[i].lo <= s->r[i].hi);
    FZ_CHECK(lr_portset_contains(s, s->r[i].lo) && lr_portset_contains(s, s->r[i].hi));
  }
}

static void format_portset(const lr_portset_t *s, char *out, size_t cap) {
  size_t len = 0;
  out[0] = '\0';
  for (size_t i = 0; i < s->n; i++) {
    int n = s->r[i].lo == s->r[i].hi
                ? snprintf(out + len, cap - len, "%s%u", i ? ", " : "", s->r[i].lo)
                : snprintf(out + len, cap - len, "%s%u-%u", i ? ", " : "", s->r[i].lo,
                           s->r[i].hi);
    FZ_CHECK(n > 0 && (size_t)n < cap - len);
    len += (size_t)n;
  }
}

static int same_portset(const lr_portset_t *a, const lr_portset_t *b) {
  return a->n == b->n && memcmp(a->r, b->r, a->n * sizeof a->r[0]) == 0;
}

static void roundtrip_portset(const lr_portset_t *s) {
  char text[LR_PORTSET_MAX_RANGES * 16], err[160];
  lr_portset_t t;
  format_portset(s, text, sizeof text);
  FZ_CHECK(lr_portset_parse(&t, text, err, sizeof err) == 0);
  FZ_CHECK(same_portset(s, &t));
}

/* inih's line buffer is 200 bytes in its default build; a key line longer
 * than that is reported and skipped, so long port lists are checked on
 * their own instead of through the INI text. */
#define LINE_BUDGET 150

static void roundtrip_config(const lr_config_t *c) {
  char ini[2048], ign[LR_PORTSET_MAX_RANGES * 16], rev[LR_PORTSET_MAX_RANGES * 16];
  format_portset(&c->ignore_ports, ign, sizeof ign);
  format_portset(&c->reverse_ports, rev, sizeof rev);
  int ign_fits = strlen(ign) < LINE_BUDGET, rev_fits = strlen(rev) < LINE_BUDGET;
  int n = snprintf(ini, sizeof ini,
                   "[lorelay]\nlocalhostForwarding = %s\nipv6 = %s\nremapOnConflict = %s\n"
                   "logLevel = %s\nscanIntervalMs = %u\nconflictRetryMs = %u\n"
                   "%s%s%s%s%s%s",
                   c->localhost_forwarding ? "true" : "false", c->ipv6 ? "true" : "false",
                   c->remap_on_conflict ? "true" : "false",
                   lr_log_level_name((lr_log_level_t)c->log_level), c->scan_interval_ms,
                   c->conflict_retry_ms, ign_fits ? "ignorePorts = " : "", ign_fits ? ign : "",
                   ign_fits ? "\n" : "", rev_fits ? "reversePorts = " : "", rev_fits ? rev : "",
                   rev_fits ? "\n" : "");
  FZ_CHECK(n > 0 && (size_t)n < sizeof ini);

  lr_config_t d;
  lr_config_defaults(&d);
  g_errors = 0;
  FZ_CHECK(lr_config_parse_string(&d, ini, "roundtrip.ini") == 0 && g_errors == 0);
  FZ_CHECK(d.localhost_forwarding == c->localhost_forwarding && d.ipv6 == c->ipv6);
  FZ_CHECK(d.remap_on_conflict == c->remap_on_conflict && d.log_level == c->log_level);
  FZ_CHECK(d.scan_interval_ms == c->scan_interval_ms);
  FZ_CHECK(d.conflict_retry_ms == c->conflict_retry_ms);
  if (ign_fits) FZ_CHECK(same_portset(&d.ignore_ports, &c->ignore_ports));
  if (rev_fits) FZ_CHECK(same_portset(&d.reverse_ports, &c->reverse_ports));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int init;
  if (!init) {
    init = 1;
    /* Every message is formatted (and checked by the sink), none printed. */
    lr_log_set_sink(sink, NULL);
    lr_log_set_level(LR_LOG_DEBUG);
  }
  char *text = fz_strdup(data, size);

  lr_config_t c;
  lr_config_defaults(&c);
  g_errors = 0;
  int rc = lr_config_parse_string(&c, text, "fuzz.ini");
  FZ_CHECK(rc == 0 || rc == -1);
  FZ_CHECK(rc == 0 ? g_errors == 0 : g_errors > 0);
  FZ_CHECK(c.localhost_forwarding == 0 || c.localhost_forwarding == 1);
  FZ_CHECK(c.ipv6 == 0 || c.ipv6 == 1);
  FZ_CHECK(c.remap_on_conflict == 0 || c.remap_on_conflict == 1);
  FZ_CHECK(c.log_level >= LR_LOG_ERROR && c.log_level <= LR_LOG_DEBUG);
  FZ_CHECK(c.scan_interval_ms >= 10 && c.scan_interval_ms <= 10000);
  FZ_CHECK(c.conflict_retry_ms >= 100 && c.conflict_retry_ms <= 60000);
  check_portset(&c.ignore_ports);
  check_portset(&c.reverse_ports);
  roundtrip_config(&c);

  lr_portset_t s;
  char err[160];
  err[0] = '\0';
  if (lr_portset_parse(&s, text, err, sizeof err) == 0) {
    check_portset(&s);
    roundtrip_portset(&s);
  } else {
    FZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
  }
  FZ_CHECK(lr_parse_bool(text) >= -1 && lr_parse_bool(text) <= 1);
  free(text);
  return 0;
}
