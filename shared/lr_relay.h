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
 * Close notices: some VM transports lose a half-close. A hybrid-vsock
 * device (vhost-device-vsock, Firecracker) drops the guest's
 * SHUTDOWN(SEND) and turns a host-side shutdown(SHUT_WR) into a full close
 * of the guest's socket. So each side also says on the control stream that
 * its write side ended and after how many bytes (STREAM_CLOSE, through the
 * owner's notice callback), and the other side ends that direction once it
 * has relayed exactly that many bytes out of the stream, or at the
 * stream's own end of file, whichever comes first. Where the owner knows
 * the transport would turn a shutdown into a close (notice_only), the FIN
 * goes as a notice alone. One small control frame per direction and
 * connection; nothing on the data path.
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
 * more system calls than a few small messages save. Bulk data stays there
 * too while the kernel hands out pipes smaller than its 64 KiB default
 * (the user's pipe quota, fs.pipe-user-pages-soft, is used up by other
 * processes; the agent has no CAP_SYS_RESOURCE to pass it): a splice per
 * 8 KiB loses to a copy per 256 KiB. */
#ifndef LR_RELAY_H
#define LR_RELAY_H

#include <stdint.h>
#include "lr_endpoint.h"
#include "lr_pal.h"

typedef struct lr_relay_s lr_relay_t;
typedef struct lr_relay_zc_s lr_relay_zc_t;
typedef void (*lr_relay_close_cb)(lr_relay_t *r);
/* Sends a STREAM_CLOSE for r (kind LR_CLOSE_FIN after `bytes` bytes, or
 * LR_CLOSE_RESET) on the owner's control stream. 0 if it went out, -1 if
 * it could not (no control stream): the relay then relies on the stream. */
typedef int (*lr_relay_notice_fn)(lr_relay_t *r, uint8_t kind, uint64_t bytes);

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
  /* Close notices (set by the owner before lr_relay_start; see above). */
  uint32_t id;              /* the stream id both sides name it by; 0: no notices */
  lr_relay_notice_fn notice;
  unsigned notice_only;     /* ep[1] loses half-close: our FIN goes as a notice only */
  struct lr_relay_s *id_next; /* in the owner's lr_relay_ids_t */
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
  unsigned started;         /* lr_relay_start ran */
  unsigned peer_fin;        /* the peer's FIN notice arrived: ep[1] ends at peer_fin_at */
  unsigned peer_reset;      /* the peer's RESET notice arrived before the start */
  uint64_t peer_fin_at;
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

/* A STREAM_CLOSE from the peer for this relay (any phase; before the
 * start it is kept and applied then). FIN: ep[1] ends once `bytes` bytes
 * were read from it and written to ep[0]; a count already passed is a
 * lie, and resets. RESET: both sides reset. Unknown kinds are ignored,
 * as is anything once the direction or the relay has ended. */
void lr_relay_peer_notice(lr_relay_t *r, uint8_t kind, uint64_t bytes);

/* The owner's table of relays by stream id: a fixed array of buckets
 * chained through id_next, so a notice costs a short walk and the table
 * holds nothing per notice (what it holds is bounded by the connections
 * it indexes). The owner adds a relay when it names the stream and
 * removes it before freeing the relay. */
#define LR_RELAY_ID_BUCKETS 256
typedef struct {
  lr_relay_t *b[LR_RELAY_ID_BUCKETS];
} lr_relay_ids_t;
/* 0, or -1 if id is 0 or already in the table (r is then not added). */
int lr_relay_ids_add(lr_relay_ids_t *t, lr_relay_t *r);
void lr_relay_ids_del(lr_relay_ids_t *t, lr_relay_t *r); /* no-op if r is not in it */
lr_relay_t *lr_relay_ids_find(const lr_relay_ids_t *t, uint32_t id);

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
/* What a relay asks for as the send buffer of a Unix stream endpoint (the
 * two-hop transport, Firecracker's hybrid vsock): bytes in flight towards
 * the other relay, in the kernel, per connection and direction. */
#define LR_RELAY_UNIX_SNDBUF (512 * 1024)

#endif
