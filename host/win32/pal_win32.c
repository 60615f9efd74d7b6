/* lr_host_pal_t for Windows: AF_HYPERV connects, exclusive loopback stand-ins,
 * the default paths, and the handshake's HMAC-SHA256 and nonces (BCrypt).
 *
 * libuv cannot create AF_HYPERV sockets, so the connect is done here with
 * plain Winsock, blocking (vmsock_connect: the host core runs each call on
 * a thread of its own, never on libuv's pool); HVSOCKET_CONNECT_TIMEOUT
 * bounds it so a VM that is gone is an error, not a stuck thread. A
 * non-blocking start (vmsock_connect_start) would need an overlapped
 * ConnectEx, which AF_HYPERV is not documented to support and Wine, which
 * tests this build, has no AF_HYPERV at all to try it on. Stand-in
 * listeners are created natively too, because the one option that matters
 * (SO_EXCLUSIVEADDRUSE: no other process may bind the same port, not even
 * with SO_REUSEADDR) must be set before bind(), which uv_tcp_bind gives no
 * hook for. */
#include "lr_win32.h"

#include <ws2tcpip.h>
#include <aclapi.h>
#include <sddl.h>
#include <shlobj.h>
#include <bcrypt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "lr_transport.h"

void lr_win32_guid_to_win(const lr_guid_t *in, GUID *out) {
  out->Data1 = in->data1;
  out->Data2 = in->data2;
  out->Data3 = in->data3;
  memcpy(out->Data4, in->data4, sizeof out->Data4);
}

int lr_win32_hvsock_sockaddr(const lr_taddr_t *a, SOCKADDR_HV *sa, char *err, size_t errlen) {
  lr_guid_t service;
  if (a->kind != LR_TADDR_HVSOCK) {
    char s[256];
    snprintf(err, errlen, "%s is not an hvsock: address", lr_taddr_format(a, s, sizeof s));
    return -1;
  }
  memset(sa, 0, sizeof *sa);
  sa->Family = AF_HYPERV;
  lr_win32_guid_to_win(&a->vmid, &sa->VmId);
  lr_hvsock_service_id(a->port, &service);
  lr_win32_guid_to_win(&service, &sa->ServiceId);
  return 0;
}

