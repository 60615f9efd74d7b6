/* The eBPF listener trigger's user side (see lr_bpfwatch.h): open the
 * skeleton that cmake/LorelayBpf.cmake generated, tell the program which
 * network namespace is ours, load, attach, and drive the ring buffer from
 * the libuv loop.
 *
 * libbpf's own messages go to the agent's log at debug level; the last
 * warning is kept, because when a load fails it is the line that says why
 * (no BTF, a verifier complaint), and the agent logs exactly one line for
 * the fallback to polling. */
#include "lr_bpfwatch.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_log.h"

#ifndef LR_HAVE_BPF

int lr_bpfwatch_compiled(void) { return 0; }

lr_bpfwatch_t *lr_bpfwatch_start(uv_loop_t *loop, lr_bpfwatch_event_fn on_event,
                                 lr_bpfwatch_fail_fn on_fail, void *data, char *err,
                                 size_t errlen) {
  (void)loop;
  (void)on_event;
  (void)on_fail;
  (void)data;
  snprintf(err, errlen,
           "this lorelay-agent was built without eBPF support "
           "(clang, bpftool or libbpf-dev were missing at build time)");
  return NULL;
}

void lr_bpfwatch_close(lr_bpfwatch_t *w) { (void)w; }

uint64_t lr_bpfwatch_dropped(const lr_bpfwatch_t *w) {
  (void)w;
  return 0;
}

#else /* LR_HAVE_BPF */

#include <sys/stat.h>
#include <bpf/libbpf.h>

#include "listen_trace.h"
#include "listen_trace.skel.h"

struct lr_bpfwatch_s {
  uv_poll_t poll;
  int poll_open;
  int failed;
  struct listen_trace_bpf *skel;
  struct ring_buffer *rb;
  lr_bpfwatch_event_fn on_event;
  lr_bpfwatch_fail_fn on_fail;
  void *data;
};

int lr_bpfwatch_compiled(void) { return 1; }

/* ---- libbpf's messages ------------------------------------------------- */

/* The first warning since the start that says more than "it failed". */
static char libbpf_why[200];

static int on_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap) {
  static const char *const generic[] = {"failed to load BPF skeleton", "failed to load object",
                                        "Failed to bump RLIMIT_MEMLOCK"};
  char line[512];
  if (level == LIBBPF_DEBUG) return 0; /* every relocation, every map: too much even for debug */
  vsnprintf(line, sizeof line, fmt, ap);
  size_t n = strlen(line);
  while (n && (line[n - 1] == '\n' || line[n - 1] == ' ')) line[--n] = 0;
  const char *p = strncmp(line, "libbpf: ", 8) == 0 ? line + 8 : line;
  if (!*p) return 0;
  LR_DEBUG("libbpf: %s", p);
  if (level != LIBBPF_WARN || libbpf_why[0]) return 0;
  for (size_t i = 0; i < sizeof generic / sizeof generic[0]; i++)
    if (strncmp(p, generic[i], strlen(generic[i])) == 0) return 0;
  n = strlen(p) < sizeof libbpf_why ? strlen(p) : sizeof libbpf_why - 1;
  memcpy(libbpf_why, p, n);
  libbpf_why[n] = 0;
  return 0;
}

/* "what failed: strerror", with a hint for the usual causes, or libbpf's
 * own first complaint. */
static void say_why(char *err, size_t errlen, const char *what, int e) {
  if (e < 0) e = -e;
  if (e == EPERM || e == EACCES)
    snprintf(err, errlen, "%s failed: %s (needs root, or CAP_BPF and CAP_PERFMON)", what,
             strerror(e));
  else if (libbpf_why[0])
    snprintf(err, errlen, "%s failed: %s; libbpf: %s", what, strerror(e), libbpf_why);
  else
    snprintf(err, errlen, "%s failed: %s", what, strerror(e));
}

/* ---- the ring buffer in the loop --------------------------------------- */

static int on_record(void *ctx, void *rec, size_t size) {
  lr_bpfwatch_t *w = ctx;
  struct lt_event e;
  if (size < sizeof e) return 0; /* not ours; the dump will tell anyway */
  memcpy(&e, rec, sizeof e);
  lr_bpfwatch_event_t ev;
  ev.family = e.family == 10 ? 6 : 4; /* AF_INET6 : AF_INET */
  ev.port = e.port;
  ev.listening = e.newstate == LT_TCP_LISTEN;
  w->on_event(w->data, &ev);
  return 0;
}

