/* The eBPF listener trigger's user side (see lr_bpfwatch.h): open the
 * skeleton that cmake/LorelayBpf.cmake generated, tell the programs which
 * network namespace is ours, load, attach, and drive the ring buffer from
 * the libuv loop.
 *
 * The UDP hooks ride in the same object but must never cost the TCP
 * trigger its place: they are loaded only when a cgroup2 mount and the
 * netns cookie are found, a load that fails with them is retried without
 * them, and they are attached (bpf_link, so they go with the agent however
 * it ends) after the tracepoint works.
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

int lr_bpfwatch_udp(const lr_bpfwatch_t *w, const char **why) {
  (void)w;
  if (why) *why = "built without eBPF support";
  return 0;
}

uint64_t lr_bpfwatch_dropped(const lr_bpfwatch_t *w) {
  (void)w;
  return 0;
}

#else /* LR_HAVE_BPF */

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <bpf/libbpf.h>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71 /* Linux 5.14; older headers lack it */
#endif

#include "listen_trace.h"
#include "listen_trace.skel.h"

struct lr_bpfwatch_s {
  uv_poll_t poll;
  int poll_open;
  int failed;
  struct listen_trace_bpf *skel;
  struct ring_buffer *rb;
  struct bpf_link *udp_links[3]; /* post_bind4, post_bind6, sock_release; all or none */
  char udp_why[512];             /* where the UDP hooks are attached, or why not */
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

/* "what failed: strerror", with a hint for the usual causes (caps: the
 * capabilities it needs), or libbpf's own first complaint. EACCES is also
 * how the verifier refuses a program, and then libbpf has said more. */
static void say_why_caps(char *err, size_t errlen, const char *what, int e, const char *caps) {
  if (e < 0) e = -e;
  if (e == EPERM || (e == EACCES && !libbpf_why[0]))
    snprintf(err, errlen, "%s failed: %s (needs root, or %s)", what, strerror(e), caps);
  else if (libbpf_why[0])
    snprintf(err, errlen, "%s failed: %s; libbpf: %s", what, strerror(e), libbpf_why);
  else
    snprintf(err, errlen, "%s failed: %s", what, strerror(e));
}

static void say_why(char *err, size_t errlen, const char *what, int e) {
  say_why_caps(err, errlen, what, e, "CAP_BPF and CAP_PERFMON");
}

/* The cgroup socket hooks are network programs: loading and attaching
 * them takes CAP_NET_ADMIN as well. */
#define UDP_CAPS "CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"

/* ---- the ring buffer in the loop --------------------------------------- */

static int on_record(void *ctx, void *rec, size_t size) {
  lr_bpfwatch_t *w = ctx;
  struct lt_event e;
  if (size < sizeof e) return 0; /* not ours; the dump will tell anyway */
  memcpy(&e, rec, sizeof e);
  lr_bpfwatch_event_t ev;
  ev.family = e.family == 10 ? 6 : 4; /* AF_INET6 : AF_INET */
  ev.port = e.port;
  ev.udp = e.proto == LT_IPPROTO_UDP;
  ev.listening = ev.udp ? e.newstate == LT_UDP_BOUND : e.newstate == LT_TCP_LISTEN;
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

static void udp_detach(lr_bpfwatch_t *w) {
  for (int i = 0; i < 3; i++) {
    bpf_link__destroy(w->udp_links[i]); /* accepts NULL */
    w->udp_links[i] = NULL;
  }
}

static void destroy(lr_bpfwatch_t *w) {
  udp_detach(w);
  ring_buffer__free(w->rb); /* both accept NULL */
  listen_trace_bpf__destroy(w->skel);
  free(w);
}

static void on_poll_closed(uv_handle_t *h) { destroy(h->data); }

/* ---- the UDP hooks ------------------------------------------------------ */

/* Undoes the kernel's octal escapes in a mountinfo path (\040 for a space). */
static void unescape(char *p) {
  char *o = p;
  while (*p) {
    if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
        p[3] >= '0' && p[3] <= '7') {
      *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
      p += 4;
    } else {
      *o++ = *p++;
    }
  }
  *o = 0;
}

/* The first cgroup2 mount this process sees: /sys/fs/cgroup on a pure v2
 * system, /sys/fs/cgroup/unified on a hybrid one, the container's own
 * root inside a cgroup namespace. Hooks attached there see every socket of
 * every process below it, which includes every process of this guest. */
static int find_cgroup2(char *path, size_t cap, char *why, size_t whylen) {
  FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f) {
    snprintf(why, whylen, "cannot read /proc/self/mountinfo: %s", strerror(errno));
    return -1;
  }
  char line[4096];
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) {
    /* id parent maj:min root mountpoint options... - fstype source superoptions */
    char *sep = strstr(line, " - ");
    if (!sep || strncmp(sep + 3, "cgroup2 ", 8) != 0) continue;
    char *save = NULL, *field = strtok_r(line, " ", &save);
    for (int i = 0; field && i < 4; i++) field = strtok_r(NULL, " ", &save);
    if (!field || strlen(field) >= cap) continue;
    snprintf(path, cap, "%s", field);
    unescape(path);
    found = 1;
  }
  fclose(f);
  if (!found) snprintf(why, whylen, "no cgroup2 file system is mounted");
  return found ? 0 : -1;
}

