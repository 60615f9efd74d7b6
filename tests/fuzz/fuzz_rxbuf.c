/* libFuzzer target: the receive buffer (lr_rxbuf), preamble + frames fed
 * in arbitrary chunks, the way libuv hands a hostile peer's bytes over.
 *
 * Input: byte 0 bit 0 = the stream starts with a preamble (control, data
 * and reverse streams all do; 0 starts at the frames), bytes 1-2 seed the
 * chunk sizes, the rest is the stream. The oracle is differential: the
 * same bytes parsed in one piece with lr_preamble_decode/lr_frame_decode
 * give the expected preamble result, frame sequence and leftover bytes,
 * and no way of splitting the reads may change any of them. The leftover
 * matters: a data stream hands it to the relay after OPEN_RESULT, so a byte
 * lost or duplicated there corrupts a user's connection. */
#include <string.h>

#include "fuzz_common.h"
#include "lr_proto.h"
#include "lr_rxbuf.h"

typedef struct {
  size_t off; /* of the header in the stream */
  uint16_t type, flags;
  uint32_t len;
} ref_frame_t;

typedef struct {
  int pre_rc;   /* preamble result (OK if the stream has none) */
  lr_preamble_t pre; /* its fields, when pre_rc says they were read */
  ref_frame_t *frames;
  size_t nframes;
  int end_rc;   /* NEED_MORE (clean end) or the error that stopped it */
  size_t rest;  /* offset of the first unconsumed byte (clean end only) */
} ref_t;

static int stopped_by_preamble(int rc) { return rc != LR_PROTO_OK; }
/* lr_preamble_decode fills in the fields once the magic and length are right. */
static int fields_read(int rc) {
  return rc == LR_PROTO_OK || rc == LR_PROTO_EVERSION || rc == LR_PROTO_EINVAL;
}

static void reference(const uint8_t *s, size_t n, int with_preamble, ref_t *r) {
  size_t pos = 0;
  r->nframes = 0;
  r->pre_rc = LR_PROTO_OK;
  r->end_rc = LR_PROTO_NEED_MORE;
  if (with_preamble) {
    r->pre_rc = lr_preamble_decode(s, n, &r->pre);
    if (stopped_by_preamble(r->pre_rc)) return;
    pos = LR_PREAMBLE_LEN;
  }
  for (;;) {
    lr_frame_t f;
    size_t used = 0;
    int rc = lr_frame_decode(s + pos, n - pos, &f, &used);
    if (rc != LR_PROTO_OK) {
      r->end_rc = rc;
      r->rest = pos;
      return;
    }
    r->frames[r->nframes++] = (ref_frame_t){pos, f.type, f.flags, f.len};
    pos += used;
  }
}

static uint32_t next_rand(uint32_t *x) {
  /* xorshift32: cheap, and the same input always splits the same way. */
  *x ^= *x << 13;
  *x ^= *x >> 17;
  *x ^= *x << 5;
  return *x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  int with_preamble = data[0] & 1;
  uint32_t rnd = ((uint32_t)data[1] << 8 | data[2]) * 2654435761u + 1;
  const uint8_t *s = data + 3;
  size_t n = size - 3;

  ref_t ref;
  ref.frames = malloc((n / LR_FRAME_HDR_LEN + 1) * sizeof *ref.frames);
  FZ_CHECK(ref.frames != NULL);
  uint8_t *exact = fz_dup(s, n);
  reference(exact, n, with_preamble, &ref);
  free(exact);

  static lr_rxbuf_t rb;
  lr_rxbuf_init(&rb);
  int have_preamble = !with_preamble;
  int pre_rc = LR_PROTO_NEED_MORE;
  int end_rc = LR_PROTO_NEED_MORE;
  size_t pos = 0, k = 0;
  while (pos < n) {
    size_t avail;
    uint8_t *space = lr_rxbuf_space(&rb, &avail);
    /* What is held is less than one frame (or preamble), which always fits. */
    FZ_CHECK(avail > 0 && space == rb.data + rb.len && rb.off == 0);
    /* Mostly short reads, sometimes long ones, sometimes all there is. */
    uint32_t r = next_rand(&rnd);
    size_t want = (r & 3) == 0 ? 1 + (r >> 2) % 4200 : 1 + (r >> 2) % 16;
    size_t take = n - pos < want ? n - pos : want;
    if (take > avail) take = avail;
    memcpy(space, s + pos, take);
    lr_rxbuf_commit(&rb, take);
    pos += take;
    for (;;) {
      int rc;
      if (!have_preamble) {
        lr_preamble_t pre;
        rc = lr_rxbuf_preamble(&rb, &pre);
        if (rc == LR_PROTO_NEED_MORE) break;
        pre_rc = rc;
        FZ_CHECK(rc == ref.pre_rc);
        if (fields_read(rc)) {
          /* Version, kind and (protocol 2) the KEYED flag, as one piece. */
          FZ_CHECK(pre.version == ref.pre.version && pre.kind == ref.pre.kind &&
                   pre.flags == ref.pre.flags);
          FZ_CHECK(pre.version == s[4] && pre.kind == s[5] && pre.flags == s[6]);
        }
        if (stopped_by_preamble(rc)) goto done;
        have_preamble = 1;
        continue;
      }
      lr_frame_t f;
      rc = lr_rxbuf_frame(&rb, &f);
      if (rc == LR_PROTO_NEED_MORE) break;
      if (rc != LR_PROTO_OK) {
        end_rc = rc;
        goto done;
      }
      FZ_CHECK(k < ref.nframes);
      const ref_frame_t *e = &ref.frames[k++];
      FZ_CHECK(f.type == e->type && f.flags == e->flags && f.len == e->len);
      FZ_CHECK(f.payload >= rb.data && f.payload + f.len <= rb.data + rb.len);
      FZ_CHECK(f.len == 0 || memcmp(f.payload, s + e->off + LR_FRAME_HDR_LEN, f.len) == 0);
    }
  }
done:
  if (with_preamble) {
    /* Every byte was fed, so even an incomplete preamble is what both saw. */
    FZ_CHECK(pre_rc == ref.pre_rc);
  }
  if (!with_preamble || !stopped_by_preamble(ref.pre_rc)) {
    FZ_CHECK(k == ref.nframes);
    FZ_CHECK(end_rc == ref.end_rc);
    if (end_rc == LR_PROTO_NEED_MORE) {
      size_t rest_len;
      const uint8_t *rest = lr_rxbuf_rest(&rb, &rest_len);
      FZ_CHECK(rest_len == n - ref.rest);
      FZ_CHECK(rest_len == 0 || memcmp(rest, s + ref.rest, rest_len) == 0);
    }
  }
  free(ref.frames);
  return 0;
}
