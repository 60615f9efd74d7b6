/* Configuration: an INI file in the style of .wslconfig, section [lorelay],
 * and for lorelayd any number of [guest NAME] sections (one per guest:
 * netns or transport, tokenFile, hostAddress, and any [lorelay] key as
 * that guest's own value).
 *
 * Parsed with inih; this module adds typed values, port lists with ranges,
 * and errors that name the file, line and key. The file is strict: an
 * unknown key (with "did you mean" for a near miss), a duplicate key or
 * section, an empty section, a bad value, or a key in a section where it
 * cannot take effect is an error. A daemon that silently ignores
 * "reversePort = 5432" (and, on reload, resets the key the user meant) is
 * worse than one that refuses the file. Every key is in one table
 * (lr_config_keys), which also gives its default as text, so the shipped
 * sample files are checked against the code. */
#ifndef LR_CONFIG_H
#define LR_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define LR_PORTSET_MAX_RANGES 64
#define LR_ADDRESS_MAX 64    /* an IP address as text */
#define LR_GUEST_NAME_MAX 64 /* a [guest NAME] (also a netns name) */
#define LR_MAX_GUESTS 256    /* [guest] sections in one file */

typedef struct {
  uint16_t lo, hi; /* inclusive */
} lr_port_range_t;

typedef struct {
  size_t n;
  lr_port_range_t r[LR_PORTSET_MAX_RANGES];
} lr_portset_t;

/* portMap: guest port -> host port, per guest too. */
#define LR_PORTMAP_MAX 64
typedef struct {
  size_t n;
  struct {
    uint16_t guest, host;
  } m[LR_PORTMAP_MAX];
} lr_portmap_t;

#define LR_GROUP_MAX 64 /* statusGroup */

typedef struct {
  int localhost_forwarding; /* localhostForwarding, default 1 */
  int ipv6;                 /* ipv6: create [::1] stand-ins, default 1 */
  lr_portset_t ignore_ports;   /* ignorePorts: "22, 5000-5010" */
  lr_portset_t reverse_ports;  /* reversePorts: host ports published in the guest */
  int remap_on_conflict;    /* remapOnConflict, default 0 */
  int log_level;            /* logLevel: lr_log_level_t, default info */
  unsigned scan_interval_ms;   /* scanIntervalMs (agent): default 100, 10..10000 */
  int ebpf;                    /* ebpf (agent): detect listeners with eBPF when it loads, default 1 */
  unsigned ebpf_scan_interval_ms; /* ebpfScanIntervalMs (agent): safety-net scan, default 2000 */
  unsigned conflict_retry_ms;  /* conflictRetryMs (host): default 1000, 100..60000 */
  unsigned conflict_grace_s;   /* conflictGraceSeconds (host): how long a port someone else
                                * held must stay free before a guest takes it; default 10 */
  lr_portset_t forward_ports;  /* forwardPorts: ports a guest may claim, default 1024-65535 */
  int udp;                     /* udp: forward guest UDP sockets too, default 1 */
  unsigned udp_idle_timeout_s; /* udpIdleTimeout: seconds a UDP flow may be silent, default 60 */
  unsigned udp_scan_interval_ms; /* udpScanIntervalMs (agent): UDP scan while eBPF watches TCP only */
  /* Budgets: everything one guest, or the local users, can make the host
   * hold is bounded. Past a budget the excess is refused with one
   * rate-limited log line and everything else keeps working. */
  unsigned max_standins;            /* maxStandins: host listening sockets per guest */
  unsigned max_connections;         /* maxConnections: open relayed connections per guest */
  unsigned max_connections_per_port; /* maxConnectionsPerPort */
  unsigned max_pending_reverse;     /* maxPendingReverse: REVERSE_OPENs being served at once */
  unsigned max_udp_flows;           /* maxUdpFlows: open UDP flows per guest */
  unsigned max_udp_flows_per_port;  /* maxUdpFlowsPerPort */
  unsigned control_queue_bytes;     /* controlQueueBytes: unsent control bytes, then drop */
  unsigned max_status_clients;      /* maxStatusClients: status connections at once */
  unsigned status_idle_timeout_ms;  /* statusIdleTimeoutMs: a status client's whole budget */
  /* The relay's zero-copy path (Linux splice), both sides. */
  int zero_copy;                    /* zeroCopy, default 1 */
  int one_hop;                      /* oneHop (host, --netns guests): lorelayd connects
                                     * inside the namespace itself, default 1 */
  unsigned zero_copy_after;         /* zeroCopyAfter: one read this large (bytes)
                                     * switches a connection, default 65536 */
  /* Where stand-ins listen. Empty: loopback. listenAddress is opt-in LAN
   * exposure (an address of its family replaces that family's loopback);
   * hostAddress (guest sections only) is a 127.x.y.z of the guest's own. */
  char listen_address[LR_ADDRESS_MAX];
  char host_address[LR_ADDRESS_MAX];
  lr_portmap_t port_map;            /* portMap = GUEST:HOST, ... */
  char status_group[LR_GROUP_MAX];  /* statusGroup: the status socket's group, default lorelay */
} lr_config_t;

