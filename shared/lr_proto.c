/* Wire protocol encode/decode; see lr_proto.h for the framing.
 *
 * Payload layouts (all integers big-endian):
 *   HELLO, WELCOME   u8 alen, auth[alen], u8 nlen, name[nlen], u8 vlen, version[vlen]
 *   CHALLENGE        nonce[32]
 *   ERROR            u32 code, u16 len, text[len]
 *   OPEN_RESULT      u32 code, u16 len, text[len], u8 alen, auth[alen]
 *   LISTENER_ADD/DEL u8 family, u8 flags, u16 port, addr[16]            (20 bytes)
 *   LISTENER_ADD     ... then optionally u32 pid, u16 clen, command[clen]
 *   PORT_STATE       listener (20), u8 state, u16 host_port            (23 bytes)
 *   OPEN             u8 alen, auth[alen], u8 family, u16 port [, u8 flags [, u32 stream id]]
 *   PING, PONG       u64 nonce
 *   SYNC_DONE        (empty)
 *   REVERSE_SET      u8 flags, u16 n, u16 port[n]
 *   REVERSE_OPEN     u32 id, u8 family, u16 port
 *   REVERSE_FAIL     u32 id, u32 code, u16 len, text[len]
 *   ATTACH           u8 alen, auth[alen], u32 id [, u32 stream id]
 *   AGENT_INFO       u8 detection (0 poll, 1 ebpf); newer agents append
 *   STREAM_CLOSE     u32 stream id, u8 kind (1 FIN, 2 RESET), u64 bytes  (13 bytes)
 * Writers use a cursor that refuses to run past the end; readers use one
 * that reports a short payload instead of reading past it. */
#include "lr_proto.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

static const uint8_t magic[4] = {'L', 'R', 'L', 'Y'};

/* ---- cursors ---------------------------------------------------------- */

typedef struct {
  uint8_t *p;
  size_t cap, len;
  int bad;
} wcur_t;

static void w_bytes(wcur_t *w, const void *src, size_t n) {
  if (w->bad || w->cap - w->len < n) {
    w->bad = 1;
    return;
  }
  if (n) memcpy(w->p + w->len, src, n);
  w->len += n;
}
static void w_u8(wcur_t *w, uint8_t v) { w_bytes(w, &v, 1); }
static void w_u16(wcur_t *w, uint16_t v) {
  uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
  w_bytes(w, b, 2);
}
static void w_u32(wcur_t *w, uint32_t v) {
  uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
  w_bytes(w, b, 4);
}
static void w_u64(wcur_t *w, uint64_t v) {
  w_u32(w, (uint32_t)(v >> 32));
  w_u32(w, (uint32_t)v);
}

typedef struct {
  const uint8_t *p;
  size_t len, off;
  int bad;
} rcur_t;

static const uint8_t *r_bytes(rcur_t *r, size_t n) {
  if (r->bad || r->len - r->off < n) {
    r->bad = 1;
    return NULL;
  }
  const uint8_t *p = r->p + r->off;
  r->off += n;
  return p;
}
static uint8_t r_u8(rcur_t *r) {
  const uint8_t *p = r_bytes(r, 1);
  return p ? p[0] : 0;
}
static uint16_t r_u16(rcur_t *r) {
  const uint8_t *p = r_bytes(r, 2);
  return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}
static uint32_t r_u32(rcur_t *r) {
  const uint8_t *p = r_bytes(r, 4);
  return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}
static uint64_t r_u64(rcur_t *r) {
  uint64_t hi = r_u32(r);
  return hi << 32 | r_u32(r);
}

/* A length-prefixed string into a NUL-terminated buffer. Embedded NULs or a
 * string that does not fit are invalid, not truncated. */
