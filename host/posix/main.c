/* lorelayd for Linux: the process shell around the shared host core.
 *
 * Adds what only Linux has: --netns (create a namespace, start lorelay-init
 * and the agent inside it, supervise that child), Unix-socket paths under
 * /run, and POSIX signals. Everything else is lr_hostd/lr_host, shared with
 * the Windows service. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lr_hostd.h"
#include "lr_linux.h"
#include "lr_log.h"
#include "lr_posix.h"
#include "lr_sdnotify.h"
#include "lr_version.h"

#define RESPAWN_MAX_MS 5000

/* One namespace guest: its lorelay-init child and the lock that says this
 * lorelayd serves the namespace. Records live until exit (a reload that
 * removes a guest stops its child; adding it back reuses the record), so
 * the bound is the number of namespace names ever configured. */
typedef struct netns_child_s {
  char name[LR_GUEST_NAME_MAX];
  char sock[400], addr[420];
  char *argv[16];
  pid_t pid;
  int active;  /* configured now: respawn when it exits */
  int lock_fd; /* -1: not held */
  uv_timer_t respawn;
  unsigned respawn_ms;
  uint64_t started;
  struct netns_child_s *next;
} netns_child_t;

static lr_hostd_t g_daemon;
static lr_hostd_opts_t g_opts;
static uv_signal_t g_sigint, g_sigterm, g_sigchld, g_sighup;
static int g_stopping;
static netns_child_t *g_children;
static char g_init_path[600];
static const char *g_init;

static void usage(void) {
  printf("usage: lorelayd --netns NAME [--netns NAME...] [options]\n"
         "       lorelayd --guest ADDR [--guest ADDR...] [--token-file FILE] [options]\n"
         "       lorelayd -c FILE   (guests in [guest NAME] sections)\n"
         "Mirrors guests' listening TCP and UDP ports on this host's loopback and\n"
         "relays every connection and datagram to the guest. SIGHUP reads the config\n"
         "file again; under systemd (Type=notify) it reports READY=1 and reloads.\n\n"
         "  --netns NAME        create network namespace NAME if missing (as `ip netns add`),\n"
         "                      start lorelay-init + lorelay-agent inside it, forward its ports;\n"
         "                      repeatable\n"
         "  --guest ADDR        agent address: unix:PATH, tcp:HOST:PORT, vsock:CID:PORT or\n"
         "                      fc:UDS_PATH:PORT (Firecracker, Cloud Hypervisor); repeatable\n"
         "  -c, --config FILE   INI config: section [lorelay], and one [guest NAME]\n"
         "                      section per guest (netns or transport, tokenFile,\n"
         "                      hostAddress, any [lorelay] key as its own value)\n"
         "%s",
         lr_hostd_common_usage());
}

/* hvsock: is Hyper-V's socket family, which only a Windows host has: such a
 * guest is refused at start (and in a reloaded section) rather than
 * retried forever. An address that does not parse is left to the core,
 * which says what is wrong with it. */
static int transport_check(const char *addr, char *err, size_t errlen) {
  lr_taddr_t a;
  char why[256];
  if (lr_taddr_parse(addr, &a, why, sizeof why) != 0 || a.kind != LR_TADDR_HVSOCK) return 0;
  snprintf(err, errlen,
           "%s: hvsock: guests need lorelayd.exe on Windows; on Linux a guest is unix:PATH, "
           "tcp:HOST:PORT, vsock:CID:PORT or fc:UDS_PATH:PORT",
           addr);
  return -1;
}

