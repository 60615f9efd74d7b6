/* libFuzzer target: frames and message payloads (lr_frame_decode and every
 * lr_decode_*, protocol 2: auth blocks, CHALLENGE, OPEN_RESULT's trailing
 * auth block), with decode -> encode -> decode round trips.
 *
 * The input is read twice: as a run of frames (header + payload, as a peer
 * sends them; each one through every decoder whatever its type), and as
 * one bare payload through every decoder, so a payload the mutator builds
 * need not also get a matching header right. Every buffer a
 * decoder sees is an exact-size heap copy: a read one byte past the input
 * is an ASan report, not a silent read of the fuzzer's slack. */
#include <string.h>

#include "fuzz_common.h"
#include "lr_proto.h"

static const uint16_t known_types[] = {
    LR_MSG_HELLO,        LR_MSG_WELCOME,      LR_MSG_ERROR,       LR_MSG_CHALLENGE,
    LR_MSG_LISTENER_ADD, LR_MSG_LISTENER_DEL, LR_MSG_SYNC_DONE,   LR_MSG_PORT_STATE,
    LR_MSG_REVERSE_SET,  LR_MSG_REVERSE_OPEN, LR_MSG_REVERSE_FAIL, LR_MSG_PING,
    LR_MSG_PONG,         LR_MSG_OPEN,         LR_MSG_OPEN_RESULT, LR_MSG_ATTACH,
    LR_MSG_STREAM_CLOSE,
};

static void as_frames(const uint8_t *buf, size_t size) {
  size_t off = 0;
  for (;;) {
    lr_frame_t f;
    size_t consumed = 0;
    int rc = lr_frame_decode(buf + off, size - off, &f, &consumed);
    if (rc == LR_PROTO_NEED_MORE) {
      /* Only a short header or a short payload may ask for more. */
      if (size - off >= LR_FRAME_HDR_LEN) {
        uint32_t plen = (uint32_t)buf[off + 4] << 24 | (uint32_t)buf[off + 5] << 16 |
                        (uint32_t)buf[off + 6] << 8 | buf[off + 7];
        FZ_CHECK(plen <= LR_FRAME_MAX_PAYLOAD && size - off - LR_FRAME_HDR_LEN < plen);
      }
      return;
    }
    if (rc != LR_PROTO_OK) {
      FZ_CHECK(rc == LR_PROTO_ETOOBIG); /* the only framing error there is */
      return;
    }
    FZ_CHECK(consumed == LR_FRAME_HDR_LEN + f.len && consumed <= size - off);
    FZ_CHECK(f.len <= LR_FRAME_MAX_PAYLOAD && f.payload == buf + off + LR_FRAME_HDR_LEN);
    fz_decode_all(&f);
    off += consumed;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *buf = fz_dup(data, size);
  as_frames(buf, size);
  if (size <= LR_FRAME_MAX_PAYLOAD) {
    /* Decoders ignore the type; it only picks which encoder variant
     * (HELLO or WELCOME, ERROR or OPEN_RESULT...) the round trip uses. */
    size_t pick = size ? buf[0] : 0;
    lr_frame_t f = {.type = known_types[pick % (sizeof known_types / sizeof known_types[0])],
                    .flags = 0, .len = (uint32_t)size, .payload = buf};
    fz_decode_all(&f);
  }
  free(buf);
  return 0;
}
