/* The Linux calls host and guest share; see lr_linux.h. */
#define _GNU_SOURCE
#include "lr_linux.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/stat.h>
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

long lr_linux_zc_pipe_open(uv_os_fd_t fds[2], size_t want) {
  int p[2];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return -errno;
  /* A pipe defaults to 64 KiB; a larger one means fewer splices per byte.
   * Refused past pipe-max-size or the user's pipe quota: keep the default. */
  long cap = fcntl(p[1], F_SETPIPE_SZ, (int)want);
  if (cap < 0) cap = fcntl(p[1], F_GETPIPE_SZ);
  if (cap <= 0) cap = 65536;
  fds[0] = p[0];
  fds[1] = p[1];
  return cap;
}

void lr_linux_zc_pipe_close(uv_os_fd_t fds[2]) {
  close(fds[0]);
  close(fds[1]);
}

long lr_linux_zc_move(uv_os_fd_t in, uv_os_fd_t out, size_t len) {
  for (;;) {
    ssize_t n = splice(in, NULL, out, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n >= 0) return (long)n;
    if (errno == EINTR) continue;
    /* A socket's own pending data with a non-blocking pipe can also say
     * EAGAIN: either way, wait for readiness and try again. */
    if (errno == EWOULDBLOCK) return UV_EAGAIN;
    return -errno;
  }
}

int lr_linux_zc_shutdown_write(uv_os_fd_t fd) { return shutdown(fd, SHUT_WR) == 0 ? 0 : -errno; }

int lr_linux_stderr_is_journal(void) {
  const char *js = getenv("JOURNAL_STREAM");
  unsigned long long dev, ino;
  char end;
  struct stat st;
  if (!js || sscanf(js, "%llu:%llu%c", &dev, &ino, &end) != 2) return 0;
  if (fstat(STDERR_FILENO, &st) != 0) return 0;
  return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

int lr_linux_secret_check(const char *path, const uv_stat_t *st, char *err, size_t errlen) {
  uid_t me = geteuid();
  if (st->st_uid != 0 && st->st_uid != me) {
    snprintf(err, errlen,
             "token file %s belongs to uid %llu, neither root nor this program's user (uid %u): "
             "refused (fix: chown %u %s; chmod 600 %s)",
             path, (unsigned long long)st->st_uid, (unsigned)me, (unsigned)me, path, path);
    return -1;
  }
  if (st->st_mode & 066) {
    snprintf(err, errlen,
             "token file %s has mode %04llo: group or others may read or write the key: refused "
             "(fix: chmod 600 %s)",
             path, (unsigned long long)(st->st_mode & 07777), path);
    return -1;
  }
  return 0;
}