static void on_stopped(void *data) {
  (void)data;
  uv_close((uv_handle_t *)&g_sigint, NULL);
  uv_close((uv_handle_t *)&g_sigterm, NULL);
  uv_close((uv_handle_t *)&g_sigchld, NULL);
  uv_close((uv_handle_t *)&g_sighup, NULL);
  for (netns_child_t *c = g_children; c; c = c->next) uv_close((uv_handle_t *)&c->respawn, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  if (g_stopping) {
    LR_WARN("second signal: exiting now");
    exit(1);
  }
  LR_INFO("signal %d: shutting down", signum);
  g_stopping = 1;
  lr_sd_stopping();
  for (netns_child_t *c = g_children; c; c = c->next) uv_timer_stop(&c->respawn);
  lr_hostd_stop(&g_daemon, on_stopped, NULL);
}

static void on_sighup(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  if (g_stopping) return;
  lr_sd_reloading();
  lr_hostd_reload(&g_daemon);
  lr_sd_reloaded();
}

static void spawn_init(uv_timer_t *t) {
  netns_child_t *c = t->data;
  char err[256];
  if (g_stopping || !c->active || c->pid > 0) return;
  c->pid = lr_netns_spawn(c->name, c->argv, err, sizeof err);
  c->started = uv_now(uv_default_loop());
  if (c->pid < 0) {
    LR_ERROR("starting lorelay-init in %s: %s", c->name, err);
    uv_timer_start(&c->respawn, spawn_init, c->respawn_ms, 0);
  } else {
    LR_INFO("%s: started %s (pid %d) in the namespace", c->name, c->argv[0], (int)c->pid);
  }
}

/* lorelay-init supervises the agent; we supervise lorelay-init, so a
 * namespace never stays without an agent while it is configured. */
static void on_sigchld(uv_signal_t *s, int signum) {
  int st;
  pid_t pid;
  (void)s;
  (void)signum;
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    netns_child_t *c = g_children;
    while (c && c->pid != pid) c = c->next;
    if (!c) continue;
    c->pid = -1;
    if (!c->active) { /* removed by a reload: the namespace is free again */
      if (c->lock_fd >= 0) close(c->lock_fd);
      c->lock_fd = -1;
      continue;
    }
    if (g_stopping) continue;
    /* Stopped on purpose (status 0, or SIGTERM/SIGINT: someone stopped it)
     * is a fact worth a line, not a warning; a crash or an error is. */
    if (WIFSIGNALED(st) && WTERMSIG(st) != SIGTERM && WTERMSIG(st) != SIGINT)
      LR_WARN("%s: lorelay-init was killed by signal %d: starting it again", c->name,
              WTERMSIG(st));
    else if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
      LR_WARN("%s: lorelay-init exited with status %d: starting it again", c->name,
              WEXITSTATUS(st));
    else
      LR_INFO("%s: lorelay-init stopped (%s): starting it again", c->name,
              WIFSIGNALED(st) ? "signal" : "status 0");
    uint64_t ran = uv_now(uv_default_loop()) - c->started;
    if (ran > 10000) c->respawn_ms = 100;
    uv_timer_start(&c->respawn, spawn_init, c->respawn_ms, 0);
    c->respawn_ms = c->respawn_ms * 2 > RESPAWN_MAX_MS ? RESPAWN_MAX_MS : c->respawn_ms * 2;
  }
}

/* At exit: every lorelay-init stops its agent first; give them 3 s
 * together, then kill what is left. */
static void stop_children(void) {
  int left = 0;
  for (netns_child_t *c = g_children; c; c = c->next)
    if (c->pid > 0) left += kill(c->pid, SIGTERM) == 0;
  for (int i = 0; i < 300 && left; i++) {
    left = 0;
    for (netns_child_t *c = g_children; c; c = c->next) {
      if (c->pid <= 0) continue;
      if (waitpid(c->pid, NULL, WNOHANG) == c->pid)
        c->pid = -1;
      else
        left++;
    }
    if (left) usleep(10000);
  }
  for (netns_child_t *c = g_children; c; c = c->next)
    if (c->pid > 0) {
      LR_WARN("%s: lorelay-init did not stop within 3 s: killing it", c->name);
      kill(c->pid, SIGKILL);
      waitpid(c->pid, NULL, 0);
    }
}

