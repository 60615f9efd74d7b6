/* Unit tests for the port table (lr_ports) with fake I/O.
 *
 * The fake ops record every bind/unbind and emulate a host on which some
 * loopback ports are taken by other programs, or which has no IPv6
 * loopback. That lets every transition of the table be driven and checked
 * without sockets: sharing, conflicts and their retry, remapping, resync
 * sweeps, and bindings kept alive by connections after their listener left
 * (valgrind/asan check that the last unref frees them). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "lr_ports.h"
#include "lr_testutil.h"

/* ---- the fake host ----------------------------------------------------- */

#define MAX_CALLS 64
#define MAX_TAKEN 16

typedef struct {
  uint8_t family;
  uint16_t port;   /* requested port (0 = any) */
  lr_binding_t *b;
} call_t;

typedef struct {
  call_t binds[MAX_CALLS];
  int nbind;
  call_t unbinds[MAX_CALLS];
  int nunbind;
  int unbind_without_io;
  struct {
    lr_listener_t l;
    lr_port_state_t s;
  } changes[MAX_CALLS];
  int nchange;
  struct {
    uint8_t family;
    uint16_t port;
  } taken[MAX_TAKEN];
  int ntaken;
  int no_ipv6;
  int open_standins;   /* bound and not yet unbound */
  uint16_t next_ephemeral;
  int io_token;        /* b->io points here */
} fake_t;

static int is_taken(const fake_t *f, uint8_t family, uint16_t port) {
  for (int i = 0; i < f->ntaken; i++)
    if (f->taken[i].family == family && f->taken[i].port == port) return 1;
  return 0;
}

static void take(fake_t *f, uint8_t family, uint16_t port) {
  assert_true(f->ntaken < MAX_TAKEN);
  f->taken[f->ntaken].family = family;
  f->taken[f->ntaken].port = port;
  f->ntaken++;
}

static void release(fake_t *f, uint8_t family, uint16_t port) {
  for (int i = 0; i < f->ntaken; i++)
    if (f->taken[i].family == family && f->taken[i].port == port) {
      f->taken[i] = f->taken[--f->ntaken];
      return;
    }
  fail_msg("port %u/%u was not taken", family, port);
}

static int fake_bind(lr_binding_t *b, uint16_t port, void *data) {
  fake_t *f = data;
  assert_true(f->nbind < MAX_CALLS);
  f->binds[f->nbind++] = (call_t){b->key.family, port, b};
  /* the table must never ask for a second stand-in on a bound binding */
  assert_null(b->io);
  if (b->key.family == 6 && f->no_ipv6) return LR_BIND_UNAVAILABLE;
  if (port == 0) port = f->next_ephemeral++;
  if (is_taken(f, b->key.family, port)) return LR_BIND_INUSE;
  take(f, b->key.family, port); /* our stand-in now holds the port */
  b->actual_port = port;
  b->io = &f->io_token;
  f->open_standins++;
  return LR_BIND_OK;
}

static void fake_unbind(lr_binding_t *b, void *data) {
  fake_t *f = data;
  assert_true(f->nunbind < MAX_CALLS);
  f->unbinds[f->nunbind++] = (call_t){b->key.family, b->actual_port, b};
  if (!b->io) {
    f->unbind_without_io++;
    return;
  }
  release(f, b->key.family, b->actual_port);
  b->io = NULL;
  f->open_standins--;
}

static void fake_state_changed(const lr_port_entry_t *e, lr_port_state_t s, void *data) {
  fake_t *f = data;
  assert_true(f->nchange < MAX_CALLS);
  f->changes[f->nchange].l = e->listener;
  f->changes[f->nchange].s = s;
  f->nchange++;
}

typedef struct {
  fake_t fake;
  lr_config_t cfg;
  lr_ports_t t;
} fixture_t;

static fixture_t fx;

static int setup(void **state) {
  (void)state;
  memset(&fx, 0, sizeof fx);
  fx.fake.next_ephemeral = 40000;
  lr_test_config_all_ports(&fx.cfg);
  lr_ports_ops_t ops = {.bind = fake_bind, .unbind = fake_unbind,
                        .state_changed = fake_state_changed, .data = &fx.fake};
  lr_ports_init(&fx.t, &fx.cfg, &ops);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  lr_ports_clear(&fx.t);
  /* whatever happened, clear leaves no stand-in open and never closes one
   * that was not open */
  assert_int_equal(fx.fake.open_standins, 0);
  assert_int_equal(fx.fake.unbind_without_io, 0);
  assert_int_equal(lr_ports_count(&fx.t), 0);
  assert_null(fx.t.entries);
  assert_null(fx.t.bindings);
  return 0;
}

