/* The port table: the set of guest listeners of one guest and the host
 * stand-in bindings they map to.
 *
 * Several guest listeners can map to one host socket (0.0.0.0:P and
 * 127.0.0.1:P both want 127.0.0.1:P), so bindings are shared and
 * refcounted. The table decides; the I/O is done through the ops callbacks
 * (bind/unbind a stand-in listener, tell the guest a state changed), which
 * keeps this module pure and lets unit tests drive every transition.
 *
 * A binding outlives its stand-in listener while relayed connections still
 * point at its counters: lr_binding_ref/unref keep it alive. Resync after a
 * reconnect is mark-and-sweep (sync_begin, add..., sync_end), so listeners
 * that survived the reconnect keep their stand-ins and stale ones go. */
#ifndef LR_PORTS_H
#define LR_PORTS_H

#include <stdint.h>
#include "lr_config.h"
#include "lr_log.h"
#include "lr_proto.h"
#include "lr_rules.h"

/* Results of ops->bind. */
#define LR_BIND_OK 0
#define LR_BIND_INUSE 1        /* another host socket has it: conflict, retried */
#define LR_BIND_UNAVAILABLE 2  /* this host has no such loopback (e.g. IPv6 off) */
#define LR_BIND_BUDGET 3       /* the guest's stand-in budget is spent: denied, retried quietly */

typedef enum {
  LR_BINDING_UNBOUND = 0,  /* not yet tried */
  LR_BINDING_BOUND,        /* stand-in listening on the wanted port */
  LR_BINDING_REMAPPED,     /* stand-in listening on another port */
  LR_BINDING_CONFLICT,     /* wanted port taken, retrying */
  LR_BINDING_UNAVAILABLE,  /* address family missing on this host, not retried */
  LR_BINDING_CLOSED,       /* no listener maps here any more; kept for live connections */
  LR_BINDING_BUDGET,       /* over the guest's stand-in budget: denied, retried with conflicts */
} lr_binding_state_t;

typedef struct lr_ports_s lr_ports_t;

/* Who holds a host port a stand-in wanted: another guest of this lorelayd
 * (guest[0] set) or a host program (pid, command; pid 0: unknown). */
typedef struct {
  char guest[300];
  uint32_t pid;
  char command[256];
} lr_holder_t;

typedef struct lr_binding_s {
  lr_host_bind_t key;         /* family + wanted port */
  uint16_t actual_port;       /* port bound now (== key.port unless remapped) */
  lr_binding_state_t state;
  unsigned listener_refs;     /* guest listeners mapping here */
  unsigned refs;              /* listener_refs + open connections */
  uint64_t connections;       /* accepted since creation */
  unsigned active;            /* open right now */
  uint64_t bytes_to_guest, bytes_to_host;
  uint64_t drops;             /* UDP: datagrams dropped because a flow fell behind */
  uint64_t connect_failures;  /* the guest could not connect to its server (OPEN refused) */
  lr_holder_t *holder;        /* CONFLICT/REMAPPED: who has the wanted port; NULL: unknown */
  size_t udp_queued;          /* UDP: bytes its flows hold queued (LR_DGRAM_PORT_QUEUE_MAX) */
  int held;                   /* its wanted port was seen taken by someone else */
  uint64_t free_since;        /* held, and every probe since this time found it free (+1) */
  int probing;                /* the bind/unbind hooks run for a grace probe: no log line */
  void *io;                   /* the I/O layer's stand-in object */
  lr_ports_t *table;          /* NULL once detached from its table */
  struct lr_binding_s *next;
} lr_binding_t;

typedef struct lr_port_entry_s {
  lr_listener_t listener;
  lr_rule_result_t rule;
  lr_binding_t *b[2];
  int nb;
  int seen;                   /* mark for resync */
  lr_port_state_t reported;   /* last state sent to the guest */
  lr_port_state_t previous;   /* the one before it (for state_changed) */
  lr_proc_owner_t *owner;     /* the guest process holding it; NULL: unknown. Owned here */
  int announced;              /* the I/O layer has shown it (the added hook ran) */
  struct lr_port_entry_s *next;
} lr_port_entry_t;