/* Set once the event loop serves: from then on nothing here may wait. */
static int g_serving;

/* One lorelayd per namespace: a second one would share the agent socket,
 * and stopping either would unlink it under the other. The lock is held
 * while the namespace is configured (the kernel drops it at exit, crash or not).
 * A restart that overlaps the old instance's shutdown waits for it, up to
 * 3 s, but only at start, before the loop serves anyone. Once it does (a
 * reload adding the namespace), the lock is tried once: a namespace another
 * lorelayd holds fails that reload at once, and every other guest's
 * connections never wait on it. */
static int netns_lock(const char *rundir, const char *name, char *err, size_t errlen) {
  char path[400], pid[32];
  snprintf(path, sizeof path, "%.300s/netns-%.64s.lock", rundir, name);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    snprintf(err, errlen, "%.400s: %s", path, strerror(errno));
    return -1;
  }
  int tries = g_serving ? 0 : 60; /* 60 x 50 ms: 3 s */
  for (int i = 0; flock(fd, LOCK_EX | LOCK_NB) != 0; i++) {
    if (errno != EWOULDBLOCK || i >= tries) {
      ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
      pid[n > 0 ? n : 0] = '\0';
      pid[strcspn(pid, "\n")] = '\0';
      snprintf(err, errlen,
               "network namespace %s is already served by another lorelayd (pid %s); "
               "stop it first",
               name, pid[0] ? pid : "unknown");
      close(fd);
      return -1;
    }
    usleep(50000);
  }
  int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n)
    LR_WARN("%s: cannot record our pid: %s", path, strerror(errno));
  return fd; /* stays open while we serve the namespace: it is the lock */
}

static const char *sibling_path(const char *prog, char *out, size_t len) {
  char exe[512];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return prog;
  exe[n] = '\0';
  snprintf(out, len, "%s/%s", dirname(exe), prog);
  return out;
}

/* lr_hostd's netns hooks: a namespace guest starts here. */
static int netns_open(void *data, const char *netns, char *addr, size_t addrlen, char *err,
                      size_t errlen) {
  char rundir[256];
  (void)data;
  netns_child_t *c = g_children;
  while (c && strcmp(c->name, netns)) c = c->next;
  if (c && c->active) {
    snprintf(err, errlen, "network namespace %s is given twice", netns);
    return -1;
  }
  if (access(g_init, X_OK) != 0) {
    snprintf(err, errlen, "%s: %s (set LORELAY_INIT to its path)", g_init, strerror(errno));
    return -1;
  }
  if (lr_netns_ensure(netns, err, errlen) != 0) return -1;
  lr_posix_run_dir(rundir, sizeof rundir);
  if (lr_posix_own_dir(rundir, err, errlen) != 0) return -1;
  if (!c) {
    if (!(c = calloc(1, sizeof *c))) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    snprintf(c->name, sizeof c->name, "%s", netns);
    c->pid = -1;
    c->lock_fd = -1;
    uv_timer_init(uv_default_loop(), &c->respawn);
    c->respawn.data = c;
    c->next = g_children;
    g_children = c;
  }
  if (c->lock_fd < 0 && (c->lock_fd = netns_lock(rundir, netns, err, errlen)) < 0) return -1;
  snprintf(c->sock, sizeof c->sock, "%s/netns-%s.sock", rundir, netns);
  snprintf(c->addr, sizeof c->addr, "unix:%s", c->sock);
  int k = 0;
  c->argv[k++] = (char *)g_init;
  c->argv[k++] = "--";
  c->argv[k++] = "--listen";
  c->argv[k++] = c->addr;
  c->argv[k++] = "--name";
  c->argv[k++] = c->name;
  if (g_opts.config) {
    c->argv[k++] = "-c";
    c->argv[k++] = (char *)g_opts.config;
  }
  if (g_opts.log_level) {
    c->argv[k++] = "--log-level";
    c->argv[k++] = (char *)g_opts.log_level;
  }
  c->argv[k] = NULL;
  c->active = 1;
  c->respawn_ms = 100;
  snprintf(addr, addrlen, "%s", c->addr);
  if (c->pid <= 0) spawn_init(&c->respawn);
  /* else: the old lorelay-init is still stopping; on_sigchld restarts it */
  return 0;
}

