/* Who may open a stream to the agent.
 *
 * Three gates, in the order a stream meets them:
 *   - Unix transports: the peer's uid (SO_PEERCRED) must be root's, the
 *     agent's own or one given with --allow-uid. (The socket is also
 *     created mode 0600, glisten.c.)
 *   - The failed-authentication bucket: after auth.per_sec failures within
 *     a second (a burst of as many, refilled at that rate) new streams are
 *     admitted only on probation: at most AUTH_PROBATION_MAX of them wait
 *     for their first request at a time, a newcomer closing the oldest, and
 *     their failures are only counted. One bucket for the agent, not one
 *     per peer address, because a local user of the host that floods a
 *     tcp: agent comes from the host's own address; and no stream is
 *     refused before the challenge, because the real host proves the key
 *     in its first request, within a round trip of the challenge: a flood of
 *     wrong keys cannot lock it out (it could while the bucket closed every
 *     new stream at once), and what the flood holds stays bounded.
 *   - With a shared key, the challenge: the agent's preamble and a fresh
 *     nonce (CHALLENGE) go out as soon as the stream is accepted, and the
 *     first request must carry the host's nonce and MAC over both (checked
 *     by the module that owns the stream: agent_control.c, agent_data.c,
 *     agent_reverse.c, through lr_auth).
 * Every refusal is one log line naming the peer and what failed, through a
 * once-a-second gate that counts what it held back. */
#define _GNU_SOURCE /* struct ucred */
#include "agent_int.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lr_log.h"

#define AUTH_LOG_MS 1000
/* Streams admitted while the bucket is empty that may wait for their first
 * request at once. The real host sends its request as soon as the
 * challenge arrives, so only a flood faster than a loopback or VM round
 * trip could close its stream before it proves the key. */
#define AUTH_PROBATION_MAX 16

/* One line through gate rl, with the count of lines it held back. */
static void gated_log(lr_agent_t *a, lr_ratelimit_t *rl, lr_log_level_t level, const char *line) {
  uint64_t before = rl->suppressed;
  if (!lr_ratelimit_pass(rl, uv_now(a->loop), AUTH_LOG_MS)) return;
  rl->suppressed = 0;
  if (before)
    lr_log(level, "%s (%llu more like it not logged)", line, (unsigned long long)before);
  else
    lr_log(level, "%s", line);
}

void agent_auth_init(lr_agent_t *a, const lr_agent_opts_t *o) {
  a->auth.per_sec = o->auth_fails_per_sec ? o->auth_fails_per_sec : LR_AGENT_AUTH_FAILS_PER_SEC;
  a->auth.credit = (uint64_t)a->auth.per_sec * 1000;
  a->auth.last = uv_now(a->loop);
}

static void bucket_refill(lr_agent_t *a) {
  uint64_t now = uv_now(a->loop), cap = (uint64_t)a->auth.per_sec * 1000;
  /* per_sec failures a second = per_sec thousandths a millisecond */
  a->auth.credit += (now - a->auth.last) * a->auth.per_sec;
  if (a->auth.credit > cap) a->auth.credit = cap;
  a->auth.last = now;
}

static int peer_uid_allowed(conn_t *c) {
  lr_agent_t *a = c->agent;
  char line[300];
  if (!c->has_cred) { /* read once, at accept (describe_peer) */
    snprintf(line, sizeof line, "stream from %s: refused: cannot read its credentials", c->peer);
    gated_log(a, &a->auth.peer_log, LR_LOG_WARN, line);
    return 0;
  }
  if (c->peer_uid == 0 || c->peer_uid == geteuid()) return 1;
  for (size_t i = 0; i < a->n_allow_uids; i++)
    if (a->allow_uids[i] == c->peer_uid) return 1;
  snprintf(line, sizeof line,
           "stream from %s: refused: uid %u is neither root nor this agent's (%u) and not "
           "given with --allow-uid",
           c->peer, (unsigned)c->peer_uid, (unsigned)geteuid());
  gated_log(a, &a->auth.peer_log, LR_LOG_WARN, line);
  return 0;
}