static lr_listener_t v6(int loopback, uint16_t port, uint8_t flags) {
  lr_listener_t l;
  memset(&l, 0, sizeof l);
  l.family = 6;
  l.port = port;
  l.flags = flags;
  if (loopback) l.addr[15] = 1;
  return l;
}

static int changes_to(const lr_listener_t *l, lr_port_state_t s) {
  int n = 0;
  for (int i = 0; i < fx.fake.nchange; i++)
    n += lr_listener_cmp(&fx.fake.changes[i].l, l) == 0 && fx.fake.changes[i].s == s;
  return n;
}

/* ---- tests ------------------------------------------------------------- */

static void test_add_remove(void **state) {
  (void)state;
  lr_listener_t l = lr_test_v4(0, 0, 0, 0, 8000);
  lr_port_entry_t *e = lr_ports_add(&fx.t, &l);
  assert_non_null(e);
  assert_int_equal(lr_ports_count(&fx.t), 1);
  assert_int_equal(e->rule, LR_RULE_FORWARD);
  assert_int_equal(e->nb, 1);
  assert_int_equal(fx.fake.nbind, 1);
  assert_int_equal(fx.fake.binds[0].family, 4);
  assert_int_equal(fx.fake.binds[0].port, 8000);
  assert_int_equal(e->b[0]->state, LR_BINDING_BOUND);
  assert_int_equal(e->b[0]->actual_port, 8000);
  assert_int_equal(lr_ports_entry_state(e), LR_PORT_FORWARDING);
  assert_int_equal(lr_ports_conflicts(&fx.t), 0);
  assert_int_equal(fx.fake.open_standins, 1);
  /* adding the same listener again is idempotent */
  assert_ptr_equal(lr_ports_add(&fx.t, &l), e);
  assert_int_equal(fx.fake.nbind, 1);
  assert_int_equal(lr_ports_count(&fx.t), 1);

  assert_int_equal(lr_ports_del(&fx.t, &l), 0);
  assert_int_equal(fx.fake.nunbind, 1);
  assert_int_equal(fx.fake.unbinds[0].port, 8000);
  assert_int_equal(fx.fake.open_standins, 0);
  assert_int_equal(lr_ports_count(&fx.t), 0);
  assert_int_equal(lr_ports_del(&fx.t, &l), -1);
  assert_int_equal(fx.fake.nunbind, 1);
}

/* 0.0.0.0:P and 127.0.0.1:P want the same host socket: one bind, shared,
 * closed only when the last of them goes. */
static void test_shared_binding(void **state) {
  (void)state;
  lr_listener_t any = lr_test_v4(0, 0, 0, 0, 9000), lo = lr_test_v4(127, 0, 0, 1, 9000);
  lr_port_entry_t *e1 = lr_ports_add(&fx.t, &any);
  lr_port_entry_t *e2 = lr_ports_add(&fx.t, &lo);
  assert_non_null(e1);
  assert_non_null(e2);
  assert_ptr_not_equal(e1, e2);
  assert_int_equal(lr_ports_count(&fx.t), 2);
  assert_int_equal(fx.fake.nbind, 1);
  assert_ptr_equal(e1->b[0], e2->b[0]);
  assert_int_equal(e1->b[0]->listener_refs, 2);
  /* a dual-stack [::]:9000 shares the IPv4 one too and adds [::1] */
  lr_listener_t dual = v6(0, 9000, 0);
  lr_port_entry_t *e3 = lr_ports_add(&fx.t, &dual);
  assert_int_equal(e3->nb, 2);
  assert_int_equal(fx.fake.nbind, 2);
  assert_int_equal(fx.fake.binds[1].family, 6);
  lr_binding_t *b4 = e3->b[0]->key.family == 4 ? e3->b[0] : e3->b[1];
  assert_ptr_equal(b4, e1->b[0]);
  assert_int_equal(b4->listener_refs, 3);

  assert_int_equal(lr_ports_del(&fx.t, &any), 0);
  assert_int_equal(fx.fake.nunbind, 0);
  assert_int_equal(lr_ports_del(&fx.t, &dual), 0);
  assert_int_equal(fx.fake.nunbind, 1); /* only [::1]:9000 */
  assert_int_equal(fx.fake.unbinds[0].family, 6);
  assert_int_equal(lr_ports_entry_state(e2), LR_PORT_FORWARDING);
  assert_int_equal(e2->b[0]->state, LR_BINDING_BOUND);
  assert_int_equal(lr_ports_del(&fx.t, &lo), 0);
  assert_int_equal(fx.fake.nunbind, 2);
  assert_int_equal(fx.fake.open_standins, 0);
}

