/* The control stream: HELLO/WELCOME, the listener list and its changes,
 * PING/PONG, PORT_STATE reports and the host's reverse-forwarding frames.
 *
 * There is one control stream at a time. A second HELLO while the current
 * one is live (the host was heard from within control_live_ms, 15 s; it
 * pings every 5 s) is refused with ERROR BUSY: another host does not get to
 * silently take the guest over. After that much silence the old stream is
 * taken to be dead (a host that restarted without a word) and the new one
 * replaces it, with a warning. Each starts with a full listing ending in
 * SYNC_DONE so the host can resync mark-and-sweep. Listener changes are sent
 * only while a control stream exists, removals before additions, batched
 * into one write per scan.
 *
 * A known frame whose payload does not decode ends the stream with ERROR,
 * as the host does with the agent's frames; an unknown frame type is
 * skipped, so a newer host can add messages. */
#include "agent_int.h"

#include <stdio.h>
#include <string.h>

#include "lr_log.h"
#include "lr_sbuf.h"
#include "lr_version.h"

static void sbuf_listener(lr_sbuf_t *b, uint16_t type, const lr_listener_t *l) {
  uint8_t f[64];
  size_t n = lr_encode_listener(f, sizeof f, type, l);
  lr_sbuf_append(b, (const char *)f, n);
}

/* LISTENER_ADD, with the owner the agent found when the listener appeared. */
static void sbuf_listener_add(lr_sbuf_t *b, const lr_agent_t *a, const lr_listener_t *l) {
  uint8_t f[LR_FRAME_HDR_LEN + 32 + LR_CMD_MAX];
  const lr_proc_owner_t *o = agent_scan_owner(a, l);
  if (o) LR_DEBUG("  owned by pid %lu", (unsigned long)o->pid);
  size_t n = lr_encode_listener_add(f, sizeof f, l, o);
  lr_sbuf_append(b, (const char *)f, n);
}

static void log_listener(const char *what, const lr_listener_t *l) {
  char s[80];
  LR_DEBUG("%s %s%s", what, lr_listener_format(l, s, sizeof s),
           (l->flags & LR_LISTENER_V6ONLY) ? " (v6only)" : "");
}

/* The full listing a new control stream starts with. */
static void send_full_listing(lr_agent_t *a, conn_t *c) {
  agent_scan_full(a);
  agent_scan_owners_sync(a);
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  uint8_t info[32]; /* AGENT_INFO: how listeners are detected (agent_scan.c) */
  lr_sbuf_append(&b, (const char *)info, agent_scan_info_frame(a, info, sizeof info));
  for (size_t i = 0; i < a->scan.ncur; i++) {
    log_listener("listener", &a->scan.cur[i]);
    sbuf_listener_add(&b, a, &a->scan.cur[i]);
  }
  uint8_t f[16];
  lr_sbuf_append(&b, (const char *)f, lr_encode_empty(f, sizeof f, LR_MSG_SYNC_DONE));
  if (b.err) {
    LR_ERROR("control stream from %s: out of memory building the listener list", c->peer);
    agent_conn_close(c);
  } else if (agent_conn_send(c, b.p, b.len) == 0) {
    LR_INFO("control stream from %s: sent %zu listener(s)", c->peer, a->scan.ncur);
  }
  lr_sbuf_free(&b);
}

/* Runs only while a control stream exists. Unbound published ports are
 * retried here too (once a second, or every scan when scans are slower):
 * a guest program may free the port. */
static void on_scan_timer(uv_timer_t *t) {
  lr_agent_t *a = t->data;
  if (!a->control) return;
  if (++a->rev.retry_ticks * a->scan_ms >= 1000) {
    a->rev.retry_ticks = 0;
    agent_reverse_retry(a);
    /* libuv drops clients without a callback when accept fails for want
     * of descriptors: look once a second and say so. */
    if (a->pal->fds_exhausted && a->pal->fds_exhausted(a->loop) &&
        lr_ratelimit_pass(&a->fds_rl, uv_now(a->loop), 60000))
      LR_WARN("out of file descriptors: new streams from the host are being dropped "
              "(raise LimitNOFILE= / ulimit -n)");
  }
  agent_control_report(a);
}

/* While the eBPF trigger watches TCP but its UDP hooks could not attach,
 * UDP sockets are polled on their own: a UDP-only dump, the TCP part of the
 * set kept from the last full scan. With the hooks, a UDP event runs the
 * same dump (agent_scan.c) and the safety-net scan covers the rest. */
static void on_udp_timer(uv_timer_t *t) { agent_control_report_udp(t->data); }

