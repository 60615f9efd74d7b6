/* The one record the eBPF listener trigger (listen_trace.bpf.c) sends to
 * the agent (lr_bpfwatch.c) through its ring buffer, for a TCP listener
 * and for a UDP socket alike (fixed width: one ring buffer, one reader). Shared by both sides,
 * so plain fixed-width types only (the BPF side has no libc headers).
 *
 * The record only says that something changed; the agent then dumps the
 * listeners with sock_diag and diffs, so an event never has to carry the
 * address or the V6ONLY flag, and a lost event costs nothing once any
 * later one (or the safety-net scan) arrives. */
#ifndef LR_LISTEN_TRACE_H
#define LR_LISTEN_TRACE_H

#define LT_TCP_CLOSE 7   /* TCP_CLOSE and TCP_LISTEN in the kernel's tcp_states.h */
#define LT_TCP_LISTEN 10

#define LT_IPPROTO_TCP 6
#define LT_IPPROTO_UDP 17

/* UDP records: newstate says which hook sent it. */
#define LT_UDP_BOUND 1    /* cgroup post_bind4/post_bind6: bind() gave it a port */
#define LT_UDP_RELEASED 2 /* cgroup sock_release: a bound, unconnected socket closed */

struct lt_event {
  unsigned short family;  /* AF_INET (2) or AF_INET6 (10) */
  unsigned short port;    /* local port, host order; 0 while listen() autobinds */
  unsigned char oldstate; /* TCP: CLOSE -> LISTEN or LISTEN -> CLOSE; UDP: 0 */
  unsigned char newstate; /* UDP: LT_UDP_BOUND or LT_UDP_RELEASED */
  unsigned char proto;    /* LT_IPPROTO_TCP or LT_IPPROTO_UDP */
  unsigned char pad;
};

#endif