static int r_str(rcur_t *r, size_t lenlen, char *out, size_t cap) {
  size_t n = lenlen == 1 ? r_u8(r) : r_u16(r);
  const uint8_t *p = r_bytes(r, n);
  if (!p) return LR_PROTO_ESHORT;
  if (n >= cap || memchr(p, 0, n)) return LR_PROTO_EINVAL;
  memcpy(out, p, n);
  out[n] = '\0';
  return LR_PROTO_OK;
}

static size_t frame_begin(wcur_t *w, uint8_t *out, size_t cap, uint16_t type) {
  w->p = out;
  w->cap = cap;
  w->len = 0;
  w->bad = 0;
  w_u16(w, type);
  w_u16(w, 0);
  w_u32(w, 0); /* patched in frame_end */
  return 0;
}

static size_t frame_end(wcur_t *w) {
  if (w->bad) return 0;
  size_t plen = w->len - LR_FRAME_HDR_LEN;
  if (plen > LR_FRAME_MAX_PAYLOAD) return 0;
  w->p[4] = (uint8_t)(plen >> 24);
  w->p[5] = (uint8_t)(plen >> 16);
  w->p[6] = (uint8_t)(plen >> 8);
  w->p[7] = (uint8_t)plen;
  return w->len;
}

static void rcur_init(rcur_t *r, const lr_frame_t *f) {
  r->p = f->payload;
  r->len = f->len;
  r->off = 0;
  r->bad = 0;
}

/* ---- preamble and frames ---------------------------------------------- */

void lr_preamble_encode_flags(uint8_t out[LR_PREAMBLE_LEN], uint8_t kind, uint8_t flags) {
  memcpy(out, magic, 4);
  out[4] = LR_PROTO_VERSION;
  out[5] = kind;
  out[6] = flags;
  out[7] = 0;
}

void lr_preamble_encode(uint8_t out[LR_PREAMBLE_LEN], uint8_t kind) {
  lr_preamble_encode_flags(out, kind, 0);
}

int lr_preamble_decode(const uint8_t *buf, size_t len, lr_preamble_t *out) {
  /* Reject a wrong magic as early as its first byte: an HTTP client or a
   * port scanner hitting the agent gets an answer, not a wait. */
  size_t n = len < 4 ? len : 4;
  if (memcmp(buf, magic, n) != 0) return LR_PROTO_EBADMAGIC;
  if (len < LR_PREAMBLE_LEN) return LR_PROTO_NEED_MORE;
  out->version = buf[4];
  out->kind = buf[5];
  out->flags = buf[6];
  if (out->version != LR_PROTO_VERSION) return LR_PROTO_EVERSION;
  if (out->kind > LR_STREAM_REVERSE) return LR_PROTO_EINVAL;
  return LR_PROTO_OK;
}

int lr_frame_decode(const uint8_t *buf, size_t len, lr_frame_t *out, size_t *consumed) {
  if (len < LR_FRAME_HDR_LEN) return LR_PROTO_NEED_MORE;
  uint32_t plen = (uint32_t)buf[4] << 24 | (uint32_t)buf[5] << 16 | (uint32_t)buf[6] << 8 | buf[7];
  if (plen > LR_FRAME_MAX_PAYLOAD) return LR_PROTO_ETOOBIG;
  if (len - LR_FRAME_HDR_LEN < plen) return LR_PROTO_NEED_MORE;
  out->type = (uint16_t)(buf[0] << 8 | buf[1]);
  out->flags = (uint16_t)(buf[2] << 8 | buf[3]);
  out->len = plen;
  out->payload = buf + LR_FRAME_HDR_LEN;
  *consumed = LR_FRAME_HDR_LEN + plen;
  return LR_PROTO_OK;
}

/* ---- encoders ---------------------------------------------------------- */

static void w_str8(wcur_t *w, const char *s, size_t max) {
  size_t n = strlen(s);
  if (n > max) {
    w->bad = 1;
    return;
  }
  w_u8(w, (uint8_t)n);
  w_bytes(w, s, n);
}

