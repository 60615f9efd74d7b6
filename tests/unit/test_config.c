/* Unit tests for the INI configuration (lr_config) and its value parsers.
 *
 * Besides values, the messages are part of the contract: a bad value, an
 * unknown key (with "did you mean" for a near miss), a duplicate key or
 * section and an empty [guest] section are errors naming the line
 * (docs/protocol.md, configuration). Log lines are captured through lr_log_set_sink and
 * checked for "SOURCE:LINE" and the key. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <unistd.h>

#include "lr_config.h"
#include "lr_file.h"
#include "lr_log.h"
#include "lr_sbuf.h"

/* ---- log capture ------------------------------------------------------- */

#define MAX_LINES 32
typedef struct {
  int n;
  lr_log_level_t level[MAX_LINES];
  char line[MAX_LINES][512];
} captured_t;

static captured_t cap;

static void sink(lr_log_level_t level, const char *line, void *data) {
  captured_t *c = data;
  if (c->n >= MAX_LINES) return;
  c->level[c->n] = level;
  snprintf(c->line[c->n], sizeof c->line[0], "%s", line);
  c->n++;
}

static int setup(void **state) {
  (void)state;
  memset(&cap, 0, sizeof cap);
  lr_log_set_level(LR_LOG_INFO);
  lr_log_set_sink(sink, &cap);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  lr_log_set_sink(NULL, NULL);
  return 0;
}

/* Asserts exactly one line at `level` mentions all of the needles. */
static void expect_logged(lr_log_level_t level, const char *n1, const char *n2, const char *n3) {
  int found = 0;
  for (int i = 0; i < cap.n; i++) {
    if (cap.level[i] != level) continue;
    if (n1 && !strstr(cap.line[i], n1)) continue;
    if (n2 && !strstr(cap.line[i], n2)) continue;
    if (n3 && !strstr(cap.line[i], n3)) continue;
    found++;
  }
  if (found != 1) {
    for (int i = 0; i < cap.n; i++) print_message("  logged[%d] %d: %s\n", i, cap.level[i], cap.line[i]);
    fail_msg("expected one level-%d line with '%s' '%s' '%s', found %d", level, n1 ? n1 : "",
             n2 ? n2 : "", n3 ? n3 : "", found);
  }
}

static int count_level(lr_log_level_t level) {
  int k = 0;
  for (int i = 0; i < cap.n; i++) k += cap.level[i] == level;
  return k;
}

/* ---- defaults and keys ------------------------------------------------- */

static void test_defaults(void **state) {
  (void)state;
  lr_config_t c;
  memset(&c, 0x5A, sizeof c);
  lr_config_defaults(&c);
  assert_int_equal(c.localhost_forwarding, 1);
  assert_int_equal(c.ipv6, 1);
  assert_int_equal(c.remap_on_conflict, 0);
  assert_int_equal(c.log_level, LR_LOG_INFO);
  assert_int_equal(c.scan_interval_ms, 100);
  assert_int_equal(c.ebpf, 1);
  assert_int_equal(c.ebpf_scan_interval_ms, 2000);
  assert_int_equal(c.conflict_retry_ms, 1000);
  assert_int_equal(c.ignore_ports.n, 0);
  assert_int_equal(c.reverse_ports.n, 0);
  /* an empty document and a document of only comments change nothing */
  lr_config_t d;
  lr_config_defaults(&d);
  assert_int_equal(lr_config_parse_string(&d, "", "empty.ini"), 0);
  assert_memory_equal(&c, &d, sizeof c);
  assert_int_equal(lr_config_parse_string(&d, "; c\n# c\n\n[lorelay]\n; nothing\n", "x"), 0);
  assert_memory_equal(&c, &d, sizeof c);
  assert_int_equal(cap.n, 0);
}

static void test_every_key(void **state) {
  (void)state;
  const char *text =
      "[lorelay]\n"
      "localhostForwarding=false\n"
      "ipv6=false\n"
      "ignorePorts=22,5000-5010\n"
      "reversePorts=5432, 6379\n"
      "remapOnConflict=true\n"
      "logLevel=debug\n"
      "scanIntervalMs=25\n"
      "ebpf=false\n"
      "ebpfScanIntervalMs=5000\n"
      "conflictRetryMs=250\n";
  lr_config_t c;
  lr_config_defaults(&c);
  assert_int_equal(lr_config_parse_string(&c, text, "all.ini"), 0);
  assert_int_equal(c.localhost_forwarding, 0);
  assert_int_equal(c.ipv6, 0);
  assert_int_equal(c.ignore_ports.n, 2);
  assert_true(lr_portset_contains(&c.ignore_ports, 22));
  assert_true(lr_portset_contains(&c.ignore_ports, 5000));
  assert_true(lr_portset_contains(&c.ignore_ports, 5010));
  assert_false(lr_portset_contains(&c.ignore_ports, 5011));
  assert_int_equal(c.reverse_ports.n, 2);
  assert_true(lr_portset_contains(&c.reverse_ports, 5432));
  assert_true(lr_portset_contains(&c.reverse_ports, 6379));
  assert_false(lr_portset_contains(&c.reverse_ports, 22));
  assert_int_equal(c.remap_on_conflict, 1);
  assert_int_equal(c.log_level, LR_LOG_DEBUG);
  assert_int_equal(c.scan_interval_ms, 25);
  assert_int_equal(c.ebpf, 0);
  assert_int_equal(c.ebpf_scan_interval_ms, 5000);
  assert_int_equal(c.conflict_retry_ms, 250);
  assert_int_equal(cap.n, 0);
}

