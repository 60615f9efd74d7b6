/* The port table; see lr_ports.h for the model.
 *
 * Lists, not hash tables: a guest has tens of listeners, and a sorted list
 * keeps status output stable for humans and tests. */
#include "lr_ports.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_log.h"
#include "lr_net.h"

void lr_ports_init(lr_ports_t *t, const lr_config_t *cfg, const lr_ports_ops_t *ops) {
  memset(t, 0, sizeof *t);
  t->cfg = cfg;
  t->ops = *ops;
}

static lr_binding_t *find_binding(lr_ports_t *t, const lr_host_bind_t *k) {
  for (lr_binding_t *b = t->bindings; b; b = b->next)
    if (b->key.family == k->family && b->key.port == k->port && b->key.udp == k->udp) return b;
  return NULL;
}


static const char *host_str(const lr_ports_t *t, int family) {
  return t->ops.host_str ? t->ops.host_str(family, t->ops.data) : lr_loopback_str(family);
}

/* "web: " (the guest's name, once, first on the line), or "". */
static const char *who(const lr_ports_t *t, char *buf, size_t len) {
  const char *n = t->ops.name ? t->ops.name(t->ops.data) : NULL;
  if (!n) return "";
  snprintf(buf, len, "%s: ", n);
  return buf;
}

/* "pid 123 (nginx)", "guest web", or "another program or guest". */
static const char *holder(const lr_ports_t *t, const lr_binding_t *b, char *buf, size_t len) {
  if (t->ops.holder_str && t->ops.holder_str(b, buf, len, t->ops.data)) return buf;
  return "another program or guest";
}

/* Conflict, remap and grace lines: a guest that churns listeners on taken
 * ports provokes one per report, so they pass a burst gate (with a clock). */
#define PORTS_LOG_WHAT "host port taken, remapped or free again"
static void ports_log(lr_ports_t *t, lr_log_level_t level, const char *fmt, ...) LR_PRINTF(3, 4);
static void ports_log(lr_ports_t *t, lr_log_level_t level, const char *fmt, ...) {
  char line[900], nm[320];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (!t->ops.now_ms) {
    lr_log(level, "%s%s", who(t, nm, sizeof nm), line);
    return;
  }
  lr_log_gated(&t->log_gate, t->ops.now_ms(t->ops.data),
               t->ops.name ? t->ops.name(t->ops.data) : "", PORTS_LOG_WHAT, level, "%s%s",
               who(t, nm, sizeof nm), line);
}

void lr_ports_log_flush(lr_ports_t *t) {
  if (t->ops.now_ms)
    lr_log_gate_flush(&t->log_gate, t->ops.now_ms(t->ops.data),
                      t->ops.name ? t->ops.name(t->ops.data) : "", PORTS_LOG_WHAT, LR_LOG_WARN);
}

/* The grace before a port someone else held is taken. A host service that
 * restarts closes its socket and binds again a moment later; a guest that
 * took the port in between would get that service's clients (and the
 * service EADDRINUSE). So a binding whose wanted port was seen taken binds
 * it only after every retry for conflictGraceSeconds found it free: each
 * retry is a probe (bind, and at once unbind, through the hooks, which
 * stay quiet meanwhile), and a probe that finds it taken starts the count
 * again. The probe holds the port for the microseconds between its bind
 * and its close, once per conflictRetryMs: that is the remaining window.
 * 1: still in its grace (the probe's stand-in is closed again). */
static int in_grace(lr_ports_t *t, lr_binding_t *b) {
  uint64_t grace = (uint64_t)t->cfg->conflict_grace_s * 1000;
  if (!b->held || !grace || !t->ops.now_ms) return 0;
  uint64_t now = t->ops.now_ms(t->ops.data) + 1;
  if (!b->free_since) b->free_since = now;
  if (now - b->free_since >= grace) return 0;
  b->probing = 1;
  t->ops.unbind(b, t->ops.data);
  b->probing = 0;
  b->io = NULL;
  return 1;
}

static void grace_over(lr_ports_t *t, lr_binding_t *b) {
  /* Not through the gate: at most one per port per grace, and the line an
   * operator looks for when a service lost its port. */
  if (b->held && t->cfg->conflict_grace_s && t->ops.now_ms)
    LR_WARN("host %s:%u stayed free for %u s after another program or guest held it: "
            "taken by guest %s",
            host_str(t, b->key.family), b->key.port, t->cfg->conflict_grace_s,
            t->ops.name ? t->ops.name(t->ops.data) : "?");
  b->held = 0;
  b->free_since = 0;
  free(b->holder);
  b->holder = NULL;
}

