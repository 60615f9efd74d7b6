/* Unit tests for the status documents and watch event lines (lr_status.c)
 * with hostile guest text: a guest name, a last error and a listener
 * owner's command line full of quotes, backslashes, newlines, escape
 * sequences, C1 controls and bytes that are not UTF-8.
 *
 * The JSON must parse (cJSON reads it back) and give the same strings; the
 * table and the readable events must hold no control character but their
 * line ends, so nothing can forge a row or reach the terminal. Portable:
 * runs on Linux and under Wine. The host has one guest that is never
 * connected (its loop is not run); its ports are put in the table
 * directly, on ports the configuration ignores or denies, so nothing is
 * bound. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <cJSON.h>

#include "lr_host_int.h"
#include "lr_testutil.h"

#define HOSTILE_NAME "web \"1\" \\ \t\n\x1b[2J\x01\x7f caf\xc3\xa9"
#define HOSTILE_CMD "evil\n  tcp   0.0.0.0:1  forged\r\x1b]0;t\x07\x1b[31m\xc2\x9b \\x41"

typedef struct {
  uv_loop_t loop;
  lr_config_t cfg;
  lr_pal_t pal;
  lr_host_t *h;
  lr_guest_t *g;
  int done;
} fx_t;

static fx_t fx;

static int setup(void **state) {
  (void)state;
  char err[256];
  memset(&fx, 0, sizeof fx);
  assert_int_equal(uv_loop_init(&fx.loop), 0);
  lr_config_defaults(&fx.cfg);
  assert_int_equal(lr_portset_parse(&fx.cfg.ignore_ports, "5000", err, sizeof err), 0);
  fx.pal.name = "test";
  fx.h = lr_host_new(&fx.loop, &fx.pal, &fx.cfg);
  assert_non_null(fx.h);
  lr_guest_opts_t go = {.name = HOSTILE_NAME, .transport = "unix:/nonexistent/agent.sock"};
  assert_int_equal(lr_host_add_guest(fx.h, &go, err, sizeof err), 0);
  fx.g = fx.h->guests;
  snprintf(fx.g->last_err, sizeof fx.g->last_err, "%s", "agent said: " HOSTILE_CMD);
  return 0;
}

static void done(void *data) { *(int *)data = 1; }

static int teardown(void **state) {
  (void)state;
  lr_host_shutdown(fx.h, done, &fx.done);
  while (!fx.done) uv_run(&fx.loop, UV_RUN_ONCE);
  lr_host_free(fx.h);
  assert_int_equal(uv_loop_close(&fx.loop), 0);
  return 0;
}

static lr_port_entry_t *add_port(uint16_t port, const char *cmd) {
  lr_listener_t l = lr_test_v4(0, 0, 0, 0, port);
  lr_proc_owner_t o;
  memset(&o, 0, sizeof o);
  if (cmd) {
    o.pid = 31337;
    snprintf(o.cmd, sizeof o.cmd, "%s", cmd);
    lr_utf8_sanitize(o.cmd);
  }
  lr_port_entry_t *e = lr_ports_add_owned(&fx.g->ports, &l, &o);
  assert_non_null(e);
  return e;
}

/* Only '\n' ends lines; no other C0, no DEL, no C1 (U+0080-009F). */
static void assert_terminal_safe(const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '\n') continue;
    if (*p < 0x20 || *p == 0x7f) fail_msg("control byte 0x%02x at %d in:\n%s", *p, (int)(p - (const unsigned char *)s), s);
    if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) fail_msg("C1 control in:\n%s", s);
  }
}

