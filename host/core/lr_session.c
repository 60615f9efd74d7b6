/* One guest's control session: the long-lived control stream to its agent.
 *
 * Connects with exponential backoff (resolving the guest's address off the
 * loop thread first when it changes over time, as WSL's VM id does), sends
 * the preamble and HELLO (with a shared key: the preamble, then HELLO with
 * its nonce and MAC once the agent's CHALLENGE is in, and WELCOME's MAC is
 * checked before anything else is believed), and from WELCOME on applies
 * the agent's listener reports to the port table (a reconnect's full
 * listing is a mark-and-sweep resync). It also keeps the session alive
 * (PING every 5 s, dropped after 15 s of silence) and closes a guest's
 * stand-ins once it has been gone for longer than any restart takes. A bad
 * frame closes the control stream and nothing else: connections are
 * separate streams and keep running. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_host_int.h"
#include "lr_log.h"
#include "lr_transport.h"
#include "lr_version.h"

#define RETRY_MIN_MS 50
#define RETRY_MAX_MS 1000
#define AUTH_RETRY_MS 5000
#define PING_EVERY_MS 5000
#define DEAD_AFTER_MS 15000
#define STALE_AFTER_MS 5000
#define AUTH_LOG_MS 1000

static void session_schedule(lr_guest_t *g, unsigned delay_ms);
static void session_drop(lr_guest_t *g, const char *why);

void lr_session_send(lr_guest_t *g, const uint8_t *buf, size_t len) {
  if (!g->ctl || !len || (g->state != LR_G_HANDSHAKE && g->state != LR_G_CONNECTED)) return;
  /* Budget: an agent that sends requests (PING, REVERSE_OPEN) and never
   * reads the answers would otherwise make the host queue them forever. */
  size_t queued = uv_stream_get_write_queue_size(&g->ctl->ep.u.stream);
  if (queued + len > g->cfg.control_queue_bytes) {
    char why[200];
    snprintf(why, sizeof why,
             "agent is not reading its control stream (%zu bytes queued, controlQueueBytes = "
             "%u): dropping the stream",
             queued, g->cfg.control_queue_bytes);
    session_drop(g, why);
    return;
  }
  lr_write_copy(&g->ctl->ep.u.stream, buf, len); /* a failed write shows up as a read error */
}

/* A namespace guest's agent socket appears a few tens of milliseconds
 * after lorelay-init starts: failing to reach it in that window is the
 * normal start, not worth a warning. */
#define NETNS_START_GRACE_MS 3000

/* Logs a connect failure once, not at every retry, and shows it in status.
 * One that was only a debug line (a namespace still starting) is warned of
 * once the grace period is over. */
static void session_note_error(lr_guest_t *g, const char *err) {
  if (strcmp(g->last_err, err) == 0 && !g->err_quiet) return;
  int starting = g->nsock && !g->connected_at &&
                 uv_now(g->host->loop) - g->added_at < NETNS_START_GRACE_MS;
  if (strcmp(g->last_err, err) == 0 && starting) return;
  if (starting)
    LR_DEBUG("%s: agent not up yet: %s (retrying)", g->name, lr_guest_err_text(g, err));
  else
    LR_WARN("%s: %s (retrying)", g->name, lr_guest_err_text(g, err));
  g->err_quiet = starting;
  snprintf(g->last_err, sizeof g->last_err, "%s", err);
}

/* ---- the handshake ----------------------------------------------------------- */

void lr_session_auth_failed(lr_guest_t *g, const char *what) {
  snprintf(g->last_err, sizeof g->last_err, "agent at %.200s failed authentication (wrong key?)",
           g->transport);
  uint64_t before = g->auth_log.suppressed;
  if (!lr_ratelimit_pass(&g->auth_log, uv_now(g->host->loop), AUTH_LOG_MS)) return;
  g->auth_log.suppressed = 0;
  if (before)
    LR_ERROR("%s: %s: %s (%llu more not logged)", g->name, g->last_err, what,
             (unsigned long long)before);
  else
    LR_ERROR("%s: %s: %s", g->name, g->last_err, what);
}

/* A refusal a quick retry cannot cure (key, version): dropped, and retried
 * only after AUTH_RETRY_MS. */
static void session_drop_slow(lr_guest_t *g) {
  session_drop(g, NULL);
  uv_timer_stop(&g->retry_timer);
  session_schedule(g, AUTH_RETRY_MS);
}

