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

typedef struct lr_host_pal_s {
  lr_pal_t base; /* the relay's and the handshake's calls, as on the guest */

  /* Blocking connect of a VM socket (vsock, hvsock) with the platform's own
   * connect timeout. Runs on a libuv worker thread. On success *out is a
   * connected socket ready for uv_tcp_open and 0 is returned; otherwise a
   * negative uv error code and a one-line reason in err. NULL when the
   * platform has no VM sockets: such addresses are then refused. */
  int (*vmsock_connect)(const lr_taddr_t *a, uv_os_sock_t *out, char *err, size_t errlen);

  /* One hop for same-kernel guests: s is a socket an agent passed over the
   * Unix transport, still owned by a libuv handle. Checks that it is a
   * connected TCP stream socket and returns in *out a duplicate the caller
   * owns (the handle that received s is then closed). 0, or -1 with a
   * one-line reason in err. NULL: no descriptor passing on this platform. */
  int (*adopt_passed_socket)(uv_os_sock_t s, uv_os_sock_t *out, char *err, size_t errlen);
  /* The same for a UDP flow: a connected UDP socket. NULL: UDP flows keep
   * the two-hop path. */
  int (*adopt_passed_udp)(uv_os_sock_t s, uv_os_sock_t *out, char *err, size_t errlen);

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
   * $XDG_RUNTIME_DIR/lorelay otherwise); NULL where there is none. */
  const char *(*run_dir)(char *buf, size_t len);
  /* Narrows who may connect to the bound status endpoint h at path: Linux
   * mode 0660 in a directory only the daemon's user may write; Windows a
   * DACL for SYSTEM and Administrators. 0, or -1 with err (the daemon then
   * refuses to start rather than serve an open endpoint). */
  int (*secure_endpoint)(uv_pipe_t *h, const char *path, char *err, size_t errlen);
  /* Default status endpoint (Unix socket path or named pipe name). */
  const char *(*default_status_path)(char *buf, size_t len);
  /* Default config file path. */
  const char *(*default_config_path)(char *buf, size_t len);
} lr_host_pal_t;

/* The host platform layer linked into this program (host/posix or
 * host/win32): what lorelayd starts from. */
const lr_host_pal_t *lr_pal_host(void);

#endif