static void seen_taken(lr_binding_t *b) {
  b->held = 1;
  b->free_since = 0;
}

/* A remapped binding asks for its wanted port again; when it gets it, the
 * stand-in on the stand-by port closes (its open connections keep going). */
static void try_unremap(lr_ports_t *t, lr_binding_t *b) {
  void *old = b->io;
  uint16_t old_port = b->actual_port;
  b->io = NULL; /* the hook opens a second stand-in; the first closes after */
  b->probing = b->held && t->cfg->conflict_grace_s && t->ops.now_ms;
  int rc = t->ops.bind(b, b->key.port, t->ops.data);
  b->probing = 0;
  if (rc != LR_BIND_OK || in_grace(t, b)) {
    if (rc == LR_BIND_INUSE) seen_taken(b);
    b->io = old;
    b->actual_port = old_port;
    return;
  }
  grace_over(t, b);
  void *now = b->io;
  b->io = old;
  b->actual_port = old_port;
  if (old) t->ops.unbind(b, t->ops.data);
  b->io = now;
  b->actual_port = b->key.port;
  b->state = LR_BINDING_BOUND;
  ports_log(t, LR_LOG_INFO, "host %s:%u is free again: moved back from port %u",
            host_str(t, b->key.family), b->key.port, old_port);
}

/* remapOnConflict: the next free port above the wanted one (predictable:
 * 8080 taken gives 8081), within a few tries; then any port the system
 * gives. Ports published to the guest (reversePorts) are skipped. */
#define REMAP_TRIES 16
static int remap(lr_ports_t *t, lr_binding_t *b) {
  for (unsigned p = b->key.port + 1u; p <= 65535u && p <= b->key.port + (unsigned)REMAP_TRIES; p++) {
    if (lr_portset_contains(&t->cfg->reverse_ports, (uint16_t)p)) continue;
    int rc = t->ops.bind(b, (uint16_t)p, t->ops.data);
    if (rc == LR_BIND_OK) return 1;
    if (rc != LR_BIND_INUSE) return 0;
  }
  return t->ops.bind(b, 0, t->ops.data) == LR_BIND_OK;
}

/* Try to get a stand-in listening for b. */
static void try_bind(lr_ports_t *t, lr_binding_t *b) {
  if (b->state == LR_BINDING_REMAPPED) {
    try_unremap(t, b);
    return;
  }
  char hs[400];
  int graced = b->held && t->cfg->conflict_grace_s && t->ops.now_ms;
  b->probing = graced;
  int rc = t->ops.bind(b, b->key.port, t->ops.data);
  b->probing = 0;
  if (rc == LR_BIND_OK && in_grace(t, b)) return; /* stays in conflict */
  if (rc == LR_BIND_OK) {
    if (b->state == LR_BINDING_CONFLICT && !graced) /* grace_over says it */
      ports_log(t, LR_LOG_INFO, "host %s:%u is free again: forwarding", host_str(t, b->key.family),
                b->key.port);
    grace_over(t, b);
    b->state = LR_BINDING_BOUND;
    b->actual_port = b->key.port;
    return;
  }
  if (rc == LR_BIND_BUDGET) {
    b->state = LR_BINDING_BUDGET; /* the bind hook logs it, rate-limited */
    return;
  }
  if (rc == LR_BIND_UNAVAILABLE) {
    if (b->state != LR_BINDING_UNAVAILABLE)
      ports_log(t, LR_LOG_WARN, "host has no %s loopback: port %u not forwarded there",
                b->key.family == 6 ? "IPv6" : "IPv4", b->key.port);
    b->state = LR_BINDING_UNAVAILABLE;
    return;
  }
  /* In use (or another bind error, which we treat alike: retry). */
  seen_taken(b);
  if (t->cfg->remap_on_conflict && remap(t, b)) {
    ports_log(t, LR_LOG_WARN, "host %s:%u is taken by %s: remapped to port %u",
              host_str(t, b->key.family), b->key.port, holder(t, b, hs, sizeof hs),
              b->actual_port);
    b->state = LR_BINDING_REMAPPED;
    return;
  }
  if (b->state != LR_BINDING_CONFLICT)
    ports_log(t, LR_LOG_WARN, "host %s:%u is taken by %s: conflict, retrying",
              host_str(t, b->key.family), b->key.port, holder(t, b, hs, sizeof hs));
  b->state = LR_BINDING_CONFLICT;
}