static void test_dual_stack_and_v6only(void **state) {
  (void)state;
  lr_listener_t dual = v6(0, 7000, 0), v6o = v6(0, 7001, LR_LISTENER_V6ONLY);
  lr_port_entry_t *e = lr_ports_add(&fx.t, &dual);
  assert_int_equal(e->nb, 2);
  assert_int_equal(fx.fake.nbind, 2);
  assert_int_not_equal(e->b[0]->key.family, e->b[1]->key.family);
  assert_int_equal(e->b[0]->key.port, 7000);
  assert_int_equal(e->b[1]->key.port, 7000);
  e = lr_ports_add(&fx.t, &v6o);
  assert_int_equal(e->nb, 1);
  assert_int_equal(e->b[0]->key.family, 6);
  assert_int_equal(fx.fake.nbind, 3);
  assert_int_equal(fx.fake.open_standins, 3);
}

static void test_not_forwarded_entries(void **state) {
  (void)state;
  lr_listener_t other = lr_test_v4(10, 0, 0, 5, 8000), resolver = lr_test_v4(127, 0, 0, 53, 53);
  fx.cfg.ignore_ports.n = 1;
  fx.cfg.ignore_ports.r[0].lo = 22;
  fx.cfg.ignore_ports.r[0].hi = 22;
  lr_listener_t ssh = lr_test_v4(0, 0, 0, 0, 22);
  lr_port_entry_t *e1 = lr_ports_add(&fx.t, &other);
  lr_port_entry_t *e2 = lr_ports_add(&fx.t, &resolver);
  lr_port_entry_t *e3 = lr_ports_add(&fx.t, &ssh);
  assert_non_null(e1);
  assert_non_null(e2);
  assert_non_null(e3);
  /* known to the table (status lists them) but no stand-ins */
  assert_int_equal(lr_ports_count(&fx.t), 3);
  assert_int_equal(fx.fake.nbind, 0);
  assert_int_equal(e1->nb, 0);
  assert_int_equal(e1->rule, LR_RULE_NOT_LOOPBACK);
  assert_int_equal(e3->rule, LR_RULE_IGNORED);
  assert_int_equal(lr_ports_entry_state(e1), LR_PORT_IGNORED);
  assert_int_equal(lr_ports_entry_state(e2), LR_PORT_IGNORED);
  assert_int_equal(lr_ports_entry_state(e3), LR_PORT_IGNORED);
  /* and the guest is told */
  assert_int_equal(changes_to(&ssh, LR_PORT_IGNORED), 1);
  assert_int_equal(lr_ports_del(&fx.t, &ssh), 0);
  assert_int_equal(fx.fake.nunbind, 0);
}

