/* libFuzzer target for the wire protocol: arbitrary bytes through the
 * receive buffer and every decoder, the way a hostile peer would deliver
 * them.
 *
 * The first input byte picks how the stream is split into reads, so the
 * fuzzer explores framing across read boundaries as well as payload
 * contents. Every decoded frame goes through every decoder regardless of
 * its type (a type confusion must be as harmless as a garbled payload), and
 * what decodes is re-encoded and decoded again: a value the decoder accepts
 * must round-trip. ASan/UBSan turn any out-of-bounds read into a crash. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lr_proto.h"
#include "lr_rxbuf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_roundtrip_listener(uint16_t type, const lr_listener_t *l) {
  uint8_t buf[LR_FRAME_HDR_LEN + 64];
  size_t n = lr_encode_listener(buf, sizeof buf, type, l);
  if (!n) abort(); /* the decoder accepted what the encoder refuses */
  lr_frame_t f;
  size_t consumed;
  lr_listener_t d;
  if (lr_frame_decode(buf, n, &f, &consumed) != LR_PROTO_OK || consumed != n) abort();
  if (lr_decode_listener(&f, &d) != LR_PROTO_OK || lr_listener_cmp(&d, l) != 0) abort();
  char text[64];
  lr_listener_format(l, text, sizeof text);
}

static void decode_all(const lr_frame_t *f) {
  union {
    lr_hello_t hello;
    lr_error_msg_t error;
    lr_listener_t listener;
    lr_port_state_msg_t port_state;
    lr_open_t open;
  } u;
  uint64_t nonce;
  static uint8_t buf[LR_FRAME_HDR_LEN + LR_FRAME_MAX_PAYLOAD];
  lr_frame_t g;
  size_t consumed;

  (void)lr_msg_name(f->type);
  if (lr_decode_hello(f, &u.hello) == LR_PROTO_OK) {
    if (strlen(u.hello.name) >= sizeof u.hello.name) abort();
    size_t n = lr_encode_hello(buf, sizeof buf, f->type, &u.hello);
    lr_hello_t d;
    if (!n || lr_frame_decode(buf, n, &g, &consumed) != LR_PROTO_OK) abort();
    if (lr_decode_hello(&g, &d) != LR_PROTO_OK || d.auth.len != u.hello.auth.len ||
        memcmp(d.auth.data, u.hello.auth.data, d.auth.len) || strcmp(d.name, u.hello.name) ||
        strcmp(d.version, u.hello.version))
      abort();
    (void)lr_token_equal(u.hello.auth.data, u.hello.auth.len, d.auth.data, d.auth.len);
  }
  if (lr_decode_error(f, &u.error) == LR_PROTO_OK) {
    if (strlen(u.error.text) >= sizeof u.error.text) abort();
    (void)lr_err_name(u.error.code);
    size_t n = lr_encode_error(buf, sizeof buf, u.error.code, u.error.text);
    lr_error_msg_t d;
    if (!n || lr_frame_decode(buf, n, &g, &consumed) != LR_PROTO_OK) abort();
    if (lr_decode_error(&g, &d) != LR_PROTO_OK || d.code != u.error.code ||
        strcmp(d.text, u.error.text))
      abort();
  }
  if (lr_decode_listener(f, &u.listener) == LR_PROTO_OK)
    check_roundtrip_listener(f->type, &u.listener);
  if (lr_decode_port_state(f, &u.port_state) == LR_PROTO_OK) {
    (void)lr_port_state_name((lr_port_state_t)u.port_state.state);
    size_t n = lr_encode_port_state(buf, sizeof buf, &u.port_state);
    lr_port_state_msg_t d;
    if (!n || lr_frame_decode(buf, n, &g, &consumed) != LR_PROTO_OK) abort();
    if (lr_decode_port_state(&g, &d) != LR_PROTO_OK || d.state != u.port_state.state ||
        d.host_port != u.port_state.host_port || lr_listener_cmp(&d.listener, &u.port_state.listener))
      abort();
  }
  if (lr_decode_open(f, &u.open) == LR_PROTO_OK) {
    size_t n = lr_encode_open(buf, sizeof buf, &u.open);
    lr_open_t d;
    if (!n || lr_frame_decode(buf, n, &g, &consumed) != LR_PROTO_OK) abort();
    if (lr_decode_open(&g, &d) != LR_PROTO_OK || d.port != u.open.port ||
        d.family != u.open.family || d.auth.len != u.open.auth.len)
      abort();
  }
  if (lr_decode_ping(f, &nonce) == LR_PROTO_OK) {
    size_t n = lr_encode_ping(buf, sizeof buf, f->type, nonce);
    uint64_t d;
    if (!n || lr_frame_decode(buf, n, &g, &consumed) != LR_PROTO_OK) abort();
    if (lr_decode_ping(&g, &d) != LR_PROTO_OK || d != nonce) abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  size_t chunk = (size_t)data[0] + 1; /* 1..256 bytes per "read" */
  int with_preamble = data[0] & 1;
  data++;
  size--;

  /* Decoders on a copy of exactly the input, so reads past it are caught. */
  uint8_t *exact = malloc(size ? size : 1);
  if (!exact) return 0;
  if (size) memcpy(exact, data, size);
  lr_preamble_t pre;
  (void)lr_preamble_decode(exact, size, &pre);
  lr_frame_t f = {.type = LR_MSG_HELLO, .len = (uint32_t)size, .payload = exact};
  if (size <= LR_FRAME_MAX_PAYLOAD) decode_all(&f);
  free(exact);

  /* The same bytes as a stream through the receive buffer. */
  lr_rxbuf_t rb;
  lr_rxbuf_init(&rb);
  int have_preamble = !with_preamble;
  size_t pos = 0;
  int failed = 0;
  while (pos < size && !failed) {
    size_t avail;
    uint8_t *space = lr_rxbuf_space(&rb, &avail);
    if (avail == 0) abort(); /* a complete frame always fits */
    size_t n = size - pos < chunk ? size - pos : chunk;
    if (n > avail) n = avail;
    memcpy(space, data + pos, n);
    lr_rxbuf_commit(&rb, n);
    pos += n;
    for (;;) {
      int rc;
      if (!have_preamble) {
        rc = lr_rxbuf_preamble(&rb, &pre);
        if (rc == LR_PROTO_NEED_MORE) break;
        if (rc != LR_PROTO_OK) {
          failed = 1;
          break;
        }
        have_preamble = 1;
        continue;
      }
      rc = lr_rxbuf_frame(&rb, &f);
      if (rc == LR_PROTO_NEED_MORE) break;
      if (rc != LR_PROTO_OK) {
        if (rc != LR_PROTO_ETOOBIG) abort(); /* the only framing error */
        failed = 1;
        break;
      }
      if (f.len > LR_FRAME_MAX_PAYLOAD) abort();
      decode_all(&f);
    }
  }
  size_t rest;
  const uint8_t *r = lr_rxbuf_rest(&rb, &rest);
  if (rest > LR_RXBUF_SIZE || (rest && !r)) abort();
  return 0;
}
