/* The guest's platform layer: the lr_pal_t the agent's relays and
 * handshake use (the peer-closed probe, a raw close, HMAC-SHA256, nonces,
 * splice), all from the Linux calls it shares with the host
 * (platform/linux). The host's own half (VM-socket connects, stand-ins)
 * is lr_host_pal_t, which the guest never sees: guest/ never reaches into
 * host/. */
#include "lr_guest_pal.h"

#include "lr_linux.h"

const lr_pal_t lr_guest_pal = {.name = "guest", LR_LINUX_PAL_COMMON};
