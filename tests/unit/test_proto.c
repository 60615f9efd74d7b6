/* Unit tests for the wire protocol (lr_proto): preamble, frame header and
 * every message's encoder/decoder.
 *
 * Two kinds of checks: round trips (whatever is encoded decodes to the same
 * values), and hostile input (every truncation, oversized lengths, bad field
 * values, trailing bytes from a newer peer, unknown types). The golden-bytes
 * tests pin the wire layout: both targets and all released versions must
 * agree on it, so a layout change has to be a deliberate test change too. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "lr_proto.h"
#include "lr_testutil.h"

#define BUFSZ (LR_FRAME_HDR_LEN + LR_FRAME_MAX_PAYLOAD + 64)

static lr_listener_t mk_v6(const uint8_t addr[16], uint16_t port, uint8_t flags) {
  lr_listener_t l;
  memset(&l, 0, sizeof l);
  l.family = 6;
  l.port = port;
  l.flags = flags;
  memcpy(l.addr, addr, 16);
  return l;
}

static const uint8_t V6_ANY[16] = {0};
static const uint8_t V6_LO[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

/* Decodes a whole encoded frame; asserts the header is consistent. */
static lr_frame_t frame_of(const uint8_t *buf, size_t len, uint16_t want_type) {
  lr_frame_t f;
  size_t consumed = 0;
  assert_int_equal(lr_frame_decode(buf, len, &f, &consumed), LR_PROTO_OK);
  assert_int_equal(consumed, len);
  assert_int_equal(f.type, want_type);
  assert_int_equal(f.len, len - LR_FRAME_HDR_LEN);
  assert_ptr_equal(f.payload, buf + LR_FRAME_HDR_LEN);
  return f;
}

/* ---- preamble ---------------------------------------------------------- */

static void test_preamble_roundtrip(void **state) {
  (void)state;
  uint8_t p[LR_PREAMBLE_LEN];
  lr_preamble_t out;
  lr_preamble_encode(p, LR_STREAM_CONTROL);
  assert_memory_equal(p, "LRLY", 4);
  assert_int_equal(p[4], LR_PROTO_VERSION);
  assert_int_equal(lr_preamble_decode(p, sizeof p, &out), LR_PROTO_OK);
  assert_int_equal(out.version, LR_PROTO_VERSION);
  assert_int_equal(out.kind, LR_STREAM_CONTROL);
  lr_preamble_encode(p, LR_STREAM_DATA);
  assert_int_equal(lr_preamble_decode(p, sizeof p, &out), LR_PROTO_OK);
  assert_int_equal(out.kind, LR_STREAM_DATA);
}

static void test_preamble_truncated(void **state) {
  (void)state;
  uint8_t p[LR_PREAMBLE_LEN];
  lr_preamble_t out;
  lr_preamble_encode(p, LR_STREAM_DATA);
  for (size_t n = 0; n < LR_PREAMBLE_LEN; n++)
    assert_int_equal(lr_preamble_decode(p, n, &out), LR_PROTO_NEED_MORE);
}

static void test_preamble_bad_magic(void **state) {
  (void)state;
  uint8_t p[LR_PREAMBLE_LEN];
  lr_preamble_t out;
  for (size_t i = 0; i < 4; i++) {
    lr_preamble_encode(p, LR_STREAM_CONTROL);
    p[i] ^= 0x20;
    assert_int_equal(lr_preamble_decode(p, sizeof p, &out), LR_PROTO_EBADMAGIC);
  }
  /* An HTTP client talking to the agent must be told at once, not after
   * it has sent 8 bytes it may never send. */
  const uint8_t *http = (const uint8_t *)"GET / HTTP/1.1\r\n";
  assert_int_equal(lr_preamble_decode(http, 1, &out), LR_PROTO_EBADMAGIC);
  assert_int_equal(lr_preamble_decode(http, 16, &out), LR_PROTO_EBADMAGIC);
}

static void test_preamble_other_version(void **state) {
  (void)state;
  uint8_t p[LR_PREAMBLE_LEN];
  lr_preamble_t out;
  lr_preamble_encode(p, LR_STREAM_CONTROL);
  p[4] = LR_PROTO_VERSION + 1;
  memset(&out, 0, sizeof out);
  assert_int_equal(lr_preamble_decode(p, sizeof p, &out), LR_PROTO_EVERSION);
  assert_int_equal(out.version, LR_PROTO_VERSION + 1); /* so we can say which */
  p[4] = 0;
  assert_int_equal(lr_preamble_decode(p, sizeof p, &out), LR_PROTO_EVERSION);
}

static void test_preamble_bad_kind(void **state) {
  (void)state;
  uint8_t p[LR_PREAMBLE_LEN];
  lr_preamble_t out;
  lr_preamble_encode(p, LR_STREAM_CONTROL);
  /* Kind 0 decodes: a keyed agent's preamble goes out before it knows the
   * kind (the agent itself refuses it from a host). */
  p[5] = 0;
  assert_int_equal(lr_preamble_decode(p, sizeof p, &out), LR_PROTO_OK);
  assert_int_equal(out.kind, LR_STREAM_ANY);
  p[5] = 3;
  assert_int_equal(lr_preamble_decode(p, sizeof p, &out), LR_PROTO_OK);
  assert_int_equal(out.kind, LR_STREAM_REVERSE);
  p[5] = 4;
  assert_int_equal(lr_preamble_decode(p, sizeof p, &out), LR_PROTO_EINVAL);
}

/* Byte 6 carries the flags: LR_PREAMBLE_KEYED says "I have a key". */
static void test_preamble_flags_golden(void **state) {
  (void)state;
  uint8_t p[LR_PREAMBLE_LEN];
  lr_preamble_t out;
  const uint8_t keyed_any[LR_PREAMBLE_LEN] = {'L', 'R', 'L', 'Y', 2, 0, 1, 0};
  const uint8_t plain_data[LR_PREAMBLE_LEN] = {'L', 'R', 'L', 'Y', 2, 2, 0, 0};
  lr_preamble_encode_flags(p, LR_STREAM_ANY, LR_PREAMBLE_KEYED);
  assert_memory_equal(p, keyed_any, sizeof p);
  assert_int_equal(lr_preamble_decode(p, sizeof p, &out), LR_PROTO_OK);
  assert_int_equal(out.flags, LR_PREAMBLE_KEYED);
  lr_preamble_encode(p, LR_STREAM_DATA);
  assert_memory_equal(p, plain_data, sizeof p);
  assert_int_equal(lr_preamble_decode(p, sizeof p, &out), LR_PROTO_OK);
  assert_int_equal(out.flags, 0);
  assert_int_equal(LR_PROTO_VERSION, 2);
}

/* ---- CHALLENGE and the auth blocks ------------------------------------- */

static void test_challenge(void **state) {
  (void)state;
  uint8_t nonce[LR_NONCE_LEN], got[LR_NONCE_LEN], buf[64];
  for (int i = 0; i < LR_NONCE_LEN; i++) nonce[i] = (uint8_t)(0xA0 + i);
  size_t n = lr_encode_challenge(buf, sizeof buf, nonce);
  assert_int_equal(n, LR_FRAME_HDR_LEN + LR_NONCE_LEN);
  const uint8_t hdr[LR_FRAME_HDR_LEN] = {0, 4, 0, 0, 0, 0, 0, 32};
  assert_memory_equal(buf, hdr, sizeof hdr);
  assert_memory_equal(buf + LR_FRAME_HDR_LEN, nonce, LR_NONCE_LEN);
  lr_frame_t f = frame_of(buf, n, LR_MSG_CHALLENGE);
  assert_int_equal(lr_decode_challenge(&f, got), LR_PROTO_OK);
  assert_memory_equal(got, nonce, LR_NONCE_LEN);
  for (uint32_t cut = 0; cut < LR_NONCE_LEN; cut++) {
    f.len = cut;
    assert_int_equal(lr_decode_challenge(&f, got), LR_PROTO_ESHORT);
  }
  assert_int_equal(lr_encode_challenge(buf, LR_FRAME_HDR_LEN + LR_NONCE_LEN - 1, nonce), 0);
  assert_string_equal(lr_msg_name(LR_MSG_CHALLENGE), "CHALLENGE");
}