static size_t count_lines(const char *s) {
  size_t n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

static const cJSON *field(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  if (!v) fail_msg("no \"%s\"", name);
  return v;
}

static void test_json_hostile(void **state) {
  (void)state;
  char want[LR_CMD_MAX + 1];
  snprintf(want, sizeof want, "%s", HOSTILE_CMD);
  lr_utf8_sanitize(want);
  add_port(5000, HOSTILE_CMD);
  add_port(80, NULL); /* denied: outside forwardPorts */
  lr_sbuf_t s;
  lr_sbuf_init(&s);
  lr_host_status_json(fx.h, &s);
  assert_false(s.err);
  assert_int_equal(count_lines(s.p), 1);
  cJSON *doc = cJSON_Parse(s.p);
  if (!doc) fail_msg("status JSON does not parse:\n%s", s.p);
  const cJSON *g = cJSON_GetArrayItem(field(doc, "guests"), 0);
  assert_string_equal(field(g, "name")->valuestring, HOSTILE_NAME);
  assert_string_equal(field(g, "state")->valuestring, "connecting");
  assert_true(cJSON_IsNumber(field(g, "uptime_s")));
  assert_string_equal(field(g, "last_error")->valuestring, "agent said: " HOSTILE_CMD);
  assert_string_equal(field(g, "error")->valuestring, "agent said: " HOSTILE_CMD);
  const cJSON *ports = field(g, "ports");
  assert_int_equal(cJSON_GetArraySize(ports), 2);
  const cJSON *p80 = cJSON_GetArrayItem(ports, 0), *p5000 = cJSON_GetArrayItem(ports, 1);
  assert_string_equal(field(p80, "state")->valuestring, "denied");
  assert_null(cJSON_GetObjectItemCaseSensitive(p80, "process"));
  assert_string_equal(field(p5000, "state")->valuestring, "ignored");
  const cJSON *proc = field(p5000, "process");
  assert_int_equal(field(proc, "pid")->valuedouble, 31337);
  assert_string_equal(field(proc, "command")->valuestring, want);
  cJSON_Delete(doc);
  lr_sbuf_free(&s);
}

static void test_table_hostile(void **state) {
  (void)state;
  add_port(5000, HOSTILE_CMD);
  add_port(80, NULL);
  lr_sbuf_t s;
  lr_sbuf_init(&s);
  lr_host_status_table(fx.h, &s);
  assert_false(s.err);
  assert_terminal_safe(s.p);
  /* config line, guest line, last error, header, two rows, the denied row's reason */
  if (count_lines(s.p) != 7) fail_msg("forged lines?\n%s", s.p);
  assert_non_null(strstr(s.p, "31337 evil\\x0a  tcp   0.0.0.0:1  forged\\x0d\\x1b]0;t\\x07"));
  assert_non_null(strstr(s.p, "\\u009b \\\\x41\n"));
  assert_non_null(strstr(s.p, "guest web \"1\" \\\\ \\x09\\x0a\\x1b[2J\\x01\\x7f caf\xc3\xa9"));
  assert_non_null(strstr(s.p, "PROCESS"));
  lr_sbuf_free(&s);
}

static void test_events(void **state) {
  (void)state;
  lr_port_entry_t *e = add_port(5000, HOSTILE_CMD);
  lr_event_t evs[] = {
      {LR_EV_PORT_ADDED, fx.g, e, LR_PORT_FORWARDING, NULL, 0},
      {LR_EV_PORT_STATE, fx.g, e, LR_PORT_CONFLICT, NULL, 0},
      {LR_EV_PORT_REMOVED, fx.g, e, LR_PORT_FORWARDING, NULL, 0},
      {LR_EV_GUEST_CONNECTED, fx.g, NULL, LR_PORT_FORWARDING, NULL, 0},
      {LR_EV_GUEST_DISCONNECTED, fx.g, NULL, LR_PORT_FORWARDING, "agent said: " HOSTILE_CMD, 0},
  };
  for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
    lr_sbuf_t j, t;
    lr_sbuf_init(&j);
    lr_sbuf_init(&t);
    lr_status_event_json(fx.h, &evs[i], &j);
    lr_status_event_text(fx.h, &evs[i], &t);
    assert_false(j.err || t.err);
    assert_int_equal(count_lines(j.p), 1);
    assert_int_equal(count_lines(t.p), 1);
    assert_terminal_safe(t.p);
    assert_non_null(strstr(t.p, lr_event_name(evs[i].kind)));
    cJSON *o = cJSON_Parse(j.p);
    if (!o) fail_msg("event does not parse:\n%s", j.p);
    assert_string_equal(field(o, "event")->valuestring, lr_event_name(evs[i].kind));
    assert_string_equal(field(o, "guest")->valuestring, HOSTILE_NAME);
    assert_int_equal(strlen(field(o, "time")->valuestring), 24);
    const cJSON *port = cJSON_GetObjectItemCaseSensitive(o, "port");
    assert_int_equal(port != NULL, evs[i].e != NULL);
    if (port) assert_string_equal(field(port, "guest")->valuestring, "0.0.0.0:5000");
    if (evs[i].kind == LR_EV_PORT_STATE)
      assert_string_equal(field(o, "previous")->valuestring, "conflict");
    if (evs[i].kind == LR_EV_GUEST_DISCONNECTED)
      assert_string_equal(field(o, "error")->valuestring, evs[i].reason);
    cJSON_Delete(o);
    lr_sbuf_free(&j);
    lr_sbuf_free(&t);
  }
  lr_sbuf_t d;
  lr_sbuf_init(&d);
  lr_status_dropped(12345678901ull, 1, &d);
  cJSON *o = cJSON_Parse(d.p);
  assert_non_null(o);
  assert_string_equal(field(o, "event")->valuestring, "dropped");
  assert_non_null(strstr(d.p, "\"count\":12345678901}"));
  cJSON_Delete(o);
  lr_sbuf_free(&d);
}

static void test_time_and_escape(void **state) {
  (void)state;
  char t[40];
  lr_status_time(0, 0, t, sizeof t);
  assert_string_equal(t, "1970-01-01T00:00:00.000Z");
  lr_status_time(951782400 + 86399, 999999, t, sizeof t);
  assert_string_equal(t, "2000-02-29T23:59:59.999Z");
  lr_status_time(1795996800 + 3723, 45000, t, sizeof t);
  assert_string_equal(t, "2026-11-30T01:02:03.045Z");
  lr_status_time(4107542400, 0, t, sizeof t);
  assert_string_equal(t, "2100-03-01T00:00:00.000Z");
  lr_sbuf_t s;
  lr_sbuf_init(&s);
  lr_text_escape(&s, "a\\b\x1b[1m\n\x7f\xc2\x9b\xc2\xa0\xc3\xa9");
  assert_string_equal(s.p, "a\\\\b\\x1b[1m\\x0a\\x7f\\u009b\xc2\xa0\xc3\xa9");
  lr_sbuf_free(&s);
}

