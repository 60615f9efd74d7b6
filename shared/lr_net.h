/* Small network helpers both the host core and the agent need, written once:
 * the loopback address of a family (as a sockaddr and as text), a copying
 * stream write (for control frames built on the stack), a once-a-minute
 * gate for log lines that would otherwise repeat per event (EMFILE on
 * accept).
 *
 * Families are the wire protocol's 4 and 6, not AF_* values, because that is
 * what listeners, bindings and OPEN frames carry. */
#ifndef LR_NET_H
#define LR_NET_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* "127.0.0.1" for 4, "[::1]" for 6 (bracketed: always printed with ":port"). */
const char *lr_loopback_str(int family);
/* 127.0.0.1:port or [::1]:port. */
void lr_loopback_sockaddr(int family, uint16_t port, struct sockaddr_storage *ss);
/* 1 for an address only this machine reaches: 127.0.0.0/8 or ::1 (and
 * ::ffff:127.x, the same address seen through an IPv6 socket). */
int lr_sockaddr_is_loopback(const struct sockaddr_storage *ss);

/* Copies buf and queues it on s; the copy is freed when the write ends.
 * 0, or a uv error (nothing queued). A failed write later shows up on the
 * stream's read side too, so the completion is not reported. */
int lr_write_copy(uv_stream_t *s, const void *buf, size_t len);

/* Takes one pending client off server's backlog (TCP or pipe) and closes
 * it, a TCP one with a reset, as a port without a server would answer. For
 * clients a budget refuses: a listener whose connection callback does not
 * accept stops accepting altogether. */
void lr_drop_pending(uv_stream_t *server);

/* A log gate: true at most once per interval_ms (the first call passes). */
typedef struct {
  uint64_t last;
  uint64_t suppressed; /* calls refused since the last pass */
} lr_ratelimit_t;
int lr_ratelimit_pass(lr_ratelimit_t *rl, uint64_t now_ms, uint64_t interval_ms);

/* Logs a failed accept once a minute per gate, with a hint for EMFILE. */
void lr_log_accept_error(lr_ratelimit_t *rl, uv_loop_t *loop, const char *what, int status);

#endif
