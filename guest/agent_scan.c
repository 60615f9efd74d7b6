/* The agent's listener scans: a sock_diag dump, the agent's own sockets
 * left out, and the diff against the set last reported; and what decides
 * when to scan.
 *
 * Kept apart from the control stream that reports the result so that the
 * scan state (the netlink socket, four arrays swapped rather than copied
 * every 100 ms) has one owner. The arrays only ever grow, so a steady
 * system scans without allocating. Own-inode exclusion lives here because
 * it is a property of the scan: the transport listener and every published
 * (reverse) listener are the agent's, and reporting them would make the
 * host forward the agent to itself.
 *
 * When to scan: with the eBPF trigger loaded (lr_bpfwatch.h), a socket of
 * this namespace entering or leaving LISTEN wakes the agent, which scans in
 * the next loop turn (however many events arrived in this one) and reports
 * through the same diff as the periodic scan, so additions and removals
 * travel the same path at the same speed. When the trigger's UDP hooks
 * attached too, a UDP socket bound or released does the same, answered by
 * a UDP-only dump (the UDP hash is the expensive walk; the TCP part is
 * kept from the last full one) unless a TCP change waits as well; the
 * periodic UDP poll (udpScanIntervalMs) is then not run at all. The
 * periodic full scan goes on, slower (ebpfScanIntervalMs), as a safety net
 * for both. The hooks fire a moment before the socket is (un)hashed, so a
 * scan that does not yet show what an event announced is repeated after 1,
 * 2, 4, 8 and 16 ms. Without the trigger the periodic scan runs every
 * scanIntervalMs, as before, and without the UDP hooks UDP sockets are
 * polled every udpScanIntervalMs. */
#include "agent_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_bpfwatch.h"
#include "lr_listeners.h"
#include "lr_log.h"
#include "lr_procowner.h"

struct agent_owner_s {
  lr_listener_t l;
  lr_proc_owner_t *o;
};

static int ensure_cap(agent_scan_t *s, size_t n) {
  if (n <= s->cap) return 0;
  size_t ncap = s->cap ? s->cap : 64;
  while (ncap < n) ncap *= 2;
  lr_listener_t **arr[4] = {&s->cur, &s->next, &s->adds, &s->dels};
  for (int i = 0; i < 4; i++) {
    lr_listener_t *p = realloc(*arr[i], ncap * sizeof *p);
    if (!p) return -1;
    *arr[i] = p;
  }
  s->cap = ncap;
  return 0;
}

int agent_scan_init(lr_agent_t *a, char *err, size_t errlen) {
  agent_scan_t *s = &a->scan;
  lr_sockdiag_list_init(&s->raw);
  if (lr_sockdiag_open(&s->sd, err, errlen) != 0) return -1;
  if (ensure_cap(s, 64) != 0) {
    snprintf(err, errlen, "out of memory");
    agent_scan_free(a);
    return -1;
  }
  return 0;
}

void agent_scan_free(lr_agent_t *a) {
  agent_scan_t *s = &a->scan;
  lr_sockdiag_close(&s->sd);
  lr_sockdiag_list_free(&s->raw);
  free(s->cur);
  free(s->next);
  free(s->adds);
  free(s->dels);
  free(s->own);
  for (size_t i = 0; i < s->nowners; i++) free(s->owners[i].o);
  free(s->owners);
  s->owners = NULL;
  s->nowners = 0;
  s->cur = s->next = s->adds = s->dels = NULL;
  s->own = NULL;
  s->ncur = s->cap = s->nown = 0;
}

/* Dumps the kernel's listeners into scan.next; returns the count or -1.
 * The error is logged once per distinct message, not every 100 ms. */
