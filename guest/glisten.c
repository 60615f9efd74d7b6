/* Transport listeners for the guest (see lr_glisten.h). The native calls
 * are kept thin: socket, bind, listen, and nothing protocol-specific, so
 * the vsock path, which cannot be exercised on machines without a vsock
 * transport, is the same few lines as the tested unix and tcp paths. The
 * guest builds its own sockaddr_vm rather than borrowing the host's vsock
 * code: the host only connects, the guest only listens, and guest/ never
 * reaches into host/. */
#include "lr_glisten.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <netinet/in.h>
#include <linux/vm_sockets.h>

/* What a failed vsock bind or listen means to someone setting up a VM. */
static const char *vsock_hint(int e) {
  switch (e) {
    case EAFNOSUPPORT:
      return " (this kernel has no AF_VSOCK: load the vsock module)";
    case EADDRINUSE:
      return " (another socket is bound to that vsock port)";
    case EADDRNOTAVAIL:
      return " (that CID is not this machine's: listen on vsock:any:PORT)";
    default:
      return "";
  }
}

/* Closes fd without losing the errno that explains the failure. */
static void close_keep_errno(int fd) {
  int e = errno;
  close(fd);
  errno = e;
}

static int bind_listen(int fd, const struct sockaddr *sa, socklen_t salen, const lr_taddr_t *a,
                       char *err, size_t errlen) {
  char astr[256];
  const char *what = "bind";
  if (bind(fd, sa, salen) == 0) {
    what = "listen on";
    if (listen(fd, LR_GUEST_BACKLOG) == 0) return 0;
  }
  int e = errno;
  snprintf(err, errlen, "cannot %s %s: %s%s", what, lr_taddr_format(a, astr, sizeof astr),
           strerror(e), a->kind == LR_TADDR_VSOCK ? vsock_hint(e) : "");
  errno = e;
  return -1;
}

static int listen_unix(const lr_taddr_t *a, char *err, size_t errlen) {
  struct sockaddr_un sun;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  size_t plen = strlen(a->path);
  if (plen == 0 || plen >= sizeof sun.sun_path) {
    snprintf(err, errlen, "unix socket path '%s' is empty or longer than %zu bytes", a->path,
             sizeof sun.sun_path - 1);
    return -1;
  }
  memcpy(sun.sun_path, a->path, plen);

  struct stat st;
  if (lstat(a->path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      snprintf(err, errlen, "%s exists and is not a socket; refusing to replace it", a->path);
      return -1;
    }
    /* A socket file left by a previous run: nobody can be listening on it
     * once its owner has gone, and bind() would fail with EADDRINUSE. */
    if (unlink(a->path) != 0 && errno != ENOENT) {
      snprintf(err, errlen, "cannot remove stale socket %s: %s", a->path, strerror(errno));
      return -1;
    }
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "cannot create a unix socket: %s", strerror(errno));
    return -1;
  }
  /* Mode 0600 whatever the umask: only the agent's user (and root) may
   * connect; the agent also checks the peer's uid (SO_PEERCRED). The umask
   * covers the moment between bind and chmod; the process is still single-
   * threaded here (lorelay-init, or the agent before its loop starts). */
  mode_t old = umask(0177);
  int rc = bind_listen(fd, (struct sockaddr *)&sun, (socklen_t)sizeof sun, a, err, errlen);
  umask(old);
  if (rc == 0 && chmod(a->path, 0600) != 0) {
    int e = errno;
    snprintf(err, errlen, "cannot make %s mode 0600: %s", a->path, strerror(e));
    unlink(a->path);
    errno = e;
    rc = -1;
  }
  if (rc != 0) {
    close_keep_errno(fd);
    return -1;
  }
  return fd;
}

