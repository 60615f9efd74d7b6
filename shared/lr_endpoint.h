/* One end of a relayed connection: a libuv stream plus what kind of socket
 * is under it, because half-close and reset are expressed differently per
 * kind (TCP has RST; Unix and VM sockets only have close).
 *
 * The handle storage is inline so a relayed connection is one allocation. */
#ifndef LR_ENDPOINT_H
#define LR_ENDPOINT_H

#include <uv.h>

typedef enum {
  LR_EP_NONE = 0,
  LR_EP_TCP = 1,     /* uv_tcp_t on a TCP socket */
  LR_EP_PIPE = 2,    /* uv_pipe_t on an AF_UNIX socket (or a named pipe) */
  LR_EP_VMSOCK = 3,  /* uv_tcp_t opened on an AF_VSOCK / AF_HYPERV socket: no TCP options */
} lr_ep_kind_t;

typedef struct {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } u;
  lr_ep_kind_t kind;
} lr_endpoint_t;

#endif
