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

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "lr_file.h"
#include "lr_linux.h"
#include "lr_log.h"
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

const char *lr_posix_run_dir(char *buf, size_t len) {
  const char *xdg = getenv("XDG_RUNTIME_DIR");
  if (geteuid() == 0 || !xdg || !*xdg)
    snprintf(buf, len, geteuid() == 0 ? "/run/lorelay" : "/tmp/lorelay-%u", (unsigned)geteuid());
  else
    snprintf(buf, len, "%s/lorelay", xdg);
  return buf;
}

static const char *run_dir(char *buf, size_t len) { return lr_posix_run_dir(buf, len); }

static const char *default_status_path(char *buf, size_t len) {
  char dir[400];
  snprintf(buf, len, "%s/lorelayd.sock", lr_posix_run_dir(dir, sizeof dir));
  return buf;
}

static const char *default_config_path(char *buf, size_t len) {
  snprintf(buf, len, "/etc/lorelay/lorelay.ini");
  return buf;
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

const lr_pal_t lr_pal_posix = {
    .name = "posix",
    .vmsock_connect = lr_posix_vmsock_connect,
    .sock_close = lr_linux_sock_close,
    .fds_exhausted = lr_linux_fds_exhausted,
    .adopt_passed_socket = lr_linux_adopt_passed_socket,
    .adopt_passed_udp = lr_linux_adopt_passed_udp,
    .listen_loopback = listen_loopback,
    .udp_bind_loopback = udp_bind_loopback,
    .peer_closed = lr_linux_peer_closed,
    .run_dir = run_dir,
    .secure_endpoint = secure_endpoint,
    .default_status_path = default_status_path,
    .default_config_path = default_config_path,
    .hmac_sha256 = lr_linux_hmac_sha256,
    .random_bytes = lr_linux_random_bytes,
    .zc_pipe_open = lr_linux_zc_pipe_open,
    .zc_pipe_close = lr_linux_zc_pipe_close,
    .zc_move = lr_linux_zc_move,
    .zc_shutdown_write = lr_linux_zc_shutdown_write,
};

const lr_pal_t *lr_pal_host(void) { return &lr_pal_posix; }

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
