/* Sockets made inside a namespace guest's network namespace, for one hop
 * without the agent (lr_host_pal_t.nsock_*).
 *
 * lorelayd connects to a --netns guest's server itself: a socket belongs to
 * the network namespace of the thread that created it, for life, so a
 * socket made by a thread that entered the guest's namespace reaches the
 * guest's 127.0.0.1 and [::1] from any thread. No descriptor ever comes
 * from the agent (a guest could pass anything: a raw socket, a socket to
 * another port or to a host-only service, or thousands of them), and a new
 * connection costs no round trip to it.
 *
 * Why a pool and a thread of its own: setns() moves only the calling
 * thread, but the libuv loop thread must stay in the host's namespace (its
 * stand-ins listen on the host's loopback), and entering and leaving on
 * every connection would cost two setns calls and a worker hand-off each.
 * So one thread per guest enters the namespace once, stays there, and keeps
 * a few non-blocking sockets of each kind (TCP and UDP, IPv4 and IPv6)
 * made in advance; the loop takes one, connects it and relays in the same
 * turn (loopback completes a connect inside connect()). The thread refills
 * a kind when the loop has taken it down to half, so its wakeups are one
 * per POOL_LOW connections, not one per connection. A kind is filled only
 * once asked for (a guest without IPv6 or UDP costs no socket).
 * When the loop finds a kind empty it gets UV_EAGAIN and the thread says
 * so through a uv_async once it has made one (or failed to): the core then
 * retries the connections that waited.
 *
 * Ownership: the pool (lr_nsock_t) is allocated by nsock_open and owned by
 * the host core's guest, which ends it with nsock_close (on the loop
 * thread); its memory goes in the async handle's close callback. A pooled
 * socket belongs to the pool until nsock_take hands it out; from then the
 * caller owns it (it gives it to uv_tcp_open/uv_udp_open, or closes it
 * with sock_close). nsock_close closes the sockets still pooled. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lr_log.h"
#include "lr_posix.h"

#define POOL_MAX 16   /* sockets kept per kind */
#define POOL_LOW 8    /* the thread refills a kind taken down to this */
#define RETRY_MS 200  /* after a failed socket(): EMFILE, no IPv6 */
#define NKINDS 4

struct lr_nsock_s {
  uv_async_t async;  /* the thread -> the loop: sockets came after a miss */
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  void (*ready)(void *data);
  void *data;
  int nsfd;          /* the namespace, until the thread entered it */
  int stop;
  int started;
  int entered;       /* 1: in the namespace; -errno: setns failed */
  int missed;        /* the loop found a kind empty: async when refilled */
  struct {
    int want;        /* asked for at least once: keep it filled */
    int n;
    int err;         /* the last socket()'s error (negative), 0 after one worked */
    uint64_t retry_at; /* after an error: not before this (ms, CLOCK_MONOTONIC) */
    int fds[POOL_MAX];
  } k[NKINDS];
};

static int kind_of(int family, int udp) { return (family == AF_INET6 ? 1 : 0) + (udp ? 2 : 0); }

static int kind_family(int k) { return k & 1 ? AF_INET6 : AF_INET; }

static int kind_type(int k) { return k & 2 ? SOCK_DGRAM : SOCK_STREAM; }

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A kind the thread should add to now (or -1): the emptiest wanted one,
 * unless its last try failed and its retry time has not come; *wake_at
 * gets the earliest such retry time (0: none). A deadline, not a flag: the
 * loop's signals must not postpone a retry for ever under steady load. */
static int next_kind(lr_nsock_t *p, uint64_t now, uint64_t *wake_at) {
  int best = -1;
  *wake_at = 0;
  for (int k = 0; k < NKINDS; k++) {
    if (!p->k[k].want || p->k[k].n >= POOL_MAX) continue;
    if (p->k[k].err && now < p->k[k].retry_at) {
      if (!*wake_at || p->k[k].retry_at < *wake_at) *wake_at = p->k[k].retry_at;
      continue;
    }
    if (best < 0 || p->k[k].n < p->k[best].n) best = k;
  }
  return best;
}