/* OPEN_RESULT: status, text, then the agent's auth block. */
static void test_open_result_auth(void **state) {
  (void)state;
  uint8_t buf[BUFSZ];
  lr_auth_t a, got;
  lr_error_msg_t d;
  a.len = LR_AUTH_AGENT_LEN;
  for (int i = 0; i < LR_MAC_LEN; i++) a.data[i] = (uint8_t)i;
  size_t n = lr_encode_open_result(buf, sizeof buf, LR_OK, "", &a);
  assert_int_equal(n, LR_FRAME_HDR_LEN + 4 + 2 + 1 + LR_MAC_LEN);
  const uint8_t head[] = {0, 31, 0, 0, 0, 0, 0, 39, 0, 0, 0, 0, 0, 0, 32, 0, 1, 2};
  assert_memory_equal(buf, head, sizeof head);
  lr_frame_t f = frame_of(buf, n, LR_MSG_OPEN_RESULT);
  assert_int_equal(lr_decode_open_result(&f, &d, &got), LR_PROTO_OK);
  assert_int_equal(d.code, LR_OK);
  assert_int_equal(got.len, LR_AUTH_AGENT_LEN);
  assert_memory_equal(got.data, a.data, LR_MAC_LEN);
  /* ERROR's decoder reads the same status and text and ignores the rest. */
  assert_int_equal(lr_decode_error(&f, &d), LR_PROTO_OK);
  /* A block announced longer than the payload is short; a payload that
   * ends after the text has an empty block. */
  f.len -= 1;
  assert_int_equal(lr_decode_open_result(&f, &d, &got), LR_PROTO_ESHORT);
  f.len = 6;
  got.len = 99;
  assert_int_equal(lr_decode_open_result(&f, &d, &got), LR_PROTO_OK);
  assert_int_equal(got.len, 0);
  f.len = 5;
  assert_int_equal(lr_decode_open_result(&f, &d, &got), LR_PROTO_ESHORT);
  /* HELLO, OPEN and ATTACH carry the block first, as u8 len + bytes. */
  lr_open_t o, od;
  memset(&o, 0, sizeof o);
  o.auth.len = LR_AUTH_HOST_LEN;
  memset(o.auth.data, 0x5A, LR_AUTH_HOST_LEN);
  o.family = 4;
  o.port = 80;
  n = lr_encode_open(buf, sizeof buf, &o);
  assert_int_equal(n, LR_FRAME_HDR_LEN + 1 + LR_AUTH_HOST_LEN + 3);
  assert_int_equal(buf[LR_FRAME_HDR_LEN], LR_AUTH_HOST_LEN);
  f = frame_of(buf, n, LR_MSG_OPEN);
  assert_int_equal(lr_decode_open(&f, &od), LR_PROTO_OK);
  assert_int_equal(od.auth.len, LR_AUTH_HOST_LEN);
  assert_memory_equal(od.auth.data, o.auth.data, LR_AUTH_HOST_LEN);
}

/* What a MAC covers, byte for byte (docs/protocol.md). */
static void test_auth_input_golden(void **state) {
  (void)state;
  uint8_t an[LR_NONCE_LEN], hn[LR_NONCE_LEN], out[LR_AUTH_INPUT_MAX], fields[16];
  memset(an, 0xAA, sizeof an);
  memset(hn, 0xBB, sizeof hn);
  lr_open_t o;
  memset(&o, 0, sizeof o);
  o.family = 6;
  o.port = 0x1F90;
  size_t fl = lr_auth_fields_open(fields, sizeof fields, &o);
  assert_int_equal(fl, 3);
  assert_memory_equal(fields, "\x06\x1f\x90", 3);

  size_t n = lr_auth_input(out, sizeof out, LR_ROLE_HOST, LR_STREAM_DATA, LR_MSG_OPEN, an, hn,
                           fields, fl);
  assert_int_equal(n, 13 + 1 + 1 + 2 + 64 + 3);
  assert_memory_equal(out, "lorelay host\0", 13);
  assert_int_equal(out[13], LR_PROTO_VERSION);
  assert_int_equal(out[14], LR_STREAM_DATA);
  assert_int_equal(out[15], 0);
  assert_int_equal(out[16], LR_MSG_OPEN);
  assert_memory_equal(out + 17, an, 32); /* the host's MAC: agent nonce first */
  assert_memory_equal(out + 49, hn, 32);
  assert_memory_equal(out + 81, fields, 3);

  uint8_t rf[8];
  assert_int_equal(lr_auth_fields_result(rf, sizeof rf, LR_OK), 4);
  n = lr_auth_input(out, sizeof out, LR_ROLE_AGENT, LR_STREAM_REVERSE, LR_MSG_OPEN_RESULT, an,
                    hn, rf, 4);
  assert_int_equal(n, 14 + 1 + 1 + 2 + 64 + 4);
  assert_memory_equal(out, "lorelay agent\0", 14);
  assert_int_equal(out[15], LR_STREAM_REVERSE);
  assert_int_equal(out[17], LR_MSG_OPEN_RESULT);
  assert_memory_equal(out + 18, hn, 32); /* the agent's MAC: host nonce first */
  assert_memory_equal(out + 50, an, 32);
  assert_memory_equal(out + 82, "\0\0\0\0", 4);
  assert_int_equal(lr_auth_input(out, 50, LR_ROLE_AGENT, 1, 2, an, hn, rf, 4), 0);

  lr_attach_t at = {.id = 0x01020304};
  assert_int_equal(lr_auth_fields_attach(rf, sizeof rf, &at), 4);
  assert_memory_equal(rf, "\x01\x02\x03\x04", 4);
  lr_hello_t h;
  memset(&h, 0, sizeof h);
  strcpy(h.name, "ab");
  strcpy(h.version, "1");
  uint8_t hf[LR_AUTH_FIELDS_MAX];
  assert_int_equal(lr_auth_fields_hello(hf, sizeof hf, &h), 5);
  assert_memory_equal(hf, "\x02" "ab" "\x01" "1", 5);
  assert_int_equal(lr_auth_fields_hello(hf, 4, &h), 0);
}

/* ---- reverse forwarding messages --------------------------------------- */

static void decode_one(const uint8_t *buf, size_t n, lr_frame_t *f, uint16_t type) {
  size_t used = 0;
  assert_int_equal(lr_frame_decode(buf, n, f, &used), LR_PROTO_OK);
  assert_int_equal(used, n);
  assert_int_equal(f->type, type);
}

static void test_reverse_set(void **state) {
  (void)state;
  static lr_reverse_set_t in, out;
  static uint8_t buf[LR_FRAME_HDR_LEN + LR_FRAME_MAX_PAYLOAD];
  lr_frame_t f;
  memset(&in, 0, sizeof in);
  in.flags = LR_REVERSE_IPV6;
  in.n = 3;
  in.ports[0] = 5432;
  in.ports[1] = 6379;
  in.ports[2] = 65535;
  size_t n = lr_encode_reverse_set(buf, sizeof buf, &in);
  assert_int_equal(n, LR_FRAME_HDR_LEN + 3 + 6);
  decode_one(buf, n, &f, LR_MSG_REVERSE_SET);
  assert_int_equal(lr_decode_reverse_set(&f, &out), LR_PROTO_OK);
  assert_int_equal(out.flags, LR_REVERSE_IPV6);
  assert_int_equal(out.n, 3);
  assert_int_equal(out.ports[2], 65535);
  /* the largest set fits one frame */
  in.n = LR_REVERSE_MAX_PORTS;
  for (int i = 0; i < LR_REVERSE_MAX_PORTS; i++) in.ports[i] = (uint16_t)(1 + i);
  n = lr_encode_reverse_set(buf, sizeof buf, &in);
  assert_true(n > 0);
  decode_one(buf, n, &f, LR_MSG_REVERSE_SET);
  assert_int_equal(lr_decode_reverse_set(&f, &out), LR_PROTO_OK);
  assert_int_equal(out.n, LR_REVERSE_MAX_PORTS);
  /* too many announced, truncated list, port 0 */
  in.n = LR_REVERSE_MAX_PORTS + 1;
  assert_int_equal(lr_encode_reverse_set(buf, sizeof buf, &in), 0);
  uint8_t bad[LR_FRAME_HDR_LEN + 5] = {0, LR_MSG_REVERSE_SET, 0, 0, 0, 0, 0, 5, 0, 0x04, 0x01};
  decode_one(bad, sizeof bad, &f, LR_MSG_REVERSE_SET);
  assert_int_equal(lr_decode_reverse_set(&f, &out), LR_PROTO_EINVAL);
  bad[9] = 0;
  bad[10] = 2; /* two ports announced, one present */
  bad[11] = 0;
  bad[12] = 80;
  decode_one(bad, sizeof bad, &f, LR_MSG_REVERSE_SET);
  assert_int_equal(lr_decode_reverse_set(&f, &out), LR_PROTO_ESHORT);
  bad[10] = 1;
  bad[12] = 0;
  decode_one(bad, sizeof bad, &f, LR_MSG_REVERSE_SET);
  assert_int_equal(lr_decode_reverse_set(&f, &out), LR_PROTO_EINVAL);
}

static void test_reverse_open_fail_attach(void **state) {
  (void)state;
  uint8_t buf[LR_FRAME_HDR_LEN + 600];
  lr_frame_t f;
  lr_reverse_open_t ro = {0xDEADBEEF, 6, 8080}, ro2;
  size_t n = lr_encode_reverse_open(buf, sizeof buf, &ro);
  decode_one(buf, n, &f, LR_MSG_REVERSE_OPEN);
  assert_int_equal(lr_decode_reverse_open(&f, &ro2), LR_PROTO_OK);
  assert_int_equal(ro2.id, 0xDEADBEEF);
  assert_int_equal(ro2.family, 6);
  assert_int_equal(ro2.port, 8080);
  f.len = 6;
  assert_int_equal(lr_decode_reverse_open(&f, &ro2), LR_PROTO_ESHORT);
  ro.family = 5;
  assert_int_equal(lr_encode_reverse_open(buf, sizeof buf, &ro), 0);

  uint32_t id;
  lr_error_msg_t em;
  n = lr_encode_reverse_fail(buf, sizeof buf, 42, LR_ERR_REFUSED, "nothing on 127.0.0.1:8080");
  decode_one(buf, n, &f, LR_MSG_REVERSE_FAIL);
  assert_int_equal(lr_decode_reverse_fail(&f, &id, &em), LR_PROTO_OK);
  assert_int_equal(id, 42);
  assert_int_equal(em.code, LR_ERR_REFUSED);
  assert_string_equal(em.text, "nothing on 127.0.0.1:8080");
  f.len = 7;
  assert_int_equal(lr_decode_reverse_fail(&f, &id, &em), LR_PROTO_ESHORT);

  lr_attach_t at, at2;
  memset(&at, 0, sizeof at);
  at.auth.len = 3;
  memcpy(at.auth.data, "abc", 3);
  at.id = 7;
  n = lr_encode_attach(buf, sizeof buf, &at);
  decode_one(buf, n, &f, LR_MSG_ATTACH);
  assert_int_equal(lr_decode_attach(&f, &at2), LR_PROTO_OK);
  assert_int_equal(at2.id, 7);
  assert_true(lr_token_equal(at2.auth.data, at2.auth.len, (const uint8_t *)"abc", 3));
  f.len = 5; /* token present, id cut */
  assert_int_equal(lr_decode_attach(&f, &at2), LR_PROTO_ESHORT);
}

