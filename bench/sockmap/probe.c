/* An experiment, not part of lorelay: can a relay done by the kernel
 * (sockmap, an sk_skb verdict program redirecting each socket's bytes to its
 * peer's egress) replace a user-space relay for one-hop TCP, as issue 19
 * asks, and keep every byte and the half-close order?
 *
 * One process plays client, relay and server on loopback, so the three
 * paths are compared under the same conditions:
 *   direct   client -> server
 *   copy     client -> relay (epoll, read/write) -> server
 *   sockmap  client -> relay (both sockets in a SOCKHASH, verdict redirect;
 *            user space sees only EOF and errors) -> server
 * and runs four checks on each: 1-byte ping-pong latency, 2 GiB one way,
 * 3 000 half-close exchanges (N bytes then FIN; the server answers with the
 * count it saw, then closes; the client must get the count, then EOF), and
 * how much a client can push into a server that never reads.
 *
 * Build and run: bench/sockmap/run.sh (root: it loads a BPF program).
 * Findings: bench/sockmap/README.md. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int mode; /* 0 direct, 1 copy, 2 sockmap */
static int socks_fd, peer_fd;
static int srv_port, relay_port;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static int listen_on(int *port) {
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(s, (void *)&a, sizeof a) || listen(s, 512)) { perror("listen"); exit(1); }
  socklen_t l = sizeof a; getsockname(s, (void *)&a, &l); *port = ntohs(a.sin_port);
  return s;
}
static int connect_to(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (connect(s, (void *)&a, sizeof a)) { perror("connect"); exit(1); }
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct timeval tv = {.tv_sec = 3}; setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return s;
}
/* server: mode byte decides: 'p' echo each byte; 'h' count to EOF, reply count, close; 's' stall (never read) */
static void *server_conn(void *arg) {
  int c = (int)(intptr_t)arg, one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char m; if (read(c, &m, 1) != 1) { close(c); return NULL; }
  static char buf[1 << 16];
  if (m == 'p') { ssize_t n; while ((n = read(c, buf, sizeof buf)) > 0) if (write(c, buf, n) != n) break; }
  else if (m == 'h') { uint64_t tot = 0; ssize_t n; while ((n = read(c, buf, sizeof buf)) > 0) tot += n; if (write(c, &tot, 8) != 8) {} }
  else if (m == 's') { while (read(c, &m, 0) >= 0) pause(); }
  else if (m == 'b') { ssize_t n; while ((n = read(c, buf, sizeof buf)) > 0) {} }
  close(c); return NULL;
}
static void *server(void *arg) {
  int l = (int)(intptr_t)arg;
  for (;;) { int c = accept(l, NULL, NULL); if (c < 0) continue; pthread_t t; pthread_create(&t, NULL, server_conn, (void *)(intptr_t)c); pthread_detach(t); }
  return NULL;
}
static uint64_t cookie(int s) { uint64_t c; socklen_t l = sizeof c; getsockopt(s, SOL_SOCKET, SO_COOKIE, &c, &l); return c; }
static uint64_t bytes_in(int s) { struct tcp_info ti; socklen_t l = sizeof ti; getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &l); return ti.tcpi_bytes_received; }
static uint64_t bytes_out(int s) { struct tcp_info ti; socklen_t l = sizeof ti; getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &l); int q = 0; ioctl(s, SIOCOUTQ, &q); return ti.tcpi_bytes_acked + q; }
/* one relayed pair, one thread (prototype) */
struct pair { int a, b; };
static int safe_shutdown = 1;
static long unsafe_windows, fallbacks;
static void *relay_pair(void *arg) {
  struct pair *p = arg; int a = p->a, b = p->b; free(p);
  int ep = epoll_create1(0);
  struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP}; e.data.fd = a; epoll_ctl(ep, EPOLL_CTL_ADD, a, &e); e.data.fd = b; epoll_ctl(ep, EPOLL_CTL_ADD, b, &e);
  int done_a = 0, done_b = 0, mode_pair = mode; static __thread char buf[1 << 18];
  if (mode == 2) {
    /* Both sockets into the map first; the peer entries, which turn the
     * redirect on, only once both are in (until then the verdict passes
     * bytes through as usual). A socket no longer established cannot go in:
     * that pair stays in user space. */
    uint64_t ca = cookie(a), cb = cookie(b), fa = a, fb = b;
    if (bpf_map_update_elem(socks_fd, &ca, &fa, BPF_ANY) || bpf_map_update_elem(socks_fd, &cb, &fb, BPF_ANY)) {
      fallbacks++; bpf_map_delete_elem(socks_fd, &ca); bpf_map_delete_elem(socks_fd, &cb); mode_pair = 1;
    } else {
      bpf_map_update_elem(peer_fd, &ca, &cb, BPF_ANY); bpf_map_update_elem(peer_fd, &cb, &ca, BPF_ANY);
      int one = 1; setsockopt(a, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one); setsockopt(b, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
    }
  }
  while (!(done_a && done_b)) {
    struct epoll_event ev[2]; int n = epoll_wait(ep, ev, 2, 5000);
    if (n <= 0) break;
    for (int i = 0; i < n; i++) {
      int from = ev[i].data.fd, to = from == a ? b : a; int *done = from == a ? &done_a : &done_b;
      if (*done) continue;
      if (mode_pair == 1) {
        ssize_t r = read(from, buf, sizeof buf);
        if (r > 0) { ssize_t off = 0; while (off < r) { ssize_t w = write(to, buf + off, r - off); if (w <= 0) goto out; off += w; } continue; }
        if (r == 0) { shutdown(to, SHUT_WR); *done = 1; struct epoll_event d = {0}; epoll_ctl(ep, EPOLL_CTL_DEL, from, &d); continue; }
        goto out;
      }
      /* sockmap: only EOF/errors reach us */
      if (ev[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        char c; ssize_t r = recv(from, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r > 0) continue; /* data arrived before the redirect took: leave it (prototype) */
        if (safe_shutdown) { int spins = 0; while (bytes_out(to) < bytes_in(from)) { spins++; usleep(50); } if (spins) unsafe_windows++; }
        shutdown(to, SHUT_WR); *done = 1; struct epoll_event d = {0}; epoll_ctl(ep, EPOLL_CTL_DEL, from, &d);
      }
    }
  }
out:
  if (getenv("DBG")) fprintf(stderr, "pair done: path %s done_a %d done_b %d\n", mode_pair == 1 ? "copy" : "sockmap", done_a, done_b);
  if (mode == 2) { uint64_t ca = cookie(a), cb = cookie(b); bpf_map_delete_elem(socks_fd, &ca); bpf_map_delete_elem(socks_fd, &cb); bpf_map_delete_elem(peer_fd, &ca); bpf_map_delete_elem(peer_fd, &cb); }
  close(a); close(b); close(ep); return NULL;
}
static void *relay(void *arg) {
  int l = (int)(intptr_t)arg;
  for (;;) { int a = accept(l, NULL, NULL); if (a < 0) continue; int one = 1; setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct pair *p = malloc(sizeof *p); p->a = a; p->b = connect_to(srv_port); pthread_t t; pthread_create(&t, NULL, relay_pair, p); pthread_detach(t); }
  return NULL;
}
static int target(void) { return mode == 0 ? srv_port : relay_port; }

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const char *m = argc > 1 ? argv[1] : "direct";
  mode = !strcmp(m, "copy") ? 1 : !strcmp(m, "sockmap") ? 2 : 0;
  if (argc > 2 && !strcmp(argv[2], "unsafe")) safe_shutdown = 0;
  if (mode == 2) {
    struct bpf_object *o = bpf_object__open_file(getenv("RELAY_BPF") ? getenv("RELAY_BPF") : "relay.bpf.o", NULL);
    if (!o || bpf_object__load(o)) { fprintf(stderr, "load failed\n"); return 1; }
    socks_fd = bpf_object__find_map_fd_by_name(o, "socks"); peer_fd = bpf_object__find_map_fd_by_name(o, "peer");
    int pf = bpf_program__fd(bpf_object__find_program_by_name(o, "relay_verdict"));
    if (getenv("STRP")) {
      int pp = bpf_program__fd(bpf_object__find_program_by_name(o, "relay_parser"));
      if (bpf_prog_attach(pp, socks_fd, BPF_SK_SKB_STREAM_PARSER, 0) || bpf_prog_attach(pf, socks_fd, BPF_SK_SKB_STREAM_VERDICT, 0)) { perror("attach strp"); return 1; }
    } else if (bpf_prog_attach(pf, socks_fd, BPF_SK_SKB_VERDICT, 0)) { perror("attach"); return 1; }
  }
  int ls = listen_on(&srv_port); pthread_t t; pthread_create(&t, NULL, server, (void *)(intptr_t)ls);
  int lr = listen_on(&relay_port); pthread_create(&t, NULL, relay, (void *)(intptr_t)lr);
  /* 1. ping-pong */
  { int s = connect_to(target()); char c = 'p'; write(s, &c, 1); int N = 20000; double t0 = now();
    for (int i = 0; i < N; i++) { if (write(s, &c, 1) != 1 || read(s, &c, 1) != 1) { printf("ping broke at %d\n", i); break; } }
    double dt = now() - t0; printf("%s ping: %.1f us/rt, %.0f rt/s\n", m, dt / N * 1e6, N / dt); close(s); }
  /* 2. bulk 2 GiB */
  { int s = connect_to(target()); char c = 'b'; write(s, &c, 1); static char buf[1 << 18]; memset(buf, 7, sizeof buf);
    long total = 2L << 30, sent = 0; double t0 = now(); while (sent < total) { ssize_t w = write(s, buf, sizeof buf); if (w <= 0) break; sent += w; }
    shutdown(s, SHUT_WR); read(s, &c, 1); double dt = now() - t0; printf("%s bulk: %.2f Gbit/s\n", m, sent * 8 / dt / 1e9); close(s); }
  /* 3. half-close: N bytes then FIN; server replies with the count it saw */
  { int bad = 0, runs = 3000; srand(42); double t0 = now();
    static char buf[1 << 20]; memset(buf, 1, sizeof buf);
    for (int i = 0; i < runs; i++) { int s = connect_to(target()); char c = 'h'; write(s, &c, 1);
      size_t n = (i % 3 == 0) ? (size_t)(rand() % 64) : (i % 3 == 1) ? (size_t)(rand() % 65536) : (size_t)(rand() % (1 << 20));
      size_t off = 0; while (off < n) { ssize_t w = write(s, buf + off, n - off); if (w <= 0) break; off += w; }
      shutdown(s, SHUT_WR); uint64_t got = 0; ssize_t r = read(s, &got, 8); char x; ssize_t r2 = read(s, &x, 1);
      if (r != 8 || got != n || r2 != 0) { bad++; if (bad < 5) printf("  half-close run %d: sent %zu, server saw %llu (r=%zd, eof=%zd)\n", i, n, (unsigned long long)got, r, r2); }
      close(s); }
    printf("%s half-close: %d of %d runs wrong (%.1f s); shutdowns that had to wait for the redirect queue: %ld; pairs relayed in user space (closed before the insert): %ld\n", m, bad, runs, now() - t0, unsafe_windows, fallbacks); }
  /* 4. backpressure: server never reads; how much can the client push before blocking? */
  { int s = connect_to(target()); char c = 's'; write(s, &c, 1); static char buf[1 << 16]; long sent = 0; double t0 = now();
    int fl = 1; (void)fl; struct timeval tv = {.tv_sec = 0, .tv_usec = 300000}; setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    while (now() - t0 < 5) { ssize_t w = write(s, buf, sizeof buf); if (w <= 0) break; sent += w; }
    printf("%s backpressure: the client pushed %.1f MiB into a server that never reads before blocking\n", m, sent / 1048576.0); close(s); }
  return 0;
}
