/* libFuzzer target: the handshake's checks of what a peer sent (lr_auth.h),
 * with the real HMAC-SHA256 (libcrypto, as host/posix and the guest use).
 *
 * Input: byte 0 picks the stream kind (control, data, reverse) and which
 * side's key the checking side holds (the same, another, none), the rest is
 * a run of frames as a peer sends them. Each frame goes through the
 * decoders the handshake uses and, what decodes, through the check the
 * receiving side makes:
 *   CHALLENGE               the host takes the agent's nonce from it
 *   HELLO, OPEN, ATTACH     the agent checks the host's nonce and MAC
 *   WELCOME, OPEN_RESULT    the host checks the agent's MAC
 * Oracle: each lr_auth_verify_* answers 1 exactly when the block has the
 * length that role sends and its MAC is the one lr_auth_mac computes over
 * that nonce pair, role, kind, type and request or result, else 0 (and 0
 * whatever the block without a key). No "never 1" check: libFuzzer learns
 * bytes from the comparisons it sees, so it may well forge a MAC for its
 * own deterministic nonces.
 *
 * Besides the hostile frames, every request the input decodes is also
 * signed the honest way (lr_auth_sign_*), sent through the encoder and
 * decoder, and must verify; it must not verify under another key, without
 * a key, as another message, on another kind of stream; then the input
 * picks one byte of the block, or of the request or result the MAC covers,
 * to change, and it must no longer verify.
 *
 * Nonces come from a counter, not the OS, so that every run of an input
 * takes the same path. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "fuzz_common.h"
#include "lr_auth.h"
#include "lr_proto.h"

static int fz_hmac(const uint8_t *key, size_t klen, const uint8_t *msg, size_t mlen,
                   uint8_t out[32]) {
  unsigned n = 0;
  if (!HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &n) || n != 32) return -1;
  return 0;
}

static uint8_t g_counter;
static int fz_random(uint8_t *buf, size_t n) {
  for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)(g_counter++ * 167u + 13u);
  return 0;
}

static const lr_pal_t g_pal = {.name = "fuzz", .hmac_sha256 = fz_hmac, .random_bytes = fz_random};
static const uint8_t KEY[] = "fuzz-shared-key-0123456789";
static const uint8_t OTHER[] = "fuzz-shared-key-0123456789!";

/* What the checking side should answer: recomputed from the definitions
 * (block layout per role, lr_auth_mac over the nonce pair), not through
 * lr_auth_verify. ctx is a copy; a host's nonce is taken from the block. */
static int expected(lr_auth_ctx_t ctx, lr_role_t sender, uint16_t type, const uint8_t *fields,
                    size_t flen, const lr_auth_t *in) {
  uint8_t mac[LR_MAC_LEN];
  const uint8_t *got;
  if (ctx.key_len == 0) return 0;
  if (sender == LR_ROLE_HOST) {
    if (in->len != LR_AUTH_HOST_LEN) return 0;
    memcpy(ctx.host_nonce, in->data, LR_NONCE_LEN);
    got = in->data + LR_NONCE_LEN;
  } else {
    if (in->len != LR_AUTH_AGENT_LEN) return 0;
    got = in->data;
  }
  FZ_CHECK(lr_auth_mac(&ctx, sender, type, fields, flen, mac) == 0);
  return memcmp(mac, got, LR_MAC_LEN) == 0;
}

static uint8_t g_enc[LR_FRAME_HDR_LEN + LR_FRAME_MAX_PAYLOAD];

/* The checking side under another key, and without one. */
static lr_auth_ctx_t other_key(const lr_auth_ctx_t *c) {
  lr_auth_ctx_t o = *c;
  o.key = OTHER;
  o.key_len = sizeof OTHER - 1;
  return o;
}
static lr_auth_ctx_t no_key(const lr_auth_ctx_t *c) {
  lr_auth_ctx_t o = *c;
  o.key = NULL;
  o.key_len = 0;
  return o;
}

/* The byte the input wants changed next (0 when it has run out). */
typedef struct {
  const uint8_t *p;
  size_t n, i;
} picker_t;
static size_t pick(picker_t *k, size_t range) {
  size_t v = k->i < k->n ? k->p[k->i++] : 0;
  return range ? v % range : 0;
}

/* A HELLO the host signs honestly must verify at the agent, and stop
 * verifying when one byte of the block or the name changes. */
