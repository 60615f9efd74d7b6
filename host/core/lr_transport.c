/* Opening transport streams to a guest; see lr_transport.h.
 *
 * Each attempt is one heap object holding up to two references: its
 * timeout timer (always) and, for VM sockets, what waits for the connect:
 * a uv_poll_t on the platform's non-blocking socket, or the uv_async_t of
 * a thread of the attempt's own that runs a blocking connect (which cannot
 * be cancelled once running). Neither uses libuv's thread pool, so VMs
 * that do not answer never delay other pool work (the session's address
 * lookups) nor each other. Whatever happens, the caller's callback runs
 * exactly once, after any handle it must not touch is closed, and the
 * attempt is freed when its last reference goes. A failure found inside
 * lr_transport_connect after ep's handle exists is delivered the same way,
 * asynchronously, so no caller ever frees memory a closing handle is in. */
#include "lr_transport.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_log.h"
#include "lr_proto.h"

typedef struct {
  uv_loop_t *loop;
  const lr_host_pal_t *pal;
  lr_taddr_t addr;
  lr_endpoint_t *ep;
  lr_transport_cb cb;
  void *data;
  uv_timer_t timer;
  union { /* one kind of wait per attempt */
    struct {
      uv_connect_t creq;
      uv_write_t wreq;
    } s; /* unix, tcp, fc */
    uv_poll_t poll; /* a non-blocking VM connect: owns no descriptor */
    struct {
      uv_async_t async;
      uv_thread_t thread;
    } t; /* a blocking VM connect on its own thread */
  } u;
  /* Written by the loop thread only (finish(), the timer, the callbacks). */
  int status, ep_inited, finished;
  int vm_polling; /* u.poll is initialised (and maybe closing) */
  int refs; /* the timer, plus u.poll or u.t.async while open */
  char err[256];
  /* The VM socket and how its connect ended. With a thread: written by the
   * thread only, and read on the loop thread only after it has joined it.
   * Apart from status/err because the deadline can pass while the thread
   * still runs: finish() then writes status and err on the loop thread at
   * the same time as the thread would, and a shared buffer would have two
   * writers (and the caller's callback would read one of them mid-write). */
  uv_os_sock_t vm_sock;
  int vm_status;
  char vm_err[256];
  char fc_line[48];
  size_t fc_len;
  char fc_req[32];
} attempt_t;

/* ---- hybrid vsock handshake (pure) -------------------------------------- */

size_t lr_fc_request(uint32_t port, char *out, size_t cap) {
  int n = snprintf(out, cap, "CONNECT %u\n", port);
  return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

int lr_fc_parse_reply(const char *buf, size_t len, uint32_t *host_port, size_t *consumed) {
  static const char ok[] = "OK ";
  size_t i, n = len < 3 ? len : 3;
  if (memcmp(buf, ok, n) != 0) return LR_PROTO_EINVAL;
  for (i = 0; i < len && buf[i] != '\n'; i++)
    if (i >= 32) return LR_PROTO_EINVAL;
  if (i == len) return len > 32 ? LR_PROTO_EINVAL : LR_PROTO_NEED_MORE;
  /* "OK " then 1..10 digits then '\n' */
  uint64_t v = 0;
  size_t d = 3;
  if (i == d) return LR_PROTO_EINVAL;
  for (; d < i; d++) {
    if (buf[d] < '0' || buf[d] > '9') return LR_PROTO_EINVAL;
    v = v * 10 + (uint64_t)(buf[d] - '0');
    if (v > 0xFFFFFFFFu) return LR_PROTO_EINVAL;
  }
  *host_port = (uint32_t)v;
  *consumed = i + 1;
  return LR_PROTO_OK;
}

/* ---- completion --------------------------------------------------------- */

static void attempt_unref(attempt_t *a) {
  if (--a->refs == 0) free(a);
}

static void timer_closed(uv_handle_t *h) { attempt_unref(h->data); }

static void deliver(attempt_t *a) {
  lr_transport_cb cb = a->cb;
  a->cb = NULL;
  if (cb) cb(a->ep, a->status, a->status ? a->err : NULL, a->data);
  a->timer.data = a;
  uv_close((uv_handle_t *)&a->timer, timer_closed);
}

static void ep_closed_then_deliver(uv_handle_t *h) { deliver(h->data); }

static void vm_poll_closed(uv_handle_t *h);

static void finish(attempt_t *a, int status, const char *fmt, ...) LR_PRINTF(3, 4);
static void finish(attempt_t *a, int status, const char *fmt, ...) {
  char tmp[200];
  if (a->finished) return;
  a->finished = 1;
  uv_timer_stop(&a->timer);
  /* The deadline (or an error) ends a VM connect still waited for: its
   * socket is closed once the poll handle is (vm_poll_closed). */
  if (a->vm_polling && !uv_is_closing((uv_handle_t *)&a->u.poll))
    uv_close((uv_handle_t *)&a->u.poll, vm_poll_closed);
  a->status = status;
  if (status == 0) {
    a->ep->u.handle.data = NULL;
    deliver(a);
    return;
  }
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    char as[300];
    snprintf(a->err, sizeof a->err, "%s: %s", lr_taddr_format(&a->addr, as, sizeof as), tmp);
  }
  if (a->ep_inited && !uv_is_closing(&a->ep->u.handle)) {
    a->ep->u.handle.data = a;
    uv_close(&a->ep->u.handle, ep_closed_then_deliver);
  } else {
    deliver(a);
  }
}