static int listen_tcp(const lr_taddr_t *a, char *err, size_t errlen) {
  struct sockaddr_storage ss;
  socklen_t sslen;
  memset(&ss, 0, sizeof ss);
  if (a->family == 6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)a->port);
    memcpy(&s6->sin6_addr, a->ip, 16);
    sslen = sizeof *s6;
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)a->port);
    memcpy(&s4->sin_addr, a->ip, 4);
    sslen = sizeof *s4;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "cannot create a tcp socket: %s", strerror(errno));
    return -1;
  }
  /* Restarting agents must be able to rebind while old connections sit in
   * TIME_WAIT; on Linux this does not let another socket share the port. */
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind_listen(fd, (struct sockaddr *)&ss, sslen, a, err, errlen) != 0) {
    close_keep_errno(fd);
    return -1;
  }
  return fd;
}

static int listen_vsock(const lr_taddr_t *a, char *err, size_t errlen) {
  struct sockaddr_vm svm;
  memset(&svm, 0, sizeof svm);
  svm.svm_family = AF_VSOCK;
  svm.svm_cid = a->cid == LR_VSOCK_CID_ANY ? VMADDR_CID_ANY : a->cid;
  svm.svm_port = a->port;
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errlen, "cannot create a vsock socket: %s%s", strerror(e), vsock_hint(e));
    errno = e;
    return -1;
  }
  if (bind_listen(fd, (struct sockaddr *)&svm, (socklen_t)sizeof svm, a, err, errlen) != 0) {
    close_keep_errno(fd);
    return -1;
  }
  return fd;
}

int lr_guest_listen(const lr_taddr_t *a, char *err, size_t errlen) {
  switch (a->kind) {
    case LR_TADDR_UNIX:
      return listen_unix(a, err, errlen);
    case LR_TADDR_TCP:
      return listen_tcp(a, err, errlen);
    case LR_TADDR_VSOCK:
      return listen_vsock(a, err, errlen);
    case LR_TADDR_FC:
      snprintf(err, errlen,
               "fc: addresses name the host side of a hybrid vsock; inside a Firecracker or "
               "Cloud Hypervisor guest listen on vsock:any:PORT");
      return -1;
    case LR_TADDR_HVSOCK:
      snprintf(err, errlen,
               "hvsock: addresses are for the Windows host; a Linux guest under Hyper-V "
               "listens on vsock:any:PORT");
      return -1;
  }
  snprintf(err, errlen, "unsupported transport address kind %d", (int)a->kind);
  return -1;
}

int lr_guest_listen_check(int fd, int *family, char *err, size_t errlen) {
  int v = 0;
  socklen_t vlen = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &vlen) != 0) {
    snprintf(err, errlen, "fd %d is not a socket: %s", fd, strerror(errno));
    return -1;
  }
  if (v != SOCK_STREAM) {
    snprintf(err, errlen, "fd %d is not a stream socket", fd);
    return -1;
  }
  vlen = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &vlen) != 0 || !v) {
    snprintf(err, errlen, "fd %d is not a listening socket", fd);
    return -1;
  }
  vlen = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &vlen) != 0) {
    snprintf(err, errlen, "cannot get the address family of fd %d: %s", fd, strerror(errno));
    return -1;
  }
  if (v != AF_UNIX && v != AF_INET && v != AF_INET6 && v != AF_VSOCK) {
    snprintf(err, errlen, "fd %d has unsupported address family %d", fd, v);
    return -1;
  }
  *family = v;
  return 0;
}

const char *lr_guest_find_listen_arg(int argc, char *const *argv, int *missing_value) {
  *missing_value = 0;
  const char *found = NULL;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) break;
    if (strcmp(argv[i], "--listen") == 0) {
      if (i + 1 >= argc) {
        *missing_value = 1;
        return NULL;
      }
      found = argv[++i];
    } else if (strncmp(argv[i], "--listen=", 9) == 0) {
      found = argv[i] + 9;
    } else if (argv[i][0] == '-' && strchr(argv[i], '=') == NULL &&
               strcmp(argv[i], "--help") != 0 && strcmp(argv[i], "-h") != 0 &&
               strcmp(argv[i], "--version") != 0 && strcmp(argv[i], "-V") != 0) {
      i++; /* every other agent option takes a value, as in agent_main.c */
    }
  }
  return found;
}