static void test_conflict_and_retry(void **state) {
  (void)state;
  take(&fx.fake, 4, 8080); /* another program on the host */
  lr_listener_t l = lr_test_v4(0, 0, 0, 0, 8080);
  lr_port_entry_t *e = lr_ports_add(&fx.t, &l);
  assert_non_null(e);
  assert_int_equal(e->b[0]->state, LR_BINDING_CONFLICT);
  assert_null(e->b[0]->io);
  assert_int_equal(lr_ports_entry_state(e), LR_PORT_CONFLICT);
  assert_int_equal(changes_to(&l, LR_PORT_CONFLICT), 1);
  assert_int_equal(lr_ports_conflicts(&fx.t), 1);
  /* a second listener sharing the conflicting binding is in conflict too */
  lr_listener_t lo = lr_test_v4(127, 0, 0, 1, 8080);
  lr_port_entry_t *e2 = lr_ports_add(&fx.t, &lo);
  assert_int_equal(lr_ports_entry_state(e2), LR_PORT_CONFLICT);
  assert_int_equal(changes_to(&lo, LR_PORT_CONFLICT), 1);
  assert_int_equal(lr_ports_conflicts(&fx.t), 1); /* one binding */

  /* still taken: retry keeps failing, no state change reported again */
  int binds = fx.fake.nbind, changes = fx.fake.nchange;
  assert_int_equal(lr_ports_retry_conflicts(&fx.t), 1);
  assert_int_equal(lr_ports_retry_conflicts(&fx.t), 1);
  assert_int_equal(fx.fake.nbind, binds + 2);
  assert_int_equal(fx.fake.nchange, changes);

  /* the other program exits: the next retry gets the port */
  release(&fx.fake, 4, 8080);
  assert_int_equal(lr_ports_retry_conflicts(&fx.t), 0);
  assert_int_equal(e->b[0]->state, LR_BINDING_BOUND);
  assert_int_equal(e->b[0]->actual_port, 8080);
  assert_int_equal(lr_ports_entry_state(e), LR_PORT_FORWARDING);
  assert_int_equal(lr_ports_entry_state(e2), LR_PORT_FORWARDING);
  assert_int_equal(changes_to(&l, LR_PORT_FORWARDING), 1);
  assert_int_equal(changes_to(&lo, LR_PORT_FORWARDING), 1);
  assert_int_equal(lr_ports_conflicts(&fx.t), 0);
  /* nothing left to retry: no bind attempts */
  binds = fx.fake.nbind;
  assert_int_equal(lr_ports_retry_conflicts(&fx.t), 0);
  assert_int_equal(fx.fake.nbind, binds);
}

/* Half a dual-stack listener in conflict makes the whole entry "conflict"
 * (the user's [::1] clients would reach the other program). */
static void test_partial_conflict(void **state) {
  (void)state;
  take(&fx.fake, 6, 3000);
  lr_listener_t dual = v6(0, 3000, 0);
  lr_port_entry_t *e = lr_ports_add(&fx.t, &dual);
  assert_int_equal(e->nb, 2);
  assert_int_equal(lr_ports_entry_state(e), LR_PORT_CONFLICT);
  assert_int_equal(fx.fake.open_standins, 1);
  release(&fx.fake, 6, 3000);
  assert_int_equal(lr_ports_retry_conflicts(&fx.t), 0);
  assert_int_equal(lr_ports_entry_state(e), LR_PORT_FORWARDING);
  assert_int_equal(fx.fake.open_standins, 2);
}

/* Removing a listener whose binding never bound must not "close" anything
 * and must stop the retries. */
static void test_remove_while_conflict(void **state) {
  (void)state;
  take(&fx.fake, 4, 5000);
  lr_listener_t l = lr_test_v4(0, 0, 0, 0, 5000);
  assert_non_null(lr_ports_add(&fx.t, &l));
  assert_int_equal(lr_ports_conflicts(&fx.t), 1);
  assert_int_equal(lr_ports_del(&fx.t, &l), 0);
  assert_int_equal(lr_ports_conflicts(&fx.t), 0);
  assert_int_equal(fx.fake.unbind_without_io, 0);
  int binds = fx.fake.nbind;
  assert_int_equal(lr_ports_retry_conflicts(&fx.t), 0);
  assert_int_equal(fx.fake.nbind, binds);
  release(&fx.fake, 4, 5000);
}