int agent_auth_admit(conn_t *c) {
  lr_agent_t *a = c->agent;
  if (a->conn_kind == LR_EP_PIPE && !peer_uid_allowed(c)) return 0;
  if (!a->token_len) return 1;
  bucket_refill(a);
  if (a->auth.credit >= 1000) return 1;
  if (a->auth.probation >= AUTH_PROBATION_MAX) {
    conn_t *oldest = NULL; /* the list is newest first */
    for (conn_t *o = a->conns; o; o = o->next)
      if (o->probation && o != c) oldest = o;
    if (oldest) agent_conn_close(oldest);
  }
  c->probation = 1;
  a->auth.probation++;
  char line[300];
  snprintf(line, sizeof line,
           "stream from %s: on probation: more than %u failed authentications in the last "
           "second; served only if its first request proves the key (at most %d such streams "
           "wait at once)",
           c->peer, a->auth.per_sec, AUTH_PROBATION_MAX);
  gated_log(a, &a->auth.refuse_log, LR_LOG_WARN, line);
  return 1;
}

void agent_auth_release(conn_t *c) {
  if (!c->probation) return;
  c->probation = 0;
  c->agent->auth.probation--;
}

int agent_auth_challenge(conn_t *c) {
  lr_agent_t *a = c->agent;
  lr_auth_init(&c->auth, a->pal, a->token_len ? a->token : NULL, a->token_len, LR_STREAM_ANY);
  if (!a->token_len) return 0;
  uint8_t buf[LR_PREAMBLE_LEN + LR_FRAME_HDR_LEN + LR_NONCE_LEN];
  if (lr_auth_new_nonce(&c->auth, LR_ROLE_AGENT) != 0) {
    LR_ERROR("stream from %s: no random bytes for the challenge; closing", c->peer);
    agent_conn_close(c);
    return -1;
  }
  /* Sent before the host's preamble names the stream's kind. */
  lr_preamble_encode_flags(buf, LR_STREAM_ANY, LR_PREAMBLE_KEYED);
  size_t n = lr_encode_challenge(buf + LR_PREAMBLE_LEN, sizeof buf - LR_PREAMBLE_LEN,
                                 c->auth.agent_nonce);
  return agent_conn_send(c, buf, LR_PREAMBLE_LEN + n);
}

void agent_auth_failed(conn_t *c, const char *what) {
  lr_agent_t *a = c->agent;
  char line[400];
  bucket_refill(a);
  a->auth.credit = a->auth.credit >= 1000 ? a->auth.credit - 1000 : 0;
  snprintf(line, sizeof line, "%s from %s: authentication failed (wrong key?): %s; refused",
           agent_stream_name(c), c->peer, what);
  gated_log(a, &a->auth.fail_log, LR_LOG_WARN, line);
}

int agent_auth_request(conn_t *c, const char *name, const lr_auth_t *auth, int verified) {
  static const char refusal[] = "the host did not prove the shared key (wrong key?)";
  char what[64];
  if (!c->agent->token_len) return 1;
  if (verified) {
    c->authed = 1;
    agent_auth_release(c);
    return 1;
  }
  snprintf(what, sizeof what, auth->len == LR_AUTH_HOST_LEN ? "%s's MAC does not verify"
                                                            : "%s carries no MAC",
           name);
  agent_auth_failed(c, what);
  /* Nothing is reported, connected or handed over for such a host. */
  if (c->kind == LR_STREAM_CONTROL)
    agent_fail_stream(c, LR_ERR_AUTH, refusal);
  else
    agent_send_open_result(c, LR_ERR_AUTH, refusal, 1);
  return 0;
}

void agent_auth_mismatch(conn_t *c, const char *what) {
  lr_agent_t *a = c->agent;
  char line[400];
  snprintf(line, sizeof line, "stream from %s: %s; refused", c->peer, what);
  gated_log(a, &a->auth.mismatch_log, LR_LOG_ERROR, line);
}
