/* The guest's platform layer: the lr_pal_t members the agent uses (the
 * relays' peer-closed probe, a raw close, the handshake's HMAC-SHA256 and
 * nonces), all from the Linux calls it shares with the host
 * (platform/linux). The guest makes no VM-socket connects and opens no
 * stand-ins, so those members stay NULL. guest/ never reaches into host/. */
#include "lr_guest_pal.h"

#include "lr_linux.h"

const lr_pal_t lr_guest_pal = {
    .name = "guest",
    .sock_close = lr_linux_sock_close,
    .peer_closed = lr_linux_peer_closed,
    .fds_exhausted = lr_linux_fds_exhausted,
    .hmac_sha256 = lr_linux_hmac_sha256,
    .random_bytes = lr_linux_random_bytes,
    .zc_pipe_open = lr_linux_zc_pipe_open,
    .zc_pipe_close = lr_linux_zc_pipe_close,
    .zc_move = lr_linux_zc_move,
    .zc_shutdown_write = lr_linux_zc_shutdown_write,
};