static void test_remap_on_conflict(void **state) {
  (void)state;
  fx.cfg.remap_on_conflict = 1;
  take(&fx.fake, 4, 8443);
  take(&fx.fake, 4, 8444);
  lr_listener_t l = lr_test_v4(127, 0, 0, 1, 8443);
  lr_port_entry_t *e = lr_ports_add(&fx.t, &l);
  /* the next free port above the wanted one: predictable, not random */
  assert_int_equal(fx.fake.nbind, 3);
  assert_int_equal(fx.fake.binds[0].port, 8443);
  assert_int_equal(fx.fake.binds[1].port, 8444);
  assert_int_equal(fx.fake.binds[2].port, 8445);
  release(&fx.fake, 4, 8444);
  assert_int_equal(e->b[0]->state, LR_BINDING_REMAPPED);
  assert_int_equal(e->b[0]->actual_port, 8445);
  assert_int_equal(e->b[0]->key.port, 8443);
  assert_int_equal(lr_ports_entry_state(e), LR_PORT_REMAPPED);
  assert_int_equal(changes_to(&l, LR_PORT_REMAPPED), 1);
  /* A remapped binding keeps asking for its wanted port... */
  assert_int_equal(lr_ports_conflicts(&fx.t), 1);
  assert_int_equal(lr_ports_retry_conflicts(&fx.t), 1);
  assert_int_equal(e->b[0]->state, LR_BINDING_REMAPPED);
  assert_int_equal(e->b[0]->actual_port, 8445);
  assert_int_equal(fx.fake.nunbind, 0);
  release(&fx.fake, 4, 8443);
  /* ...and moves back once it frees: the stand-by stand-in closes. */
  assert_int_equal(lr_ports_retry_conflicts(&fx.t), 0);
  assert_int_equal(e->b[0]->state, LR_BINDING_BOUND);
  assert_int_equal(e->b[0]->actual_port, 8443);
  assert_int_equal(fx.fake.nunbind, 1);
  assert_int_equal(fx.fake.unbinds[0].port, 8445); /* the port really bound */
  assert_int_equal(fx.fake.open_standins, 1);
  assert_int_equal(changes_to(&l, LR_PORT_FORWARDING), 1);
  assert_int_equal(lr_ports_del(&fx.t, &l), 0);
  assert_int_equal(fx.fake.nunbind, 2);
  assert_int_equal(fx.fake.unbinds[1].port, 8443);
  assert_int_equal(fx.fake.open_standins, 0);
}

/* A reload changes what a listener maps to: a binding the entry keeps is
 * not touched, one it loses closes, one it gains opens; the guest hears of
 * the new state. */
static void test_reconfigure(void **state) {
  (void)state;
  lr_listener_t dual = v6(0, 7000, 0); /* [::]:7000 dual-stack: both families */
  lr_listener_t v4 = lr_test_v4(0, 0, 0, 0, 7001);
  lr_port_entry_t *e = lr_ports_add(&fx.t, &dual);
  lr_ports_add(&fx.t, &v4);
  assert_int_equal(e->nb, 2);
  lr_binding_t *keep = e->b[0]->key.family == 4 ? e->b[0] : e->b[1];
  assert_int_equal(fx.fake.open_standins, 3);
  /* Nothing changed: nothing moves. */
  assert_int_equal(lr_ports_reconfigure(&fx.t), 0);
  assert_int_equal(fx.fake.nbind, 3);
  /* IPv6 off, 7001 ignored. */
  fx.cfg.ipv6 = 0;
  char err[80];
  assert_int_equal(lr_portset_parse(&fx.cfg.ignore_ports, "7001", err, sizeof err), 0);
  assert_int_equal(lr_ports_reconfigure(&fx.t), 2);
  assert_int_equal(e->nb, 1);
  assert_ptr_equal(e->b[0], keep); /* the IPv4 stand-in stayed */
  assert_int_equal(fx.fake.nbind, 3);
  assert_int_equal(fx.fake.open_standins, 1);
  assert_int_equal(lr_ports_entry_state(lr_ports_find(&fx.t, &v4)), LR_PORT_IGNORED);
  assert_int_equal(changes_to(&v4, LR_PORT_IGNORED), 1);
  /* And back. */
  fx.cfg.ipv6 = 1;
  fx.cfg.ignore_ports.n = 0;
  assert_int_equal(lr_ports_reconfigure(&fx.t), 2);
  assert_int_equal(fx.fake.open_standins, 3);
  assert_int_equal(changes_to(&v4, LR_PORT_FORWARDING), 1);
  /* A new address: every stand-in closes and opens again. */
  lr_ports_rebind(&fx.t);
  assert_int_equal(fx.fake.open_standins, 3);
  assert_int_equal(fx.fake.nbind, 8);
  lr_ports_clear(&fx.t);
  assert_int_equal(fx.fake.open_standins, 0);
}

/* A host without IPv6 loopback: [::1] stand-ins are UNAVAILABLE and never
 * retried (retrying cannot help), the IPv4 side of a dual-stack listener
 * still forwards. */
