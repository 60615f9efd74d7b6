/* Unit tests for lr_rxbuf, the receive buffer in front of every decoder.
 *
 * The network decides how bytes are split into reads, so every test feeds
 * the same byte stream in different splits (one byte at a time, everything
 * at once, frames straddling reads) and expects the same frames out, plus
 * the exact leftover bytes a data stream hands to the relay. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "lr_rxbuf.h"

/* Copies up to n bytes into the buffer's free space like a read would. */
static size_t feed(lr_rxbuf_t *rb, const uint8_t *src, size_t n) {
  size_t avail = 0;
  uint8_t *p = lr_rxbuf_space(rb, &avail);
  assert_non_null(p);
  if (n > avail) n = avail;
  memcpy(p, src, n);
  lr_rxbuf_commit(rb, n);
  return n;
}

/* A control stream: preamble, then a mix of frames including an unknown
 * type and a maximal one. Returns its length; *nframes gets the count. */
static size_t build_stream(uint8_t *out, size_t cap, int *nframes) {
  size_t n = 0;
  int k = 0;
  lr_preamble_encode(out, LR_STREAM_CONTROL);
  n += LR_PREAMBLE_LEN;
  lr_listener_t l;
  memset(&l, 0, sizeof l);
  l.family = 4;
  for (int i = 0; i < 5; i++) {
    l.port = (uint16_t)(8000 + i);
    n += lr_encode_listener(out + n, cap - n, LR_MSG_LISTENER_ADD, &l);
    k++;
  }
  n += lr_encode_empty(out + n, cap - n, LR_MSG_SYNC_DONE);
  k++;
  /* unknown type 0x7777 with 3 bytes, hand-built */
  const uint8_t unk[] = {0x77, 0x77, 0, 0, 0, 0, 0, 3, 'a', 'b', 'c'};
  memcpy(out + n, unk, sizeof unk);
  n += sizeof unk;
  k++;
  n += lr_encode_ping(out + n, cap - n, LR_MSG_PING, 0x1122334455667788ull);
  k++;
  /* a maximal frame */
  const uint8_t hdr[] = {0x70, 0x00, 0, 0, 0, 0, (LR_FRAME_MAX_PAYLOAD >> 8) & 0xff,
                         LR_FRAME_MAX_PAYLOAD & 0xff};
  memcpy(out + n, hdr, sizeof hdr);
  n += sizeof hdr;
  for (int i = 0; i < LR_FRAME_MAX_PAYLOAD; i++) out[n++] = (uint8_t)(i * 13);
  k++;
  l.port = 9000;
  n += lr_encode_listener(out + n, cap - n, LR_MSG_LISTENER_DEL, &l);
  k++;
  assert_true(n <= cap);
  *nframes = k;
  return n;
}

/* Checks one frame from build_stream's sequence. */
static void check_frame(int idx, const lr_frame_t *f) {
  lr_listener_t l;
  uint64_t nonce;
  if (idx < 5) {
    assert_int_equal(f->type, LR_MSG_LISTENER_ADD);
    assert_int_equal(lr_decode_listener(f, &l), LR_PROTO_OK);
    assert_int_equal(l.port, 8000 + idx);
  } else if (idx == 5) {
    assert_int_equal(f->type, LR_MSG_SYNC_DONE);
    assert_int_equal(f->len, 0);
  } else if (idx == 6) {
    assert_int_equal(f->type, 0x7777);
    assert_int_equal(f->len, 3);
    assert_memory_equal(f->payload, "abc", 3);
  } else if (idx == 7) {
    assert_int_equal(f->type, LR_MSG_PING);
    assert_int_equal(lr_decode_ping(f, &nonce), LR_PROTO_OK);
    assert_true(nonce == 0x1122334455667788ull);
  } else if (idx == 8) {
    assert_int_equal(f->type, 0x7000);
    assert_int_equal(f->len, LR_FRAME_MAX_PAYLOAD);
    for (int i = 0; i < LR_FRAME_MAX_PAYLOAD; i++)
      if (f->payload[i] != (uint8_t)(i * 13)) fail_msg("max frame byte %d corrupted", i);
  } else if (idx == 9) {
    assert_int_equal(f->type, LR_MSG_LISTENER_DEL);
    assert_int_equal(lr_decode_listener(f, &l), LR_PROTO_OK);
    assert_int_equal(l.port, 9000);
  } else {
    fail_msg("unexpected frame %d", idx);
  }
}

/* Feeds the stream in chunks of `chunk` bytes (the last may be shorter),
 * draining frames after each read, and checks every frame arrives once and
 * in order. */