static void test_bool_spellings(void **state) {
  (void)state;
  const char *yes[] = {"true", "TRUE", "True", "yes", "YES", "on", "On", "1"};
  const char *no[] = {"false", "FALSE", "False", "no", "No", "off", "OFF", "0"};
  const char *bad[] = {"", "flase", "2", "-1", "tru", "truee", "y", "n", "yes please", "0x1", "10"};
  for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) assert_int_equal(lr_parse_bool(yes[i]), 1);
  for (size_t i = 0; i < sizeof no / sizeof *no; i++) assert_int_equal(lr_parse_bool(no[i]), 0);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    if (lr_parse_bool(bad[i]) != -1) fail_msg("'%s' accepted as a boolean", bad[i]);

  /* and through the file, for each boolean key */
  const char *keys[] = {"localhostForwarding", "ipv6", "remapOnConflict"};
  for (size_t k = 0; k < 3; k++) {
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
      char text[128];
      lr_config_t c;
      lr_config_defaults(&c);
      snprintf(text, sizeof text, "[lorelay]\n%s = %s\n", keys[k], no[i]);
      assert_int_equal(lr_config_parse_string(&c, text, "b.ini"), 0);
      int *field = k == 0 ? &c.localhost_forwarding : k == 1 ? &c.ipv6 : &c.remap_on_conflict;
      assert_int_equal(*field, 0);
      snprintf(text, sizeof text, "[lorelay]\n%s = %s\n", keys[k], yes[i]);
      assert_int_equal(lr_config_parse_string(&c, text, "b.ini"), 0);
      assert_int_equal(*field, 1);
    }
  }
  assert_int_equal(cap.n, 0);
}

static void test_bad_bool_names_key_and_line(void **state) {
  (void)state;
  lr_config_t c;
  lr_config_defaults(&c);
  const char *text =
      "# my config\n"
      "[lorelay]\n"
      "localhostForwarding = true\n"
      "ipv6 = flase\n"
      "remapOnConflict = yes\n";
  assert_int_equal(lr_config_parse_string(&c, text, "my.ini"), -1);
  expect_logged(LR_LOG_ERROR, "my.ini:4", "ipv6", "flase");
  assert_int_equal(count_level(LR_LOG_ERROR), 1);
  /* the bad key keeps its default, the good keys around it still apply */
  assert_int_equal(c.ipv6, 1);
  assert_int_equal(c.remap_on_conflict, 1);
}

static void test_unknown_key_is_error(void **state) {
  (void)state;
  lr_config_t c;
  lr_config_defaults(&c);
  const char *text =
      "[lorelay]\n"
      "\n"
      "fancyNewOption = 7\n"
      "ipv6 = off\n"
      "reversePort = 5432\n"
      "IGNOREPORT = 22\n";
  assert_int_equal(lr_config_parse_string(&c, text, "new.ini"), -1);
  expect_logged(LR_LOG_ERROR, "new.ini:3:", "unknown key 'fancyNewOption'", NULL);
  expect_logged(LR_LOG_ERROR, "new.ini:5:", "unknown key 'reversePort'",
                "did you mean `reversePorts`?");
  expect_logged(LR_LOG_ERROR, "new.ini:6:", "did you mean `ignorePorts`?", NULL);
  assert_int_equal(count_level(LR_LOG_WARN), 0);
  assert_null(lr_config_suggest("fancyNewOption"));
  assert_string_equal(lr_config_suggest("remapOnConflct"), "remapOnConflict");
  assert_string_equal(lr_config_suggest("portmap"), "portMap");
}

/* Other sections are errors: a key there would silently do nothing. */
static void test_other_sections(void **state) {
  (void)state;
  lr_config_t c;
  lr_config_defaults(&c);
  const char *text =
      "[wsl2]\n"
      "ipv6 = false\n"
      "[lorelay]\n"
      "logLevel = warn\n";
  assert_int_equal(lr_config_parse_string(&c, text, "wsl.ini"), -1);
  expect_logged(LR_LOG_ERROR, "wsl.ini:1:", "unknown section [wsl2]", NULL);
  assert_int_equal(c.ipv6, 1);
  /* a key before any section */
  cap.n = 0;
  assert_int_equal(lr_config_parse_string(&c, "ipv6 = false\n", "top.ini"), -1);
  expect_logged(LR_LOG_ERROR, "top.ini:1:", "before any section", NULL);
}

