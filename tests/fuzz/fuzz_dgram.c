/* libFuzzer target: the UDP flow's datagram decoder (lr_dgram_rx_feed), fed
 * a hostile agent's stream in arbitrary read chunks.
 *
 * Input: bytes 0-1 seed the chunk sizes, the rest is the stream. The oracle
 * is differential, as for fuzz_rxbuf: the stream parsed in one piece by a
 * plain reference loop gives the datagrams (offset, length), the error
 * that stops it (a length over LR_DGRAM_MAX) or a clean end with or
 * without a datagram in progress; no split of the reads may change the
 * datagrams delivered, their bytes, the error, or what lr_dgram_rx_partial
 * says at the end (an end of stream there is a truncated datagram). */
#include <string.h>

#include "fuzz_common.h"
#include "lr_dgram.h"

typedef struct {
  const uint8_t *s;
  size_t *off, *len; /* the reference's datagrams */
  size_t n, k;       /* how many; how many delivered so far */
} ctx_t;

static int on_dgram(void *data, const uint8_t *p, size_t n) {
  ctx_t *c = data;
  FZ_CHECK(c->k < c->n);
  FZ_CHECK(n == c->len[c->k] && n <= LR_DGRAM_MAX);
  FZ_CHECK(n == 0 || memcmp(p, c->s + c->off[c->k], n) == 0);
  c->k++;
  return 0;
}

static uint32_t next_rand(uint32_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 17;
  *x ^= *x << 5;
  return *x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  uint32_t rnd = ((uint32_t)data[0] << 8 | data[1]) * 2654435761u + 1;
  uint8_t *s = fz_dup(data + 2, size - 2);
  size_t n = size - 2;

  /* Reference: header, length check, payload, in one piece. */
  ctx_t c = {s, malloc((n / 2 + 1) * sizeof(size_t)), malloc((n / 2 + 1) * sizeof(size_t)), 0, 0};
  FZ_CHECK(c.off && c.len);
  int want_rc = LR_PROTO_OK, want_partial = 0;
  size_t pos = 0;
  while (pos < n) {
    if (n - pos < 2) {
      want_partial = 1;
      break;
    }
    size_t len = (size_t)s[pos] << 8 | s[pos + 1];
    if (len > LR_DGRAM_MAX) {
      want_rc = LR_PROTO_ETOOBIG;
      break;
    }
    if (n - pos - 2 < len) {
      want_partial = 1;
      break;
    }
    c.off[c.n] = pos + 2;
    c.len[c.n++] = len;
    pos += 2 + len;
  }

  lr_dgram_rx_t rx;
  lr_dgram_rx_init(&rx);
  int rc = LR_PROTO_OK;
  pos = 0;
  while (pos < n && rc == LR_PROTO_OK) {
    uint32_t r = next_rand(&rnd);
    size_t want = (r & 3) == 0 ? 1 + (r >> 2) % 70000 : 1 + (r >> 2) % 16;
    size_t take = n - pos < want ? n - pos : want;
    uint8_t *chunk = fz_dup(s + pos, take); /* ASan sees a read past the chunk */
    rc = lr_dgram_rx_feed(&rx, chunk, take, on_dgram, &c);
    free(chunk);
    pos += take;
  }
  FZ_CHECK(rc == want_rc);
  FZ_CHECK(c.k == c.n);
  if (rc == LR_PROTO_OK) FZ_CHECK(lr_dgram_rx_partial(&rx) == want_partial);
  lr_dgram_rx_free(&rx);
  free(c.off);
  free(c.len);
  free(s);
  return 0;
}
