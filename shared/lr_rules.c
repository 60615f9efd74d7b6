/* The forwarding rules (docs/protocol.md); see lr_rules.h for the table. */
#include "lr_rules.h"

#include <stdio.h>
#include <string.h>

static int is_v4(const uint8_t *a, uint8_t b0, uint8_t b1, uint8_t b2, uint8_t b3) {
  return a[0] == b0 && a[1] == b1 && a[2] == b2 && a[3] == b3;
}

static int is_v6_any(const uint8_t *a) {
  static const uint8_t any[16];
  return memcmp(a, any, 16) == 0;
}

static int is_v6_loopback(const uint8_t *a) {
  static const uint8_t lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  return memcmp(a, lo, 16) == 0;
}

/* The guest port mapped onto host port p by portMap, or -1. A guest port
 * mapped onto itself takes nothing from anyone. */
static int map_target(const lr_config_t *cfg, uint16_t p) {
  if (lr_portmap_has(&cfg->port_map, p)) return -1;
  for (size_t i = 0; i < cfg->port_map.n; i++)
    if (cfg->port_map.m[i].host == p) return cfg->port_map.m[i].guest;
  return -1;
}

lr_rule_result_t lr_rules_map(const lr_listener_t *l, const lr_config_t *cfg,
                              lr_host_bind_t out[2], int *n) {
  lr_host_bind_t want[2];
  int nw = 0;
  uint16_t hp = lr_portmap_host(&cfg->port_map, l->port);
  *n = 0;
  if (l->family == 4) {
    /* Only the two addresses a local client reaches as "localhost": other
     * 127/8 addresses are deliberate choices (127.0.0.53 is a resolver). */
    if (is_v4(l->addr, 0, 0, 0, 0) || is_v4(l->addr, 127, 0, 0, 1))
      want[nw++] = (lr_host_bind_t){4, hp, 0, l->port};
  } else if (l->family == 6) {
    if (is_v6_loopback(l->addr)) {
      want[nw++] = (lr_host_bind_t){6, hp, 0, l->port};
    } else if (is_v6_any(l->addr)) {
      if (!(l->flags & LR_LISTENER_V6ONLY)) want[nw++] = (lr_host_bind_t){4, hp, 0, l->port};
      want[nw++] = (lr_host_bind_t){6, hp, 0, l->port};
    }
  }
  if (nw == 0) return LR_RULE_NOT_LOOPBACK;
  if (l->port == 0 || !lr_portset_contains(&cfg->forward_ports, hp) ||
      lr_portset_contains(&cfg->reverse_ports, hp) || map_target(cfg, l->port) >= 0)
    return LR_RULE_DENIED;
  int udp = (l->flags & LR_LISTENER_UDP) != 0;
  if (!cfg->localhost_forwarding || lr_portset_contains(&cfg->ignore_ports, l->port) ||
      (udp && !cfg->udp))
    return LR_RULE_IGNORED;
  for (int i = 0; i < nw; i++) {
    if (want[i].family == 6 && !cfg->ipv6) continue;
    want[i].udp = (uint8_t)udp;
    out[(*n)++] = want[i];
  }
  return *n ? LR_RULE_FORWARD : LR_RULE_IGNORED;
}

void lr_rules_deny_reason(const lr_listener_t *l, const lr_config_t *cfg, char *out, size_t len) {
  char ps[200];
  uint16_t hp = lr_portmap_host(&cfg->port_map, l->port);
  int target = map_target(cfg, l->port);
  if (l->port == 0) {
    snprintf(out, len, "port 0 would bind a random host port");
  } else if (target >= 0) {
    snprintf(out, len, "host port %u is portMap's target for guest port %d", l->port, target);
  } else if (lr_portset_contains(&cfg->reverse_ports, hp)) {
    snprintf(out, len, "host port %u is published to the guest (reversePorts)", hp);
  } else {
    lr_portset_format(&cfg->forward_ports, ps, sizeof ps);
    if (hp != l->port)
      snprintf(out, len, "host port %u (portMap %u:%u) is outside forwardPorts (%s)", hp,
               l->port, hp, ps);
    else
      snprintf(out, len, "port %u is outside forwardPorts (%s)", l->port, ps);
  }
}