/* Messages may be cut to LR_TEXT_MAX - 1 bytes, never refused. */
static void w_text16(wcur_t *w, const char *text) {
  size_t n = text ? strlen(text) : 0;
  if (n > LR_TEXT_MAX - 1) n = LR_TEXT_MAX - 1;
  w_u16(w, (uint16_t)n);
  w_bytes(w, text, n);
}

static void w_auth(wcur_t *w, const lr_auth_t *a) {
  w_u8(w, a->len);
  w_bytes(w, a->data, a->len);
}

static void w_listener(wcur_t *w, const lr_listener_t *l) {
  if (l->family != 4 && l->family != 6) w->bad = 1;
  w_u8(w, l->family);
  w_u8(w, l->flags);
  w_u16(w, l->port);
  w_bytes(w, l->addr, 16);
}

size_t lr_encode_hello(uint8_t *out, size_t cap, uint16_t type, const lr_hello_t *m) {
  wcur_t w;
  frame_begin(&w, out, cap, type);
  w_auth(&w, &m->auth);
  w_str8(&w, m->name, sizeof m->name - 1);
  w_str8(&w, m->version, sizeof m->version - 1);
  if (m->caps) w_u8(&w, m->caps); /* older peers stop reading before it */
  return frame_end(&w);
}

static size_t encode_code_text(uint8_t *out, size_t cap, uint16_t type, uint32_t code,
                               const char *text) {
  wcur_t w;
  frame_begin(&w, out, cap, type);
  w_u32(&w, code);
  w_text16(&w, text);
  return frame_end(&w);
}

size_t lr_encode_error(uint8_t *out, size_t cap, uint32_t code, const char *text) {
  return encode_code_text(out, cap, LR_MSG_ERROR, code, text);
}

size_t lr_encode_open_result(uint8_t *out, size_t cap, uint32_t status, const char *text,
                             const lr_auth_t *auth) {
  wcur_t w;
  frame_begin(&w, out, cap, LR_MSG_OPEN_RESULT);
  w_u32(&w, status);
  w_text16(&w, text);
  if (auth)
    w_auth(&w, auth);
  else
    w_u8(&w, 0);
  return frame_end(&w);
}

size_t lr_encode_challenge(uint8_t *out, size_t cap, const uint8_t nonce[LR_NONCE_LEN]) {
  wcur_t w;
  frame_begin(&w, out, cap, LR_MSG_CHALLENGE);
  w_bytes(&w, nonce, LR_NONCE_LEN);
  return frame_end(&w);
}

size_t lr_encode_listener(uint8_t *out, size_t cap, uint16_t type, const lr_listener_t *l) {
  wcur_t w;
  frame_begin(&w, out, cap, type);
  w_listener(&w, l);
  return frame_end(&w);
}

size_t lr_encode_listener_add(uint8_t *out, size_t cap, const lr_listener_t *l,
                              const lr_proc_owner_t *owner) {
  wcur_t w;
  frame_begin(&w, out, cap, LR_MSG_LISTENER_ADD);
  w_listener(&w, l);
  if (owner && owner->pid) {
    size_t n = strnlen(owner->cmd, LR_CMD_MAX);
    w_u32(&w, owner->pid);
    w_u16(&w, (uint16_t)n);
    w_bytes(&w, owner->cmd, n);
  }
  return frame_end(&w);
}

size_t lr_encode_port_state(uint8_t *out, size_t cap, const lr_port_state_msg_t *m) {
  wcur_t w;
  frame_begin(&w, out, cap, LR_MSG_PORT_STATE);
  w_listener(&w, &m->listener);
  if (m->state > LR_PORT_DENIED) w.bad = 1;
  w_u8(&w, m->state);
  w_u16(&w, m->host_port);
  return frame_end(&w);
}

