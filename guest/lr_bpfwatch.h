/* Event-driven listener detection: the eBPF trigger (bpf/listen_trace.bpf.c)
 * loaded, attached and read from the agent's libuv loop.
 *
 * The kernel programs fire on every TCP socket of the agent's network
 * namespace that enters or leaves LISTEN (a raw tracepoint), and, when the
 * cgroup socket hooks attach, on every UDP socket of that namespace that
 * bind() gives a port or whose unconnected life ends (post_bind4/6 and
 * sock_release, attached to the cgroup v2 root this agent sees). Each puts
 * a small record in one BPF ring buffer; the ring buffer's epoll fd sits in
 * the loop as a uv_poll_t, so an idle agent sleeps until a listener or a
 * UDP server really changes. What the record says is a hint, not the
 * truth: the agent answers it with a sock_diag dump and its usual diff
 * (agent_scan.c), because only the dump knows the bound address and
 * V6ONLY, and because the hooks fire a moment before the socket is
 * (un)hashed.
 *
 * Loading needs root or CAP_BPF + CAP_PERFMON and a kernel with BTF. When
 * anything is missing, lr_bpfwatch_start says why in one line and the
 * agent keeps polling. The UDP hooks are a separate, optional layer: they
 * also need a cgroup2 mount, CAP_NET_ADMIN over it, and Linux 5.14
 * (SO_NETNS_COOKIE; sock_release is 5.9). When they do not attach the TCP
 * trigger works alone and lr_bpfwatch_udp says why, so the agent polls UDP
 * sockets only. A build without clang, bpftool or libbpf compiles a stub
 * that always says so (lr_bpfwatch_compiled() is 0 there). */
#ifndef LR_BPFWATCH_H
#define LR_BPFWATCH_H

#include <stdint.h>
#include <uv.h>

typedef struct {
  uint8_t family;  /* 4 or 6 */
  uint8_t listening; /* 1: the socket entered LISTEN / a UDP socket was bound; 0: it went */
  uint16_t port;   /* 0 while listen() on an unbound socket is choosing its port */
  uint8_t udp;     /* 1: a UDP socket (the cgroup hooks); 0: a TCP listener */
} lr_bpfwatch_event_t;

/* One call per record, from the loop thread. */
typedef void (*lr_bpfwatch_event_fn)(void *data, const lr_bpfwatch_event_t *ev);
/* The watcher stopped working after it started (the ring buffer reported an
 * error). It no longer delivers events; the owner should close it and poll
 * instead. why is one line. */
typedef void (*lr_bpfwatch_fail_fn)(void *data, const char *why);

typedef struct lr_bpfwatch_s lr_bpfwatch_t;

/* 1 when this build contains the eBPF program, 0 for the stub. */
int lr_bpfwatch_compiled(void);

/* Loads the program with the caller's network namespace as its filter,
 * attaches it and starts polling its ring buffer on loop. NULL with a
 * one-line reason in err (not permitted, no BTF, built without eBPF...). */
lr_bpfwatch_t *lr_bpfwatch_start(uv_loop_t *loop, lr_bpfwatch_event_fn on_event,
                                 lr_bpfwatch_fail_fn on_fail, void *data, char *err,
                                 size_t errlen);

/* 1 when the UDP hooks are attached too. why (may be NULL) gets one line:
 * where they are attached, or why they are not. */
int lr_bpfwatch_udp(const lr_bpfwatch_t *w, const char **why);

/* Detaches the program and closes the poll handle; the memory is released
 * in the handle's close callback, so the loop must run afterwards (as for
 * any libuv handle). NULL is ignored. */
void lr_bpfwatch_close(lr_bpfwatch_t *w);

/* Records the kernel could not queue because the ring buffer was full. */
uint64_t lr_bpfwatch_dropped(const lr_bpfwatch_t *w);

#endif