static void on_timeout(uv_timer_t *t) {
  attempt_t *a = t->data;
  finish(a, UV_ETIMEDOUT, "no answer within %d ms", LR_TRANSPORT_TIMEOUT_MS);
}

static void on_init_failed(uv_timer_t *t) {
  attempt_t *a = t->data;
  finish(a, a->status, "%s", a->vm_err[0] ? a->vm_err : uv_strerror(a->status));
}

/* ---- hybrid vsock ------------------------------------------------------- */

static void fc_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  attempt_t *a = h->data;
  (void)sz;
  buf->base = a->fc_line + a->fc_len;
  buf->len = sizeof a->fc_line - a->fc_len;
}

static void fc_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  attempt_t *a = s->data;
  (void)buf;
  if (a->finished) return;
  if (n < 0) {
    finish(a, n == UV_EOF ? UV_ECONNRESET : (int)n,
           "hybrid vsock: the VMM closed the connection before answering CONNECT %u "
           "(is the guest listening on that port?)",
           a->addr.port);
    return;
  }
  a->fc_len += (size_t)n;
  uint32_t hp;
  size_t used;
  int rc = lr_fc_parse_reply(a->fc_line, a->fc_len, &hp, &used);
  if (rc == LR_PROTO_NEED_MORE && a->fc_len < sizeof a->fc_line) return;
  if (rc != LR_PROTO_OK) {
    size_t k = 0;
    while (k < a->fc_len && k < 40 && a->fc_line[k] >= 0x20 && a->fc_line[k] < 0x7f) k++;
    finish(a, UV_EPROTO, "hybrid vsock: expected \"OK <port>\\n\" after CONNECT %u, got \"%.*s\"",
           a->addr.port, (int)k, a->fc_line);
    return;
  }
  uv_read_stop(s);
  if (used != a->fc_len) {
    /* The agent speaks only after our preamble; anything more is not it. */
    finish(a, UV_EPROTO, "hybrid vsock: unexpected bytes after \"OK %u\"", hp);
    return;
  }
  finish(a, 0, NULL);
}

static void fc_written(uv_write_t *w, int status) {
  attempt_t *a = w->data;
  if (a->finished) return;
  if (status < 0) {
    finish(a, status, "hybrid vsock: sending CONNECT: %s", uv_strerror(status));
    return;
  }
  a->ep->u.handle.data = a;
  int rc = uv_read_start(&a->ep->u.stream, fc_alloc, fc_read);
  if (rc) finish(a, rc, "hybrid vsock: %s", uv_strerror(rc));
}

/* ---- unix / tcp / fc connect -------------------------------------------- */

static void on_connect(uv_connect_t *req, int status) {
  attempt_t *a = req->data;
  if (a->finished) return;
  if (status < 0) {
    finish(a, status, "%s", uv_strerror(status));
    return;
  }
  if (a->addr.kind == LR_TADDR_FC) {
    size_t n = lr_fc_request(a->addr.port, a->fc_req, sizeof a->fc_req);
    uv_buf_t b = uv_buf_init(a->fc_req, (unsigned)n);
    a->u.s.wreq.data = a;
    int rc = uv_write(&a->u.s.wreq, &a->ep->u.stream, &b, 1, fc_written);
    if (rc) finish(a, rc, "hybrid vsock: %s", uv_strerror(rc));
    return;
  }
  finish(a, 0, NULL);
}

