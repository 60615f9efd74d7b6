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
#include "lr_log.h"
#include "lr_posix.h"
#include "lr_version.h"

#define RESPAWN_MAX_MS 5000

typedef struct {
  const char *netns;
} posix_opts_t;

static lr_hostd_t g_daemon;
static posix_opts_t g_popts;
static uv_signal_t g_sigint, g_sigterm, g_sigchld;
static uv_timer_t g_respawn;
static int g_stopping;
static pid_t g_init_pid = -1;
static char *g_init_argv[16];
static unsigned g_respawn_ms = 100;
static uint64_t g_init_started;

static int extra_opt(const char *opt, const char *val, void *data) {
  posix_opts_t *p = data;
  if (!strcmp(opt, "--netns")) {
    p->netns = val;
    return 1;
  }
  return -1;
}

static void usage(void) {
  printf("usage: lorelayd --netns NAME [options]\n"
         "       lorelayd --guest ADDR [--token-file FILE] [options]\n"
         "Mirrors a guest's listening TCP ports on this host's loopback and relays\n"
         "every connection to the guest.\n\n"
         "  --netns NAME        create network namespace NAME if missing (as `ip netns add`),\n"
         "                      start lorelay-init + lorelay-agent inside it, forward its ports\n"
         "%s",
         lr_hostd_common_usage());
}

static void on_stopped(void *data) {
  (void)data;
  uv_close((uv_handle_t *)&g_sigint, NULL);
  uv_close((uv_handle_t *)&g_sigterm, NULL);
  uv_close((uv_handle_t *)&g_sigchld, NULL);
  uv_close((uv_handle_t *)&g_respawn, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)s;
  if (g_stopping) {
    LR_WARN("second signal: exiting now");
    exit(1);
  }
  LR_INFO("signal %d: shutting down", signum);
  g_stopping = 1;
  uv_timer_stop(&g_respawn);
  lr_hostd_stop(&g_daemon, on_stopped, NULL);
}

static void spawn_init(uv_timer_t *t) {
  char err[256];
  (void)t;
  if (g_stopping || g_init_pid > 0) return;
  g_init_pid = lr_netns_spawn(g_popts.netns, g_init_argv, err, sizeof err);
  g_init_started = uv_now(uv_default_loop());
  if (g_init_pid < 0) {
    LR_ERROR("starting lorelay-init in %s: %s", g_popts.netns, err);
    uv_timer_start(&g_respawn, spawn_init, g_respawn_ms, 0);
  } else {
    LR_INFO("%s: started %s (pid %d) in the namespace", g_popts.netns,
            g_init_argv[0], (int)g_init_pid);
  }
}

/* lorelay-init supervises the agent; we supervise lorelay-init, so the
 * namespace never stays without an agent while lorelayd runs. */
static void on_sigchld(uv_signal_t *s, int signum) {
  int st;
  pid_t pid;
  (void)s;
  (void)signum;
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    if (pid != g_init_pid) continue;
    g_init_pid = -1;
    if (g_stopping) continue;
    if (WIFSIGNALED(st))
      LR_WARN("lorelay-init was killed by signal %d", WTERMSIG(st));
    else
      LR_WARN("lorelay-init exited with status %d", WEXITSTATUS(st));
    uint64_t ran = uv_now(uv_default_loop()) - g_init_started;
    if (ran > 10000) g_respawn_ms = 100;
    uv_timer_start(&g_respawn, spawn_init, g_respawn_ms, 0);
    g_respawn_ms = g_respawn_ms * 2 > RESPAWN_MAX_MS ? RESPAWN_MAX_MS : g_respawn_ms * 2;
  }
}

static void stop_init(void) {
  if (g_init_pid <= 0) return;
  kill(g_init_pid, SIGTERM);
  for (int i = 0; i < 300; i++) { /* lorelay-init stops the agent first: give it 3 s */
    if (waitpid(g_init_pid, NULL, WNOHANG) == g_init_pid) return;
    usleep(10000);
  }
  LR_WARN("lorelay-init did not stop within 3 s: killing it");
  kill(g_init_pid, SIGKILL);
  waitpid(g_init_pid, NULL, 0);
}

/* One lorelayd per namespace: a second one would share the agent socket,
 * and stopping either would unlink it under the other. The lock is held
 * for the life of the process (the kernel drops it at exit, crash or not).
 * A restart that overlaps the old instance's shutdown waits for it. */
