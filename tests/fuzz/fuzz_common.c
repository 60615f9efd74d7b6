/* Small helpers every libFuzzer target here links; see fuzz_common.h. */
#include "fuzz_common.h"

#include <string.h>

uint8_t *fz_dup(const uint8_t *data, size_t n) {
  uint8_t *p = malloc(n ? n : 1);
  FZ_CHECK(p != NULL);
  if (n) memcpy(p, data, n);
  return p;
}

char *fz_strdup(const uint8_t *data, size_t n) {
  char *p = malloc(n + 1);
  FZ_CHECK(p != NULL);
  if (n) memcpy(p, data, n);
  p[n] = '\0';
  return p;
}
