/* The host core: everything lorelayd does, on any platform.
 *
 * For each guest it keeps a control stream (connect with backoff, HELLO,
 * resync, listener add/remove), a port table whose bindings are stand-in
 * listeners on the host loopback, and for each accepted client a data
 * stream to the guest and a relay. It also serves the status endpoint.
 * Platform specifics arrive through lr_pal_t; the process shell (argument
 * parsing, service or daemon, signals, netns setup) lives in host/posix and
 * host/win32 and only calls this API. */
#ifndef LR_HOST_H
#define LR_HOST_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "lr_addr.h"
#include "lr_config.h"
#include "lr_host_pal.h"
#include "lr_sbuf.h"

typedef struct lr_host_s lr_host_t;

/* Finds a guest whose address changes over time (WSL's VM id changes at
 * every WSL start). Called before every control-stream connect attempt, on
 * a libuv worker thread (a lookup may block for seconds, and the loop must
 * keep serving meanwhile): it may read data but must not touch the host.
 * 0 with *out filled, or -1 with a one-line reason (shown in status; the
 * attempt is retried with backoff). */
typedef int (*lr_guest_resolve_fn)(void *data, lr_taddr_t *out, char *err, size_t errlen);

typedef struct {
  const char *name;        /* shown in status; defaults to the transport string */
  const char *transport;   /* address string, see lr_addr.h; with resolve: a description */
  const uint8_t *token;    /* required for tcp:, optional otherwise */
  size_t token_len;
  lr_guest_resolve_fn resolve; /* optional */
  void *resolve_data;
  /* The guest is network namespace NAME, started by this process
   * (lorelayd --netns): while oneHop is on, the host connects to the
   * guest's servers itself, with sockets made in that namespace
   * (lr_host_pal_t.nsock_*), and relays each forward connection and UDP flow in
   * one hop, without the agent; with oneHop off (a reload may switch it)
   * they take the agent's two hops. NULL: every connection through the
   * agent. */
  const char *one_hop_netns;
  /* This guest's own configuration (its [guest NAME] section over
   * [lorelay]); copied. NULL: the host's. */
  const lr_config_t *cfg;
} lr_guest_opts_t;

typedef struct lr_guest_s lr_guest_t;

/* cfg and pal must outlive the host. */
lr_host_t *lr_host_new(uv_loop_t *loop, const lr_host_pal_t *pal, const lr_config_t *cfg);
/* 0, or -1 with a one-line reason (bad address, tcp without token, a
 * name already taken...). */
int lr_host_add_guest(lr_host_t *h, const lr_guest_opts_t *opts, char *err, size_t errlen);
/* The checks lr_host_add_guest makes before it changes anything (the
 * address, a token where the transport needs one, the key's length), so a
 * reload can refuse a file before it touches a running guest. 0 or -1. */
int lr_host_check_guest(lr_host_t *h, const lr_guest_opts_t *opts, char *err, size_t errlen);
/* The guest added last (for the shell's own bookkeeping). */
lr_guest_t *lr_host_last_guest(lr_host_t *h);
/* Many guests, live configuration. A guest is known by its name; names
 * are unique in a host (lr_host_add_guest refuses a second one). */
lr_guest_t *lr_host_find_guest(lr_host_t *h, const char *name);
/* A reload: the guest's configuration becomes cfg (copied). Listeners
 * whose forwarding changes (now allowed, ignored or denied) follow at
 * once; stand-ins move if their address changed; everything else,
 * connections included, is untouched. */
void lr_host_configure_guest(lr_guest_t *g, const lr_config_t *cfg);
/* Stops a guest and takes it out of status: its stand-ins close, its
 * connections are closed, its record is freed once the last callback that
 * names it has run (lr_host_int.h). Once per guest (a second call is
 * ignored), from anywhere, a callback of the core included. */
void lr_host_remove_guest(lr_guest_t *g);

/* What status says of the configuration: the file in effect (NULL: none,
 * the defaults), when it was read (Unix time), and the last reload's result
 * (reload_time 0: none yet; error NULL when it was applied). Copied. */
void lr_host_set_config_info(lr_host_t *h, const char *path, int64_t loaded_at,
                             int64_t reload_time, int reload_ok, const char *reload_error);

/* Listens for lorelayctl on a Unix socket path or named pipe name. */
int lr_host_serve_status(lr_host_t *h, const char *path, char *err, size_t errlen);

/* Status documents (the JSON shape is the one docs/protocol.md documents
 * for lorelayctl status --json; scripts read it, so it changes only by
 * adding fields). */
void lr_host_status_json(lr_host_t *h, lr_sbuf_t *out);
void lr_host_status_table(lr_host_t *h, lr_sbuf_t *out);
/* The same for one guest (guest NULL: all), the table fitted to width
 * columns (0: no limit). -1 when no guest has that name. */
int lr_host_status_json_for(lr_host_t *h, const char *guest, lr_sbuf_t *out);
int lr_host_status_table_for(lr_host_t *h, const char *guest, unsigned width, lr_sbuf_t *out);

/* Closes everything (stand-ins, connections, status endpoint); done runs
 * once every handle is closed and every record freed: exactly once, never
 * inside this call. The caller then frees with lr_host_free (done itself
 * may). A second call is ignored; any callback of the core may call it. */
void lr_host_shutdown(lr_host_t *h, void (*done)(void *data), void *data);
void lr_host_free(lr_host_t *h);

/* Tests only (NULL in production, where it costs one branch per callback):
 * fn runs at the entry of each callback the core runs, named by point
 * ("accept", "transport-connected", "handshake-read", "relay-closed",
 * "ns-ready", "udp-datagram", "udp-direct", "udp-stream",
 * "reverse-local-connected", "session-connected", "welcome",
 * "listener-report", "reverse-open", "tick"), so a test can remove the guest
 * or shut the host down from inside any of them. */
typedef void (*lr_host_test_hook_fn)(lr_host_t *h, const char *point, void *data);
void lr_host_set_test_hook(lr_host_t *h, lr_host_test_hook_fn fn, void *data);

#endif