/* AGENT_INFO: how the agent detects listeners, shown per guest in status. */
static void test_agent_info(void **state) {
  (void)state;
  uint8_t buf[64];
  lr_frame_t f;
  lr_agent_info_t in = {LR_DETECT_EBPF}, out;
  /* pinned layout: type 17, flags 0, length 1, detection */
  const uint8_t want[] = {0, 17, 0, 0, 0, 0, 0, 1, 1};
  size_t n = lr_encode_agent_info(buf, sizeof buf, &in);
  assert_int_equal(n, sizeof want);
  assert_memory_equal(buf, want, sizeof want);
  f = frame_of(buf, n, LR_MSG_AGENT_INFO);
  assert_int_equal(lr_decode_agent_info(&f, &out), LR_PROTO_OK);
  assert_int_equal(out.detection, LR_DETECT_EBPF);

  in.detection = LR_DETECT_POLL;
  n = lr_encode_agent_info(buf, sizeof buf, &in);
  f = frame_of(buf, n, LR_MSG_AGENT_INFO);
  assert_int_equal(lr_decode_agent_info(&f, &out), LR_PROTO_OK);
  assert_int_equal(out.detection, LR_DETECT_POLL);

  /* an empty payload is short */
  f.len = 0;
  assert_int_equal(lr_decode_agent_info(&f, &out), LR_PROTO_ESHORT);
  /* a newer agent's appended fields are ignored */
  const uint8_t newer[] = {1, 0xAA, 0xBB, 0xCC};
  f.payload = newer;
  f.len = sizeof newer;
  assert_int_equal(lr_decode_agent_info(&f, &out), LR_PROTO_OK);
  assert_int_equal(out.detection, LR_DETECT_EBPF);
  /* a detection method this side does not know decodes, and is named as such */
  const uint8_t future[] = {7};
  f.payload = future;
  f.len = 1;
  assert_int_equal(lr_decode_agent_info(&f, &out), LR_PROTO_OK);
  assert_int_equal(out.detection, 7);
  assert_string_equal(lr_detection_name(out.detection), "unknown");
  assert_string_equal(lr_detection_name(LR_DETECT_POLL), "poll");
  assert_string_equal(lr_detection_name(LR_DETECT_EBPF), "ebpf");
  assert_string_equal(lr_msg_name(LR_MSG_AGENT_INFO), "AGENT_INFO");

  /* too small a buffer encodes nothing */
  assert_int_equal(lr_encode_agent_info(buf, LR_FRAME_HDR_LEN, &in), 0);
}

/* STREAM_CLOSE: pinned layout, every prefix short, extra bytes accepted,
 * kinds this side does not know decode (and are ignored by the receiver),
 * id 0 is invalid on both ends, the full u64 count survives. */
static void test_stream_close(void **state) {
  (void)state;
  uint8_t buf[64];
  lr_stream_close_t in = {0x01020304u, LR_CLOSE_FIN, 0x1122334455667788ull}, out;
  const uint8_t want[] = {0, 18, 0, 0, 0, 0, 0, 13, 1, 2, 3, 4, 1,
                          0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88};
  size_t n = lr_encode_stream_close(buf, sizeof buf, &in);
  assert_int_equal(n, sizeof want);
  assert_memory_equal(buf, want, sizeof want);
  lr_frame_t f = frame_of(buf, n, LR_MSG_STREAM_CLOSE);
  memset(&out, 0x5A, sizeof out);
  assert_int_equal(lr_decode_stream_close(&f, &out), LR_PROTO_OK);
  assert_int_equal(out.id, in.id);
  assert_int_equal(out.kind, LR_CLOSE_FIN);
  assert_true(out.bytes == in.bytes);
  /* Every strict prefix is short, read from a buffer of exactly its size. */
  for (size_t cut = 0; cut < 13; cut++) {
    uint8_t *copy = test_malloc(cut ? cut : 1);
    memcpy(copy, buf + LR_FRAME_HDR_LEN, cut);
    lr_frame_t c = {.type = LR_MSG_STREAM_CLOSE, .len = (uint32_t)cut, .payload = copy};
    assert_int_equal(lr_decode_stream_close(&c, &out), LR_PROTO_ESHORT);
    test_free(copy);
  }
  /* A newer peer's appended fields are ignored; an unknown kind decodes. */
  uint8_t newer[13 + 5];
  memcpy(newer, buf + LR_FRAME_HDR_LEN, 13);
  newer[4] = 9;
  memset(newer + 13, 0xEE, 5);
  lr_frame_t nf = {.type = LR_MSG_STREAM_CLOSE, .len = sizeof newer, .payload = newer};
  assert_int_equal(lr_decode_stream_close(&nf, &out), LR_PROTO_OK);
  assert_int_equal(out.kind, 9);
  /* id 0 names no stream: refused both ways. */
  memset(newer, 0, 4);
  assert_int_equal(lr_decode_stream_close(&nf, &out), LR_PROTO_EINVAL);
  in.id = 0;
  assert_int_equal(lr_encode_stream_close(buf, sizeof buf, &in), 0);
  /* RESET, the largest count, too small a buffer. */
  in.id = UINT32_MAX;
  in.kind = LR_CLOSE_RESET;
  in.bytes = UINT64_MAX;
  n = lr_encode_stream_close(buf, sizeof buf, &in);
  f = frame_of(buf, n, LR_MSG_STREAM_CLOSE);
  assert_int_equal(lr_decode_stream_close(&f, &out), LR_PROTO_OK);
  assert_int_equal(out.id, UINT32_MAX);
  assert_int_equal(out.kind, LR_CLOSE_RESET);
  assert_true(out.bytes == UINT64_MAX);
  assert_int_equal(lr_encode_stream_close(buf, LR_FRAME_HDR_LEN + 12, &in), 0);
  assert_string_equal(lr_msg_name(LR_MSG_STREAM_CLOSE), "STREAM_CLOSE");
}

/* OPEN's optional stream id: after the flags byte (present even when no
 * flag is set), absent for 0, and a cut-short id is no id, not an error. */
static void test_open_stream_id(void **state) {
  (void)state;
  uint8_t buf[128];
  lr_open_t o, d;
  memset(&o, 0, sizeof o);
  o.family = 6;
  o.port = 8080;
  o.stream_id = 0xA0B0C0D0u;
  size_t n = lr_encode_open(buf, sizeof buf, &o);
  const uint8_t want[] = {0, 30, 0, 0, 0, 0, 0, 9, 0, 6, 0x1F, 0x90, 0, 0xA0, 0xB0, 0xC0, 0xD0};
  assert_int_equal(n, sizeof want);
  assert_memory_equal(buf, want, sizeof want);
  lr_frame_t f = frame_of(buf, n, LR_MSG_OPEN);
  assert_int_equal(lr_decode_open(&f, &d), LR_PROTO_OK);
  assert_int_equal(d.stream_id, o.stream_id);
  assert_int_equal(d.flags, 0);
  /* An older agent's view: the same frame without the id is still OPEN. */
  for (uint32_t cut = 1; cut <= 4; cut++) {
    f.len = 9 - cut;
    assert_int_equal(lr_decode_open(&f, &d), LR_PROTO_OK);
    assert_int_equal(d.stream_id, 0);
  }
  /* With flags and the id, and without the id (what older hosts send). */
  o.flags = LR_OPEN_UDP;
  n = lr_encode_open(buf, sizeof buf, &o);
  f = frame_of(buf, n, LR_MSG_OPEN);
  assert_int_equal(lr_decode_open(&f, &d), LR_PROTO_OK);
  assert_int_equal(d.flags, LR_OPEN_UDP);
  assert_int_equal(d.stream_id, o.stream_id);
  o.stream_id = 0;
  o.flags = 0;
  assert_int_equal(lr_encode_open(buf, sizeof buf, &o), LR_FRAME_HDR_LEN + 1 + 3);
  /* ATTACH carries one the same way, after the agent's id. */
  lr_attach_t at = {.id = 5, .stream_id = 6}, ad;
  n = lr_encode_attach(buf, sizeof buf, &at);
  const uint8_t want_at[] = {0, 32, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 5, 0, 0, 0, 6};
  assert_int_equal(n, sizeof want_at);
  assert_memory_equal(buf, want_at, sizeof want_at);
  f = frame_of(buf, n, LR_MSG_ATTACH);
  assert_int_equal(lr_decode_attach(&f, &ad), LR_PROTO_OK);
  assert_int_equal(ad.id, 5);
  assert_int_equal(ad.stream_id, 6);
  f.len -= 1;
  assert_int_equal(lr_decode_attach(&f, &ad), LR_PROTO_OK);
  assert_int_equal(ad.stream_id, 0);
  at.stream_id = 0;
  assert_int_equal(lr_encode_attach(buf, sizeof buf, &at), LR_FRAME_HDR_LEN + 1 + 4);
  /* The id is not part of what OPEN's MAC covers. */
  uint8_t a[LR_AUTH_FIELDS_MAX], b[LR_AUTH_FIELDS_MAX];
  size_t na = lr_auth_fields_open(a, sizeof a, &o);
  o.stream_id = 77;
  size_t nb = lr_auth_fields_open(b, sizeof b, &o);
  assert_int_equal(na, nb);
  assert_memory_equal(a, b, na);
}

