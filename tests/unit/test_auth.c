/* Unit tests for lr_auth: what each side signs, and that a MAC made for one
 * stream, message, request or role proves nothing for any other.
 *
 * Portable (Linux and Wine), so the platform's HMAC is replaced by a test
 * double that records what it was asked to MAC and returns a keyed digest
 * (FNV-1a, no cryptographic value: the real HMAC-SHA256 is the platform
 * layer's and is checked against RFC 4231 in test_guest_agent,
 * test_posix_host_core and test_win32_pal). What is tested here is the
 * binding: change any input and the check fails. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "lr_auth.h"
#include "lr_proto.h"

static struct {
  uint8_t key[LR_TOKEN_MAX], msg[LR_AUTH_INPUT_MAX];
  size_t klen, mlen;
  int calls, fail_mac, fail_random;
  uint8_t next_random;
} dbl;

static int dbl_hmac(const uint8_t *key, size_t klen, const uint8_t *msg, size_t mlen,
                    uint8_t out[32]) {
  dbl.calls++;
  if (dbl.fail_mac) return -1;
  assert_true(klen <= sizeof dbl.key && mlen <= sizeof dbl.msg);
  memcpy(dbl.key, key, klen);
  memcpy(dbl.msg, msg, mlen);
  dbl.klen = klen;
  dbl.mlen = mlen;
  for (int lane = 0; lane < 4; lane++) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)lane;
    for (size_t i = 0; i < klen; i++) h = (h ^ key[i]) * 1099511628211ull;
    h = (h ^ 0xFF) * 1099511628211ull;
    for (size_t i = 0; i < mlen; i++) h = (h ^ msg[i]) * 1099511628211ull;
    for (int b = 0; b < 8; b++) out[lane * 8 + b] = (uint8_t)(h >> (8 * b));
  }
  return 0;
}

static int dbl_random(uint8_t *buf, size_t n) {
  if (dbl.fail_random) return -1;
  for (size_t i = 0; i < n; i++) buf[i] = dbl.next_random++;
  return 0;
}

static const lr_pal_t pal = {.name = "double", .hmac_sha256 = dbl_hmac, .random_bytes = dbl_random};
static const uint8_t KEY[] = "0123456789abcdef";
static const uint8_t OTHER[] = "0123456789abcdeF";

static int reset(void **state) {
  (void)state;
  memset(&dbl, 0, sizeof dbl);
  dbl.next_random = 1;
  return 0;
}

/* The two ends of one stream of kind: the agent has challenged, the host
 * has its own nonce. */
static void pair(uint8_t kind, lr_auth_ctx_t *host, lr_auth_ctx_t *agent) {
  lr_auth_init(agent, &pal, KEY, sizeof KEY - 1, kind);
  assert_int_equal(lr_auth_new_nonce(agent, LR_ROLE_AGENT), 0);
  lr_auth_init(host, &pal, KEY, sizeof KEY - 1, kind);
  memcpy(host->agent_nonce, agent->agent_nonce, LR_NONCE_LEN); /* CHALLENGE */
  assert_int_equal(lr_auth_new_nonce(host, LR_ROLE_HOST), 0);
}

static void test_key_check(void **state) {
  (void)state;
  char err[200];
  lr_pal_t bare = {.name = "bare"};
  assert_int_equal(lr_auth_key_check(&pal, 0, err, sizeof err), 0);
  assert_int_equal(lr_auth_key_check(&bare, 0, err, sizeof err), 0); /* no key, no need */
  assert_int_equal(lr_auth_key_check(&pal, LR_KEY_MIN, err, sizeof err), 0);
  assert_int_equal(lr_auth_key_check(&pal, LR_TOKEN_MAX, err, sizeof err), 0);
  assert_int_equal(lr_auth_key_check(&pal, LR_KEY_MIN - 1, err, sizeof err), -1);
  assert_non_null(strstr(err, "at least 16"));
  assert_int_equal(lr_auth_key_check(&pal, 1, err, sizeof err), -1);
  assert_int_equal(lr_auth_key_check(&pal, LR_TOKEN_MAX + 1, err, sizeof err), -1);
  assert_int_equal(lr_auth_key_check(&bare, LR_KEY_MIN, err, sizeof err), -1);
  assert_non_null(strstr(err, "HMAC"));
  /* tried once: a primitive that fails is a start-up error */
  dbl.fail_mac = 1;
  assert_int_equal(lr_auth_key_check(&pal, LR_KEY_MIN, err, sizeof err), -1);
  dbl.fail_mac = 0;
  dbl.fail_random = 1;
  assert_int_equal(lr_auth_key_check(&pal, LR_KEY_MIN, err, sizeof err), -1);
  assert_non_null(strstr(err, "random"));
}

