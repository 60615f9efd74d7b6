/* Unit tests for the forwarding rules (docs/protocol.md, forwarding rules), table-driven.
 *
 * The table is the product contract, so it is written out here as data:
 * each guest listener with the host bindings it must produce under the
 * default config, then the same listeners under ipv6=false,
 * localhostForwarding=false and ignorePorts. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "lr_rules.h"
#include "lr_testutil.h"

typedef struct {
  const char *what;
  int family;
  uint8_t addr[16];
  uint8_t flags;
  /* expected under the default config */
  lr_rule_result_t rule;
  int n;
  uint8_t fam[2];
} rule_case_t;

#define V4(a, b, c, d) {a, b, c, d}
#define V6LO {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
#define V6ANY {0}

static const rule_case_t cases[] = {
    {"0.0.0.0", 4, V4(0, 0, 0, 0), 0, LR_RULE_FORWARD, 1, {4}},
    {"127.0.0.1", 4, V4(127, 0, 0, 1), 0, LR_RULE_FORWARD, 1, {4}},
    {"[::1]", 6, V6LO, 0, LR_RULE_FORWARD, 1, {6}},
    {"[::] dual-stack", 6, V6ANY, 0, LR_RULE_FORWARD, 2, {4, 6}},
    {"[::] V6ONLY", 6, V6ANY, LR_LISTENER_V6ONLY, LR_RULE_FORWARD, 1, {6}},
    /* a deliberate choice of another 127/8 address (systemd-resolved) */
    {"127.0.0.53", 4, V4(127, 0, 0, 53), 0, LR_RULE_NOT_LOOPBACK, 0, {0}},
    {"127.0.0.2", 4, V4(127, 0, 0, 2), 0, LR_RULE_NOT_LOOPBACK, 0, {0}},
    {"127.1.0.1", 4, V4(127, 1, 0, 1), 0, LR_RULE_NOT_LOOPBACK, 0, {0}},
    {"10.0.0.5", 4, V4(10, 0, 0, 5), 0, LR_RULE_NOT_LOOPBACK, 0, {0}},
    {"192.168.1.1", 4, V4(192, 168, 1, 1), 0, LR_RULE_NOT_LOOPBACK, 0, {0}},
    {"255.255.255.255", 4, V4(255, 255, 255, 255), 0, LR_RULE_NOT_LOOPBACK, 0, {0}},
    {"[fe80::1]", 6, {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 0,
     LR_RULE_NOT_LOOPBACK, 0, {0}},
    {"[2001:db8::1]", 6, {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 0,
     LR_RULE_NOT_LOOPBACK, 0, {0}},
    /* v4-mapped loopback: a socket bound to it is an IPv6 socket a plain
     * IPv4 client reaches only through the mapping; lorelay does not
     * forward it (the contract lists only the four forms above) */
    {"[::ffff:127.0.0.1]", 6, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1}, 0,
     LR_RULE_NOT_LOOPBACK, 0, {0}},
    {"[::ffff:0.0.0.0]", 6, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0}, 0,
     LR_RULE_NOT_LOOPBACK, 0, {0}},
    /* [::1] with the V6ONLY flag (always implied for ::1) still forwards */
    {"[::1] V6ONLY", 6, V6LO, LR_LISTENER_V6ONLY, LR_RULE_FORWARD, 1, {6}},
    /* ::2 is not loopback */
    {"[::2]", 6, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}, 0, LR_RULE_NOT_LOOPBACK, 0, {0}},
};
#define NCASES (sizeof cases / sizeof cases[0])

static lr_listener_t listener_of(const rule_case_t *c, uint16_t port) {
  lr_listener_t l;
  memset(&l, 0, sizeof l);
  l.family = (uint8_t)c->family;
  l.flags = c->flags;
  l.port = port;
  memcpy(l.addr, c->addr, c->family == 4 ? 4 : 16);
  return l;
}

static const uint16_t ports[] = {1, 80, 8000, 65535};

/* out[] is poisoned so a result that claims n bindings but leaves them
 * unwritten is caught. */
static lr_rule_result_t map(const lr_listener_t *l, const lr_config_t *cfg, lr_host_bind_t out[2],
                            int *n) {
  memset(out, 0xEE, 2 * sizeof *out);
  *n = -7;
  return lr_rules_map(l, cfg, out, n);
}

static void test_default_table(void **state) {
  (void)state;
  lr_config_t cfg;
  lr_test_config_all_ports(&cfg);
  for (size_t i = 0; i < NCASES; i++) {
    for (size_t p = 0; p < sizeof ports / sizeof ports[0]; p++) {
      lr_listener_t l = listener_of(&cases[i], ports[p]);
      lr_host_bind_t out[2];
      int n;
      lr_rule_result_t r = map(&l, &cfg, out, &n);
      if (r != cases[i].rule || n != cases[i].n)
        fail_msg("%s:%u -> rule %d n %d, want rule %d n %d", cases[i].what, ports[p], r, n,
                 cases[i].rule, cases[i].n);
      for (int k = 0; k < n; k++) {
        assert_int_equal(out[k].family, cases[i].fam[k]);
        assert_int_equal(out[k].port, ports[p]); /* never a different port */
      }
    }
  }
}

