/* The kernel relay of the sockmap experiment (probe.c, README.md): a
 * socket in the SOCKHASH whose cookie has a peer entry gets every byte it
 * receives redirected to that peer's egress; without a peer entry the bytes
 * pass as usual. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, 65536);
  __type(key, __u64);   /* the socket's cookie */
  __type(value, __u64);
} socks SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, __u64);   /* a socket's cookie */
  __type(value, __u64); /* its peer's cookie */
} peer SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 4);
  __type(key, __u32);
  __type(value, __u64);
} stats SEC(".maps");

static void count(__u32 i, __u64 n) { __u64 *v = bpf_map_lookup_elem(&stats, &i); if (v) __sync_fetch_and_add(v, n); }

SEC("sk_skb/stream_verdict")
int relay_verdict(struct __sk_buff *skb) {
  __u64 c = bpf_get_socket_cookie(skb);
  __u64 *p = bpf_map_lookup_elem(&peer, &c);
  if (!p) { count(0, 1); return SK_PASS; }
  __u64 k = *p;
  int r = bpf_sk_redirect_hash(skb, &socks, &k, 0);
  count(r == SK_PASS ? 1 : 2, 1);
  count(3, skb->len);
  return r;
}

char LICENSE[] SEC("license") = "GPL";

SEC("sk_skb/stream_parser")
int relay_parser(struct __sk_buff *skb) { return skb->len; }
