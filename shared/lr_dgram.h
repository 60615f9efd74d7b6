/* Datagrams over a byte stream: how a UDP flow's transport stream keeps
 * datagram boundaries.
 *
 * After OPEN (with LR_OPEN_UDP) and OPEN_RESULT, each direction of the
 * stream is a sequence of `u16 length (big-endian) | bytes[length]`, one
 * per datagram, length 0 .. LR_DGRAM_MAX (the largest UDP payload over
 * IPv4). Two bytes of framing and no other header: the data path stays as
 * lean as the TCP one, and a length over LR_DGRAM_MAX is an error before any
 * of it is buffered.
 *
 * Two halves. The decoder (lr_dgram_rx_*) is pure: it takes whatever a read
 * returned and calls back once per complete datagram, straight from the
 * caller's buffer when the datagram lies in it whole, so it can be fuzzed
 * and unit-tested on its own; only a datagram split across reads is copied
 * (into a buffer of its own size, freed as soon as it is delivered, so an
 * idle flow holds none). The sender (lr_dgram_send) frames one datagram onto
 * a libuv stream with a bounded queue: a stream that falls behind drops
 * datagrams, as UDP would, and counts them, instead of queueing without
 * bound or blocking the other flows. Both the host (lr_udp.c) and the agent
 * (agent_udp.c) use them. */
#ifndef LR_DGRAM_H
#define LR_DGRAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define LR_DGRAM_MAX 65507 /* largest UDP payload (IPv4: 65535 - 20 - 8) */
#define LR_DGRAM_HDR 2
/* Unsent framed bytes a flow's stream may hold before datagrams are dropped. */
#define LR_DGRAM_QUEUE_MAX (256 * 1024)
/* Bytes all the flows of one host port, and of one guest, may hold queued
 * at once (datagrams waiting for their flow's stream to open, plus unsent
 * framed bytes): a client can open many flows, and each flow's own bound
 * times maxUdpFlows would be gigabytes (lr_udp.c). */
#define LR_DGRAM_PORT_QUEUE_MAX (4 * 1024 * 1024)
#define LR_DGRAM_GUEST_QUEUE_MAX (16 * 1024 * 1024)

/* One datagram; return non-zero to stop decoding (the flow closed). */
typedef int (*lr_dgram_fn)(void *data, const uint8_t *p, size_t n);

/* The decoder's state. Owned by the flow record that embeds it;
 * lr_dgram_rx_free releases the partial datagram, if any. */
typedef struct {
  uint8_t hdr[LR_DGRAM_HDR];
  uint8_t nhdr;   /* header bytes seen of the datagram in progress */
  size_t need;    /* its length, once the header is complete */
  size_t have;    /* bytes of it copied into part */
  uint8_t *part;  /* only while a datagram spans reads */
} lr_dgram_rx_t;

void lr_dgram_rx_init(lr_dgram_rx_t *rx);
void lr_dgram_rx_free(lr_dgram_rx_t *rx);
/* Feeds n bytes. LR_PROTO_OK when all were consumed; LR_PROTO_ETOOBIG for
 * a length over LR_DGRAM_MAX (nothing of it delivered); LR_PROTO_ENOMEM; or
 * LR_DGRAM_STOPPED when fn asked to stop. */
#define LR_DGRAM_STOPPED 2
int lr_dgram_rx_feed(lr_dgram_rx_t *rx, const uint8_t *p, size_t n, lr_dgram_fn fn, void *data);
/* 1 when a datagram is partly read: an end of stream now truncates it. */
int lr_dgram_rx_partial(const lr_dgram_rx_t *rx);

/* The 2-byte header of a datagram of n bytes (n <= LR_DGRAM_MAX). */
void lr_dgram_hdr_encode(uint8_t out[LR_DGRAM_HDR], size_t n);

/* The sender's state: bytes queued on the stream and datagrams dropped.
 * Embedded in the flow record, which must outlive the stream handle (a
 * queued write's callback runs before the handle's close callback). */
typedef struct {
  size_t queued;
  uint64_t dropped;
  uint64_t *drop_counter; /* optional live counter (the port's), added to with dropped */
  /* Optional byte counters this flow's queue shares with others (the
   * port's, the guest's), each with its bound: a datagram that would take
   * one past its bound is dropped. They must outlive every queued write. */
  size_t *shared[2];
  size_t shared_max[2];
} lr_dgram_tx_t;

/* 1 when n more queued bytes fit every shared bound of tx. */
int lr_dgram_shared_fits(const lr_dgram_tx_t *tx, size_t n);
/* Adds (or, negative, removes) n bytes to tx's shared counters. */
void lr_dgram_shared_add(lr_dgram_tx_t *tx, size_t n, int sign);

/* Frames p[0..n) onto s: written at once when the kernel takes it,
 * otherwise the unwritten rest is queued (a copy) if the queue stays under
 * LR_DGRAM_QUEUE_MAX and every shared bound, else the whole datagram is dropped and counted (a
 * frame already half written is always finished, so the stream never
 * loses its framing). 0 sent or queued, 1 dropped, or a negative uv error
 * (the stream is broken). n must be <= LR_DGRAM_MAX. */
int lr_dgram_send(uv_stream_t *s, lr_dgram_tx_t *tx, const uint8_t *p, size_t n);

/* Socket buffers for the UDP sockets on either end of a flow (the host's
 * stand-in, the agent's connected socket). The kernel's default (about
 * 200 KiB, some 50 datagrams of 3 KB) drops a burst a direct path would
 * carry: the relay sits between two sockets that each buffer, so its own
 * must hold what the client's and the server's would. Capped by the OS
 * (net.core.rmem_max on Linux); best effort. */
#define LR_DGRAM_SOCKBUF (4 * 1024 * 1024)
void lr_dgram_sockbufs(uv_udp_t *h);

/* The receive buffer for the UDP sockets of both ends (uv_udp_recv_start's
 * alloc callback): one static buffer of LR_DGRAM_MAX + 1 bytes for every
 * socket, since libuv fills it and calls back before it reads another
 * socket, and each datagram is passed on (framed onto a stream, or copied
 * into a queue) before the callback returns. Loop thread only. */
void lr_dgram_udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* A read buffer for a flow's stream (malloc'd, big enough for several
 * datagrams); the read callback frees buf->base. */
void lr_dgram_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

#endif