static int netns_lock(const char *rundir, const char *name, char *err, size_t errlen) {
  char path[400], pid[32];
  snprintf(path, sizeof path, "%.300s/netns-%.64s.lock", rundir, name);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    snprintf(err, errlen, "%.400s: %s", path, strerror(errno));
    return -1;
  }
  for (int i = 0; flock(fd, LOCK_EX | LOCK_NB) != 0; i++) {
    if (errno != EWOULDBLOCK || i >= 60) { /* 3 s */
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
  return 0; /* fd stays open: it is the lock */
}

static const char *sibling_path(const char *prog, char *out, size_t len) {
  char exe[512];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return prog;
  exe[n] = '\0';
  snprintf(out, len, "%s/%s", dirname(exe), prog);
  return out;
}

int main(int argc, char **argv) {
  lr_hostd_opts_t o;
  char err[512], rundir[256], agent_sock[400], guest_addr[420], init_path[600],
      status_path[512];
  lr_log_set_ident("lorelayd");
  lr_posix_init();
  if (lr_hostd_parse_args(argc, argv, &o, extra_opt, &g_popts, err, sizeof err) != 0) {
    fprintf(stderr, "lorelayd: %s\n", err);
    return 2;
  }
  if (o.help) {
    usage();
    return 0;
  }
  if (o.version) {
    printf("lorelayd %s (protocol %d)\n", LR_VERSION_STRING, LR_PROTO_VERSION);
    return 0;
  }
  if (g_popts.netns && o.guest) {
    fprintf(stderr, "lorelayd: use either --netns or --guest, not both\n");
    return 2;
  }
  if (!g_popts.netns && !o.guest) {
    fprintf(stderr, "lorelayd: no guest given: use --netns NAME or --guest ADDR (see --help)\n");
    return 2;
  }
  uv_loop_t *loop = uv_default_loop();
  uv_timer_init(loop, &g_respawn);

  if (g_popts.netns) {
    if (lr_netns_ensure(g_popts.netns, err, sizeof err) != 0) {
      LR_ERROR("%s", err);
      return 1;
    }
    lr_posix_run_dir(rundir, sizeof rundir);
    if (lr_posix_own_dir(rundir, err, sizeof err) != 0) {
      LR_ERROR("%s", err);
      return 1;
    }
    if (netns_lock(rundir, g_popts.netns, err, sizeof err) != 0) {
      LR_ERROR("%s", err);
      return 1;
    }
    snprintf(agent_sock, sizeof agent_sock, "%s/netns-%s.sock", rundir, g_popts.netns);
    snprintf(guest_addr, sizeof guest_addr, "unix:%s", agent_sock);
    o.guest = guest_addr;
    o.pass_fd = 1; /* our own namespace: one hop per connection */
    if (!o.name) o.name = g_popts.netns;
    const char *init = getenv("LORELAY_INIT");
    if (!init || !*init) init = sibling_path("lorelay-init", init_path, sizeof init_path);
    int k = 0;
    g_init_argv[k++] = (char *)init;
    g_init_argv[k++] = "--";
    g_init_argv[k++] = "--listen";
    g_init_argv[k++] = guest_addr;
    g_init_argv[k++] = "--name";
    g_init_argv[k++] = (char *)g_popts.netns;
    if (o.config) {
      g_init_argv[k++] = "-c";
      g_init_argv[k++] = (char *)o.config;
    }
    if (o.log_level) {
      g_init_argv[k++] = "--log-level";
      g_init_argv[k++] = (char *)o.log_level;
    }
    g_init_argv[k] = NULL;
    if (access(init, X_OK) != 0) {
      LR_ERROR("%s: %s (set LORELAY_INIT to its path)", init, strerror(errno));
      return 1;
    }
  }

  if (!o.socket) o.socket = lr_pal_host()->default_status_path(status_path, sizeof status_path);
  if (lr_posix_claim_socket_path(o.socket, err, sizeof err) != 0) {
    LR_ERROR("status endpoint: %s", err);
    return 1;
  }

  uv_signal_init(loop, &g_sigint);
  uv_signal_init(loop, &g_sigterm);
  uv_signal_init(loop, &g_sigchld);
  uv_signal_start(&g_sigint, on_signal, SIGINT);
  uv_signal_start(&g_sigterm, on_signal, SIGTERM);
  uv_signal_start(&g_sigchld, on_sigchld, SIGCHLD);

  if (lr_hostd_start(&g_daemon, loop, lr_pal_host(), &o) != 0) {
    g_stopping = 1;
    lr_hostd_stop(&g_daemon, on_stopped, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    if (g_daemon.host) lr_host_free(g_daemon.host);
    return 1;
  }
  if (g_popts.netns) spawn_init(NULL);
  LR_INFO("lorelayd %s running", LR_VERSION_STRING);
  uv_run(loop, UV_RUN_DEFAULT);
  stop_init();
  lr_host_free(g_daemon.host);
  uv_loop_close(loop);
  LR_INFO("stopped");
  return 0;
}