static void run_split(size_t chunk) {
  static uint8_t stream[2 * LR_RXBUF_SIZE];
  int nframes;
  size_t n = build_stream(stream, sizeof stream, &nframes);
  lr_rxbuf_t rb;
  lr_rxbuf_init(&rb);
  int have_preamble = 0, got = 0;
  size_t pos = 0;
  while (pos < n) {
    size_t want = n - pos < chunk ? n - pos : chunk;
    size_t put = feed(&rb, stream + pos, want);
    assert_true(put > 0); /* a complete frame always fits: never stuck */
    pos += put;
    for (;;) {
      int rc;
      if (!have_preamble) {
        lr_preamble_t pre;
        rc = lr_rxbuf_preamble(&rb, &pre);
        if (rc == LR_PROTO_NEED_MORE) break;
        assert_int_equal(rc, LR_PROTO_OK);
        assert_int_equal(pre.kind, LR_STREAM_CONTROL);
        have_preamble = 1;
        continue;
      }
      lr_frame_t f;
      rc = lr_rxbuf_frame(&rb, &f);
      if (rc == LR_PROTO_NEED_MORE) break;
      assert_int_equal(rc, LR_PROTO_OK);
      check_frame(got++, &f);
    }
  }
  assert_int_equal(got, nframes);
  size_t rest;
  lr_rxbuf_rest(&rb, &rest);
  assert_int_equal(rest, 0);
}

static void test_byte_by_byte(void **state) {
  (void)state;
  run_split(1);
}

static void test_odd_splits(void **state) {
  (void)state;
  const size_t chunks[] = {2, 3, 7, 8, 9, 19, 28, 100, 1000, 4103, 4104, 4105};
  for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) run_split(chunks[i]);
}

static void test_all_at_once(void **state) {
  (void)state;
  /* As much as the buffer takes per read: several frames in one read. */
  run_split(LR_RXBUF_SIZE);
}

static void test_several_frames_one_read(void **state) {
  (void)state;
  uint8_t buf[256];
  size_t n = 0;
  for (int i = 0; i < 10; i++) n += lr_encode_ping(buf + n, sizeof buf - n, LR_MSG_PONG, (uint64_t)i);
  lr_rxbuf_t rb;
  lr_rxbuf_init(&rb);
  assert_int_equal(feed(&rb, buf, n), n);
  for (int i = 0; i < 10; i++) {
    lr_frame_t f;
    uint64_t nonce;
    assert_int_equal(lr_rxbuf_frame(&rb, &f), LR_PROTO_OK);
    assert_int_equal(lr_decode_ping(&f, &nonce), LR_PROTO_OK);
    assert_true(nonce == (uint64_t)i);
  }
  lr_frame_t f;
  assert_int_equal(lr_rxbuf_frame(&rb, &f), LR_PROTO_NEED_MORE);
}

/* A data stream: preamble + OPEN_RESULT, then the relayed bytes may already
 * be in the same read; they must come out of rest() untouched. */
static void test_rest_after_frame(void **state) {
  (void)state;
  uint8_t buf[256];
  size_t n = 0;
  lr_preamble_encode(buf, LR_STREAM_DATA);
  n += LR_PREAMBLE_LEN;
  n += lr_encode_open_result(buf + n, sizeof buf - n, LR_OK, NULL, NULL);
  const char payload[] = "HTTP/1.0 200 OK\r\n\r\n\x00\x01\x02";
  memcpy(buf + n, payload, sizeof payload);
  n += sizeof payload;

  for (size_t split = 1; split < n; split++) {
    lr_rxbuf_t rb;
    lr_rxbuf_init(&rb);
    lr_preamble_t pre;
    lr_frame_t f;
    size_t rest_len;
    feed(&rb, buf, split);
    int rc = lr_rxbuf_preamble(&rb, &pre);
    if (rc == LR_PROTO_NEED_MORE) {
      assert_true(split < LR_PREAMBLE_LEN);
      /* nothing consumed yet */
      lr_rxbuf_rest(&rb, &rest_len);
      assert_int_equal(rest_len, split);
    }
    feed(&rb, buf + split, n - split);
    if (rc == LR_PROTO_NEED_MORE) rc = lr_rxbuf_preamble(&rb, &pre);
    assert_int_equal(rc, LR_PROTO_OK);
    assert_int_equal(pre.kind, LR_STREAM_DATA);
    assert_int_equal(lr_rxbuf_frame(&rb, &f), LR_PROTO_OK);
    assert_int_equal(f.type, LR_MSG_OPEN_RESULT);
    const uint8_t *rest = lr_rxbuf_rest(&rb, &rest_len);
    assert_int_equal(rest_len, sizeof payload);
    assert_memory_equal(rest, payload, sizeof payload);
  }
}

/* The buffer must keep accepting data forever: consumed bytes are reclaimed
 * (compaction) and a frame split across the end of the buffer survives the
 * move intact. */