size_t lr_encode_open(uint8_t *out, size_t cap, const lr_open_t *m) {
  wcur_t w;
  frame_begin(&w, out, cap, LR_MSG_OPEN);
  w_auth(&w, &m->auth);
  if ((m->family != 4 && m->family != 6) || m->port == 0) w.bad = 1;
  w_u8(&w, m->family);
  w_u16(&w, m->port);
  /* Older agents stop reading before these; the id needs the flags byte
   * in front of it, even when no flag is set. */
  if (m->flags || m->stream_id) w_u8(&w, m->flags);
  if (m->stream_id) w_u32(&w, m->stream_id);
  return frame_end(&w);
}

size_t lr_encode_empty(uint8_t *out, size_t cap, uint16_t type) {
  wcur_t w;
  frame_begin(&w, out, cap, type);
  return frame_end(&w);
}

size_t lr_encode_ping(uint8_t *out, size_t cap, uint16_t type, uint64_t nonce) {
  wcur_t w;
  frame_begin(&w, out, cap, type);
  w_u64(&w, nonce);
  return frame_end(&w);
}

size_t lr_encode_reverse_set(uint8_t *out, size_t cap, const lr_reverse_set_t *m) {
  wcur_t w;
  frame_begin(&w, out, cap, LR_MSG_REVERSE_SET);
  if (m->n > LR_REVERSE_MAX_PORTS) w.bad = 1;
  w_u8(&w, m->flags);
  w_u16(&w, m->n);
  for (size_t i = 0; !w.bad && i < m->n; i++) w_u16(&w, m->ports[i]);
  return frame_end(&w);
}

size_t lr_encode_reverse_open(uint8_t *out, size_t cap, const lr_reverse_open_t *m) {
  wcur_t w;
  frame_begin(&w, out, cap, LR_MSG_REVERSE_OPEN);
  if ((m->family != 4 && m->family != 6) || m->port == 0) w.bad = 1;
  w_u32(&w, m->id);
  w_u8(&w, m->family);
  w_u16(&w, m->port);
  return frame_end(&w);
}

size_t lr_encode_reverse_fail(uint8_t *out, size_t cap, uint32_t id, uint32_t code,
                              const char *text) {
  wcur_t w;
  frame_begin(&w, out, cap, LR_MSG_REVERSE_FAIL);
  w_u32(&w, id);
  w_u32(&w, code);
  w_text16(&w, text);
  return frame_end(&w);
}

size_t lr_encode_attach(uint8_t *out, size_t cap, const lr_attach_t *m) {
  wcur_t w;
  frame_begin(&w, out, cap, LR_MSG_ATTACH);
  w_auth(&w, &m->auth);
  w_u32(&w, m->id);
  if (m->stream_id) w_u32(&w, m->stream_id); /* older agents stop reading before it */
  return frame_end(&w);
}

size_t lr_encode_stream_close(uint8_t *out, size_t cap, const lr_stream_close_t *m) {
  wcur_t w;
  frame_begin(&w, out, cap, LR_MSG_STREAM_CLOSE);
  if (m->id == 0) w.bad = 1;
  w_u32(&w, m->id);
  w_u8(&w, m->kind);
  w_u64(&w, m->bytes);
  return frame_end(&w);
}

size_t lr_encode_agent_info(uint8_t *out, size_t cap, const lr_agent_info_t *m) {
  wcur_t w;
  frame_begin(&w, out, cap, LR_MSG_AGENT_INFO);
  w_u8(&w, m->detection);
  return frame_end(&w);
}

/* ---- decoders ---------------------------------------------------------- */

static int r_auth(rcur_t *r, lr_auth_t *a) {
  uint8_t n = r_u8(r);
  const uint8_t *p = r_bytes(r, n);
  if (!p) return LR_PROTO_ESHORT;
  a->len = n;
  if (n) memcpy(a->data, p, n);
  return LR_PROTO_OK;
}