/* Duplicates: a key twice in a section, a section twice, an empty guest. */
static void test_duplicates_and_empty(void **state) {
  (void)state;
  lr_config_file_t f;
  const char *text =
      "[lorelay]\n"
      "ipv6 = false\n"
      "IPv6 = true\n"           /* 3: the same key (keys are case-insensitive) */
      "[guest a]\n"
      "netns = a\n"
      "netns = b\n"             /* 6 */
      "[guest x]\n"             /* 7: empty */
      "[guest a]\n"             /* 8: twice */
      "ignorePorts = 22\n"
      "[lorelay]\n"             /* 10: twice */
      "udp = false\n";
  assert_int_equal(lr_config_file_parse_string(&f, text, "d.ini"), -1);
  expect_logged(LR_LOG_ERROR, "d.ini:3:", "IPv6 is set twice in [lorelay]", "line 2");
  expect_logged(LR_LOG_ERROR, "d.ini:6:", "netns is set twice in [guest a]", "line 5");
  expect_logged(LR_LOG_ERROR, "d.ini:7:", "section [guest x] is empty", NULL);
  expect_logged(LR_LOG_ERROR, "d.ini:8:", "section [guest a] appears twice", "line 4");
  expect_logged(LR_LOG_ERROR, "d.ini:10:", "section [lorelay] appears twice", "line 1");
  /* the first error is kept for status (config.last_reload.error) */
  assert_non_null(strstr(f.first_error, "d.ini:3:"));
  lr_config_file_free(&f);
}

/* A transport is checked when the file is read, not when the guest starts. */
static void test_guest_transport_checked(void **state) {
  (void)state;
  lr_config_file_t f;
  assert_int_equal(lr_config_file_parse_string(&f, "[guest v]\ntransport = vsokc:3:5\n", "t.ini"),
                   -1);
  expect_logged(LR_LOG_ERROR, "t.ini:2:", "[guest v] transport = 'vsokc:3:5'", NULL);
  lr_config_file_free(&f);
}

/* Keys that are one value per process are refused in a guest section. */
static void test_guest_scope(void **state) {
  (void)state;
  lr_config_file_t f;
  const char *text =
      "[guest g]\n"
      "netns = g\n"
      "zeroCopy = false\n"       /* 3 */
      "zeroCopyAfter = 0\n"      /* 4 */
      "scanIntervalMs = 50\n"    /* 5 */
      "oneHop = false\n"         /* per guest: fine */
      "portMap = 80:8080\n";     /* per guest: fine */
  assert_int_equal(lr_config_file_parse_string(&f, text, "s.ini"), -1);
  expect_logged(LR_LOG_ERROR, "s.ini:3:", "zeroCopy cannot be set in a [guest NAME]", NULL);
  expect_logged(LR_LOG_ERROR, "s.ini:4:", "zeroCopyAfter cannot be set", NULL);
  expect_logged(LR_LOG_ERROR, "s.ini:5:", "scanIntervalMs cannot be set", "lorelay-agent");
  assert_int_equal(count_level(LR_LOG_ERROR), 3);
  lr_config_file_free(&f);
}

static void test_portmap(void **state) {
  (void)state;
  lr_portmap_t m;
  char err[160], out[200];
  assert_int_equal(lr_portmap_parse(&m, "80:8080, 5432 : 15432", err, sizeof err), 0);
  assert_int_equal(m.n, 2);
  assert_int_equal(lr_portmap_host(&m, 80), 8080);
  assert_int_equal(lr_portmap_host(&m, 5432), 15432);
  assert_int_equal(lr_portmap_host(&m, 81), 81);
  assert_true(lr_portmap_has(&m, 80));
  assert_false(lr_portmap_has(&m, 8080));
  assert_string_equal(lr_portmap_format(&m, out, sizeof out), "80:8080, 5432:15432");
  assert_int_equal(lr_portmap_parse(&m, "", err, sizeof err), 0);
  assert_int_equal(m.n, 0);
  assert_int_equal(lr_portmap_parse(&m, "80", err, sizeof err), -1);
  assert_non_null(strstr(err, "GUEST:HOST"));
  assert_int_equal(lr_portmap_parse(&m, "80:0", err, sizeof err), -1);
  assert_int_equal(lr_portmap_parse(&m, "80:8080,80:8081", err, sizeof err), -1);
  assert_non_null(strstr(err, "mapped twice"));
  assert_int_equal(lr_portmap_parse(&m, "80:8080,81:8080", err, sizeof err), -1);
  lr_config_t c;
  lr_config_defaults(&c);
  assert_int_equal(lr_config_parse_string(&c, "[lorelay]\nportMap = 80:8080\n", "p.ini"), 0);
  assert_int_equal(lr_portmap_host(&c.port_map, 80), 8080);
  assert_int_equal(lr_config_parse_string(&c, "[lorelay]\nportMap = 80-81:8080\n", "p.ini"), -1);
  expect_logged(LR_LOG_ERROR, "p.ini:2:", "portMap", NULL);
}

static void test_whitespace_and_comments(void **state) {
  (void)state;
  lr_config_t c;
  lr_config_defaults(&c);
  const char *text =
      "; leading comment\n"
      "   \n"
      "[lorelay]\n"
      "# hash comment\n"
      "ipv6=false   \n"
      "localhostForwarding   =    no\n"
      "ignorePorts =  22 ,  80 - 81 ,443  \n"
      "logLevel = error ; inline comment\n"
      "\t\n";
  assert_int_equal(lr_config_parse_string(&c, text, "ws.ini"), 0);
  assert_int_equal(c.ipv6, 0);
  assert_int_equal(c.localhost_forwarding, 0);
  assert_int_equal(c.ignore_ports.n, 3);
  assert_true(lr_portset_contains(&c.ignore_ports, 81));
  assert_true(lr_portset_contains(&c.ignore_ports, 443));
  assert_false(lr_portset_contains(&c.ignore_ports, 82));
  assert_int_equal(c.log_level, LR_LOG_ERROR);
  assert_int_equal(cap.n, 0);
}