/* HELLO, with the preamble in front unless it went out already (with a key
 * it goes first, and HELLO waits for the agent's CHALLENGE). 0, or -1 after
 * dropping the session. */
static int send_hello(lr_guest_t *g, int with_preamble) {
  lr_ctl_t *ctl = g->ctl;
  uint8_t buf[LR_PREAMBLE_LEN + LR_FRAME_HDR_LEN + 512];
  size_t n = 0;
  lr_hello_t hello;
  memset(&hello, 0, sizeof hello);
  snprintf(hello.name, sizeof hello.name, "%s", g->host->hostname);
  snprintf(hello.version, sizeof hello.version, "%s", LR_VERSION_STRING);
  if (g->cfg.udp) hello.caps |= LR_CAP_UDP; /* report UDP sockets too */
  hello.caps |= LR_CAP_CLOSE_NOTICE;
  if (g->token_len && (lr_auth_new_nonce(&ctl->auth, LR_ROLE_HOST) != 0 ||
                       lr_auth_sign_hello(&ctl->auth, LR_ROLE_HOST, LR_MSG_HELLO, &hello) != 0)) {
    session_drop(g, "cannot compute the handshake's MAC (no random bytes or no HMAC)");
    return -1;
  }
  if (with_preamble) {
    lr_preamble_encode(buf, LR_STREAM_CONTROL);
    n = LR_PREAMBLE_LEN;
  }
  n += lr_encode_hello(buf + n, sizeof buf - n, LR_MSG_HELLO, &hello);
  lr_session_send(g, buf, n);
  ctl->hello_sent = 1;
  return 0;
}

/* The agent's nonce: the host proves the key over it in HELLO. */
static void ctl_challenge(lr_guest_t *g, const lr_frame_t *f) {
  lr_ctl_t *ctl = g->ctl;
  char why[400];
  if (!g->token_len) {
    snprintf(why, sizeof why,
             "agent at %.200s requires a shared key (it sent CHALLENGE): give lorelayd the "
             "agent's key with --token-file",
             g->transport);
    LR_ERROR("%s: %s", g->name, why);
    snprintf(g->last_err, sizeof g->last_err, "%.*s", (int)sizeof g->last_err - 1, why);
    session_drop_slow(g);
    return;
  }
  if (ctl->hello_sent) {
    session_drop(g, "agent sent a second CHALLENGE");
    return;
  }
  int rc = lr_decode_challenge(f, ctl->auth.agent_nonce);
  if (rc != LR_PROTO_OK) {
    snprintf(why, sizeof why, "bad CHALLENGE message from agent: %s", lr_proto_strerror(rc));
    session_drop(g, why);
    return;
  }
  send_hello(g, 0);
}

/* ---- receiving ----------------------------------------------------------- */

