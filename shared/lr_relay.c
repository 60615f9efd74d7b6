/* The relay engine; see lr_relay.h for the model (one buffer in flight per
 * direction, try_write first, pause the source while a write is queued).
 *
 * Lifecycle of a direction d (data read from ep[d], written to ep[o]):
 *   reading -> (write queued: paused) -> reading ... -> EOF from ep[d]
 *   -> shutdown(ep[o]) once nothing is queued. A read error or a write error
 *   is a reset: both sides close at once, the other side with RST (TCP) or an
 *   abrupt close (Unix/VM sockets). When both directions reached EOF and both
 *   shutdowns completed, both sides close gracefully. */
#include "lr_relay.h"

#include <stdlib.h>
#include <string.h>

#include "lr_log.h"
#include "lr_net.h"
#include "lr_proto.h"

/* ---- buffer pool -------------------------------------------------------- */

#define POOL_CACHE_MAX 32 /* 8 MiB at most, kept only after a burst */

typedef struct pool_buf_s {
  struct pool_buf_s *next;
} pool_buf_t;

static pool_buf_t *pool_free;
static size_t pool_cached, pool_in_use;

static char *pool_get(void) {
  pool_buf_t *b = pool_free;
  if (b) {
    pool_free = b->next;
    pool_cached--;
  } else {
    b = malloc(LR_RELAY_BUF_SIZE);
    if (!b) return NULL;
  }
  pool_in_use++;
  return (char *)b;
}

static void pool_put(char *p) {
  if (!p) return;
  pool_in_use--;
  if (pool_cached >= POOL_CACHE_MAX) {
    free(p);
    return;
  }
  pool_buf_t *b = (pool_buf_t *)(void *)p;
  b->next = pool_free;
  pool_free = b;
  pool_cached++;
}

size_t lr_relay_pool_in_use(void) { return pool_in_use; }

/* The zero-copy setting (see lr_relay_set_zero_copy). */
static int zc_on = 1;
static uint64_t zc_after = 65536;

void lr_relay_set_zero_copy(int on, uint64_t after) {
  zc_on = on;
  zc_after = on ? after : UINT64_MAX;
}

/* ---- helpers ------------------------------------------------------------ */

static int side_of(lr_relay_t *r, const void *handle) {
  return handle == (const void *)&r->ep[1].u.handle ? 1 : 0;
}

/* Runs close_cb once both handles, and the zero-copy polls, are closed. */
static void maybe_closed(lr_relay_t *r) {
  if (!r->open[0] && !r->open[1] && !r->zc && r->close_cb) {
    lr_relay_close_cb cb = r->close_cb;
    r->close_cb = NULL;
    cb(r);
  }
}

static void on_handle_closed(uv_handle_t *h) {
  lr_relay_t *r = h->data;
  r->open[side_of(r, h)] = 0;
  maybe_closed(r);
}

static void zc_close_poll(lr_relay_t *r, int i);

static void close_side(lr_relay_t *r, int i, int reset) {
  uv_handle_t *h = &r->ep[i].u.handle;
  /* The poll goes first: it stops watching the descriptor at once, before
   * the socket's own handle closes it. */
  zc_close_poll(r, i);
  if (!r->open[i] || uv_is_closing(h)) return;
  h->data = r;
  if (reset && r->ep[i].kind == LR_EP_TCP) {
    /* Fails only if we already sent FIN; then a plain close is all TCP has. */
    if (uv_tcp_close_reset(&r->ep[i].u.tcp, on_handle_closed) == 0) return;
  }
  /* On Unix and VM sockets a close before our own shutdown is the reset
   * signal: the peer relay sees EOF with POLLHUP. */
  uv_close(h, on_handle_closed);
}

void lr_relay_close(lr_relay_t *r, int reset_outer) {
  int any = r->open[0] || r->open[1];
  r->closing = 1;
  close_side(r, 0, reset_outer);
  close_side(r, 1, 0);
  if (!any) maybe_closed(r);
}

/* ep[d] was reset or failed: pass the reset to the other side, and to the
 * peer's relay by notice unless the reset came from there. */