void agent_control_report_udp(lr_agent_t *a) {
  a->scan.udp_only = 1;
  agent_control_report(a);
  a->scan.udp_only = 0;
}

/* The periodic scan's and the eBPF trigger's (agent_scan.c) report. */
void agent_control_report(lr_agent_t *a) {
  if (!a->control) return;
  size_t nadds, ndels;
  if (agent_scan_diff(a, &nadds, &ndels) != 0) return;
  if (nadds == 0 && ndels == 0) return;
  agent_scan_owners_sync(a);
  lr_sbuf_t b;
  lr_sbuf_init(&b);
  /* Removals first: a listener that changed only its V6ONLY flag must drop
   * its old host bindings before the new ones are requested. */
  for (size_t i = 0; i < ndels; i++) {
    log_listener("listener gone:", &a->scan.dels[i]);
    sbuf_listener(&b, LR_MSG_LISTENER_DEL, &a->scan.dels[i]);
  }
  for (size_t i = 0; i < nadds; i++) {
    log_listener("new listener:", &a->scan.adds[i]);
    sbuf_listener_add(&b, a, &a->scan.adds[i]);
  }
  if (b.err) {
    /* The host's view would miss a change; a new control stream resyncs it. */
    LR_ERROR("control stream from %s: out of memory reporting listener changes; closing",
             a->control->peer);
    agent_conn_close(a->control);
  } else {
    agent_conn_send(a->control, b.p, b.len);
  }
  lr_sbuf_free(&b);
}

void agent_control_stop(conn_t *c) {
  lr_agent_t *a = c->agent;
  if (a->control != c) return;
  a->control = NULL;
  if (a->scan_timer_open) uv_timer_stop(&a->scan_timer);
  if (a->udp_timer_open) uv_timer_stop(&a->udp_timer);
  /* Nobody could serve a guest client of a published port now: refused
   * is the honest answer until the host is back and publishes again. */
  agent_reverse_close_all(a);
}

void agent_control_hello(conn_t *c, const lr_frame_t *f) {
  lr_agent_t *a = c->agent;
  if (!agent_first_frame_is(c, f, LR_MSG_HELLO)) return;
  lr_hello_t h;
  int rc = lr_decode_hello(f, &h);
  if (rc != LR_PROTO_OK) {
    agent_bad_frame(c, f, rc);
    return;
  }
  if (!agent_auth_request(c, "HELLO", &h.auth,
                          a->token_len &&
                              lr_auth_verify_hello(&c->auth, LR_ROLE_HOST, LR_MSG_HELLO, &h)))
    return;
  uint64_t now = uv_now(a->loop);
  if (a->control && a->control != c) {
    uint64_t quiet = now - a->control->last_rx;
    if (quiet < a->control_live_ms) {
      if (lr_ratelimit_pass(&a->auth.busy_log, now, 1000))
        LR_WARN("control stream from %s (host '%s'): another host tried to take over the "
                "control stream (the one from %s was heard from %llu ms ago); refused",
                c->peer, h.name, a->control->peer, (unsigned long long)quiet);
      agent_fail_stream(c, LR_ERR_BUSY, "another host holds this agent's control stream");
      return;
    }
  }

  lr_hello_t w;
  memset(&w, 0, sizeof w);
  snprintf(w.name, sizeof w.name, "%s", a->name);
  snprintf(w.version, sizeof w.version, "%s", LR_VERSION_STRING);
  w.caps = LR_CAP_CLOSE_NOTICE; /* not covered by the MAC, as HELLO's caps are not */
  if (c->authed && lr_auth_sign_hello(&c->auth, LR_ROLE_AGENT, LR_MSG_WELCOME, &w) != 0) {
    LR_ERROR("control stream from %s: cannot compute the handshake's MAC; closing", c->peer);
    agent_fail_stream(c, LR_ERR_INTERNAL, "cannot compute the handshake's MAC");
    return;
  }
  uint8_t buf[LR_FRAME_HDR_LEN + 1 + LR_AUTH_MAX + 2 + sizeof w.name + 2 + sizeof w.version];
  size_t n = lr_encode_hello(buf, sizeof buf, LR_MSG_WELCOME, &w);
  if (agent_conn_send(c, buf, n) != 0) return;

  if (a->control && a->control != c) {
    /* Silent for control_live_ms: a host that went away without a word. */
    LR_WARN("control stream from %s takes over from the one from %s, silent for %llu ms",
            c->peer, a->control->peer, (unsigned long long)(now - a->control->last_rx));
    agent_conn_close(a->control);
  }
  LR_INFO("control stream from %s: host '%s' version %s%s", c->peer, h.name, h.version,
          c->authed ? " (key proved)" : "");
  a->control = c;
  c->phase = PH_CONTROL;
  c->last_rx = now;
  uv_timer_stop(&c->timer);
  /* UDP sockets are reported only to a host that forwards them. */
  a->report_udp = a->udp_enabled && (h.caps & LR_CAP_UDP);
  a->scan.udp = a->report_udp;
  send_full_listing(a, c);
  if (c->phase == PH_CONTROL && a->scan_timer_open)
    uv_timer_start(&a->scan_timer, on_scan_timer, a->scan_ms, a->scan_ms);
  if (c->phase == PH_CONTROL) agent_control_udp_poll(a);
}