/* ---- VM sockets --------------------------------------------------------- */

/* The VM connect ended with rc on the loop thread, before the deadline:
 * wrap the socket, or say why not. */
static void vm_arrived(attempt_t *a, int rc) {
  if (rc < 0) {
    finish(a, rc, "%s", a->vm_err[0] ? a->vm_err : uv_strerror(rc));
    return;
  }
  if ((rc = uv_tcp_init(a->loop, &a->ep->u.tcp)) == 0) {
    a->ep_inited = 1;
    rc = uv_tcp_open(&a->ep->u.tcp, a->vm_sock);
  }
  if (rc) {
    /* uv_tcp_open fails only for a socket libuv cannot poll; the handle
     * does not own it, so it is closed here. */
    a->pal->base.sock_close(a->vm_sock);
    finish(a, rc, "wrapping the VM socket: %s", uv_strerror(rc));
    return;
  }
  finish(a, 0, NULL);
}

/* Non-blocking: the poll handle is closed, so the descriptor is libuv's
 * for no handle and uv_tcp_open may take it. After the deadline (finish()
 * closed the poll) the socket is nobody's and is closed here. */
static void vm_poll_closed(uv_handle_t *h) {
  attempt_t *a = h->data;
  if (a->finished || a->vm_status < 0)
    a->pal->base.sock_close(a->vm_sock);
  if (!a->finished) vm_arrived(a, a->vm_status);
  attempt_unref(a);
}

static void vm_writable(uv_poll_t *p, int status, int events) {
  attempt_t *a = p->data;
  (void)events;
  /* A failed connect sets POLLERR, which libuv reports as status UV_EBADF:
   * the socket's own error says what happened. */
  a->vm_status = a->pal->vmsock_connect_result(&a->addr, a->vm_sock, a->vm_err,
                                               sizeof a->vm_err);
  if (a->vm_status == 0 && status < 0) {
    a->vm_status = status;
    snprintf(a->vm_err, sizeof a->vm_err, "waiting for the VM socket: %s", uv_strerror(status));
  }
  uv_close((uv_handle_t *)p, vm_poll_closed);
}

/* Blocking: one thread per attempt runs the platform's connect. */
static void vm_thread(void *arg) {
  attempt_t *a = arg;
  a->vm_status = a->pal->vmsock_connect(&a->addr, &a->vm_sock, a->vm_err, sizeof a->vm_err);
  uv_async_send(&a->u.t.async); /* the thread's last act: the join below is immediate */
}

static void vm_async_closed(uv_handle_t *h) { attempt_unref(h->data); }

static void vm_thread_done(uv_async_t *as) {
  attempt_t *a = as->data;
  uv_thread_join(&a->u.t.thread);
  uv_close((uv_handle_t *)as, vm_async_closed);
  if (a->finished) {
    /* The deadline passed first and the caller has moved on: a socket that
     * connected late is nobody's, so close it here. */
    if (a->vm_status == 0) a->pal->base.sock_close(a->vm_sock);
    return;
  }
  vm_arrived(a, a->vm_status);
}

/* Starts the VM connect: 0 (its end reaches vm_arrived or the deadline),
 * or a uv error with a->vm_err saying why and no socket or handle left. */
static int vm_start(attempt_t *a) {
  int rc;
  if (a->pal->vmsock_connect_start) {
    rc = a->pal->vmsock_connect_start(&a->addr, &a->vm_sock, a->vm_err, sizeof a->vm_err);
    if (rc != 0 && rc != 1) return rc;
    /* A socket that connected at once is writable at once: one path. */
    if ((rc = uv_poll_init_socket(a->loop, &a->u.poll, a->vm_sock)) != 0) {
      a->pal->base.sock_close(a->vm_sock);
      snprintf(a->vm_err, sizeof a->vm_err, "watching the VM socket: %s", uv_strerror(rc));
      return rc;
    }
    a->u.poll.data = a;
    a->vm_polling = 1;
    a->refs++;
    if ((rc = uv_poll_start(&a->u.poll, UV_WRITABLE, vm_writable)) != 0) {
      a->vm_status = rc;
      snprintf(a->vm_err, sizeof a->vm_err, "watching the VM socket: %s", uv_strerror(rc));
      uv_close((uv_handle_t *)&a->u.poll, vm_poll_closed);
    }
    return 0;
  }
  if ((rc = uv_async_init(a->loop, &a->u.t.async, vm_thread_done)) != 0) {
    snprintf(a->vm_err, sizeof a->vm_err, "%s", uv_strerror(rc));
    return rc;
  }
  a->u.t.async.data = a;
  a->refs++;
  if ((rc = uv_thread_create(&a->u.t.thread, vm_thread, a)) != 0) {
    snprintf(a->vm_err, sizeof a->vm_err, "cannot start a thread for the VM connect: %s",
             uv_strerror(rc));
    uv_close((uv_handle_t *)&a->u.t.async, vm_async_closed);
  }
  return rc;
}