static void relay_reset(lr_relay_t *r, int d, int err) {
  if (r->closing) return;
  LR_DEBUG("relay %p: %s side %s: resetting the %s side", (void *)r,
           d == 0 ? "outer" : "transport", uv_strerror(err), d == 0 ? "transport" : "outer");
  r->closing = 1;
  if (r->notice && !r->peer_reset) (void)r->notice(r, LR_CLOSE_RESET, 0);
  close_side(r, d, 0);
  close_side(r, 1 - d, 1);
}

static void maybe_finish(lr_relay_t *r) {
  if (r->closing) return;
  if (r->eof[0] && r->eof[1] && r->shut_done[0] && r->shut_done[1] && !r->wr[0].buf &&
      !r->wr[1].buf) {
    r->closing = 1;
    close_side(r, 0, 0);
    close_side(r, 1, 0);
  }
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  lr_relay_t *r = req->handle->data;
  int i = side_of(r, req->handle);
  (void)status; /* ENOTCONN after the peer vanished: its read side tells us more */
  r->shut_done[i] = 1;
  maybe_finish(r);
}

/* Our FIN towards the transport: the notice always (when the owner gives
 * one), and 1 if that is all, the transport losing half-closes. */
static int fin_by_notice_only(lr_relay_t *r) {
  return r->notice && r->notice(r, LR_CLOSE_FIN, r->bytes[0]) == 0 && r->notice_only;
}