static lr_binding_t *binding_get(lr_ports_t *t, const lr_host_bind_t *k) {
  lr_binding_t *b = find_binding(t, k);
  if (b) {
    b->listener_refs++;
    b->refs++;
    return b;
  }
  b = calloc(1, sizeof *b);
  if (!b) return NULL;
  b->key = *k;
  b->table = t;
  b->listener_refs = 1;
  b->refs = 1;
  b->state = LR_BINDING_UNBOUND;
  b->next = t->bindings;
  t->bindings = b;
  try_bind(t, b);
  return b;
}

static void binding_unlink(lr_ports_t *t, lr_binding_t *b) {
  for (lr_binding_t **pp = &t->bindings; *pp; pp = &(*pp)->next) {
    if (*pp == b) {
      *pp = b->next;
      break;
    }
  }
  b->next = NULL;
  b->table = NULL;
}

static void binding_release(lr_ports_t *t, lr_binding_t *b) {
  b->listener_refs--;
  if (b->listener_refs == 0) {
    if (b->io) t->ops.unbind(b, t->ops.data);
    b->io = NULL;
    b->state = LR_BINDING_CLOSED;
    binding_unlink(t, b);
  }
  lr_binding_unref(b);
}

void lr_binding_ref(lr_binding_t *b) { b->refs++; }

void lr_binding_unref(lr_binding_t *b) {
  if (--b->refs == 0) {
    if (b->table) binding_unlink(b->table, b);
    free(b->holder);
    free(b);
  }
}

lr_port_state_t lr_ports_entry_state(const lr_port_entry_t *e) {
  if (e->rule == LR_RULE_DENIED) return LR_PORT_DENIED;
  if (e->rule != LR_RULE_FORWARD) return LR_PORT_IGNORED;
  int conflict = 0, remapped = 0, usable = 0, budget = 0;
  for (int i = 0; i < e->nb; i++) {
    switch (e->b[i]->state) {
      case LR_BINDING_BUDGET: budget = 1; break;
      case LR_BINDING_CONFLICT: conflict = 1; break;
      case LR_BINDING_REMAPPED: remapped = 1; usable = 1; break;
      case LR_BINDING_BOUND: usable = 1; break;
      default: break;
    }
  }
  if (conflict) return LR_PORT_CONFLICT;
  if (budget) return LR_PORT_DENIED;
  if (remapped) return LR_PORT_REMAPPED;
  return usable ? LR_PORT_FORWARDING : LR_PORT_IGNORED;
}

static void notify(lr_ports_t *t, lr_port_entry_t *e) {
  lr_port_state_t s = lr_ports_entry_state(e);
  if (s == e->reported) return;
  e->previous = e->reported;
  e->reported = s;
  if (t->ops.state_changed) t->ops.state_changed(e, s, t->ops.data);
}

/* Only a named owner is stored: most entries of a busy guest cost nothing. */
static void entry_set_owner(lr_port_entry_t *e, const lr_proc_owner_t *owner) {
  if (!owner || !owner->pid) return;
  if (!e->owner && !(e->owner = malloc(sizeof *e->owner))) return;
  *e->owner = *owner;
}

lr_port_entry_t *lr_ports_add(lr_ports_t *t, const lr_listener_t *l) {
  return lr_ports_add_owned(t, l, NULL);
}

lr_port_entry_t *lr_ports_add_owned(lr_ports_t *t, const lr_listener_t *l,
                                    const lr_proc_owner_t *owner) {
  lr_port_entry_t **pp = &t->entries;
  while (*pp && lr_listener_cmp(&(*pp)->listener, l) < 0) pp = &(*pp)->next;
  if (*pp && lr_listener_cmp(&(*pp)->listener, l) == 0) {
    (*pp)->seen = 1;
    entry_set_owner(*pp, owner);
    return *pp;
  }
  lr_port_entry_t *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  entry_set_owner(e, owner);
  e->listener = *l;
  e->seen = 1;
  lr_host_bind_t want[2];
  int n = 0;
  e->rule = lr_rules_map(l, t->cfg, want, &n);
  for (int i = 0; i < n; i++) {
    lr_binding_t *b = binding_get(t, &want[i]);
    if (!b) {
      for (int j = 0; j < e->nb; j++) binding_release(t, e->b[j]);
      free(e->owner);
      free(e);
      return NULL;
    }
    e->b[e->nb++] = b;
  }
  /* "Forwarding" is what the guest assumes; say only when it is not so. */
  e->reported = LR_PORT_FORWARDING;
  e->next = *pp;
  *pp = e;
  t->nentries++;
  notify(t, e);
  if (t->ops.added) t->ops.added(e, t->ops.data);
  return e;
}

static void entry_free(lr_ports_t *t, lr_port_entry_t *e) {
  if (t->ops.removed) t->ops.removed(e, t->ops.data);
  t->nentries--;
  for (int i = 0; i < e->nb; i++) binding_release(t, e->b[i]);
  free(e->owner);
  free(e);
}