static void test_unavailable_not_retried(void **state) {
  (void)state;
  fx.fake.no_ipv6 = 1;
  lr_listener_t dual = v6(0, 6000, 0), lo6 = v6(1, 6001, 0);
  lr_port_entry_t *e1 = lr_ports_add(&fx.t, &dual);
  lr_port_entry_t *e2 = lr_ports_add(&fx.t, &lo6);
  assert_int_equal(fx.fake.nbind, 3);
  lr_binding_t *b6 = e1->b[0]->key.family == 6 ? e1->b[0] : e1->b[1];
  assert_int_equal(b6->state, LR_BINDING_UNAVAILABLE);
  assert_int_equal(e2->b[0]->state, LR_BINDING_UNAVAILABLE);
  assert_int_equal(lr_ports_entry_state(e1), LR_PORT_FORWARDING);
  assert_int_not_equal(lr_ports_entry_state(e2), LR_PORT_FORWARDING);
  assert_int_not_equal(lr_ports_entry_state(e2), LR_PORT_CONFLICT);
  assert_int_equal(lr_ports_conflicts(&fx.t), 0);
  assert_int_equal(lr_ports_retry_conflicts(&fx.t), 0);
  assert_int_equal(fx.fake.nbind, 3);
}

/* Resync after a reconnect: survivors keep their stand-ins (no unbind and
 * rebind, which would drop connections being accepted), stale entries go,
 * new ones are added. */
static void test_sync_sweep(void **state) {
  (void)state;
  lr_listener_t a = lr_test_v4(0, 0, 0, 0, 1000), b = lr_test_v4(127, 0, 0, 1, 1001), c = v6(0, 1002, 0),
                d = lr_test_v4(0, 0, 0, 0, 1003);
  lr_port_entry_t *ea = lr_ports_add(&fx.t, &a);
  lr_binding_t *ba = ea->b[0];
  assert_non_null(lr_ports_add(&fx.t, &b));
  assert_non_null(lr_ports_add(&fx.t, &c));
  assert_int_equal(fx.fake.nbind, 4);

  lr_ports_sync_begin(&fx.t);
  /* during the sync the old state stays fully in place */
  assert_int_equal(lr_ports_count(&fx.t), 3);
  assert_ptr_equal(lr_ports_add(&fx.t, &a), ea);
  assert_non_null(lr_ports_add(&fx.t, &d));
  assert_int_equal(fx.fake.nbind, 5); /* only d's */
  assert_int_equal(fx.fake.nunbind, 0);
  assert_int_equal(lr_ports_sync_end(&fx.t), 2); /* b and c */
  assert_int_equal(lr_ports_count(&fx.t), 2);
  assert_int_equal(fx.fake.nunbind, 3);          /* 1001 v4, 1002 v4 + v6 */
  for (int i = 0; i < fx.fake.nunbind; i++) {
    assert_ptr_not_equal(fx.fake.unbinds[i].b, ba);
    assert_true(fx.fake.unbinds[i].port == 1001 || fx.fake.unbinds[i].port == 1002);
  }
  assert_ptr_equal(ea->b[0], ba);
  assert_int_equal(ba->state, LR_BINDING_BOUND);
  assert_int_equal(lr_ports_del(&fx.t, &b), -1);

  /* an empty resync (the guest has no listeners now) sweeps everything */
  lr_ports_sync_begin(&fx.t);
  assert_int_equal(lr_ports_sync_end(&fx.t), 2);
  assert_int_equal(lr_ports_count(&fx.t), 0);
  assert_int_equal(fx.fake.open_standins, 0);
}

/* A shared binding survives a sync in which only one of its listeners
 * remains. */
static void test_sync_keeps_shared(void **state) {
  (void)state;
  lr_listener_t any = lr_test_v4(0, 0, 0, 0, 4000), lo = lr_test_v4(127, 0, 0, 1, 4000);
  lr_port_entry_t *e = lr_ports_add(&fx.t, &any);
  lr_ports_add(&fx.t, &lo);
  lr_binding_t *b = e->b[0];
  lr_ports_sync_begin(&fx.t);
  lr_ports_add(&fx.t, &lo);
  assert_int_equal(lr_ports_sync_end(&fx.t), 1);
  assert_int_equal(fx.fake.nunbind, 0);
  assert_int_equal(fx.fake.nbind, 1);
  assert_int_equal(b->listener_refs, 1);
  assert_int_equal(b->state, LR_BINDING_BOUND);
}

/* A relayed connection holds its binding: the listener goes, the stand-in
 * closes, the counters stay valid until the connection's unref frees them. */