/* The cookie bpf_get_netns_cookie gives sockets of this namespace. */
static int netns_cookie(uint64_t *cookie, char *why, size_t whylen) {
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  socklen_t len = sizeof *cookie;
  int rc = fd < 0 ? -1 : getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, cookie, &len);
  int e = errno;
  if (fd >= 0) close(fd);
  if (rc != 0)
    snprintf(why, whylen, "cannot read this network namespace's cookie (SO_NETNS_COOKIE, "
             "Linux 5.14): %s", strerror(e));
  return rc;
}

/* The UDP hooks, in udp_links order: post_bind4, post_bind6, sock_release. */
static void udp_progs(const lr_bpfwatch_t *w, struct bpf_program *progs[3]) {
  progs[0] = w->skel->progs.lt_udp_bind4;
  progs[1] = w->skel->progs.lt_udp_bind6;
  progs[2] = w->skel->progs.lt_udp_release;
}

/* Opens and loads the skeleton into w->skel, the UDP hooks included only
 * when udp is set; 0 or a negative errno (w->skel may be set either way). */
static int open_and_load(lr_bpfwatch_t *w, uint32_t ino, uint64_t cookie, int udp) {
  w->skel = listen_trace_bpf__open();
  if (!w->skel) return -errno;
  w->skel->rodata->target_netns_ino = ino;
  w->skel->rodata->target_netns_cookie = cookie;
  struct bpf_program *progs[3];
  udp_progs(w, progs);
  for (int i = 0; i < 3; i++) {
    bpf_program__set_autoload(progs[i], udp != 0);
    bpf_program__set_autoattach(progs[i], false); /* udp_attach does it, with the cgroup */
  }
  return listen_trace_bpf__load(w->skel);
}

/* Attaches the loaded UDP hooks to the cgroup at path: all three, or none
 * with the reason in udp_why. */
static void udp_attach(lr_bpfwatch_t *w, const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(w->udp_why, sizeof w->udp_why, "cannot open the cgroup %s: %s", path,
             strerror(errno));
    return;
  }
  struct bpf_program *progs[3];
  udp_progs(w, progs);
  static const char *const names[3] = {"post_bind4", "post_bind6", "sock_release"};
  for (int i = 0; i < 3; i++) {
    w->udp_links[i] = bpf_program__attach_cgroup(progs[i], fd);
    if (!w->udp_links[i]) {
      char what[320];
      snprintf(what, sizeof what, "attaching the cgroup %s hook to %s", names[i], path);
      say_why_caps(w->udp_why, sizeof w->udp_why, what, errno, UDP_CAPS);
      udp_detach(w);
      break;
    }
  }
  close(fd);
  if (w->udp_links[0])
    snprintf(w->udp_why, sizeof w->udp_why, "cgroup post_bind4/post_bind6/sock_release on %s",
             path);
}

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
  char cgroup[256];
  uint64_t cookie = 0;
  /* The UDP hooks' prerequisites, before anything is loaded: without
   * them the object loads as the TCP trigger alone. */
  int udp = find_cgroup2(cgroup, sizeof cgroup, w->udp_why, sizeof w->udp_why) == 0 &&
            netns_cookie(&cookie, w->udp_why, sizeof w->udp_why) == 0;
  if ((rc = open_and_load(w, (uint32_t)st.st_ino, cookie, udp)) != 0 && udp) {
    /* An older kernel may refuse the cgroup hooks (no sock_release attach
     * type, no bpf_get_netns_cookie for them): once more without. */
    say_why_caps(w->udp_why, sizeof w->udp_why, "loading the cgroup socket hooks", rc, UDP_CAPS);
    libbpf_why[0] = 0; /* that complaint was about the hooks */
    listen_trace_bpf__destroy(w->skel);
    udp = 0;
    rc = open_and_load(w, (uint32_t)st.st_ino, 0, 0);
  }
  if (rc != 0) {
    say_why(err, errlen, w->skel ? "loading the eBPF program" : "opening the eBPF program", rc);
    goto fail;
  }
  if ((rc = listen_trace_bpf__attach(w->skel)) != 0) {
    say_why(err, errlen, "attaching to the inet_sock_set_state tracepoint", rc);
    goto fail;
  }
  if (udp) udp_attach(w, cgroup);
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
  udp_detach(w);
  listen_trace_bpf__detach(w->skel);
  if (w->poll_open) {
    if (!uv_is_closing((uv_handle_t *)&w->poll)) uv_close((uv_handle_t *)&w->poll, on_poll_closed);
    return;
  }
  destroy(w);
}

int lr_bpfwatch_udp(const lr_bpfwatch_t *w, const char **why) {
  if (why) *why = w->udp_why;
  return w->udp_links[0] != NULL;
}

uint64_t lr_bpfwatch_dropped(const lr_bpfwatch_t *w) {
  return w && w->skel && w->skel->bss ? w->skel->bss->dropped : 0;
}

#endif /* LR_HAVE_BPF */
