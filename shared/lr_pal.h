/* The platform abstraction layer: the few things the portable core cannot
 * do through libuv alone, as a struct of function pointers (the shape of
 * SQLite's VFS). The core never asks which OS it runs on; host/posix and
 * host/win32 each fill one of these and hand it to lr_host_new().
 *
 * Kept deliberately small: VM-socket connects (libuv cannot create AF_VSOCK
 * or AF_HYPERV sockets), exclusive loopback listeners (SO_EXCLUSIVEADDRUSE
 * on Windows), and the default paths. */
#ifndef LR_PAL_H
#define LR_PAL_H

#include <stddef.h>
#include <uv.h>
#include "lr_addr.h"

typedef struct lr_pal_s {
  const char *name; /* "posix", "win32" */

  /* Blocking connect of a VM socket (vsock, hvsock) with the platform's own
   * connect timeout. Runs on a libuv worker thread. On success *out is a
   * connected socket ready for uv_tcp_open and 0 is returned; otherwise a
   * negative uv error code and a one-line reason in err. NULL when the
   * platform has no VM sockets: such addresses are then refused. */
  int (*vmsock_connect)(const lr_taddr_t *a, uv_os_sock_t *out, char *err, size_t errlen);

  /* Opens a stand-in listener on sa (127.0.0.1 or ::1) that no other host
   * process can share, and calls uv_listen(h, backlog, cb). h is always
   * initialised on loop by this call. Returns 0; or, with h already being
   * closed with on_fail (free its memory there): UV_EADDRINUSE or UV_EACCES
   * for a port another socket holds, UV_EADDRNOTAVAIL or UV_EAFNOSUPPORT
   * when this host has no such loopback, or another uv error. */
  int (*listen_loopback)(uv_loop_t *loop, uv_tcp_t *h, const struct sockaddr *sa,
                         int backlog, uv_connection_cb cb, uv_close_cb on_fail);

  /* Default status endpoint (Unix socket path or named pipe name). */
  const char *(*default_status_path)(char *buf, size_t len);
  /* Default config file path. */
  const char *(*default_config_path)(char *buf, size_t len);
} lr_pal_t;

#endif