/* Windows editors write CRLF; the config ships as a sample in the zip. */
static void test_crlf(void **state) {
  (void)state;
  lr_config_t c;
  lr_config_defaults(&c);
  const char *text = "[lorelay]\r\nipv6 = false\r\nignorePorts = 22\r\n";
  assert_int_equal(lr_config_parse_string(&c, text, "crlf.ini"), 0);
  assert_int_equal(c.ipv6, 0);
  assert_true(lr_portset_contains(&c.ignore_ports, 22));
}

/* Keys indented under their section (a common hand-written style). */
static void test_indented_keys(void **state) {
  (void)state;
  lr_config_t c;
  lr_config_defaults(&c);
  const char *text =
      "[lorelay]\n"
      "  localhostForwarding = true\n"
      "  ipv6 = false\n"
      "  remapOnConflict = true\n";
  int rc = lr_config_parse_string(&c, text, "indent.ini");
  for (int i = 0; i < cap.n; i++) print_message("  logged: %s\n", cap.line[i]);
  assert_int_equal(rc, 0);
  assert_int_equal(c.ipv6, 0);
  assert_int_equal(c.remap_on_conflict, 1);
}

/* A port list longer than inih's line buffer (200 bytes in Debian's build)
 * must either be read whole or be refused with an error naming its line;
 * silently using the first 199 bytes of it is the one wrong answer. */
static void test_long_line(void **state) {
  (void)state;
  lr_config_t c;
  lr_config_defaults(&c);
  char text[2048];
  size_t n = (size_t)snprintf(text, sizeof text, "[lorelay]\nignorePorts = ");
  for (int i = 0; i < 50; i++)
    n += (size_t)snprintf(text + n, sizeof text - n, "%s%d-%d", i ? ", " : "", 10000 + i * 10,
                          10000 + i * 10 + 5);
  n += (size_t)snprintf(text + n, sizeof text - n, "\nipv6 = false\n");
  assert_true(n < sizeof text);
  int rc = lr_config_parse_string(&c, text, "long.ini");
  for (int i = 0; i < cap.n; i++) print_message("  logged: %s\n", cap.line[i]);
  if (rc == 0) {
    assert_int_equal(c.ignore_ports.n, 50);
    assert_true(lr_portset_contains(&c.ignore_ports, 10495));
    assert_int_equal(c.ipv6, 0);
  } else {
    assert_int_equal(rc, -1);
    expect_logged(LR_LOG_ERROR, "long.ini:2", NULL, NULL);
    /* nothing from the cut line may be in effect */
    assert_int_equal(c.ignore_ports.n, 0);
  }
}

static void test_not_ini(void **state) {
  (void)state;
  lr_config_t c;
  lr_config_defaults(&c);
  const char *text = "[lorelay]\nipv6 = false\nthis line has no equals sign\n";
  assert_int_equal(lr_config_parse_string(&c, text, "junk.ini"), -1);
  expect_logged(LR_LOG_ERROR, "junk.ini:3", NULL, NULL);
}

/* ---- port lists -------------------------------------------------------- */

static void test_portset_good(void **state) {
  (void)state;
  lr_portset_t s;
  char err[128];
  assert_int_equal(lr_portset_parse(&s, "", err, sizeof err), 0);
  assert_int_equal(s.n, 0);
  assert_false(lr_portset_contains(&s, 1));
  assert_int_equal(lr_portset_parse(&s, "  ", err, sizeof err), 0);
  assert_int_equal(s.n, 0);
  assert_int_equal(lr_portset_parse(&s, "1", err, sizeof err), 0);
  assert_int_equal(s.n, 1);
  assert_true(lr_portset_contains(&s, 1));
  assert_false(lr_portset_contains(&s, 0));
  assert_false(lr_portset_contains(&s, 2));
  assert_int_equal(lr_portset_parse(&s, "65535,1-3,7-7", err, sizeof err), 0);
  assert_int_equal(s.n, 3);
  assert_true(lr_portset_contains(&s, 65535));
  assert_true(lr_portset_contains(&s, 2));
  assert_true(lr_portset_contains(&s, 7));
  assert_false(lr_portset_contains(&s, 4));
  assert_false(lr_portset_contains(&s, 8));
  assert_int_equal(lr_portset_parse(&s, "1-65535", err, sizeof err), 0);
  for (unsigned p = 1; p <= 65535; p += 4093) assert_true(lr_portset_contains(&s, (uint16_t)p));

  /* exactly LR_PORTSET_MAX_RANGES entries is fine, one more is not */
  char text[1024];
  size_t n = 0;
  for (int i = 0; i < LR_PORTSET_MAX_RANGES; i++)
    n += (size_t)snprintf(text + n, sizeof text - n, "%s%d", i ? "," : "", 100 + i);
  assert_int_equal(lr_portset_parse(&s, text, err, sizeof err), 0);
  assert_int_equal(s.n, LR_PORTSET_MAX_RANGES);
  snprintf(text + n, sizeof text - n, ",999");
  err[0] = 0;
  assert_int_equal(lr_portset_parse(&s, text, err, sizeof err), -1);
  assert_true(strlen(err) > 0);
}