/* A platform where every stand-in port is taken, by a known program. */
static int taken_listen(uv_loop_t *loop, uv_tcp_t *h, const struct sockaddr *sa, int backlog,
                        uv_connection_cb cb, uv_close_cb on_fail) {
  (void)sa, (void)backlog, (void)cb;
  uv_tcp_init(loop, h);
  uv_close((uv_handle_t *)h, on_fail);
  return UV_EADDRINUSE;
}

static int holder_4242(const struct sockaddr *sa, int udp, uint32_t *pid, char *command,
                       size_t len) {
  (void)sa, (void)udp;
  *pid = 4242;
  snprintf(command, len, "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;");
  return 0;
}

/* A conflict names its holder (JSON, table); every port has
 * connect_failures; the table fits a width; one guest or an unknown one. */
static void test_holder_width_and_filter(void **state) {
  (void)state;
  fx.pal.listen_loopback = taken_listen;
  fx.pal.port_holder = holder_4242;
  lr_port_entry_t *e = add_port(6000, "python3 -m http.server 6000 --directory /srv/a/very/long/path");
  assert_int_equal(lr_ports_entry_state(e), LR_PORT_CONFLICT);
  lr_sbuf_t s;
  lr_sbuf_init(&s);
  assert_int_equal(lr_host_status_json_for(fx.h, HOSTILE_NAME, &s), 0);
  cJSON *doc = cJSON_Parse(s.p);
  assert_non_null(doc);
  const cJSON *cfg = field(doc, "config");
  assert_true(cJSON_IsNull(field(cfg, "path")));
  assert_true(cJSON_IsTrue(field(field(cfg, "last_reload"), "ok")));
  const cJSON *p = cJSON_GetArrayItem(field(cJSON_GetArrayItem(field(doc, "guests"), 0), "ports"), 0);
  assert_string_equal(field(p, "state")->valuestring, "conflict");
  assert_int_equal(field(field(p, "holder"), "pid")->valueint, 4242);
  assert_non_null(strstr(field(field(p, "holder"), "command")->valuestring, "nginx: master"));
  assert_int_equal(field(p, "connect_failures")->valueint, 0);
  cJSON_Delete(doc);
  lr_sbuf_free(&s);

  lr_sbuf_init(&s);
  assert_int_equal(lr_host_status_table_for(fx.h, NULL, 90, &s), 0);
  assert_non_null(strstr(s.p, "host port held by pid 4242 nginx: master"));
  assert_non_null(strstr(s.p, " FAIL "));
  int rows = 0;
  for (const char *l = s.p; *l;) {
    size_t n = strcspn(l, "\n");
    if (!strncmp(l, "  PROTO", 7) || !strncmp(l, "  tcp", 5) || !strncmp(l, "        host port", 17)) {
      rows++;
      if (n > 90) fail_msg("line of %zu columns in a 90-column table:\n%s", n, s.p);
    }
    l += n + (l[n] == '\n');
  }
  assert_int_equal(rows, 3);
  assert_non_null(strstr(s.p, "~"));
  lr_sbuf_free(&s);
  lr_sbuf_init(&s);
  lr_host_status_table_for(fx.h, NULL, 0, &s); /* no limit: the whole command */
  assert_non_null(strstr(s.p, "--directory /srv/a/very/long/path\n"));
  lr_sbuf_free(&s);

  lr_sbuf_init(&s);
  assert_int_equal(lr_host_status_json_for(fx.h, "nope", &s), -1);
  assert_int_equal(lr_host_status_table_for(fx.h, "nope", 0, &s), -1);
  assert_int_equal(s.len, 0);
  lr_sbuf_free(&s);

  /* The watch's opening snapshot marks its events. */
  lr_event_t ev = {LR_EV_PORT_ADDED, fx.g, e, LR_PORT_FORWARDING, NULL, 1};
  lr_sbuf_init(&s);
  lr_status_event_json(fx.h, &ev, &s);
  assert_non_null(strstr(s.p, "\"snapshot\":true"));
  lr_status_event_text(fx.h, &ev, &s);
  assert_non_null(strstr(s.p, "(snapshot)\n"));
  lr_status_snapshot_end(1, &s);
  assert_non_null(strstr(s.p, "\"event\":\"snapshot-end\""));
  lr_sbuf_free(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_holder_width_and_filter, setup, teardown),
      cmocka_unit_test_setup_teardown(test_json_hostile, setup, teardown),
      cmocka_unit_test_setup_teardown(test_table_hostile, setup, teardown),
      cmocka_unit_test_setup_teardown(test_events, setup, teardown),
      cmocka_unit_test(test_time_and_escape),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