int lr_decode_hello(const lr_frame_t *f, lr_hello_t *out) {
  rcur_t r;
  int rc;
  rcur_init(&r, f);
  memset(out, 0, sizeof *out);
  if ((rc = r_auth(&r, &out->auth))) return rc;
  if ((rc = r_str(&r, 1, out->name, sizeof out->name))) return rc;
  if ((rc = r_str(&r, 1, out->version, sizeof out->version))) return rc;
  if (r.off < r.len) out->caps = r_u8(&r);
  return LR_PROTO_OK;
}

/* The code + text tail shared by ERROR, OPEN_RESULT and REVERSE_FAIL. */
static int r_code_text(rcur_t *r, lr_error_msg_t *out) {
  memset(out, 0, sizeof *out);
  out->code = r_u32(r);
  if (r->bad) return LR_PROTO_ESHORT;
  return r_str(r, 2, out->text, sizeof out->text);
}

int lr_decode_error(const lr_frame_t *f, lr_error_msg_t *out) {
  rcur_t r;
  rcur_init(&r, f);
  return r_code_text(&r, out);
}

int lr_decode_open_result(const lr_frame_t *f, lr_error_msg_t *out, lr_auth_t *auth) {
  rcur_t r;
  int rc;
  rcur_init(&r, f);
  auth->len = 0;
  if ((rc = r_code_text(&r, out))) return rc;
  if (r.off == r.len) return LR_PROTO_OK; /* no auth block: none */
  return r_auth(&r, auth);
}

int lr_decode_challenge(const lr_frame_t *f, uint8_t nonce[LR_NONCE_LEN]) {
  rcur_t r;
  rcur_init(&r, f);
  const uint8_t *p = r_bytes(&r, LR_NONCE_LEN);
  if (!p) return LR_PROTO_ESHORT;
  memcpy(nonce, p, LR_NONCE_LEN);
  return LR_PROTO_OK;
}

static int r_listener(rcur_t *r, lr_listener_t *l) {
  memset(l, 0, sizeof *l);
  l->family = r_u8(r);
  l->flags = r_u8(r);
  l->port = r_u16(r);
  const uint8_t *a = r_bytes(r, 16);
  if (!a) return LR_PROTO_ESHORT;
  memcpy(l->addr, a, 16);
  if (l->family != 4 && l->family != 6) return LR_PROTO_EINVAL;
  if (l->family == 4) {
    /* One canonical form per listener, so equal listeners compare equal. */
    static const uint8_t zero[12];
    if (memcmp(l->addr + 4, zero, 12) != 0) return LR_PROTO_EINVAL;
    if (l->flags & LR_LISTENER_V6ONLY) return LR_PROTO_EINVAL;
  }
  return LR_PROTO_OK;
}

int lr_decode_listener(const lr_frame_t *f, lr_listener_t *out) {
  rcur_t r;
  rcur_init(&r, f);
  return r_listener(&r, out);
}

int lr_decode_listener_add(const lr_frame_t *f, lr_listener_t *out, lr_proc_owner_t *owner) {
  rcur_t r;
  int rc;
  rcur_init(&r, f);
  memset(owner, 0, sizeof *owner);
  if ((rc = r_listener(&r, out))) return rc;
  if (r.off == r.len) return LR_PROTO_OK; /* an agent that does not say */
  uint32_t pid = r_u32(&r);
  size_t n = r_u16(&r);
  const uint8_t *p = r_bytes(&r, n);
  if (!p) return LR_PROTO_ESHORT;
  if (memchr(p, 0, n)) return LR_PROTO_EINVAL;
  if (n > LR_CMD_MAX) n = LR_CMD_MAX; /* guest text: capped, not refused */
  owner->pid = pid;
  memcpy(owner->cmd, p, n);
  owner->cmd[n] = '\0';
  lr_utf8_sanitize(owner->cmd);
  return LR_PROTO_OK;
}