/* Where a key may be set. */
enum {
  LR_KEY_ANY = 0,    /* [lorelay], and [guest NAME] as that guest's own value */
  LR_KEY_DAEMON = 1, /* [lorelay] only: one value for the whole process */
  LR_KEY_AGENT = 2,  /* [lorelay] only: read by lorelay-agent */
  LR_KEY_GUEST = 3,  /* [guest NAME] only */
};

typedef struct {
  const char *name;
  int kind;  /* internal: how the value is parsed */
  int scope; /* LR_KEY_* */
  size_t off;
  unsigned lo, hi;  /* numbers: the accepted range */
  const char *what; /* numbers: the unit, for messages */
} lr_config_key_t;

/* Every key lorelay reads, [lorelay] and [guest NAME] alike. */
extern const lr_config_key_t lr_config_keys[];
extern const size_t lr_config_nkeys;
/* The key's default as it would be written in the file ("true", "1000",
 * "1024-65535", "" for an empty list). Guest-only keys have none: "". */
void lr_config_key_default(const lr_config_key_t *k, char *out, size_t len);
/* The known key nearest to name (case-insensitive edit distance), or NULL
 * when none is close. */
const char *lr_config_suggest(const char *name);

typedef struct {
  char *key, *value;
  int line;
} lr_guest_override_t;

/* One [guest NAME] section. */
typedef struct {
  char name[LR_GUEST_NAME_MAX];
  char netns[LR_GUEST_NAME_MAX]; /* netns = NAME, or */
  char transport[300];           /* transport = ADDRESS */
  char token_file[512];          /* tokenFile = PATH */
  int line;                      /* its first key, for messages */
  lr_config_t cfg;               /* [lorelay] with this section's keys on top */
  lr_guest_override_t *overrides;
  size_t noverrides;
} lr_guest_conf_t;

/* A whole file as lorelayd reads it. */
typedef struct {
  lr_config_t base; /* [lorelay] */
  lr_guest_conf_t *guests;
  size_t nguests;
  char first_error[400]; /* the first error logged while reading, for status */
} lr_config_file_t;

void lr_config_defaults(lr_config_t *c);

/* Parses INI text. Errors and warnings are logged one line each, naming
 * source (a file name, for messages) and line. Returns 0, or -1 if any value
 * was invalid (c then holds defaults for those keys). */
int lr_config_parse_string(lr_config_t *c, const char *text, const char *source);
/* Reads and parses a file. missing_ok: a missing file is not an error.
 * Returns 0, -1 on bad values or unreadable file. */
int lr_config_load_file(lr_config_t *c, const char *path, int missing_ok);

/* Like lr_config_parse_string/lr_config_load_file, with [guest NAME]
 * sections read into f->guests (the plain readers skip them). f is
 * initialised here; free it with lr_config_file_free, also after -1. */
int lr_config_file_parse_string(lr_config_file_t *f, const char *text, const char *source);
int lr_config_file_load(lr_config_file_t *f, const char *path, int missing_ok);
void lr_config_file_free(lr_config_file_t *f);
const lr_guest_conf_t *lr_config_file_guest(const lr_config_file_t *f, const char *name);

/* A guest (or namespace) name: 1-63 of [A-Za-z0-9._-], not starting with
 * '-' or '.'. */
int lr_config_guest_name_ok(const char *s);
/* An address for listenAddress (any IPv4/IPv6 literal) or, loopback4,
 * hostAddress (127.x.y.z). 0, or -1 with a reason in err. */
int lr_config_check_address(const char *s, int loopback4, char *err, size_t errlen);

/* "80:8080, 5432:15432". 0 or -1 with a reason in err. */
int lr_portmap_parse(lr_portmap_t *m, const char *text, char *err, size_t errlen);
/* The host port a guest port maps to (itself when not mapped). */
uint16_t lr_portmap_host(const lr_portmap_t *m, uint16_t guest_port);
int lr_portmap_has(const lr_portmap_t *m, uint16_t guest_port);
char *lr_portmap_format(const lr_portmap_t *m, char *out, size_t len);

/* "22,8000-8010". 0 or -1 with a reason in err. */
int lr_portset_parse(lr_portset_t *s, const char *text, char *err, size_t errlen);
int lr_portset_contains(const lr_portset_t *s, uint16_t port);

/* "22,8000-8010", for status and log lines; "none" when empty. */
char *lr_portset_format(const lr_portset_t *s, char *out, size_t len);

/* "true/false/yes/no/on/off/1/0" (case-insensitive). 1, 0, or -1. */
int lr_parse_bool(const char *s);

#endif
