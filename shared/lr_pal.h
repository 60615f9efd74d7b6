/* The platform abstraction layer both sides share: the few things the
 * relay engine and the handshake cannot do through libuv alone, as a
 * struct of function pointers (the shape of SQLite's VFS). The portable
 * code never asks which OS it runs on; guest/ fills one of these, and each
 * host platform fills one inside its lr_host_pal_t (host/core/
 * lr_host_pal.h), which adds what only the daemon needs (VM-socket
 * connects, sockets made in a namespace guest's network namespace,
 * stand-in listeners, the status endpoint, where things live).
 *
 * Kept deliberately small: closing a raw socket, the relay's peer-closed
 * probe (how a reset looks on sockets without RST), running out of
 * descriptors, the two cryptographic primitives the handshake needs
 * (HMAC-SHA256, the OS's random bytes), so no portable code includes
 * OpenSSL or BCrypt, and the zero-copy relay's kernel calls (splice
 * through a pipe on Linux). A member a platform lacks is NULL, and the
 * code says so rather than guessing. */
#ifndef LR_PAL_H
#define LR_PAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "lr_endpoint.h"

typedef struct lr_pal_s {
  const char *name; /* "posix", "win32", "guest" */

  /* Closes a raw socket that no libuv handle owns yet (a VM socket whose
   * uv_tcp_open failed, or whose connect finished after its deadline). */
  void (*sock_close)(uv_os_sock_t s);

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

#endif