lr_port_entry_t *lr_ports_find(lr_ports_t *t, const lr_listener_t *l) {
  for (lr_port_entry_t *e = t->entries; e; e = e->next) {
    int c = lr_listener_cmp(&e->listener, l);
    if (c == 0) return e;
    if (c > 0) break;
  }
  return NULL;
}

int lr_ports_del(lr_ports_t *t, const lr_listener_t *l) {
  for (lr_port_entry_t **pp = &t->entries; *pp; pp = &(*pp)->next) {
    if (lr_listener_cmp(&(*pp)->listener, l) == 0) {
      lr_port_entry_t *e = *pp;
      *pp = e->next;
      entry_free(t, e);
      return 0;
    }
  }
  return -1;
}

void lr_ports_sync_begin(lr_ports_t *t) {
  t->syncing = 1;
  for (lr_port_entry_t *e = t->entries; e; e = e->next) e->seen = 0;
}

int lr_ports_sync_end(lr_ports_t *t) {
  int removed = 0;
  lr_port_entry_t **pp = &t->entries;
  while (*pp) {
    lr_port_entry_t *e = *pp;
    if (!e->seen) {
      *pp = e->next;
      entry_free(t, e);
      removed++;
    } else {
      pp = &e->next;
    }
  }
  t->syncing = 0;
  return removed;
}

static int waiting(const lr_binding_t *b) {
  return b->state == LR_BINDING_CONFLICT || b->state == LR_BINDING_BUDGET ||
         b->state == LR_BINDING_REMAPPED;
}

int lr_ports_retry_conflicts(lr_ports_t *t) {
  int left = 0, changed = 0;
  for (lr_binding_t *b = t->bindings; b; b = b->next) {
    if (!waiting(b)) continue;
    lr_binding_state_t before = b->state;
    try_bind(t, b);
    if (waiting(b)) left++;
    if (b->state != before) changed = 1;
  }
  if (changed)
    for (lr_port_entry_t *e = t->entries; e; e = e->next) notify(t, e);
  return left;
}

int lr_ports_conflicts(const lr_ports_t *t) {
  int n = 0;
  for (const lr_binding_t *b = t->bindings; b; b = b->next) n += waiting(b);
  return n;
}

static int same_bindings(const lr_port_entry_t *e, lr_rule_result_t rule,
                         const lr_host_bind_t *want, int n) {
  if (e->rule != rule || e->nb != n) return 0;
  for (int i = 0; i < n; i++)
    if (e->b[i]->key.family != want[i].family || e->b[i]->key.port != want[i].port ||
        e->b[i]->key.guest_port != want[i].guest_port)
      return 0;
  return 1;
}

int lr_ports_reconfigure(lr_ports_t *t) {
  int changed = 0;
  for (lr_port_entry_t *e = t->entries; e; e = e->next) {
    lr_host_bind_t want[2];
    int n = 0;
    lr_rule_result_t rule = lr_rules_map(&e->listener, t->cfg, want, &n);
    if (same_bindings(e, rule, want, n)) continue;
    /* New bindings first: one the entry keeps is then shared, not closed
     * and reopened, and its connections never notice. */
    lr_binding_t *nb[2];
    int k = 0;
    for (; k < n; k++)
      if (!(nb[k] = binding_get(t, &want[k]))) break;
    if (k < n) {
      while (k--) binding_release(t, nb[k]);
      continue; /* out of memory: the entry keeps what it had */
    }
    for (int i = 0; i < e->nb; i++) binding_release(t, e->b[i]);
    for (int i = 0; i < n; i++) e->b[i] = nb[i];
    e->nb = n;
    e->rule = rule;
    changed++;
  }
  for (lr_port_entry_t *e = t->entries; e; e = e->next) notify(t, e);
  return changed;
}

void lr_ports_rebind(lr_ports_t *t) {
  for (lr_binding_t *b = t->bindings; b; b = b->next) {
    if (b->state == LR_BINDING_UNBOUND || b->state == LR_BINDING_CLOSED) continue;
    if (b->io) t->ops.unbind(b, t->ops.data);
    b->io = NULL;
    b->state = LR_BINDING_UNBOUND;
    try_bind(t, b);
  }
  for (lr_port_entry_t *e = t->entries; e; e = e->next) notify(t, e);
}

void lr_ports_clear(lr_ports_t *t) {
  while (t->entries) {
    lr_port_entry_t *e = t->entries;
    t->entries = e->next;
    entry_free(t, e);
  }
}

size_t lr_ports_count(const lr_ports_t *t) { return t->nentries; }
