/* Unit tests for the Windows platform layer (host/win32/pal_win32.c,
 * options.c, log_win32.c), run under Wine.
 *
 * hvsock: the SOCKADDR_HV a connect would use is checked byte for byte (VM
 * id, the vsock service-id template with Data1 = port); no AF_HYPERV
 * connect is ever made here. Stand-ins: the listener is opened on 127.0.0.1
 * and on [::1] with SO_EXCLUSIVEADDRUSE set, accepts a real loopback
 * connection, and a second stand-in cannot take its port. The status pipe
 * and the data directory: the DACLs read back from the objects, ACE by ACE,
 * on the pipe's first instance and on the ones libuv creates later. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "lr_testutil.h"
#include "lr_win32.h"
#include <aclapi.h>
#include <sddl.h>
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

static void test_transport_check(void **state) {
  char err[256];
  (void)state;
  assert_int_equal(lr_win32_transport_check("tcp:127.0.0.1:5000", err, sizeof err), 0);
  assert_int_equal(
      lr_win32_transport_check("hvsock:D2F7A9B4-1C3E-4A5B-8D6F-0E1F2A3B4C5D:50505", err, sizeof err),
      0);
  assert_int_equal(lr_win32_transport_check("bogus:1", err, sizeof err), 0); /* the core says why */
  static const char *const refused[][2] = {{"unix:/x", "unix: guests need lorelayd on Linux"},
                                           {"vsock:3:50505", "vsock: guests need lorelayd on Linux"},
                                           {"fc:/srv/v.sock:5", "fc: guests need lorelayd on Linux"}};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    err[0] = '\0';
    assert_int_equal(lr_win32_transport_check(refused[i][0], err, sizeof err), -1);
    if (strstr(err, refused[i][1]) == NULL || strstr(err, "hvsock:VMID:PORT") == NULL)
      fail_msg("%s: error is '%s'", refused[i][0], err);
  }
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

static void udp_fail_closed(uv_handle_t *h) { *(int *)h->data = 1; }

/* A UDP stand-in: SO_EXCLUSIVEADDRUSE too, a second one on its port fails
 * (and is closed for us), and it carries a datagram. */