static void honest_hello(const lr_auth_ctx_t *host, const lr_auth_ctx_t *agent,
                         const lr_hello_t *req, picker_t *k) {
  static lr_hello_t m, d;
  lr_auth_ctx_t a;
  m = *req;
  FZ_CHECK(lr_auth_sign_hello(host, LR_ROLE_HOST, LR_MSG_HELLO, &m) == 0);
  FZ_CHECK(m.auth.len == LR_AUTH_HOST_LEN);
  size_t n = lr_encode_hello(g_enc, sizeof g_enc, LR_MSG_HELLO, &m);
  FZ_CHECK(n > 0);
  lr_frame_t f;
  size_t used;
  FZ_CHECK(lr_frame_decode(g_enc, n, &f, &used) == LR_PROTO_OK && used == n);
  FZ_CHECK(lr_decode_hello(&f, &d) == LR_PROTO_OK);
  a = *agent;
  FZ_CHECK(lr_auth_verify_hello(&a, LR_ROLE_HOST, LR_MSG_HELLO, &d) == 1);
  FZ_CHECK(memcmp(a.host_nonce, host->host_nonce, LR_NONCE_LEN) == 0);
  /* The same block as the agent's WELCOME, or on another kind of stream. */
  a = *agent;
  FZ_CHECK(lr_auth_verify_hello(&a, LR_ROLE_HOST, LR_MSG_WELCOME, &d) == 0);
  a = *agent;
  a.kind = (uint8_t)(a.kind % 3 + 1);
  FZ_CHECK(lr_auth_verify_hello(&a, LR_ROLE_HOST, LR_MSG_HELLO, &d) == 0);
  a = other_key(agent);
  FZ_CHECK(lr_auth_verify_hello(&a, LR_ROLE_HOST, LR_MSG_HELLO, &d) == 0);
  a = no_key(agent);
  FZ_CHECK(lr_auth_verify_hello(&a, LR_ROLE_HOST, LR_MSG_HELLO, &d) == 0);
  /* One byte changed. */
  size_t at = pick(k, (size_t)d.auth.len + strlen(d.name) + 1);
  uint8_t x = (uint8_t)(pick(k, 255) + 1);
  if (at < d.auth.len) {
    d.auth.data[at] ^= x;
  } else if (at - d.auth.len < strlen(d.name)) {
    char *c = &d.name[at - d.auth.len];
    char nc = (char)(*c ^ (char)x);
    *c = nc ? nc : (*c == 1 ? 2 : 1); /* changed, and still a string */
  } else {
    d.auth.len--; /* one byte short */
  }
  a = *agent;
  FZ_CHECK(lr_auth_verify_hello(&a, LR_ROLE_HOST, LR_MSG_HELLO, &d) == 0);
}

static void honest_open(const lr_auth_ctx_t *host, const lr_auth_ctx_t *agent,
                        const lr_open_t *req, picker_t *k) {
  lr_open_t m = *req, d;
  lr_auth_ctx_t a;
  FZ_CHECK(lr_auth_sign_open(host, &m) == 0);
  size_t n = lr_encode_open(g_enc, sizeof g_enc, &m);
  FZ_CHECK(n > 0);
  lr_frame_t f;
  size_t used;
  FZ_CHECK(lr_frame_decode(g_enc, n, &f, &used) == LR_PROTO_OK);
  FZ_CHECK(lr_decode_open(&f, &d) == LR_PROTO_OK);
  a = *agent;
  FZ_CHECK(lr_auth_verify_open(&a, &d) == 1);
  a = other_key(agent);
  FZ_CHECK(lr_auth_verify_open(&a, &d) == 0);
  a = *agent;
  a.kind = (uint8_t)(a.kind % 3 + 1);
  FZ_CHECK(lr_auth_verify_open(&a, &d) == 0);
  size_t at = pick(k, LR_AUTH_HOST_LEN + 3);
  if (at < LR_AUTH_HOST_LEN) {
    d.auth.data[at] ^= (uint8_t)(pick(k, 255) + 1);
  } else if (at == LR_AUTH_HOST_LEN) {
    d.family = d.family == 4 ? 6 : 4;
  } else if (at == LR_AUTH_HOST_LEN + 2) {
    d.flags ^= LR_OPEN_UDP; /* TCP passed off as UDP, or the other way */
  } else {
    d.port = (uint16_t)(d.port == 1 ? 2 : d.port - 1);
  }
  a = *agent;
  FZ_CHECK(lr_auth_verify_open(&a, &d) == 0);
}

