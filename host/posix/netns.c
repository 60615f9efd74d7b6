/* Network namespaces as a lorelay "guest": create one the way
 * `ip netns add` does (a bind mount of the namespace file on
 * /run/netns/NAME, in a shared mount so every mount namespace sees it), bring
 * its loopback up, and start processes inside it.
 *
 * Everything that must run inside the namespace runs in a forked child, so
 * lorelayd itself never leaves the host's namespace: its stand-ins must
 * stay on the host loopback. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

static int wait_child(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int is_netns_file(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  /* A plain file that was never bind-mounted is not a namespace: setns
   * tells, and a forked child keeps our own namespace untouched. */
  pid_t pid = fork();
  if (pid == 0) _exit(setns(fd, CLONE_NEWNET) == 0 ? 0 : 1);
  close(fd);
  return pid > 0 && wait_child(pid) == 0;
}

static int create_netns(const char *path, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
    return -1;
  }
  close(fd);
  pid_t pid = fork();
  if (pid == 0) {
    if (unshare(CLONE_NEWNET) != 0) _exit(2);
    if (mount("/proc/self/ns/net", path, "none", MS_BIND, NULL) != 0) _exit(3);
    _exit(0);
  }
  int rc = pid < 0 ? -1 : wait_child(pid);
  if (rc != 0) {
    unlink(path);
    snprintf(err, errlen, "cannot create network namespace %s: %s", path,
             rc == 2 ? "unshare(CLONE_NEWNET) failed (needs root / CAP_SYS_ADMIN)"
                     : rc == 3 ? "bind mount failed" : "fork failed");
    return -1;
  }
  return 0;
}

static int bring_lo_up(const char *path, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  pid_t pid = fork();
  if (pid == 0) {
    if (setns(fd, CLONE_NEWNET) != 0) _exit(2);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0) _exit(3);
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) _exit(4);
    _exit(0);
  }
  close(fd);
  int rc = pid < 0 ? -1 : wait_child(pid);
  if (rc != 0) {
    snprintf(err, errlen, "cannot bring up lo in %s (step %d)", path, rc);
    return -1;
  }
  return 0;
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
  if (!is_netns_file(path)) {
    if (access(path, F_OK) == 0) {
      snprintf(err, errlen, "%s exists but is not a network namespace (remove it, or `ip netns "
                            "delete %s`)", path, name);
      return -1;
    }
    if (prepare_netns_dir(err, errlen) != 0 || create_netns(path, err, errlen) != 0) return -1;
  }
  return bring_lo_up(path, err, errlen);
}

pid_t lr_netns_spawn(const char *name, char *const argv[], char *err, size_t errlen) {
  char path[256];
  snprintf(path, sizeof path, NETNS_DIR "/%s", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
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
