/* The eBPF listener trigger: a raw tracepoint on sock/inet_sock_set_state
 * that sends one small record (listen_trace.h) to the agent whenever a TCP
 * socket of the agent's own network namespace starts or stops listening.
 *
 * Everything else is filtered here, in the kernel, so the agent is woken
 * only for what it reports: every connection's handshake and teardown
 * (including the LISTEN -> SYN_RECV of each accepted connection, cloned
 * from its listener), other protocols (MPTCP uses the same tracepoint) and
 * sockets of other namespaces (the host and every other guest share one
 * kernel when the guest is a namespace).
 *
 * raw_tp rather than the perf-event tracepoint: it attaches without
 * tracefs being mounted (guests and containers often have none), and the
 * socket is the tracepoint's first argument, read with CO-RE relocations
 * so one object runs on any kernel with BTF. Built by cmake/LorelayBpf.cmake
 * (clang -target bpf, vmlinux.h from the build machine's BTF, skeleton by
 * bpftool) and loaded by guest/lr_bpfwatch.c. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "listen_trace.h"

#define LT_IPPROTO_TCP 6

/* The inode number of the agent's network namespace (/proc/self/ns/net),
 * written by the agent into the read-only data before the load. */
const volatile __u32 target_netns_ino = 0;

/* Records the ring buffer had no room for. Nothing is lost for the agent
 * (its next dump sees the current state whatever the events said), but the
 * number is worth a log line. */
__u64 dropped = 0;

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 16 * 1024); /* about a thousand records */
} events SEC(".maps");

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(lt_set_state, struct sock *sk, int oldstate, int newstate)
{
  /* listen() is CLOSE -> LISTEN and the listener's end LISTEN -> CLOSE.
   * Every connection a listener accepts is cloned from it and so starts
   * with LISTEN -> SYN_RECV: not a change of listeners, and far too
   * frequent to wake the agent for. */
  if (!(oldstate == LT_TCP_CLOSE && newstate == LT_TCP_LISTEN) &&
      !(oldstate == LT_TCP_LISTEN && newstate == LT_TCP_CLOSE))
    return 0;
  /* Without CONFIG_NET_NS there is one namespace and no field to read. */
  if (bpf_core_field_exists(sk->__sk_common.skc_net.net)) {
    __u32 ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
    if (ino != target_netns_ino) return 0;
  }
  /* sk_protocol was a bitfield before Linux 5.6; the probed bitfield read
   * handles both layouts. */
  if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != LT_IPPROTO_TCP) return 0;

  struct lt_event *e = bpf_ringbuf_reserve(&events, sizeof *e, 0);
  if (!e) {
    __sync_fetch_and_add(&dropped, 1);
    return 0;
  }
  e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
  e->port = BPF_CORE_READ(sk, __sk_common.skc_num);
  e->oldstate = (unsigned char)oldstate;
  e->newstate = (unsigned char)newstate;
  e->pad[0] = e->pad[1] = 0;
  bpf_ringbuf_submit(e, 0);
  return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
