/* The token file reader both sides use; see lr_token.h. */
#include "lr_token.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int lr_token_load_file(const char *path, uint8_t *tok, size_t *len, char *err, size_t errlen) {
  uint8_t buf[LR_TOKEN_MAX + 64];
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "token file %s: %s", path, strerror(errno));
    return -1;
  }
  size_t n = fread(buf, 1, sizeof buf, f);
  int too_long = n == sizeof buf || (n > 0 && !feof(f) && fgetc(f) != EOF);
  fclose(f);
  size_t a = 0, b = n;
  while (a < b && (buf[a] == ' ' || buf[a] == '\t' || buf[a] == '\r' || buf[a] == '\n')) a++;
  while (b > a && (buf[b - 1] == ' ' || buf[b - 1] == '\t' || buf[b - 1] == '\r' ||
                   buf[b - 1] == '\n'))
    b--;
  if (too_long || b - a > LR_TOKEN_MAX) {
    snprintf(err, errlen, "token file %s: token longer than %d bytes", path, LR_TOKEN_MAX);
    return -1;
  }
  if (b == a) {
    snprintf(err, errlen, "token file %s is empty", path);
    return -1;
  }
  if (b - a < LR_KEY_MIN) {
    snprintf(err, errlen,
             "token file %s: the key is %zu bytes, at least %d are required "
             "(make one with: head -c 32 /dev/urandom | base64 > %s)",
             path, b - a, LR_KEY_MIN, path);
    return -1;
  }
  memcpy(tok, buf + a, b - a);
  *len = b - a;
  return 0;
}
