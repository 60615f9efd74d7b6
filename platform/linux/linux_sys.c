/* The Linux calls host and guest share; see lr_linux.h. */
#define _GNU_SOURCE
#include "lr_linux.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

int lr_linux_peer_closed(const lr_endpoint_t *ep) {
  uv_os_fd_t fd;
  if (uv_fileno(&ep->u.handle, &fd) != 0) return 0;
  struct pollfd p = {.fd = fd, .events = POLLRDHUP};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLHUP) != 0;
}

void lr_linux_sock_close(uv_os_sock_t s) { close(s); }

/* A passed socket of the wanted kind (SOCK_STREAM/IPPROTO_TCP or
 * SOCK_DGRAM/IPPROTO_UDP), IPv4 or IPv6, connected; then a duplicate. */
static int adopt_passed(uv_os_sock_t s, int want_type, int want_proto, const char *what,
                        uv_os_sock_t *out, char *err, size_t errlen) {
  int type = 0, proto = 0, domain = 0;
  socklen_t l1 = sizeof type, l2 = sizeof proto, l3 = sizeof domain;
  struct sockaddr_storage peer;
  socklen_t plen = sizeof peer;
  if (getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &l1) != 0 ||
      getsockopt(s, SOL_SOCKET, SO_PROTOCOL, &proto, &l2) != 0 ||
      getsockopt(s, SOL_SOCKET, SO_DOMAIN, &domain, &l3) != 0) {
    snprintf(err, errlen, "the passed descriptor is not a socket (%s)", strerror(errno));
    return -1;
  }
  if (type != want_type || proto != want_proto || (domain != AF_INET && domain != AF_INET6)) {
    snprintf(err, errlen, "the passed socket is not a %s (domain %d, type %d, protocol %d)",
             what, domain, type, proto);
    return -1;
  }
  if (getpeername(s, (struct sockaddr *)&peer, &plen) != 0) {
    snprintf(err, errlen, "the passed %s is not connected (%s)", what, strerror(errno));
    return -1;
  }
  int fd = fcntl(s, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "cannot keep the passed socket: %s", strerror(errno));
    return -1;
  }
  *out = fd;
  return 0;
}

int lr_linux_adopt_passed_socket(uv_os_sock_t s, uv_os_sock_t *out, char *err, size_t errlen) {
  return adopt_passed(s, SOCK_STREAM, IPPROTO_TCP, "TCP stream", out, err, errlen);
}

int lr_linux_adopt_passed_udp(uv_os_sock_t s, uv_os_sock_t *out, char *err, size_t errlen) {
  return adopt_passed(s, SOCK_DGRAM, IPPROTO_UDP, "UDP socket", out, err, errlen);
}

int lr_linux_fds_exhausted(uv_loop_t *loop) {
  int fd = fcntl(uv_backend_fd(loop), F_DUPFD_CLOEXEC, 0);
  if (fd >= 0) {
    close(fd);
    return 0;
  }
  return errno == EMFILE || errno == ENFILE;
}

int lr_linux_hmac_sha256(const uint8_t *key, size_t klen, const uint8_t *msg, size_t mlen,
                         uint8_t out[32]) {
  unsigned int n = 0;
  if (klen > INT_MAX) return -1;
  if (!HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &n) || n != 32) return -1;
  return 0;
}

/* Blocks only until the kernel's CSPRNG is first seeded at boot. */
int lr_linux_random_bytes(uint8_t *buf, size_t n) {
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

unsigned long lr_linux_raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) getrlimit(RLIMIT_NOFILE, &rl);
  }
  return (unsigned long)rl.rlim_cur;
}