static void test_binding_outlives_listener(void **state) {
  (void)state;
  lr_listener_t l = lr_test_v4(0, 0, 0, 0, 2000);
  lr_port_entry_t *e = lr_ports_add(&fx.t, &l);
  lr_binding_t *b = e->b[0];
  lr_binding_ref(b); /* a connection accepted on the stand-in */
  b->connections++;
  b->active++;
  assert_int_equal(b->refs, 2);
  assert_int_equal(lr_ports_del(&fx.t, &l), 0);
  /* the stand-in listener is closed at once... */
  assert_int_equal(fx.fake.nunbind, 1);
  assert_int_equal(fx.fake.open_standins, 0);
  /* ...but the binding is still there for the connection */
  assert_int_equal(b->state, LR_BINDING_CLOSED);
  assert_null(b->table);
  assert_null(fx.t.bindings);
  b->bytes_to_guest += 100;
  b->bytes_to_host += 200;

  /* the guest listens again on the same port before the old connection
   * ends: a fresh stand-in, not the closed binding */
  lr_port_entry_t *e2 = lr_ports_add(&fx.t, &l);
  assert_ptr_not_equal(e2->b[0], b);
  assert_int_equal(e2->b[0]->state, LR_BINDING_BOUND);
  assert_int_equal(fx.fake.nbind, 2);

  b->active--;
  lr_binding_unref(b); /* freed here: valgrind/asan would flag a leak or a use */
  assert_int_equal(e2->b[0]->state, LR_BINDING_BOUND);
}

static void test_clear_with_live_connections(void **state) {
  (void)state;
  lr_listener_t l1 = lr_test_v4(0, 0, 0, 0, 2100), l2 = v6(0, 2101, 0);
  lr_port_entry_t *e1 = lr_ports_add(&fx.t, &l1);
  lr_port_entry_t *e2 = lr_ports_add(&fx.t, &l2);
  lr_binding_t *held = e1->b[0];
  lr_binding_t *held6 = e2->b[1];
  lr_binding_ref(held);
  lr_binding_ref(held6);
  lr_binding_ref(held6);
  lr_ports_clear(&fx.t);
  assert_int_equal(lr_ports_count(&fx.t), 0);
  assert_int_equal(fx.fake.nunbind, 3);
  assert_int_equal(fx.fake.open_standins, 0);
  assert_int_equal(held->state, LR_BINDING_CLOSED);
  assert_null(held->table);
  lr_binding_unref(held);
  lr_binding_unref(held6);
  assert_int_equal(held6->refs, 1);
  lr_binding_unref(held6);
  /* the table is reusable after clear */
  assert_non_null(lr_ports_add(&fx.t, &l1));
  assert_int_equal(fx.fake.open_standins, 1);
}

/* Entries are kept sorted (status output is stable for humans and tests). */
static void test_sorted_entries(void **state) {
  (void)state;
  const uint16_t ports[] = {9000, 80, 65535, 443, 1, 8080};
  for (size_t i = 0; i < sizeof ports / sizeof ports[0]; i++) {
    lr_listener_t l = lr_test_v4(0, 0, 0, 0, ports[i]);
    assert_non_null(lr_ports_add(&fx.t, &l));
    lr_listener_t m = v6(1, ports[i], 0);
    assert_non_null(lr_ports_add(&fx.t, &m));
  }
  assert_int_equal(lr_ports_count(&fx.t), 12);
  const lr_port_entry_t *prev = NULL;
  for (const lr_port_entry_t *e = fx.t.entries; e; e = e->next) {
    if (prev) assert_true(lr_listener_cmp(&prev->listener, &e->listener) < 0);
    prev = e;
  }
}

/* A burst of churn with conflicts mixed in: invariants hold throughout. */
static void test_churn(void **state) {
  (void)state;
  take(&fx.fake, 4, 3);
  for (int round = 0; round < 4; round++) {
    lr_ports_sync_begin(&fx.t);
    for (uint16_t p = 1; p <= 6; p++) {
      if ((p + round) % 3 == 0) continue;
      lr_listener_t l = (p % 2) ? lr_test_v4(0, 0, 0, 0, p) : v6(0, p, 0);
      assert_non_null(lr_ports_add(&fx.t, &l));
    }
    lr_ports_sync_end(&fx.t);
    fx.fake.nbind = fx.fake.nunbind = fx.fake.nchange = 0;
    int open = 0;
    for (const lr_binding_t *b = fx.t.bindings; b; b = b->next) {
      assert_true(b->listener_refs > 0);
      assert_ptr_equal(b->table, &fx.t);
      open += b->io != NULL;
      assert_int_equal(b->io != NULL, b->state == LR_BINDING_BOUND || b->state == LR_BINDING_REMAPPED);
    }
    assert_int_equal(open, fx.fake.open_standins);
  }
  release(&fx.fake, 4, 3);
}

