/* The handshake's proof that both ends know the shared key (when one is
 * configured), on the control stream and on every data and reverse stream.
 *
 * The agent sends a fresh nonce (CHALLENGE) as soon as it accepts a stream;
 * the host answers with its own nonce and a MAC over both nonces, its role,
 * the stream kind and the request (HELLO, OPEN's family and port, ATTACH's
 * id); the agent checks it and answers with a MAC of its own over the
 * result (WELCOME, OPEN_RESULT's status), which the host checks before it
 * relays a byte. Only nonces and MACs cross the wire, and a MAC captured on
 * one stream is worthless on any other: the other side's nonce differs.
 *
 * What a MAC covers is lr_proto's business (lr_auth_input); HMAC-SHA256 and
 * the nonces come from the platform layer (libcrypto on Linux, BCrypt on
 * Windows). This file ties them together and compares in constant time. It
 * holds no state beyond one stream's lr_auth_ctx_t. */
#ifndef LR_AUTH_H
#define LR_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "lr_pal.h"
#include "lr_proto.h"

typedef struct {
  const lr_pal_t *pal;
  const uint8_t *key; /* borrowed from the guest or agent record, which outlives the stream */
  size_t key_len;     /* 0: no key, no challenge, no MACs */
  uint8_t kind;       /* the stream's kind */
  uint8_t agent_nonce[LR_NONCE_LEN];
  uint8_t host_nonce[LR_NONCE_LEN];
} lr_auth_ctx_t;

/* Whether a key of key_len bytes can be used with pal: 0 (also for no key),
 * or -1 with a one-line reason (shorter than LR_KEY_MIN, longer than
 * LR_TOKEN_MAX, or a platform layer without working HMAC or random bytes:
 * both are tried once). For start-up. */
int lr_auth_key_check(const lr_pal_t *pal, size_t key_len, char *err, size_t errlen);

void lr_auth_init(lr_auth_ctx_t *a, const lr_pal_t *pal, const uint8_t *key, size_t key_len,
                  uint8_t kind);

/* Draws the role's own nonce from the OS CSPRNG. 0 or -1. */
int lr_auth_new_nonce(lr_auth_ctx_t *a, lr_role_t role);

/* The MAC role computes for a message of type carrying fields. 0 or -1. */
int lr_auth_mac(const lr_auth_ctx_t *a, lr_role_t role, uint16_t type, const uint8_t *fields,
                size_t flen, uint8_t mac[LR_MAC_LEN]);

/* Fills out with what role's message carries: the host its nonce and MAC,
 * the agent its MAC. 0 or -1. */
int lr_auth_sign(const lr_auth_ctx_t *a, lr_role_t role, uint16_t type, const uint8_t *fields,
                 size_t flen, lr_auth_t *out);

/* Checks the auth block of a message that sender sent. From a host, its
 * nonce is taken into a->host_nonce first. 1 when it proves the key; 0 for
 * a wrong length, a MAC that differs (compared in constant time) or an HMAC
 * that failed. */
int lr_auth_verify(lr_auth_ctx_t *a, lr_role_t sender, uint16_t type, const uint8_t *fields,
                   size_t flen, const lr_auth_t *in);

/* The same for each message, with its fields (lr_auth_fields_*). type is
 * HELLO or WELCOME for the hello form. */
int lr_auth_sign_hello(const lr_auth_ctx_t *a, lr_role_t role, uint16_t type, lr_hello_t *m);
int lr_auth_verify_hello(lr_auth_ctx_t *a, lr_role_t sender, uint16_t type, const lr_hello_t *m);
int lr_auth_sign_open(const lr_auth_ctx_t *a, lr_open_t *m);
int lr_auth_verify_open(lr_auth_ctx_t *a, const lr_open_t *m);
int lr_auth_sign_attach(const lr_auth_ctx_t *a, lr_attach_t *m);
int lr_auth_verify_attach(lr_auth_ctx_t *a, const lr_attach_t *m);
int lr_auth_sign_result(const lr_auth_ctx_t *a, uint32_t status, lr_auth_t *out);
int lr_auth_verify_result(lr_auth_ctx_t *a, uint32_t status, const lr_auth_t *in);

#endif