/* Length of the well-formed UTF-8 sequence at s (1-4), or 0. */
static size_t utf8_seq(const unsigned char *s) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t n;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F; /* no surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else
    return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return n;
}

void lr_utf8_sanitize(char *s) {
  unsigned char *p = (unsigned char *)s;
  while (*p) {
    size_t n = utf8_seq(p);
    if (n == 0) {
      *p++ = '?';
      continue;
    }
    p += n;
  }
}

int lr_decode_port_state(const lr_frame_t *f, lr_port_state_msg_t *out) {
  rcur_t r;
  int rc;
  rcur_init(&r, f);
  memset(out, 0, sizeof *out);
  if ((rc = r_listener(&r, &out->listener))) return rc;
  out->state = r_u8(&r);
  out->host_port = r_u16(&r);
  if (r.bad) return LR_PROTO_ESHORT;
  if (out->state > LR_PORT_DENIED) return LR_PROTO_EINVAL;
  return LR_PROTO_OK;
}

int lr_decode_open(const lr_frame_t *f, lr_open_t *out) {
  rcur_t r;
  int rc;
  rcur_init(&r, f);
  memset(out, 0, sizeof *out);
  if ((rc = r_auth(&r, &out->auth))) return rc;
  out->family = r_u8(&r);
  out->port = r_u16(&r);
  if (!r.bad && r.off < r.len) out->flags = r_u8(&r);
  /* A stream id cut short is no id: the stream just gets no notices. */
  if (!r.bad && r.len - r.off >= 4) out->stream_id = r_u32(&r);
  if (r.bad) return LR_PROTO_ESHORT;
  if ((out->family != 4 && out->family != 6) || out->port == 0) return LR_PROTO_EINVAL;
  return LR_PROTO_OK;
}

int lr_decode_ping(const lr_frame_t *f, uint64_t *nonce) {
  rcur_t r;
  rcur_init(&r, f);
  *nonce = r_u64(&r);
  return r.bad ? LR_PROTO_ESHORT : LR_PROTO_OK;
}

int lr_decode_reverse_set(const lr_frame_t *f, lr_reverse_set_t *out) {
  rcur_t r;
  rcur_init(&r, f);
  out->flags = r_u8(&r);
  out->n = r_u16(&r);
  if (r.bad) return LR_PROTO_ESHORT;
  if (out->n > LR_REVERSE_MAX_PORTS) return LR_PROTO_EINVAL;
  for (size_t i = 0; i < out->n; i++) {
    out->ports[i] = r_u16(&r);
    if (r.bad) return LR_PROTO_ESHORT;
    if (out->ports[i] == 0) return LR_PROTO_EINVAL;
  }
  return LR_PROTO_OK;
}

int lr_decode_reverse_open(const lr_frame_t *f, lr_reverse_open_t *out) {
  rcur_t r;
  rcur_init(&r, f);
  out->id = r_u32(&r);
  out->family = r_u8(&r);
  out->port = r_u16(&r);
  if (r.bad) return LR_PROTO_ESHORT;
  if ((out->family != 4 && out->family != 6) || out->port == 0) return LR_PROTO_EINVAL;
  return LR_PROTO_OK;
}

int lr_decode_reverse_fail(const lr_frame_t *f, uint32_t *id, lr_error_msg_t *out) {
  rcur_t r;
  rcur_init(&r, f);
  *id = r_u32(&r);
  return r_code_text(&r, out);
}

int lr_decode_attach(const lr_frame_t *f, lr_attach_t *out) {
  rcur_t r;
  int rc;
  rcur_init(&r, f);
  memset(out, 0, sizeof *out);
  if ((rc = r_auth(&r, &out->auth))) return rc;
  out->id = r_u32(&r);
  if (!r.bad && r.len - r.off >= 4) out->stream_id = r_u32(&r);
  return r.bad ? LR_PROTO_ESHORT : LR_PROTO_OK;
}

int lr_decode_stream_close(const lr_frame_t *f, lr_stream_close_t *out) {
  rcur_t r;
  rcur_init(&r, f);
  memset(out, 0, sizeof *out);
  out->id = r_u32(&r);
  out->kind = r_u8(&r);
  out->bytes = r_u64(&r);
  if (r.bad) return LR_PROTO_ESHORT;
  return out->id == 0 ? LR_PROTO_EINVAL : LR_PROTO_OK;
}

