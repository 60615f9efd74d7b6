/* AF_VSOCK on Linux: the native calls libuv cannot make.
 *
 * libuv has no AF_VSOCK support, so the host starts a non-blocking connect
 * natively, the core waits for it on the loop and hands the connected
 * socket to uv_tcp_open (the guest's listener is its own, in
 * guest/glisten.c). The calls are kept thin and the address conversion is a
 * separate pure function, because no vsock peer can be reached on the
 * machines that test this code: only the conversion and the refusal paths
 * are tested. */
#ifndef LR_VMSOCK_POSIX_H
#define LR_VMSOCK_POSIX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <linux/vm_sockets.h>
#include <uv.h>

#include "lr_addr.h"

/* Connect timeout set with SO_VM_SOCKETS_CONNECT_TIMEOUT: shorter than
 * LR_TRANSPORT_TIMEOUT_MS so the kernel gives up before the core does. */
#define LR_POSIX_VSOCK_CONNECT_TIMEOUT_S 4

/* Pure: a vsock transport address as a sockaddr_vm (LR_VSOCK_CID_ANY maps
 * to VMADDR_CID_ANY). Returns 0, or UV_EINVAL with err filled for any other
 * kind of address. */
int lr_posix_vsock_sockaddr(const lr_taddr_t *a, struct sockaddr_vm *out, char *err, size_t errlen);

/* The lr_host_pal_t.vmsock_connect_start hook: an AF_VSOCK stream socket
 * (SOCK_NONBLOCK, SOCK_CLOEXEC, kernel connect timeout as above) and its
 * connect started, never waited for. 0 with *out connected, 1 with *out still
 * connecting, or a negative uv error code, a one-line
 * reason and no socket. Refuses, before creating any socket, addresses that
 * are not vsock: (hvsock: is Windows-only) and CID "any" (a connect needs
 * the guest's CID). */
int lr_posix_vmsock_connect_start(const lr_taddr_t *a, uv_os_sock_t *out, char *err,
                                  size_t errlen);

/* The lr_host_pal_t.vmsock_connect_result hook: once s has turned
 * writable, how its connect ended (SO_ERROR): 0, or a negative uv error and
 * the same one-line reason, with its hint, a failed connect() gives. Works
 * on any socket (the unit tests give it TCP ones). */
int lr_posix_vmsock_connect_result(const lr_taddr_t *a, uv_os_sock_t s, char *err,
                                   size_t errlen);

#endif