static void netns_close(void *data, const char *netns) {
  (void)data;
  netns_child_t *c = g_children;
  while (c && strcmp(c->name, netns)) c = c->next;
  if (!c || !c->active) return;
  c->active = 0;
  uv_timer_stop(&c->respawn);
  if (c->pid > 0) {
    kill(c->pid, SIGTERM); /* reaped in on_sigchld, which then drops the lock */
  } else if (c->lock_fd >= 0) {
    close(c->lock_fd);
    c->lock_fd = -1;
  }
}

int main(int argc, char **argv) {
  char err[512], status_path[512];
  lr_log_set_ident("lorelayd");
  lr_log_set_journal(lr_linux_stderr_is_journal(), 0);
  lr_posix_init();
  if (lr_hostd_parse_args(argc, argv, &g_opts, NULL, NULL, err, sizeof err) != 0) {
    fprintf(stderr, "lorelayd: %s\n", err);
    return 2;
  }
  if (g_opts.help) {
    usage();
    return 0;
  }
  if (g_opts.version) {
    printf("lorelayd %s (protocol %d)\n", LR_VERSION_STRING, LR_PROTO_VERSION);
    return 0;
  }
  for (size_t i = 0; i < g_opts.guests.n; i++)
    if (transport_check(g_opts.guests.v[i], err, sizeof err) != 0) {
      fprintf(stderr, "lorelayd: --guest %s\n", err);
      return 2;
    }
  g_opts.transport_check = transport_check;
  uv_loop_t *loop = uv_default_loop();
  g_init = getenv("LORELAY_INIT");
  if (!g_init || !*g_init) g_init = sibling_path("lorelay-init", g_init_path, sizeof g_init_path);
  g_opts.netns_open = netns_open;
  g_opts.netns_close = netns_close;

  if (!g_opts.socket)
    g_opts.socket = lr_pal_host()->default_status_path(status_path, sizeof status_path);
  if (lr_posix_claim_socket_path(g_opts.socket, err, sizeof err) != 0) {
    LR_ERROR("status endpoint: %s", err);
    return 1;
  }

  uv_signal_init(loop, &g_sigint);
  uv_signal_init(loop, &g_sigterm);
  uv_signal_init(loop, &g_sigchld);
  uv_signal_init(loop, &g_sighup);
  uv_signal_start(&g_sigint, on_signal, SIGINT);
  uv_signal_start(&g_sigterm, on_signal, SIGTERM);
  uv_signal_start(&g_sigchld, on_sigchld, SIGCHLD);
  uv_signal_start(&g_sighup, on_sighup, SIGHUP);

  int rc = lr_hostd_start(&g_daemon, loop, lr_pal_host(), &g_opts);
  if (rc != 0) {
    g_stopping = 1;
    lr_hostd_stop(&g_daemon, on_stopped, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    stop_children();
    if (g_daemon.host) lr_host_free(g_daemon.host);
    free(g_daemon.guests);
    return rc == -2 ? 2 : 1;
  }
  /* The pid, for a SIGHUP by hand (kill -HUP PID) without pidof, which
   * would hit every lorelayd on the machine. */
  LR_INFO("lorelayd %s running (pid %ld)", LR_VERSION_STRING, (long)getpid());
  g_serving = 1;
  lr_sd_ready(loop, &g_daemon);
  uv_run(loop, UV_RUN_DEFAULT);
  stop_children();
  lr_host_free(g_daemon.host);
  free(g_daemon.guests);
  uv_loop_close(loop);
  LR_INFO("stopped");
  return 0;
}