/* ---- frame header ------------------------------------------------------ */

static void test_frame_truncated_every_length(void **state) {
  (void)state;
  uint8_t buf[BUFSZ];
  lr_hello_t h;
  memset(&h, 0, sizeof h);
  h.auth.len = 5;
  memcpy(h.auth.data, "abcde", 5);
  strcpy(h.name, "host-a");
  strcpy(h.version, "0.1.0");
  size_t n = lr_encode_hello(buf, sizeof buf, LR_MSG_HELLO, &h);
  assert_true(n > LR_FRAME_HDR_LEN);
  lr_frame_t f;
  for (size_t len = 0; len < n; len++) {
    size_t consumed = 12345;
    assert_int_equal(lr_frame_decode(buf, len, &f, &consumed), LR_PROTO_NEED_MORE);
    assert_int_equal(consumed, 12345); /* untouched unless OK */
  }
  size_t consumed = 0;
  assert_int_equal(lr_frame_decode(buf, n, &f, &consumed), LR_PROTO_OK);
  assert_int_equal(consumed, n);
}

static void put_hdr(uint8_t *b, uint16_t type, uint16_t flags, uint32_t len) {
  b[0] = (uint8_t)(type >> 8);
  b[1] = (uint8_t)type;
  b[2] = (uint8_t)(flags >> 8);
  b[3] = (uint8_t)flags;
  b[4] = (uint8_t)(len >> 24);
  b[5] = (uint8_t)(len >> 16);
  b[6] = (uint8_t)(len >> 8);
  b[7] = (uint8_t)len;
}

static void test_frame_too_big_before_payload(void **state) {
  (void)state;
  uint8_t hdr[LR_FRAME_HDR_LEN];
  lr_frame_t f;
  size_t consumed;
  const uint32_t lens[] = {LR_FRAME_MAX_PAYLOAD + 1, 65536, 0x7fffffffu, 0xffffffffu};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    put_hdr(hdr, LR_MSG_LISTENER_ADD, 0, lens[i]);
    /* Only the header has arrived: the error must come now, before we
     * would buffer (or wait for) a payload we will never accept. */
    assert_int_equal(lr_frame_decode(hdr, sizeof hdr, &f, &consumed), LR_PROTO_ETOOBIG);
  }
  /* The maximum itself is fine, and needs its payload. */
  put_hdr(hdr, LR_MSG_LISTENER_ADD, 0, LR_FRAME_MAX_PAYLOAD);
  assert_int_equal(lr_frame_decode(hdr, sizeof hdr, &f, &consumed), LR_PROTO_NEED_MORE);
}

static void test_frame_max_payload(void **state) {
  (void)state;
  static uint8_t buf[LR_FRAME_HDR_LEN + LR_FRAME_MAX_PAYLOAD];
  put_hdr(buf, 999, 0xabcd, LR_FRAME_MAX_PAYLOAD);
  for (size_t i = 0; i < LR_FRAME_MAX_PAYLOAD; i++) buf[LR_FRAME_HDR_LEN + i] = (uint8_t)i;
  lr_frame_t f;
  size_t consumed;
  assert_int_equal(lr_frame_decode(buf, sizeof buf, &f, &consumed), LR_PROTO_OK);
  assert_int_equal(consumed, sizeof buf);
  assert_int_equal(f.type, 999);
  assert_int_equal(f.flags, 0xabcd);
  assert_int_equal(f.len, LR_FRAME_MAX_PAYLOAD);
  assert_int_equal(f.payload[4095], (uint8_t)4095);
}

/* A frame type this build does not know is still a well-formed frame: the
 * caller skips it by `consumed` and the next frame decodes. */
static void test_unknown_type_skippable(void **state) {
  (void)state;
  uint8_t buf[64];
  put_hdr(buf, 0xfffe, 0x8001, 5);
  memcpy(buf + 8, "xyzzy", 5);
  size_t n2 = lr_encode_empty(buf + 13, sizeof buf - 13, LR_MSG_SYNC_DONE);
  assert_int_equal(n2, LR_FRAME_HDR_LEN);
  lr_frame_t f;
  size_t consumed;
  assert_int_equal(lr_frame_decode(buf, 13 + n2, &f, &consumed), LR_PROTO_OK);
  assert_int_equal(f.type, 0xfffe);
  assert_int_equal(f.flags, 0x8001);
  assert_int_equal(f.len, 5);
  assert_int_equal(consumed, 13);
  assert_string_equal(lr_msg_name(f.type), "unknown");
  assert_int_equal(lr_frame_decode(buf + consumed, n2, &f, &consumed), LR_PROTO_OK);
  assert_int_equal(f.type, LR_MSG_SYNC_DONE);
  assert_int_equal(f.len, 0);
}

static void test_zero_length_frame(void **state) {
  (void)state;
  uint8_t buf[LR_FRAME_HDR_LEN];
  put_hdr(buf, LR_MSG_PING, 0, 0);
  lr_frame_t f;
  size_t consumed;
  assert_int_equal(lr_frame_decode(buf, sizeof buf, &f, &consumed), LR_PROTO_OK);
  assert_int_equal(consumed, LR_FRAME_HDR_LEN);
  uint64_t nonce;
  assert_int_equal(lr_decode_ping(&f, &nonce), LR_PROTO_ESHORT);
}

/* ---- helpers for payload mutation -------------------------------------- */

/* Re-frames buf's payload cut to plen bytes and runs decode on it. */
typedef int (*decode_fn)(const lr_frame_t *f, void *out);

static int dec_hello(const lr_frame_t *f, void *o) { return lr_decode_hello(f, o); }
static int dec_error(const lr_frame_t *f, void *o) { return lr_decode_error(f, o); }
static int dec_listener(const lr_frame_t *f, void *o) { return lr_decode_listener(f, o); }
static int dec_port_state(const lr_frame_t *f, void *o) { return lr_decode_port_state(f, o); }
static int dec_open(const lr_frame_t *f, void *o) { return lr_decode_open(f, o); }
static int dec_ping(const lr_frame_t *f, void *o) { return lr_decode_ping(f, o); }

static int decode_payload(decode_fn fn, uint16_t type, const uint8_t *payload, size_t plen,
                          void *out) {
  lr_frame_t f = {.type = type, .flags = 0, .len = (uint32_t)plen, .payload = payload};
  return fn(&f, out);
}

/* Every strict prefix of a valid payload is rejected with ESHORT. The
 * prefix is copied to a buffer of exactly its size so asan/valgrind catch
 * any read past it. */
static void check_all_prefixes_short(decode_fn fn, uint16_t type, const uint8_t *frame,
                                     size_t n, size_t outsz) {
  static union {
    lr_hello_t hello;
    lr_error_msg_t error;
    lr_listener_t listener;
    lr_port_state_msg_t port_state;
    lr_open_t open;
    uint64_t nonce;
  } out;
  assert_true(outsz <= sizeof out);
  const uint8_t *payload = frame + LR_FRAME_HDR_LEN;
  size_t plen = n - LR_FRAME_HDR_LEN;
  for (size_t cut = 0; cut < plen; cut++) {
    uint8_t *copy = test_malloc(cut ? cut : 1);
    memcpy(copy, payload, cut);
    int rc = decode_payload(fn, type, copy, cut, &out);
    if (rc != LR_PROTO_ESHORT)
      fail_msg("type %u: payload cut to %lu of %lu bytes gave %d, want ESHORT", type, (unsigned long)cut, (unsigned long)plen,
               rc);
    test_free(copy);
  }
}

/* A newer peer may append fields: a longer payload still decodes. */
static void check_extra_bytes_accepted(decode_fn fn, uint16_t type, const uint8_t *frame, size_t n,
                                       void *out) {
  uint8_t big[BUFSZ];
  size_t plen = n - LR_FRAME_HDR_LEN;
  memcpy(big, frame + LR_FRAME_HDR_LEN, plen);
  memset(big + plen, 0xEE, 37);
  assert_int_equal(decode_payload(fn, type, big, plen + 37, out), LR_PROTO_OK);
}

/* ---- HELLO / WELCOME --------------------------------------------------- */