static void test_compaction(void **state) {
  (void)state;
  lr_rxbuf_t rb;
  lr_rxbuf_init(&rb);
  uint8_t frame[LR_FRAME_HDR_LEN + 20];
  lr_listener_t l;
  memset(&l, 0, sizeof l);
  l.family = 6;
  l.addr[15] = 1;
  size_t total_in = 0, got = 0;
  uint8_t pending[2 * sizeof frame];
  size_t npending = 0;
  /* Push 2000 frames (far more than LR_RXBUF_SIZE bytes) in reads of 11
   * bytes, each read landing wherever the previous one left off. */
  for (unsigned i = 0; i < 2000; i++) {
    l.port = (uint16_t)(i + 1);
    size_t n = lr_encode_listener(frame, sizeof frame, LR_MSG_LISTENER_ADD, &l);
    memcpy(pending + npending, frame, n);
    npending += n;
    while (npending >= 11) {
      assert_int_equal(feed(&rb, pending, 11), 11);
      memmove(pending, pending + 11, npending - 11);
      npending -= 11;
      total_in += 11;
      lr_frame_t f;
      lr_listener_t d;
      while (lr_rxbuf_frame(&rb, &f) == LR_PROTO_OK) {
        assert_int_equal(lr_decode_listener(&f, &d), LR_PROTO_OK);
        assert_int_equal(d.port, (uint16_t)(got + 1));
        got++;
      }
    }
  }
  assert_true(total_in > 10 * LR_RXBUF_SIZE);
  assert_true(got >= 1990);
  /* after draining, the whole buffer is free again minus the partial frame */
  size_t avail;
  lr_rxbuf_space(&rb, &avail);
  size_t rest;
  lr_rxbuf_rest(&rb, &rest);
  assert_int_equal(avail + rest, LR_RXBUF_SIZE);
}

/* The buffer never offers more than LR_RXBUF_SIZE, commit cannot push it
 * past its end, and a maximal frame after the preamble fits exactly. */
static void test_capacity_limit(void **state) {
  (void)state;
  lr_rxbuf_t rb;
  lr_rxbuf_init(&rb);
  size_t avail;
  lr_rxbuf_space(&rb, &avail);
  assert_int_equal(avail, LR_RXBUF_SIZE);

  static uint8_t stream[LR_RXBUF_SIZE];
  lr_preamble_encode(stream, LR_STREAM_CONTROL);
  uint8_t *h = stream + LR_PREAMBLE_LEN;
  h[0] = 0;
  h[1] = LR_MSG_PING;
  h[6] = (LR_FRAME_MAX_PAYLOAD >> 8) & 0xff;
  h[7] = LR_FRAME_MAX_PAYLOAD & 0xff;
  assert_int_equal(feed(&rb, stream, sizeof stream), sizeof stream);
  lr_rxbuf_space(&rb, &avail);
  assert_int_equal(avail, 0);
  lr_rxbuf_commit(&rb, 100); /* a buggy caller: must not overrun */
  size_t rest;
  lr_rxbuf_rest(&rb, &rest);
  assert_int_equal(rest, LR_RXBUF_SIZE);

  lr_preamble_t pre;
  lr_frame_t f;
  assert_int_equal(lr_rxbuf_preamble(&rb, &pre), LR_PROTO_OK);
  assert_int_equal(lr_rxbuf_frame(&rb, &f), LR_PROTO_OK);
  assert_int_equal(f.len, LR_FRAME_MAX_PAYLOAD);
  lr_rxbuf_rest(&rb, &rest);
  assert_int_equal(rest, 0);
  lr_rxbuf_space(&rb, &avail);
  assert_int_equal(avail, LR_RXBUF_SIZE);
}

/* An oversized announcement is an error as soon as its header is in, even
 * though the buffer could never hold the payload. */
static void test_too_big(void **state) {
  (void)state;
  lr_rxbuf_t rb;
  lr_rxbuf_init(&rb);
  const uint8_t hdr[] = {0, LR_MSG_LISTENER_ADD, 0, 0, 0, 0, 0x10, 0x01};
  lr_frame_t f;
  for (size_t i = 0; i < sizeof hdr - 1; i++) {
    feed(&rb, hdr + i, 1);
    assert_int_equal(lr_rxbuf_frame(&rb, &f), LR_PROTO_NEED_MORE);
  }
  feed(&rb, hdr + sizeof hdr - 1, 1);
  assert_int_equal(lr_rxbuf_frame(&rb, &f), LR_PROTO_ETOOBIG);
}

static void test_preamble_errors(void **state) {
  (void)state;
  lr_rxbuf_t rb;
  lr_preamble_t pre;
  lr_rxbuf_init(&rb);
  feed(&rb, (const uint8_t *)"SSH-2.0-", 8);
  assert_int_equal(lr_rxbuf_preamble(&rb, &pre), LR_PROTO_EBADMAGIC);

  /* A version mismatch is reported with the peer's version, and the
   * preamble is consumed so an ERROR frame can follow on the stream. */
  uint8_t p[LR_PREAMBLE_LEN];
  lr_preamble_encode(p, LR_STREAM_CONTROL);
  p[4] = 9;
  lr_rxbuf_init(&rb);
  feed(&rb, p, sizeof p);
  assert_int_equal(lr_rxbuf_preamble(&rb, &pre), LR_PROTO_EVERSION);
  assert_int_equal(pre.version, 9);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_byte_by_byte),
      cmocka_unit_test(test_odd_splits),
      cmocka_unit_test(test_all_at_once),
      cmocka_unit_test(test_several_frames_one_read),
      cmocka_unit_test(test_rest_after_frame),
      cmocka_unit_test(test_compaction),
      cmocka_unit_test(test_capacity_limit),
      cmocka_unit_test(test_too_big),
      cmocka_unit_test(test_preamble_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
