/* The agent's transport listener: a listening socket for a transport
 * address, created with plain POSIX calls.
 *
 * Plain file descriptors rather than libuv handles because two processes
 * need it: lorelay-init binds the socket once and hands it to every agent it
 * starts (so a restart never drops queued connections or races on a Unix
 * socket path), and lorelay-agent binds it itself when run alone. libuv
 * cannot create AF_VSOCK sockets anyway; the agent wraps whatever fd it gets
 * with uv_pipe_open or uv_tcp_open. */
#ifndef LR_GLISTEN_H
#define LR_GLISTEN_H

#include <stddef.h>
#include "lr_addr.h"

#define LR_GUEST_BACKLOG 4096 /* the kernel caps it at net.core.somaxconn */

/* Binds and listens on a (unix, tcp or vsock; fc and hvsock are host-side
 * addresses and are refused with a hint). A stale Unix socket file is
 * unlinked first, but a path that exists and is not a socket is an error;
 * the socket is created mode 0600 whatever the umask.
 * vsock:any:PORT binds VMADDR_CID_ANY. Returns a close-on-exec fd, or -1
 * with a one-line reason in err (with a hint for the usual vsock mistakes);
 * when a socket, bind or listen call failed, errno is that call's. */
int lr_guest_listen(const lr_taddr_t *a, char *err, size_t errlen);

/* Checks that fd is a listening stream socket and returns its address
 * family (AF_UNIX, AF_INET, AF_INET6 or AF_VSOCK) in *family. 0 or -1. */
int lr_guest_listen_check(int fd, int *family, char *err, size_t errlen);

/* The value of "--listen ADDR" or "--listen=ADDR" among agent arguments
 * (stopping at a "--"), or NULL. *missing_value is set when --listen is
 * the last argument. */
const char *lr_guest_find_listen_arg(int argc, char *const *argv, int *missing_value);

#endif
