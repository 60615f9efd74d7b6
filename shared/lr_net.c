/* Small shared network helpers; see lr_net.h. */
#include "lr_net.h"

#include <stdlib.h>
#include <string.h>

#include "lr_log.h"

const char *lr_loopback_str(int family) { return family == 6 ? "[::1]" : "127.0.0.1"; }

void lr_loopback_sockaddr(int family, uint16_t port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (family == 6) {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    sin6->sin6_addr.s6_addr[15] = 1;
  } else {
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    sin->sin_addr.s_addr = htonl(0x7f000001u);
  }
}

typedef struct {
  uv_write_t req;
  uint8_t data[];
} copy_write_t;

static void copy_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

int lr_sockaddr_is_loopback(const struct sockaddr_storage *ss) {
  static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (ss->ss_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
  if (ss->ss_family != AF_INET6) return 0;
  const uint8_t *a = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
  static const uint8_t one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  return memcmp(a, one, 16) == 0 || (memcmp(a, v4mapped, 12) == 0 && a[12] == 127);
}

int lr_write_copy(uv_stream_t *s, const void *buf, size_t len) {
  if (!len) return 0;
  copy_write_t *w = malloc(sizeof *w + len);
  if (!w) return UV_ENOMEM;
  memcpy(w->data, buf, len);
  uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)len);
  int rc = uv_write(&w->req, s, &b, 1, copy_written);
  if (rc) free(w);
  return rc;
}

typedef union {
  uv_handle_t h;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
} dropped_t;

static void dropped_closed(uv_handle_t *h) { free(h); }

void lr_drop_pending(uv_stream_t *server) {
  dropped_t *d = malloc(sizeof *d);
  if (!d) return;
  if (server->type == UV_TCP)
    uv_tcp_init(server->loop, &d->tcp);
  else
    uv_pipe_init(server->loop, &d->pipe, 0);
  int ok = uv_accept(server, (uv_stream_t *)d) == 0;
  if (ok && server->type == UV_TCP && uv_tcp_close_reset(&d->tcp, dropped_closed) == 0) return;
  uv_close(&d->h, dropped_closed);
}

int lr_ratelimit_pass(lr_ratelimit_t *rl, uint64_t now_ms, uint64_t interval_ms) {
  if (rl->last && now_ms - rl->last < interval_ms) {
    rl->suppressed++;
    return 0;
  }
  rl->last = now_ms ? now_ms : 1;
  return 1;
}

void lr_log_accept_error(lr_ratelimit_t *rl, uv_loop_t *loop, const char *what, int status) {
  uint64_t before = rl->suppressed;
  if (!lr_ratelimit_pass(rl, uv_now(loop), 60000)) return;
  rl->suppressed = 0;
  LR_WARN("%s: accept: %s%s (%llu more like it not logged)", what,
          uv_strerror(status),
          status == UV_EMFILE || status == UV_ENFILE
             ? " (raise the open-files limit: LimitNOFILE= / ulimit -n)"
             : "",
          (unsigned long long)before);
}