static void test_portset_bad(void **state) {
  (void)state;
  const char *bad[] = {"0",       "70000", "65536", "10-5",  "abc",   "22,abc", "-5",
                       "5-",      "1-2-3", ",",     "22,",   ",22",   "1,,2",   "22 80",
                       "0-10",    "10-0",  "22x",   "+22",   "1-70000", "99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    lr_portset_t s;
    char err[128] = "";
    if (lr_portset_parse(&s, bad[i], err, sizeof err) != -1)
      fail_msg("port list '%s' accepted", bad[i]);
    if (strlen(err) == 0) fail_msg("port list '%s' rejected without a reason", bad[i]);
  }
  /* the reason quotes the offending piece */
  lr_portset_t s;
  char err[128] = "";
  assert_int_equal(lr_portset_parse(&s, "22, 8o80", err, sizeof err), -1);
  assert_non_null(strstr(err, "8o80"));
  assert_int_equal(lr_portset_parse(&s, "10-5", err, sizeof err), -1);
  assert_non_null(strstr(err, "10-5"));
}

static void test_bad_ports_in_file(void **state) {
  (void)state;
  lr_config_t c;
  lr_config_defaults(&c);
  const char *text = "[lorelay]\nignorePorts = 22, 70000\nreversePorts = 10-5\n";
  assert_int_equal(lr_config_parse_string(&c, text, "p.ini"), -1);
  expect_logged(LR_LOG_ERROR, "p.ini:2", "ignorePorts", "70000");
  expect_logged(LR_LOG_ERROR, "p.ini:3", "reversePorts", NULL);
  /* nothing half-applied: a list with one bad item is not used at all */
  assert_false(lr_portset_contains(&c.ignore_ports, 22));
  assert_int_equal(c.reverse_ports.n, 0);
}

/* ---- numbers and levels ------------------------------------------------ */