static void test_exclusive_udp_standin(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_udp_t u, u2;
  int closed2 = 0;
  struct sockaddr_in sa;
  struct sockaddr_storage got;
  int len = sizeof got;
  const lr_pal_t *pal = lr_pal_win32();
  assert_non_null(pal->udp_bind_loopback);
  assert_int_equal(uv_loop_init(&loop), 0);
  uv_ip4_addr("127.0.0.1", 0, &sa);
  assert_int_equal(pal->udp_bind_loopback(&loop, &u, (const struct sockaddr *)&sa, NULL), 0);
  assert_int_equal(uv_udp_getsockname(&u, (struct sockaddr *)&got, &len), 0);
  uint16_t port = ntohs(((struct sockaddr_in *)&got)->sin_port);
  assert_true(port != 0);
  sa.sin_port = htons(port);
  uv_os_fd_t fd;
  BOOL v = FALSE;
  int vlen = sizeof v;
  assert_int_equal(uv_fileno((uv_handle_t *)&u, &fd), 0);
  assert_int_equal(getsockopt((SOCKET)fd, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (char *)&v, &vlen), 0);
  if (!v) fail_msg("the UDP stand-in's socket does not have SO_EXCLUSIVEADDRUSE set");
  u2.data = &closed2;
  int r = pal->udp_bind_loopback(&loop, &u2, (const struct sockaddr *)&sa, udp_fail_closed);
  if (r != UV_EADDRINUSE && r != UV_EACCES)
    fail_msg("second UDP stand-in on port %u: %s, expected EADDRINUSE or EACCES", port,
             uv_err_name(r));
  SOCKET c = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
  assert_true(c != INVALID_SOCKET);
  assert_int_equal(sendto(c, "dgram", 5, 0, (const struct sockaddr *)&sa, sizeof sa), 5);
  char buf[16];
  struct sockaddr_storage from;
  /* A blocking read of the one datagram, through the handle's socket. */
  int fromlen = sizeof from;
  int n = recvfrom((SOCKET)fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fromlen);
  assert_int_equal(n, 5);
  assert_memory_equal(buf, "dgram", 5);
  closesocket(c);
  uv_close((uv_handle_t *)&u, NULL);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_true(closed2);
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

/* ---- who may use the status pipe and the data directory ---------------- */

/* Wine 8 keeps a pipe's DACL, but not the "protected" flag, and stores no
 * security descriptor for files at all: it makes one up from the Unix mode
 * (owner: the Wine user; SYSTEM and the owner full control; Everyone what
 * the "other" bits allow), and turns a DACL it is given into a mode. So
 * under Wine a file's owner is always lorelayd's own account and only
 * "who else may write" can be exercised; the rest runs on Windows only. */
static int on_wine(void) {
  return GetProcAddress(GetModuleHandleA("ntdll.dll"), "wine_get_version") != NULL;
}

static int self_is_builtin(void) {
  char self[256];
  assert_int_equal(lr_win32_self_sid(self, sizeof self), 0);
  return strcmp(self, "S-1-5-18") == 0 || strcmp(self, "S-1-5-32-544") == 0;
}

/* ACE i of dacl: type, flags, SID (as text) and a mask that is full access
 * (GENERIC_ALL, or what the object's generic mapping made of it). */
static void expect_ace(PACL dacl, DWORD i, BYTE type, BYTE flags, const char *sid) {
  ACE_HEADER *h;
  char *s = NULL;
  assert_true(GetAce(dacl, i, (void **)&h));
  assert_int_equal(h->AceType, type);
  assert_int_equal(h->AceFlags & (OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE | INHERIT_ONLY_ACE),
                   flags);
  /* ACCESS_ALLOWED_ACE and ACCESS_DENIED_ACE have the same layout. */
  ACCESS_ALLOWED_ACE *a = (ACCESS_ALLOWED_ACE *)h;
  assert_true(a->Mask == GENERIC_ALL || (a->Mask & FILE_ALL_ACCESS) == FILE_ALL_ACCESS);
  assert_true(ConvertSidToStringSidA((PSID)&a->SidStart, &s));
  if (strcmp(s, sid) != 0)
    fail_msg("ACE %lu is for %s, want %s", (unsigned long)i, s, sid);
  LocalFree(s);
}

/* The pipe DACL: deny NETWORK, allow SYSTEM, Administrators, and the test's
 * own account when it is neither; nothing else, not inherited. */
static void expect_pipe_dacl(HANDLE pipe) {
  PSECURITY_DESCRIPTOR sd = NULL;
  PACL dacl = NULL;
  SECURITY_DESCRIPTOR_CONTROL ctl;
  DWORD rev;
  char self[256];
  assert_int_equal(GetSecurityInfo(pipe, SE_KERNEL_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL,
                                   &dacl, NULL, &sd),
                   ERROR_SUCCESS);
  assert_non_null(dacl);
  assert_true(GetSecurityDescriptorControl(sd, &ctl, &rev));
  if (!on_wine())
    assert_true(ctl & SE_DACL_PROTECTED);
  assert_int_equal(lr_win32_self_sid(self, sizeof self), 0);
  assert_int_equal(dacl->AceCount, self_is_builtin() ? 3 : 4);
  expect_ace(dacl, 0, ACCESS_DENIED_ACE_TYPE, 0, "S-1-5-2");
  expect_ace(dacl, 1, ACCESS_ALLOWED_ACE_TYPE, 0, "S-1-5-18");
  expect_ace(dacl, 2, ACCESS_ALLOWED_ACE_TYPE, 0, "S-1-5-32-544");
  if (!self_is_builtin())
    expect_ace(dacl, 3, ACCESS_ALLOWED_ACE_TYPE, 0, self);
  LocalFree(sd);
}

static void on_status_conn(uv_stream_t *server, int status) {
  int *n = server->data;
  uv_pipe_t *c = malloc(sizeof *c);
  assert_int_equal(status, 0);
  uv_pipe_init(server->loop, c, 0);
  assert_int_equal(uv_accept(server, (uv_stream_t *)c), 0);
  uv_close((uv_handle_t *)c, (uv_close_cb)free);
  (*n)++;
}

static void test_status_pipe_dacl(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_pipe_t server, squatter;
  char name[128], err[512] = "";
  int accepted = 0;
  const lr_pal_t *pal = lr_pal_win32();

  assert_non_null(pal->secure_endpoint);
  snprintf(name, sizeof name, "\\\\.\\pipe\\lorelay-test-dacl-%lu", (unsigned long)GetCurrentProcessId());
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(uv_pipe_init(&loop, &server, 0), 0);
  server.data = &accepted;
  assert_int_equal(uv_pipe_bind(&server, name), 0);
  if (pal->secure_endpoint(&server, name, err, sizeof err) != 0)
    fail_msg("secure_endpoint: %s", err);
  /* The first instance, through the same public handle the pal used. */
  uv_os_fd_t first;
  assert_int_equal(uv_fileno((uv_handle_t *)&server, &first), 0);
  expect_pipe_dacl(first);

  /* uv_listen creates the other pending instances, with NULL security
   * attributes: they are checked against, and report, the same DACL. */
  assert_int_equal(uv_listen((uv_stream_t *)&server, 4, on_status_conn), 0);
  int later = 0;
  for (int i = 1; i < server.pipe.serv.pending_instances; i++) {
    HANDLE p = server.pipe.serv.accept_reqs[i].pipeHandle;
    if (p == INVALID_HANDLE_VALUE)
      continue;
    expect_pipe_dacl(p);
    later++;
  }
  assert_true(later >= 1);

  /* Its own account (SYSTEM/Administrators here, or itself) can connect, as
   * lorelayctl does: read and write. Then the instance libuv creates after
   * the accept is checked too. */
  HANDLE c = CreateFileA(name, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING, 0, NULL);
  if (c == INVALID_HANDLE_VALUE)
    fail_msg("connect to the secured pipe: error %lu", (unsigned long)GetLastError());
  for (int i = 0; i < 200 && accepted == 0; i++)
    uv_run(&loop, UV_RUN_NOWAIT), Sleep(5);
  assert_int_equal(accepted, 1);
  CloseHandle(c);
  for (int i = 0; i < server.pipe.serv.pending_instances; i++) {
    HANDLE p = server.pipe.serv.accept_reqs[i].pipeHandle;
    if (p != INVALID_HANDLE_VALUE)
      expect_pipe_dacl(p);
  }

  /* A second server on the same name is refused on Windows
   * (FILE_FLAG_FIRST_PIPE_INSTANCE). Wine 8 ignores that flag: there the
   * bind succeeds and its handle is one more instance of our pipe, so it
   * must at least carry our DACL. */
  assert_int_equal(uv_pipe_init(&loop, &squatter, 0), 0);
  int r = uv_pipe_bind(&squatter, name);
  if (on_wine() && r == 0) {
    uv_os_fd_t sq;
    assert_int_equal(uv_fileno((uv_handle_t *)&squatter, &sq), 0);
    expect_pipe_dacl(sq);
    print_message("Wine ignores FILE_FLAG_FIRST_PIPE_INSTANCE: a second bind succeeded there "
                  "(its instance has our DACL); the refusal is a Windows-only check\n");
  } else if (r != UV_EADDRINUSE && r != UV_EACCES) {
    fail_msg("a second bind of %s: %d (%s), want EADDRINUSE or EACCES", name, r, uv_err_name(r));
  }

  uv_close((uv_handle_t *)&squatter, NULL);
  uv_close((uv_handle_t *)&server, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* A directory or file given a descriptor in SDDL, for the trust checks.
 * Created first, then set: CreateDirectory's descriptor goes through the
 * umask under Wine, which keeps others from writing whatever the DACL
 * says; SetFileSecurity does not (Wine turns the DACL into a chmod, see
 * on_wine). */
static void set_sddl(const char *path, const char *sddl) {
  PSECURITY_DESCRIPTOR sd = NULL;
  SECURITY_INFORMATION info = DACL_SECURITY_INFORMATION;
  assert_true(ConvertStringSecurityDescriptorToSecurityDescriptorA(sddl, SDDL_REVISION_1, &sd, NULL));
  if (strncmp(sddl, "O:", 2) == 0)
    info |= OWNER_SECURITY_INFORMATION;
  if (!SetFileSecurityA(path, info, sd))
    fail_msg("SetFileSecurity %s %s: error %lu", path, sddl, (unsigned long)GetLastError());
  LocalFree(sd);
}

static void make_dir_sddl(const char *path, const char *sddl) {
  if (!CreateDirectoryA(path, NULL))
    fail_msg("CreateDirectory %s: error %lu", path, (unsigned long)GetLastError());
  set_sddl(path, sddl);
}

static void make_file_sddl(const char *path, const char *sddl) {
  HANDLE f = CreateFileA(path, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, 0, NULL);
  if (f == INVALID_HANDLE_VALUE)
    fail_msg("CreateFile %s: error %lu", path, (unsigned long)GetLastError());
  CloseHandle(f);
  set_sddl(path, sddl);
}

static void expect_untrusted(const char *path, const char *reason) {
  char why[600] = "";
  assert_int_equal(lr_win32_path_trusted(path, why, sizeof why), -1);
  if (!strstr(why, reason))
    fail_msg("%s: reason '%s' lacks '%s'", path, why, reason);
}

static void test_dir_trust(void **state) {
  (void)state;
  char tmp[MAX_PATH], d[MAX_PATH], sddl[512], want[512], self[256], why[600] = "";

  assert_true(GetTempPathA(sizeof tmp, tmp) > 0);
  assert_int_equal(lr_win32_self_sid(self, sizeof self), 0);
  snprintf(d, sizeof d, "%slorelay-dacl-%lu", tmp, (unsigned long)GetCurrentProcessId());
  RemoveDirectoryA(d);

  /* The descriptors, as written: exactly SYSTEM, Administrators (and
   * lorelayd's own account when it is neither), protected. */
  assert_int_equal(lr_win32_dir_sddl(sddl, sizeof sddl), 0);
  snprintf(want, sizeof want, "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)%s%s%s",
           self_is_builtin() ? "" : "(A;OICI;FA;;;", self_is_builtin() ? "" : self,
           self_is_builtin() ? "" : ")");
  assert_string_equal(sddl, want);
  assert_int_equal(lr_win32_pipe_sddl(sddl, sizeof sddl), 0);
  snprintf(want, sizeof want, "D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)%s%s%s",
           self_is_builtin() ? "" : "(A;;GA;;;", self_is_builtin() ? "" : self,
           self_is_builtin() ? "" : ")");
  assert_string_equal(sddl, want);

  /* The directory lorelayd makes is trusted. */
  assert_int_equal(lr_win32_dir_sddl(sddl, sizeof sddl), 0);
  make_dir_sddl(d, sddl);
  if (lr_win32_path_trusted(d, why, sizeof why) != 0)
    fail_msg("lorelayd's own directory is not trusted: %s", why);
  if (!on_wine()) {
    /* Read back ACE by ACE (Wine does not store file descriptors). */
    PSECURITY_DESCRIPTOR sd = NULL;
    PACL dacl = NULL;
    SECURITY_DESCRIPTOR_CONTROL ctl;
    DWORD rev;
    assert_int_equal(GetNamedSecurityInfoA(d, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, NULL,
                                           NULL, &dacl, NULL, &sd),
                     ERROR_SUCCESS);
    assert_true(GetSecurityDescriptorControl(sd, &ctl, &rev));
    assert_true(ctl & SE_DACL_PROTECTED);
    assert_int_equal(dacl->AceCount, self_is_builtin() ? 2 : 3);
    expect_ace(dacl, 0, ACCESS_ALLOWED_ACE_TYPE, OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE, "S-1-5-18");
    expect_ace(dacl, 1, ACCESS_ALLOWED_ACE_TYPE, OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE, "S-1-5-32-544");
    if (!self_is_builtin())
      expect_ace(dacl, 2, ACCESS_ALLOWED_ACE_TYPE, OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE, self);
    LocalFree(sd);
  }
  RemoveDirectoryA(d);

  /* Everyone may write: refused, naming who (under Wine: mode 0777). */
  make_dir_sddl(d, "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;WD)");
  expect_untrusted(d, "S-1-1-0");
  RemoveDirectoryA(d);
  /* Everyone may only read: fine. */
  make_dir_sddl(d, "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FR;;;WD)");
  assert_int_equal(lr_win32_path_trusted(d, why, sizeof why), 0);
  RemoveDirectoryA(d);
  if (!on_wine()) {
    /* Owned by Users (someone who is not an administrator made it). */
    make_dir_sddl(d, "O:BUD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)");
    expect_untrusted(d, "is owned by");
    RemoveDirectoryA(d);
  } else {
    print_message("under Wine every file is owned by the Wine user: the owner check is not run\n");
  }
}

/* The real %ProgramData%\lorelay of this Wine prefix (the unit tests' own). */
static void test_data_dir_prepare(void **state) {
  (void)state;
  char dir[MAX_PATH], ini[MAX_PATH], why[600] = "";
  int created = -1;
  lr_win32_programdata_path("", dir, sizeof dir);
  dir[strlen(dir) - 1] = '\0';
  lr_win32_programdata_path("lorelay.ini", ini, sizeof ini);
  DeleteFileA(ini);
  lr_win32_programdata_path("lorelayd.log", why, sizeof why);
  DeleteFileA(why);
  RemoveDirectoryA(dir);
  assert_int_equal(GetFileAttributesA(dir), INVALID_FILE_ATTRIBUTES);

  /* Absent and not to be created (a console run): nothing to check. */
  assert_int_equal(lr_win32_data_dir_prepare(0, &created, why, sizeof why), 0);
  assert_int_equal(created, 0);
  assert_int_equal(GetFileAttributesA(dir), INVALID_FILE_ATTRIBUTES);
  /* The service makes it, trusted; the next start finds it and keeps it. */
  if (lr_win32_data_dir_prepare(1, &created, why, sizeof why) != 0)
    fail_msg("prepare: %s", why);
  assert_int_equal(created, 1);
  assert_true(GetFileAttributesA(dir) & FILE_ATTRIBUTE_DIRECTORY);
  assert_int_equal(lr_win32_data_dir_prepare(1, &created, why, sizeof why), 0);
  assert_int_equal(created, 0);

  /* A lorelay.ini that Everyone may rewrite is refused, named. */
  make_file_sddl(ini, "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;WD)");
  assert_int_equal(lr_win32_data_dir_prepare(1, &created, why, sizeof why), -1);
  if (!strstr(why, "lorelay.ini"))
    fail_msg("reason does not name lorelay.ini: %s", why);
  DeleteFileA(ini);
  /* One with the directory's own ACEs is fine. */
  make_file_sddl(ini, "D:P(A;;FA;;;SY)(A;;FA;;;BA)");
  assert_int_equal(lr_win32_data_dir_prepare(0, &created, why, sizeof why), 0);
  DeleteFileA(ini);

  /* A directory others may write (a plain mkdir under ProgramData on
   * Windows inherits "Users: create files"), or that someone else made
   * before the service ever ran, is refused, by a console run (checking
   * only) and by the service. */
  RemoveDirectoryA(dir);
  make_dir_sddl(dir, "D:(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;WD)");
  assert_int_equal(lr_win32_data_dir_prepare(0, &created, why, sizeof why), -1);
  assert_non_null(strstr(why, "S-1-1-0"));
  assert_int_equal(lr_win32_data_dir_prepare(1, &created, why, sizeof why), -1);
  RemoveDirectoryA(dir);
  if (!on_wine()) {
    make_dir_sddl(dir, "O:BUD:(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)");
    assert_int_equal(lr_win32_data_dir_prepare(0, &created, why, sizeof why), -1);
    assert_non_null(strstr(why, "is owned by"));
    assert_int_equal(lr_win32_data_dir_prepare(1, &created, why, sizeof why), -1);
    RemoveDirectoryA(dir);
  }
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

/* The handshake's crypto is BCrypt's (HMAC, BCryptGenRandom), checked
 * against the same vectors as the Linux layers. */
static void test_bcrypt_hmac_and_random(void **state) {
  (void)state;
  lr_test_pal_crypto(lr_pal_win32());
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hvsock_sockaddr),
      cmocka_unit_test(test_bcrypt_hmac_and_random),
      cmocka_unit_test(test_hvsock_refuses_other_kinds),
      cmocka_unit_test(test_vm_id_option),
      cmocka_unit_test(test_transport_check),
      cmocka_unit_test(test_default_paths),
      cmocka_unit_test(test_exclusive_loopback_listener),
      cmocka_unit_test(test_exclusive_udp_standin),
      cmocka_unit_test(test_listener_on_ipv6_loopback),
      cmocka_unit_test(test_log_file_sink),
      cmocka_unit_test(test_status_pipe_dacl),
      cmocka_unit_test(test_dir_trust),
      cmocka_unit_test(test_data_dir_prepare),
  };
  return lr_test_exit_code(cmocka_run_group_tests(tests, NULL, NULL));
}
