/* Receive buffer for the framed part of a stream; see lr_rxbuf.h. */
#include "lr_rxbuf.h"

#include <string.h>

void lr_rxbuf_init(lr_rxbuf_t *rb) {
  rb->len = 0;
  rb->off = 0;
}

uint8_t *lr_rxbuf_space(lr_rxbuf_t *rb, size_t *avail) {
  if (rb->off) {
    memmove(rb->data, rb->data + rb->off, rb->len - rb->off);
    rb->len -= rb->off;
    rb->off = 0;
  }
  *avail = sizeof rb->data - rb->len;
  return rb->data + rb->len;
}

void lr_rxbuf_commit(lr_rxbuf_t *rb, size_t n) {
  if (n > sizeof rb->data - rb->len) n = sizeof rb->data - rb->len;
  rb->len += n;
}

int lr_rxbuf_preamble(lr_rxbuf_t *rb, lr_preamble_t *out) {
  int rc = lr_preamble_decode(rb->data + rb->off, rb->len - rb->off, out);
  if (rc == LR_PROTO_OK || rc == LR_PROTO_EVERSION) {
    /* Consumed even on a version mismatch, so the caller can answer. */
    rb->off += LR_PREAMBLE_LEN;
  }
  return rc;
}

int lr_rxbuf_frame(lr_rxbuf_t *rb, lr_frame_t *f) {
  size_t consumed = 0;
  int rc = lr_frame_decode(rb->data + rb->off, rb->len - rb->off, f, &consumed);
  if (rc == LR_PROTO_OK) rb->off += consumed;
  return rc;
}

const uint8_t *lr_rxbuf_rest(const lr_rxbuf_t *rb, size_t *n) {
  *n = rb->len - rb->off;
  return rb->data + rb->off;
}