static void test_hello_roundtrip(void **state) {
  (void)state;
  uint8_t buf[BUFSZ];
  const uint16_t types[] = {LR_MSG_HELLO, LR_MSG_WELCOME};
  const uint8_t tlens[] = {0, 1, 32, 255};
  for (size_t t = 0; t < 2; t++) {
    for (size_t k = 0; k < sizeof tlens; k++) {
      lr_hello_t h, d;
      memset(&h, 0, sizeof h);
      h.auth.len = tlens[k];
      for (int i = 0; i < h.auth.len; i++) h.auth.data[i] = (uint8_t)(i * 7 + 1);
      h.auth.data[0] = 0; /* tokens are bytes, NUL included */
      snprintf(h.name, sizeof h.name, "guest-%lu", (unsigned long)k);
      snprintf(h.version, sizeof h.version, "1.2.%lu", (unsigned long)k);
      size_t n = lr_encode_hello(buf, sizeof buf, types[t], &h);
      assert_true(n > LR_FRAME_HDR_LEN);
      lr_frame_t f = frame_of(buf, n, types[t]);
      memset(&d, 0xAA, sizeof d);
      assert_int_equal(lr_decode_hello(&f, &d), LR_PROTO_OK);
      assert_int_equal(d.auth.len, h.auth.len);
      assert_memory_equal(d.auth.data, h.auth.data, h.auth.len);
      assert_string_equal(d.name, h.name);
      assert_string_equal(d.version, h.version);
      check_all_prefixes_short(dec_hello, types[t], buf, n, sizeof(lr_hello_t));
      check_extra_bytes_accepted(dec_hello, types[t], buf, n, &d);
      assert_string_equal(d.name, h.name);
    }
  }
}

static void test_hello_max_strings(void **state) {
  (void)state;
  uint8_t buf[BUFSZ];
  lr_hello_t h, d;
  memset(&h, 0, sizeof h);
  memset(h.name, 'n', sizeof h.name - 1);
  memset(h.version, 'v', sizeof h.version - 1);
  h.auth.len = 255;
  memset(h.auth.data, 't', 255);
  size_t n = lr_encode_hello(buf, sizeof buf, LR_MSG_HELLO, &h);
  assert_true(n > 0);
  lr_frame_t f = frame_of(buf, n, LR_MSG_HELLO);
  assert_int_equal(lr_decode_hello(&f, &d), LR_PROTO_OK);
  assert_int_equal(strlen(d.name), sizeof h.name - 1);
  assert_int_equal(strlen(d.version), sizeof h.version - 1);
}

static void test_hello_encode_small_cap(void **state) {
  (void)state;
  uint8_t buf[BUFSZ];
  lr_hello_t h;
  memset(&h, 0, sizeof h);
  strcpy(h.name, "x");
  size_t n = lr_encode_hello(buf, sizeof buf, LR_MSG_HELLO, &h);
  assert_true(n > 0);
  for (size_t cap = 0; cap < n; cap++)
    assert_int_equal(lr_encode_hello(buf, cap, LR_MSG_HELLO, &h), 0);
}

/* Layout: u8 tlen, token, u8 nlen, name, u8 vlen, version. */
static void test_hello_invalid_fields(void **state) {
  (void)state;
  lr_hello_t d;
  /* token_len larger than the payload */
  const uint8_t tok_over[] = {200, 'a', 'b'};
  assert_int_equal(decode_payload(dec_hello, LR_MSG_HELLO, tok_over, sizeof tok_over, &d),
                   LR_PROTO_ESHORT);
  /* name length beyond the payload ("unterminated") */
  const uint8_t name_over[] = {0, 10, 'a', 'b', 'c'};
  assert_int_equal(decode_payload(dec_hello, LR_MSG_HELLO, name_over, sizeof name_over, &d),
                   LR_PROTO_ESHORT);
  /* embedded NUL in the name */
  const uint8_t name_nul[] = {0, 3, 'a', 0, 'c', 1, 'v'};
  assert_int_equal(decode_payload(dec_hello, LR_MSG_HELLO, name_nul, sizeof name_nul, &d),
                   LR_PROTO_EINVAL);
  /* version longer than the struct can hold (overlong, not truncated) */
  uint8_t ver_long[3 + 40];
  ver_long[0] = 0;
  ver_long[1] = 0;
  ver_long[2] = 40;
  memset(ver_long + 3, 'v', 40);
  assert_int_equal(decode_payload(dec_hello, LR_MSG_HELLO, ver_long, sizeof ver_long, &d),
                   LR_PROTO_EINVAL);
  /* name of exactly sizeof name bytes does not fit with its NUL */
  uint8_t name_long[2 + 128 + 1];
  name_long[0] = 0;
  name_long[1] = 128;
  memset(name_long + 2, 'n', 128);
  name_long[130] = 0;
  assert_int_equal(decode_payload(dec_hello, LR_MSG_HELLO, name_long, sizeof name_long, &d),
                   LR_PROTO_EINVAL);
}

static void test_hello_golden(void **state) {
  (void)state;
  uint8_t buf[64];
  lr_hello_t h;
  memset(&h, 0, sizeof h);
  h.auth.len = 2;
  h.auth.data[0] = 0xAB;
  h.auth.data[1] = 0xCD;
  strcpy(h.name, "hn");
  strcpy(h.version, "1");
  const uint8_t want[] = {0, 1, 0, 0, 0, 0, 0, 8, 2, 0xAB, 0xCD, 2, 'h', 'n', 1, '1'};
  size_t n = lr_encode_hello(buf, sizeof buf, LR_MSG_HELLO, &h);
  assert_int_equal(n, sizeof want);
  assert_memory_equal(buf, want, sizeof want);
}

/* ---- ERROR / OPEN_RESULT ----------------------------------------------- */

static void test_error_roundtrip(void **state) {
  (void)state;
  uint8_t buf[BUFSZ];
  const char *texts[] = {"", "wrong token", "connection refused by 127.0.0.1:8080"};
  for (size_t i = 0; i < 3; i++) {
    lr_error_msg_t d;
    size_t n = lr_encode_error(buf, sizeof buf, LR_ERR_AUTH, texts[i]);
    lr_frame_t f = frame_of(buf, n, LR_MSG_ERROR);
    assert_int_equal(lr_decode_error(&f, &d), LR_PROTO_OK);
    assert_int_equal(d.code, LR_ERR_AUTH);
    assert_string_equal(d.text, texts[i]);
    check_all_prefixes_short(dec_error, LR_MSG_ERROR, buf, n, sizeof d);
    check_extra_bytes_accepted(dec_error, LR_MSG_ERROR, buf, n, &d);
    assert_string_equal(d.text, texts[i]);

    n = lr_encode_open_result(buf, sizeof buf, LR_ERR_REFUSED, texts[i], NULL);
    f = frame_of(buf, n, LR_MSG_OPEN_RESULT);
    assert_int_equal(lr_decode_error(&f, &d), LR_PROTO_OK);
    assert_int_equal(d.code, LR_ERR_REFUSED);
    assert_string_equal(d.text, texts[i]);
  }
  /* status 0 with no text: the common success reply */
  lr_error_msg_t d;
  size_t n = lr_encode_open_result(buf, sizeof buf, LR_OK, NULL, NULL);
  assert_true(n > 0);
  lr_frame_t f = frame_of(buf, n, LR_MSG_OPEN_RESULT);
  assert_int_equal(lr_decode_error(&f, &d), LR_PROTO_OK);
  assert_int_equal(d.code, LR_OK);
  assert_string_equal(d.text, "");
  /* large code values survive (big-endian u32) */
  n = lr_encode_error(buf, sizeof buf, 0xA1B2C3D4u, "x");
  f = frame_of(buf, n, LR_MSG_ERROR);
  assert_int_equal(lr_decode_error(&f, &d), LR_PROTO_OK);
  assert_int_equal(d.code, 0xA1B2C3D4u);
}

static void test_error_long_text_cut(void **state) {
  (void)state;
  /* Error text is advisory: an over-long one is shortened, not refused,
   * so the peer still learns the code. */
  char text[2000];
  memset(text, 'e', sizeof text - 1);
  text[sizeof text - 1] = 0;
  uint8_t buf[BUFSZ];
  size_t n = lr_encode_error(buf, sizeof buf, LR_ERR_INTERNAL, text);
  assert_true(n > 0);
  lr_frame_t f = frame_of(buf, n, LR_MSG_ERROR);
  lr_error_msg_t d;
  assert_int_equal(lr_decode_error(&f, &d), LR_PROTO_OK);
  assert_int_equal(d.code, LR_ERR_INTERNAL);
  assert_int_equal(strlen(d.text), LR_TEXT_MAX - 1);
}

static void test_error_invalid_fields(void **state) {
  (void)state;
  lr_error_msg_t d;
  /* text length beyond payload */
  const uint8_t over[] = {0, 0, 0, 1, 0, 9, 'a', 'b'};
  assert_int_equal(decode_payload(dec_error, LR_MSG_ERROR, over, sizeof over, &d), LR_PROTO_ESHORT);
  /* embedded NUL */
  const uint8_t nul[] = {0, 0, 0, 1, 0, 3, 'a', 0, 'b'};
  assert_int_equal(decode_payload(dec_error, LR_MSG_ERROR, nul, sizeof nul, &d), LR_PROTO_EINVAL);
  /* text that would not fit text[LR_TEXT_MAX] */
  static uint8_t big[6 + LR_TEXT_MAX];
  big[4] = (uint8_t)(LR_TEXT_MAX >> 8);
  big[5] = (uint8_t)LR_TEXT_MAX;
  memset(big + 6, 'x', LR_TEXT_MAX);
  assert_int_equal(decode_payload(dec_error, LR_MSG_ERROR, big, sizeof big, &d), LR_PROTO_EINVAL);
}

