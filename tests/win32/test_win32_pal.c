/* Unit tests for the Windows platform layer (host/win32/pal_win32.c,
 * options.c, log_win32.c), run under Wine.
 *
 * hvsock: the SOCKADDR_HV a connect would use is checked byte for byte (VM
 * id, the vsock service-id template with Data1 = port); no AF_HYPERV
 * connect is ever made here. Stand-ins: the listener is opened on 127.0.0.1
 * and on [::1] with SO_EXCLUSIVEADDRUSE set, accepts a real loopback
 * connection, and a second stand-in cannot take its port. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "lr_testutil.h"
#include "lr_win32.h"
#include <shlobj.h>
#include <ws2tcpip.h>

static void parse_ok(const char *s, lr_taddr_t *a) {
  char err[256] = "";
  if (lr_taddr_parse(s, a, err, sizeof err) != 0)
    fail_msg("'%s' rejected: %s", s, err);
}

static void test_hvsock_sockaddr(void **state) {
  (void)state;
  lr_taddr_t a;
  SOCKADDR_HV sa;
  char err[256] = "";
  static const GUID want_vm = {0xd2f7a9b4, 0x1c3e, 0x4a5b, {0x8d, 0x6f, 0x0e, 0x1f, 0x2a, 0x3b, 0x4c, 0x5d}};
  static const GUID want_service = {50505, 0xfacb, 0x11e6, {0xbd, 0x58, 0x64, 0x00, 0x6a, 0x79, 0x86, 0xd3}};

  parse_ok("hvsock:D2F7A9B4-1C3E-4A5B-8D6F-0E1F2A3B4C5D:50505", &a);
  memset(&sa, 0xAB, sizeof sa);
  /* The exact bytes connect() is given (it is passed sizeof sa): family 34
   * (AF_HYPERV in the Windows SDK; spelled as a number here, since comparing
   * the macro with its own definition could not fail), Reserved 0, then the
   * GUIDs with Data1..3 little-endian: port 50505 = 0xC549 in Data1. The
   * 0xAB fill above shows up if any byte is left unset. */
  static const uint8_t want_bytes[36] = {
      0x22, 0x00, 0x00, 0x00,                         /* Family 34, Reserved */
      0xb4, 0xa9, 0xf7, 0xd2, 0x3e, 0x1c, 0x5b, 0x4a, /* VmId */
      0x8d, 0x6f, 0x0e, 0x1f, 0x2a, 0x3b, 0x4c, 0x5d,
      0x49, 0xc5, 0x00, 0x00, 0xcb, 0xfa, 0xe6, 0x11, /* ServiceId */
      0xbd, 0x58, 0x64, 0x00, 0x6a, 0x79, 0x86, 0xd3,
  };
  assert_int_equal(lr_win32_hvsock_sockaddr(&a, &sa, err, sizeof err), 0);
  assert_int_equal(sa.Family, 34);
  assert_int_equal(sa.Reserved, 0);
  assert_memory_equal(&sa.VmId, &want_vm, sizeof(GUID));
  assert_memory_equal(&sa.ServiceId, &want_service, sizeof(GUID));
  assert_int_equal(sizeof sa, sizeof want_bytes);
  assert_memory_equal(&sa, want_bytes, sizeof want_bytes);

  /* A full 32-bit vsock port goes into Data1 whole. */
  parse_ok("hvsock:{00000000-0000-0000-0000-000000000000}:4294967295", &a);
  assert_int_equal(lr_win32_hvsock_sockaddr(&a, &sa, err, sizeof err), 0);
  assert_int_equal(sa.ServiceId.Data1, 0xFFFFFFFFu);
}

static void test_hvsock_refuses_other_kinds(void **state) {
  (void)state;
  lr_taddr_t a;
  SOCKADDR_HV sa;
  char err[256] = "";
  uv_os_sock_t s;
  parse_ok("tcp:127.0.0.1:7000", &a);
  assert_int_equal(lr_win32_hvsock_sockaddr(&a, &sa, err, sizeof err), -1);
  assert_non_null(strstr(err, "not an hvsock: address"));
  /* The pal refuses before creating any socket. */
  err[0] = '\0';
  assert_int_equal(lr_pal_win32()->vmsock_connect(&a, &s, err, sizeof err), UV_EAFNOSUPPORT);
  assert_non_null(strstr(err, "tcp:127.0.0.1:7000"));
}

static void expect_guest(const char *guest, const char *vmid, const char *want) {
  lr_guid_t g;
  char out[256], err[256] = "";
  if (vmid != NULL)
    assert_int_equal(lr_guid_parse(vmid, &g), 0);
  if (lr_win32_guest_address(guest, vmid ? &g : NULL, out, sizeof out, err, sizeof err) != 0)
    fail_msg("guest=%s vm-id=%s rejected: %s", guest ? guest : "-", vmid ? vmid : "-", err);
  assert_string_equal(out, want);
}

