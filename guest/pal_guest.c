/* The guest's platform layer: the lr_pal_t members the agent's relays use
 * (the peer-closed probe, a raw close). The guest makes no VM-socket
 * connects and opens no stand-ins, so those members stay NULL. It is the
 * guest's own, not the Linux host's: guest/ never reaches into host/. */
#define _GNU_SOURCE
#include "lr_guest_pal.h"

#include <poll.h>
#include <unistd.h>

/* After EOF on a Unix or vsock stream: POLLHUP means the host closed both
 * directions (a reset, passed on as RST to the guest server); POLLRDHUP
 * alone is a half-close. */
static int guest_peer_closed(const lr_endpoint_t *ep) {
  uv_os_fd_t fd;
  if (uv_fileno(&ep->u.handle, &fd) != 0) return 0;
  struct pollfd p = {.fd = fd, .events = POLLRDHUP};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLHUP) != 0;
}

static void guest_sock_close(uv_os_sock_t s) { close(s); }

const lr_pal_t lr_guest_pal = {
    .name = "guest",
    .sock_close = guest_sock_close,
    .peer_closed = guest_peer_closed,
};