static void ctl_handle_frame(lr_guest_t *g, const lr_frame_t *f) {
  lr_listener_t l;
  lr_proc_owner_t owner;
  lr_hello_t hello;
  lr_error_msg_t em;
  char ls[80];
  uint8_t buf[32];
  uint64_t nonce;
  int rc = LR_PROTO_OK;

  const char *point = f->type == LR_MSG_WELCOME ? "welcome"
                      : f->type == LR_MSG_LISTENER_ADD || f->type == LR_MSG_LISTENER_DEL
                          ? "listener-report"
                      : f->type == LR_MSG_REVERSE_OPEN ? "reverse-open"
                                                       : NULL;
  if (point) {
    LR_HOOK(g->host, point);
    if (g->stopping) return; /* the session was dropped with the guest */
  }
  if (f->type == LR_MSG_CHALLENGE && g->state == LR_G_HANDSHAKE) {
    ctl_challenge(g, f);
    return;
  }
  if (g->state != LR_G_CONNECTED && f->type != LR_MSG_WELCOME && f->type != LR_MSG_ERROR) {
    session_drop(g, "agent sent a message before WELCOME");
    return;
  }
  switch (f->type) {
    case LR_MSG_WELCOME:
      if ((rc = lr_decode_hello(f, &hello))) break;
      if (g->state == LR_G_CONNECTED) {
        session_drop(g, "agent sent a second WELCOME on a live control stream");
        return;
      }
      /* With a key, nothing the agent says counts before it has proved it. */
      if (g->token_len && (!g->ctl->hello_sent ||
                           !lr_auth_verify_hello(&g->ctl->auth, LR_ROLE_AGENT, LR_MSG_WELCOME,
                                                 &hello))) {
        lr_session_auth_failed(g, g->ctl->hello_sent ? "WELCOME's MAC does not verify"
                                                     : "WELCOME without the challenge");
        session_drop_slow(g);
        return;
      }
      g->state = LR_G_CONNECTED;
      g->detection = LR_DETECT_POLL; /* agents without AGENT_INFO poll */
      g->agent_caps = hello.caps;
      g->backoff_ms = RETRY_MIN_MS;
      g->connected_at = uv_now(g->host->loop);
      /* last_error keeps what ended the previous connection; the retries
       * of a first start (an agent not up yet) are not worth showing. */
      if (g->last_err[0] && g->lost_at) memcpy(g->prev_err, g->last_err, sizeof g->prev_err);
      g->last_err[0] = '\0';
      LR_INFO("%s: connected to agent \"%s\" (version %s) over %s", g->name,
              hello.name, hello.version, g->transport);
      {
        lr_event_t ev = {LR_EV_GUEST_CONNECTED, g, NULL, LR_PORT_FORWARDING, NULL, 0};
        lr_host_event(g->host, &ev);
      }
      lr_ports_sync_begin(&g->ports);
      lr_conn_reverse_send_set(g);
      return;
    case LR_MSG_ERROR:
      if ((rc = lr_decode_error(f, &em))) break;
      if (em.code == LR_ERR_BUSY) {
        /* Another host's live control stream; it may be our own previous
         * one that the agent has not seen die yet. Said once, retried. */
        session_note_error(g, "agent refused: another host holds its control stream");
        session_drop(g, NULL);
        return;
      }
      lr_log(em.code == LR_ERR_AUTH || em.code == LR_ERR_VERSION ? LR_LOG_ERROR : LR_LOG_WARN,
             "%s: agent refused us: %s%s%s", g->name, lr_err_name(em.code),
             em.text[0] ? ": " : "", em.text);
      if (em.code == LR_ERR_AUTH)
        snprintf(g->last_err, sizeof g->last_err, "agent at %.120s refused authentication: %.140s",
                 g->transport, em.text[0] ? em.text : "wrong key?");
      else
        snprintf(g->last_err, sizeof g->last_err, "agent refused: %s", lr_err_name(em.code));
      if (em.code == LR_ERR_AUTH || em.code == LR_ERR_VERSION)
        session_drop_slow(g);
      else
        session_drop(g, NULL);
      return;
    case LR_MSG_LISTENER_ADD:
    case LR_MSG_LISTENER_DEL:
      if ((rc = f->type == LR_MSG_LISTENER_ADD ? lr_decode_listener_add(f, &l, &owner)
                                                : lr_decode_listener(f, &l)))
        break;
      lr_listener_format(&l, ls, sizeof ls);
      LR_DEBUG("%s: guest %s %s", g->name,
               f->type == LR_MSG_LISTENER_ADD ? "listens on" : "closed", ls);
      if (f->type == LR_MSG_LISTENER_ADD) {
        size_t before = lr_ports_count(&g->ports);
        /* At the cap only listeners already tracked may be re-added (a
         * resync's listing); the lookup is needed on that path alone. */
        if (before >= LR_MAX_TRACKED_LISTENERS && !lr_ports_find(&g->ports, &l)) {
          lr_guest_warn(g, &g->tracked_log,
                        "guest reports more than %d listeners: %s not tracked",
                        LR_MAX_TRACKED_LISTENERS, ls);
          return;
        }
        lr_port_entry_t *e = lr_ports_add_owned(&g->ports, &l, &owner);
        int added = lr_ports_count(&g->ports) > before;
        if (e && added && e->rule == LR_RULE_DENIED) {
          char why[200];
          lr_rules_deny_reason(&l, &g->cfg, why, sizeof why);
          lr_guest_warn(g, &g->denied_log, "guest listener %s denied: %s", ls, why);
        }
        lr_standin_arm_retry(g);
      } else {
        lr_ports_del(&g->ports, &l);
      }
      return;
    case LR_MSG_SYNC_DONE:
      if (g->ports.syncing) {
        int n = lr_ports_sync_end(&g->ports);
        if (n) LR_INFO("%s: resync removed %d stale listener(s)", g->name, n);
      }
      return;
    case LR_MSG_PING:
      if ((rc = lr_decode_ping(f, &nonce))) break;
      lr_session_send(g, buf, lr_encode_ping(buf, sizeof buf, LR_MSG_PONG, nonce));
      return;
    case LR_MSG_PONG:
      return;
    case LR_MSG_REVERSE_OPEN: {
      lr_reverse_open_t ro;
      if ((rc = lr_decode_reverse_open(f, &ro))) break;
      lr_conn_reverse_open(g, &ro);
      return;
    }
    case LR_MSG_STREAM_CLOSE: {
      lr_stream_close_t sc;
      if ((rc = lr_decode_stream_close(f, &sc))) break;
      lr_conn_stream_close(g, &sc);
      return;
    }
    case LR_MSG_AGENT_INFO: {
      lr_agent_info_t ai;
      if ((rc = lr_decode_agent_info(f, &ai))) break;
      if (ai.detection != g->detection)
        lr_log_gated(&g->agentinfo_gate, uv_now(g->host->loop), g->name,
                     "agent's listener detection", LR_LOG_INFO,
                     "%s: agent's listener detection: %s", g->name,
                     lr_detection_name(ai.detection));
      g->detection = ai.detection;
      return;
    }
    default:
      LR_DEBUG("%s: skipping unknown control message type %u", g->name, f->type);
      return;
  }
  char why[200];
  snprintf(why, sizeof why, "bad %s message from agent: %s", lr_msg_name(f->type),
           lr_proto_strerror(rc));
  session_drop(g, why);
}

