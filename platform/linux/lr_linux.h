/* The Linux calls both Linux programs need, the host daemon and the guest
 * agent: the relay's peer-closed probe (POLLHUP), closing a raw socket,
 * HMAC-SHA256 from OpenSSL's libcrypto, nonces from the kernel's CSPRNG,
 * the zero-copy relay's splice, and raising the open-files limit.
 *
 * Why a layer of its own: the host (host/posix) and the guest (guest/) are
 * separate programs that must build and ship without each other's code,
 * yet on Linux these few calls are the same for both. So they live here
 * once, and each side's lr_pal_t points at them; what only one side needs
 * (the host's AF_VSOCK connect and stand-ins, the guest's vsock listener)
 * stays in that side's folder. */
#ifndef LR_LINUX_H
#define LR_LINUX_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "lr_endpoint.h"

/* lr_pal_t.peer_closed: after EOF on a Unix or vsock stream, 1 when the peer
 * closed both directions (POLLHUP: our reading of a reset), 0 for a
 * half-close (POLLRDHUP alone). */
int lr_linux_peer_closed(const lr_endpoint_t *ep);
/* lr_pal_t.sock_close */
void lr_linux_sock_close(uv_os_sock_t s);
/* lr_pal_t.hmac_sha256: 0, or -1 if libcrypto failed. */
int lr_linux_hmac_sha256(const uint8_t *key, size_t klen, const uint8_t *msg, size_t mlen,
                         uint8_t out[32]);
/* lr_pal_t.fds_exhausted: 1 when no descriptor can be had (EMFILE/ENFILE),
 * probed by duplicating the loop's own descriptor. */
int lr_linux_fds_exhausted(uv_loop_t *loop);
/* lr_pal_t.random_bytes: getrandom(2); 0 or -1. */
int lr_linux_random_bytes(uint8_t *buf, size_t n);

/* lr_pal_t.zc_*: the zero-copy relay's splice(2) through a non-blocking
 * pipe. Errors are negative errno values, which are libuv's error codes on
 * Linux. */
long lr_linux_zc_pipe_open(uv_os_fd_t fds[2], size_t want);
void lr_linux_zc_pipe_close(uv_os_fd_t fds[2]);
long lr_linux_zc_move(uv_os_fd_t in, uv_os_fd_t out, size_t len);
int lr_linux_zc_shutdown_write(uv_os_fd_t fd);

/* lr_file_secret_check for both programs: a key file must belong to root
 * or to the user the program runs as, and no group or other may read or
 * write it (ssh's rule for a private key). 0, or -1 with the file, what is
 * wrong and the command that fixes it. */
int lr_linux_secret_check(const char *path, const uv_stat_t *st, char *err, size_t errlen);

/* Raises the soft open-files limit to the hard one: every relayed
 * connection costs two descriptors per side, and an init system's default
 * soft limit (1024) would cap a daemon near 500 connections without a word.
 * Returns the limit now in force (0 if unknown). */
unsigned long lr_linux_raise_nofile(void);

/* 1 when stderr is systemd's journal (JOURNAL_STREAM names stderr's
 * device and inode): log lines then carry <N> priorities and no timestamp
 * (lr_log_set_journal). lorelayd, and the lorelay-init and agent it
 * starts, which inherit its stderr, all ask. */
int lr_linux_stderr_is_journal(void);

/* The members of an lr_pal_t that are the same on both Linux sides, for a
 * designated initializer: `{.name = "guest", LR_LINUX_PAL_COMMON}`. One list,
 * so a call added here reaches the host and the guest alike. */
#define LR_LINUX_PAL_COMMON                                                              \
  .sock_close = lr_linux_sock_close, .peer_closed = lr_linux_peer_closed,                \
  .fds_exhausted = lr_linux_fds_exhausted, .hmac_sha256 = lr_linux_hmac_sha256,          \
  .random_bytes = lr_linux_random_bytes, .zc_pipe_open = lr_linux_zc_pipe_open,          \
  .zc_pipe_close = lr_linux_zc_pipe_close, .zc_move = lr_linux_zc_move,                  \
  .zc_shutdown_write = lr_linux_zc_shutdown_write

#endif