static void fail(lr_bpfwatch_t *w, const char *why) {
  if (w->failed) return;
  w->failed = 1;
  if (w->poll_open) uv_poll_stop(&w->poll);
  w->on_fail(w->data, why);
}

static void on_readable(uv_poll_t *h, int status, int events) {
  lr_bpfwatch_t *w = h->data;
  char why[200];
  (void)events;
  if (status < 0) {
    snprintf(why, sizeof why, "polling the eBPF ring buffer failed: %s", uv_strerror(status));
    fail(w, why);
    return;
  }
  /* Every record queued so far, each handed to on_event; the owner
   * coalesces them into one dump. */
  int n = ring_buffer__consume(w->rb);
  if (n < 0 && n != -EINTR) {
    snprintf(why, sizeof why, "reading the eBPF ring buffer failed: %s", strerror(-n));
    fail(w, why);
  }
}

static void destroy(lr_bpfwatch_t *w) {
  ring_buffer__free(w->rb); /* both accept NULL */
  listen_trace_bpf__destroy(w->skel);
  free(w);
}

static void on_poll_closed(uv_handle_t *h) { destroy(h->data); }

/* ---- start and stop ---------------------------------------------------- */

lr_bpfwatch_t *lr_bpfwatch_start(uv_loop_t *loop, lr_bpfwatch_event_fn on_event,
                                 lr_bpfwatch_fail_fn on_fail, void *data, char *err,
                                 size_t errlen) {
  struct stat st;
  if (stat("/proc/self/ns/net", &st) != 0) {
    snprintf(err, errlen, "cannot identify this network namespace: /proc/self/ns/net: %s",
             strerror(errno));
    return NULL;
  }
  lr_bpfwatch_t *w = calloc(1, sizeof *w);
  if (!w) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  w->on_event = on_event;
  w->on_fail = on_fail;
  w->data = data;
  libbpf_set_print(on_libbpf_print);
  libbpf_why[0] = 0;

  int rc;
  w->skel = listen_trace_bpf__open();
  if (!w->skel) {
    say_why(err, errlen, "opening the eBPF program", errno);
    goto fail;
  }
  w->skel->rodata->target_netns_ino = (uint32_t)st.st_ino;
  if ((rc = listen_trace_bpf__load(w->skel)) != 0) {
    say_why(err, errlen, "loading the eBPF program", rc);
    goto fail;
  }
  if ((rc = listen_trace_bpf__attach(w->skel)) != 0) {
    say_why(err, errlen, "attaching to the inet_sock_set_state tracepoint", rc);
    goto fail;
  }
  w->rb = ring_buffer__new(bpf_map__fd(w->skel->maps.events), on_record, w, NULL);
  if (!w->rb) {
    say_why(err, errlen, "opening the eBPF ring buffer", errno);
    goto fail;
  }
  if ((rc = uv_poll_init(loop, &w->poll, ring_buffer__epoll_fd(w->rb))) != 0) {
    snprintf(err, errlen, "cannot poll the eBPF ring buffer: %s", uv_strerror(rc));
    goto fail;
  }
  w->poll.data = w;
  w->poll_open = 1;
  if ((rc = uv_poll_start(&w->poll, UV_READABLE, on_readable)) != 0) {
    snprintf(err, errlen, "cannot poll the eBPF ring buffer: %s", uv_strerror(rc));
    lr_bpfwatch_close(w);
    return NULL;
  }
  return w;

fail:
  destroy(w);
  return NULL;
}

void lr_bpfwatch_close(lr_bpfwatch_t *w) {
  if (!w) return;
  /* Detach first: no more records, whatever the loop does next. */
  listen_trace_bpf__detach(w->skel);
  if (w->poll_open) {
    if (!uv_is_closing((uv_handle_t *)&w->poll)) uv_close((uv_handle_t *)&w->poll, on_poll_closed);
    return;
  }
  destroy(w);
}

uint64_t lr_bpfwatch_dropped(const lr_bpfwatch_t *w) {
  return w && w->skel && w->skel->bss ? w->skel->bss->dropped : 0;
}

#endif /* LR_HAVE_BPF */