static int win32_vmsock_connect(const lr_taddr_t *a, uv_os_sock_t *out, char *err, size_t errlen) {
  SOCKADDR_HV sa;
  char s[256];
  DWORD timeout_ms = LR_TRANSPORT_TIMEOUT_MS;
  SOCKET sock;
  int e;

  if (lr_win32_hvsock_sockaddr(a, &sa, err, errlen) != 0)
    return UV_EAFNOSUPPORT;
  lr_taddr_format(a, s, sizeof s);
  /* Overlapped, because uv_tcp_open puts it on the loop's completion port. */
  sock = WSASocketW(AF_HYPERV, SOCK_STREAM, HV_PROTOCOL_RAW, NULL, 0,
                    WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (sock == INVALID_SOCKET) {
    e = WSAGetLastError();
    if (e == WSAEAFNOSUPPORT || e == WSAEPROTONOSUPPORT || e == WSAESOCKTNOSUPPORT ||
        e == WSAEPFNOSUPPORT || e == WSAEINVAL)
      snprintf(err, errlen, "this system has no AF_HYPERV sockets (Hyper-V sockets need "
               "Windows 10/Server 2016 or later; Wine has none)");
    else
      snprintf(err, errlen, "socket(AF_HYPERV): Winsock error %d", e);
    return uv_translate_sys_error(e);
  }
  if (setsockopt(sock, HV_PROTOCOL_RAW, HVSOCKET_CONNECT_TIMEOUT, (const char *)&timeout_ms,
                 sizeof timeout_ms) != 0) {
    /* Older builds lack the option; the system default timeout still ends
     * the connect, so carry on rather than refuse the transport. */
    LR_DEBUG("%s: HVSOCKET_CONNECT_TIMEOUT not supported (Winsock error %d)", s,
             WSAGetLastError());
  }
  if (connect(sock, (const struct sockaddr *)&sa, sizeof sa) != 0) {
    e = WSAGetLastError();
    closesocket(sock);
    if (e == WSAETIMEDOUT)
      snprintf(err, errlen, "connect timed out after %lu ms (is the VM running and "
               "lorelay-agent listening on vsock port %u?)", (unsigned long)timeout_ms,
               (unsigned)a->port);
    else
      snprintf(err, errlen, "connect: %s (Winsock error %d)",
               uv_strerror(uv_translate_sys_error(e)), e);
    return uv_translate_sys_error(e);
  }
  *out = sock;
  return 0;
}

/* A socket of type on sa that no other process can share the port with
 * (SO_EXCLUSIVEADDRUSE: Windows otherwise lets a later SO_REUSEADDR socket
 * take the port over), bound. INVALID_SOCKET with *err a uv error. */
static SOCKET exclusive_bound_socket(const struct sockaddr *sa, int type, int proto, int *err) {
  BOOL on = TRUE;
  int salen = sa->sa_family == AF_INET6 ? (int)sizeof(struct sockaddr_in6)
                                        : (int)sizeof(struct sockaddr_in);
  SOCKET sock = WSASocketW(sa->sa_family, type, proto, NULL, 0,
                           WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (sock == INVALID_SOCKET) {
    *err = uv_translate_sys_error(WSAGetLastError());
    return INVALID_SOCKET;
  }
  if (setsockopt(sock, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (const char *)&on, sizeof on) != 0 ||
      /* A [::1] stand-in stands in for [::1] only; 127.0.0.1 gets its own. */
      (sa->sa_family == AF_INET6 &&
       setsockopt(sock, IPPROTO_IPV6, IPV6_V6ONLY, (const char *)&on, sizeof on) != 0) ||
      bind(sock, sa, salen) != 0) {
    *err = uv_translate_sys_error(WSAGetLastError());
    closesocket(sock);
    return INVALID_SOCKET;
  }
  return sock;
}

static int win32_listen_loopback(uv_loop_t *loop, uv_tcp_t *h, const struct sockaddr *sa,
                                 int backlog, uv_connection_cb cb, uv_close_cb on_fail) {
  SOCKET sock;
  int r = uv_tcp_init(loop, h);
  if (r != 0)
    return r; /* h is not a live handle: nothing to close */
  sock = exclusive_bound_socket(sa, SOCK_STREAM, IPPROTO_TCP, &r);
  if (sock == INVALID_SOCKET)
    goto fail;
  r = uv_tcp_open(h, (uv_os_sock_t)sock);
  if (r != 0) {
    closesocket(sock);
    goto fail;
  }
  /* From here the handle owns the socket: closing h closes it.
   * One AcceptEx at a time, not libuv's default of 32: each pending accept
   * holds a socket made in advance, so a default listener costs 32 sockets
   * before its first client, and a guest port that comes and goes costs 32
   * socket creations and closes each time (under Wine a port churning every
   * 3 ms stalled every other stand-in for seconds). Clients arriving while
   * the one accept is re-posted wait in the listen backlog. */
  uv_tcp_simultaneous_accepts(h, 0);
  r = uv_listen((uv_stream_t *)h, backlog, cb);
  if (r != 0)
    goto fail;
  return 0;
fail:
  uv_close((uv_handle_t *)h, on_fail);
  return r;
}

static int win32_udp_bind_loopback(uv_loop_t *loop, uv_udp_t *h, const struct sockaddr *sa,
                                   uv_close_cb on_fail) {
  SOCKET sock;
  int r = uv_udp_init(loop, h);
  if (r != 0)
    return r;
  sock = exclusive_bound_socket(sa, SOCK_DGRAM, IPPROTO_UDP, &r);
  if (sock == INVALID_SOCKET)
    goto fail;
  r = uv_udp_open(h, (uv_os_sock_t)sock);
  if (r != 0) {
    closesocket(sock);
    goto fail;
  }
  return 0;
fail:
  uv_close((uv_handle_t *)h, on_fail);
  return r;
}

/* The shell's idea of ProgramData, not the environment variable: a service
 * and the admin's console must agree on where lorelay.ini is, and the
 * environment differs between them (under Wine a service even sees
 * %ProgramData% = C:\users\Public while cmd.exe sees C:\ProgramData). */
const char *lr_win32_programdata_path(const char *name, char *buf, size_t len) {
  char base[MAX_PATH];
  if (SHGetFolderPathA(NULL, CSIDL_COMMON_APPDATA, NULL, SHGFP_TYPE_CURRENT, base) != S_OK) {
    DWORD n = GetEnvironmentVariableA("ProgramData", base, sizeof base);
    if (n == 0 || n >= sizeof base)
      snprintf(base, sizeof base, "C:\\ProgramData");
  }
  snprintf(buf, len, "%s\\lorelay\\%s", base, name);
  return buf;
}

/* The status pipe: SYSTEM and Administrators only (lr_win32_pipe_sddl).
 *
 * libuv creates every instance of the pipe itself, always with NULL security
 * attributes: uv_pipe_bind the first (FILE_FLAG_FIRST_PIPE_INSTANCE, so a
 * name someone else holds fails the bind and the core refuses to start),
 * uv_listen the other pending ones (4), and one more after each accept.
 * With NULL, the first instance gets Windows' default pipe descriptor:
 * SYSTEM, Administrators and the creator full control, Everyone and
 * Anonymous read.
 *
 * What covers the later instances: a named pipe has one security
 * descriptor, kept with the pipe's name, not one per instance. NPFS stores
 * it in the pipe's FCB when the first instance creates the name; creating
 * another instance of an existing pipe ignores the caller's security
 * attributes and is instead access-checked against that descriptor, which
 * must grant the creator FILE_CREATE_PIPE_INSTANCE (Microsoft's "Named Pipe
 * Security and Access Rights"; ReactOS npfs, create.c and seinfo.c, shows
 * the same: NpCreateExistingNamedPipe checks Fcb->SecurityDescriptor, and
 * NpCommonSetSecurityInfo replaces Fcb->SecurityDescriptor whichever
 * instance's handle it is called on). So one SetSecurityInfo on the first
 * instance's handle, right after uv_pipe_bind and before uv_listen creates
 * the others, sets the DACL every instance libuv makes afterwards is
 * checked against and shares; tests/win32/test_win32_pal.c reads it back
 * from the later instances (under Wine, which keeps it per pipe as well).
 * That handle is reachable through the public uv_fileno (it is
 * handle->handle, accept_reqs[0].pipeHandle after the bind), and libuv
 * opens it with WRITE_DAC for exactly this (its own uv_pipe_chmod does the
 * same; the core no longer calls uv_pipe_chmod, which would add Everyone).
 *
 * lorelayd's own account is in the DACL too when it is neither SYSTEM nor
 * an Administrator (NT SERVICE\lorelayd, a console user): without
 * FILE_CREATE_PIPE_INSTANCE for itself libuv could not create the next
 * instance, and it retries a failed one at once, forever.
 *
 * What this leaves open:
 * - Between uv_pipe_bind and this call (no event loop turn in between) the
 *   default descriptor applies: a local user could open the first
 *   instance for reading, which the core then accepts as a status client
 *   that can never send a request; its idle timeout closes it.
 * - The descriptor lives as long as the pipe does, i.e. while at least one
 *   instance is open. libuv keeps 4 pending instances, and closes one only
 *   to replace it in the same call, or hands it to an accepted client that
 *   keeps it open; only if creating every one of them failed at once (out
 *   of resources) and no client were connected would the name vanish, and
 *   libuv's next CreateNamedPipe (without FILE_FLAG_FIRST_PIPE_INSTANCE)
 *   would make a new pipe with the default descriptor. We cannot catch that
 *   from here: the core has no hook after uv_listen. */
static int win32_secure_endpoint(uv_pipe_t *h, const char *path, char *err, size_t errlen) {
  char sddl[512];
  PSECURITY_DESCRIPTOR sd = NULL;
  PACL dacl = NULL;
  BOOL present = FALSE, defaulted = FALSE;
  uv_os_fd_t fd;
  DWORD e;

  if (uv_fileno((const uv_handle_t *)h, &fd) != 0 || fd == INVALID_HANDLE_VALUE) {
    snprintf(err, errlen, "status endpoint %s: no pipe handle to secure", path);
    return -1;
  }
  if (lr_win32_pipe_sddl(sddl, sizeof sddl) != 0 ||
      !ConvertStringSecurityDescriptorToSecurityDescriptorA(sddl, SDDL_REVISION_1, &sd, NULL) ||
      !GetSecurityDescriptorDacl(sd, &present, &dacl, &defaulted) || !present) {
    snprintf(err, errlen, "status endpoint %s: cannot build the DACL %s (error %lu)", path, sddl,
             (unsigned long)GetLastError());
    LocalFree(sd);
    return -1;
  }
  e = SetSecurityInfo(fd, SE_KERNEL_OBJECT,
                      DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION, NULL, NULL,
                      dacl, NULL);
  LocalFree(sd);
  if (e != ERROR_SUCCESS) {
    snprintf(err, errlen, "status endpoint %s: cannot set its DACL (SetSecurityInfo error %lu); "
             "refusing to serve status to every local user", path, (unsigned long)e);
    return -1;
  }
  LR_DEBUG("status endpoint %s: DACL %s", path, sddl);
  return 0;
}

const char *lr_paths_default_status(char *buf, size_t len) {
  snprintf(buf, len, "\\\\.\\pipe\\lorelayd");
  return buf;
}

const char *lr_paths_default_config(char *buf, size_t len) {
  return lr_win32_programdata_path("lorelay.ini", buf, len);
}

/* One daemon per machine, one pipe name: nothing to fall back to. */
const char *lr_paths_system_status(char *buf, size_t len) {
  (void)buf;
  (void)len;
  return NULL;
}

/* The pipe's DACL admits SYSTEM and Administrators: an elevated prompt. */
const char *lr_paths_access_hint(const char *path, char *buf, size_t len) {
  snprintf(buf, len, "%s admits SYSTEM and Administrators: run lorelayctl from an elevated prompt",
           path);
  return buf;
}

static void win32_sock_close(uv_os_sock_t s) { closesocket(s); }

/* HMAC-SHA256 from the system's CNG provider (bcrypt.dll). A provider per
 * call: once per stream, and nothing to share between threads. */
static int win32_hmac_sha256(const uint8_t *key, size_t klen, const uint8_t *msg, size_t mlen,
                             uint8_t out[32]) {
  BCRYPT_ALG_HANDLE alg = NULL;
  BCRYPT_HASH_HANDLE h = NULL;
  int rc = -1;
  if (klen > ULONG_MAX || mlen > ULONG_MAX)
    return -1;
  if (!BCRYPT_SUCCESS(BCryptOpenAlgorithmProvider(&alg, BCRYPT_SHA256_ALGORITHM, NULL,
                                                  BCRYPT_ALG_HANDLE_HMAC_FLAG)))
    return -1;
  if (BCRYPT_SUCCESS(BCryptCreateHash(alg, &h, NULL, 0, (PUCHAR)key, (ULONG)klen, 0)) &&
      BCRYPT_SUCCESS(BCryptHashData(h, (PUCHAR)msg, (ULONG)mlen, 0)) &&
      BCRYPT_SUCCESS(BCryptFinishHash(h, out, 32, 0)))
    rc = 0;
  if (h)
    BCryptDestroyHash(h);
  BCryptCloseAlgorithmProvider(alg, 0);
  return rc;
}

static int win32_random_bytes(uint8_t *buf, size_t n) {
  while (n) {
    ULONG k = n > 0x1000000 ? 0x1000000 : (ULONG)n;
    if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, buf, k, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
      return -1;
    buf += k;
    n -= k;
  }
  return 0;
}

/* No peer_closed probe: Winsock has no POLLHUP reading of an AF_HYPERV
 * socket's state, so over hvsock a guest-side reset arrives as a close
 * (docs/windows.md); over tcp: it is a real RST anyway. No run directory:
 * the status endpoint is a named pipe, secured by win32_secure_endpoint. */
static const lr_host_pal_t win32_pal = {
  .base =
      {
          .name = "win32",
          .sock_close = win32_sock_close,
          .hmac_sha256 = win32_hmac_sha256,
          .random_bytes = win32_random_bytes,
      },
  .vmsock_connect = win32_vmsock_connect,
  .listen_loopback = win32_listen_loopback,
  .udp_bind_loopback = win32_udp_bind_loopback,
  .secure_endpoint = win32_secure_endpoint,
  .default_status_path = lr_paths_default_status,
  .default_config_path = lr_paths_default_config,
};

const lr_host_pal_t *lr_pal_win32(void) {
  return &win32_pal;
}

const lr_host_pal_t *lr_pal_host(void) {
  return &win32_pal;
}
