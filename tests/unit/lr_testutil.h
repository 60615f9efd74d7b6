/* Helpers shared by the unit tests: building listeners by hand. */
#ifndef LR_TESTUTIL_H
#define LR_TESTUTIL_H

#include <stdint.h>
#include <string.h>

#include "lr_proto.h"

static inline lr_listener_t lr_test_v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port) {
  lr_listener_t l;
  memset(&l, 0, sizeof l);
  l.family = 4;
  l.port = port;
  l.addr[0] = a;
  l.addr[1] = b;
  l.addr[2] = c;
  l.addr[3] = d;
  return l;
}

#endif