static void ctl_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  lr_ctl_t *ctl = h->data;
  size_t avail;
  (void)sz;
  buf->base = (char *)lr_rxbuf_space(&ctl->rx, &avail);
  buf->len = avail;
}

static void ctl_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  lr_ctl_t *ctl = s->data;
  lr_guest_t *g = ctl->g;
  (void)buf;
  if (!g || g->ctl != ctl) return;
  if (lr_guest_refuse_fds(g, &ctl->ep, "the control stream")) {
    session_drop(g, "the agent sent file descriptors on the control stream");
    return;
  }
  if (n < 0) {
    char why[200];
    snprintf(why, sizeof why, "control stream closed by the agent (%s)", uv_strerror((int)n));
    session_drop(g, why);
    return;
  }
  if (n == 0) return;
  g->last_rx = uv_now(g->host->loop);
  lr_rxbuf_commit(&ctl->rx, (size_t)n);
  if (!ctl->got_preamble) {
    lr_preamble_t p;
    int rc = lr_rxbuf_preamble(&ctl->rx, &p);
    if (rc == LR_PROTO_NEED_MORE) return;
    if (rc == LR_PROTO_EVERSION) {
      char why[200];
      snprintf(why, sizeof why,
               "agent speaks protocol version %u, this lorelayd speaks %u: update one side",
               p.version, LR_PROTO_VERSION);
      LR_ERROR("%s: %s", g->name, why);
      snprintf(g->last_err, sizeof g->last_err, "%s", why);
      session_drop(g, NULL);
      uv_timer_stop(&g->retry_timer);
      session_schedule(g, AUTH_RETRY_MS);
      return;
    }
    if (rc != LR_PROTO_OK) {
      session_drop(g, "the peer is not a lorelay agent (bad preamble)");
      return;
    }
    ctl->got_preamble = 1;
  }
  for (;;) {
    lr_frame_t f;
    int rc = lr_rxbuf_frame(&ctl->rx, &f);
    if (rc == LR_PROTO_NEED_MORE) return;
    if (rc != LR_PROTO_OK) {
      char why[200];
      snprintf(why, sizeof why, "agent sent a bad frame: %s", lr_proto_strerror(rc));
      session_drop(g, why);
      return;
    }
    ctl_handle_frame(g, &f);
    if (g->ctl != ctl) return; /* dropped while handling */
  }
}

/* ---- lifecycle ------------------------------------------------------------- */

/* The control record holds a guest reference from session_connect to
 * here (or to the failed attempt's callback). */
static void ctl_free(uv_handle_t *h) {
  lr_ctl_t *ctl = h->data;
  lr_guest_t *g = ctl->g;
  free(ctl);
  lr_guest_unref(g);
}

