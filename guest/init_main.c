/* lorelay-init: a mini_init-like supervisor for lorelay-agent.
 *
 * It binds the agent's transport listener once and hands it to every agent
 * it starts as fd 3 (LORELAY_LISTEN_FD=3): a host connecting while the
 * agent restarts waits in the listen queue instead of being refused, and no
 * two agents ever race to unlink and rebind a Unix socket path. It restarts
 * the agent with backoff, reaps every child (it may be PID 1 of a container
 * or namespace, and is a child subreaper otherwise), and forwards SIGINT and
 * SIGTERM to the agent, exiting once it has gone.
 *
 * Plain POSIX with one signalfd and poll(): a supervisor must be simpler
 * than what it supervises, so no event loop library here. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lr_addr.h"
#include "lr_glisten.h"
#include "lr_linux.h"
#include "lr_log.h"
#include "lr_supervise.h"
#include "lr_version.h"

#define LR_INIT_LISTEN_FD 3
#define LR_INIT_KILL_AFTER_MS 10000 /* SIGKILL an agent that ignores the forwarded signal */
#define LR_AGENT_EXIT_CONFIG 2      /* the agent's "usage or configuration error" */

static const char usage_text[] =
    "Usage: lorelay-init [--] AGENT-ARGS...\n"
    "\n"
    "Supervises lorelay-agent: binds the agent's --listen address once and passes\n"
    "it to the agent as fd 3 (LORELAY_LISTEN_FD=3), restarts the agent when it\n"
    "dies (backoff 100 ms doubling to 5 s, reset after 10 s of running), reaps all\n"
    "children, and forwards SIGINT/SIGTERM to the agent, exiting after it exits.\n"
    "An agent exit with status 2 (configuration error) is not restarted.\n"
    "\n"
    "AGENT-ARGS are passed to lorelay-agent unchanged and must include\n"
    "--listen ADDR (see lorelay-agent --help).\n"
    "\n"
    "Options (only before any agent argument):\n"
    "  -h, --help     show this help and exit\n"
    "  -V, --version  print the version and exit\n"
    "\n"
    "Environment:\n"
    "  LORELAY_AGENT  path of the agent (default: lorelay-agent beside this program)\n";

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int find_agent(char *out, size_t len) {
  const char *env = getenv("LORELAY_AGENT");
  if (env && *env) {
    snprintf(out, len, "%s", env);
  } else {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0) {
      LR_ERROR("cannot find my own executable (/proc/self/exe): %s; set LORELAY_AGENT",
               strerror(errno));
      return -1;
    }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    int n2 = snprintf(out, len, "%s/lorelay-agent", slash ? self : ".");
    if (n2 < 0 || (size_t)n2 >= len) {
      LR_ERROR("path of lorelay-agent beside %s is too long; set LORELAY_AGENT", self);
      return -1;
    }
  }
  if (access(out, X_OK) != 0) {
    LR_ERROR("agent %s is not executable: %s", out, strerror(errno));
    return -1;
  }
  return 0;
}

static pid_t spawn_agent(const char *path, char **args, int nargs, int lfd,
                         const sigset_t *orig_mask) {
  char **av = calloc((size_t)nargs + 2, sizeof *av);
  if (!av) {
    LR_ERROR("out of memory starting the agent");
    return -1;
  }
  av[0] = (char *)path;
  for (int i = 0; i < nargs; i++) av[i + 1] = args[i];
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    LR_ERROR("cannot fork the agent: %s", strerror(errno));
    free(av);
    return -1;
  }
  if (pid == 0) {
    /* The agent never outlives its supervisor: an init that is killed
     * (SIGKILL after a stop timeout) must not leave an orphan agent holding
     * the transport socket, which a restarted init would then share. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1); /* the supervisor died before prctl */
    sigprocmask(SIG_SETMASK, orig_mask, NULL);
    if (lfd == LR_INIT_LISTEN_FD) {
      int fl = fcntl(lfd, F_GETFD);
      if (fl >= 0) fcntl(lfd, F_SETFD, fl & ~FD_CLOEXEC);
    } else if (dup2(lfd, LR_INIT_LISTEN_FD) < 0) {
      dprintf(2, "lorelay-init: cannot pass the listener as fd 3: %s\n", strerror(errno));
      _exit(127);
    }
    setenv("LORELAY_LISTEN_FD", "3", 1);
    execv(path, av);
    dprintf(2, "lorelay-init: cannot execute %s: %s\n", path, strerror(errno));
    _exit(127);
  }
  free(av);
  return pid;
}

