/* Network namespaces as a lorelay "guest": create one the way
 * `ip netns add` does (a bind mount of the namespace file on
 * /run/netns/NAME, in a shared mount so every mount namespace sees it), bring
 * its loopback up, and start processes inside it.
 *
 * lr_netns_ensure runs on the loop thread (lorelayd's netns_open hook, at
 * start and in a reload that adds a namespace guest) and forks nothing and
 * waits for no child. What must happen inside the namespace happens on a
 * short-lived thread of our own: unshare(CLONE_NEWNET) (allowed in a
 * multi-threaded process: it moves only the calling thread) or setns()
 * into an existing one, the bind mount of /proc/thread-self/ns/net, and lo
 * brought up with two ioctls on a socket made there; then the thread ends.
 * The loop thread joins it at once. That join is the one wait left, and it
 * is on a handful of system calls that wait for no other process, peer or
 * timer (namespace creation is kernel work of a few milliseconds), where
 * before it was up to three fork()s of the whole daemon, each with a
 * waitpid(). Doing it in line rather than handing the result back later is
 * what keeps a reload all or nothing: lr_hostd opens every new namespace
 * before it changes anything running, and undoes them all when one fails,
 * so it needs the answer before it goes on. The loop thread itself never
 * changes namespace: its stand-ins must stay on the host loopback.
 *
 * A namespace file is told from any other file by NS_GET_NSTYPE (Linux
 * 4.11), on a descriptor opened O_NONBLOCK, so a FIFO put at that path
 * cannot block the open.
 *
 * Starting a process inside (lr_netns_spawn) is a fork and exec that is
 * not waited for: main.c reaps it from SIGCHLD with WNOHANG. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <net/if.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lr_posix.h"

#define NETNS_DIR "/run/netns"

static int valid_name(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > 64 || !strcmp(name, ".") || !strcmp(name, "..")) return 0;
  for (const char *p = name; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '-' || *p == '_' || *p == '.'))
      return 0;
  return 1;
}

/* Mirrors iproute2: /run/netns must be a shared mount point so the bind
 * mounts made here propagate to other mount namespaces. */
static int prepare_netns_dir(char *err, size_t errlen) {
  if (lr_posix_mkdir_p(NETNS_DIR, 0755) != 0) {
    snprintf(err, errlen, "cannot create %s: %s", NETNS_DIR, strerror(errno));
    return -1;
  }
  for (int tries = 0; tries < 2; tries++) {
    if (mount("", NETNS_DIR, "none", MS_SHARED | MS_REC, NULL) == 0) return 0;
    if (errno != EINVAL || tries) break;
    if (mount(NETNS_DIR, NETNS_DIR, "none", MS_BIND | MS_REC, NULL) != 0) break;
  }
  snprintf(err, errlen, "cannot make %s a shared mount: %s", NETNS_DIR, strerror(errno));
  return -1;
}

/* The network namespace at path, opened; -1 when there is none (no file,
 * or a plain file that was never bind-mounted). */
static int open_netns(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd >= 0 && ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET) {
    close(fd);
    fd = -1;
  }
  return fd;
}

/* What the namespace thread does, and how far it got. */
typedef struct {
  const char *path; /* bind the new namespace here (nsfd < 0) */
  int nsfd;         /* an existing namespace to enter, or -1: make one */
  int step;         /* 0 done, else the step that failed (below) */
  int err;          /* its errno */
} ns_job_t;

enum { NS_ENTER = 1, NS_MOUNT, NS_LO };

static int set_lo_up(void) {
  struct ifreq ifr;
  int rc = -1, s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags |= IFF_UP;
    rc = ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  int e = errno;
  close(s);
  errno = e;
  return rc;
}

static void *ns_thread(void *arg) {
  ns_job_t *j = arg;
  int rc = j->nsfd >= 0 ? setns(j->nsfd, CLONE_NEWNET) : unshare(CLONE_NEWNET);
  if (rc != 0) {
    j->step = NS_ENTER;
  } else if (j->nsfd < 0 &&
             mount("/proc/thread-self/ns/net", j->path, "none", MS_BIND, NULL) != 0) {
    j->step = NS_MOUNT;
  } else if (set_lo_up() != 0) {
    j->step = NS_LO;
  }
  j->err = j->step ? errno : 0;
  return NULL; /* the thread ends; the bind mount holds a new namespace */
}

/* Runs j on a thread of its own and joins it: 0, or -1 with j->step and
 * j->err set (step 0: no thread). */
static int ns_run(ns_job_t *j) {
  pthread_t t;
  sigset_t all, old;
  /* None of the daemon's signals go to that thread. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&t, NULL, ns_thread, j);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    j->step = 0;
    j->err = rc;
    return -1;
  }
  pthread_join(t, NULL);
  return j->step ? -1 : 0;
}

static int create_netns(const char *path, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
    return -1;
  }
  close(fd);
  ns_job_t j = {.path = path, .nsfd = -1};
  if (ns_run(&j) == 0) return 0;
  if (j.step == NS_LO) { /* the namespace exists; only its lo is down */
    snprintf(err, errlen, "cannot bring up lo in %s: %s", path, strerror(j.err));
    return -1;
  }
  unlink(path);
  snprintf(err, errlen, "cannot create network namespace %s: %s: %s", path,
           j.step == NS_ENTER ? "unshare(CLONE_NEWNET) failed (needs root / CAP_SYS_ADMIN)"
           : j.step == NS_MOUNT ? "bind mount failed"
                                : "cannot start a thread",
           strerror(j.err));
  return -1;
}

/* nsfd: the namespace at path, open_netns's; closed here. */
static int bring_lo_up(int nsfd, const char *path, char *err, size_t errlen) {
  ns_job_t j = {.path = path, .nsfd = nsfd};
  int rc = ns_run(&j);
  close(nsfd);
  if (rc != 0)
    snprintf(err, errlen, "cannot bring up lo in %s: %s%s", path,
             j.step == NS_ENTER ? "setns: " : j.step == 0 ? "cannot start a thread: " : "",
             strerror(j.err));
  return rc;
}

int lr_netns_ensure(const char *name, char *err, size_t errlen) {
  char path[256];
  if (!valid_name(name)) {
    snprintf(err, errlen, "--netns '%s': a name is 1-64 of [A-Za-z0-9._-]", name);
    return -1;
  }
  if (geteuid() != 0) {
    snprintf(err, errlen, "--netns needs root: creating and entering a network namespace needs "
                          "CAP_SYS_ADMIN");
    return -1;
  }
  snprintf(path, sizeof path, NETNS_DIR "/%s", name);
  int nsfd = open_netns(path);
  if (nsfd >= 0) return bring_lo_up(nsfd, path, err, errlen);
  if (access(path, F_OK) == 0) {
    snprintf(err, errlen, "%s exists but is not a network namespace (remove it, or `ip netns "
                          "delete %s`)", path, name);
    return -1;
  }
  if (prepare_netns_dir(err, errlen) != 0) return -1;
  return create_netns(path, err, errlen); /* brings lo up too */
}

pid_t lr_netns_spawn(const char *name, char *const argv[], char *err, size_t errlen) {
  char path[256];
  snprintf(path, sizeof path, NETNS_DIR "/%s", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    /* Only async-signal-safe calls from here: we were forked from a loop. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    if (setns(fd, CLONE_NEWNET) != 0) _exit(126);
    execv(argv[0], argv);
    _exit(127);
  }
  close(fd);
  if (pid < 0) {
    snprintf(err, errlen, "fork: %s", strerror(errno));
    return -1;
  }
  return pid;
}