static void test_numbers_and_levels(void **state) {
  (void)state;
  const struct {
    const char *text;
    int ok;
  } cases[] = {
      {"scanIntervalMs = 10", 1},   {"scanIntervalMs = 10000", 1}, {"scanIntervalMs = 9", 0},
      {"scanIntervalMs = 10001", 0}, {"scanIntervalMs = -100", 0}, {"scanIntervalMs = 1e3", 0},
      {"scanIntervalMs = ", 0},      {"conflictRetryMs = 100", 1}, {"conflictRetryMs = 60000", 1},
      {"conflictRetryMs = 99", 0},   {"conflictRetryMs = 60001", 0},
      {"conflictRetryMs = 4294967396", 0}, /* wraps to 100 in 32 bits */
      {"ebpfScanIntervalMs = 100", 1}, {"ebpfScanIntervalMs = 600000", 1},
      {"ebpfScanIntervalMs = 99", 0},  {"ebpfScanIntervalMs = 600001", 0},
      {"ebpf = off", 1},               {"ebpf = maybe", 0},
      {"logLevel = error", 1},       {"logLevel = WARNING", 1},   {"logLevel = Info", 1},
      {"logLevel = debug", 1},       {"logLevel = trace", 0},     {"logLevel = 3", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char text[128];
    lr_config_t c, d;
    lr_config_defaults(&c);
    lr_config_defaults(&d);
    cap.n = 0;
    snprintf(text, sizeof text, "[lorelay]\n%s\n", cases[i].text);
    int rc = lr_config_parse_string(&c, text, "n.ini");
    if (cases[i].ok) {
      if (rc != 0) fail_msg("'%s' rejected", cases[i].text);
    } else {
      if (rc != -1) fail_msg("'%s' accepted", cases[i].text);
      expect_logged(LR_LOG_ERROR, "n.ini:2", NULL, NULL);
      /* the value keeps its default */
      assert_memory_equal(&c, &d, sizeof c);
    }
  }
  lr_config_t c;
  lr_config_defaults(&c);
  assert_int_equal(lr_config_parse_string(&c, "[lorelay]\nlogLevel=WARNING\n", "x"), 0);
  assert_int_equal(c.log_level, LR_LOG_WARN);
  assert_int_equal(lr_config_parse_string(&c, "[lorelay]\nscanIntervalMs=10000\n", "x"), 0);
  assert_int_equal(c.scan_interval_ms, 10000);
}

/* Key names are matched case-insensitively, as Windows users expect of an
 * INI file (.wslconfig is case-insensitive too). */
static void test_key_case(void **state) {
  (void)state;
  lr_config_t c;
  lr_config_defaults(&c);
  assert_int_equal(lr_config_parse_string(&c, "[LoRelay]\nIPV6=false\nLOCALHOSTFORWARDING=no\n", "x"), 0);
  assert_int_equal(c.ipv6, 0);
  assert_int_equal(c.localhost_forwarding, 0);
}

/* ---- files ------------------------------------------------------------- */

static const char *tmp_path = "lorelay_test_config.ini";

static void test_load_file(void **state) {
  (void)state;
  FILE *f = fopen(tmp_path, "wb");
  assert_non_null(f);
  fputs("[lorelay]\nipv6 = false\nignorePorts = 3000-3002\nbogus = 1\n", f);
  fclose(f);
  lr_config_t c;
  lr_config_defaults(&c);
  assert_int_equal(lr_config_load_file(&c, tmp_path, 0), -1);
  assert_int_equal(c.ipv6, 0);
  assert_true(lr_portset_contains(&c.ignore_ports, 3001));
  /* messages name the file */
  char where[64];
  snprintf(where, sizeof where, "%s:4", tmp_path);
  expect_logged(LR_LOG_ERROR, where, "bogus", NULL);

  f = fopen(tmp_path, "wb");
  assert_non_null(f);
  fputs("[lorelay]\n\nremapOnConflict = maybe\n", f);
  fclose(f);
  cap.n = 0;
  lr_config_defaults(&c);
  assert_int_equal(lr_config_load_file(&c, tmp_path, 1), -1);
  snprintf(where, sizeof where, "%s:3", tmp_path);
  expect_logged(LR_LOG_ERROR, where, "remapOnConflict", NULL);

  /* the file reader has its own line splitting: an over-long line there
   * is refused too, naming its line, and the lines after it still count */
  f = fopen(tmp_path, "wb");
  assert_non_null(f);
  fputs("[lorelay]\nignorePorts = 1", f);
  for (int i = 0; i < 60; i++) fputs(",2-3", f); /* 255 bytes, 61 ranges */
  fputs("\nipv6 = false\nbogus2 = 1\n", f);
  fclose(f);
  cap.n = 0;
  lr_config_defaults(&c);
  int rc = lr_config_load_file(&c, tmp_path, 0);
  assert_int_equal(rc, -1); /* bogus2 */
  if (count_level(LR_LOG_ERROR) == 1) {
    assert_true(lr_portset_contains(&c.ignore_ports, 2));
  } else {
    snprintf(where, sizeof where, "%s:2", tmp_path);
    expect_logged(LR_LOG_ERROR, where, NULL, NULL);
    assert_int_equal(c.ignore_ports.n, 0);
  }
  assert_int_equal(c.ipv6, 0);
  snprintf(where, sizeof where, "%s:4", tmp_path);
  expect_logged(LR_LOG_ERROR, where, "bogus2", NULL);
  remove(tmp_path);
}

static void test_missing_file(void **state) {
  (void)state;
  const char *path = "lorelay_no_such_dir/none.ini";
  lr_config_t c, d;
  lr_config_defaults(&c);
  lr_config_defaults(&d);
  assert_int_equal(lr_config_load_file(&c, path, 1), 0);
  assert_memory_equal(&c, &d, sizeof c);
  assert_int_equal(count_level(LR_LOG_ERROR), 0);
  assert_int_equal(lr_config_load_file(&c, path, 0), -1);
  expect_logged(LR_LOG_ERROR, path, NULL, NULL);
  assert_memory_equal(&c, &d, sizeof c);
}

/* Files that are not what a config is: a FIFO with no writer (the open
 * must not wait for one), a device that never ends, a file over the cap, a
 * file with a NUL byte. Each is refused at once with one line naming it. */
static void test_not_regular_files(void **state) {
  (void)state;
  lr_config_t c;
  lr_config_defaults(&c);
#ifndef _WIN32 /* no FIFOs or /dev/zero under Wine */
  char fifo[64];
  snprintf(fifo, sizeof fifo, "lorelay_test_fifo_%d", (int)getpid());
  assert_int_equal(mkfifo(fifo, 0600), 0);
  assert_int_equal(lr_config_load_file(&c, fifo, 0), -1);
  expect_logged(LR_LOG_ERROR, fifo, "a FIFO, not a regular file", NULL);
  unlink(fifo);
  cap.n = 0;
  assert_int_equal(lr_config_load_file(&c, "/dev/zero", 0), -1);
  expect_logged(LR_LOG_ERROR, "/dev/zero", "character device", NULL);
  cap.n = 0;
  assert_int_equal(lr_config_load_file(&c, ".", 1), -1);
  expect_logged(LR_LOG_ERROR, "directory", NULL, NULL);
#endif

  FILE *f = fopen(tmp_path, "wb");
  assert_non_null(f);
  fputs("[lorelay]\n", f);
  for (int i = 0; i < LR_CONFIG_FILE_MAX / 16; i++) fputs(";  padding line\n", f);
  fclose(f);
  cap.n = 0;
  assert_int_equal(lr_config_load_file(&c, tmp_path, 0), -1);
  expect_logged(LR_LOG_ERROR, tmp_path, "more than the 1048576", NULL);

  f = fopen(tmp_path, "wb");
  assert_non_null(f);
  fwrite("[lorelay]\nipv6 = false\0\n", 1, 24, f);
  fclose(f);
  cap.n = 0;
  assert_int_equal(lr_config_load_file(&c, tmp_path, 0), -1);
  expect_logged(LR_LOG_ERROR, tmp_path, "NUL byte", NULL);
  remove(tmp_path);
}

/* ---- [guest NAME] sections (lorelayd's reader) -------------------------- */

static void test_guest_sections(void **state) {
  (void)state;
  lr_config_file_t f;
  const char *text =
      "[guest web]\n"               /* 1: before [lorelay]: overrides still win */
      "netns = web\n"
      "hostAddress = 127.0.0.2\n"
      "ignorePorts = 22\n"
      "[lorelay]\n"                 /* 5 */
      "ignorePorts = 8000\n"
      "remapOnConflict = true\n"
      "listenAddress = 192.168.1.10\n"
      "[guest vm1]\n"
      "transport = vsock:3:5555\n"  /* 10 */
      "tokenFile = /etc/lorelay/vm1.token\n"
      "listenAddress = ::\n"
      "ipv6 = false\n";
  assert_int_equal(lr_config_file_parse_string(&f, text, "g.ini"), 0);
  assert_int_equal(count_level(LR_LOG_ERROR), 0);
  assert_int_equal(count_level(LR_LOG_WARN), 0);
  assert_true(lr_portset_contains(&f.base.ignore_ports, 8000));
  assert_int_equal(f.nguests, 2);
  const lr_guest_conf_t *w = lr_config_file_guest(&f, "web");
  assert_non_null(w);
  assert_string_equal(w->netns, "web");
  assert_string_equal(w->transport, "");
  assert_string_equal(w->cfg.host_address, "127.0.0.2");
  assert_true(lr_portset_contains(&w->cfg.ignore_ports, 22));
  assert_false(lr_portset_contains(&w->cfg.ignore_ports, 8000));
  assert_int_equal(w->cfg.remap_on_conflict, 1);     /* from [lorelay] */
  assert_string_equal(w->cfg.listen_address, "192.168.1.10");
  /* hostAddress (IPv4) under an IPv4 listenAddress: no IPv6 stand-ins */
  assert_int_equal(w->cfg.ipv6, 0);
  const lr_guest_conf_t *v = lr_config_file_guest(&f, "vm1");
  assert_non_null(v);
  assert_string_equal(v->transport, "vsock:3:5555");
  assert_string_equal(v->token_file, "/etc/lorelay/vm1.token");
  assert_string_equal(v->cfg.listen_address, "::");
  assert_int_equal(v->cfg.host_address[0], '\0');
  assert_true(lr_portset_contains(&v->cfg.ignore_ports, 8000));
  assert_null(lr_config_file_guest(&f, "nope"));
  lr_config_file_free(&f);

  /* The plain reader (the agent's) skips guest sections quietly. */
  lr_config_t c;
  lr_config_defaults(&c);
  cap.n = 0;
  assert_int_equal(lr_config_parse_string(&c, text, "g.ini"), 0);
  assert_int_equal(cap.n, 0);
  assert_string_equal(c.listen_address, "192.168.1.10");
  /* An empty value is the default: loopback (the shipped file has one). */
  assert_int_equal(lr_config_parse_string(&c, "[lorelay]\nlistenAddress=\n", "e.ini"), 0);
  assert_string_equal(c.listen_address, "");
}

static void test_guest_section_errors(void **state) {
  (void)state;
  lr_config_file_t f;
  const char *text =
      "[guest a]\n"
      "netns = a\n"
      "transport = unix:/x\n"        /* 3: both: error at the section's first key */
      "[guest b]\n"
      "hostAddress = 10.0.0.2\n"     /* 5: not loopback */
      "[guest bad/name]\n"
      "netns = x\n"                  /* 7 */
      "[guest c]\n"
      "netns = c\n"
      "listenAddress = nowhere\n"    /* 10 */
      "logLevel = debug\n"           /* 11: daemon-wide: error */
      "ipv6 = maybe\n"               /* 12: replayed with its own line */
      "[lorelay]\n"
      "hostAddress = 127.0.0.3\n";   /* 14: guest-only: error */
  assert_int_equal(lr_config_file_parse_string(&f, text, "e.ini"), -1);
  expect_logged(LR_LOG_ERROR, "e.ini:2:", "[guest a] needs exactly one of", NULL);
  expect_logged(LR_LOG_ERROR, "e.ini:5:", "hostAddress = '10.0.0.2'", "loopback");
  expect_logged(LR_LOG_ERROR, "e.ini:7:", "[guest bad/name]", NULL);
  expect_logged(LR_LOG_ERROR, "e.ini:10:", "listenAddress = 'nowhere'", NULL);
  expect_logged(LR_LOG_ERROR, "e.ini:11:", "logLevel cannot be set in a [guest NAME]", NULL);
  expect_logged(LR_LOG_ERROR, "e.ini:12:", "ipv6 = 'maybe'", NULL);
  expect_logged(LR_LOG_ERROR, "e.ini:14:", "hostAddress cannot be set in [lorelay]",
                "belongs in a [guest NAME]");
  expect_logged(LR_LOG_ERROR, "e.ini:5:", "[guest b] needs exactly one of", NULL);
  lr_config_file_free(&f);

  /* A missing file with missing_ok is an empty configuration. */
  assert_int_equal(lr_config_file_load(&f, "/nonexistent/lorelay.ini", 1), 0);
  assert_int_equal(f.nguests, 0);
  lr_config_file_free(&f);
  assert_int_equal(lr_config_file_load(&f, "/nonexistent/lorelay.ini", 0), -1);
  lr_config_file_free(&f);
}

static void test_guest_section_bound(void **state) {
  (void)state;
  lr_config_file_t f;
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  for (int i = 0; i <= LR_MAX_GUESTS; i++) lr_sbuf_printf(&b, "[guest g%d]\nnetns = g%d\n", i, i);
  lr_log_set_sink(NULL, NULL); /* one error per extra key; not worth capturing */
  assert_int_equal(lr_config_file_parse_string(&f, b.p, "many.ini"), -1);
  assert_int_equal(f.nguests, LR_MAX_GUESTS);
  lr_config_file_free(&f);
  lr_sbuf_free(&b);
}

/* ---- the shipped samples ------------------------------------------------- */

#ifdef LORELAY_SOURCE_DIR
static char *slurp(const char *rel) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", LORELAY_SOURCE_DIR, rel);
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s", path);
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) lr_sbuf_append(&b, buf, n);
  fclose(f);
  assert_false(b.err);
  return b.p;
}

