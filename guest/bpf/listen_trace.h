/* The one record the eBPF listener trigger (listen_trace.bpf.c) sends to
 * the agent (lr_bpfwatch.c) through its ring buffer. Shared by both sides,
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

struct lt_event {
  unsigned short family;  /* AF_INET (2) or AF_INET6 (10) */
  unsigned short port;    /* local port, host order; 0 while listen() autobinds */
  unsigned char oldstate; /* CLOSE -> LISTEN or LISTEN -> CLOSE */
  unsigned char newstate;
  unsigned char pad[2];
};

#endif