static void describe_exit(int status, char *out, size_t len) {
  if (WIFEXITED(status))
    snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(out, len, "was killed by signal %d (%s)%s", WTERMSIG(status),
             strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
  else
    snprintf(out, len, "ended with wait status 0x%x", status);
}

int main(int argc, char **argv) {
  lr_log_set_ident("lorelay-init");
  lr_log_set_journal(lr_linux_stderr_is_journal(), 1);
  int first = 1;
  if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
    fputs(usage_text, stdout);
    return 0;
  }
  if (argc > 1 && (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0)) {
    printf("lorelay-init %s\n", LR_VERSION_STRING);
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "--") == 0) first = 2;
  char **args = argv + first;
  int nargs = argc - first;

  int missing = 0;
  const char *listen_arg = lr_guest_find_listen_arg(nargs, args, &missing);
  if (missing || !listen_arg) {
    LR_ERROR("the agent arguments need --listen ADDR (see lorelay-init --help)");
    return 2;
  }
  char err[512];
  lr_taddr_t ta;
  if (lr_taddr_parse(listen_arg, &ta, err, sizeof err) != 0) {
    LR_ERROR("--listen: %s", err);
    return 2;
  }
  char agent[PATH_MAX];
  if (find_agent(agent, sizeof agent) != 0) return 1;

  int lfd = lr_guest_listen(&ta, err, sizeof err);
  if (lfd < 0) {
    LR_ERROR("%s", err);
    return ta.kind == LR_TADDR_FC || ta.kind == LR_TADDR_HVSOCK ? 2 : 1;
  }
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0 && getpid() != 1)
    LR_WARN("cannot become a child subreaper: %s", strerror(errno));

  sigset_t mask, orig;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigprocmask(SIG_BLOCK, &mask, &orig);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) {
    LR_ERROR("signalfd: %s", strerror(errno));
    return 1;
  }

  lr_backoff_t backoff;
  lr_backoff_init(&backoff);
  pid_t agent_pid = 0;
  uint64_t started_at = 0, restart_at = now_ms(), kill_at = 0;
  int stopping = 0, exit_code = 0;
  char astr[256];
  LR_INFO("supervising %s on %s", agent, lr_taddr_format(&ta, astr, sizeof astr));

  for (;;) {
    uint64_t now = now_ms();
    if (!stopping && agent_pid == 0 && now >= restart_at) {
      agent_pid = spawn_agent(agent, args, nargs, lfd, &orig);
      started_at = now;
      if (agent_pid < 0) {
        agent_pid = 0;
        restart_at = now + lr_backoff_next(&backoff, 0);
      } else {
        LR_DEBUG("agent started, pid %d", (int)agent_pid);
      }
    }
    if (stopping && agent_pid == 0) break;
    if (stopping && kill_at && now >= kill_at) {
      LR_WARN("agent (pid %d) ignored the signal for %d ms; killing it", (int)agent_pid,
              LR_INIT_KILL_AFTER_MS);
      kill(agent_pid, SIGKILL);
      kill_at = 0;
    }

    int timeout = -1;
    if (!stopping && agent_pid == 0) timeout = (int)(restart_at > now ? restart_at - now : 0);
    if (stopping && kill_at) timeout = (int)(kill_at > now ? kill_at - now : 0);
    struct pollfd pfd = {sfd, POLLIN, 0};
    int pr = poll(&pfd, 1, timeout);
    if (pr < 0 && errno != EINTR) {
      LR_ERROR("poll: %s", strerror(errno));
      exit_code = 1;
      break;
    }

    struct signalfd_siginfo si;
    int got_chld = 0;
    while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
      if (si.ssi_signo == SIGCHLD) {
        got_chld = 1;
      } else if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) {
        const char *name = si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM";
        if (agent_pid > 0) {
          LR_INFO("received %s; forwarding it to the agent (pid %d)", name, (int)agent_pid);
          kill(agent_pid, (int)si.ssi_signo);
          if (!stopping) kill_at = now_ms() + LR_INIT_KILL_AFTER_MS;
        } else {
          LR_INFO("received %s; exiting", name);
        }
        stopping = 1;
      }
    }
    if (!got_chld) continue;

    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      if (pid != agent_pid) continue; /* an orphan we inherited: reaped */
      char how[160];
      uint64_t ran = now_ms() - started_at;
      describe_exit(status, how, sizeof how);
      agent_pid = 0;
      if (stopping) {
        LR_INFO("agent (pid %d) %s", (int)pid, how);
        int clean = (WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
                    (WIFSIGNALED(status) &&
                     (WTERMSIG(status) == SIGINT || WTERMSIG(status) == SIGTERM));
        exit_code = clean ? 0 : 1;
      } else if (WIFEXITED(status) && WEXITSTATUS(status) == LR_AGENT_EXIT_CONFIG) {
        LR_ERROR("agent (pid %d) %s: a configuration error, not restarting", (int)pid, how);
        stopping = 1;
        exit_code = LR_AGENT_EXIT_CONFIG;
      } else {
        unsigned delay = lr_backoff_next(&backoff, ran);
        LR_WARN("agent (pid %d) %s after %llu.%03llu s; restarting in %u ms", (int)pid, how,
                (unsigned long long)(ran / 1000), (unsigned long long)(ran % 1000), delay);
        restart_at = now_ms() + delay;
      }
    }
  }

  if (ta.kind == LR_TADDR_UNIX) unlink(ta.path);
  close(lfd);
  close(sfd);
  return exit_code;
}