int lr_transport_connect(uv_loop_t *loop, const lr_host_pal_t *pal, const lr_taddr_t *addr,
                         unsigned flags, lr_endpoint_t *ep, lr_transport_cb cb, void *data,
                         char *err, size_t errlen) {
  char as[300];
  int rc = 0;
  memset(ep, 0, sizeof *ep);
  if ((addr->kind == LR_TADDR_VSOCK || addr->kind == LR_TADDR_HVSOCK) &&
      (!pal || !pal->base.sock_close ||
       !(pal->vmsock_connect || (pal->vmsock_connect_start && pal->vmsock_connect_result)))) {
    snprintf(err, errlen, "%s: this platform has no %s sockets",
             lr_taddr_format(addr, as, sizeof as),
             addr->kind == LR_TADDR_VSOCK ? "AF_VSOCK" : "AF_HYPERV");
    return UV_EAFNOSUPPORT;
  }
  if (addr->kind != LR_TADDR_UNIX && addr->kind != LR_TADDR_FC && addr->kind != LR_TADDR_TCP &&
      addr->kind != LR_TADDR_VSOCK && addr->kind != LR_TADDR_HVSOCK) {
    snprintf(err, errlen, "%s: not a transport address", lr_taddr_format(addr, as, sizeof as));
    return UV_EINVAL;
  }
  attempt_t *a = calloc(1, sizeof *a);
  if (!a) {
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  a->loop = loop;
  a->pal = pal;
  a->addr = *addr;
  a->ep = ep;
  a->cb = cb;
  a->data = data;
  /* From here on every outcome reaches cb through finish(). */
  uv_timer_init(loop, &a->timer);
  a->timer.data = a;
  a->refs++;
  uv_timer_start(&a->timer, on_timeout, LR_TRANSPORT_TIMEOUT_MS, 0);
  switch (addr->kind) {
    case LR_TADDR_UNIX:
    case LR_TADDR_FC:
      if ((rc = uv_pipe_init(loop, &ep->u.pipe,
                             addr->kind == LR_TADDR_UNIX && (flags & LR_TRANSPORT_IPC)))) break;
      ep->kind = LR_EP_PIPE;
      a->ep_inited = 1;
      ep->u.handle.data = a;
      a->u.s.creq.data = a;
      uv_pipe_connect(&a->u.s.creq, &ep->u.pipe, addr->path, on_connect);
      break;
    case LR_TADDR_TCP: {
      struct sockaddr_storage ss;
      memset(&ss, 0, sizeof ss);
      if (addr->family == 4) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)addr->port);
        memcpy(&sin->sin_addr, addr->ip, 4);
      } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)addr->port);
        memcpy(&sin6->sin6_addr, addr->ip, 16);
      }
      if ((rc = uv_tcp_init(loop, &ep->u.tcp))) break;
      ep->kind = LR_EP_TCP;
      a->ep_inited = 1;
      ep->u.handle.data = a;
      a->u.s.creq.data = a;
      /* A synchronous failure (ENETUNREACH on a namespace whose lo is down)
       * still goes through finish(): ep is closed before cb runs. */
      rc = uv_tcp_connect(&a->u.s.creq, &ep->u.tcp, (struct sockaddr *)&ss, on_connect);
      break;
    }
    default: /* VM sockets: vm_arrived continues */
      ep->kind = LR_EP_VMSOCK;
      rc = vm_start(a);
      break;
  }
  if (rc && a->ep_inited) {
    finish(a, rc, "%s", uv_strerror(rc));
  } else if (rc) { /* no handle to close: deliver from the loop, not from here */
    a->status = rc;
    uv_timer_start(&a->timer, on_init_failed, 0, 0);
  }
  return 0;
}
