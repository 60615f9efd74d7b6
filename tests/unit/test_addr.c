/* Unit tests for shared/lr_addr.c: every transport kind parses to the
 * fields the transports use, formats back to a string that parses to the
 * same thing, and every malformed address gets the one-line reason users
 * will see on the command line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "lr_addr.h"

/* Parses s, expecting failure, and checks the message names the address
 * and contains the expected reason. */
static void expect_error(const char *s, const char *reason) {
  lr_taddr_t a;
  char err[512];
  memset(&a, 0xAB, sizeof a);
  strcpy(err, "untouched");
  assert_int_equal(lr_taddr_parse(s, &a, err, sizeof err), -1);
  if (strstr(err, reason) == NULL) fail_msg("error for '%s' is '%s', expected to contain '%s'", s, err, reason);
  assert_null(strchr(err, '\n'));
  if (s[0] != '\0' && strlen(s) < 100 && strstr(err, s) == NULL)
    fail_msg("error '%s' does not name the address '%s'", err, s);
  /* A failed parse leaves nothing half-filled behind. */
  assert_int_equal(a.kind, 0);
}

static void parse_ok(const char *s, lr_taddr_t *a) {
  char err[256] = "";
  if (lr_taddr_parse(s, a, err, sizeof err) != 0) fail_msg("'%s' rejected: %s", s, err);
}

/* format(parse(s)) == canonical, and parsing the canonical form again gives
 * the same struct. */
static void expect_roundtrip(const char *s, const char *canonical) {
  lr_taddr_t a, b;
  char out[256];
  parse_ok(s, &a);
  lr_taddr_format(&a, out, sizeof out);
  assert_string_equal(out, canonical);
  parse_ok(out, &b);
  assert_memory_equal(&a, &b, sizeof a);
}

static void test_unix(void **state) {
  lr_taddr_t a;
  char path[200];
  (void)state;
  parse_ok("unix:/run/lorelay/agent.sock", &a);
  assert_int_equal(a.kind, LR_TADDR_UNIX);
  assert_string_equal(a.path, "/run/lorelay/agent.sock");
  /* Colons belong to the path. */
  parse_ok("unix:/tmp/a:b:c", &a);
  assert_string_equal(a.path, "/tmp/a:b:c");
  parse_ok("unix:rel/sock", &a);
  assert_string_equal(a.path, "rel/sock");
  expect_roundtrip("unix:/tmp/x.sock", "unix:/tmp/x.sock");

  /* 107 bytes is the longest path sun_path can hold with its NUL. */
  memset(path, 'p', 107);
  path[0] = '/';
  strcpy(path + 107, "");
  {
    char addr[256];
    snprintf(addr, sizeof addr, "unix:%s", path);
    parse_ok(addr, &a);
    assert_int_equal(strlen(a.path), 107);
    path[107] = 'p';
    path[108] = '\0';
    snprintf(addr, sizeof addr, "unix:%s", path);
    expect_error(addr, "path too long (108 bytes, max 107)");
  }
  expect_error("unix:", "missing socket path");
}

static void test_tcp_ipv4(void **state) {
  lr_taddr_t a;
  (void)state;
  parse_ok("tcp:127.0.0.1:7000", &a);
  assert_int_equal(a.kind, LR_TADDR_TCP);
  assert_int_equal(a.family, 4);
  assert_int_equal(a.port, 7000);
  assert_string_equal(a.host, "127.0.0.1");
  assert_int_equal(a.ip[0], 127);
  assert_int_equal(a.ip[1], 0);
  assert_int_equal(a.ip[2], 0);
  assert_int_equal(a.ip[3], 1);
  parse_ok("tcp:10.200.1.2:0", &a);
  assert_int_equal(a.port, 0);
  parse_ok("tcp:0.0.0.0:65535", &a);
  assert_int_equal(a.port, 65535);
  parse_ok("tcp:localhost:80", &a);
  assert_int_equal(a.family, 4);
  assert_string_equal(a.host, "127.0.0.1");
  expect_roundtrip("tcp:localhost:80", "tcp:127.0.0.1:80");
  expect_roundtrip("tcp:192.168.7.1:5000", "tcp:192.168.7.1:5000");
}

static void test_tcp_ipv6(void **state) {
  lr_taddr_t a;
  static const uint8_t loop6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  (void)state;
  parse_ok("tcp:[::1]:7000", &a);
  assert_int_equal(a.family, 6);
  assert_int_equal(a.port, 7000);
  assert_memory_equal(a.ip, loop6, 16);
  assert_string_equal(a.host, "::1");
  /* Non-canonical spellings normalise. */
  expect_roundtrip("tcp:[0:0:0:0:0:0:0:1]:9", "tcp:[::1]:9");
  expect_roundtrip("tcp:[fd00::AB]:1", "tcp:[fd00::ab]:1");
  expect_roundtrip("tcp:[::]:0", "tcp:[::]:0");
}

