/* The relay engine: moves bytes both ways between two connected streams.
 *
 * ep[0] is the outer side (the host's client, or the guest's real server);
 * ep[1] is the transport stream between host and guest. Each direction has
 * at most one buffer in flight: a read is written to the other side at once
 * (uv_try_write), and only if the kernel will not take it all is the rest
 * queued and reading from the source paused until the write completes. That
 * is the backpressure: a slow reader stalls its writer through the kernel's
 * own socket buffers, never through our memory. Buffers come from a pool and
 * go back as soon as they are written, so an idle connection holds none.
 *
 * End of stream is passed through as a half-close (shutdown of the write
 * side); a reset is passed through as a reset (RST on TCP; on Unix and VM
 * sockets, which have no RST, an abrupt full close that the peer's relay
 * recognises by POLLHUP before it has shut its own write side). */
#ifndef LR_RELAY_H
#define LR_RELAY_H

#include <stdint.h>
#include "lr_endpoint.h"

typedef struct lr_relay_s lr_relay_t;
typedef void (*lr_relay_close_cb)(lr_relay_t *r);

typedef struct {
  uv_write_t req;
  uv_buf_t buf;     /* the pooled buffer */
  size_t off, len;  /* unwritten part */
  int busy;
} lr_relay_wr_t;

struct lr_relay_s {
  uv_loop_t *loop;
  lr_endpoint_t ep[2];
  /* per direction d: bytes read from ep[d] and written to ep[1-d] */
  uint64_t bytes[2];
  uint64_t *counter[2];     /* optional live counters, added to with bytes[] */
  lr_relay_close_cb close_cb;
  void *data;               /* owner's */
  /* internal */
  lr_relay_wr_t wr[2];      /* wr[d]: pending write of data read from ep[d] */
  uv_shutdown_t sreq[2];
  unsigned eof[2];          /* ep[d] sent EOF */
  unsigned shut[2];         /* we shut down ep[d]'s write side */
  unsigned shut_done[2];    /* ... and that shutdown completed */
  unsigned open[2];         /* ep[d] handle initialised and not closed */
  unsigned closing, started, reset_sent;
  char *pending;            /* bytes from ep[1] waiting to go to ep[0] at start */
  size_t pending_len;
};

/* Zeroes r. The caller then initialises ep[i].u handles (uv_tcp_init,
 * uv_pipe_init, accept, connect...) and calls lr_relay_mark_open(r, i). */
void lr_relay_init(lr_relay_t *r, uv_loop_t *loop, lr_relay_close_cb cb, void *data);
void lr_relay_mark_open(lr_relay_t *r, int i, lr_ep_kind_t kind);

/* Starts relaying. pending: bytes already read from ep[1] (after its
 * handshake) that belong to ep[0]. Returns 0 or a uv error (r then closes). */
int lr_relay_start(lr_relay_t *r, const uint8_t *pending, size_t pending_len);

/* Closes both sides now. reset_outer: send ep[0] a reset rather than a
 * close (used when the guest server refused). close_cb runs once both
 * handles are closed; the owner frees r there. Safe to call more than once
 * and at any phase. */
void lr_relay_close(lr_relay_t *r, int reset_outer);

/* How the relay tells a peer's full close (our reading of a reset) from a
 * half-close on sockets without RST (Unix, VM sockets): the platform
 * supplies a probe that returns 1 when the peer has closed both directions
 * (POLLHUP on Linux). Without a probe every EOF is a half-close. */
typedef int (*lr_peer_closed_fn)(const lr_endpoint_t *ep);
void lr_relay_set_peer_closed_probe(lr_peer_closed_fn fn);

/* Pool statistics, for tests and status. */
size_t lr_relay_pool_in_use(void);
size_t lr_relay_pool_cached(void);
#define LR_RELAY_BUF_SIZE (256 * 1024)

#endif