static void test_error_golden(void **state) {
  (void)state;
  uint8_t buf[64];
  /* status, text, and an empty auth block (no key) */
  const uint8_t want[] = {0, 31, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1, 0, 2, 'n', 'o', 0};
  size_t n = lr_encode_open_result(buf, sizeof buf, LR_ERR_REFUSED, "no", NULL);
  assert_int_equal(n, sizeof want);
  assert_memory_equal(buf, want, sizeof want);
}

/* ---- LISTENER_ADD / LISTENER_DEL --------------------------------------- */

static void test_listener_roundtrip(void **state) {
  (void)state;
  uint8_t buf[BUFSZ];
  const uint8_t ll[16] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  lr_listener_t ls[] = {
      lr_test_v4(0, 0, 0, 0, 8000),        lr_test_v4(127, 0, 0, 1, 1),
      lr_test_v4(10, 0, 0, 5, 65535),      mk_v6(V6_ANY, 443, 0),
      mk_v6(V6_ANY, 443, LR_LISTENER_V6ONLY), mk_v6(V6_LO, 80, 0),
      mk_v6(ll, 22, 0),
  };
  const uint16_t types[] = {LR_MSG_LISTENER_ADD, LR_MSG_LISTENER_DEL};
  for (size_t t = 0; t < 2; t++) {
    for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++) {
      lr_listener_t d;
      size_t n = lr_encode_listener(buf, sizeof buf, types[t], &ls[i]);
      assert_int_equal(n, LR_FRAME_HDR_LEN + 20);
      lr_frame_t f = frame_of(buf, n, types[t]);
      memset(&d, 0x55, sizeof d);
      assert_int_equal(lr_decode_listener(&f, &d), LR_PROTO_OK);
      assert_int_equal(lr_listener_cmp(&d, &ls[i]), 0);
      assert_memory_equal(&d, &ls[i], sizeof d);
      check_all_prefixes_short(dec_listener, types[t], buf, n, sizeof d);
      check_extra_bytes_accepted(dec_listener, types[t], buf, n, &d);
      assert_int_equal(lr_listener_cmp(&d, &ls[i]), 0);
    }
  }
}