static void test_tcp_errors(void **state) {
  (void)state;
  expect_error("tcp:127.0.0.1", "missing port");
  expect_error("tcp:127.0.0.1:", "missing port");
  expect_error("tcp:[::1]", "missing port");
  expect_error("tcp:[::1]:", "missing port");
  expect_error("tcp:", "missing host and port");
  expect_error("tcp::80", "missing host");
  expect_error("tcp:[]:80", "missing host");
  expect_error("tcp:127.0.0.1:70000", "port 70000 out of range");
  expect_error("tcp:127.0.0.1:65536", "port 65536 out of range");
  expect_error("tcp:127.0.0.1:99999999999999999999999", "out of range");
  expect_error("tcp:127.0.0.1:-1", "bad port '-1'");
  expect_error("tcp:127.0.0.1:8o", "bad port '8o'");
  expect_error("tcp:127.0.0.1: 80", "bad port");
  expect_error("tcp:127.0.0.1:0x50", "bad port");
  expect_error("tcp:::1:80", "IPv6 address must be in brackets");
  expect_error("tcp:[::1:80", "missing ']'");
  expect_error("tcp:[::1]80", "expected ':' after ']'");
  expect_error("tcp:[127.0.0.1]:80", "brackets are only for IPv6");
  expect_error("tcp:example.com:80", "bad host 'example.com'");
  expect_error("tcp:256.0.0.1:80", "bad host '256.0.0.1'");
  expect_error("tcp:1.2.3:80", "bad host");
  expect_error("tcp:[fe80::1%eth0]:80", "bad host");
  expect_error("tcp:[localhost]:80", "bad host");
}

static void test_vsock(void **state) {
  lr_taddr_t a;
  (void)state;
  parse_ok("vsock:3:50505", &a);
  assert_int_equal(a.kind, LR_TADDR_VSOCK);
  assert_int_equal(a.cid, 3);
  assert_int_equal(a.port, 50505);
  parse_ok("vsock:any:50505", &a);
  assert_int_equal(a.cid, LR_VSOCK_CID_ANY);
  parse_ok("vsock:-1:1", &a);
  assert_int_equal(a.cid, LR_VSOCK_CID_ANY);
  parse_ok("vsock:4294967294:4294967295", &a);
  assert_int_equal(a.cid, 4294967294u);
  assert_int_equal(a.port, 4294967295u);
  parse_ok("vsock:2:0", &a);
  assert_int_equal(a.cid, 2);
  assert_int_equal(a.port, 0);
  expect_roundtrip("vsock:-1:1024", "vsock:any:1024");
  expect_roundtrip("vsock:42:7", "vsock:42:7");

  expect_error("vsock:3", "missing port");
  expect_error("vsock:3:", "missing port");
  expect_error("vsock::5", "missing CID");
  expect_error("vsock:", "missing CID");
  expect_error("vsock:abc:5", "bad CID 'abc'");
  expect_error("vsock:-2:5", "bad CID '-2'");
  expect_error("vsock:4294967296:5", "bad CID");
  expect_error("vsock:3:4294967296", "port 4294967296 out of range");
  expect_error("vsock:3:5:6", "bad port '5:6'");
  expect_error("vsock:3:x", "bad port 'x'");
}

static void test_fc(void **state) {
  lr_taddr_t a;
  char addr[300], path[200];
  (void)state;
  parse_ok("fc:/srv/vm1/v.sock:50505", &a);
  assert_int_equal(a.kind, LR_TADDR_FC);
  assert_string_equal(a.path, "/srv/vm1/v.sock");
  assert_int_equal(a.port, 50505);
  /* The path runs up to the LAST colon. */
  parse_ok("fc:/run/a:b/v.sock:1024", &a);
  assert_string_equal(a.path, "/run/a:b/v.sock");
  assert_int_equal(a.port, 1024);
  expect_roundtrip("fc:/tmp/fc.sock:52", "fc:/tmp/fc.sock:52");

  memset(path, 'f', 107);
  path[107] = '\0';
  snprintf(addr, sizeof addr, "fc:%s:5", path);
  parse_ok(addr, &a);
  memset(path, 'f', 150);
  path[150] = '\0';
  snprintf(addr, sizeof addr, "fc:%s:5", path);
  expect_error(addr, "path too long (150 bytes, max 107)");

  expect_error("fc:/tmp/v.sock", "missing port");
  expect_error("fc:/tmp/v.sock:", "missing port");
  expect_error("fc::5", "missing socket path");
  expect_error("fc:", "missing socket path and port");
  expect_error("fc:/tmp/v.sock:5x", "bad port '5x'");
  expect_error("fc:/tmp/v.sock:4294967296", "out of range");
}

