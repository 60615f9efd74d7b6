/* The forwarding rules: which host loopback sockets stand in for a guest
 * listener. Pure and tiny on purpose: it is the product's contract (the
 * rules table in docs/protocol.md) and is tested exhaustively.
 *
 *   guest 0.0.0.0:P, 127.0.0.1:P   -> host 127.0.0.1:P
 *   guest [::1]:P                  -> host [::1]:P
 *   guest [::]:P dual-stack        -> host 127.0.0.1:P and [::1]:P
 *   guest [::]:P V6ONLY            -> host [::1]:P
 *   anything else (127.0.0.2, 10.x, a v4-mapped address...) -> nothing
 */
#ifndef LR_RULES_H
#define LR_RULES_H

#include "lr_config.h"
#include "lr_proto.h"

typedef struct {
  uint8_t family; /* 4 -> 127.0.0.1, 6 -> ::1 */
  uint16_t port;
} lr_host_bind_t;

typedef enum {
  LR_RULE_FORWARD = 0,      /* out[] holds 1 or 2 bindings */
  LR_RULE_NOT_LOOPBACK = 1, /* a specific non-loopback address: never forwarded */
  LR_RULE_IGNORED = 2,      /* forwardable, but the config says no */
} lr_rule_result_t;

/* Maps a guest listener to host bindings under cfg. *n gets 0..2. */
lr_rule_result_t lr_rules_map(const lr_listener_t *l, const lr_config_t *cfg,
                              lr_host_bind_t out[2], int *n);

#endif