static void *pool_thread(void *arg) {
  lr_nsock_t *p = arg;
  int entered = setns(p->nsfd, CLONE_NEWNET) == 0 ? 1 : -errno;
  pthread_mutex_lock(&p->mu);
  close(p->nsfd);
  p->nsfd = -1;
  p->entered = entered;
  pthread_cond_broadcast(&p->cv);
  while (!p->stop && p->entered == 1) {
    uint64_t wake_at, now = now_ms();
    int k = next_kind(p, now, &wake_at);
    if (k < 0) {
      /* Nothing to make: sleep until the loop takes a kind to POOL_LOW,
       * or, with a failed kind, until its retry time. */
      if (wake_at) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (wake_at - now) * 1000000ULL;
        ts.tv_sec += (time_t)(ns / 1000000000ULL);
        ts.tv_nsec = (long)(ns % 1000000000ULL);
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
      } else {
        pthread_cond_wait(&p->cv, &p->mu);
      }
      continue;
    }
    pthread_mutex_unlock(&p->mu);
    int fd = socket(kind_family(k), kind_type(k) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int err = fd < 0 ? -errno : 0;
    pthread_mutex_lock(&p->mu);
    if (fd >= 0) p->k[k].fds[p->k[k].n++] = fd;
    int was = p->k[k].err;
    p->k[k].err = err;
    /* Tell the loop after a miss (connections wait), and once when a kind
     * starts failing (they must not wait for ever). */
    if (p->missed && (fd >= 0 || !was)) {
      p->missed = 0;
      uv_async_send(&p->async);
    }
    if (err) p->k[k].retry_at = now_ms() + RETRY_MS;
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

static void pool_free(uv_handle_t *h) { free(h->data); }

static void on_async(uv_async_t *a) {
  lr_nsock_t *p = a->data;
  if (p->ready) p->ready(p->data);
}

lr_nsock_t *lr_posix_nsock_open(uv_loop_t *loop, const char *netns, void (*ready)(void *),
                                void *data, char *err, size_t errlen) {
  char path[300];
  lr_nsock_t *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  /* A name, as `ip netns` keeps them; a path (a test's
   * /proc/self/task/TID/ns/net) as it is. */
  snprintf(path, sizeof path, netns[0] == '/' ? "%s" : "/run/netns/%s", netns);
  p->nsfd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO cannot block it */
  if (p->nsfd < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    free(p);
    return NULL;
  }
  p->ready = ready;
  p->data = data;
  pthread_mutex_init(&p->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* retry times survive clock steps */
  pthread_cond_init(&p->cv, &ca);
  pthread_condattr_destroy(&ca);
  int rc = uv_async_init(loop, &p->async, on_async);
  if (rc) {
    snprintf(err, errlen, "uv_async_init: %s", uv_strerror(rc));
    close(p->nsfd);
    free(p);
    return NULL;
  }
  p->async.data = p;
  uv_unref((uv_handle_t *)&p->async); /* a pool alone keeps no loop running */
  /* The thread's own signal mask: none of the daemon's signals go there. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = pthread_create(&p->thread, NULL, pool_thread, p);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    snprintf(err, errlen, "cannot start the namespace's socket thread: %s", strerror(rc));
    close(p->nsfd);
    p->ready = NULL;
    uv_close((uv_handle_t *)&p->async, pool_free);
    return NULL;
  }
  p->started = 1;
  /* Wait for setns: a namespace we cannot enter is an error now, not a
   * reset per connection later. */
  pthread_mutex_lock(&p->mu);
  while (!p->entered) pthread_cond_wait(&p->cv, &p->mu);
  int entered = p->entered;
  pthread_mutex_unlock(&p->mu);
  if (entered != 1) {
    snprintf(err, errlen, "cannot enter network namespace %s: %s", netns, strerror(-entered));
    lr_posix_nsock_close(p);
    return NULL;
  }
  return p;
}

int lr_posix_nsock_take(lr_nsock_t *p, const struct sockaddr *sa, int udp, uv_os_sock_t *out) {
  int k = kind_of(sa->sa_family, udp), fd = -1, err = 0, wake = 0;
  pthread_mutex_lock(&p->mu);
  if (p->k[k].n > 0) {
    fd = p->k[k].fds[--p->k[k].n];
  } else {
    err = p->k[k].err ? p->k[k].err : UV_EAGAIN;
    p->missed = 1;
  }
  if (!p->k[k].want || p->k[k].n == POOL_LOW || fd < 0) wake = 1;
  p->k[k].want = 1;
  pthread_mutex_unlock(&p->mu);
  if (wake) pthread_cond_signal(&p->cv);
  if (fd < 0) return err;
  socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                            : sizeof(struct sockaddr_in);
  int rc;
  do
    rc = connect(fd, sa, len);
  while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno != EINPROGRESS) {
    int e = -errno;
    close(fd);
    return e;
  }
  *out = fd;
  return rc == 0 ? 0 : 1;
}

void lr_posix_nsock_close(lr_nsock_t *p) {
  if (!p) return;
  if (p->started) {
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_mutex_unlock(&p->mu);
    pthread_cond_signal(&p->cv);
    /* The thread only ever makes one socket between checks: short. */
    pthread_join(p->thread, NULL);
  }
  for (int k = 0; k < NKINDS; k++)
    while (p->k[k].n > 0) close(p->k[k].fds[--p->k[k].n]);
  if (p->nsfd >= 0) close(p->nsfd);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  p->ready = NULL;
  uv_close((uv_handle_t *)&p->async, pool_free);
}
