/* The forwarding rules: which host loopback sockets stand in for a guest
 * listener. Pure and tiny on purpose: it is the product's contract (the
 * rules table in docs/protocol.md) and is tested exhaustively.
 *
 *   guest 0.0.0.0:P, 127.0.0.1:P   -> host 127.0.0.1:P
 *   guest [::1]:P                  -> host [::1]:P
 *   guest [::]:P dual-stack        -> host 127.0.0.1:P and [::1]:P
 *   guest [::]:P V6ONLY            -> host [::1]:P
 *   anything else (127.0.0.2, 10.x, a v4-mapped address...) -> nothing
 *
 * UDP sockets (LR_LISTENER_UDP) follow the same table and policy onto UDP
 * stand-ins; with udp = false they are IGNORED.
 */
#ifndef LR_RULES_H
#define LR_RULES_H

#include "lr_config.h"
#include "lr_proto.h"

typedef struct {
  uint8_t family; /* 4 -> 127.0.0.1, 6 -> ::1 */
  uint16_t port;  /* the host port (portMap: the mapped one) */
  uint8_t udp;    /* 1: a UDP stand-in (the listener carried LR_LISTENER_UDP) */
  uint16_t guest_port; /* the guest port a connection opens (== port unless mapped) */
} lr_host_bind_t;

typedef enum {
  LR_RULE_FORWARD = 0,      /* out[] holds 1 or 2 bindings */
  LR_RULE_NOT_LOOPBACK = 1, /* a specific non-loopback address: never forwarded */
  LR_RULE_IGNORED = 2,      /* forwardable, but the config says no */
  LR_RULE_DENIED = 3,       /* the host's port policy refuses it (see lr_rules_deny_reason) */
} lr_rule_result_t;

/* Maps a guest listener to host bindings under cfg. *n gets 0..2.
 *
 * portMap (GUEST:HOST) moves a guest port to another host port; the policy
 * below then applies to the host port, and a mapped guest port outside
 * forwardPorts (80, say) is allowed because the admin named it. A guest
 * port that is not mapped but whose host port is some mapping's target is
 * denied (the host port is taken by that mapping).
 *
 * The port policy comes before any binding: the guest is less trusted than
 * the host, so a port it may not claim is DENIED whatever else is true of
 * it: port 0 (the host would bind a random port), a port outside
 * forwardPorts (default 1024-65535: lorelayd runs privileged and would
 * otherwise take the host's own service ports), and a host port listed in
 * reversePorts (the host would relay its own stand-in back into the
 * guest). */
lr_rule_result_t lr_rules_map(const lr_listener_t *l, const lr_config_t *cfg,
                              lr_host_bind_t out[2], int *n);

/* Why a listener is denied, one line, for status and the log. */
void lr_rules_deny_reason(const lr_listener_t *l, const lr_config_t *cfg, char *out, size_t len);

#endif