int lr_decode_agent_info(const lr_frame_t *f, lr_agent_info_t *out) {
  rcur_t r;
  rcur_init(&r, f);
  memset(out, 0, sizeof *out);
  out->detection = r_u8(&r);
  return r.bad ? LR_PROTO_ESHORT : LR_PROTO_OK;
}

/* ---- names and helpers ------------------------------------------------- */

const char *lr_proto_strerror(int rc) {
  switch (rc) {
    case LR_PROTO_OK: return "ok";
    case LR_PROTO_NEED_MORE: return "incomplete";
    case LR_PROTO_EBADMAGIC: return "not a lorelay stream (bad magic)";
    case LR_PROTO_EVERSION: return "unsupported protocol version";
    case LR_PROTO_ETOOBIG: return "frame too large";
    case LR_PROTO_ESHORT: return "frame payload too short";
    case LR_PROTO_EINVAL: return "invalid field value";
    case LR_PROTO_ENOMEM: return "out of memory";
    default: return "unknown protocol error";
  }
}

const char *lr_err_name(uint32_t code) {
  switch (code) {
    case LR_OK: return "ok";
    case LR_ERR_REFUSED: return "connection refused";
    case LR_ERR_UNREACHABLE: return "unreachable";
    case LR_ERR_TIMEOUT: return "timed out";
    case LR_ERR_AUTH: return "authentication failed";
    case LR_ERR_VERSION: return "protocol version mismatch";
    case LR_ERR_PROTOCOL: return "protocol error";
    case LR_ERR_INTERNAL: return "internal error";
    case LR_ERR_BUSY: return "another host holds the control stream";
    default: return "unknown error";
  }
}

const char *lr_msg_name(uint16_t type) {
  switch (type) {
    case LR_MSG_HELLO: return "HELLO";
    case LR_MSG_WELCOME: return "WELCOME";
    case LR_MSG_ERROR: return "ERROR";
    case LR_MSG_CHALLENGE: return "CHALLENGE";
    case LR_MSG_LISTENER_ADD: return "LISTENER_ADD";
    case LR_MSG_LISTENER_DEL: return "LISTENER_DEL";
    case LR_MSG_SYNC_DONE: return "SYNC_DONE";
    case LR_MSG_PORT_STATE: return "PORT_STATE";
    case LR_MSG_STREAM_CLOSE: return "STREAM_CLOSE";
    case LR_MSG_PING: return "PING";
    case LR_MSG_PONG: return "PONG";
    case LR_MSG_OPEN: return "OPEN";
    case LR_MSG_OPEN_RESULT: return "OPEN_RESULT";
    case LR_MSG_REVERSE_SET: return "REVERSE_SET";
    case LR_MSG_REVERSE_OPEN: return "REVERSE_OPEN";
    case LR_MSG_REVERSE_FAIL: return "REVERSE_FAIL";
    case LR_MSG_ATTACH: return "ATTACH";
    case LR_MSG_AGENT_INFO: return "AGENT_INFO";
    default: return "unknown";
  }
}

const char *lr_port_state_name(lr_port_state_t s) {
  switch (s) {
    case LR_PORT_FORWARDING: return "forwarding";
    case LR_PORT_CONFLICT: return "conflict";
    case LR_PORT_REMAPPED: return "remapped";
    case LR_PORT_IGNORED: return "ignored";
    case LR_PORT_DENIED: return "denied";
    default: return "unknown";
  }
}

const char *lr_detection_name(uint8_t d) {
  switch (d) {
    case LR_DETECT_POLL: return "poll";
    case LR_DETECT_EBPF: return "ebpf";
    default: return "unknown";
  }
}

