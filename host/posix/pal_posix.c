/* The POSIX (Linux) platform layer for the host core.
 *
 * libuv does nearly everything; what is left is the AF_VSOCK connect
 * (vmsock_posix.c), loopback listeners (libuv's bind is already exclusive
 * on Linux: SO_REUSEADDR there never lets a second socket bind a port that
 * one is listening on), the status endpoint's mode, the run directory and
 * the default paths. The calls the guest needs too (the relay's peer-closed
 * probe, HMAC-SHA256, nonces, a raw close) come from platform/linux. */
#define _GNU_SOURCE
#include "lr_posix.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "lr_file.h"
#include "lr_linux.h"
#include "lr_log.h"
#include "lr_paths.h"
#include "vmsock_posix.h"

static int listen_loopback(uv_loop_t *loop, uv_tcp_t *h, const struct sockaddr *sa, int backlog,
                           uv_connection_cb cb, uv_close_cb on_fail) {
  int rc = uv_tcp_init_ex(loop, h, sa->sa_family);
  if (rc) {
    /* No socket of that family (IPv6 disabled): honour the contract that h
     * is initialised and closing on failure. */
    int rc2 = uv_tcp_init(loop, h);
    if (rc2) return rc2;
    uv_close((uv_handle_t *)h, on_fail);
    return rc;
  }
  rc = uv_tcp_bind(h, sa, sa->sa_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)h, backlog, cb);
  if (rc) uv_close((uv_handle_t *)h, on_fail);
  return rc;
}

/* Linux lets a second UDP socket share a port only when both set
 * SO_REUSEADDR (or SO_REUSEPORT): a stand-in sets neither, so it is as
 * exclusive as a listener. */
static int udp_bind_loopback(uv_loop_t *loop, uv_udp_t *h, const struct sockaddr *sa,
                             uv_close_cb on_fail) {
  int rc = uv_udp_init_ex(loop, h, sa->sa_family);
  if (rc) {
    int rc2 = uv_udp_init(loop, h);
    if (rc2) return rc2;
    uv_close((uv_handle_t *)h, on_fail);
    return rc;
  }
  rc = uv_udp_bind(h, sa, sa->sa_family == AF_INET6 ? UV_UDP_IPV6ONLY : 0);
  if (rc) uv_close((uv_handle_t *)h, on_fail);
  return rc;
}

