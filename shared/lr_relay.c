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
size_t lr_relay_pool_cached(void) { return pool_cached; }

/* ---- helpers ------------------------------------------------------------ */

static int side_of(lr_relay_t *r, const void *handle) {
  return handle == (const void *)&r->ep[1].u.handle ? 1 : 0;
}

static void on_handle_closed(uv_handle_t *h) {
  lr_relay_t *r = h->data;
  r->open[side_of(r, h)] = 0;
  if (!r->open[0] && !r->open[1] && r->close_cb) {
    lr_relay_close_cb cb = r->close_cb;
    r->close_cb = NULL;
    cb(r);
  }
}

static void close_side(lr_relay_t *r, int i, int reset) {
  uv_handle_t *h = &r->ep[i].u.handle;
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
  if (!any && r->close_cb) {
    lr_relay_close_cb cb = r->close_cb;
    r->close_cb = NULL;
    cb(r);
  }
}

/* ep[d] was reset or failed: pass the reset to the other side. */
static void relay_reset(lr_relay_t *r, int d, int err) {
  if (r->closing) return;
  LR_DEBUG("relay %p: %s side %s: resetting the %s side", (void *)r,
           d == 0 ? "outer" : "transport", uv_strerror(err), d == 0 ? "transport" : "outer");
  r->closing = 1;
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

static void shutdown_side(lr_relay_t *r, int i) {
  if (r->shut[i] || r->closing) return;
  r->shut[i] = 1;
  if (uv_shutdown(&r->sreq[i], &r->ep[i].u.stream, on_shutdown) != 0) r->shut_done[i] = 1;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  buf->base = pool_get();
  buf->len = buf->base ? LR_RELAY_BUF_SIZE : 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

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
  if (nread > 0) {
    if (r->closing) {
      pool_put(buf->base);
      return;
    }
    r->bytes[d] += (uint64_t)nread;
    if (r->counter[d]) *r->counter[d] += (uint64_t)nread;
    forward(r, d, buf->base, (size_t)nread);
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
  for (int i = 0; i < 2; i++) {
    r->ep[i].u.handle.data = r;
    /* Interactive traffic must not wait for Nagle at the relay hop too. */
    if (r->ep[i].kind == LR_EP_TCP) uv_tcp_nodelay(&r->ep[i].u.tcp, 1);
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
    return 0;
  }
  if ((rc = uv_read_start(&r->ep[1].u.stream, on_alloc, on_read)) != 0) goto fail;
  return 0;
fail:
  lr_relay_close(r, 1);
  return rc;
}
