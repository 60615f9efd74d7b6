/* fz_decode_all (fuzz_common.h): every decoder on one frame, and the
 * decode -> encode -> decode round trip of fuzz_frames. Each encoder is
 * also given a buffer one byte short of what it needs, which it must refuse
 * (returning 0) without writing past: the buffer is an exact-size heap
 * block, so ASan sees any overrun. */
#include <string.h>

#include "fuzz_common.h"

/* Every encoder behind one signature, so one routine can check them all. */
typedef size_t (*enc_fn)(uint8_t *out, size_t cap, uint16_t type, const void *m);

typedef struct {
  uint32_t id;
  lr_error_msg_t e;
} reverse_fail_t;

typedef struct {
  lr_error_msg_t e;
  lr_auth_t auth;
} open_result_t;

static size_t enc_hello(uint8_t *out, size_t cap, uint16_t type, const void *m) {
  return lr_encode_hello(out, cap, type, m);
}
static size_t enc_error(uint8_t *out, size_t cap, uint16_t type, const void *m) {
  const lr_error_msg_t *e = m;
  (void)type;
  return lr_encode_error(out, cap, e->code, e->text);
}
static size_t enc_open_result(uint8_t *out, size_t cap, uint16_t type, const void *m) {
  const open_result_t *r = m;
  (void)type;
  return lr_encode_open_result(out, cap, r->e.code, r->e.text, &r->auth);
}
static size_t enc_challenge(uint8_t *out, size_t cap, uint16_t type, const void *m) {
  (void)type;
  return lr_encode_challenge(out, cap, m);
}
static size_t enc_listener(uint8_t *out, size_t cap, uint16_t type, const void *m) {
  return lr_encode_listener(out, cap, type, m);
}
static size_t enc_port_state(uint8_t *out, size_t cap, uint16_t type, const void *m) {
  (void)type;
  return lr_encode_port_state(out, cap, m);
}
static size_t enc_open(uint8_t *out, size_t cap, uint16_t type, const void *m) {
  (void)type;
  return lr_encode_open(out, cap, m);
}
static size_t enc_ping(uint8_t *out, size_t cap, uint16_t type, const void *m) {
  return lr_encode_ping(out, cap, type, *(const uint64_t *)m);
}
static size_t enc_reverse_set(uint8_t *out, size_t cap, uint16_t type, const void *m) {
  (void)type;
  return lr_encode_reverse_set(out, cap, m);
}
static size_t enc_reverse_open(uint8_t *out, size_t cap, uint16_t type, const void *m) {
  (void)type;
  return lr_encode_reverse_open(out, cap, m);
}
static size_t enc_reverse_fail(uint8_t *out, size_t cap, uint16_t type, const void *m) {
  const reverse_fail_t *r = m;
  (void)type;
  return lr_encode_reverse_fail(out, cap, r->id, r->e.code, r->e.text);
}
static size_t enc_attach(uint8_t *out, size_t cap, uint16_t type, const void *m) {
  (void)type;
  return lr_encode_attach(out, cap, m);
}
static size_t enc_stream_close(uint8_t *out, size_t cap, uint16_t type, const void *m) {
  (void)type;
  return lr_encode_stream_close(out, cap, m);
}
static size_t enc_empty(uint8_t *out, size_t cap, uint16_t type, const void *m) {
  (void)m;
  return lr_encode_empty(out, cap, type);
}

static uint8_t g_enc[LR_FRAME_HDR_LEN + LR_FRAME_MAX_PAYLOAD];

/* Encodes m as a frame of `type` into g_enc and decodes the header back
 * into *g. The frame must be well formed, carry type and no flags, and its
 * payload must be a prefix of orig's. */
static void reencode(enc_fn enc, uint16_t type, const void *m, const lr_frame_t *orig,
                     lr_frame_t *g) {
  size_t n = enc(g_enc, sizeof g_enc, type, m);
  FZ_CHECK(n >= LR_FRAME_HDR_LEN); /* the decoder accepted what the encoder refuses */

  uint8_t *tight = malloc(n - 1 ? n - 1 : 1);
  FZ_CHECK(tight != NULL);
  FZ_CHECK(enc(tight, n - 1, type, m) == 0);
  free(tight);

  size_t consumed = 0;
  FZ_CHECK(lr_frame_decode(g_enc, n, g, &consumed) == LR_PROTO_OK);
  FZ_CHECK(consumed == n);
  FZ_CHECK(g->type == type && g->flags == 0);
  FZ_CHECK(g->len <= orig->len);
  FZ_CHECK(g->len == 0 || memcmp(g->payload, orig->payload, g->len) == 0);
}

