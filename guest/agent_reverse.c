/* Reverse forwarding: host ports published on the guest loopback.
 *
 * REVERSE_SET names the ports; each gets a listener on 127.0.0.1 (and [::1]
 * when asked). A guest client accepted there waits, unread, while the agent
 * asks the host over the control stream (REVERSE_OPEN); the host opens a
 * reverse stream and names the client in ATTACH, and the client's socket is
 * handed to that stream's relay. So the host still opens every stream, and
 * the guest never needs a way to reach the host on its own.
 *
 * A port a guest program already holds is retried (from the control
 * stream's scan timer) rather than refused for good: programs come and go.
 * Everything published closes with the control stream and comes back with
 * the next REVERSE_SET. */
#include "agent_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lr_log.h"

static void rlsn_free(uv_handle_t *h) { free(h->data); }

void agent_reverse_close_all(lr_agent_t *a) {
  for (size_t i = 0; i < a->rev.n; i++) {
    rlsn_t *r = a->rev.v[i];
    r->tcp.data = r;
    if (r->open)
      uv_close((uv_handle_t *)&r->tcp, rlsn_free);
    else
      free(r);
  }
  free(a->rev.v);
  a->rev.v = NULL;
  a->rev.n = 0;
  agent_scan_own_rebuild(a);
}

/* The guest client gets a reset, as if nothing listened on the port. */
static void reverse_reset(conn_t *c) {
  if (c->phase == PH_CLOSED) return;
  c->phase = PH_CLOSED;
  agent_close_timer(c);
  lr_relay_close(&c->relay, 1);
}

static conn_t *reverse_pending(lr_agent_t *a, uint32_t id) {
  for (conn_t *c = a->conns; c; c = c->next)
    if (c->phase == PH_REV_WAIT && c->rev_id == id) return c;
  return NULL;
}

void agent_reverse_fail(lr_agent_t *a, uint32_t id, const lr_error_msg_t *e) {
  conn_t *p = reverse_pending(a, id);
  if (!p) return; /* timed out meanwhile */
  LR_INFO("guest connection to localhost:%u: the host cannot serve it (%s%s%s): reset", p->port,
          lr_err_name(e->code), e->text[0] ? ": " : "", e->text);
  reverse_reset(p);
}

static void on_rev_timeout(uv_timer_t *t) {
  conn_t *c = t->data;
  LR_WARN("guest connection to localhost:%u: the host opened no stream within %u ms: reset",
          c->port, c->agent->handshake_ms);
  reverse_reset(c);
}

static void on_reverse_connection(uv_stream_t *server, int status) {
  rlsn_t *r = server->data;
  lr_agent_t *a = r->agent;
  if (status < 0) {
    lr_log_accept_error(&a->rev.accept_rl, a->loop, "published port", status);
    return;
  }
  conn_t *c = agent_conn_new(a);
  if (!c) return;
  c->port = r->port;
  c->family = r->family;
  snprintf(c->peer, sizeof c->peer, "guest client of %s:%u", lr_loopback_str(r->family),
           r->port);
  uv_tcp_init(a->loop, &c->relay.ep[0].u.tcp);
  lr_relay_mark_open(&c->relay, 0, LR_EP_TCP);
  c->phase = PH_REV_WAIT;
  if (uv_accept(server, &c->relay.ep[0].u.stream) != 0 || !a->control) {
    reverse_reset(c);
    return;
  }
  /* Not read until attached: whatever the client sends waits in the kernel. */
  c->rev_id = ++a->rev.next_id;
  lr_reverse_open_t m = {c->rev_id, r->family, r->port};
  uint8_t f[32];
  if (agent_conn_send(a->control, f, lr_encode_reverse_open(f, sizeof f, &m)) != 0) {
    reverse_reset(c);
    return;
  }
  LR_DEBUG("%s: asked the host for a stream (id %u)", c->peer, c->rev_id);
  uv_timer_start(&c->timer, on_rev_timeout, a->handshake_ms, 0);
}