int lr_token_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
  /* Time depends on the lengths only, never on where the bytes differ. */
  size_t n = alen > blen ? alen : blen;
  unsigned diff = (unsigned)(alen ^ blen);
  for (size_t i = 0; i < n; i++) {
    uint8_t x = i < alen ? a[i] : 0, y = i < blen ? b[i] : 0;
    diff |= (unsigned)(x ^ y);
  }
  return diff == 0;
}

/* ---- what a MAC covers (see lr_proto.h) --------------------------------- */

size_t lr_auth_input(uint8_t *out, size_t cap, lr_role_t role, uint8_t kind, uint16_t type,
                     const uint8_t agent_nonce[LR_NONCE_LEN],
                     const uint8_t host_nonce[LR_NONCE_LEN], const uint8_t *fields,
                     size_t flen) {
  static const char host_label[] = "lorelay host", agent_label[] = "lorelay agent";
  wcur_t w = {out, cap, 0, 0};
  if (role == LR_ROLE_HOST) {
    w_bytes(&w, host_label, sizeof host_label); /* with its NUL */
  } else {
    w_bytes(&w, agent_label, sizeof agent_label);
  }
  w_u8(&w, LR_PROTO_VERSION);
  w_u8(&w, kind);
  w_u16(&w, type);
  /* Each side's MAC puts the peer's nonce (its challenge) first. */
  w_bytes(&w, role == LR_ROLE_HOST ? agent_nonce : host_nonce, LR_NONCE_LEN);
  w_bytes(&w, role == LR_ROLE_HOST ? host_nonce : agent_nonce, LR_NONCE_LEN);
  w_bytes(&w, fields, flen);
  return w.bad ? 0 : w.len;
}

size_t lr_auth_fields_hello(uint8_t *out, size_t cap, const lr_hello_t *m) {
  wcur_t w = {out, cap, 0, 0};
  w_str8(&w, m->name, sizeof m->name - 1);
  w_str8(&w, m->version, sizeof m->version - 1);
  return w.bad ? 0 : w.len;
}

size_t lr_auth_fields_open(uint8_t *out, size_t cap, const lr_open_t *m) {
  wcur_t w = {out, cap, 0, 0};
  w_u8(&w, m->family);
  w_u16(&w, m->port);
  /* Only for UDP, so that what older peers sign stays as it was (they
   * never see a UDP OPEN: they report no UDP sockets). */
  if (m->flags & LR_OPEN_UDP) w_u8(&w, m->flags);
  return w.bad ? 0 : w.len;
}

size_t lr_auth_fields_attach(uint8_t *out, size_t cap, const lr_attach_t *m) {
  wcur_t w = {out, cap, 0, 0};
  w_u32(&w, m->id);
  return w.bad ? 0 : w.len;
}

size_t lr_auth_fields_result(uint8_t *out, size_t cap, uint32_t status) {
  wcur_t w = {out, cap, 0, 0};
  w_u32(&w, status);
  return w.bad ? 0 : w.len;
}

int lr_listener_cmp(const lr_listener_t *a, const lr_listener_t *b) {
  if (a->family != b->family) return a->family < b->family ? -1 : 1;
  int c = memcmp(a->addr, b->addr, 16);
  if (c) return c < 0 ? -1 : 1;
  if (a->port != b->port) return a->port < b->port ? -1 : 1;
  if (a->flags != b->flags) return a->flags < b->flags ? -1 : 1;
  return 0;
}

char *lr_listener_format(const lr_listener_t *l, char *out, size_t outlen) {
  char ip[64] = "?";
  if (l->family == 4)
    uv_inet_ntop(AF_INET, l->addr, ip, sizeof ip);
  else
    uv_inet_ntop(AF_INET6, l->addr, ip, sizeof ip);
  if (l->family == 6)
    snprintf(out, outlen, "[%s]:%u", ip, l->port);
  else
    snprintf(out, outlen, "%s:%u", ip, l->port);
  return out;
}
