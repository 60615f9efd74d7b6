/* The platform abstraction layer: the few things the portable core cannot
 * do through libuv alone, as a struct of function pointers (the shape of
 * SQLite's VFS). The core never asks which OS it runs on; host/posix,
 * host/win32 and guest/ each fill one of these and hand it to the core.
 *
 * Kept deliberately small: VM-socket connects (libuv cannot create AF_VSOCK
 * or AF_HYPERV sockets) and closing such a raw socket, exclusive loopback
 * listeners (SO_EXCLUSIVEADDRUSE on Windows), the relay's peer-closed probe
 * (how a reset looks on sockets without RST), where things live (run
 * directory, status endpoint, config file), and the two cryptographic
 * primitives the handshake needs (HMAC-SHA256, the OS's random bytes), so
 * the core never includes OpenSSL or BCrypt, and the zero-copy relay's
 * kernel calls (splice through a pipe on Linux), and sockets made inside a
 * namespace guest's network namespace (one hop, Linux). A member a side does not need
 * is NULL (the guest makes no VM-socket connects), and the core says so
 * rather than guessing. */
#ifndef LR_PAL_H
#define LR_PAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "lr_addr.h"
#include "lr_endpoint.h"

typedef struct lr_nsock_s lr_nsock_t; /* host/posix/nsock.c */

typedef struct lr_pal_s {
  const char *name; /* "posix", "win32", "guest" */

  /* Blocking connect of a VM socket (vsock, hvsock) with the platform's own
   * connect timeout. Runs on a libuv worker thread. On success *out is a
   * connected socket ready for uv_tcp_open and 0 is returned; otherwise a
   * negative uv error code and a one-line reason in err. NULL when the
   * platform has no VM sockets: such addresses are then refused. */
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

  /* Closes a raw socket that no libuv handle owns yet (a VM socket whose
   * uv_tcp_open failed, or whose connect finished after its deadline). */
  void (*sock_close)(uv_os_sock_t s);

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

  /* After EOF on a socket without RST (Unix, VM sockets): 1 when the peer
   * closed both directions (our reading of a reset), 0 for a half-close.
   * Asked only while our own write side is still open. NULL: every EOF is a
   * half-close. */
  int (*peer_closed)(const lr_endpoint_t *ep);

  /* 1 when this process has no file descriptor left (EMFILE/ENFILE). libuv
   * answers an accept that fails so by accepting and closing the pending
   * clients without telling us, so the core asks once a second and logs.
   * NULL where the platform cannot tell. */
  int (*fds_exhausted)(uv_loop_t *loop);

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
  /* lorelayctl: the system daemon's endpoint, to fall back to when this
   * user's own default does not exist, and who may connect to path (for a
   * permission error: "members of group lorelay"). NULL: none. */
  const char *(*system_status_path)(char *buf, size_t len);
  const char *(*endpoint_access_hint)(const char *path, char *buf, size_t len);
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

  /* HMAC-SHA256 of msg under key, from a maintained implementation (Linux:
   * OpenSSL's libcrypto; Windows: BCrypt). 0, or -1 on failure. NULL: no
   * shared key can be used on this side (the core refuses one). */
  int (*hmac_sha256)(const uint8_t *key, size_t klen, const uint8_t *msg, size_t mlen,
                     uint8_t out[32]);
  /* n bytes from the OS's CSPRNG (getrandom, BCryptGenRandom): the
   * handshake's nonces. 0, or -1 when none could be had. */
  int (*random_bytes)(uint8_t *buf, size_t n);

  /* Zero-copy relaying (Linux: splice(2) through a pipe), used by the relay
   * engine for connections that carry bulk data. All four are NULL where
   * the platform has none: the relay then copies through its buffers.
   *
   * zc_pipe_open: a kernel pipe, fds[0] the read end, fds[1] the write
   * end, both non-blocking, sized to about want bytes; returns its
   * capacity in bytes, or a negative uv error. */
  long (*zc_pipe_open)(uv_os_fd_t fds[2], size_t want);
  void (*zc_pipe_close)(uv_os_fd_t fds[2]);
  /* Moves up to len bytes from in to out (one of them a pipe end) without
   * copying them through this process: bytes moved (> 0); 0 when in is a
   * socket at end of stream; or a negative uv error, UV_EAGAIN when in has
   * nothing yet or out has no room, UV_EINVAL when these descriptors cannot
   * be spliced (the relay then copies). */
  long (*zc_move)(uv_os_fd_t in, uv_os_fd_t out, size_t len);
  /* Half-closes a socket the relay drives itself (shutdown SHUT_WR). */
  int (*zc_shutdown_write)(uv_os_fd_t fd);
} lr_pal_t;

/* The host platform layer linked into this program (host/posix or
 * host/win32): what lorelayd and lorelayctl start from. */
const lr_pal_t *lr_pal_host(void);

#endif