static void expect_guest_error(const char *guest, const char *vmid, const char *reason) {
  lr_guid_t g;
  char out[256], err[256] = "";
  if (vmid != NULL)
    assert_int_equal(lr_guid_parse(vmid, &g), 0);
  assert_int_equal(lr_win32_guest_address(guest, vmid ? &g : NULL, out, sizeof out, err, sizeof err), -1);
  if (strstr(err, reason) == NULL)
    fail_msg("error is '%s', expected to contain '%s'", err, reason);
}

static void test_vm_id_option(void **state) {
  (void)state;
  expect_guest("tcp:127.0.0.1:5000", NULL, "tcp:127.0.0.1:5000");
  expect_guest(NULL, "{d2f7a9b4-1c3e-4a5b-8d6f-0e1f2a3b4c5d}",
               "hvsock:D2F7A9B4-1C3E-4A5B-8D6F-0E1F2A3B4C5D:50505");
  expect_guest("hvsock:00000000-0000-0000-0000-000000000000:6000",
               "D2F7A9B4-1C3E-4A5B-8D6F-0E1F2A3B4C5D",
               "hvsock:D2F7A9B4-1C3E-4A5B-8D6F-0E1F2A3B4C5D:6000");
  expect_guest_error(NULL, NULL, "give --guest ADDR or --vm-id");
  expect_guest_error("tcp:127.0.0.1:5000", "D2F7A9B4-1C3E-4A5B-8D6F-0E1F2A3B4C5D",
                     "--vm-id needs an hvsock: guest address");
  expect_guest_error("bogus:1", NULL, "--guest: ");
}

static void test_default_paths(void **state) {
  (void)state;
  char buf[512], want[512];
  const lr_pal_t *pal = lr_pal_win32();
  assert_string_equal(pal->name, "win32");
  assert_string_equal(pal->default_status_path(buf, sizeof buf), "\\\\.\\pipe\\lorelayd");
  /* The common application data folder, whatever %ProgramData% says. */
  assert_int_equal(SHGetFolderPathA(NULL, CSIDL_COMMON_APPDATA, NULL, SHGFP_TYPE_CURRENT, want), S_OK);
  strcat(want, "\\lorelay\\lorelay.ini");
  assert_string_equal(pal->default_config_path(buf, sizeof buf), want);
  SetEnvironmentVariableA("ProgramData", "C:\\elsewhere");
  assert_string_equal(pal->default_config_path(buf, sizeof buf), want);
}

/* ---- stand-in listeners ------------------------------------------------ */

typedef struct {
  uv_tcp_t server;
  uv_tcp_t client;
  uv_tcp_t accepted;
  uv_connect_t creq;
  int accepted_ok, connected, closed_on_fail;
} listen_ctx_t;

static void on_conn(uv_stream_t *server, int status) {
  listen_ctx_t *c = server->data;
  assert_int_equal(status, 0);
  uv_tcp_init(server->loop, &c->accepted);
  assert_int_equal(uv_accept(server, (uv_stream_t *)&c->accepted), 0);
  c->accepted_ok = 1;
  uv_close((uv_handle_t *)&c->accepted, NULL);
  uv_close((uv_handle_t *)&c->server, NULL);
}

static void on_connect(uv_connect_t *req, int status) {
  listen_ctx_t *c = req->data;
  assert_int_equal(status, 0);
  c->connected = 1;
  uv_close((uv_handle_t *)&c->client, NULL);
}

static void on_fail_close(uv_handle_t *h) {
  listen_ctx_t *c = h->data;
  c->closed_on_fail = 1;
}

/* The stand-in's socket has SO_EXCLUSIVEADDRUSE set (Wine reports the
 * option as set, so this fails if the pal stops setting it). */
static void assert_exclusive(uv_tcp_t *h) {
  uv_os_fd_t fd;
  BOOL v = FALSE;
  int vlen = sizeof v;
  assert_int_equal(uv_fileno((uv_handle_t *)h, &fd), 0);
  assert_int_equal(getsockopt((SOCKET)fd, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (char *)&v, &vlen), 0);
  if (!v)
    fail_msg("the stand-in's socket does not have SO_EXCLUSIVEADDRUSE set");
}