static void session_drop(lr_guest_t *g, const char *why) {
  lr_ctl_t *ctl = g->ctl;
  if (why) {
    lr_log(g->state == LR_G_CONNECTED ? LR_LOG_WARN : LR_LOG_DEBUG, "%s: %s", g->name, why);
    snprintf(g->last_err, sizeof g->last_err, "%s", why);
  }
  if (g->state == LR_G_CONNECTED) {
    g->lost_at = uv_now(g->host->loop);
    lr_event_t ev = {LR_EV_GUEST_DISCONNECTED, g, NULL, LR_PORT_FORWARDING,
                     why ? why : g->last_err, 0};
    lr_host_event(g->host, &ev);
  }
  if (g->ports.syncing) g->ports.syncing = 0; /* an unfinished resync sweeps nothing */
  g->state = LR_G_IDLE;
  g->ctl = NULL;
  if (ctl) {
    ctl->ep.u.handle.data = ctl;
    uv_close(&ctl->ep.u.handle, ctl_free);
  }
  if (!g->stopping) session_schedule(g, g->backoff_ms);
}

static void ctl_connected(lr_endpoint_t *ep, int status, const char *err, void *data) {
  lr_ctl_t *ctl = data;
  lr_guest_t *g = ctl->g;
  (void)ep;
  LR_HOOK(g->host, "session-connected");
  if (status < 0) {
    /* The attempt has closed ep: the record can go now. */
    if (g->ctl == ctl) g->ctl = NULL;
    free(ctl);
    if (!g->stopping) {
      g->state = LR_G_IDLE;
      session_note_error(g, err ? err : uv_strerror(status));
      session_schedule(g, g->backoff_ms);
    }
    lr_guest_unref(g);
    return;
  }
  if (g->stopping || g->ctl != ctl) {
    if (g->ctl == ctl) g->ctl = NULL;
    ctl->ep.u.handle.data = ctl;
    uv_close(&ctl->ep.u.handle, ctl_free);
    return;
  }
  g->state = LR_G_HANDSHAKE;
  ctl->ep.u.handle.data = ctl;
  lr_auth_init(&ctl->auth, &g->host->pal->base, g->token, g->token_len, LR_STREAM_CONTROL);
  if (g->token_len) {
    /* With a key the agent speaks first (CHALLENGE): only the preamble now,
     * flagged, so that an agent without a key can say so at once. */
    uint8_t p[LR_PREAMBLE_LEN];
    lr_preamble_encode_flags(p, LR_STREAM_CONTROL, LR_PREAMBLE_KEYED);
    lr_session_send(g, p, sizeof p);
  } else if (send_hello(g, 1) != 0) {
    return;
  }
  g->last_rx = uv_now(g->host->loop);
  int rc = uv_read_start(&ctl->ep.u.stream, ctl_alloc, ctl_read);
  if (rc) session_drop(g, "cannot read the control stream");
}

static void session_connect(lr_guest_t *g) {
  char err[300];
  lr_ctl_t *ctl = calloc(1, sizeof *ctl);
  if (!ctl) {
    session_schedule(g, RETRY_MAX_MS);
    return;
  }
  ctl->g = g;
  lr_guest_ref(g);
  lr_rxbuf_init(&ctl->rx);
  g->ctl = ctl;
  g->state = LR_G_CONNECTING;
  if (lr_transport_connect(g->host->loop, g->host->pal, &g->addr,
                           g->ipc_reads ? LR_TRANSPORT_IPC : 0, &ctl->ep, ctl_connected, ctl,
                           err, sizeof err) != 0) {
    /* Nothing was started, so nothing refers to ctl. */
    g->ctl = NULL;
    free(ctl);
    lr_guest_unref(g);
    g->state = LR_G_IDLE;
    session_note_error(g, err);
    session_schedule(g, g->backoff_ms);
  }
}

/* Resolving a guest whose address changes (WSL's VM id) may block for
 * seconds (the Host Compute Service), so it runs on the thread pool. */
typedef struct {
  uv_work_t work;
  lr_guest_t *g;
  lr_taddr_t addr;
  int rc;
  char err[300];
} resolve_job_t;

static void resolve_work(uv_work_t *w) {
  resolve_job_t *j = w->data;
  j->rc = j->g->resolve(j->g->resolve_data, &j->addr, j->err, sizeof j->err);
}