/* A good exchange on each kind of stream, and what was MACed with what. */
static void test_roundtrips(void **state) {
  (void)state;
  lr_auth_ctx_t h, a;
  pair(LR_STREAM_CONTROL, &h, &a);
  lr_hello_t hello;
  memset(&hello, 0, sizeof hello);
  strcpy(hello.name, "host");
  strcpy(hello.version, "1.0");
  assert_int_equal(lr_auth_sign_hello(&h, LR_ROLE_HOST, LR_MSG_HELLO, &hello), 0);
  assert_int_equal(hello.auth.len, LR_AUTH_HOST_LEN);
  assert_memory_equal(hello.auth.data, h.host_nonce, LR_NONCE_LEN); /* the nonce travels */
  /* exactly lr_auth_input over the key */
  uint8_t want[LR_AUTH_INPUT_MAX], fields[LR_AUTH_FIELDS_MAX];
  size_t fl = lr_auth_fields_hello(fields, sizeof fields, &hello);
  size_t wl = lr_auth_input(want, sizeof want, LR_ROLE_HOST, LR_STREAM_CONTROL, LR_MSG_HELLO,
                            h.agent_nonce, h.host_nonce, fields, fl);
  assert_int_equal(dbl.mlen, wl);
  assert_memory_equal(dbl.msg, want, wl);
  assert_int_equal(dbl.klen, sizeof KEY - 1);
  assert_memory_equal(dbl.key, KEY, sizeof KEY - 1);

  assert_true(lr_auth_verify_hello(&a, LR_ROLE_HOST, LR_MSG_HELLO, &hello));
  assert_memory_equal(a.host_nonce, h.host_nonce, LR_NONCE_LEN);
  lr_hello_t w;
  memset(&w, 0, sizeof w);
  strcpy(w.name, "guest");
  assert_int_equal(lr_auth_sign_hello(&a, LR_ROLE_AGENT, LR_MSG_WELCOME, &w), 0);
  assert_int_equal(w.auth.len, LR_AUTH_AGENT_LEN);
  assert_true(lr_auth_verify_hello(&h, LR_ROLE_AGENT, LR_MSG_WELCOME, &w));

  pair(LR_STREAM_DATA, &h, &a);
  lr_open_t o = {.family = 4, .port = 8080};
  assert_int_equal(lr_auth_sign_open(&h, &o), 0);
  assert_true(lr_auth_verify_open(&a, &o));
  lr_auth_t r;
  assert_int_equal(lr_auth_sign_result(&a, LR_OK, &r), 0);
  assert_true(lr_auth_verify_result(&h, LR_OK, &r));

  pair(LR_STREAM_REVERSE, &h, &a);
  lr_attach_t at = {.id = 77};
  assert_int_equal(lr_auth_sign_attach(&h, &at), 0);
  assert_true(lr_auth_verify_attach(&a, &at));
  assert_int_equal(lr_auth_sign_result(&a, LR_OK, &r), 0);
  assert_true(lr_auth_verify_result(&h, LR_OK, &r));
}

