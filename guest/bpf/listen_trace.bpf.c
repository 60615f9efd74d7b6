/* The eBPF listener trigger: a raw tracepoint on sock/inet_sock_set_state
 * that sends one small record (listen_trace.h) to the agent whenever a TCP
 * socket of the agent's own network namespace starts or stops listening,
 * and three cgroup socket hooks (post_bind4, post_bind6, sock_release)
 * that do the same for a UDP socket bind() gives a port and for its close:
 * a UDP server never changes TCP state, so the tracepoint never sees it.
 * The hooks are optional (lr_bpfwatch.c loads the object without them
 * when they cannot work); they see every socket below the cgroup they are
 * attached to, so they filter on the namespace cookie, and the post-bind
 * ones always allow the bind.
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
 * (clang -target bpf against the committed kernel types of vmlinux_min.h,
 * never the build machine's BTF; skeleton by bpftool) and loaded by
 * guest/lr_bpfwatch.c. */
#include "vmlinux_min.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "listen_trace.h"

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
  e->proto = LT_IPPROTO_TCP;
  e->pad = 0;
  bpf_ringbuf_submit(e, 0);
  return 0;
}

/* ---- UDP: cgroup socket hooks ----------------------------------------- */

/* The agent's network namespace as bpf_get_netns_cookie names it (the
 * agent reads it with SO_NETNS_COOKIE). The cgroup hooks see every socket
 * of every process below the cgroup they are attached to, whatever its
 * namespace, so this is their namespace filter. */
const volatile __u64 target_netns_cookie = 0;

#define LT_SOCK_BINDPORT_LOCK 8 /* sk_userlocks: bind() named the port */

/* The UDP sockets of our namespace that bind() gave a port the kernel
 * chose, marked at bind. With the port named in bind() (sk_userlocks), they
 * are the sockets whose release is worth a wake-up: a UDP server's. An
 * unconnected client's socket, whose port came with its first sendto(),
 * is neither, so its close does not cost the agent a dump (the safety-net
 * scan sees those). Socket storage goes with its socket. */
struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, __u8);
} udp_bound SEC(".maps");

static __always_inline int port_named(struct bpf_sock *sk)
{
  /* The context is the kernel's struct sock; sk_userlocks is not in the
   * bpf_sock view, so it is read from there, placed by CO-RE (it was a
   * bitfield before Linux 5.x: the probed read handles both). */
  return (BPF_CORE_READ_BITFIELD_PROBED((struct sock *)sk, sk_userlocks) &
          LT_SOCK_BINDPORT_LOCK) != 0;
}

static __always_inline void udp_event(struct bpf_sock *sk, __u16 port, unsigned char what)
{
  struct lt_event *e = bpf_ringbuf_reserve(&events, sizeof *e, 0);
  if (!e) {
    __sync_fetch_and_add(&dropped, 1);
    return;
  }
  e->family = (unsigned short)sk->family;
  e->port = port;
  e->oldstate = 0;
  e->newstate = what;
  e->proto = LT_IPPROTO_UDP;
  e->pad = 0;
  bpf_ringbuf_submit(e, 0);
}

/* bind() of a UDP socket, after the port was taken (the socket is in the
 * kernel's UDP hash already). A post_bind program's verdict could undo the
 * bind: these only watch, and always allow (1). An automatic port (the
 * first sendto() of an unbound socket) passes no hook; the safety-net
 * scan finds those. */
static __always_inline int udp_bind(struct bpf_sock *sk)
{
  __u16 port = (__u16)sk->src_port;
  if (sk->protocol != LT_IPPROTO_UDP || port == 0 ||
      bpf_get_netns_cookie(sk) != target_netns_cookie)
    return 1;
  if (!port_named(sk)) bpf_sk_storage_get(&udp_bound, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  udp_event(sk, port, LT_UDP_BOUND);
  return 1;
}

SEC("cgroup/post_bind4")
int lt_udp_bind4(struct bpf_sock *sk)
{
  return udp_bind(sk);
}

SEC("cgroup/post_bind6")
int lt_udp_bind6(struct bpf_sock *sk)
{
  return udp_bind(sk);
}

/* The last close of an inet socket (close(), or the process exiting),
 * before the socket leaves the hash. Only an unconnected one was a UDP
 * server to the agent (sock_diag state CLOSE); a connected UDP socket, such
 * as every DNS client's, is not worth a wake-up, nor is one that bind()
 * never gave its port (see udp_bound). */
SEC("cgroup/sock_release")
int lt_udp_release(struct bpf_sock *sk)
{
  if (sk->protocol != LT_IPPROTO_UDP || sk->state != LT_TCP_CLOSE) return 1;
  /* src_port is not in this hook's bpf_sock view (the verifier allows it
   * only after a bind): it is read from the struct sock, as above. */
  __u16 port = BPF_CORE_READ((struct sock *)sk, __sk_common.skc_num);
  if (port == 0 || (!port_named(sk) && !bpf_sk_storage_get(&udp_bound, sk, 0, 0)) ||
      bpf_get_netns_cookie(sk) != target_netns_cookie)
    return 1;
  udp_event(sk, port, LT_UDP_RELEASED);
  return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