typedef struct {
  /* Open a stand-in for b on `port` (b->key.port, or 0 for any port when
   * remapping). On LR_BIND_OK it sets b->actual_port and b->io. */
  int (*bind)(lr_binding_t *b, uint16_t port, void *data);
  /* Close b's stand-in listener (not its connections); clear b->io. */
  void (*unbind)(lr_binding_t *b, void *data);
  /* The aggregated state of e changed (tell the guest). May be NULL. */
  void (*state_changed)(const lr_port_entry_t *e, lr_port_state_t s, void *data);
  void *data;
  /* A new entry is in the table, its bindings tried and the guest told
   * (state_changed, if it is not forwarding): so state_changed calls before
   * added are the entry's first state, not a change. May be NULL. */
  void (*added)(lr_port_entry_t *e, void *data);
  /* e is about to leave the table (del, resync sweep, clear). May be NULL. */
  void (*removed)(const lr_port_entry_t *e, void *data);
  /* The host address of a family's stand-ins, for log lines. May be NULL
   * (loopback). */
  const char *(*host_str)(int family, void *data);
  /* A monotonic clock in ms, for the grace before a port another program
   * or guest held is taken (conflictGraceSeconds) and for the log gate. May
   * be NULL: no grace. The table's owner (a guest name) and, for b, who
   * holds its wanted port ("pid 123 (nginx)", "guest web"), for log lines.
   * May be NULL. */
  uint64_t (*now_ms)(void *data);
  const char *(*name)(void *data);
  const char *(*holder_str)(const lr_binding_t *b, char *buf, size_t len, void *data);
} lr_ports_ops_t;

struct lr_ports_s {
  const lr_config_t *cfg;
  lr_ports_ops_t ops;
  lr_port_entry_t *entries;   /* sorted by listener */
  lr_binding_t *bindings;
  size_t nentries;
  int syncing;
  lr_log_gate_t log_gate; /* conflict/remap lines (a guest can churn them) */
};

void lr_ports_init(lr_ports_t *t, const lr_config_t *cfg, const lr_ports_ops_t *ops);
/* Logs how many conflict/remap lines the table's burst gate left out
 * (call about once a second). */
void lr_ports_log_flush(lr_ports_t *t);
/* Unbinds and forgets everything (bindings with live connections are
 * detached and freed by their last unref). */
void lr_ports_clear(lr_ports_t *t);

/* Returns the entry (existing or new); NULL on allocation failure. Adding an
 * existing listener during a sync only marks it. */
lr_port_entry_t *lr_ports_add(lr_ports_t *t, const lr_listener_t *l);
/* The same, with the listener's owner (NULL or pid 0: unknown); a re-add of
 * a known listener that names an owner updates it. */
lr_port_entry_t *lr_ports_add_owned(lr_ports_t *t, const lr_listener_t *l,
                                    const lr_proc_owner_t *owner);
/* 0, or -1 if the listener was not known. */
int lr_ports_del(lr_ports_t *t, const lr_listener_t *l);
lr_port_entry_t *lr_ports_find(lr_ports_t *t, const lr_listener_t *l);

void lr_ports_sync_begin(lr_ports_t *t);
/* Removes every entry not added since sync_begin. Returns how many. */
int lr_ports_sync_end(lr_ports_t *t);

/* Tries again to bind every binding in CONFLICT or over budget, and every
 * REMAPPED one on its wanted port (it moves back once that port frees).
 * Returns how many are still waiting (the caller keeps its retry timer
 * while > 0). */
int lr_ports_retry_conflicts(lr_ports_t *t);
int lr_ports_conflicts(const lr_ports_t *t);

/* t->cfg changed (a reload): maps every listener again. An entry whose
 * bindings stay the same is untouched (its stand-ins and connections too);
 * one that now maps elsewhere, or to nothing (ignored, denied), gets its
 * new bindings before the old ones are released. Returns how many entries
 * changed. */
int lr_ports_reconfigure(lr_ports_t *t);
/* The stand-in address changed: closes every stand-in and opens it again
 * (open connections are not stand-ins and keep going). */
void lr_ports_rebind(lr_ports_t *t);

/* The state shown in status and sent to the guest for e. */
lr_port_state_t lr_ports_entry_state(const lr_port_entry_t *e);

/* Connections keep their binding alive; the last unref of a binding that
 * left its table frees it. */
void lr_binding_ref(lr_binding_t *b);
void lr_binding_unref(lr_binding_t *b);

size_t lr_ports_count(const lr_ports_t *t);

#endif