static void test_listener_golden(void **state) {
  (void)state;
  uint8_t buf[64];
  lr_listener_t l = lr_test_v4(127, 0, 0, 1, 0x1F90);
  const uint8_t want[] = {0, 10, 0, 0, 0, 0, 0, 20, 4, 0, 0x1F, 0x90, 127, 0, 0, 1,
                          0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  assert_int_equal(lr_encode_listener(buf, sizeof buf, LR_MSG_LISTENER_ADD, &l), sizeof want);
  assert_memory_equal(buf, want, sizeof want);
}

static void test_listener_invalid(void **state) {
  (void)state;
  uint8_t buf[64];
  lr_listener_t l = lr_test_v4(127, 0, 0, 1, 80), d;
  size_t n = lr_encode_listener(buf, sizeof buf, LR_MSG_LISTENER_ADD, &l);
  uint8_t *p = buf + LR_FRAME_HDR_LEN;
  const uint8_t bad_families[] = {0, 1, 5, 10, 255};
  for (size_t i = 0; i < sizeof bad_families; i++) {
    p[0] = bad_families[i];
    assert_int_equal(decode_payload(dec_listener, LR_MSG_LISTENER_ADD, p, n - 8, &d),
                     LR_PROTO_EINVAL);
  }
  p[0] = 4;
  /* garbage after the 4 bytes of an IPv4 address: not canonical */
  p[4 + 4 + 3] = 1;
  assert_int_equal(decode_payload(dec_listener, LR_MSG_LISTENER_ADD, p, n - 8, &d),
                   LR_PROTO_EINVAL);
  p[4 + 4 + 3] = 0;
  /* V6ONLY on an IPv4 listener is meaningless */
  p[1] = LR_LISTENER_V6ONLY;
  assert_int_equal(decode_payload(dec_listener, LR_MSG_LISTENER_ADD, p, n - 8, &d),
                   LR_PROTO_EINVAL);
  p[1] = 0;
  assert_int_equal(decode_payload(dec_listener, LR_MSG_LISTENER_ADD, p, n - 8, &d), LR_PROTO_OK);
  /* the encoder refuses what the decoder would refuse */
  l.family = 5;
  assert_int_equal(lr_encode_listener(buf, sizeof buf, LR_MSG_LISTENER_ADD, &l), 0);
}

/* ---- PORT_STATE -------------------------------------------------------- */

static void test_port_state_roundtrip(void **state) {
  (void)state;
  uint8_t buf[BUFSZ];
  for (int s = LR_PORT_FORWARDING; s <= LR_PORT_IGNORED; s++) {
    lr_port_state_msg_t m, d;
    memset(&m, 0, sizeof m);
    m.listener = s % 2 ? mk_v6(V6_ANY, 3000, LR_LISTENER_V6ONLY) : lr_test_v4(0, 0, 0, 0, 3000);
    m.state = (uint8_t)s;
    m.host_port = (uint16_t)(s == LR_PORT_REMAPPED ? 40123 : 3000);
    size_t n = lr_encode_port_state(buf, sizeof buf, &m);
    assert_int_equal(n, LR_FRAME_HDR_LEN + 23);
    lr_frame_t f = frame_of(buf, n, LR_MSG_PORT_STATE);
    assert_int_equal(lr_decode_port_state(&f, &d), LR_PROTO_OK);
    assert_int_equal(lr_listener_cmp(&d.listener, &m.listener), 0);
    assert_int_equal(d.state, m.state);
    assert_int_equal(d.host_port, m.host_port);
    check_all_prefixes_short(dec_port_state, LR_MSG_PORT_STATE, buf, n, sizeof d);
    check_extra_bytes_accepted(dec_port_state, LR_MSG_PORT_STATE, buf, n, &d);
    assert_int_equal(d.host_port, m.host_port);
  }
}

static void test_port_state_invalid(void **state) {
  (void)state;
  uint8_t buf[64];
  lr_port_state_msg_t m, d;
  memset(&m, 0, sizeof m);
  m.listener = lr_test_v4(0, 0, 0, 0, 1);
  m.host_port = 1;
  size_t n = lr_encode_port_state(buf, sizeof buf, &m);
  uint8_t *p = buf + LR_FRAME_HDR_LEN;
  p[20] = LR_PORT_DENIED + 1;
  assert_int_equal(decode_payload(dec_port_state, LR_MSG_PORT_STATE, p, n - 8, &d),
                   LR_PROTO_EINVAL);
  p[20] = 0;
  p[0] = 7;
  assert_int_equal(decode_payload(dec_port_state, LR_MSG_PORT_STATE, p, n - 8, &d),
                   LR_PROTO_EINVAL);
  m.state = 200;
  assert_int_equal(lr_encode_port_state(buf, sizeof buf, &m), 0);
}

/* ---- OPEN -------------------------------------------------------------- */

static void test_open_roundtrip(void **state) {
  (void)state;
  uint8_t buf[BUFSZ];
  const uint8_t tlens[] = {0, 16, 255};
  for (size_t k = 0; k < sizeof tlens; k++) {
    for (int fam = 4; fam <= 6; fam += 2) {
      lr_open_t m, d;
      memset(&m, 0, sizeof m);
      m.auth.len = tlens[k];
      for (int i = 0; i < m.auth.len; i++) m.auth.data[i] = (uint8_t)(255 - i);
      m.family = (uint8_t)fam;
      m.port = (uint16_t)(fam == 4 ? 65535 : 1);
      size_t n = lr_encode_open(buf, sizeof buf, &m);
      assert_int_equal(n, LR_FRAME_HDR_LEN + 1 + m.auth.len + 3);
      lr_frame_t f = frame_of(buf, n, LR_MSG_OPEN);
      memset(&d, 0x33, sizeof d);
      assert_int_equal(lr_decode_open(&f, &d), LR_PROTO_OK);
      assert_int_equal(d.auth.len, m.auth.len);
      assert_memory_equal(d.auth.data, m.auth.data, m.auth.len);
      assert_int_equal(d.family, m.family);
      assert_int_equal(d.port, m.port);
      check_all_prefixes_short(dec_open, LR_MSG_OPEN, buf, n, sizeof d);
      check_extra_bytes_accepted(dec_open, LR_MSG_OPEN, buf, n, &d);
      assert_int_equal(d.port, m.port);
    }
  }
}

static void test_open_invalid(void **state) {
  (void)state;
  lr_open_t d;
  /* token_len larger than the payload */
  const uint8_t tok_over[] = {50, 1, 2, 3, 4, 0x1f, 0x90};
  assert_int_equal(decode_payload(dec_open, LR_MSG_OPEN, tok_over, sizeof tok_over, &d),
                   LR_PROTO_ESHORT);
  const uint8_t fam_bad[] = {0, 5, 0x1f, 0x90};
  assert_int_equal(decode_payload(dec_open, LR_MSG_OPEN, fam_bad, sizeof fam_bad, &d),
                   LR_PROTO_EINVAL);
  const uint8_t port0[] = {0, 4, 0, 0};
  assert_int_equal(decode_payload(dec_open, LR_MSG_OPEN, port0, sizeof port0, &d),
                   LR_PROTO_EINVAL);
  const uint8_t ok[] = {0, 6, 0x1f, 0x90};
  assert_int_equal(decode_payload(dec_open, LR_MSG_OPEN, ok, sizeof ok, &d), LR_PROTO_OK);
  assert_int_equal(d.family, 6);
  assert_int_equal(d.port, 8080);

  uint8_t buf[64];
  lr_open_t m;
  memset(&m, 0, sizeof m);
  m.family = 5;
  m.port = 80;
  assert_int_equal(lr_encode_open(buf, sizeof buf, &m), 0);
  m.family = 4;
  m.port = 0;
  assert_int_equal(lr_encode_open(buf, sizeof buf, &m), 0);
}

/* ---- PING / PONG / SYNC_DONE ------------------------------------------- */

static void test_ping_roundtrip(void **state) {
  (void)state;
  uint8_t buf[BUFSZ];
  const uint64_t nonces[] = {0, 1, 0x0102030405060708ull, UINT64_MAX};
  for (size_t i = 0; i < 4; i++) {
    for (uint16_t type = LR_MSG_PING; type <= LR_MSG_PONG; type++) {
      uint64_t d = 0;
      size_t n = lr_encode_ping(buf, sizeof buf, type, nonces[i]);
      assert_int_equal(n, LR_FRAME_HDR_LEN + 8);
      lr_frame_t f = frame_of(buf, n, type);
      assert_int_equal(lr_decode_ping(&f, &d), LR_PROTO_OK);
      assert_true(d == nonces[i]);
      check_all_prefixes_short(dec_ping, type, buf, n, sizeof d);
      check_extra_bytes_accepted(dec_ping, type, buf, n, &d);
      assert_true(d == nonces[i]);
    }
  }
  assert_int_equal(buf[LR_FRAME_HDR_LEN], 0xff);
  size_t n = lr_encode_ping(buf, sizeof buf, LR_MSG_PING, 0x0102030405060708ull);
  const uint8_t want[] = {1, 2, 3, 4, 5, 6, 7, 8};
  assert_memory_equal(buf + n - 8, want, 8); /* big-endian on the wire */
}

static void test_empty_and_small_caps(void **state) {
  (void)state;
  uint8_t buf[BUFSZ];
  size_t n = lr_encode_empty(buf, sizeof buf, LR_MSG_SYNC_DONE);
  assert_int_equal(n, LR_FRAME_HDR_LEN);
  frame_of(buf, n, LR_MSG_SYNC_DONE);
  assert_int_equal(lr_encode_empty(buf, LR_FRAME_HDR_LEN - 1, LR_MSG_SYNC_DONE), 0);

  lr_listener_t l = lr_test_v4(0, 0, 0, 0, 1);
  for (size_t cap = 0; cap < LR_FRAME_HDR_LEN + 20; cap++)
    assert_int_equal(lr_encode_listener(buf, cap, LR_MSG_LISTENER_ADD, &l), 0);
  for (size_t cap = 0; cap < LR_FRAME_HDR_LEN + 8; cap++)
    assert_int_equal(lr_encode_ping(buf, cap, LR_MSG_PING, 1), 0);
  for (size_t cap = 0; cap < LR_FRAME_HDR_LEN + 6 + 3; cap++)
    assert_int_equal(lr_encode_error(buf, cap, 1, "abc"), 0);
}

/* ---- helpers ----------------------------------------------------------- */

static void test_token_equal(void **state) {
  (void)state;
  const uint8_t a[] = "secret-token";
  const uint8_t b[] = "secret-tokeN";
  assert_int_equal(lr_token_equal(a, 12, a, 12), 1);
  assert_int_equal(lr_token_equal(a, 12, b, 12), 0);
  assert_int_equal(lr_token_equal(a, 11, b, 11), 1);
  assert_int_equal(lr_token_equal(a, 12, a, 11), 0); /* prefix is not equal */
  assert_int_equal(lr_token_equal(a, 0, b, 0), 1);
  assert_int_equal(lr_token_equal(a, 0, b, 1), 0);
  const uint8_t z1[] = {'a', 0}, z2[] = {'a'};
  assert_int_equal(lr_token_equal(z1, 2, z2, 1), 0); /* trailing NUL matters */
  uint8_t x[256], y[256];
  memset(x, 7, sizeof x);
  memcpy(y, x, sizeof y);
  assert_int_equal(lr_token_equal(x, 256, y, 256), 1);
  for (size_t i = 0; i < 256; i += 51) {
    y[i] ^= 1;
    assert_int_equal(lr_token_equal(x, 256, y, 256), 0);
    y[i] ^= 1;
  }
}

static void test_listener_cmp(void **state) {
  (void)state;
  lr_listener_t a = lr_test_v4(0, 0, 0, 0, 80), b = lr_test_v4(0, 0, 0, 0, 80);
  assert_int_equal(lr_listener_cmp(&a, &b), 0);
  b.port = 81;
  assert_true(lr_listener_cmp(&a, &b) < 0);
  assert_true(lr_listener_cmp(&b, &a) > 0);
  b = lr_test_v4(127, 0, 0, 1, 1);
  assert_true(lr_listener_cmp(&a, &b) != 0);
  assert_true((lr_listener_cmp(&a, &b) < 0) == (lr_listener_cmp(&b, &a) > 0));
  lr_listener_t d = mk_v6(V6_ANY, 80, 0), v = mk_v6(V6_ANY, 80, LR_LISTENER_V6ONLY);
  /* [::]:80 dual and [::]:80 V6ONLY are different listeners (different
   * host bindings), and IPv4 0.0.0.0:80 differs from [::]:80 */
  assert_true(lr_listener_cmp(&d, &v) != 0);
  assert_true(lr_listener_cmp(&a, &d) != 0);
  assert_true((lr_listener_cmp(&d, &v) < 0) == (lr_listener_cmp(&v, &d) > 0));
  /* a total order: sorting a set and checking pairwise consistency */
  lr_listener_t set[] = {mk_v6(V6_LO, 1, 0), lr_test_v4(10, 0, 0, 5, 2), a, d, v, lr_test_v4(0, 0, 0, 0, 1)};
  size_t n = sizeof set / sizeof set[0];
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++) {
      int c1 = lr_listener_cmp(&set[i], &set[j]), c2 = lr_listener_cmp(&set[j], &set[i]);
      if (i == j) assert_int_equal(c1, 0);
      else assert_true((c1 < 0 && c2 > 0) || (c1 > 0 && c2 < 0));
      for (size_t k = 0; k < n; k++) {
        if (c1 < 0 && lr_listener_cmp(&set[j], &set[k]) < 0)
          assert_true(lr_listener_cmp(&set[i], &set[k]) < 0);
      }
    }
}

static void test_listener_format(void **state) {
  (void)state;
  char out[64];
  lr_listener_t l = lr_test_v4(0, 0, 0, 0, 8000);
  assert_string_equal(lr_listener_format(&l, out, sizeof out), "0.0.0.0:8000");
  l = lr_test_v4(127, 0, 0, 1, 65535);
  assert_string_equal(lr_listener_format(&l, out, sizeof out), "127.0.0.1:65535");
  l = mk_v6(V6_ANY, 8000, 0);
  assert_string_equal(lr_listener_format(&l, out, sizeof out), "[::]:8000");
  l = mk_v6(V6_ANY, 8000, LR_LISTENER_V6ONLY);
  assert_string_equal(lr_listener_format(&l, out, sizeof out), "[::]:8000");
  l = mk_v6(V6_LO, 80, 0);
  assert_string_equal(lr_listener_format(&l, out, sizeof out), "[::1]:80");
  const uint8_t ll[16] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  l = mk_v6(ll, 22, 0);
  assert_string_equal(lr_listener_format(&l, out, sizeof out), "[fe80::1]:22");
  const uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
  l = mk_v6(mapped, 80, 0);
  assert_string_equal(lr_listener_format(&l, out, sizeof out), "[::ffff:127.0.0.1]:80");
  /* a short buffer truncates but stays NUL-terminated */
  char small[6];
  memset(small, 'Z', sizeof small);
  l = lr_test_v4(127, 0, 0, 1, 80);
  lr_listener_format(&l, small, sizeof small);
  assert_int_equal(small[5], 0);
  assert_memory_equal(small, "127.0", 5);
}