static void honest_attach(const lr_auth_ctx_t *host, const lr_auth_ctx_t *agent,
                          const lr_attach_t *req, picker_t *k) {
  lr_attach_t m = *req, d;
  lr_auth_ctx_t a;
  FZ_CHECK(lr_auth_sign_attach(host, &m) == 0);
  size_t n = lr_encode_attach(g_enc, sizeof g_enc, &m);
  FZ_CHECK(n > 0);
  lr_frame_t f;
  size_t used;
  FZ_CHECK(lr_frame_decode(g_enc, n, &f, &used) == LR_PROTO_OK);
  FZ_CHECK(lr_decode_attach(&f, &d) == LR_PROTO_OK);
  a = *agent;
  FZ_CHECK(lr_auth_verify_attach(&a, &d) == 1);
  a = other_key(agent);
  FZ_CHECK(lr_auth_verify_attach(&a, &d) == 0);
  a = no_key(agent);
  FZ_CHECK(lr_auth_verify_attach(&a, &d) == 0);
  size_t at = pick(k, LR_AUTH_HOST_LEN + 1);
  if (at < LR_AUTH_HOST_LEN)
    d.auth.data[at] ^= (uint8_t)(pick(k, 255) + 1);
  else
    d.id ^= 1u << pick(k, 32);
  a = *agent;
  FZ_CHECK(lr_auth_verify_attach(&a, &d) == 0);
}

/* The agent's answers: WELCOME and OPEN_RESULT, signed honestly, checked by
 * the host; a refusal's status differs from the one signed. */
