/* AF_VSOCK for the posix host: connect only (the guest listens on its own).
 *
 * libuv cannot create vsock sockets, so the socket is made and its connect
 * started here, without blocking (SOCK_NONBLOCK: connect answers
 * EINPROGRESS); the host core waits for it on the loop with a uv_poll_t,
 * reads the outcome through lr_posix_vmsock_connect_result, and hands the
 * descriptor to uv_tcp_open. The calls stay thin
 * on purpose: a vsock connect cannot be exercised on the test machines, so
 * everything that can be decided without the kernel (which addresses are
 * refused, the sockaddr_vm layout) is decided before the first syscall and
 * tested on its own. Error strings say what the user should check, because
 * "No such device" from a vsock connect means "no vsock transport loaded". */
#include "vmsock_posix.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "lr_log.h" /* LR_PRINTF */

static int LR_PRINTF(4, 5) vs_fail(int uverr, char *err, size_t errlen, const char *fmt, ...) {
  if (err != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return uverr;
}

/* What a vsock errno means to someone setting up a VM. */
static const char *vs_hint(int e) {
  switch (e) {
  case EAFNOSUPPORT:
    return " (this kernel has no AF_VSOCK: load the vsock module)";
  case ENODEV:
  case ENETUNREACH:
  case EHOSTUNREACH:
    return " (no vsock transport for that CID: on a host load vhost_vsock, in a guest the "
           "virtio/hyperv/vmci vsock driver)";
  case ECONNREFUSED:
  case ECONNRESET:
    return " (nothing listens on that port in the guest: is lorelay-agent running?)";
  case ETIMEDOUT:
    return " (is the guest running and its CID right?)";
  default:
    return "";
  }
}

int lr_posix_vsock_sockaddr(const lr_taddr_t *a, struct sockaddr_vm *out, char *err, size_t errlen) {
  char addr[160];
  memset(out, 0, sizeof *out);
  if (a == NULL || a->kind != LR_TADDR_VSOCK)
    return vs_fail(UV_EINVAL, err, errlen, "%s is not a vsock: address",
                   a != NULL ? lr_taddr_format(a, addr, sizeof addr) : "(null)");
  out->svm_family = AF_VSOCK;
  out->svm_cid = a->cid == LR_VSOCK_CID_ANY ? VMADDR_CID_ANY : a->cid;
  out->svm_port = a->port;
  return 0;
}

int lr_posix_vmsock_connect_start(const lr_taddr_t *a, uv_os_sock_t *out, char *err,
                                  size_t errlen) {
  struct sockaddr_vm sa;
  struct timeval tv = {.tv_sec = LR_POSIX_VSOCK_CONNECT_TIMEOUT_S, .tv_usec = 0};
  char addr[160];
  int fd, e;

  /* The reasons leave the address out: the core names it (lr_transport.c). */
  *out = -1;
  if (a == NULL) return vs_fail(UV_EINVAL, err, errlen, "no transport address");
  if (a->kind == LR_TADDR_HVSOCK)
    return vs_fail(UV_EAFNOSUPPORT, err, errlen,
                   "hvsock: addresses need Windows (AF_HYPERV); on Linux use vsock:CID:PORT");
  if (a->kind != LR_TADDR_VSOCK)
    return vs_fail(UV_EINVAL, err, errlen, "%s is not a VM socket address",
                   lr_taddr_format(a, addr, sizeof addr));
  if (a->cid == LR_VSOCK_CID_ANY)
    return vs_fail(UV_EINVAL, err, errlen,
                   "cannot connect to CID 'any': give the guest's CID (e.g. QEMU guest-cid=)");
  if (lr_posix_vsock_sockaddr(a, &sa, err, errlen) != 0) return UV_EINVAL;

  fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    e = errno;
    return vs_fail(uv_translate_sys_error(e), err, errlen, "socket(AF_VSOCK): %s%s", strerror(e),
                   vs_hint(e));
  }
  /* Best effort: older kernels keep their 2 s default, which is also fine.
   * The kernel applies it to a non-blocking connect too (the attempt then
   * ends with ETIMEDOUT in SO_ERROR, and its hint). */
  (void)setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof tv);

  if (connect(fd, (const struct sockaddr *)&sa, sizeof sa) == 0) {
    *out = fd;
    return 0;
  }
  e = errno;
  /* EINTR: the kernel carries on with the connect, as with EINPROGRESS. */
  if (e == EINPROGRESS || e == EINTR) {
    *out = fd;
    return 1;
  }
  close(fd);
  return vs_fail(uv_translate_sys_error(e), err, errlen, "connect: %s%s", strerror(e), vs_hint(e));
}

int lr_posix_vmsock_connect_result(const lr_taddr_t *a, uv_os_sock_t s, char *err,
                                   size_t errlen) {
  int e = 0;
  socklen_t len = sizeof e;
  (void)a; /* the core names the address */
  if (getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &len) != 0) e = errno;
  if (e == 0) return 0;
  return vs_fail(uv_translate_sys_error(e), err, errlen, "connect: %s%s", strerror(e), vs_hint(e));
}
