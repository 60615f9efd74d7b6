/* A receive buffer for the framed part of a stream (preamble + frames).
 *
 * Sized for one maximal frame, so a peer can never make us buffer more than
 * that; libuv reads straight into its free space. Leftover bytes after the
 * last frame a data stream needs are handed on to the relay untouched. */
#ifndef LR_RXBUF_H
#define LR_RXBUF_H

#include <stddef.h>
#include <stdint.h>
#include "lr_proto.h"

#define LR_RXBUF_SIZE (LR_PREAMBLE_LEN + LR_FRAME_HDR_LEN + LR_FRAME_MAX_PAYLOAD)

typedef struct {
  uint8_t data[LR_RXBUF_SIZE];
  size_t len;   /* bytes held */
  size_t off;   /* bytes already consumed from data */
} lr_rxbuf_t;

void lr_rxbuf_init(lr_rxbuf_t *rb);
/* Free space to read into (compacts first). */
uint8_t *lr_rxbuf_space(lr_rxbuf_t *rb, size_t *avail);
void lr_rxbuf_commit(lr_rxbuf_t *rb, size_t n);
/* Preamble: OK (consumed), NEED_MORE, or an LR_PROTO_E* error. */
int lr_rxbuf_preamble(lr_rxbuf_t *rb, lr_preamble_t *out);
/* Next whole frame: OK (f->payload valid until the next call), NEED_MORE,
 * or an error (ETOOBIG). */
int lr_rxbuf_frame(lr_rxbuf_t *rb, lr_frame_t *f);
/* Unconsumed bytes (for handing to the relay). */
const uint8_t *lr_rxbuf_rest(const lr_rxbuf_t *rb, size_t *n);

#endif
