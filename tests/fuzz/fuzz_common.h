/* Helpers shared by the libFuzzer targets in tests/fuzz.
 *
 * FZ_CHECK aborts with the failed condition: libFuzzer records the input
 * that got there as a crash, so a broken invariant is reported exactly like
 * an out-of-bounds read. */
#ifndef LR_FUZZ_COMMON_H
#define LR_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "lr_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_CHECK(cond)                                                              \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);  \
      abort();                                                                      \
    }                                                                               \
  } while (0)

/* A heap copy of exactly n bytes (at least one allocated), so that ASan
 * catches a read one past the input; the fuzzer's own buffer may be larger. */
uint8_t *fz_dup(const uint8_t *data, size_t n);
/* The same as a NUL-terminated string (embedded NULs end it early). */
char *fz_strdup(const uint8_t *data, size_t n);

/* Runs f through every lr_decode_* whatever its type (a type confusion in a
 * caller must be as harmless as a garbled payload). Whatever decodes is
 * re-encoded and must give back the same value, and the encoded payload
 * must be a prefix of f's (decoders read fields in order and ignore a
 * longer payload, encoders write the same fields in the same order; an
 * OPEN_RESULT without its auth block re-encodes with an empty one, one 0
 * byte more): any asymmetry between an encoder and its decoder aborts. */
void fz_decode_all(const lr_frame_t *f);

#endif