/* A sample lists every key, commented or not ("key=value" or ";key=value"),
 * with the value the code really defaults to, and no key the code does not
 * know: adding a key without documenting it fails here. Keys of [guest
 * NAME] only appear in its commented example. */
static void check_sample(const char *rel) {
  char *text = slurp(rel);
  lr_sbuf_t uncommented;
  lr_sbuf_init(&uncommented);
  int in_lorelay = 0, seen[64] = {0};
  assert_true(lr_config_nkeys <= 64);
  for (char *line = text; line && *line;) {
    char *nl = strchr(line, '\n');
    size_t len = nl ? (size_t)(nl - line) : strlen(line);
    char l[600];
    snprintf(l, sizeof l, "%.*s", (int)len, line);
    line = nl ? nl + 1 : NULL;
    size_t e = strlen(l);
    while (e && (l[e - 1] == '\r' || l[e - 1] == ' ')) l[--e] = '\0';
    const char *p = l;
    int commented = 0;
    while (*p == ';' || *p == '#' || *p == ' ') commented |= *p == ';' || *p == '#', p++;
    if (*p == '[') {
      in_lorelay = !strncmp(p, "[lorelay]", 9);
      if (!commented) lr_sbuf_printf(&uncommented, "%s\n", p);
      continue;
    }
    const char *eq = strchr(p, '=');
    if (!eq) continue;
    char key[64], val[300];
    size_t kl = strcspn(p, " =");
    if (kl == 0 || kl >= sizeof key) continue;
    snprintf(key, sizeof key, "%.*s", (int)kl, p);
    int known = -1;
    for (size_t i = 0; i < lr_config_nkeys; i++)
      if (!strcmp(lr_config_keys[i].name, key)) known = (int)i;
    const char *v = eq + 1;
    while (*v == ' ') v++;
    snprintf(val, sizeof val, "%s", v);
    /* prose that happens to hold an '=' ("e.g. ignorePorts=22, ...") is
     * not a key line: a key line is the key alone, at the start */
    if (known < 0) {
      int word = 1;
      for (const char *q = key; *q; q++)
        word &= (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z');
      if (word && p == l + (commented ? 1 : 0) && in_lorelay)
        fail_msg("%s: '%s' is not a key lorelay knows", rel, key);
      continue;
    }
    seen[known] = 1;
    if (!in_lorelay) continue; /* the [guest NAME] example */
    char def[300];
    lr_config_key_default(&lr_config_keys[known], def, sizeof def);
    if (strcmp(val, def) != 0)
      fail_msg("%s: %s=%s, but the default is '%s'", rel, key, val, def);
    lr_sbuf_printf(&uncommented, "%s=%s\n", key, val);
  }
  for (size_t i = 0; i < lr_config_nkeys; i++)
    if (!seen[i]) fail_msg("%s does not list the key %s", rel, lr_config_keys[i].name);
  /* Uncommented, the [lorelay] part parses cleanly to exactly the defaults. */
  lr_config_t c, d;
  lr_config_defaults(&c);
  lr_config_defaults(&d);
  assert_int_equal(lr_config_parse_string(&c, uncommented.p, rel), 0);
  assert_memory_equal(&c, &d, sizeof c);
  /* And the file as shipped is valid for lorelayd. */
  lr_config_file_t f;
  if (lr_config_file_parse_string(&f, text, rel) != 0) fail_msg("%s does not parse", rel);
  lr_config_file_free(&f);
  lr_sbuf_free(&uncommented);
  free(text);
}

static void test_samples_list_every_key(void **state) {
  (void)state;
  check_sample("packaging/config/lorelay.ini");
  check_sample("installer/lorelay.ini");
  assert_int_equal(count_level(LR_LOG_ERROR), 0);
}
#endif

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_defaults),
      T(test_every_key),
      T(test_bool_spellings),
      T(test_bad_bool_names_key_and_line),
      T(test_unknown_key_is_error),
      T(test_other_sections),
      T(test_duplicates_and_empty),
      T(test_guest_transport_checked),
      T(test_guest_scope),
      T(test_portmap),
      T(test_whitespace_and_comments),
      T(test_crlf),
      T(test_indented_keys),
      T(test_long_line),
      T(test_not_ini),
      T(test_portset_good),
      T(test_portset_bad),
      T(test_bad_ports_in_file),
      T(test_numbers_and_levels),
      T(test_key_case),
      T(test_load_file),
      T(test_missing_file),
      T(test_not_regular_files),
      T(test_guest_sections),
      T(test_guest_section_errors),
      T(test_guest_section_bound),
#ifdef LORELAY_SOURCE_DIR
      T(test_samples_list_every_key),
#endif
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
