/* A growable string buffer for building status output and messages.
 * Allocation failure is sticky (err set, further appends ignored) so callers
 * can build a whole document and check once. */
#ifndef LR_SBUF_H
#define LR_SBUF_H

#include <stddef.h>
#include "lr_log.h"

typedef struct {
  char *p;
  size_t len, cap;
  int err;
} lr_sbuf_t;

void lr_sbuf_init(lr_sbuf_t *b);
void lr_sbuf_free(lr_sbuf_t *b);
void lr_sbuf_append(lr_sbuf_t *b, const char *s, size_t n);
void lr_sbuf_puts(lr_sbuf_t *b, const char *s);
void lr_sbuf_printf(lr_sbuf_t *b, const char *fmt, ...) LR_PRINTF(2, 3);

/* ASCII case-insensitive equality (config words, log levels, names). */
int lr_streq_nocase(const char *a, const char *b);

#endif
