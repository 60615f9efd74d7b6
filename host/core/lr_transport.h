/* Opening a transport stream from the host to a guest agent.
 *
 * One entry point for every transport kind so the host core never cares
 * which one it uses: unix and tcp through libuv, the Firecracker/Cloud
 * Hypervisor hybrid-vsock Unix socket with its "CONNECT <port>\n" ->
 * "OK <n>\n" handshake, and AF_VSOCK/AF_HYPERV through the platform: a
 * non-blocking connect waited for on the loop (uv_poll_t) where it has one
 * (Linux), else its blocking connect on a thread of the attempt's own
 * (Windows), never on libuv's thread pool; then uv_tcp_open. Every connect
 * is bounded by a timeout, so a missing guest is an error, never a hang. */
#ifndef LR_TRANSPORT_H
#define LR_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include "lr_addr.h"
#include "lr_endpoint.h"
#include "lr_host_pal.h"

/* Ownership of ep: the caller allocates it (inside its own record) and must
 * keep that memory valid until cb has run. While the attempt runs, the
 * attempt owns ep's handle; when cb runs it hands it over:
 *   status 0: ep is open (handle initialised, kind set) and now belongs to
 *             the caller, who closes it.
 *   status < 0: ep's handle is already closed (nothing to clean up) and err
 *             says why. The caller may free ep's memory inside cb.
 * The attempt allocates, closes and frees everything else itself (its timer,
 * its poll handle or thread, a VM socket that arrives after the deadline). */
typedef void (*lr_transport_cb)(lr_endpoint_t *ep, int status, const char *err, void *data);

#define LR_TRANSPORT_TIMEOUT_MS 5000

/* Starts connecting ep to a, bounded by LR_TRANSPORT_TIMEOUT_MS for every
 * kind. Returns 0: cb runs exactly once, never from inside this call, for
 * success and failure alike. Returns a uv error only when nothing was
 * started (bad address kind, no VM sockets on this platform, out of memory):
 * ep's handle was never initialised, cb will not run, err says why. */
int lr_transport_connect(uv_loop_t *loop, const lr_host_pal_t *pal, const lr_taddr_t *a,
                         unsigned flags, lr_endpoint_t *ep, lr_transport_cb cb, void *data,
                         char *err, size_t errlen);
/* flags: LR_TRANSPORT_IPC opens a unix: stream as a libuv IPC pipe, read
 * with a control buffer: a descriptor the peer sends is received (and seen
 * by uv_pipe_pending_count) instead of being dropped unseen by the kernel.
 * The host uses it for namespace guests to refuse such a peer
 * (lr_guest_refuse_fds); it never keeps what arrives. */
#define LR_TRANSPORT_IPC 0x01

/* Hybrid vsock handshake, pure: the request line for a port, and the reply
 * parser. Reply: LR_PROTO_OK with *consumed = bytes of the "OK <n>\n" line,
 * LR_PROTO_NEED_MORE, or LR_PROTO_EINVAL (anything else, or a line > 32). */
size_t lr_fc_request(uint32_t port, char *out, size_t cap);
int lr_fc_parse_reply(const char *buf, size_t len, uint32_t *host_port, size_t *consumed);

#endif