/* Any change to what a MAC binds makes it worthless. */
static void test_binding(void **state) {
  (void)state;
  lr_auth_ctx_t h, a, x;
  pair(LR_STREAM_DATA, &h, &a);
  lr_open_t o = {.family = 4, .port = 8080}, m;
  assert_int_equal(lr_auth_sign_open(&h, &o), 0);

  m = o; /* another port */
  m.port = 8081;
  x = a;
  assert_false(lr_auth_verify_open(&x, &m));
  m = o; /* another family */
  m.family = 6;
  x = a;
  assert_false(lr_auth_verify_open(&x, &m));
  x = a; /* another stream kind */
  x.kind = LR_STREAM_REVERSE;
  assert_false(lr_auth_verify_open(&x, &o));
  x = a; /* another stream: the agent's nonce differs (a replay) */
  x.agent_nonce[5] ^= 1;
  assert_false(lr_auth_verify_open(&x, &o));
  m = o; /* the host's nonce altered on the way */
  m.auth.data[0] ^= 1;
  x = a;
  assert_false(lr_auth_verify_open(&x, &m));
  m = o; /* the MAC altered */
  m.auth.data[LR_AUTH_HOST_LEN - 1] ^= 0x80;
  x = a;
  assert_false(lr_auth_verify_open(&x, &m));
  x = a; /* another key */
  x.key = OTHER;
  assert_false(lr_auth_verify_open(&x, &o));
  /* an OPEN's MAC presented as an ATTACH's (same bytes, other message) */
  lr_attach_t at = {.id = 0x04081F90};
  at.auth = o.auth;
  x = a;
  assert_false(lr_auth_verify_attach(&x, &at));
  /* wrong lengths: none, a MAC without the nonce, one byte more */
  for (int len = 0; len <= LR_AUTH_MAX; len += len == LR_AUTH_HOST_LEN - 1 ? 2 : 31) {
    if (len == LR_AUTH_HOST_LEN) continue;
    m = o;
    m.auth.len = (uint8_t)len;
    x = a;
    assert_false(lr_auth_verify_open(&x, &m));
  }
  x = a;
  assert_true(lr_auth_verify_open(&x, &o)); /* and the original still holds */

  /* The agent's answer: bound to its status and to the host's nonce. */
  lr_auth_t r;
  assert_int_equal(lr_auth_sign_result(&x, LR_ERR_REFUSED, &r), 0);
  assert_false(lr_auth_verify_result(&h, LR_OK, &r));
  assert_true(lr_auth_verify_result(&h, LR_ERR_REFUSED, &r));
  assert_int_equal(lr_auth_sign_result(&x, LR_OK, &r), 0);
  lr_auth_ctx_t h2 = h;
  h2.host_nonce[0] ^= 1;
  assert_false(lr_auth_verify_result(&h2, LR_OK, &r));

  /* Roles: the host's MAC is not the agent's. A HELLO reflected back as
   * the WELCOME (its MAC bytes only) does not pass. */
  pair(LR_STREAM_CONTROL, &h, &a);
  lr_hello_t hello;
  memset(&hello, 0, sizeof hello);
  strcpy(hello.name, "n");
  assert_int_equal(lr_auth_sign_hello(&h, LR_ROLE_HOST, LR_MSG_HELLO, &hello), 0);
  lr_hello_t refl = hello;
  refl.auth.len = LR_AUTH_AGENT_LEN;
  memmove(refl.auth.data, hello.auth.data + LR_NONCE_LEN, LR_MAC_LEN);
  assert_false(lr_auth_verify_hello(&h, LR_ROLE_AGENT, LR_MSG_HELLO, &refl));
  assert_false(lr_auth_verify_hello(&h, LR_ROLE_AGENT, LR_MSG_WELCOME, &refl));
  /* the names are bound too */
  x = a;
  lr_hello_t other = hello;
  strcpy(other.name, "m");
  assert_false(lr_auth_verify_hello(&x, LR_ROLE_HOST, LR_MSG_HELLO, &other));
}

/* Failures of the platform's primitives are failures, never a pass. */
static void test_platform_failures(void **state) {
  (void)state;
  lr_auth_ctx_t h, a;
  pair(LR_STREAM_DATA, &h, &a);
  lr_open_t o = {.family = 4, .port = 1};
  assert_int_equal(lr_auth_sign_open(&h, &o), 0);
  dbl.fail_mac = 1;
  assert_false(lr_auth_verify_open(&a, &o));
  lr_auth_t r;
  assert_int_equal(lr_auth_sign_result(&a, LR_OK, &r), -1);
  assert_int_equal(r.len, 0);
  dbl.fail_mac = 0;
  dbl.fail_random = 1;
  assert_int_equal(lr_auth_new_nonce(&h, LR_ROLE_HOST), -1);
  /* no key: nothing can be signed or verified */
  lr_auth_ctx_t none;
  lr_auth_init(&none, &pal, NULL, 0, LR_STREAM_DATA);
  assert_int_equal(lr_auth_sign_open(&none, &o), -1);
  assert_false(lr_auth_verify_open(&none, &o));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_key_check, reset),
      cmocka_unit_test_setup(test_roundtrips, reset),
      cmocka_unit_test_setup(test_binding, reset),
      cmocka_unit_test_setup(test_platform_failures, reset),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