static void test_guid(void **state) {
  lr_guid_t g, h;
  char out[40];
  (void)state;
  assert_int_equal(lr_guid_parse("01234567-89ab-CDEF-0123-456789abcdef", &g), 0);
  assert_int_equal(g.data1, 0x01234567u);
  assert_int_equal(g.data2, 0x89AB);
  assert_int_equal(g.data3, 0xCDEF);
  assert_int_equal(g.data4[0], 0x01);
  assert_int_equal(g.data4[1], 0x23);
  assert_int_equal(g.data4[2], 0x45);
  assert_int_equal(g.data4[7], 0xEF);
  assert_string_equal(lr_guid_format(&g, out, sizeof out), "01234567-89AB-CDEF-0123-456789ABCDEF");
  assert_int_equal(strlen(out), 36);
  assert_int_equal(lr_guid_parse("{01234567-89AB-CDEF-0123-456789ABCDEF}", &h), 0);
  assert_memory_equal(&g, &h, sizeof g);

  assert_int_equal(lr_guid_parse("", &g), -1);
  assert_int_equal(lr_guid_parse("01234567-89ab-cdef-0123-456789abcde", &g), -1);
  assert_int_equal(lr_guid_parse("01234567-89ab-cdef-0123-456789abcdef0", &g), -1);
  assert_int_equal(lr_guid_parse("01234567x89ab-cdef-0123-456789abcdef", &g), -1);
  assert_int_equal(lr_guid_parse("0123456g-89ab-cdef-0123-456789abcdef", &g), -1);
  assert_int_equal(lr_guid_parse("{01234567-89ab-cdef-0123-456789abcdef", &g), -1);
  assert_int_equal(lr_guid_parse("(01234567-89ab-cdef-0123-456789abcdef)", &g), -1);
  assert_int_equal(lr_guid_parse("0123456-789ab-cdef-0123-456789abcdef", &g), -1);
  assert_int_equal(lr_guid_parse("01234567-89ab-cdef-0123-456789abcd+f", &g), -1);
}

static void test_hvsock_service_id(void **state) {
  lr_guid_t g;
  char out[40];
  (void)state;
  /* The well-known constructions: port 50505 (0xC549) and the vsock
   * template itself at port 0. */
  lr_hvsock_service_id(50505, &g);
  assert_string_equal(lr_guid_format(&g, out, sizeof out), "0000C549-FACB-11E6-BD58-64006A7986D3");
  lr_hvsock_service_id(0, &g);
  assert_string_equal(lr_guid_format(&g, out, sizeof out), "00000000-FACB-11E6-BD58-64006A7986D3");
  lr_hvsock_service_id(0xFFFFFFFFu, &g);
  assert_string_equal(lr_guid_format(&g, out, sizeof out), "FFFFFFFF-FACB-11E6-BD58-64006A7986D3");
  lr_hvsock_service_id(2, &g);
  assert_int_equal(g.data1, 2);
  assert_int_equal(g.data2, 0xFACB);
  assert_int_equal(g.data3, 0x11E6);
  assert_int_equal(g.data4[0], 0xBD);
  assert_int_equal(g.data4[7], 0xD3);
}

static void test_hvsock(void **state) {
  lr_taddr_t a;
  char out[100];
  (void)state;
  parse_ok("hvsock:{C2F0E7D6-1D3A-4C1E-9A53-5B1D2A4E6F70}:50505", &a);
  assert_int_equal(a.kind, LR_TADDR_HVSOCK);
  assert_int_equal(a.port, 50505);
  assert_int_equal(a.vmid.data1, 0xC2F0E7D6u);
  assert_string_equal(lr_guid_format(&a.vmid, out, sizeof out), "C2F0E7D6-1D3A-4C1E-9A53-5B1D2A4E6F70");
  expect_roundtrip("hvsock:c2f0e7d6-1d3a-4c1e-9a53-5b1d2a4e6f70:1",
                   "hvsock:C2F0E7D6-1D3A-4C1E-9A53-5B1D2A4E6F70:1");
  /* Microsoft's well-known VM ids by name. */
  expect_roundtrip("hvsock:any:5", "hvsock:00000000-0000-0000-0000-000000000000:5");
  expect_roundtrip("hvsock:parent:5", "hvsock:A42E7CDA-D03F-480C-9CC2-A4DE20ABB878:5");
  expect_roundtrip("hvsock:loopback:5", "hvsock:E0E16197-DD56-4A10-9195-5EE7A155A838:5");
  expect_roundtrip("hvsock:children:5", "hvsock:90DB8B89-0D35-4F79-8CE9-49EA0AC8B7CD:5");

  expect_error("hvsock:C2F0E7D6-1D3A-4C1E-9A53-5B1D2A4E6F70", "missing port");
  expect_error("hvsock:C2F0E7D6-1D3A-4C1E-9A53-5B1D2A4E6F70:", "missing port");
  expect_error("hvsock:not-a-guid:5", "bad GUID 'not-a-guid'");
  expect_error("hvsock:C2F0E7D6-1D3A-4C1E-9A53-5B1D2A4E6F7:5", "bad GUID");
  expect_error("hvsock:C2F0E7D6-1D3A-4C1E-9A53-5B1D2A4E6F7Z:5", "bad GUID");
  expect_error("hvsock::5", "missing VM id");
  expect_error("hvsock:C2F0E7D6-1D3A-4C1E-9A53-5B1D2A4E6F70:5000000000", "out of range");
}