static void test_exclusive_loopback_listener(void **state) {
  (void)state;
  uv_loop_t loop;
  listen_ctx_t c, c2;
  struct sockaddr_in sa;
  struct sockaddr_storage got;
  int len = sizeof got;
  const lr_pal_t *pal = lr_pal_win32();

  memset(&c, 0, sizeof c);
  memset(&c2, 0, sizeof c2);
  assert_int_equal(uv_loop_init(&loop), 0);
  uv_ip4_addr("127.0.0.1", 0, &sa);
  c.server.data = &c;
  assert_int_equal(pal->listen_loopback(&loop, &c.server, (const struct sockaddr *)&sa, 16, on_conn,
                                        on_fail_close), 0);
  assert_int_equal(uv_tcp_getsockname(&c.server, (struct sockaddr *)&got, &len), 0);
  uint16_t port = ntohs(((struct sockaddr_in *)&got)->sin_port);
  assert_true(port != 0);
  assert_int_equal(((struct sockaddr_in *)&got)->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
  sa.sin_port = htons(port);
  assert_exclusive(&c.server);

  /* Our own second stand-in on the same port fails and is closed for us. */
  c2.server.data = &c2;
  int r = pal->listen_loopback(&loop, &c2.server, (const struct sockaddr *)&sa, 16, on_conn,
                               on_fail_close);
  if (r != UV_EADDRINUSE && r != UV_EACCES)
    fail_msg("second listener on port %u: %s, expected EADDRINUSE or EACCES", port, uv_err_name(r));

  /* A foreign socket asking for SO_REUSEADDR cannot hijack the port. This
   * can fail only on Windows: under Wine the bind is refused (WSAEACCES)
   * whether or not the stand-in is exclusive, because Wine does not let
   * SO_REUSEADDR share a port that has a listener. What makes the test fail
   * under Wine if the exclusivity goes is assert_exclusive() above. */
  SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  assert_true(s != INVALID_SOCKET);
  BOOL on = TRUE;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, (const char *)&on, sizeof on);
  if (bind(s, (const struct sockaddr *)&sa, sizeof sa) == 0)
    fail_msg("SO_REUSEADDR socket could bind the stand-in's port %u", port);
  closesocket(s);

  /* And the stand-in really accepts on 127.0.0.1. */
  c.creq.data = &c;
  uv_tcp_init(&loop, &c.client);
  assert_int_equal(uv_tcp_connect(&c.creq, &c.client, (const struct sockaddr *)&sa, on_connect), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_true(c2.closed_on_fail);
  assert_true(c.connected);
  assert_true(c.accepted_ok);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Whether this host can bind [::1] at all, asked of Winsock directly (not
 * through the code under test). */
static int host_has_ipv6_loopback(void) {
  struct sockaddr_in6 sa6;
  SOCKET s = socket(AF_INET6, SOCK_STREAM, IPPROTO_TCP);
  int ok;
  if (s == INVALID_SOCKET)
    return 0;
  uv_ip6_addr("::1", 0, &sa6);
  ok = bind(s, (const struct sockaddr *)&sa6, sizeof sa6) == 0;
  closesocket(s);
  return ok;
}

static void test_listener_on_ipv6_loopback(void **state) {
  (void)state;
  uv_loop_t loop;
  listen_ctx_t c, c2;
  struct sockaddr_in6 sa6;
  struct sockaddr_storage got;
  int len = sizeof got;
  const lr_pal_t *pal = lr_pal_win32();

  memset(&c, 0, sizeof c);
  memset(&c2, 0, sizeof c2);
  assert_int_equal(uv_loop_init(&loop), 0);
  uv_ip6_addr("::1", 0, &sa6);
  c.server.data = &c;
  int have6 = host_has_ipv6_loopback();
  int r = pal->listen_loopback(&loop, &c.server, (const struct sockaddr *)&sa6, 16, on_conn,
                               on_fail_close);
  if (!have6) {
    /* The failure is reported, and the handle is closed for us. */
    if (r != UV_EADDRNOTAVAIL && r != UV_EAFNOSUPPORT)
      fail_msg("[::1] listener without IPv6: %s, expected EADDRNOTAVAIL or EAFNOSUPPORT",
               uv_err_name(r));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_true(c.closed_on_fail);
    assert_int_equal(uv_loop_close(&loop), 0);
    LR_SKIP_OR_FAIL("this host cannot bind [::1]: only the failure path of the [::1] stand-in ran");
  }
  if (r != 0)
    fail_msg("[::1] listener: %s, although this host can bind [::1]", uv_err_name(r));

  assert_int_equal(uv_tcp_getsockname(&c.server, (struct sockaddr *)&got, &len), 0);
  assert_int_equal(got.ss_family, AF_INET6);
  assert_memory_equal(&((struct sockaddr_in6 *)&got)->sin6_addr, &in6addr_loopback,
                      sizeof(struct in6_addr));
  uint16_t port = ntohs(((struct sockaddr_in6 *)&got)->sin6_port);
  assert_true(port != 0);
  sa6.sin6_port = htons(port);
  assert_exclusive(&c.server);

  /* A second stand-in on the same [::1] port fails and is closed for us. */
  c2.server.data = &c2;
  r = pal->listen_loopback(&loop, &c2.server, (const struct sockaddr *)&sa6, 16, on_conn,
                           on_fail_close);
  if (r != UV_EADDRINUSE && r != UV_EACCES)
    fail_msg("second [::1] listener on port %u: %s, expected EADDRINUSE or EACCES", port,
             uv_err_name(r));

  /* And the stand-in really accepts on [::1]. */
  c.creq.data = &c;
  uv_tcp_init(&loop, &c.client);
  assert_int_equal(uv_tcp_connect(&c.creq, &c.client, (const struct sockaddr *)&sa6, on_connect), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_true(c2.closed_on_fail);
  assert_true(c.connected);
  assert_true(c.accepted_ok);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- log sink ---------------------------------------------------------- */

static void test_log_file_sink(void **state) {
  (void)state;
  char path[MAX_PATH], dir[MAX_PATH], line[512];
  int found_info = 0, found_debug = 0;
  assert_true(GetTempPathA(sizeof dir, dir) > 0);
  snprintf(path, sizeof path, "%slorelay-test-%lu.log", dir, (unsigned long)GetCurrentProcessId());
  DeleteFileA(path);

  lr_log_level_t old = lr_log_get_level();
  lr_log_set_level(LR_LOG_DEBUG);
  lr_win32_log_open(LR_WIN32_LOG_CONSOLE, path);
  assert_string_equal(lr_win32_log_path(), path);
  LR_INFO("hello from the test %d", 42);
  LR_DEBUG("debug line %s", "x");
  lr_win32_log_close();
  lr_log_set_level(old);

  FILE *f = fopen(path, "r");
  assert_non_null(f);
  while (fgets(line, sizeof line, f)) {
    if (strstr(line, "info: hello from the test 42"))
      found_info = 1;
    if (strstr(line, "debug: debug line x"))
      found_debug = 1;
  }
  fclose(f);
  DeleteFileA(path);
  assert_true(found_info);
  assert_true(found_debug);
}

/* The handshake's HMAC-SHA256 is BCrypt's: RFC 4231 test cases 2 and 6
 * (a key longer than the block), the same vectors the Linux layers are
 * checked against; and BCryptGenRandom's bytes differ call to call. */
static void test_bcrypt_hmac_and_random(void **state) {
  (void)state;
  static const uint8_t want2[32] = {
      0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
      0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43};
  static const uint8_t want6[32] = {
      0x60, 0xe4, 0x31, 0x59, 0x1e, 0xe0, 0xb6, 0x7f, 0x0d, 0x8a, 0x26, 0xaa, 0xcb, 0xf5, 0xb7, 0x7f,
      0x8e, 0x0b, 0xc6, 0x21, 0x37, 0x28, 0xc5, 0x14, 0x05, 0x46, 0x04, 0x0f, 0x0e, 0xe3, 0x7f, 0x54};
  const lr_pal_t *pal = lr_pal_win32();
  uint8_t out[32], key6[131], r1[32], r2[32];
  const char *m2 = "what do ya want for nothing?";
  const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
  assert_non_null(pal->hmac_sha256);
  assert_non_null(pal->random_bytes);
  assert_int_equal(
      pal->hmac_sha256((const uint8_t *)"Jefe", 4, (const uint8_t *)m2, strlen(m2), out), 0);
  assert_memory_equal(out, want2, 32);
  memset(key6, 0xaa, sizeof key6);
  assert_int_equal(pal->hmac_sha256(key6, sizeof key6, (const uint8_t *)m6, strlen(m6), out), 0);
  assert_memory_equal(out, want6, 32);
  assert_int_equal(pal->random_bytes(r1, sizeof r1), 0);
  assert_int_equal(pal->random_bytes(r2, sizeof r2), 0);
  assert_memory_not_equal(r1, r2, sizeof r1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hvsock_sockaddr),
      cmocka_unit_test(test_bcrypt_hmac_and_random),
      cmocka_unit_test(test_hvsock_refuses_other_kinds),
      cmocka_unit_test(test_vm_id_option),
      cmocka_unit_test(test_default_paths),
      cmocka_unit_test(test_exclusive_loopback_listener),
      cmocka_unit_test(test_listener_on_ipv6_loopback),
      cmocka_unit_test(test_log_file_sink),
  };
  return lr_test_exit_code(cmocka_run_group_tests(tests, NULL, NULL));
}