void agent_control_udp_poll(lr_agent_t *a) {
  if (!a->udp_timer_open) return;
  /* UDP gets its own scan while the eBPF trigger watches TCP without its
   * UDP hooks (without the trigger the periodic scan covers both, unless
   * scanIntervalMs is the slower; with the hooks UDP events do). */
  if (a->control && a->report_udp && a->scan_ms > a->udp_scan_ms && !agent_scan_udp_events(a)) {
    if (!uv_is_active((uv_handle_t *)&a->udp_timer))
      uv_timer_start(&a->udp_timer, on_udp_timer, a->udp_scan_ms, a->udp_scan_ms);
  } else {
    uv_timer_stop(&a->udp_timer);
  }
}

static void log_port_state(const lr_port_state_msg_t *m) {
  char s[80];
  lr_listener_format(&m->listener, s, sizeof s);
  switch ((lr_port_state_t)m->state) {
    case LR_PORT_CONFLICT:
      LR_WARN("host could not bind port %u for %s: conflict (it retries)", m->host_port, s);
      break;
    case LR_PORT_REMAPPED:
      LR_INFO("host forwards %s on port %u (remapped)", s, m->host_port);
      break;
    case LR_PORT_IGNORED:
      LR_INFO("host ignores %s", s);
      break;
    case LR_PORT_DENIED:
      LR_WARN("host refuses to forward %s: its policy or budget denies it (see lorelayctl status)",
              s);
      break;
    case LR_PORT_FORWARDING:
      LR_INFO("host forwards %s on port %u", s, m->host_port);
      break;
  }
}

void agent_control_frame(conn_t *c, const lr_frame_t *f) {
  lr_agent_t *a = c->agent;
  int rc;
  switch (f->type) {
    case LR_MSG_PING: {
      uint64_t nonce;
      if ((rc = lr_decode_ping(f, &nonce)) != LR_PROTO_OK) break;
      uint8_t out[32];
      agent_conn_send(c, out, lr_encode_ping(out, sizeof out, LR_MSG_PONG, nonce));
      return;
    }
    case LR_MSG_PONG:
      return;
    case LR_MSG_PORT_STATE: {
      lr_port_state_msg_t m;
      if ((rc = lr_decode_port_state(f, &m)) != LR_PROTO_OK) break;
      log_port_state(&m);
      return;
    }
    case LR_MSG_ERROR: {
      /* The host closes after an ERROR: no reply, whatever its shape. */
      lr_error_msg_t e;
      if ((rc = lr_decode_error(f, &e)) == LR_PROTO_OK)
        LR_WARN("control stream from %s: host reported %s: %s", c->peer, lr_err_name(e.code),
                e.text);
      else
        LR_WARN("control stream from %s: bad ERROR message from the host: %s; closing", c->peer,
                lr_proto_strerror(rc));
      agent_conn_close(c);
      return;
    }
    case LR_MSG_REVERSE_SET: {
      static lr_reverse_set_t m; /* 2 KiB; the loop is single-threaded */
      if ((rc = lr_decode_reverse_set(f, &m)) != LR_PROTO_OK) break;
      agent_reverse_set(a, &m);
      return;
    }
    case LR_MSG_STREAM_CLOSE: {
      lr_stream_close_t m;
      if ((rc = lr_decode_stream_close(f, &m)) != LR_PROTO_OK) break;
      agent_data_stream_close(a, &m);
      return;
    }
    case LR_MSG_REVERSE_FAIL: {
      uint32_t id;
      lr_error_msg_t e;
      if ((rc = lr_decode_reverse_fail(f, &id, &e)) != LR_PROTO_OK) break;
      agent_reverse_fail(a, id, &e);
      return;
    }
    default:
      /* Newer hosts may send what this agent does not know yet. */
      LR_DEBUG("control stream from %s: skipping %s frame (type %u, %u bytes)", c->peer,
               lr_msg_name(f->type), f->type, f->len);
      return;
  }
  agent_bad_frame(c, f, rc);
}