static void test_kind_errors(void **state) {
  lr_taddr_t a;
  char err[256];
  (void)state;
  expect_error("udp:1.2.3.4:5", "unknown transport 'udp' (expected unix, tcp, vsock, fc or hvsock)");
  expect_error("x:y", "unknown transport 'x'");
  expect_error("UNIX:/tmp/s", "unknown transport 'UNIX'");
  expect_error(":/tmp/s", "unknown transport ''");
  expect_error("/tmp/lorelay.sock", "missing transport prefix");
  assert_int_equal(lr_taddr_parse("", &a, err, sizeof err), -1);
  assert_non_null(strstr(err, "empty transport address"));
  assert_int_equal(lr_taddr_parse(NULL, &a, err, sizeof err), -1);
  /* A tiny error buffer is truncated, never overrun. */
  {
    char small[8];
    memset(small, 'Z', sizeof small);
    assert_int_equal(lr_taddr_parse("bogus:1", &a, small, 5), -1);
    assert_int_equal(small[4], '\0');
    assert_int_equal(small[5], 'Z');
    assert_int_equal(lr_taddr_parse("bogus:1", &a, NULL, 0), -1);
  }
  /* A very long address is clipped in the message, not the reason. */
  {
    char longaddr[1000];
    memset(longaddr, 'q', sizeof longaddr - 1);
    longaddr[sizeof longaddr - 1] = '\0';
    memcpy(longaddr, "zz:", 3);
    assert_int_equal(lr_taddr_parse(longaddr, &a, err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown transport 'zz'"));
  }
}

static void test_ip(void **state) {
  int fam = 0;
  uint8_t ip[16];
  char out[80];
  static const uint8_t v4[16] = {10, 1, 2, 3};
  (void)state;
  assert_int_equal(lr_ip_parse("10.1.2.3", &fam, ip), 0);
  assert_int_equal(fam, 4);
  assert_memory_equal(ip, v4, 16);
  assert_int_equal(lr_ip_parse("::ffff:10.1.2.3", &fam, ip), 0);
  assert_int_equal(fam, 6);
  assert_int_equal(ip[10], 0xFF);
  assert_int_equal(ip[15], 3);
  assert_int_equal(lr_ip_parse("", &fam, ip), -1);
  assert_int_equal(lr_ip_parse("1.2.3.4.5", &fam, ip), -1);
  assert_int_equal(lr_ip_parse(" 1.2.3.4", &fam, ip), -1);
  assert_int_equal(lr_ip_parse("[::1]", &fam, ip), -1);
  assert_int_equal(lr_ip_parse("::1%lo", &fam, ip), -1);
  assert_int_equal(lr_ip_parse("::g", &fam, ip), -1);

  assert_string_equal(lr_ipport_format(4, v4, 80, out, sizeof out), "10.1.2.3:80");
  assert_int_equal(lr_ip_parse("::1", &fam, ip), 0);
  assert_string_equal(lr_ipport_format(6, ip, 65535, out, sizeof out), "[::1]:65535");
  assert_int_equal(lr_ip_parse("::", &fam, ip), 0);
  assert_string_equal(lr_ipport_format(6, ip, 0, out, sizeof out), "[::]:0");
  assert_int_equal(lr_ip_parse("0.0.0.0", &fam, ip), 0);
  assert_string_equal(lr_ipport_format(4, ip, 8000, out, sizeof out), "0.0.0.0:8000");
  /* Truncation is safe. */
  memset(out, 'Z', sizeof out);
  lr_ipport_format(4, v4, 80, out, 4);
  assert_string_equal(out, "10.");
  assert_int_equal(out[4], 'Z');
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unix),         cmocka_unit_test(test_tcp_ipv4),
      cmocka_unit_test(test_tcp_ipv6),     cmocka_unit_test(test_tcp_errors),
      cmocka_unit_test(test_vsock),        cmocka_unit_test(test_fc),
      cmocka_unit_test(test_guid),         cmocka_unit_test(test_hvsock_service_id),
      cmocka_unit_test(test_hvsock),       cmocka_unit_test(test_kind_errors),
      cmocka_unit_test(test_ip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