static void test_names(void **state) {
  (void)state;
  assert_string_equal(lr_msg_name(LR_MSG_HELLO), "HELLO");
  assert_string_equal(lr_msg_name(LR_MSG_WELCOME), "WELCOME");
  assert_string_equal(lr_msg_name(LR_MSG_ERROR), "ERROR");
  assert_string_equal(lr_msg_name(LR_MSG_LISTENER_ADD), "LISTENER_ADD");
  assert_string_equal(lr_msg_name(LR_MSG_LISTENER_DEL), "LISTENER_DEL");
  assert_string_equal(lr_msg_name(LR_MSG_SYNC_DONE), "SYNC_DONE");
  assert_string_equal(lr_msg_name(LR_MSG_PORT_STATE), "PORT_STATE");
  assert_string_equal(lr_msg_name(LR_MSG_PING), "PING");
  assert_string_equal(lr_msg_name(LR_MSG_PONG), "PONG");
  assert_string_equal(lr_msg_name(LR_MSG_OPEN), "OPEN");
  assert_string_equal(lr_msg_name(LR_MSG_OPEN_RESULT), "OPEN_RESULT");
  assert_string_equal(lr_msg_name(0), "unknown");
  assert_string_equal(lr_msg_name(65535), "unknown");

  /* status JSON uses exactly these words (docs/protocol.md, status) */
  assert_string_equal(lr_port_state_name(LR_PORT_FORWARDING), "forwarding");
  assert_string_equal(lr_port_state_name(LR_PORT_CONFLICT), "conflict");
  assert_string_equal(lr_port_state_name(LR_PORT_REMAPPED), "remapped");
  assert_string_equal(lr_port_state_name(LR_PORT_IGNORED), "ignored");
  assert_non_null(lr_port_state_name((lr_port_state_t)42));

  /* every code and result has its own non-empty text */
  const int rcs[] = {LR_PROTO_OK, LR_PROTO_NEED_MORE, LR_PROTO_EBADMAGIC, LR_PROTO_EVERSION,
                     LR_PROTO_ETOOBIG, LR_PROTO_ESHORT, LR_PROTO_EINVAL};
  for (size_t i = 0; i < 7; i++) {
    assert_true(strlen(lr_proto_strerror(rcs[i])) > 0);
    for (size_t j = 0; j < i; j++)
      assert_string_not_equal(lr_proto_strerror(rcs[i]), lr_proto_strerror(rcs[j]));
  }
  assert_non_null(lr_proto_strerror(-99));
  for (uint32_t c = LR_OK; c <= LR_ERR_BUSY; c++) {
    assert_true(strlen(lr_err_name(c)) > 0);
    for (uint32_t j = 0; j < c; j++) assert_string_not_equal(lr_err_name(c), lr_err_name(j));
  }
  assert_non_null(lr_err_name(1000));
}

/* ---- LISTENER_ADD's owner ------------------------------------------------- */

static void test_listener_owner(void **state) {
  (void)state;
  uint8_t buf[BUFSZ];
  lr_listener_t l = lr_test_v4(0, 0, 0, 0, 8000), got;
  lr_proc_owner_t o, go;
  memset(&o, 0, sizeof o);
  o.pid = 4242;
  snprintf(o.cmd, sizeof o.cmd, "python3 -m http.server");
  size_t n = lr_encode_listener_add(buf, sizeof buf, &l, &o);
  /* golden: the listener, then u32 pid, u16 clen, command */
  assert_int_equal(n, LR_FRAME_HDR_LEN + 20 + 4 + 2 + 22);
  static const uint8_t tail[] = {0, 0, 0x10, 0x92, 0, 22, 'p', 'y'};
  assert_memory_equal(buf + LR_FRAME_HDR_LEN + 20, tail, sizeof tail);
  lr_frame_t f = frame_of(buf, n, LR_MSG_LISTENER_ADD);
  assert_int_equal(lr_decode_listener_add(&f, &got, &go), LR_PROTO_OK);
  assert_int_equal(lr_listener_cmp(&got, &l), 0);
  assert_int_equal(go.pid, 4242);
  assert_string_equal(go.cmd, "python3 -m http.server");
  /* an older host reads the listener and skips the rest */
  assert_int_equal(lr_decode_listener(&f, &got), LR_PROTO_OK);
  /* every cut inside the owner's fields is short */
  for (size_t cut = 21; cut < f.len; cut++) {
    lr_frame_t g = f;
    g.len = (uint32_t)cut;
    assert_int_equal(lr_decode_listener_add(&g, &got, &go), LR_PROTO_ESHORT);
  }
  /* no owner (pid 0, or an older agent): none on the wire, none decoded */
  o.pid = 0;
  n = lr_encode_listener_add(buf, sizeof buf, &l, &o);
  assert_int_equal(n, LR_FRAME_HDR_LEN + 20);
  f = frame_of(buf, n, LR_MSG_LISTENER_ADD);
  go.pid = 9;
  assert_int_equal(lr_decode_listener_add(&f, &got, &go), LR_PROTO_OK);
  assert_int_equal(go.pid, 0);
  assert_string_equal(go.cmd, "");
}

/* Guest text: an over-long command is cut (not refused), invalid UTF-8
 * becomes '?', a NUL breaks the string rule. */
static void test_listener_owner_hostile(void **state) {
  (void)state;
  uint8_t buf[BUFSZ];
  lr_listener_t l = lr_test_v4(127, 0, 0, 1, 9000), got;
  lr_proc_owner_t go;
  size_t n = lr_encode_listener(buf, sizeof buf, LR_MSG_LISTENER_ADD, &l);
  uint8_t *p = buf + n;
  const size_t clen = 1000;
  p[0] = 0, p[1] = 0, p[2] = 0, p[3] = 7;
  p[4] = (uint8_t)(clen >> 8), p[5] = (uint8_t)clen;
  memset(p + 6, 'A', clen);
  memcpy(p + 6, "a\n\x1b[31m\xff\xc2\x9b\xed\xa0\x80", 13);
  p[6 + LR_CMD_MAX - 1] = (uint8_t)0xc3; /* a sequence cut by the cap */
  n += 6 + clen;
  buf[4] = (uint8_t)((n - LR_FRAME_HDR_LEN) >> 24), buf[5] = (uint8_t)((n - LR_FRAME_HDR_LEN) >> 16);
  buf[6] = (uint8_t)((n - LR_FRAME_HDR_LEN) >> 8), buf[7] = (uint8_t)(n - LR_FRAME_HDR_LEN);
  lr_frame_t f = frame_of(buf, n, LR_MSG_LISTENER_ADD);
  assert_int_equal(lr_decode_listener_add(&f, &got, &go), LR_PROTO_OK);
  assert_int_equal(go.pid, 7);
  assert_int_equal(strlen(go.cmd), LR_CMD_MAX);
  /* control characters stay (the JSON escapes them, the table too) */
  assert_memory_equal(go.cmd, "a\n\x1b[31m?\xc2\x9b???", 13);
  assert_int_equal((unsigned char)go.cmd[LR_CMD_MAX - 1], '?');
  p[6 + 3] = 0;
  assert_int_equal(lr_decode_listener_add(&f, &got, &go), LR_PROTO_EINVAL);
}

static void test_utf8_sanitize(void **state) {
  (void)state;
  char s[64];
  snprintf(s, sizeof s, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 ok");
  lr_utf8_sanitize(s);
  assert_string_equal(s, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 ok");
  snprintf(s, sizeof s, "\xc0\xaf|\xe0\x80\xaf|\xf4\x90\x80\x80|\x80|\xc3");
  lr_utf8_sanitize(s);
  assert_string_equal(s, "??|???|????|?|?");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_preamble_roundtrip),
      cmocka_unit_test(test_preamble_truncated),
      cmocka_unit_test(test_preamble_bad_magic),
      cmocka_unit_test(test_preamble_other_version),
      cmocka_unit_test(test_preamble_bad_kind),
      cmocka_unit_test(test_preamble_flags_golden),
      cmocka_unit_test(test_challenge),
      cmocka_unit_test(test_open_result_auth),
      cmocka_unit_test(test_auth_input_golden),
      cmocka_unit_test(test_reverse_set),
      cmocka_unit_test(test_reverse_open_fail_attach),
      cmocka_unit_test(test_agent_info),
      cmocka_unit_test(test_stream_close),
      cmocka_unit_test(test_open_stream_id),
      cmocka_unit_test(test_frame_truncated_every_length),
      cmocka_unit_test(test_frame_too_big_before_payload),
      cmocka_unit_test(test_frame_max_payload),
      cmocka_unit_test(test_unknown_type_skippable),
      cmocka_unit_test(test_zero_length_frame),
      cmocka_unit_test(test_hello_roundtrip),
      cmocka_unit_test(test_hello_max_strings),
      cmocka_unit_test(test_hello_encode_small_cap),
      cmocka_unit_test(test_hello_invalid_fields),
      cmocka_unit_test(test_hello_golden),
      cmocka_unit_test(test_error_roundtrip),
      cmocka_unit_test(test_error_long_text_cut),
      cmocka_unit_test(test_error_invalid_fields),
      cmocka_unit_test(test_error_golden),
      cmocka_unit_test(test_listener_roundtrip),
      cmocka_unit_test(test_listener_golden),
      cmocka_unit_test(test_listener_invalid),
      cmocka_unit_test(test_listener_owner),
      cmocka_unit_test(test_listener_owner_hostile),
      cmocka_unit_test(test_utf8_sanitize),
      cmocka_unit_test(test_port_state_roundtrip),
      cmocka_unit_test(test_port_state_invalid),
      cmocka_unit_test(test_open_roundtrip),
      cmocka_unit_test(test_open_invalid),
      cmocka_unit_test(test_ping_roundtrip),
      cmocka_unit_test(test_empty_and_small_caps),
      cmocka_unit_test(test_token_equal),
      cmocka_unit_test(test_listener_cmp),
      cmocka_unit_test(test_listener_format),
      cmocka_unit_test(test_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