/* ipv6=false: no [::1] stand-ins at all. A dual-stack listener keeps its
 * IPv4 side; a listener reachable only over IPv6 becomes IGNORED. */
static void test_ipv6_off(void **state) {
  (void)state;
  lr_config_t cfg;
  lr_test_config_all_ports(&cfg);
  cfg.ipv6 = 0;
  for (size_t i = 0; i < NCASES; i++) {
    lr_listener_t l = listener_of(&cases[i], 8080);
    lr_host_bind_t out[2];
    int n;
    lr_rule_result_t r = map(&l, &cfg, out, &n);
    int v4 = 0;
    for (int k = 0; k < cases[i].n; k++) v4 += cases[i].fam[k] == 4;
    if (cases[i].rule == LR_RULE_NOT_LOOPBACK) {
      assert_int_equal(r, LR_RULE_NOT_LOOPBACK);
      assert_int_equal(n, 0);
    } else if (v4) {
      if (r != LR_RULE_FORWARD || n != 1) fail_msg("%s with ipv6=false: rule %d n %d", cases[i].what, r, n);
      assert_int_equal(out[0].family, 4);
      assert_int_equal(out[0].port, 8080);
    } else {
      if (r != LR_RULE_IGNORED || n != 0)
        fail_msg("%s with ipv6=false: rule %d n %d, want IGNORED", cases[i].what, r, n);
    }
  }
}

/* localhostForwarding=false: nothing is forwarded. */
static void test_forwarding_off(void **state) {
  (void)state;
  lr_config_t cfg;
  lr_test_config_all_ports(&cfg);
  cfg.localhost_forwarding = 0;
  for (size_t i = 0; i < NCASES; i++) {
    lr_listener_t l = listener_of(&cases[i], 3000);
    lr_host_bind_t out[2];
    int n;
    lr_rule_result_t r = map(&l, &cfg, out, &n);
    assert_int_equal(n, 0);
    if (cases[i].rule == LR_RULE_FORWARD)
      assert_int_equal(r, LR_RULE_IGNORED);
    else
      assert_int_not_equal(r, LR_RULE_FORWARD);
  }
}

static void test_ignore_ports(void **state) {
  (void)state;
  lr_config_t cfg;
  lr_test_config_all_ports(&cfg);
  char err[128];
  assert_int_equal(lr_portset_parse(&cfg.ignore_ports, "22, 5000-5010,65535", err, sizeof err), 0);
  const struct {
    uint16_t port;
    int ignored;
  } pc[] = {{22, 1}, {21, 0}, {23, 0}, {4999, 0}, {5000, 1}, {5005, 1},
            {5010, 1}, {5011, 0}, {65535, 1}, {65534, 0}, {1, 0}};
  for (size_t i = 0; i < NCASES; i++) {
    for (size_t p = 0; p < sizeof pc / sizeof pc[0]; p++) {
      lr_listener_t l = listener_of(&cases[i], pc[p].port);
      lr_host_bind_t out[2];
      int n;
      lr_rule_result_t r = map(&l, &cfg, out, &n);
      if (cases[i].rule == LR_RULE_NOT_LOOPBACK) {
        assert_int_equal(r, LR_RULE_NOT_LOOPBACK);
        assert_int_equal(n, 0);
      } else if (pc[p].ignored) {
        if (r != LR_RULE_IGNORED || n != 0)
          fail_msg("%s:%u is in ignorePorts: rule %d n %d", cases[i].what, pc[p].port, r, n);
      } else {
        if (r != LR_RULE_FORWARD || n != cases[i].n)
          fail_msg("%s:%u not in ignorePorts: rule %d n %d", cases[i].what, pc[p].port, r, n);
      }
    }
  }
}

/* The port policy: the guest may claim only forwardPorts (default
 * 1024-65535), never port 0, never a host port published back to it. */