static long scan_now(agent_scan_t *s) {
  char err[256] = "";
  /* A UDP-only scan keeps the TCP part of the last full one (at the front
   * of raw); a scan without UDP (the host does not forward it) has none. */
  if (s->udp_only && s->udp) {
    s->raw.n = s->ntcp;
  } else {
    s->raw.n = 0;
    if (lr_sockdiag_dump(&s->sd, &s->raw, err, sizeof err) != 0) goto fail;
    s->ntcp = s->raw.n;
  }
  if ((s->udp && lr_sockdiag_dump_udp(&s->sd, &s->raw, err, sizeof err) != 0) ||
      ensure_cap(s, s->raw.n > s->ncur ? s->raw.n : s->ncur) != 0) {
  fail:
    if (!err[0]) snprintf(err, sizeof err, "out of memory");
    if (strcmp(err, s->last_err) != 0) {
      LR_ERROR("listener scan failed: %s", err);
      snprintf(s->last_err, sizeof s->last_err, "%s", err);
    }
    return -1;
  }
  if (s->last_err[0]) {
    LR_INFO("listener scan works again");
    s->last_err[0] = 0;
  }
  return (long)lr_listeners_from_dump(s->raw.v, s->raw.n, s->own, s->nown, s->next);
}

static void swap_in_next(agent_scan_t *s, size_t n) {
  lr_listener_t *t = s->cur;
  s->cur = s->next;
  s->next = t;
  s->ncur = n;
}

void agent_scan_full(lr_agent_t *a) {
  long n = scan_now(&a->scan);
  if (n >= 0) swap_in_next(&a->scan, (size_t)n);
}

int agent_scan_diff(lr_agent_t *a, size_t *nadds, size_t *ndels) {
  agent_scan_t *s = &a->scan;
  long n = scan_now(s);
  if (n < 0) return -1;
  lr_listeners_diff(s->cur, s->ncur, s->next, (size_t)n, s->adds, nadds, s->dels, ndels);
  swap_in_next(s, (size_t)n);
  return 0;
}

/* ---- listener owners -------------------------------------------------- */

/* The order of raw once sorted: TCP before UDP, so that the TCP part of a
 * full dump stays at the front, where a UDP-only scan (scan_now) keeps it;
 * then by listener. */
static int raw_order(const lr_listener_t *a, const lr_listener_t *b) {
  int ua = (a->flags & LR_LISTENER_UDP) != 0, ub = (b->flags & LR_LISTENER_UDP) != 0;
  return ua != ub ? ua - ub : lr_listener_cmp(a, b);
}

static int cmp_raw(const void *x, const void *y) {
  const lr_sockdiag_entry_t *a = x, *b = y;
  int c = raw_order(&a->l, &b->l);
  return c ? c : (a->inode > b->inode) - (a->inode < b->inode);
}

/* The inode sock_diag reported for l in the last dump (the lowest of an
 * SO_REUSEPORT group), or 0. raw is sorted by cmp_raw. */
