/* Backoff for lorelay-init's agent restarts (see lr_supervise.h). */
#include "lr_supervise.h"

void lr_backoff_init(lr_backoff_t *b) { b->next_ms = LR_BACKOFF_MIN_MS; }

unsigned lr_backoff_next(lr_backoff_t *b, uint64_t ran_ms) {
  if (ran_ms >= LR_BACKOFF_RESET_MS || b->next_ms < LR_BACKOFF_MIN_MS)
    b->next_ms = LR_BACKOFF_MIN_MS;
  unsigned delay = b->next_ms;
  b->next_ms = delay >= LR_BACKOFF_MAX_MS / 2 ? LR_BACKOFF_MAX_MS : delay * 2;
  return delay;
}
