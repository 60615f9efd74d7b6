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
 * recognises through the platform's peer_closed probe, POLLHUP on Linux,
 * before it has shut its own write side).
 *
 * Zero copy: where the platform layer can splice (Linux), a connection whose
 * single read brings zeroCopyAfter bytes or more (bulk data: a
 * request/response exchange never fills that much of the buffer at once)
 * leaves libuv's read/write calls and moves its bytes socket -> pipe ->
 * socket in the kernel, woken by a uv_poll_t per side. The pipe comes from
 * a pool and is held only while bytes are in it, so an idle connection
 * holds none; a full pipe pauses the source exactly as a queued write does
 * on the copy path. Half-close and reset are the same on both paths. Small
 * messages stay on the copy path: setting up the two polls costs
 * more system calls than a few small messages save. */
#ifndef LR_RELAY_H
#define LR_RELAY_H

#include <stdint.h>
#include "lr_endpoint.h"
#include "lr_pal.h"

typedef struct lr_relay_s lr_relay_t;
typedef struct lr_relay_zc_s lr_relay_zc_t;
typedef void (*lr_relay_close_cb)(lr_relay_t *r);

typedef struct {
  uv_write_t req;
  char *buf;        /* the pooled buffer being written, NULL when idle */
} lr_relay_wr_t;

/* Ownership: the owner allocates the lr_relay_t (usually inside its own
 * connection record) and initialises the two handles in ep[]; from
 * lr_relay_mark_open on, the relay closes them (lr_relay_close, or by
 * itself at the end of the stream) and calls close_cb once both are closed.
 * The owner frees the record in close_cb and nowhere else. Each socket is
 * watched by one libuv handle at a time: its stream handle in ep[i], or,
 * on the zero-copy path, the relay's own uv_poll_t while that stream is
 * stopped; the poll is closed before the stream is used again. */
struct lr_relay_s {
  const lr_pal_t *pal;      /* for the peer-closed probe; may be NULL */
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
  unsigned closing;
  unsigned fds_refused;     /* a pipe side received descriptors: reset (the
                             * handle's close closes them); the owner may log */
  unsigned zc_refused;      /* the zero-copy path was tried and is not for us */
  unsigned zc_wanted;       /* a read showed bulk data: switch when nothing is queued */
  lr_relay_zc_t *zc;        /* zero-copy state, allocated on the switch, freed
                             * when both its polls have closed */
};

/* Zeroes r. The caller then initialises ep[i].u handles (uv_tcp_init,
 * uv_pipe_init, accept, connect...) and calls lr_relay_mark_open(r, i). */
void lr_relay_init(lr_relay_t *r, const lr_pal_t *pal, lr_relay_close_cb cb, void *data);
void lr_relay_mark_open(lr_relay_t *r, int i, lr_ep_kind_t kind);

/* Starts relaying. pending: bytes already read from ep[1] (after its
 * handshake) that belong to ep[0]. Returns 0 or a uv error (r then closes). */
int lr_relay_start(lr_relay_t *r, const uint8_t *pending, size_t pending_len);

/* Closes both sides now. reset_outer: send ep[0] a reset rather than a
 * close (used when the guest server refused). close_cb runs once both
 * handles are closed; the owner frees r there. Safe to call more than once
 * and at any phase. */
void lr_relay_close(lr_relay_t *r, int reset_outer);

/* The process's zero-copy setting (config zeroCopy, zeroCopyAfter): off,
 * or on for connections once one read has brought `after` bytes (0: from
 * the first byte). Default: on, after a read of 65536 bytes. */
void lr_relay_set_zero_copy(int on, uint64_t after);

/* Pool statistics, for tests and status. */
size_t lr_relay_pool_in_use(void);
/* Zero-copy pipes holding bytes now; relays that are on the zero-copy path
 * now. */
size_t lr_relay_zc_pipes_in_use(void);
size_t lr_relay_zc_active(void);
#define LR_RELAY_BUF_SIZE (256 * 1024)

#endif