static uint32_t raw_inode(const agent_scan_t *s, const lr_listener_t *l) {
  size_t lo = 0, hi = s->raw.n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (raw_order(&s->raw.v[mid].l, l) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < s->raw.n && lr_listener_cmp(&s->raw.v[lo].l, l) == 0 ? s->raw.v[lo].inode : 0;
}

void agent_scan_owners_sync(lr_agent_t *a) {
  agent_scan_t *s = &a->scan;
  struct agent_owner_s *nv = calloc(s->ncur ? s->ncur : 1, sizeof *nv);
  lr_owner_query_t *q = calloc(s->ncur ? s->ncur : 1, sizeof *q);
  if (!nv || !q) { /* owners are a nicety: keep the old table */
    free(nv);
    free(q);
    return;
  }
  size_t i = 0, j = 0, nq = 0;
  int sorted = 0;
  /* Both sorted: keep the owners of listeners still there, note new ones. */
  for (; i < s->ncur; i++) {
    while (j < s->nowners && lr_listener_cmp(&s->owners[j].l, &s->cur[i]) < 0) free(s->owners[j++].o);
    nv[i].l = s->cur[i];
    if (j < s->nowners && lr_listener_cmp(&s->owners[j].l, &s->cur[i]) == 0) {
      nv[i].o = s->owners[j++].o;
      continue;
    }
    if (!sorted) { /* the dump is not needed in its order any more */
      qsort(s->raw.v, s->raw.n, sizeof *s->raw.v, cmp_raw);
      sorted = 1;
    }
    uint32_t ino = raw_inode(s, &s->cur[i]);
    if (ino) {
      q[nq].inode = ino;
      q[nq].tag = i;
      nq++;
    }
  }
  for (; j < s->nowners; j++) free(s->owners[j].o);
  free(s->owners);
  s->owners = nv;
  s->nowners = s->ncur;
  if (nq) s->owner_walks++;
  lr_procowner_lookup(s->proc_root ? s->proc_root : "/proc", q, nq);
  for (size_t k = 0; k < nq; k++) {
    if (!q[k].owner.pid || nv[q[k].tag].o) continue;
    nv[q[k].tag].o = malloc(sizeof *nv[q[k].tag].o);
    if (nv[q[k].tag].o) *nv[q[k].tag].o = q[k].owner;
  }
  free(q);
}

const lr_proc_owner_t *agent_scan_owner(const lr_agent_t *a, const lr_listener_t *l) {
  const agent_scan_t *s = &a->scan;
  size_t lo = 0, hi = s->nowners;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = lr_listener_cmp(&s->owners[mid].l, l);
    if (c == 0) return s->owners[mid].o;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

void agent_scan_own_rebuild(lr_agent_t *a) {
  agent_scan_t *s = &a->scan;
  size_t n = (a->have_own_inode ? 1 : 0);
  for (size_t i = 0; i < a->rev.n; i++) n += a->rev.v[i]->bound;
  uint32_t *own = realloc(s->own, (n ? n : 1) * sizeof *own);
  if (!own) return; /* keeps the old list: at worst a published port is reported */
  s->own = own;
  s->nown = 0;
  if (a->have_own_inode) own[s->nown++] = a->own_inode;
  for (size_t i = 0; i < a->rev.n; i++)
    if (a->rev.v[i]->bound) own[s->nown++] = a->rev.v[i]->inode;
}

/* ---- event-driven detection (eBPF) ------------------------------------- */

#define EVENTS_SAFETY_MS 2000 /* the periodic scan while the trigger works */
#define KICK_TRIES 6          /* scans per burst: now, +1, +2, +4, +8, +16 ms */
#define WANT_MAX 32           /* changes announced and not yet seen by a scan */

/* Owned by agent_scan.c: allocated by agent_scan_events_start when the
 * trigger loads, freed in the kick timer's close callback after
 * agent_scan_events_stop (or a failure of the trigger) closed both. */
typedef struct agent_events_s {
  lr_agent_t *a;
  lr_bpfwatch_t *bw; /* NULL once it failed: the agent polls again */
  uv_timer_t kick;   /* the scan an event asks for */
  unsigned tries;
  unsigned poll_ms;  /* the interval to poll at without the trigger */
  int left;          /* a listener closed since the last kick */
  int full;          /* a TCP event since the last kick: the next scan dumps TCP too */
  size_t nwant;
  int want_overflow;
  lr_bpfwatch_event_t want[WANT_MAX];
} agent_events_t;

/* Does the last dump show what ev announced? Leaving LISTEN is traced
 * after the socket left the hash, entering it before the socket is hashed,
 * so only an entry can be early. For UDP it is the other way round (a
 * bind is announced once hashed, a release before the unhash), which the
 * same test covers. An unbound socket's listen() reports port
 * 0 (the port is chosen after the tracepoint), and a socket that releases
 * an automatic port at close has it zeroed by then: an entry on port 0 is
 * never confirmed and gets the whole retry series, an exit on port 0
 * always is. So does a port another socket still listens on (SO_REUSEPORT)
 * get the series, which costs a few dumps. */
static int want_seen(const agent_scan_t *s, const lr_bpfwatch_event_t *ev) {
  if (ev->port == 0) return !ev->listening;
  int found = 0;
  for (size_t i = 0; i < s->raw.n && !found; i++)
    found = s->raw.v[i].l.family == ev->family && s->raw.v[i].l.port == ev->port &&
            !(s->raw.v[i].l.flags & LR_LISTENER_UDP) == !ev->udp;
  return found == ev->listening;
}

/* A TCP change still awaited needs a full dump: a UDP-only one keeps the
 * TCP part of the last, which cannot confirm it. */
static int want_tcp(const agent_events_t *e) {
  for (size_t i = 0; i < e->nwant; i++)
    if (!e->want[i].udp) return 1;
  return e->want_overflow;
}

static void want_note(agent_events_t *e, const lr_bpfwatch_event_t *ev) {
  for (size_t i = 0; i < e->nwant; i++)
    if (e->want[i].family == ev->family && e->want[i].port == ev->port &&
        e->want[i].udp == ev->udp) {
      e->want[i].listening = ev->listening; /* the latest transition counts */
      return;
    }
  if (e->nwant < WANT_MAX)
    e->want[e->nwant++] = *ev;
  else
    e->want_overflow = 1; /* retried as if unconfirmed */
}

/* Drops what the last scan confirmed; 1 when something is still awaited. */
static int want_settle(agent_events_t *e) {
  const agent_scan_t *s = &e->a->scan;
  if (s->last_err[0]) return 1; /* the scan failed: it confirmed nothing */
  size_t k = 0;
  for (size_t i = 0; i < e->nwant; i++)
    if (!want_seen(s, &e->want[i])) e->want[k++] = e->want[i];
  e->nwant = k;
  return e->nwant > 0 || e->want_overflow;
}

static void want_clear(agent_events_t *e) {
  e->nwant = 0;
  e->want_overflow = 0;
}

static void on_kick(uv_timer_t *t) {
  agent_events_t *e = t->data;
  lr_agent_t *a = e->a;
  if (!a->control) {
    want_clear(e); /* the next control stream starts with a full listing */
    return;
  }
  /* A published port a guest program held may be free now: with the
   * trigger the periodic retry (on_scan_timer) runs only every
   * ebpfScanIntervalMs, so a close retries at once. */
  if (e->left) {
    e->left = 0;
    agent_reverse_retry(a);
  }
  if (e->full || want_tcp(e) || !a->report_udp)
    agent_control_report(a);
  else
    agent_control_report_udp(a);
  e->full = 0;
  if (!want_settle(e)) return;
  if (++e->tries >= KICK_TRIES) {
    LR_DEBUG("eBPF trigger: %zu announced change(s) still not confirmed after %u scans "
             "(a listen() that chose its own port, or a port another socket still listens "
             "on); the periodic scan covers them", e->nwant, e->tries);
    want_clear(e);
    return;
  }
  uv_timer_start(&e->kick, on_kick, 1u << (e->tries - 1), 0);
}

static void on_event(void *data, const lr_bpfwatch_event_t *ev) {
  agent_events_t *e = data;
  if (ev->udp)
    LR_DEBUG("eBPF trigger: UDP IPv%u port %u %s", ev->family, ev->port,
             ev->listening ? "bound" : "released");
  else
    LR_DEBUG("eBPF trigger: IPv%u port %u %s LISTEN", ev->family, ev->port,
             ev->listening ? "entered" : "left");
  if (!e->a->control) return;
  if (ev->udp && !e->a->report_udp) return; /* this host does not forward UDP */
  want_note(e, ev);
  if (!ev->listening && !ev->udp) e->left = 1;
  if (!ev->udp) e->full = 1;
  /* A timeout of 0 runs in the next loop turn, after every record this
   * turn delivers: a burst costs one scan. A retry still pending is
   * brought forward the same way. */
  e->tries = 0;
  uv_timer_start(&e->kick, on_kick, 0, 0);
}

static void on_kick_closed(uv_handle_t *h) { free(h->data); }

static void send_info(lr_agent_t *a) {
  uint8_t f[32];
  size_t n = agent_scan_info_frame(a, f, sizeof f);
  if (a->control && n) agent_conn_send(a->control, f, n);
}

/* The trigger broke after it worked: back to polling, and the host is told. */
static void on_fail(void *data, const char *why) {
  agent_events_t *e = data;
  lr_agent_t *a = e->a;
  LR_WARN("listener detection: %s; polling every %u ms from now on", why, e->poll_ms);
  lr_bpfwatch_close(e->bw);
  e->bw = NULL;
  uv_timer_stop(&e->kick);
  want_clear(e);
  a->scan_ms = e->poll_ms;
  if (a->scan_timer_open && uv_is_active((uv_handle_t *)&a->scan_timer)) {
    uv_timer_set_repeat(&a->scan_timer, a->scan_ms);
    uv_timer_again(&a->scan_timer);
  }
  /* UDP comes with every full scan again, or, when scanIntervalMs is the
   * slower, with the UDP poll. */
  agent_control_udp_poll(a);
  send_info(a);
}

void agent_scan_events_start(lr_agent_t *a, const lr_agent_opts_t *o) {
  char err[512];
  if (!o->ebpf) {
    LR_INFO("listener detection: polling every %u ms (eBPF trigger not enabled)", a->scan_ms);
    return;
  }
  agent_events_t *e = calloc(1, sizeof *e);
  if (!e) {
    LR_WARN("listener detection: polling every %u ms; eBPF trigger: out of memory", a->scan_ms);
    return;
  }
  e->a = a;
  e->poll_ms = a->scan_ms;
  e->bw = lr_bpfwatch_start(a->loop, on_event, on_fail, e, err, sizeof err);
  if (!e->bw) {
    LR_WARN("listener detection: polling every %u ms; eBPF trigger unavailable: %s", a->scan_ms,
            err);
    free(e);
    return;
  }
  uv_timer_init(a->loop, &e->kick);
  e->kick.data = e;
  a->scan.events = e;
  a->scan_ms = o->ebpf_scan_interval_ms ? o->ebpf_scan_interval_ms : EVENTS_SAFETY_MS;
  LR_INFO("listener detection: eBPF trigger (inet_sock_set_state), "
          "with a safety-net scan every %u ms", a->scan_ms);
  const char *how;
  if (lr_bpfwatch_udp(e->bw, &how))
    LR_INFO("listener detection: UDP is event-driven too (eBPF %s)", how);
  else
    LR_WARN("listener detection: UDP sockets are polled every %u ms; eBPF UDP hooks "
            "unavailable: %s", a->udp_scan_ms, how);
}

int agent_scan_udp_events(const lr_agent_t *a) {
  const agent_events_t *e = a->scan.events;
  return e && e->bw && lr_bpfwatch_udp(e->bw, NULL);
}

void agent_scan_events_stop(lr_agent_t *a) {
  agent_events_t *e = a->scan.events;
  if (!e) return;
  a->scan.events = NULL;
  if (e->bw) {
    uint64_t dropped = lr_bpfwatch_dropped(e->bw);
    if (dropped) LR_INFO("eBPF trigger: %llu event(s) dropped (ring buffer full)",
                         (unsigned long long)dropped);
    lr_bpfwatch_close(e->bw);
    e->bw = NULL;
  }
  uv_close((uv_handle_t *)&e->kick, on_kick_closed);
}

size_t agent_scan_info_frame(const lr_agent_t *a, uint8_t *out, size_t cap) {
  lr_agent_info_t m;
  memset(&m, 0, sizeof m);
  m.detection = a->scan.events && a->scan.events->bw ? LR_DETECT_EBPF : LR_DETECT_POLL;
  return lr_encode_agent_info(out, cap, &m);
}
