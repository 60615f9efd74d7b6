/* The token file reader both sides use; see lr_token.h. */
#include "lr_token.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "lr_file.h"

/* A key an attacker could guess: fewer than LR_KEY_MIN_DISTINCT distinct
 * byte values (16 x 'a', 16 NUL bytes, a hex digit run), or one shorter
 * pattern repeated over its whole length. What it was, for the error; NULL
 * when it is fine. */
static const char *weak_key(const uint8_t *k, size_t n, char *why, size_t whylen) {
  unsigned char seen[256] = {0};
  unsigned distinct = 0;
  for (size_t i = 0; i < n; i++)
    if (!seen[k[i]]++) distinct++;
  if (distinct < LR_KEY_MIN_DISTINCT) {
    snprintf(why, whylen, "it has only %u distinct byte values (at least %d are required)",
             distinct, LR_KEY_MIN_DISTINCT);
    return why;
  }
  for (size_t p = 1; p <= n / 2; p++) {
    size_t i = p;
    while (i < n && k[i] == k[i - p]) i++;
    if (i == n) {
      snprintf(why, whylen, "it is one %zu-byte pattern repeated", p);
      return why;
    }
  }
  return NULL;
}

int lr_token_load_file(const char *path, uint8_t *tok, size_t *len, char *err, size_t errlen) {
  char *text = NULL, why[96];
  size_t n = 0;
  uv_stat_t st;
  /* Regular files only, read without blocking and bounded (lr_file.h). */
  int rc = lr_file_read(path, "token file", LR_TOKEN_MAX + 64, &text, &n, &st, err, errlen);
  if (rc == UV_EFBIG) {
    snprintf(err, errlen, "token file %s: token longer than %d bytes", path, LR_TOKEN_MAX);
    return -1;
  }
  if (rc) return -1;
  if (lr_file_secret_check && lr_file_secret_check(path, &st, err, errlen) != 0) {
    free(text);
    return -1;
  }
  const uint8_t *buf = (const uint8_t *)text;
  size_t a = 0, b = n;
  while (a < b && (buf[a] == ' ' || buf[a] == '\t' || buf[a] == '\r' || buf[a] == '\n')) a++;
  while (b > a && (buf[b - 1] == ' ' || buf[b - 1] == '\t' || buf[b - 1] == '\r' ||
                   buf[b - 1] == '\n'))
    b--;
  rc = -1;
  if (b - a > LR_TOKEN_MAX) {
    snprintf(err, errlen, "token file %s: token longer than %d bytes", path, LR_TOKEN_MAX);
  } else if (b == a) {
    snprintf(err, errlen, "token file %s is empty", path);
  } else if (b - a < LR_KEY_MIN) {
    snprintf(err, errlen,
             "token file %s: the key is %zu bytes, at least %d are required "
             "(make one with: (umask 077; head -c 32 /dev/urandom | base64 > %s))",
             path, b - a, LR_KEY_MIN, path);
  } else if (weak_key(buf + a, b - a, why, sizeof why)) {
    snprintf(err, errlen,
             "token file %s: the key is weak: %s (make one with: "
             "(umask 077; head -c 32 /dev/urandom | base64 > %s))",
             path, why, path);
  } else {
    memcpy(tok, buf + a, b - a);
    *len = b - a;
    rc = 0;
  }
  free(text);
  return rc;
}