static void resolve_done(uv_work_t *w, int status) {
  resolve_job_t *j = w->data;
  lr_guest_t *g = j->g;
  g->state = LR_G_IDLE;
  if (g->stopping || status == UV_ECANCELED) {
    free(j);
    lr_guest_unref(g); /* the job's */
    return;
  }
  if (j->rc != 0) {
    session_note_error(g, j->err);
    session_schedule(g, g->backoff_ms);
  } else {
    if (memcmp(&j->addr, &g->addr, sizeof j->addr) != 0) {
      g->addr = j->addr;
      lr_taddr_format(&j->addr, g->transport, sizeof g->transport);
      LR_INFO("%s: guest agent now at %s", g->name, g->transport);
    }
    session_connect(g);
  }
  free(j);
  lr_guest_unref(g); /* the job's */
}

static void session_connect_now(uv_timer_t *t) {
  lr_guest_t *g = t->data;
  if (g->stopping || g->ctl || g->state == LR_G_RESOLVING) return;
  if (!g->resolve) {
    session_connect(g);
    return;
  }
  resolve_job_t *j = calloc(1, sizeof *j);
  if (!j || (j->g = g, j->work.data = j,
             uv_queue_work(g->host->loop, &j->work, resolve_work, resolve_done) != 0)) {
    free(j);
    session_schedule(g, RETRY_MAX_MS);
    return;
  }
  lr_guest_ref(g); /* until resolve_done */
  g->state = LR_G_RESOLVING;
}

static void session_schedule(lr_guest_t *g, unsigned delay_ms) {
  if (g->stopping) return;
  uv_timer_start(&g->retry_timer, session_connect_now, delay_ms, 0);
  g->backoff_ms = g->backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : g->backoff_ms * 2;
}

void lr_session_start(lr_guest_t *g) {
  g->backoff_ms = RETRY_MIN_MS;
  uv_timer_start(&g->retry_timer, session_connect_now, 0, 0);
}

void lr_session_stop(lr_guest_t *g) {
  if (g->ctl && g->state != LR_G_CONNECTING) session_drop(g, NULL);
}

void lr_session_tick(uv_timer_t *t) {
  lr_guest_t *g = t->data;
  LR_HOOK(g->host, "tick");
  if (g->stopping) return; /* stopped from inside the hook */
  uint64_t now = uv_now(g->host->loop);
  uint8_t buf[32];
  const lr_host_pal_t *pal = g->host->pal;
  /* Counts of the lines listener churn did not log, once their second is over. */
  lr_log_gate_flush(&g->standin_gate, now, g->name, "stand-in opened or closed", LR_LOG_INFO);
  lr_ports_log_flush(&g->ports);
  lr_log_gate_flush(&g->connfail_gate, now, g->name, "connection failed", LR_LOG_INFO);
  lr_log_gate_flush(&g->agentinfo_gate, now, g->name, "agent's listener detection", LR_LOG_INFO);
  if (pal->base.fds_exhausted && pal->base.fds_exhausted(g->host->loop))
    lr_guest_warn(g, &g->accept_log,
                  "out of file descriptors: clients are being dropped as they connect "
                  "(raise LimitNOFILE= / ulimit -n, or lower maxConnections)");
  if (g->state == LR_G_CONNECTED) {
    if (now - g->last_rx > DEAD_AFTER_MS) {
      session_drop(g, "agent stopped answering (no message for 15 s)");
    } else if (now - g->last_ping >= PING_EVERY_MS) {
      /* Every 5 s, even while the agent talks: the agent takes 15 s without
       * a word from us as a dead host whose control stream another host
       * may take over. */
      g->last_ping = now;
      lr_session_send(g, buf, lr_encode_ping(buf, sizeof buf, LR_MSG_PING, now));
    }
  } else if (g->state == LR_G_HANDSHAKE && now - g->last_rx > LR_HANDSHAKE_TIMEOUT_MS) {
    session_drop(g, g->token_len && g->ctl && !g->ctl->hello_sent
                        ? "agent sent no CHALLENGE within 5 s (has it the key too?)"
                        : "agent did not answer HELLO within 5 s");
  } else if (g->state != LR_G_CONNECTED && g->lost_at && now - g->lost_at > STALE_AFTER_MS &&
             lr_ports_count(&g->ports)) {
    /* The guest is gone for longer than any restart takes: its stand-ins
     * would only reset clients. Resync brings them back when it returns. */
    LR_WARN("%s: agent unreachable for %d s: closing %zu forwarded port(s)", g->name,
            STALE_AFTER_MS / 1000, lr_ports_count(&g->ports));
    lr_ports_clear(&g->ports);
    uv_timer_stop(&g->conflict_timer);
  }
  lr_conn_tick(g, now);
}
