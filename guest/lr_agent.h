/* The guest agent: a pure server on one transport listener.
 *
 * Every accepted stream starts with the host's preamble and is either the
 * control stream (HELLO/WELCOME, then the listener list and its changes,
 * PING/PONG, PORT_STATE reports, reverse-forwarding requests), a data
 * stream (one OPEN, a connect to the real server on the guest loopback, one
 * OPEN_RESULT, then the relay) or a reverse stream (one ATTACH naming a
 * guest client of a published port, then the relay). agent_int.h says
 * which file handles which. Kept apart from agent_main.c (flags, config,
 * signals) so that the
 * protocol handling can be driven by tests through a socketpair or a Unix
 * socket without a process around it. */
#ifndef LR_AGENT_H
#define LR_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "lr_pal.h"
#include "lr_proto.h"

#define LR_AGENT_HANDSHAKE_MS 5000
#define LR_AGENT_CONTROL_BACKLOG (1024 * 1024) /* unsent control bytes before we give up */
/* A control stream heard from within this long is live: a second HELLO is
 * refused (BUSY) rather than allowed to take it over. */
#define LR_AGENT_CONTROL_LIVE_MS 15000
/* Failed authentications per second (and burst) before the agent refuses
 * every new stream at once, until the bucket refills. One bucket per agent,
 * not per peer address: a flood of wrong keys also delays the real host. */
#define LR_AGENT_AUTH_FAILS_PER_SEC 10
#define LR_AGENT_MAX_ALLOW_UIDS 32

typedef struct {
  const char *name;        /* sent in WELCOME */
  const uint8_t *token;    /* the shared key (LR_KEY_MIN..LR_TOKEN_MAX bytes) or NULL: with
                              one, every stream starts with a challenge the host must answer */
  size_t token_len;
  unsigned scan_interval_ms;     /* periodic listener scan; 0 = 100 */
  /* 1: detect listeners with the eBPF trigger when it loads (lr_bpfwatch.h),
   * scanning only every ebpf_scan_interval_ms as a safety net; when it does
   * not load, or 0 here, the agent polls every scan_interval_ms. */
  int ebpf;
  unsigned ebpf_scan_interval_ms; /* 0 = 2000 */
  int no_udp;                    /* udp = false: report no UDP sockets, refuse UDP flows */
  unsigned udp_scan_interval_ms; /* UDP scan while the eBPF trigger watches TCP only
                                  * (its UDP hooks did not attach); 0 = 250 */
  unsigned handshake_timeout_ms; /* 0 = LR_AGENT_HANDSHAKE_MS */
  const lr_pal_t *pal;     /* NULL: lr_guest_pal */
  /* Unix transports: peer uids accepted besides root and the agent's own. */
  const uint32_t *allow_uids;
  size_t n_allow_uids;           /* at most LR_AGENT_MAX_ALLOW_UIDS */
  unsigned control_live_ms;      /* 0 = LR_AGENT_CONTROL_LIVE_MS */
  unsigned auth_fails_per_sec;   /* 0 = LR_AGENT_AUTH_FAILS_PER_SEC */
} lr_agent_opts_t;

typedef struct lr_agent_s lr_agent_t;

/* Copies what it needs from o. NULL on allocation failure or when the
 * sock_diag socket cannot be opened (err says why). */
lr_agent_t *lr_agent_new(uv_loop_t *loop, const lr_agent_opts_t *o, char *err, size_t errlen);

/* Serves on fd, a listening socket (AF_UNIX, AF_INET, AF_INET6 or
 * AF_VSOCK), which the agent now owns. Its own socket is never reported as
 * a listener. 0, or -1 with a reason in err. */
int lr_agent_serve_fd(lr_agent_t *a, int fd, char *err, size_t errlen);

/* Closes the listener and every stream. Run the loop until it has no more
 * handles, then call lr_agent_free. */
void lr_agent_shutdown(lr_agent_t *a);
void lr_agent_free(lr_agent_t *a);

#endif
