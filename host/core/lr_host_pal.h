/* The host's half of the platform layer: what only lorelayd needs from
 * its OS on top of the common lr_pal_t (shared/lr_pal.h) the relay and
 * the handshake use on both sides. The guest fills only lr_pal_t; each
 * host platform (host/posix, host/win32) fills one of these, and the host
 * core reaches its OS through nothing else. Split so that neither side
 * carries members it must leave NULL: every member here is one the host
 * core calls, and a NULL says the platform lacks the feature (the core
 * then says so rather than guessing). */
#ifndef LR_HOST_PAL_H
#define LR_HOST_PAL_H

#include "lr_addr.h"
#include "lr_pal.h"

typedef struct lr_nsock_s lr_nsock_t; /* host/posix/nsock.c */

typedef struct lr_host_pal_s {
  lr_pal_t base; /* the relay's and the handshake's calls, as on the guest */

  /* VM sockets (vsock, hvsock). A platform fills one of two shapes; NULL
   * in all three says it has none, and such addresses are then refused.
   *
   * Non-blocking, where the OS has it (Linux AF_VSOCK): vmsock_connect_start
   * makes the socket and starts its connect without waiting. 0: *out is
   * connected; 1 (as nsock_take; libuv has no UV_EINPROGRESS): *out's
   * connect is under way; either way *out
   * is the caller's (uv_tcp_open or sock_close). Otherwise a negative uv
   * error, a one-line reason in err and no socket. Reasons leave the
   * address out: the core puts it in front. The core then waits on
   * the loop (a uv_poll_t) for *out to turn writable and asks
   * vmsock_connect_result how the connect ended: 0, or a negative uv error
   * with a reason in err (said as vmsock_connect_start would, hints
   * included); the socket stays the caller's either way. Both run on the
   * loop thread and never block. */
  int (*vmsock_connect_start)(const lr_taddr_t *a, uv_os_sock_t *out, char *err, size_t errlen);
  int (*vmsock_connect_result)(const lr_taddr_t *a, uv_os_sock_t s, char *err, size_t errlen);
  /* Blocking, where the OS has only that (Windows AF_HYPERV): connects with
   * the platform's own connect timeout; 0 with *out connected, or a negative
   * uv error and a one-line reason in err. The core runs each call on a
   * thread of its own, never on libuv's pool (which it would hold for
   * seconds per unresponsive VM); used only when vmsock_connect_start is
   * NULL. */
  int (*vmsock_connect)(const lr_taddr_t *a, uv_os_sock_t *out, char *err, size_t errlen);
  /* One hop for namespace guests (lorelayd --netns): lorelayd connects to
   * the guest's server itself, with sockets made inside the guest's network
   * namespace by a thread of its own (host/posix/nsock.c), so no descriptor
   * ever comes from the agent and a connection costs no round trip to it.
   * All three NULL where there are no namespaces (Windows).
   *
   * nsock_open: a pool for namespace NAME (/run/netns/NAME; a name that
   * starts with '/' is a namespace file's path, as tests use); ready(data)
   * runs on the loop thread when sockets came after nsock_take found a kind
   * empty. The guest owns the pool and ends it with nsock_close. NULL with
   * a one-line reason in err (no such namespace, cannot enter it). */
  lr_nsock_t *(*nsock_open)(uv_loop_t *loop, const char *netns, void (*ready)(void *data),
                            void *data, char *err, size_t errlen);
  /* Takes a pooled socket (TCP, or UDP when udp is set) of sa's family and
   * connects it to sa, without blocking: 0 (connected) or 1 (TCP, the
   * connect still under way), with *out now the caller's to uv_tcp_open /
   * uv_udp_open or sock_close; UV_EAGAIN: none pooled, ready() follows;
   * another negative uv error: making or connecting one failed
   * (UV_ECONNREFUSED: nothing listens on sa in the namespace). */
  int (*nsock_take)(lr_nsock_t *p, const struct sockaddr *sa, int udp, uv_os_sock_t *out);
  /* Stops the pool's thread and closes the sockets it still holds; p is
   * freed once its loop handle has closed. */
  void (*nsock_close)(lr_nsock_t *p);

  /* Opens a stand-in listener on sa (loopback; or a guest's hostAddress or
   * listenAddress) that no other host process can share,
   * and calls uv_listen(h, backlog, cb). h is always initialised on loop by
   * this call. Returns 0; or, with h already being closed with on_fail (free
   * its memory there): UV_EADDRINUSE or UV_EACCES for a port another socket
   * holds, UV_EADDRNOTAVAIL or UV_EAFNOSUPPORT when this host has no such
   * address, or another uv error. */
  int (*listen_loopback)(uv_loop_t *loop, uv_tcp_t *h, const struct sockaddr *sa,
                         int backlog, uv_connection_cb cb, uv_close_cb on_fail);

  /* The same for a UDP stand-in: binds h (initialised on loop by this call)
   * to sa so that no other host process can share the port, and starts
   * nothing. 0; or, with h already being closed with on_fail, the errors
   * listen_loopback gives. NULL: this host forwards no UDP. */
  int (*udp_bind_loopback)(uv_loop_t *loop, uv_udp_t *h, const struct sockaddr *sa,
                           uv_close_cb on_fail);

  /* Directory for the daemon's sockets (Linux: /run/lorelay as root,
   * $XDG_RUNTIME_DIR/lorelay otherwise, /tmp/lorelay-UID when that is
   * unset); NULL where there is none. */
  const char *(*run_dir)(char *buf, size_t len);
  /* Narrows who may connect to the bound status endpoint h at path: Linux
   * mode 0660 in a directory only the daemon's user may write; Windows a
   * DACL for SYSTEM and Administrators. 0, or -1 with err (the daemon then
   * refuses to start rather than serve an open endpoint). */
  int (*secure_endpoint)(uv_pipe_t *h, const char *path, char *err, size_t errlen);
  /* statusGroup: lets a group connect to the status endpoint at path (Linux:
   * the socket, and the daemon's own run directory, become group-owned).
   * 0 applied, 1 the group does not exist, -1 failed, 2 not applicable (a
   * user's own daemon without the group); msg says which, for the log.
   * NULL where the endpoint has no groups (Windows). */
  int (*endpoint_group)(const char *path, const char *group, char *msg, size_t msglen);
  /* Who listens on (or has bound, udp) the host address sa: for a
   * stand-in in conflict. 0 with *pid and command filled (from the host's
   * socket table and process list), or -1 when nobody visible to us does.
   * NULL where the platform cannot tell. */
  int (*port_holder)(const struct sockaddr *sa, int udp, uint32_t *pid, char *command,
                     size_t len);
  /* Default status endpoint (Unix socket path or named pipe name). */
  const char *(*default_status_path)(char *buf, size_t len);
  /* Default config file path. */
  const char *(*default_config_path)(char *buf, size_t len);
} lr_host_pal_t;

/* The host platform layer linked into this program (host/posix or
 * host/win32): what lorelayd starts from. */
const lr_host_pal_t *lr_pal_host(void);

#endif