/* The status socket: owner and group may connect, nobody else. */
static int secure_endpoint(uv_pipe_t *h, const char *path, char *err, size_t errlen) {
  (void)h;
  if (chmod(path, 0660) != 0) {
    snprintf(err, errlen, "status endpoint %s: chmod 0660: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

/* The socket inode bound to sa (or to the wildcard of its family, or to
 * [::] dual-stack, which hold the port too) in /proc/net/{tcp,udp}[6]:
 * listening for TCP (state 0A), any state for UDP. 0 if none. */
static unsigned long socket_inode(const struct sockaddr *sa, int udp) {
  static const char *const files[2][2] = {{"/proc/net/tcp", "/proc/net/tcp6"},
                                          {"/proc/net/udp", "/proc/net/udp6"}};
  int v6 = sa->sa_family == AF_INET6;
  uint16_t port = ntohs(v6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                           : ((const struct sockaddr_in *)sa)->sin_port);
  uint32_t want[4] = {0, 0, 0, 0};
  if (v6)
    memcpy(want, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
  else
    want[0] = ((const struct sockaddr_in *)sa)->sin_addr.s_addr;
  for (int f = 0; f < 2; f++) {
    FILE *fp = fopen(files[!!udp][f], "r");
    char line[512];
    if (!fp) continue;
    while (fgets(line, sizeof line, fp)) {
      uint32_t a[4] = {0, 0, 0, 0};
      unsigned p, st;
      unsigned long inode;
      int ok = f ? sscanf(line, " %*d: %8x%8x%8x%8x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %lu",
                          &a[0], &a[1], &a[2], &a[3], &p, &st, &inode) == 7
                 : sscanf(line, " %*d: %8x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %lu", &a[0],
                          &p, &st, &inode) == 4;
      if (!ok || p != port || (!udp && st != 0x0A) || !inode) continue;
      int any = !a[0] && !a[1] && !a[2] && !a[3];
      int match = any || (f == v6 && !memcmp(a, want, v6 ? 16 : 4));
      /* ::ffff:127.0.0.1 on a dual-stack socket holds the IPv4 port too */
      if (!match && f && !v6 && !a[0] && !a[1] && a[2] == htonl(0xffff) && a[3] == want[0])
        match = 1;
      if (match) {
        fclose(fp);
        return inode;
      }
    }
    fclose(fp);
  }
  return 0;
}

/* The process with a descriptor on socket inode, from /proc/PID/fd. */
static int port_holder(const struct sockaddr *sa, int udp, uint32_t *pid, char *command,
                       size_t len) {
  unsigned long inode = socket_inode(sa, udp);
  char want[64], path[600], link[64];
  if (!inode) return -1;
  snprintf(want, sizeof want, "socket:[%lu]", inode);
  DIR *proc = opendir("/proc");
  if (!proc) return -1;
  struct dirent *de;
  int found = 0;
  while (!found && (de = readdir(proc))) {
    if (de->d_name[0] < '1' || de->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/%s/fd", de->d_name);
    DIR *fds = opendir(path);
    if (!fds) continue;
    struct dirent *fe;
    while ((fe = readdir(fds))) {
      if (fe->d_name[0] == '.') continue;
      snprintf(path, sizeof path, "/proc/%s/fd/%s", de->d_name, fe->d_name);
      ssize_t n = readlink(path, link, sizeof link - 1);
      if (n <= 0) continue;
      link[n] = '\0';
      if (!strcmp(link, want)) {
        found = 1;
        break;
      }
    }
    closedir(fds);
    if (!found) continue;
    *pid = (uint32_t)strtoul(de->d_name, NULL, 10);
    /* The command line, its arguments separated by spaces. */
    snprintf(path, sizeof path, "/proc/%s/cmdline", de->d_name);
    command[0] = '\0';
    FILE *fp = fopen(path, "r");
    if (fp) {
      size_t r = fread(command, 1, len - 1, fp);
      fclose(fp);
      command[r] = '\0';
      while (r > 0 && command[r - 1] == '\0') r--;
      for (size_t i = 0; i < r; i++)
        if (command[i] == '\0') command[i] = ' ';
      command[r] = '\0';
    }
    if (!command[0]) {
      snprintf(path, sizeof path, "/proc/%s/comm", de->d_name);
      if ((fp = fopen(path, "r"))) {
        if (!fgets(command, (int)len, fp)) command[0] = '\0';
        fclose(fp);
        command[strcspn(command, "\n")] = '\0';
      }
    }
  }
  closedir(proc);
  return found ? 0 : -1;
}

/* statusGroup: the socket 0660 root:GROUP; the daemon's run directory
 * (0750) group-owned too, or members could not reach the socket in it. */
static int endpoint_group(const char *path, const char *group, char *msg, size_t msglen) {
  char buf[4096], dir[512], run[400];
  struct group gr, *found = NULL;
  if (getgrnam_r(group, &gr, buf, sizeof buf, &found) != 0 || !found) {
    if (geteuid() != 0) { /* a user's own daemon: its socket is the user's */
      snprintf(msg, msglen, "statusGroup '%s' does not exist: the status endpoint %s is this "
                            "user's only", group, path);
      return 2;
    }
    snprintf(msg, msglen,
             "statusGroup '%s' does not exist: only %s may use the status endpoint %s (create "
             "the group, e.g. groupadd --system %s, and restart lorelayd to let its members "
             "run lorelayctl)",
             group, geteuid() == 0 ? "root" : "this user", path, group);
    return 1;
  }
  if (chown(path, (uid_t)-1, found->gr_gid) != 0) {
    snprintf(msg, msglen, "status endpoint %s: chgrp %s: %s (members of %s cannot use it)", path,
             group, strerror(errno), group);
    return -1;
  }
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = '\0';
    if (strcmp(dir, lr_posix_run_dir(run, sizeof run)) == 0 &&
        (chown(dir, (uid_t)-1, found->gr_gid) != 0 || chmod(dir, 0750) != 0)) {
      snprintf(msg, msglen, "%s: chgrp %s: %s (members of %s cannot reach the status endpoint)",
               dir, group, strerror(errno), group);
      return -1;
    }
  }
  snprintf(msg, msglen, "status endpoint %s: group %s may connect (0660)", path, group);
  return 0;
}

const lr_host_pal_t lr_pal_posix = {
    .base = {.name = "posix", LR_LINUX_PAL_COMMON},
    .vmsock_connect_start = lr_posix_vmsock_connect_start,
    .vmsock_connect_result = lr_posix_vmsock_connect_result,
    .nsock_open = lr_posix_nsock_open,
    .nsock_take = lr_posix_nsock_take,
    .nsock_close = lr_posix_nsock_close,
    .listen_loopback = listen_loopback,
    .udp_bind_loopback = udp_bind_loopback,
    .run_dir = lr_posix_run_dir,
    .secure_endpoint = secure_endpoint,
    .endpoint_group = endpoint_group,
    .port_holder = port_holder,
    .default_status_path = lr_paths_default_status,
    .default_config_path = lr_paths_default_config,
};

const lr_host_pal_t *lr_pal_host(void) { return &lr_pal_posix; }

void lr_posix_init(void) {
  signal(SIGPIPE, SIG_IGN);
  lr_file_secret_check = lr_linux_secret_check; /* key files: owner and mode */
  unsigned long was = lr_linux_raise_nofile();
  LR_DEBUG("open-files limit: %lu", was);
}

int lr_posix_mkdir_p(const char *path, mode_t mode) {
  char tmp[512];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(tmp, mode) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  if (mkdir(tmp, mode) != 0 && errno != EEXIST) return -1;
  return 0;
}

int lr_posix_own_dir(const char *dir, char *err, size_t errlen) {
  struct stat st;
  char parent[512];
  snprintf(parent, sizeof parent, "%s", dir);
  char *slash = strrchr(parent, '/');
  if (slash && slash != parent) {
    *slash = '\0';
    if (lr_posix_mkdir_p(parent, 0755) != 0) {
      snprintf(err, errlen, "cannot create %s: %s", parent, strerror(errno));
      return -1;
    }
  }
  if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
    return -1;
  }
  if (lstat(dir, &st) != 0) {
    snprintf(err, errlen, "%s: %s", dir, strerror(errno));
    return -1;
  }
  if (!S_ISDIR(st.st_mode)) {
    snprintf(err, errlen, "%s is not a directory (a link?): refusing to use it", dir);
    return -1;
  }
  if (st.st_uid != geteuid()) {
    snprintf(err, errlen,
             "%s belongs to uid %u, not to this daemon (uid %u): refusing to use it (another "
             "user could replace its sockets)",
             dir, (unsigned)st.st_uid, (unsigned)geteuid());
    return -1;
  }
  if ((st.st_mode & 022) && chmod(dir, st.st_mode & 0750) != 0) {
    snprintf(err, errlen, "%s is writable by others and cannot be fixed: %s", dir,
             strerror(errno));
    return -1;
  }
  return 0;
}

int lr_posix_claim_socket_path(const char *path, char *err, size_t errlen) {
  char dir[512];
  struct sockaddr_un sun;
  if (strlen(path) >= sizeof sun.sun_path) {
    snprintf(err, errlen, "socket path %s is too long (max %zu bytes)", path,
             sizeof sun.sun_path - 1);
    return -1;
  }
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    char run[400];
    *slash = '\0';
    /* The daemon's own run directory must be its own; a directory the user
     * named with --socket is the user's choice. */
    if (strcmp(dir, lr_posix_run_dir(run, sizeof run)) == 0) {
      if (lr_posix_own_dir(dir, err, errlen) != 0) return -1;
    } else if (lr_posix_mkdir_p(dir, 0755) != 0) {
      snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
      return -1;
    }
  }
  struct stat st;
  if (lstat(path, &st) != 0) return 0;
  if (!S_ISSOCK(st.st_mode)) {
    snprintf(err, errlen, "%s exists and is not a socket: not touching it", path);
    return -1;
  }
  /* A live server answers a connect; a stale file from a crash does not. */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "socket: %s", strerror(errno));
    return -1;
  }
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path, strlen(path));
  int live = connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
  close(fd);
  if (live) {
    snprintf(err, errlen, "%s is in use by a running process (another lorelayd?)", path);
    return -1;
  }
  if (unlink(path) != 0) {
    snprintf(err, errlen, "cannot remove stale %s: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}