static void test_port_policy(void **state) {
  (void)state;
  lr_config_t cfg;
  char err[128], why[200];
  lr_host_bind_t out[2];
  int n;
  lr_config_defaults(&cfg);
  assert_int_equal(lr_portset_parse(&cfg.reverse_ports, "8000", err, sizeof err), 0);
  static const struct {
    uint16_t port;
    lr_rule_result_t rule;
    const char *why;
  } pc[] = {{22, LR_RULE_DENIED, "port 22 is outside forwardPorts (1024-65535)"},
            {1023, LR_RULE_DENIED, "outside forwardPorts"},
            {0, LR_RULE_DENIED, "port 0"},
            {8000, LR_RULE_DENIED, "host port 8000 is published to the guest (reversePorts)"},
            {1024, LR_RULE_FORWARD, NULL},
            {65535, LR_RULE_FORWARD, NULL}};
  for (size_t i = 0; i < NCASES; i++) {
    if (cases[i].rule == LR_RULE_NOT_LOOPBACK) continue;
    for (size_t p = 0; p < sizeof pc / sizeof pc[0]; p++) {
      lr_listener_t l = listener_of(&cases[i], pc[p].port);
      lr_rule_result_t r = map(&l, &cfg, out, &n);
      if (r != pc[p].rule) fail_msg("%s:%u -> rule %d", cases[i].what, pc[p].port, r);
      if (r == LR_RULE_DENIED) {
        assert_int_equal(n, 0); /* denied means nothing is ever bound */
        lr_rules_deny_reason(&l, &cfg, why, sizeof why);
        if (!strstr(why, pc[p].why)) fail_msg("%u: reason '%s'", pc[p].port, why);
      }
    }
  }
  /* A narrower policy, and an ignored port that is also outside it: denied
   * (the policy is about what the guest may do, so it is said first). */
  assert_int_equal(lr_portset_parse(&cfg.forward_ports, "30000-30010", err, sizeof err), 0);
  assert_int_equal(lr_portset_parse(&cfg.ignore_ports, "30011", err, sizeof err), 0);
  lr_listener_t l = listener_of(&cases[0], 30010);
  assert_int_equal(map(&l, &cfg, out, &n), LR_RULE_FORWARD);
  l = listener_of(&cases[0], 30011);
  assert_int_equal(map(&l, &cfg, out, &n), LR_RULE_DENIED);
  lr_rules_deny_reason(&l, &cfg, why, sizeof why);
  assert_string_equal(why, "port 30011 is outside forwardPorts (30000-30010)");
}

/* Dual-stack under ipv6=false and an ignored port together: ignore wins. */
static void test_combined(void **state) {
  (void)state;
  lr_config_t cfg;
  lr_test_config_all_ports(&cfg);
  cfg.ipv6 = 0;
  char err[128];
  assert_int_equal(lr_portset_parse(&cfg.ignore_ports, "443", err, sizeof err), 0);
  lr_listener_t l = listener_of(&cases[3], 443);
  lr_host_bind_t out[2];
  int n;
  assert_int_equal(map(&l, &cfg, out, &n), LR_RULE_IGNORED);
  assert_int_equal(n, 0);
  l.port = 444;
  assert_int_equal(map(&l, &cfg, out, &n), LR_RULE_FORWARD);
  assert_int_equal(n, 1);
  assert_int_equal(out[0].family, 4);
}

/* portMap: the host port follows the policy, the guest port is what the
 * connection opens; a mapped privileged guest port is allowed; an unmapped
 * port whose host port is a mapping's target is denied. */
static void test_port_map(void **state) {
  (void)state;
  lr_config_t cfg;
  char err[128], why[200];
  lr_config_defaults(&cfg); /* forwardPorts 1024-65535 */
  assert_int_equal(lr_portmap_parse(&cfg.port_map, "80:8080, 5432:15432, 2000:80", err,
                                    sizeof err), 0);
  lr_host_bind_t out[2];
  int n;
  lr_listener_t l = lr_test_v4(0, 0, 0, 0, 80);
  assert_int_equal(lr_rules_map(&l, &cfg, out, &n), LR_RULE_FORWARD);
  assert_int_equal(n, 1);
  assert_int_equal(out[0].port, 8080);
  assert_int_equal(out[0].guest_port, 80);
  l.port = 8080; /* unmapped, but 8080 is guest 80's host port */
  assert_int_equal(lr_rules_map(&l, &cfg, out, &n), LR_RULE_DENIED);
  lr_rules_deny_reason(&l, &cfg, why, sizeof why);
  assert_string_equal(why, "host port 8080 is portMap's target for guest port 80");
  l.port = 2000; /* mapped onto host 80: outside forwardPorts */
  assert_int_equal(lr_rules_map(&l, &cfg, out, &n), LR_RULE_DENIED);
  lr_rules_deny_reason(&l, &cfg, why, sizeof why);
  assert_string_equal(why, "host port 80 (portMap 2000:80) is outside forwardPorts (1024-65535)");
  l.port = 81; /* unmapped privileged: denied as before */
  assert_int_equal(lr_rules_map(&l, &cfg, out, &n), LR_RULE_DENIED);
  l.port = 5555; /* unmapped: itself */
  assert_int_equal(lr_rules_map(&l, &cfg, out, &n), LR_RULE_FORWARD);
  assert_int_equal(out[0].port, 5555);
  assert_int_equal(out[0].guest_port, 5555);
  /* ignorePorts names guest ports */
  assert_int_equal(lr_portset_parse(&cfg.ignore_ports, "80", err, sizeof err), 0);
  l.port = 80;
  assert_int_equal(lr_rules_map(&l, &cfg, out, &n), LR_RULE_IGNORED);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_port_map),
      cmocka_unit_test(test_default_table),
      cmocka_unit_test(test_ipv6_off),
      cmocka_unit_test(test_forwarding_off),
      cmocka_unit_test(test_ignore_ports),
      cmocka_unit_test(test_port_policy),
      cmocka_unit_test(test_combined),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
