/* Datagram framing on a flow's stream; see lr_dgram.h. */
#include "lr_dgram.h"

#include <stdlib.h>
#include <string.h>

#include "lr_proto.h"

#define READ_BUF (64 * 1024)

void lr_dgram_rx_init(lr_dgram_rx_t *rx) { memset(rx, 0, sizeof *rx); }

void lr_dgram_rx_free(lr_dgram_rx_t *rx) {
  free(rx->part);
  lr_dgram_rx_init(rx);
}

int lr_dgram_rx_partial(const lr_dgram_rx_t *rx) { return rx->nhdr != 0; }

void lr_dgram_hdr_encode(uint8_t out[LR_DGRAM_HDR], size_t n) {
  out[0] = (uint8_t)(n >> 8);
  out[1] = (uint8_t)n;
}

int lr_dgram_rx_feed(lr_dgram_rx_t *rx, const uint8_t *p, size_t n, lr_dgram_fn fn, void *data) {
  while (n > 0 || (rx->nhdr == LR_DGRAM_HDR && rx->have == rx->need)) {
    if (rx->nhdr < LR_DGRAM_HDR) {
      rx->hdr[rx->nhdr++] = *p++;
      n--;
      if (rx->nhdr < LR_DGRAM_HDR) continue;
      rx->need = ((size_t)rx->hdr[0] << 8) | rx->hdr[1];
      rx->have = 0;
      if (rx->need > LR_DGRAM_MAX) return LR_PROTO_ETOOBIG;
      if (rx->need <= n) { /* whole in this buffer: delivered in place */
        const uint8_t *d = p;
        size_t dn = rx->need;
        p += dn;
        n -= dn;
        rx->nhdr = 0;
        if (fn(data, d, dn)) return LR_DGRAM_STOPPED;
        continue;
      }
      rx->part = malloc(rx->need);
      if (!rx->part) return LR_PROTO_ENOMEM;
      continue;
    }
    size_t take = rx->need - rx->have;
    if (take > n) take = n;
    memcpy(rx->part + rx->have, p, take);
    rx->have += take;
    p += take;
    n -= take;
    if (rx->have < rx->need) return LR_PROTO_OK;
    uint8_t *d = rx->part;
    size_t dn = rx->need;
    rx->part = NULL;
    rx->nhdr = 0;
    rx->need = rx->have = 0;
    int stop = fn(data, d, dn);
    free(d);
    if (stop) return LR_DGRAM_STOPPED;
  }
  return LR_PROTO_OK;
}

typedef struct {
  uv_write_t req;
  lr_dgram_tx_t *tx;
  size_t len;
  uint8_t bytes[]; /* the unwritten rest of the frame */
} dgram_write_t;

int lr_dgram_shared_fits(const lr_dgram_tx_t *tx, size_t n) {
  for (int i = 0; i < 2; i++)
    if (tx->shared[i] && *tx->shared[i] + n > tx->shared_max[i]) return 0;
  return 1;
}

void lr_dgram_shared_add(lr_dgram_tx_t *tx, size_t n, int sign) {
  for (int i = 0; i < 2; i++)
    if (tx->shared[i]) *tx->shared[i] = sign < 0 ? *tx->shared[i] - n : *tx->shared[i] + n;
}

static void on_written(uv_write_t *req, int status) {
  dgram_write_t *w = (dgram_write_t *)req;
  (void)status; /* a failed write shows up on the stream's read side too */
  w->tx->queued -= w->len;
  lr_dgram_shared_add(w->tx, w->len, -1);
  free(w);
}

static void drop(lr_dgram_tx_t *tx) {
  tx->dropped++;
  if (tx->drop_counter) (*tx->drop_counter)++;
}

int lr_dgram_send(uv_stream_t *s, lr_dgram_tx_t *tx, const uint8_t *p, size_t n) {
  uint8_t hdr[LR_DGRAM_HDR];
  lr_dgram_hdr_encode(hdr, n);
  size_t total = n + LR_DGRAM_HDR, done = 0;
  if (tx->queued == 0) {
    uv_buf_t b[2] = {uv_buf_init((char *)hdr, LR_DGRAM_HDR), uv_buf_init((char *)p, (unsigned)n)};
    int w = uv_try_write(s, b, n ? 2 : 1);
    if (w < 0 && w != UV_EAGAIN) return w;
    if (w > 0) done = (size_t)w;
    if (done == total) return 0;
  }
  /* A frame begun on the wire is finished whatever the queue holds. */
  if (done == 0 &&
      (tx->queued + total > LR_DGRAM_QUEUE_MAX || !lr_dgram_shared_fits(tx, total))) {
    drop(tx);
    return 1;
  }
  size_t rest = total - done;
  dgram_write_t *w = malloc(sizeof *w + rest);
  if (!w) {
    if (done == 0) {
      drop(tx);
      return 1;
    }
    return UV_ENOMEM; /* the framing is broken: the caller closes the flow */
  }
  w->tx = tx;
  w->len = rest;
  size_t off = 0;
  if (done < LR_DGRAM_HDR) {
    memcpy(w->bytes, hdr + done, LR_DGRAM_HDR - done);
    off = LR_DGRAM_HDR - done;
    memcpy(w->bytes + off, p, n);
  } else {
    memcpy(w->bytes, p + (done - LR_DGRAM_HDR), rest);
  }
  uv_buf_t b = uv_buf_init((char *)w->bytes, (unsigned)rest);
  int rc = uv_write(&w->req, s, &b, 1, on_written);
  if (rc != 0) {
    free(w);
    return rc;
  }
  tx->queued += rest;
  lr_dgram_shared_add(tx, rest, 1);
  return 0;
}

void lr_dgram_sockbufs(uv_udp_t *h) {
  int v = LR_DGRAM_SOCKBUF;
  uv_recv_buffer_size((uv_handle_t *)h, &v);
  v = LR_DGRAM_SOCKBUF;
  uv_send_buffer_size((uv_handle_t *)h, &v);
}

void lr_dgram_udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char recv_buf[LR_DGRAM_MAX + 1];
  (void)h;
  (void)suggested;
  buf->base = recv_buf;
  buf->len = sizeof recv_buf;
}

void lr_dgram_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  buf->base = malloc(READ_BUF);
  buf->len = buf->base ? READ_BUF : 0;
}
