/* The guest's platform layer: the lr_pal_t members the agent uses (the
 * relays' peer-closed probe, a raw close, and the handshake's HMAC-SHA256
 * from OpenSSL's libcrypto and nonces from getrandom). The guest makes no
 * VM-socket connects and opens no stand-ins, so those members stay NULL.
 * It is the guest's own, not the Linux host's: guest/ never reaches into
 * host/. */
#define _GNU_SOURCE
#include "lr_guest_pal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

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

static int guest_hmac_sha256(const uint8_t *key, size_t klen, const uint8_t *msg, size_t mlen,
                             uint8_t out[32]) {
  unsigned int n = 0;
  if (klen > INT_MAX) return -1;
  if (!HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &n) || n != 32) return -1;
  return 0;
}

/* The kernel's CSPRNG; blocks only until it is first seeded at boot. */
static int guest_random_bytes(uint8_t *buf, size_t n) {
  while (n) {
    ssize_t r = getrandom(buf, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += r;
    n -= (size_t)r;
  }
  return 0;
}

const lr_pal_t lr_guest_pal = {
    .name = "guest",
    .sock_close = guest_sock_close,
    .peer_closed = guest_peer_closed,
    .hmac_sha256 = guest_hmac_sha256,
    .random_bytes = guest_random_bytes,
};