static void check_rc(int rc) {
  FZ_CHECK(rc == LR_PROTO_OK || rc == LR_PROTO_ESHORT || rc == LR_PROTO_EINVAL);
  FZ_CHECK(lr_proto_strerror(rc) != NULL);
}

/* Two auth blocks are the same bytes. The constant-time comparison (the
 * one MACs are checked with) must agree with memcmp. */
static int auth_same(const lr_auth_t *a, const lr_auth_t *b) {
  int eq = a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
  FZ_CHECK(lr_token_equal(a->data, a->len, b->data, b->len) == eq);
  return eq;
}

static void check_listener_text(const lr_listener_t *l) {
  char text[64], tiny[5];
  lr_listener_format(l, text, sizeof text);
  FZ_CHECK(memchr(text, '\0', sizeof text) != NULL);
  lr_listener_format(l, tiny, sizeof tiny); /* truncates, never overruns */
  FZ_CHECK(strncmp(text, tiny, sizeof tiny - 1) == 0);
}

void fz_decode_all(const lr_frame_t *f) {
  lr_frame_t g;
  int rc;
  (void)lr_msg_name(f->type);

  /* HELLO / WELCOME */
  {
    static lr_hello_t m, d;
    uint16_t type = f->type == LR_MSG_WELCOME ? LR_MSG_WELCOME : LR_MSG_HELLO;
    check_rc(rc = lr_decode_hello(f, &m));
    if (rc == LR_PROTO_OK) {
      FZ_CHECK(strlen(m.name) < sizeof m.name && strlen(m.version) < sizeof m.version);
      reencode(enc_hello, type, &m, f, &g);
      FZ_CHECK(lr_decode_hello(&g, &d) == LR_PROTO_OK);
      FZ_CHECK(auth_same(&m.auth, &d.auth));
      FZ_CHECK(strcmp(m.name, d.name) == 0 && strcmp(m.version, d.version) == 0);
    }
  }
  /* ERROR (and an OPEN_RESULT read without its auth block, as an ERROR) */
  {
    static lr_error_msg_t m, d;
    check_rc(rc = lr_decode_error(f, &m));
    if (rc == LR_PROTO_OK) {
      FZ_CHECK(strlen(m.text) < sizeof m.text);
      (void)lr_err_name(m.code);
      reencode(enc_error, LR_MSG_ERROR, &m, f, &g);
      FZ_CHECK(lr_decode_error(&g, &d) == LR_PROTO_OK);
      FZ_CHECK(m.code == d.code && strcmp(m.text, d.text) == 0);
    }
  }
  /* OPEN_RESULT with its auth block. A payload that ends after the text
   * has an empty block, which the encoder writes as one 0 byte: the round
   * trip is then checked against the payload with that byte appended. */
  {
    static open_result_t m, d;
    static uint8_t ext[LR_FRAME_MAX_PAYLOAD + 1];
    static lr_error_msg_t plain;
    check_rc(rc = lr_decode_open_result(f, &m.e, &m.auth));
    if (rc == LR_PROTO_OK) {
      /* The code and text are exactly what the ERROR decoder reads. */
      FZ_CHECK(lr_decode_error(f, &plain) == LR_PROTO_OK);
      FZ_CHECK(plain.code == m.e.code && strcmp(plain.text, m.e.text) == 0);
      size_t text_end = 4 + 2 + strlen(m.e.text);
      FZ_CHECK(text_end <= f->len);
      lr_frame_t o = *f;
      if (text_end == f->len) {
        FZ_CHECK(m.auth.len == 0);
        if (f->len) memcpy(ext, f->payload, f->len);
        ext[f->len] = 0;
        o.payload = ext;
        o.len = f->len + 1;
      } else {
        FZ_CHECK(text_end + 1 + m.auth.len <= f->len);
      }
      reencode(enc_open_result, LR_MSG_OPEN_RESULT, &m, &o, &g);
      FZ_CHECK(lr_decode_open_result(&g, &d.e, &d.auth) == LR_PROTO_OK);
      FZ_CHECK(m.e.code == d.e.code && strcmp(m.e.text, d.e.text) == 0);
      FZ_CHECK(auth_same(&m.auth, &d.auth));
    } else {
      /* Only the auth block can fail after a good code and text. */
      FZ_CHECK(lr_decode_error(f, &plain) != LR_PROTO_OK || rc == LR_PROTO_ESHORT);
    }
  }
  /* CHALLENGE */
  {
    uint8_t m[LR_NONCE_LEN], d[LR_NONCE_LEN];
    check_rc(rc = lr_decode_challenge(f, m));
    FZ_CHECK((rc == LR_PROTO_OK) == (f->len >= LR_NONCE_LEN));
    if (rc == LR_PROTO_OK) {
      FZ_CHECK(memcmp(m, f->payload, LR_NONCE_LEN) == 0);
      reencode(enc_challenge, LR_MSG_CHALLENGE, m, f, &g);
      FZ_CHECK(lr_decode_challenge(&g, d) == LR_PROTO_OK);
      FZ_CHECK(memcmp(m, d, LR_NONCE_LEN) == 0);
    }
  }
  /* LISTENER_ADD / LISTENER_DEL */
  {
    lr_listener_t m, d;
    uint16_t type = f->type == LR_MSG_LISTENER_DEL ? LR_MSG_LISTENER_DEL : LR_MSG_LISTENER_ADD;
    check_rc(rc = lr_decode_listener(f, &m));
    if (rc == LR_PROTO_OK) {
      FZ_CHECK(m.family == 4 || m.family == 6);
      check_listener_text(&m);
      reencode(enc_listener, type, &m, f, &g);
      FZ_CHECK(lr_decode_listener(&g, &d) == LR_PROTO_OK);
      FZ_CHECK(lr_listener_cmp(&m, &d) == 0 && lr_listener_cmp(&d, &m) == 0);
    }
  }
  /* LISTENER_ADD's owner: capped, NUL-free, valid UTF-8, and a round trip
   * keeps it (and the listener) */
  {
    lr_listener_t m, d;
    lr_proc_owner_t o, od;
    check_rc(rc = lr_decode_listener_add(f, &m, &o));
    if (rc == LR_PROTO_OK) {
      size_t n = strlen(o.cmd);
      FZ_CHECK(n <= LR_CMD_MAX);
      char again[LR_CMD_MAX + 1];
      memcpy(again, o.cmd, n + 1);
      lr_utf8_sanitize(again);
      FZ_CHECK(memcmp(again, o.cmd, n + 1) == 0); /* already clean */
      uint8_t buf[LR_FRAME_HDR_LEN + 64 + LR_CMD_MAX];
      size_t len = lr_encode_listener_add(buf, sizeof buf, &m, &o);
      FZ_CHECK(len > 0);
      lr_frame_t h;
      size_t used;
      FZ_CHECK(lr_frame_decode(buf, len, &h, &used) == LR_PROTO_OK && used == len);
      FZ_CHECK(lr_decode_listener_add(&h, &d, &od) == LR_PROTO_OK);
      FZ_CHECK(lr_listener_cmp(&m, &d) == 0 && od.pid == o.pid);
      FZ_CHECK(o.pid == 0 || strcmp(od.cmd, o.cmd) == 0);
    }
  }
  /* PORT_STATE */
  {
    lr_port_state_msg_t m, d;
    check_rc(rc = lr_decode_port_state(f, &m));
    if (rc == LR_PROTO_OK) {
      FZ_CHECK(m.state <= LR_PORT_DENIED);
      (void)lr_port_state_name((lr_port_state_t)m.state);
      reencode(enc_port_state, LR_MSG_PORT_STATE, &m, f, &g);
      FZ_CHECK(lr_decode_port_state(&g, &d) == LR_PROTO_OK);
      FZ_CHECK(lr_listener_cmp(&m.listener, &d.listener) == 0);
      FZ_CHECK(m.state == d.state && m.host_port == d.host_port);
    }
  }
  /* REVERSE_SET */
  {
    static lr_reverse_set_t m, d;
    check_rc(rc = lr_decode_reverse_set(f, &m));
    if (rc == LR_PROTO_OK) {
      FZ_CHECK(m.n <= LR_REVERSE_MAX_PORTS);
      for (size_t i = 0; i < m.n; i++) FZ_CHECK(m.ports[i] != 0);
      reencode(enc_reverse_set, LR_MSG_REVERSE_SET, &m, f, &g);
      FZ_CHECK(lr_decode_reverse_set(&g, &d) == LR_PROTO_OK);
      FZ_CHECK(m.flags == d.flags && m.n == d.n);
      FZ_CHECK(memcmp(m.ports, d.ports, m.n * sizeof m.ports[0]) == 0);
    }
  }
  /* REVERSE_OPEN */
  {
    lr_reverse_open_t m, d;
    check_rc(rc = lr_decode_reverse_open(f, &m));
    if (rc == LR_PROTO_OK) {
      FZ_CHECK((m.family == 4 || m.family == 6) && m.port != 0);
      reencode(enc_reverse_open, LR_MSG_REVERSE_OPEN, &m, f, &g);
      FZ_CHECK(lr_decode_reverse_open(&g, &d) == LR_PROTO_OK);
      FZ_CHECK(m.id == d.id && m.family == d.family && m.port == d.port);
    }
  }
  /* REVERSE_FAIL */
  {
    static reverse_fail_t m, d;
    check_rc(rc = lr_decode_reverse_fail(f, &m.id, &m.e));
    if (rc == LR_PROTO_OK) {
      FZ_CHECK(strlen(m.e.text) < sizeof m.e.text);
      reencode(enc_reverse_fail, LR_MSG_REVERSE_FAIL, &m, f, &g);
      FZ_CHECK(lr_decode_reverse_fail(&g, &d.id, &d.e) == LR_PROTO_OK);
      FZ_CHECK(m.id == d.id && m.e.code == d.e.code && strcmp(m.e.text, d.e.text) == 0);
    }
  }
  /* PING / PONG */
  {
    uint64_t m, d;
    uint16_t type = f->type == LR_MSG_PONG ? LR_MSG_PONG : LR_MSG_PING;
    check_rc(rc = lr_decode_ping(f, &m));
    if (rc == LR_PROTO_OK) {
      reencode(enc_ping, type, &m, f, &g);
      FZ_CHECK(lr_decode_ping(&g, &d) == LR_PROTO_OK && d == m);
    }
  }
  /* OPEN */
  {
    static lr_open_t m, d;
    check_rc(rc = lr_decode_open(f, &m));
    if (rc == LR_PROTO_OK) {
      FZ_CHECK((m.family == 4 || m.family == 6) && m.port != 0);
      reencode(enc_open, LR_MSG_OPEN, &m, f, &g);
      FZ_CHECK(lr_decode_open(&g, &d) == LR_PROTO_OK);
      FZ_CHECK(auth_same(&m.auth, &d.auth));
      FZ_CHECK(m.family == d.family && m.port == d.port);
      FZ_CHECK(m.flags == d.flags && m.stream_id == d.stream_id);
    }
  }
  /* STREAM_CLOSE: the id is never 0; any kind and count survive */
  {
    lr_stream_close_t m, d;
    check_rc(rc = lr_decode_stream_close(f, &m));
    if (rc == LR_PROTO_OK) {
      FZ_CHECK(m.id != 0);
      reencode(enc_stream_close, LR_MSG_STREAM_CLOSE, &m, f, &g);
      FZ_CHECK(lr_decode_stream_close(&g, &d) == LR_PROTO_OK);
      FZ_CHECK(m.id == d.id && m.kind == d.kind && m.bytes == d.bytes);
    }
  }
  /* ATTACH */
  {
    static lr_attach_t m, d;
    check_rc(rc = lr_decode_attach(f, &m));
    if (rc == LR_PROTO_OK) {
      reencode(enc_attach, LR_MSG_ATTACH, &m, f, &g);
      FZ_CHECK(lr_decode_attach(&g, &d) == LR_PROTO_OK);
      FZ_CHECK(auth_same(&m.auth, &d.auth) && m.id == d.id && m.stream_id == d.stream_id);
    }
  }
  /* SYNC_DONE carries nothing: any payload is a longer one from a newer
   * peer, and the empty frame re-encodes as a zero-length prefix. */
  if (f->type == LR_MSG_SYNC_DONE) reencode(enc_empty, LR_MSG_SYNC_DONE, NULL, f, &g);
}