/* The added/removed hooks (the watch stream's port-added/port-removed):
 * added comes after the entry's first state (so a port born in conflict is
 * announced with it, not as a change), removed for every way an entry
 * goes; the owner is kept, and updated by a re-add that names one. */
typedef struct {
  char log[256];
  lr_port_state_t first; /* the state an entry had when added ran */
} hooks_t;

static hooks_t hk;

static void hook_added(lr_port_entry_t *e, void *data) {
  (void)data;
  hk.first = lr_ports_entry_state(e);
  size_t n = strlen(hk.log);
  snprintf(hk.log + n, sizeof hk.log - n, "+%u", e->listener.port);
}

static void hook_removed(const lr_port_entry_t *e, void *data) {
  (void)data;
  size_t n = strlen(hk.log);
  snprintf(hk.log + n, sizeof hk.log - n, "-%u", e->listener.port);
}

static void hook_changed(const lr_port_entry_t *e, lr_port_state_t s, void *data) {
  size_t n = strlen(hk.log);
  snprintf(hk.log + n, sizeof hk.log - n, "~%u", e->listener.port);
  fake_state_changed(e, s, data);
}

static void test_added_removed_hooks(void **state) {
  (void)state;
  memset(&hk, 0, sizeof hk);
  lr_ports_clear(&fx.t);
  lr_ports_ops_t ops = {.bind = fake_bind, .unbind = fake_unbind, .state_changed = hook_changed,
                        .data = &fx.fake, .added = hook_added, .removed = hook_removed};
  lr_ports_init(&fx.t, &fx.cfg, &ops);
  take(&fx.fake, 4, 7000);
  lr_listener_t a = lr_test_v4(0, 0, 0, 0, 7000), b = lr_test_v4(0, 0, 0, 0, 7001);
  lr_proc_owner_t o;
  memset(&o, 0, sizeof o);
  o.pid = 99;
  snprintf(o.cmd, sizeof o.cmd, "srv");
  lr_port_entry_t *e = lr_ports_add_owned(&fx.t, &a, &o);
  assert_non_null(e);
  assert_int_equal(hk.first, LR_PORT_CONFLICT);
  assert_int_equal(e->owner->pid, 99);
  assert_non_null(lr_ports_add(&fx.t, &b));
  assert_null(lr_ports_find(&fx.t, &b)->owner);
  assert_string_equal(hk.log, "~7000+7000+7001");
  /* the port frees: a change, after the add */
  release(&fx.fake, 4, 7000);
  lr_ports_retry_conflicts(&fx.t);
  assert_string_equal(hk.log, "~7000+7000+7001~7000");
  /* a resync's re-add updates the owner and announces nothing */
  lr_ports_sync_begin(&fx.t);
  o.pid = 100;
  assert_ptr_equal(lr_ports_add_owned(&fx.t, &a, &o), e);
  assert_int_equal(e->owner->pid, 100);
  assert_int_equal(lr_ports_sync_end(&fx.t), 1); /* b swept */
  assert_string_equal(hk.log, "~7000+7000+7001~7000-7001");
  assert_int_equal(lr_ports_del(&fx.t, &a), 0);
  assert_string_equal(hk.log, "~7000+7000+7001~7000-7001-7000");
  assert_non_null(lr_ports_add(&fx.t, &b));
  lr_ports_clear(&fx.t);
  assert_string_equal(hk.log, "~7000+7000+7001~7000-7001-7000+7001-7001");
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_add_remove),
      T(test_shared_binding),
      T(test_dual_stack_and_v6only),
      T(test_not_forwarded_entries),
      T(test_conflict_and_retry),
      T(test_partial_conflict),
      T(test_remove_while_conflict),
      T(test_remap_on_conflict),
      T(test_reconfigure),
      T(test_unavailable_not_retried),
      T(test_sync_sweep),
      T(test_sync_keeps_shared),
      T(test_binding_outlives_listener),
      T(test_clear_with_live_connections),
      T(test_sorted_entries),
      T(test_churn),
      T(test_added_removed_hooks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
