/* The handshake's key proof; see lr_auth.h. */
#include "lr_auth.h"

#include <stdio.h>
#include <string.h>

int lr_auth_key_check(const lr_pal_t *pal, size_t key_len, char *err, size_t errlen) {
  if (key_len == 0) return 0;
  if (key_len < LR_KEY_MIN) {
    snprintf(err, errlen, "the shared key is %zu bytes; at least %d are required", key_len,
             LR_KEY_MIN);
    return -1;
  }
  if (key_len > LR_TOKEN_MAX) {
    snprintf(err, errlen, "the shared key is longer than %d bytes", LR_TOKEN_MAX);
    return -1;
  }
  if (!pal || !pal->hmac_sha256 || !pal->random_bytes) {
    snprintf(err, errlen, "this build's platform layer (%s) has no HMAC-SHA256: "
             "a shared key cannot be used", pal ? pal->name : "none");
    return -1;
  }
  /* Once at start-up: a library that cannot compute it is a start-up
   * error, not a refusal of every stream later; and its one-time set-up
   * (libcrypto loads its providers) is not paid inside a handshake. */
  uint8_t mac[LR_MAC_LEN], nonce[LR_NONCE_LEN];
  static const uint8_t probe[LR_KEY_MIN] = {0};
  if (pal->hmac_sha256(probe, sizeof probe, probe, sizeof probe, mac) != 0 ||
      pal->random_bytes(nonce, sizeof nonce) != 0) {
    snprintf(err, errlen, "the platform layer (%s) cannot compute HMAC-SHA256 or random bytes",
             pal->name);
    return -1;
  }
  return 0;
}

void lr_auth_init(lr_auth_ctx_t *a, const lr_pal_t *pal, const uint8_t *key, size_t key_len,
                  uint8_t kind) {
  memset(a, 0, sizeof *a);
  a->pal = pal;
  a->key = key;
  a->key_len = key_len;
  a->kind = kind;
}

int lr_auth_new_nonce(lr_auth_ctx_t *a, lr_role_t role) {
  if (!a->pal || !a->pal->random_bytes) return -1;
  return a->pal->random_bytes(role == LR_ROLE_HOST ? a->host_nonce : a->agent_nonce,
                              LR_NONCE_LEN) == 0 ? 0 : -1;
}

int lr_auth_mac(const lr_auth_ctx_t *a, lr_role_t role, uint16_t type, const uint8_t *fields,
                size_t flen, uint8_t mac[LR_MAC_LEN]) {
  uint8_t in[LR_AUTH_INPUT_MAX];
  if (!a->key_len || !a->pal || !a->pal->hmac_sha256) return -1;
  size_t n = lr_auth_input(in, sizeof in, role, a->kind, type, a->agent_nonce, a->host_nonce,
                           fields, flen);
  if (!n) return -1;
  return a->pal->hmac_sha256(a->key, a->key_len, in, n, mac) == 0 ? 0 : -1;
}

int lr_auth_sign(const lr_auth_ctx_t *a, lr_role_t role, uint16_t type, const uint8_t *fields,
                 size_t flen, lr_auth_t *out) {
  uint8_t mac[LR_MAC_LEN];
  out->len = 0;
  if (lr_auth_mac(a, role, type, fields, flen, mac) != 0) return -1;
  if (role == LR_ROLE_HOST) {
    memcpy(out->data, a->host_nonce, LR_NONCE_LEN);
    memcpy(out->data + LR_NONCE_LEN, mac, LR_MAC_LEN);
    out->len = LR_AUTH_HOST_LEN;
  } else {
    memcpy(out->data, mac, LR_MAC_LEN);
    out->len = LR_AUTH_AGENT_LEN;
  }
  return 0;
}

int lr_auth_verify(lr_auth_ctx_t *a, lr_role_t sender, uint16_t type, const uint8_t *fields,
                   size_t flen, const lr_auth_t *in) {
  uint8_t mac[LR_MAC_LEN];
  const uint8_t *got;
  if (sender == LR_ROLE_HOST) {
    if (in->len != LR_AUTH_HOST_LEN) return 0;
    memcpy(a->host_nonce, in->data, LR_NONCE_LEN);
    got = in->data + LR_NONCE_LEN;
  } else {
    if (in->len != LR_AUTH_AGENT_LEN) return 0;
    got = in->data;
  }
  if (lr_auth_mac(a, sender, type, fields, flen, mac) != 0) return 0;
  return lr_token_equal(mac, LR_MAC_LEN, got, LR_MAC_LEN);
}

/* ---- per message ---------------------------------------------------------- */

int lr_auth_sign_hello(const lr_auth_ctx_t *a, lr_role_t role, uint16_t type, lr_hello_t *m) {
  uint8_t f[LR_AUTH_FIELDS_MAX];
  size_t n = lr_auth_fields_hello(f, sizeof f, m);
  return n ? lr_auth_sign(a, role, type, f, n, &m->auth) : -1;
}

int lr_auth_verify_hello(lr_auth_ctx_t *a, lr_role_t sender, uint16_t type, const lr_hello_t *m) {
  uint8_t f[LR_AUTH_FIELDS_MAX];
  size_t n = lr_auth_fields_hello(f, sizeof f, m);
  return n ? lr_auth_verify(a, sender, type, f, n, &m->auth) : 0;
}

int lr_auth_sign_open(const lr_auth_ctx_t *a, lr_open_t *m) {
  uint8_t f[8];
  size_t n = lr_auth_fields_open(f, sizeof f, m);
  return n ? lr_auth_sign(a, LR_ROLE_HOST, LR_MSG_OPEN, f, n, &m->auth) : -1;
}

int lr_auth_verify_open(lr_auth_ctx_t *a, const lr_open_t *m) {
  uint8_t f[8];
  size_t n = lr_auth_fields_open(f, sizeof f, m);
  return n ? lr_auth_verify(a, LR_ROLE_HOST, LR_MSG_OPEN, f, n, &m->auth) : 0;
}

int lr_auth_sign_attach(const lr_auth_ctx_t *a, lr_attach_t *m) {
  uint8_t f[8];
  size_t n = lr_auth_fields_attach(f, sizeof f, m);
  return n ? lr_auth_sign(a, LR_ROLE_HOST, LR_MSG_ATTACH, f, n, &m->auth) : -1;
}

int lr_auth_verify_attach(lr_auth_ctx_t *a, const lr_attach_t *m) {
  uint8_t f[8];
  size_t n = lr_auth_fields_attach(f, sizeof f, m);
  return n ? lr_auth_verify(a, LR_ROLE_HOST, LR_MSG_ATTACH, f, n, &m->auth) : 0;
}

int lr_auth_sign_result(const lr_auth_ctx_t *a, uint32_t status, lr_auth_t *out) {
  uint8_t f[8];
  size_t n = lr_auth_fields_result(f, sizeof f, status);
  return n ? lr_auth_sign(a, LR_ROLE_AGENT, LR_MSG_OPEN_RESULT, f, n, out) : -1;
}

int lr_auth_verify_result(lr_auth_ctx_t *a, uint32_t status, const lr_auth_t *in) {
  uint8_t f[8];
  size_t n = lr_auth_fields_result(f, sizeof f, status);
  return n ? lr_auth_verify(a, LR_ROLE_AGENT, LR_MSG_OPEN_RESULT, f, n, in) : 0;
}