static void shutdown_side(lr_relay_t *r, int i) {
  if (r->shut[i] || r->closing) return;
  r->shut[i] = 1;
  if (i == 1 && fin_by_notice_only(r)) {
    r->shut_done[1] = 1;
    return;
  }
  if (uv_shutdown(&r->sreq[i], &r->ep[i].u.stream, on_shutdown) != 0) r->shut_done[i] = 1;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  buf->base = pool_get();
  buf->len = buf->base ? LR_RELAY_BUF_SIZE : 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void zc_try_switch(lr_relay_t *r);
static void zc_arm(lr_relay_t *r);

static void peer_fin_check(lr_relay_t *r);

static void on_write(uv_write_t *req, int status) {
  lr_relay_wr_t *wr = (lr_relay_wr_t *)req; /* req is the first member */
  lr_relay_t *r = req->data;
  int d = wr == &r->wr[1];
  pool_put(wr->buf);
  wr->buf = NULL;
  if (r->closing) return;
  if (status < 0) {
    relay_reset(r, 1 - d, status);
    return;
  }
  if (r->eof[d])
    shutdown_side(r, 1 - d);
  else if (uv_read_start(&r->ep[d].u.stream, on_alloc, on_read) != 0)
    relay_reset(r, d, UV_EIO);
  maybe_finish(r);
  /* No zero-copy switch here even when one is wanted: libuv stops watching
   * ep[o]'s descriptor for writability only after this callback returns,
   * so a poll on it now would be a second watcher (see zc_try_switch). The
   * read just restarted switches at its next callback. */
}

/* Sends base[0..len) to ep[o] on behalf of direction d, taking ownership
 * of the pooled buffer base. */
static void forward(lr_relay_t *r, int d, char *base, size_t len) {
  int o = 1 - d;
  uv_buf_t b = uv_buf_init(base, (unsigned)len);
  int n = uv_try_write(&r->ep[o].u.stream, &b, 1);
  if (n == (int)len) {
    pool_put(base);
    return;
  }
  if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS) {
    pool_put(base);
    relay_reset(r, o, n);
    return;
  }
  if (n < 0) n = 0;
  lr_relay_wr_t *wr = &r->wr[d];
  wr->buf = base;
  wr->req.data = r;
  uv_read_stop(&r->ep[d].u.stream);
  uv_buf_t rest = uv_buf_init(base + n, (unsigned)(len - (size_t)n));
  int rc = uv_write(&wr->req, &r->ep[o].u.stream, &rest, 1, on_write);
  if (rc != 0) {
    pool_put(base);
    wr->buf = NULL;
    relay_reset(r, o, rc);
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  lr_relay_t *r = s->data;
  int d = side_of(r, s);
  /* Nothing a relay carries comes with descriptors: a peer that sends some
   * (libuv IPC pipes receive them) is cut, and closing its handle closes
   * them. A plain pipe's count is always 0. */
  if (r->ep[d].kind == LR_EP_PIPE && uv_pipe_pending_count(&r->ep[d].u.pipe) > 0) {
    pool_put(buf->base);
    r->fds_refused = 1;
    relay_reset(r, d, UV_EPROTO);
    return;
  }
  if (nread > 0) {
    if (r->closing) {
      pool_put(buf->base);
      return;
    }
    r->bytes[d] += (uint64_t)nread;
    if (r->counter[d]) *r->counter[d] += (uint64_t)nread;
    forward(r, d, buf->base, (size_t)nread);
    if (d == 1 && r->peer_fin) {
      peer_fin_check(r);
      return;
    }
    /* One read this large means bulk data: a request/response exchange
     * never fills that much of the buffer at once. */
    if ((uint64_t)nread >= zc_after) r->zc_wanted = 1;
    if (r->zc_wanted) zc_try_switch(r);
    return;
  }
  pool_put(buf->base);
  if (nread == 0) return; /* EAGAIN */
  if (nread == UV_ENOBUFS) {
    relay_reset(r, d, UV_ENOBUFS); /* out of memory: this connection only */
    return;
  }
  if (nread == UV_EOF) {
    uv_read_stop(s);
    if (r->ep[d].kind != LR_EP_TCP && !r->shut[d] && r->pal && r->pal->peer_closed &&
        r->pal->peer_closed(&r->ep[d])) {
      relay_reset(r, d, UV_ECONNRESET);
      return;
    }
    r->eof[d] = 1;
    if (!r->wr[d].buf) shutdown_side(r, 1 - d);
    maybe_finish(r);
    return;
  }
  relay_reset(r, d, (int)nread);
}


/* ---- zero copy ----------------------------------------------------------- */


/* A kernel pipe of the pool: what a direction's bytes pass through. */
typedef struct lr_zc_pipe_s {
  uv_os_fd_t fd[2];
  size_t cap;
  struct lr_zc_pipe_s *next;
} lr_zc_pipe_t;

#define ZC_PIPE_WANT LR_RELAY_BUF_SIZE
/* A pipe smaller than the kernel's default means the user's pipe quota
 * (fs.pipe-user-pages-soft, counted over all of the user's processes) is
 * used up, and the kernel now gives 2 pages: a splice per 8 KiB moves
 * bulk data at about half the copy path's speed with 256 KiB buffers. The
 * agent, which runs without CAP_SYS_RESOURCE, is held to that quota. */
#define ZC_PIPE_MIN 65536
#define ZC_PIPE_CACHE_MAX 32 /* 64 descriptors at most, kept only after a burst */
/* Rounds of read-then-write per wakeup before letting other connections
 * run: the same fairness bound libuv's own read loop has. */
#define ZC_ROUNDS 16

static lr_zc_pipe_t *zc_pipe_free;
static size_t zc_pipes_cached, zc_pipes_in_use, zc_active;

size_t lr_relay_zc_pipes_in_use(void) { return zc_pipes_in_use; }
size_t lr_relay_zc_active(void) { return zc_active; }

struct lr_relay_zc_s {
  uv_poll_t poll[2]; /* poll[i] watches ep[i]'s socket */
  int poll_open[2];
  int events[2];     /* what poll[i] waits for now */
  uv_os_fd_t fd[2];
  lr_zc_pipe_t *pipe[2]; /* pipe[d]: bytes read from ep[d], not yet written */
  size_t in_pipe[2];
  int dead;          /* gone back to the copy path: the polls are closing */
  uint64_t moved;    /* bytes this path has moved: none yet means it may still step back */
  lr_relay_t *r;
};

static lr_zc_pipe_t *zc_pipe_get(const lr_pal_t *pal) {
  lr_zc_pipe_t *p = zc_pipe_free;
  if (p) {
    zc_pipe_free = p->next;
    zc_pipes_cached--;
  } else {
    p = malloc(sizeof *p);
    if (!p) return NULL;
    long cap = pal->zc_pipe_open(p->fd, ZC_PIPE_WANT);
    if (cap < 0) {
      free(p);
      return NULL;
    }
    p->cap = (size_t)cap;
  }
  zc_pipes_in_use++;
  return p;
}

/* An empty pipe goes back to the pool; one with bytes still in it (the
 * connection died mid-transfer) is closed, never reused. */
static void zc_pipe_put(const lr_pal_t *pal, lr_zc_pipe_t *p, size_t left) {
  if (!p) return;
  zc_pipes_in_use--;
  if (left || p->cap < ZC_PIPE_MIN || zc_pipes_cached >= ZC_PIPE_CACHE_MAX) {
    pal->zc_pipe_close(p->fd);
    free(p);
    return;
  }
  p->next = zc_pipe_free;
  zc_pipe_free = p;
  zc_pipes_cached++;
}

static void zc_on_poll_closed(uv_handle_t *h) {
  lr_relay_zc_t *z = h->data;
  lr_relay_t *r = z->r;
  z->poll_open[h == (uv_handle_t *)&z->poll[1]] = 0;
  if (z->poll_open[0] || z->poll_open[1]) return;
  for (int d = 0; d < 2; d++) zc_pipe_put(r->pal, z->pipe[d], z->in_pipe[d]);
  free(z);
  r->zc = NULL;
  zc_active--;
  maybe_closed(r);
}

static void zc_close_poll(lr_relay_t *r, int i) {
  lr_relay_zc_t *z = r->zc;
  if (!z || !z->poll_open[i] || uv_is_closing((uv_handle_t *)&z->poll[i])) return;
  uv_close((uv_handle_t *)&z->poll[i], zc_on_poll_closed);
}

static void zc_on_poll(uv_poll_t *p, int status, int events);
static void zc_back_to_copy(lr_relay_t *r);

/* Points each side's poll at what its directions wait for: readable while
 * its own direction's pipe is empty (a full pipe is the backpressure),
 * writable while the other direction has bytes for it. */
static void zc_arm(lr_relay_t *r) {
  lr_relay_zc_t *z = r->zc;
  if (r->closing || !z || z->dead) return;
  for (int i = 0; i < 2; i++) {
    int ev = (!r->eof[i] && z->in_pipe[i] == 0 ? UV_READABLE : 0) |
             (z->in_pipe[1 - i] > 0 ? UV_WRITABLE : 0);
    if (ev == z->events[i]) continue;
    z->events[i] = ev;
    int rc = ev ? uv_poll_start(&z->poll[i], ev, zc_on_poll) : uv_poll_stop(&z->poll[i]);
    if (rc != 0) {
      relay_reset(r, i, rc);
      return;
    }
  }
}

/* End of stream from ep[d] on the zero-copy path: as on_read's EOF. */
static void zc_eof(lr_relay_t *r, int d) {
  lr_relay_zc_t *z = r->zc;
  if (r->ep[d].kind != LR_EP_TCP && !r->shut[d] && r->pal->peer_closed &&
      r->pal->peer_closed(&r->ep[d])) {
    relay_reset(r, d, UV_ECONNRESET);
    return;
  }
  r->eof[d] = 1;
  int o = 1 - d;
  if (!r->shut[o]) {
    r->shut[o] = 1;
    r->shut_done[o] = 1; /* shutdown(2) is immediate; its failure is not ours */
    if (!(o == 1 && fin_by_notice_only(r))) (void)r->pal->zc_shutdown_write(z->fd[o]);
  }
  maybe_finish(r);
}

/* Moves direction d (ep[d] -> pipe -> ep[1-d]) until the source has
 * nothing, the destination has no room, or ZC_ROUNDS. */
static void zc_pump(lr_relay_t *r, int d) {
  lr_relay_zc_t *z = r->zc;
  const lr_pal_t *pal = r->pal;
  int o = 1 - d;
  for (int round = 0; round < ZC_ROUNDS && !r->closing; round++) {
    long got = 0;
    if (z->in_pipe[d] == 0) {
      if (r->eof[d]) break;
      if (!z->pipe[d] && !(z->pipe[d] = zc_pipe_get(pal))) {
        relay_reset(r, d, UV_ENOMEM); /* out of memory or descriptors: this connection only */
        return;
      }
      got = pal->zc_move(z->fd[d], z->pipe[d]->fd[1], z->pipe[d]->cap);
      if (got == UV_EAGAIN) break;
      if (got == UV_EINVAL && !z->moved && !z->in_pipe[o]) {
        LR_DEBUG("relay %p: these sockets cannot splice: copying", (void *)r);
        zc_back_to_copy(r);
        return;
      }
      if (got == 0) {
        zc_eof(r, d);
        break;
      }
      if (got < 0) {
        relay_reset(r, d, (int)got);
        return;
      }
      z->in_pipe[d] = (size_t)got;
      z->moved += (uint64_t)got;
      r->bytes[d] += (uint64_t)got;
      if (r->counter[d]) *r->counter[d] += (uint64_t)got;
    }
    long put = pal->zc_move(z->pipe[d]->fd[0], z->fd[o], z->in_pipe[d]);
    if (put == UV_EAGAIN) break;
    if (put <= 0) {
      relay_reset(r, o, put < 0 ? (int)put : UV_EPIPE);
      return;
    }
    z->in_pipe[d] -= (size_t)put;
    if (z->in_pipe[d]) continue; /* the destination took part: offer the rest */
    /* A short read means the source is drained for now (level-triggered:
     * the poll says when there is more). */
    if (got > 0 && (size_t)got < z->pipe[d]->cap) break;
  }
  if (z->in_pipe[d] == 0 && z->pipe[d]) {
    zc_pipe_put(pal, z->pipe[d], 0);
    z->pipe[d] = NULL;
  }
  if (d == 1 && r->peer_fin) peer_fin_check(r);
  if (!r->closing) maybe_finish(r);
  zc_arm(r);
}

static void zc_on_poll(uv_poll_t *p, int status, int events) {
  lr_relay_zc_t *z = p->data;
  lr_relay_t *r = z->r;
  int i = p == &z->poll[1];
  if (r->closing || z->dead) return;
  if (status < 0) {
    relay_reset(r, i, status);
    return;
  }
  /* Writable first: draining a pipe into ep[i] may let its source read again. */
  if ((events & UV_WRITABLE) && z->in_pipe[1 - i]) zc_pump(r, 1 - i);
  if ((events & UV_READABLE) && !r->closing && !z->dead) zc_pump(r, i);
}

/* libuv refused the poll (UV_EEXIST: another handle still watches the
 * descriptor, which zc_try_switch's callers rule out), or the kernel
 * cannot splice these sockets: the connection goes back to the copy path
 * for good. Only while no byte is in a pipe. The polls are closed before
 * the streams read again, so the descriptors change owner at once. */
static void zc_back_to_copy(lr_relay_t *r) {
  lr_relay_zc_t *z = r->zc;
  r->zc_refused = 1;
  z->dead = 1;
  for (int i = 0; i < 2; i++) zc_close_poll(r, i);
  if (!z->poll_open[0] && !z->poll_open[1]) {
    for (int d = 0; d < 2; d++) zc_pipe_put(r->pal, z->pipe[d], 0);
    free(z);
    r->zc = NULL;
    zc_active--;
  }
  for (int i = 0; i < 2; i++)
    if (!r->eof[i] && uv_read_start(&r->ep[i].u.stream, on_alloc, on_read) != 0) {
      relay_reset(r, i, UV_EIO);
      return;
    }
}

/* Moves a connection that has proved to carry bulk data onto the zero-copy
 * path. Only between messages: nothing queued either way, no end of stream
 * yet, so the copy path has nothing in flight to hand over.
 *
 * One watcher per descriptor: libuv watches a descriptor through exactly
 * one handle (uv_poll_init says UV_EEXIST while another handle's watcher is
 * on it). So each socket changes hands here: its stream handle stops
 * reading and, with no write, shutdown or connect pending, watches nothing;
 * from then until the poll is closed the stream handle is not used for any
 * I/O (the zero-copy path half-closes with the platform's shutdown, not
 * uv_shutdown), and the poll is always closed before the stream reads
 * again (zc_back_to_copy) or is closed itself (close_side). Called from
 * a read callback or lr_relay_start only, never from a write callback
 * (see on_write). */
static void zc_try_switch(lr_relay_t *r) {
  const lr_pal_t *pal = r->pal;
  if (!zc_on || r->zc || r->zc_refused || r->closing || !pal || !pal->zc_move) return;
  if (r->wr[0].buf || r->wr[1].buf || r->eof[0] || r->eof[1] || r->shut[0] || r->shut[1]) return;
  for (int i = 0; i < 2; i++) {
    if (r->ep[i].kind != LR_EP_TCP && r->ep[i].kind != LR_EP_PIPE) {
      r->zc_refused = 1; /* VM sockets: no splice in the kernels we run on */
      return;
    }
  }
  uv_loop_t *loop = r->ep[0].u.handle.loop;
  /* A pipe first: a small one would make this path the slower one. */
  lr_zc_pipe_t *p = zc_pipe_get(pal);
  if (!p) return; /* no descriptor now: copy, and try again on a later read */
  size_t cap = p->cap;
  zc_pipe_put(pal, p, 0); /* cached for the pump if big enough, else closed */
  if (cap < ZC_PIPE_MIN) {
    static lr_ratelimit_t gate;
    r->zc_refused = 1;
    if (lr_ratelimit_pass(&gate, uv_now(loop), 600000))
      LR_WARN("zero copy: the kernel gives this process pipes of %zu bytes (its user's pipe "
              "quota, fs.pipe-user-pages-soft, is used up by other processes): bulk "
              "connections stay on the copy path while it is", cap);
    return;
  }
  lr_relay_zc_t *z = calloc(1, sizeof *z);
  if (!z) return;
  z->r = r;
  for (int i = 0; i < 2; i++) uv_read_stop(&r->ep[i].u.stream);
  int rc = 0;
  for (int i = 0; i < 2 && rc == 0; i++) {
    if ((rc = uv_fileno(&r->ep[i].u.handle, &z->fd[i])) == 0 &&
        (rc = uv_poll_init_socket(loop, &z->poll[i], (uv_os_sock_t)(uintptr_t)z->fd[i])) == 0) {
      z->poll[i].data = z;
      z->poll_open[i] = 1;
    }
  }
  r->zc = z;
  zc_active++;
  if (rc != 0) {
    LR_DEBUG("relay %p: zero copy not available (%s): copying", (void *)r, uv_strerror(rc));
    zc_back_to_copy(r);
    return;
  }
  LR_DEBUG("relay %p: zero copy after %llu/%llu bytes", (void *)r,
           (unsigned long long)r->bytes[0], (unsigned long long)r->bytes[1]);
  zc_arm(r);
}

/* ---- public ------------------------------------------------------------- */

void lr_relay_init(lr_relay_t *r, const lr_pal_t *pal, lr_relay_close_cb cb, void *data) {
  memset(r, 0, sizeof *r);
  r->pal = pal;
  r->close_cb = cb;
  r->data = data;
}

void lr_relay_mark_open(lr_relay_t *r, int i, lr_ep_kind_t kind) {
  r->ep[i].kind = kind;
  r->ep[i].u.handle.data = r;
  r->open[i] = 1;
}

int lr_relay_start(lr_relay_t *r, const uint8_t *pending, size_t pending_len) {
  int rc;
  r->started = 1;
  if (r->peer_reset) { /* the peer reset before we got here */
    lr_relay_close(r, 1);
    return 0;
  }
  for (int i = 0; i < 2; i++) {
    r->ep[i].u.handle.data = r;
    /* Interactive traffic must not wait for Nagle at the relay hop too. */
    if (r->ep[i].kind == LR_EP_TCP) uv_tcp_nodelay(&r->ep[i].u.tcp, 1);
    /* A Unix stream socket's only flow control is its sender's send
     * buffer (net.core.wmem_default, 208 KiB): less than one relay buffer
     * or pipe, so every splice into it wakes the reader for part of it.
     * The kernel doubles the value and caps it at net.core.wmem_max; a
     * refusal (a Windows named pipe) leaves the default. */
    if (r->ep[i].kind == LR_EP_PIPE) {
      int v = LR_RELAY_UNIX_SNDBUF;
      (void)uv_send_buffer_size(&r->ep[i].u.handle, &v);
    }
  }
  if ((rc = uv_read_start(&r->ep[0].u.stream, on_alloc, on_read)) != 0) goto fail;
  if (pending_len > 0) {
    char *b = pool_get();
    if (!b) {
      rc = UV_ENOMEM;
      goto fail;
    }
    memcpy(b, pending, pending_len);
    r->bytes[1] += pending_len;
    if (r->counter[1]) *r->counter[1] += pending_len;
    /* As if just read from ep[1]: forward() pauses ep[1] if it queues. */
    if ((rc = uv_read_start(&r->ep[1].u.stream, on_alloc, on_read)) != 0) {
      pool_put(b);
      goto fail;
    }
    forward(r, 1, b, pending_len);
    peer_fin_check(r);
    return 0;
  }
  if ((rc = uv_read_start(&r->ep[1].u.stream, on_alloc, on_read)) != 0) goto fail;
  peer_fin_check(r);
  if (zc_after == 0) zc_try_switch(r);
  return 0;
fail:
  lr_relay_close(r, 1);
  return rc;
}

/* ---- close notices ------------------------------------------------------- */

/* The peer's FIN notice counts what it wrote into ep[1]: once as many
 * bytes were read from ep[1] and are out on ep[0] (none queued, none in a
 * pipe), ep[1] has ended, exactly as if its end of file had been read.
 * More than the count is a peer that lied: reset. */
static void peer_fin_check(lr_relay_t *r) {
  if (!r->peer_fin || !r->started || r->closing || r->eof[1]) return;
  if (r->bytes[1] > r->peer_fin_at) {
    relay_reset(r, 1, UV_EPROTO);
    return;
  }
  if (r->bytes[1] < r->peer_fin_at) return;
  lr_relay_zc_t *z = r->zc;
  if (z && !z->dead) {
    if (z->in_pipe[1]) return; /* zc_pump checks again once it is drained */
    r->eof[1] = 1;
    if (!r->shut[0]) {
      r->shut[0] = 1;
      r->shut_done[0] = 1;
      (void)r->pal->zc_shutdown_write(z->fd[0]);
    }
    maybe_finish(r);
    zc_arm(r);
    return;
  }
  r->eof[1] = 1;
  uv_read_stop(&r->ep[1].u.stream);
  if (!r->wr[1].buf) shutdown_side(r, 0); /* else on_write does, once it is out */
  maybe_finish(r);
}

void lr_relay_peer_notice(lr_relay_t *r, uint8_t kind, uint64_t bytes) {
  if (r->closing) return;
  if (kind == LR_CLOSE_RESET) {
    r->peer_reset = 1; /* before the start: lr_relay_start resets */
    if (r->started) relay_reset(r, 1, UV_ECONNRESET);
    return;
  }
  if (kind != LR_CLOSE_FIN || r->peer_fin) return; /* the first FIN counts */
  r->peer_fin = 1;
  r->peer_fin_at = bytes;
  peer_fin_check(r);
}

/* Fibonacci hashing: stream ids are sequential, the top bits spread them. */
static unsigned id_bucket(uint32_t id) {
  return (unsigned)((id * 2654435761u) >> 24) % LR_RELAY_ID_BUCKETS;
}

lr_relay_t *lr_relay_ids_find(const lr_relay_ids_t *t, uint32_t id) {
  if (id == 0) return NULL;
  for (lr_relay_t *r = t->b[id_bucket(id)]; r; r = r->id_next)
    if (r->id == id) return r;
  return NULL;
}

int lr_relay_ids_add(lr_relay_ids_t *t, lr_relay_t *r) {
  if (r->id == 0 || lr_relay_ids_find(t, r->id)) return -1;
  unsigned b = id_bucket(r->id);
  r->id_next = t->b[b];
  t->b[b] = r;
  return 0;
}

void lr_relay_ids_del(lr_relay_ids_t *t, lr_relay_t *r) {
  if (r->id == 0) return;
  for (lr_relay_t **p = &t->b[id_bucket(r->id)]; *p; p = &(*p)->id_next)
    if (*p == r) {
      *p = r->id_next;
      r->id_next = NULL;
      return;
    }
}