static void honest_answers(const lr_auth_ctx_t *host, const lr_auth_ctx_t *agent,
                           const lr_hello_t *req, uint32_t status, picker_t *k) {
  static lr_hello_t m, d;
  lr_auth_ctx_t h;
  m = *req;
  FZ_CHECK(lr_auth_sign_hello(agent, LR_ROLE_AGENT, LR_MSG_WELCOME, &m) == 0);
  FZ_CHECK(m.auth.len == LR_AUTH_AGENT_LEN);
  size_t n = lr_encode_hello(g_enc, sizeof g_enc, LR_MSG_WELCOME, &m);
  FZ_CHECK(n > 0);
  lr_frame_t f;
  size_t used;
  FZ_CHECK(lr_frame_decode(g_enc, n, &f, &used) == LR_PROTO_OK);
  FZ_CHECK(lr_decode_hello(&f, &d) == LR_PROTO_OK);
  h = *host;
  FZ_CHECK(lr_auth_verify_hello(&h, LR_ROLE_AGENT, LR_MSG_WELCOME, &d) == 1);
  h = *host;
  FZ_CHECK(lr_auth_verify_hello(&h, LR_ROLE_AGENT, LR_MSG_HELLO, &d) == 0);
  h = other_key(host);
  FZ_CHECK(lr_auth_verify_hello(&h, LR_ROLE_AGENT, LR_MSG_WELCOME, &d) == 0);
  /* The agent's MAC passed off as the host's (role), and its WELCOME's
   * block as an OPEN_RESULT's (type). */
  h = *host;
  FZ_CHECK(lr_auth_verify_hello(&h, LR_ROLE_HOST, LR_MSG_WELCOME, &d) == 0);

  lr_auth_t auth, dauth;
  lr_error_msg_t e;
  FZ_CHECK(lr_auth_sign_result(agent, status, &auth) == 0);
  n = lr_encode_open_result(g_enc, sizeof g_enc, status, "", &auth);
  FZ_CHECK(n > 0);
  FZ_CHECK(lr_frame_decode(g_enc, n, &f, &used) == LR_PROTO_OK);
  FZ_CHECK(lr_decode_open_result(&f, &e, &dauth) == LR_PROTO_OK && e.code == status);
  h = *host;
  FZ_CHECK(lr_auth_verify_result(&h, e.code, &dauth) == 1);
  h = other_key(host);
  FZ_CHECK(lr_auth_verify_result(&h, e.code, &dauth) == 0);
  h = no_key(host);
  FZ_CHECK(lr_auth_verify_result(&h, e.code, &dauth) == 0);
  h = *host;
  FZ_CHECK(lr_auth_verify_result(&h, e.code ^ (1u << pick(k, 32)), &dauth) == 0);
  dauth.data[pick(k, LR_AUTH_AGENT_LEN)] ^= (uint8_t)(pick(k, 255) + 1);
  h = *host;
  FZ_CHECK(lr_auth_verify_result(&h, e.code, &dauth) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t kind = (uint8_t)(data[0] % 3 + 1);
  int keymode = (data[0] / 3) % 3; /* 0 same key, 1 another key, 2 none */
  uint8_t *buf = fz_dup(data + 1, size - 1);
  size_t n = size - 1;
  picker_t k = {buf, n, 0};
  g_counter = 0;

  /* The two ends of one stream, as after the CHALLENGE: the agent's nonce
   * is known to both, the host has drawn its own. The checker (the agent
   * for requests, the host for answers) holds the key keymode says. */
  lr_auth_ctx_t host, agent, check_agent, check_host;
  lr_auth_init(&agent, &g_pal, KEY, sizeof KEY - 1, kind);
  FZ_CHECK(lr_auth_new_nonce(&agent, LR_ROLE_AGENT) == 0);
  lr_auth_init(&host, &g_pal, KEY, sizeof KEY - 1, kind);
  memcpy(host.agent_nonce, agent.agent_nonce, LR_NONCE_LEN);
  FZ_CHECK(lr_auth_new_nonce(&host, LR_ROLE_HOST) == 0);
  memcpy(agent.host_nonce, host.host_nonce, LR_NONCE_LEN);
  check_agent = agent;
  check_host = host;
  if (keymode == 1) {
    check_agent.key = check_host.key = OTHER;
    check_agent.key_len = check_host.key_len = sizeof OTHER - 1;
  } else if (keymode == 2) {
    check_agent.key = check_host.key = NULL;
    check_agent.key_len = check_host.key_len = 0;
  }

  size_t off = 0;
  int honest_done = 0;
  while (off < n) {
    lr_frame_t f;
    size_t used = 0;
    if (lr_frame_decode(buf + off, n - off, &f, &used) != LR_PROTO_OK) break;
    off += used;
    uint8_t fields[LR_AUTH_FIELDS_MAX];
    size_t flen;
    lr_auth_ctx_t a;
    int got;

    /* CHALLENGE: the host's idea of the agent's nonce is what it says. */
    uint8_t nonce[LR_NONCE_LEN];
    if (f.type == LR_MSG_CHALLENGE && lr_decode_challenge(&f, nonce) == LR_PROTO_OK) {
      memcpy(check_host.agent_nonce, nonce, LR_NONCE_LEN);
      FZ_CHECK(memcmp(nonce, f.payload, LR_NONCE_LEN) == 0);
    }

    static lr_hello_t hello;
    if (lr_decode_hello(&f, &hello) == LR_PROTO_OK) {
      flen = lr_auth_fields_hello(fields, sizeof fields, &hello);
      FZ_CHECK(flen == 2 + strlen(hello.name) + strlen(hello.version));
      /* As a HELLO at the agent, and as a WELCOME at the host. */
      a = check_agent;
      got = lr_auth_verify_hello(&a, LR_ROLE_HOST, LR_MSG_HELLO, &hello);
      FZ_CHECK(got == expected(check_agent, LR_ROLE_HOST, LR_MSG_HELLO, fields, flen,
                               &hello.auth));
      if (hello.auth.len == LR_AUTH_HOST_LEN)
        FZ_CHECK(memcmp(a.host_nonce, hello.auth.data, LR_NONCE_LEN) == 0);
      a = check_host;
      got = lr_auth_verify_hello(&a, LR_ROLE_AGENT, LR_MSG_WELCOME, &hello);
      FZ_CHECK(got == expected(check_host, LR_ROLE_AGENT, LR_MSG_WELCOME, fields, flen,
                               &hello.auth));
      if (!honest_done) {
        honest_hello(&host, &agent, &hello, &k);
        honest_answers(&host, &agent, &hello, 0, &k);
        honest_done = 1;
      }
    }

    lr_open_t open;
    if (lr_decode_open(&f, &open) == LR_PROTO_OK) {
      flen = lr_auth_fields_open(fields, sizeof fields, &open);
      FZ_CHECK(flen == ((open.flags & LR_OPEN_UDP) ? 4u : 3u)); /* + flags for UDP */
      a = check_agent;
      got = lr_auth_verify_open(&a, &open);
      FZ_CHECK(got == expected(check_agent, LR_ROLE_HOST, LR_MSG_OPEN, fields, flen, &open.auth));
      honest_open(&host, &agent, &open, &k);
    }

    lr_attach_t at;
    if (lr_decode_attach(&f, &at) == LR_PROTO_OK) {
      flen = lr_auth_fields_attach(fields, sizeof fields, &at);
      FZ_CHECK(flen == 4);
      a = check_agent;
      got = lr_auth_verify_attach(&a, &at);
      FZ_CHECK(got == expected(check_agent, LR_ROLE_HOST, LR_MSG_ATTACH, fields, flen, &at.auth));
      honest_attach(&host, &agent, &at, &k);
    }

    lr_error_msg_t e;
    lr_auth_t auth;
    if (lr_decode_open_result(&f, &e, &auth) == LR_PROTO_OK) {
      flen = lr_auth_fields_result(fields, sizeof fields, e.code);
      FZ_CHECK(flen == 4);
      a = check_host;
      got = lr_auth_verify_result(&a, e.code, &auth);
      FZ_CHECK(got == expected(check_host, LR_ROLE_AGENT, LR_MSG_OPEN_RESULT, fields, flen, &auth));
      if (!honest_done) {
        static const lr_hello_t plain = {.name = "host", .version = "0"};
        honest_answers(&host, &agent, &plain, e.code, &k);
        honest_done = 1;
      }
    }
  }
  free(buf);
  return 0;
}