static void rlsn_bind(lr_agent_t *a, rlsn_t *r) {
  const char *where = lr_loopback_str(r->family);
  int first = !r->open;
  if (r->open) { /* a failed earlier attempt: start from a fresh socket */
    uv_handle_t *old = (uv_handle_t *)&r->tcp;
    rlsn_t *n = calloc(1, sizeof *n);
    if (!n) return;
    *n = (rlsn_t){.agent = a, .port = r->port, .family = r->family};
    for (size_t i = 0; i < a->rev.n; i++)
      if (a->rev.v[i] == r) a->rev.v[i] = n;
    old->data = r;
    uv_close(old, rlsn_free);
    r = n;
  }
  int rc = uv_tcp_init_ex(a->loop, &r->tcp, r->family == 6 ? AF_INET6 : AF_INET);
  if (rc) {
    if (first) LR_WARN("publishing host port %u on the guest's %s: %s", r->port, where,
                       uv_strerror(rc));
    return;
  }
  r->open = 1;
  r->tcp.data = r;
  struct sockaddr_storage ss;
  lr_loopback_sockaddr(r->family, r->port, &ss);
  rc = uv_tcp_bind(&r->tcp, (struct sockaddr *)&ss, r->family == 6 ? UV_TCP_IPV6ONLY : 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&r->tcp, 511, on_reverse_connection);
  if (rc) {
    if (first)
      LR_WARN("publishing host port %u on the guest's %s: %s (a guest program has it; retrying)",
              r->port, where, uv_strerror(rc));
    return;
  }
  uv_os_fd_t fd;
  struct stat st;
  if (uv_fileno((uv_handle_t *)&r->tcp, &fd) == 0 && fstat(fd, &st) == 0)
    r->inode = (uint32_t)st.st_ino;
  r->bound = 1;
  LR_INFO("guest %s:%u now reaches the host's localhost:%u", where, r->port, r->port);
}

void agent_reverse_set(lr_agent_t *a, const lr_reverse_set_t *m) {
  agent_reverse_close_all(a);
  size_t want = (size_t)m->n * ((m->flags & LR_REVERSE_IPV6) ? 2 : 1);
  if (!want) return;
  a->rev.v = calloc(want, sizeof *a->rev.v);
  if (!a->rev.v) {
    LR_ERROR("out of memory publishing %u host port(s)", m->n);
    return;
  }
  for (size_t i = 0; i < m->n; i++)
    for (int fam = 4; fam <= 6; fam += 2) {
      if (fam == 6 && !(m->flags & LR_REVERSE_IPV6)) continue;
      rlsn_t *r = calloc(1, sizeof *r);
      if (!r) continue;
      *r = (rlsn_t){.agent = a, .port = m->ports[i], .family = (uint8_t)fam};
      a->rev.v[a->rev.n++] = r;
      rlsn_bind(a, r);
    }
  agent_scan_own_rebuild(a);
}

void agent_reverse_retry(lr_agent_t *a) {
  int changed = 0;
  for (size_t i = 0; i < a->rev.n; i++) {
    if (a->rev.v[i]->bound) continue;
    rlsn_bind(a, a->rev.v[i]);
    changed |= a->rev.v[i]->bound;
  }
  if (changed) agent_scan_own_rebuild(a);
}

/* The first frame of a reverse stream names the waiting guest client. */
void agent_reverse_attach(conn_t *c, const lr_frame_t *f) {
  lr_agent_t *a = c->agent;
  if (!agent_first_frame_is(c, f, LR_MSG_ATTACH)) return;
  lr_attach_t at;
  int rc = lr_decode_attach(f, &at);
  if (rc != LR_PROTO_OK) {
    agent_bad_frame(c, f, rc);
    return;
  }
  if (!agent_auth_request(c, "ATTACH", &at.auth,
                          a->token_len && lr_auth_verify_attach(&c->auth, &at)))
    return;
  conn_t *p = reverse_pending(a, at.id);
  if (!p) {
    LR_INFO("reverse stream from %s: no guest client waits under id %u (timed out?)", c->peer,
            at.id);
    agent_send_open_result(c, LR_ERR_REFUSED, "no such guest connection", 1);
    return;
  }
  /* Hand the client's socket to this stream's relay: a duplicate of the fd
   * keeps it open (and unread) while the waiting record closes. */
  uv_os_fd_t fd;
  int nfd = -1;
  if (uv_fileno(&p->relay.ep[0].u.handle, &fd) == 0) nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0 || uv_tcp_init(a->loop, &c->relay.ep[0].u.tcp) != 0) {
    if (nfd >= 0) close(nfd);
    agent_send_open_result(c, LR_ERR_INTERNAL, "cannot take over the guest connection", 1);
    reverse_reset(p);
    return;
  }
  lr_relay_mark_open(&c->relay, 0, LR_EP_TCP);
  if (uv_tcp_open(&c->relay.ep[0].u.tcp, nfd) != 0) {
    close(nfd);
    agent_send_open_result(c, LR_ERR_INTERNAL, "cannot take over the guest connection", 1);
    reverse_reset(p);
    return;
  }
  c->port = p->port;
  c->family = p->family;
  p->phase = PH_CLOSED;
  agent_close_timer(p);
  lr_relay_close(&p->relay, 0); /* closes our copy only: the client stays connected */
  agent_data_number(c, at.stream_id);
  agent_send_open_result(c, LR_OK, "", 0);
  if (c->phase == PH_CLOSED) return;
  LR_DEBUG("reverse stream from %s: relaying guest client of localhost:%u", c->peer, c->port);
  agent_data_start_relay(c, "reverse stream");
}
