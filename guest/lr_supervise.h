/* Restart policy of lorelay-init: exponential backoff that forgives.
 *
 * A crashing agent is restarted after 100 ms, then 200, 400 ... up to 5 s,
 * so a crash loop costs little CPU; an agent that ran for 10 s or more was
 * healthy, so its next restart is fast again. Pure, so it is unit-tested. */
#ifndef LR_SUPERVISE_H
#define LR_SUPERVISE_H

#include <stdint.h>

#define LR_BACKOFF_MIN_MS 100u
#define LR_BACKOFF_MAX_MS 5000u
#define LR_BACKOFF_RESET_MS 10000u

typedef struct {
  unsigned next_ms;
} lr_backoff_t;

void lr_backoff_init(lr_backoff_t *b);
/* The agent exited after running ran_ms: returns the delay before the next
 * start and advances the backoff. */
unsigned lr_backoff_next(lr_backoff_t *b, uint64_t ran_ms);

#endif
