/* The lorelay wire protocol: pure encode/decode, no I/O.
 *
 * Every stream the host opens to a guest starts with an 8-byte preamble
 * (magic, version, stream kind, flags); the guest answers with its own
 * preamble. With a shared key the agent speaks first instead: its preamble
 * and a CHALLENGE nonce as soon as it accepts the stream, and every first
 * request and its answer carry an auth block (nonce and MAC; what a MAC
 * covers is built here by lr_auth_input, the MAC itself is computed by
 * lr_auth.c through the platform layer). After that come frames: an
 * 8-byte header (type, flags, payload length, all big-endian) and a
 * bounded payload. Control streams carry frames for their
 * whole life; data streams carry exactly one OPEN frame and one OPEN_RESULT
 * frame and then raw relayed bytes, so the data path pays nothing for
 * framing and can later be spliced.
 *
 * Decoders never trust a length: every field is bounds-checked, a payload
 * longer than a message needs is accepted (newer peers may append fields),
 * unknown frame types are skipped by the caller, and oversized frames are an
 * error before any payload is buffered. Kept free of platform code so it can
 * be fuzzed and unit-tested on both targets. */
#ifndef LR_PROTO_H
#define LR_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define LR_PROTO_VERSION 2
#define LR_PREAMBLE_LEN 8      /* 'L' 'R' 'L' 'Y' version kind flags 0 */
#define LR_FRAME_HDR_LEN 8     /* u16 type, u16 flags, u32 payload length */
#define LR_FRAME_MAX_PAYLOAD 4096
#define LR_TOKEN_MAX 256       /* longest shared key (a token file's contents) */
#define LR_KEY_MIN 16          /* shortest shared key accepted on either side */
#define LR_KEY_MIN_DISTINCT 8  /* fewest distinct byte values in a key file's key */
#define LR_TEXT_MAX 512

/* Authentication (only with a shared key; see docs/protocol.md). */
#define LR_NONCE_LEN 32        /* fresh per stream and side, from the OS CSPRNG */
#define LR_MAC_LEN 32          /* HMAC-SHA256 */
#define LR_AUTH_HOST_LEN (LR_NONCE_LEN + LR_MAC_LEN) /* HELLO, OPEN, ATTACH: nonce, MAC */
#define LR_AUTH_AGENT_LEN LR_MAC_LEN                /* WELCOME, OPEN_RESULT: MAC */
#define LR_AUTH_MAX 255
#define LR_PREAMBLE_KEYED 0x01 /* preamble flag: this side has a key and authenticates */

typedef enum {
  LR_STREAM_ANY = 0,     /* a keyed agent's preamble: sent before the host's says the kind */
  LR_STREAM_CONTROL = 1, /* one per guest: listener reports, port states */
  LR_STREAM_DATA = 2,    /* one per relayed connection */
  LR_STREAM_REVERSE = 3, /* one per guest->host connection, still opened by the host */
} lr_stream_kind_t;

typedef enum {
  LR_MSG_HELLO = 1,          /* host->guest, first control frame: auth, host name */
  LR_MSG_WELCOME = 2,        /* guest->host: agent version, guest name */
  LR_MSG_ERROR = 3,          /* either way: code, text; sender then closes */
  LR_MSG_CHALLENGE = 4,      /* guest->host, first frame of every stream when keyed: nonce */
  LR_MSG_LISTENER_ADD = 10,  /* guest->host: a listening socket appeared */
  LR_MSG_LISTENER_DEL = 11,  /* guest->host: it went away */
  LR_MSG_SYNC_DONE = 12,     /* guest->host: the full listing after WELCOME is complete */
  LR_MSG_PORT_STATE = 13,    /* host->guest: what the host made of a listener */
  LR_MSG_REVERSE_SET = 14,   /* host->guest: the host ports to publish on the guest loopback */
  LR_MSG_REVERSE_OPEN = 15,  /* guest->host: a guest client connected to a published port */
  LR_MSG_REVERSE_FAIL = 16,  /* host->guest: that connection cannot be served (code, text) */
  LR_MSG_AGENT_INFO = 17,    /* guest->host: how the agent works (listener detection) */
  LR_MSG_STREAM_CLOSE = 18,  /* either way: a data stream's write side ended (after N bytes) or reset */
  LR_MSG_PING = 20,          /* either way: liveness; answered with PONG, same payload */
  LR_MSG_PONG = 21,
  LR_MSG_OPEN = 30,          /* host->guest, only frame on a data stream before the reply */
  LR_MSG_OPEN_RESULT = 31,   /* guest->host: 0 = connected, else an lr_err_t */
  LR_MSG_ATTACH = 32,        /* host->guest, only frame on a reverse stream before the reply */
} lr_msg_type_t;

/* Error codes on the wire (ERROR.code, OPEN_RESULT.status). Stable numbers. */
typedef enum {
  LR_OK = 0,
  LR_ERR_REFUSED = 1,      /* the guest server refused the connection */
  LR_ERR_UNREACHABLE = 2,  /* no route / address not available in the guest */
  LR_ERR_TIMEOUT = 3,
  LR_ERR_AUTH = 4,         /* the host could not prove the shared key */
  LR_ERR_VERSION = 5,      /* protocol version not supported */
  LR_ERR_PROTOCOL = 6,     /* malformed frame or unexpected message */
  LR_ERR_INTERNAL = 7,
  LR_ERR_BUSY = 8,         /* another host holds the agent's live control stream */
} lr_err_t;

/* Decoder results (negative = error). */
#define LR_PROTO_OK 0
#define LR_PROTO_NEED_MORE 1
#define LR_PROTO_EBADMAGIC (-1)
#define LR_PROTO_EVERSION (-2)
#define LR_PROTO_ETOOBIG (-3)
#define LR_PROTO_ESHORT (-4)    /* payload shorter than the message needs */
#define LR_PROTO_EINVAL (-5)    /* a field holds an impossible value */
#define LR_PROTO_ENOMEM (-6)    /* no memory to hold what arrived */

typedef struct {
  uint8_t version;
  uint8_t kind;
  uint8_t flags;   /* LR_PREAMBLE_KEYED */
} lr_preamble_t;

typedef struct {
  uint16_t type;
  uint16_t flags;
  uint32_t len;
  const uint8_t *payload; /* points into the caller's buffer */
} lr_frame_t;

/* A guest listening socket as the guest sees it. */
#define LR_LISTENER_V6ONLY 0x01
/* A bound, unconnected UDP socket rather than a TCP listener. Only sent to a
 * host whose HELLO carries LR_CAP_UDP, so older hosts never see it. */
#define LR_LISTENER_UDP 0x02
typedef struct {
  uint8_t family;  /* 4 or 6 */
  uint8_t flags;   /* LR_LISTENER_V6ONLY, LR_LISTENER_UDP */
  uint16_t port;
  uint8_t addr[16]; /* network order; IPv4 in the first 4 bytes, rest zero */
} lr_listener_t;

/* Who owns a guest listener: the process the agent found holding the
 * socket when the listener appeared, sent as optional trailing fields of
 * LISTENER_ADD. pid 0: unknown (an older agent, or no process found). The
 * command line is guest text: capped at LR_CMD_MAX bytes, NUL-free, with
 * invalid UTF-8 replaced by '?', and escaped by whoever shows it. */
#define LR_CMD_MAX 256
typedef struct {
  uint32_t pid;
  char cmd[LR_CMD_MAX + 1];
} lr_proc_owner_t;

/* What the host did with a guest listener (PORT_STATE, status JSON). */
typedef enum {
  LR_PORT_FORWARDING = 0,
  LR_PORT_CONFLICT = 1,
  LR_PORT_REMAPPED = 2,
  LR_PORT_IGNORED = 3,
  LR_PORT_DENIED = 4, /* the host's policy or a budget refuses it: never bound */
} lr_port_state_t;

typedef struct {
  lr_listener_t listener;
  uint8_t state;       /* lr_port_state_t */
  uint16_t host_port;  /* the port actually used (differs when remapped) */
} lr_port_state_msg_t;

/* The auth block of HELLO, WELCOME, OPEN, ATTACH and OPEN_RESULT: empty
 * without a key; LR_AUTH_HOST_LEN bytes (the host's nonce, then its MAC) in
 * the host's messages, LR_AUTH_AGENT_LEN (the agent's MAC) in the agent's.
 * The decoders take any length; the handshake checks the one it needs. */
typedef struct {
  uint8_t len;
  uint8_t data[LR_AUTH_MAX];
} lr_auth_t;

/* Which side computed a MAC: part of what the MAC covers, so that neither
 * side's MAC can be passed off as the other's. */
typedef enum { LR_ROLE_HOST = 0, LR_ROLE_AGENT = 1 } lr_role_t;

typedef struct {
  lr_auth_t auth;
  char name[128];      /* NUL-terminated: host name (HELLO) or guest name (WELCOME) */
  char version[32];    /* NUL-terminated software version */
  uint8_t caps;        /* LR_CAP_*; optional on the wire (absent: 0) */
} lr_hello_t;

/* HELLO/WELCOME capabilities, appended after the version by peers that
 * have any (older peers stop reading before it). LR_CAP_UDP in HELLO: the
 * host forwards UDP, so the agent reports UDP sockets and accepts UDP
 * flows. */
#define LR_CAP_UDP 0x01
/* Close notices (STREAM_CLOSE): in HELLO, the host numbers its data streams
 * (OPEN's stream id) and honours notices; in WELCOME, the agent does too, so
 * the host may carry a half-close by notice alone where the transport would
 * turn a shutdown into a full close (hybrid vsock). */
#define LR_CAP_CLOSE_NOTICE 0x02

typedef struct {
  lr_auth_t auth;
  uint8_t family;      /* 4 or 6: connect to 127.0.0.1 or ::1 in the guest */
  uint16_t port;
  uint8_t flags;       /* LR_OPEN_*; optional on the wire (absent: 0) */
  uint32_t stream_id;  /* the host's number for this stream in STREAM_CLOSE; optional
                        * (absent: 0, no notices); not covered by OPEN's MAC */
} lr_open_t;

/* OPEN flags. PASS_FD: the host shares the guest's kernel (a network
 * namespace it started) and asks for the connected server socket itself,
 * sent with OPEN_RESULT over the Unix transport (SCM_RIGHTS), so that it
 * relays client <-> server in one hop and the agent leaves the data path. */
#define LR_OPEN_PASS_FD 0x01
/* UDP: the stream is one UDP flow (one host client address). The agent
 * connects a UDP socket to the guest port, and after OPEN_RESULT both
 * directions carry datagrams, each framed as u16 length + bytes (see
 * lr_dgram.h), instead of raw bytes. Covered by OPEN's MAC. */
#define LR_OPEN_UDP 0x02

typedef struct {
  uint32_t code;       /* lr_err_t */
  char text[LR_TEXT_MAX]; /* NUL-terminated */
} lr_error_msg_t;

/* Reverse forwarding: host ports published on the guest loopback. */
#define LR_REVERSE_MAX_PORTS 1024
#define LR_REVERSE_IPV6 0x01 /* also publish on [::1] */
typedef struct {
  uint8_t flags;       /* LR_REVERSE_IPV6 */
  uint16_t n;
  uint16_t ports[LR_REVERSE_MAX_PORTS];
} lr_reverse_set_t;

typedef struct {
  uint32_t id;         /* chosen by the guest, echoed in ATTACH / REVERSE_FAIL */
  uint8_t family;      /* 4 or 6: how the guest client connected */
  uint16_t port;
} lr_reverse_open_t;

typedef struct {
  lr_auth_t auth;
  uint32_t id;
  uint32_t stream_id;  /* as OPEN's: optional (absent: 0), not covered by the MAC */
} lr_attach_t;

/* AGENT_INFO: sent by the agent after WELCOME and again whenever it
 * changes. Newer agents may append fields; a value this side does not know
 * is kept and shown as "unknown", not rejected. */
#define LR_DETECT_POLL 0 /* periodic sock_diag scans */
#define LR_DETECT_EBPF 1 /* eBPF inet_sock_set_state trigger, scans as a safety net */
typedef struct {
  uint8_t detection; /* LR_DETECT_* */
} lr_agent_info_t;

/* STREAM_CLOSE: the sender's side of data stream `id` ended. FIN: its
 * write side, after exactly `bytes` relayed bytes went into the stream
 * (the receiver acts once it has relayed that many out of it, or on the
 * stream's own end of file, whichever comes first); RESET: the connection
 * was reset (bytes 0). A kind this side does not know decodes and is
 * ignored (newer peers may add kinds); id 0 names no stream and is EINVAL. */
#define LR_CLOSE_FIN 1
#define LR_CLOSE_RESET 2
typedef struct {
  uint32_t id;
  uint8_t kind;   /* LR_CLOSE_* */
  uint64_t bytes;
} lr_stream_close_t;

/* Preamble. encode writes LR_PREAMBLE_LEN bytes; flags is LR_PREAMBLE_KEYED
 * or 0 (lr_preamble_encode). */
void lr_preamble_encode(uint8_t out[LR_PREAMBLE_LEN], uint8_t kind);
void lr_preamble_encode_flags(uint8_t out[LR_PREAMBLE_LEN], uint8_t kind, uint8_t flags);
/* OK, NEED_MORE (len < 8), EBADMAGIC, EVERSION (magic right, version != ours;
 * out->version tells the peer's), EINVAL (kind above 3). Kind 0
 * (LR_STREAM_ANY) decodes: only an agent may send it, the agent refuses it. */
int lr_preamble_decode(const uint8_t *buf, size_t len, lr_preamble_t *out);

/* Frame header + payload from a byte buffer. Returns OK with *consumed set,
 * NEED_MORE, or ETOOBIG as soon as the header announces a payload over
 * LR_FRAME_MAX_PAYLOAD. */
int lr_frame_decode(const uint8_t *buf, size_t len, lr_frame_t *out, size_t *consumed);

/* Encoders write a whole frame (header + payload) into out and return its
 * length, or 0 if cap is too small or a field is out of range. */
size_t lr_encode_hello(uint8_t *out, size_t cap, uint16_t type, const lr_hello_t *m);
size_t lr_encode_error(uint8_t *out, size_t cap, uint32_t code, const char *text);
size_t lr_encode_listener(uint8_t *out, size_t cap, uint16_t type, const lr_listener_t *l);
/* LISTENER_ADD with the owner's fields appended when owner is given and
 * owner->pid is not 0 (the command cut to LR_CMD_MAX bytes). */
size_t lr_encode_listener_add(uint8_t *out, size_t cap, const lr_listener_t *l,
                              const lr_proc_owner_t *owner);
size_t lr_encode_port_state(uint8_t *out, size_t cap, const lr_port_state_msg_t *m);
size_t lr_encode_open(uint8_t *out, size_t cap, const lr_open_t *m);
/* auth: NULL or empty when there is no key. */
size_t lr_encode_open_result(uint8_t *out, size_t cap, uint32_t status, const char *text,
                             const lr_auth_t *auth);
size_t lr_encode_challenge(uint8_t *out, size_t cap, const uint8_t nonce[LR_NONCE_LEN]);
size_t lr_encode_empty(uint8_t *out, size_t cap, uint16_t type); /* SYNC_DONE */
size_t lr_encode_ping(uint8_t *out, size_t cap, uint16_t type, uint64_t nonce);
size_t lr_encode_reverse_set(uint8_t *out, size_t cap, const lr_reverse_set_t *m);
size_t lr_encode_reverse_open(uint8_t *out, size_t cap, const lr_reverse_open_t *m);
size_t lr_encode_reverse_fail(uint8_t *out, size_t cap, uint32_t id, uint32_t code,
                              const char *text);
size_t lr_encode_attach(uint8_t *out, size_t cap, const lr_attach_t *m);
size_t lr_encode_agent_info(uint8_t *out, size_t cap, const lr_agent_info_t *m);
size_t lr_encode_stream_close(uint8_t *out, size_t cap, const lr_stream_close_t *m);

/* Decoders take a frame from lr_frame_decode. OK, ESHORT or EINVAL. */
int lr_decode_hello(const lr_frame_t *f, lr_hello_t *out);
int lr_decode_error(const lr_frame_t *f, lr_error_msg_t *out); /* also OPEN_RESULT, sans auth */
/* OPEN_RESULT with its auth block (a payload that ends after the text has
 * an empty one). */
int lr_decode_open_result(const lr_frame_t *f, lr_error_msg_t *out, lr_auth_t *auth);
int lr_decode_challenge(const lr_frame_t *f, uint8_t nonce[LR_NONCE_LEN]);
int lr_decode_listener(const lr_frame_t *f, lr_listener_t *out);
/* LISTENER_ADD and its optional owner (pid 0 when absent). A command
 * longer than LR_CMD_MAX is cut, not refused; one with a NUL is EINVAL. */
int lr_decode_listener_add(const lr_frame_t *f, lr_listener_t *out, lr_proc_owner_t *owner);
/* Replaces every byte that is not part of well-formed UTF-8 (overlongs,
 * surrogates and cut sequences included) by '?', in place. */
void lr_utf8_sanitize(char *s);
int lr_decode_port_state(const lr_frame_t *f, lr_port_state_msg_t *out);
int lr_decode_open(const lr_frame_t *f, lr_open_t *out);
int lr_decode_ping(const lr_frame_t *f, uint64_t *nonce);
int lr_decode_reverse_set(const lr_frame_t *f, lr_reverse_set_t *out);
int lr_decode_reverse_open(const lr_frame_t *f, lr_reverse_open_t *out);
/* REVERSE_FAIL: id, then the same code/text as ERROR. */
int lr_decode_reverse_fail(const lr_frame_t *f, uint32_t *id, lr_error_msg_t *out);
int lr_decode_attach(const lr_frame_t *f, lr_attach_t *out);
int lr_decode_agent_info(const lr_frame_t *f, lr_agent_info_t *out);
int lr_decode_stream_close(const lr_frame_t *f, lr_stream_close_t *out);

const char *lr_proto_strerror(int rc);   /* for LR_PROTO_* results */
const char *lr_err_name(uint32_t code);  /* for lr_err_t */
const char *lr_msg_name(uint16_t type);  /* "LISTENER_ADD", or "unknown" */
const char *lr_port_state_name(lr_port_state_t s); /* "forwarding" ... */
const char *lr_detection_name(uint8_t d); /* "poll", "ebpf", or "unknown" */

/* Constant-time comparison of two tokens (or MACs). 1 if equal. */
int lr_token_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);

/* ---- what a MAC covers ------------------------------------------------------
 * lr_auth_input writes the bytes a MAC is computed over:
 *   label        "lorelay host" or "lorelay agent" (the role that computes it)
 *   u8 0         (ends the label)
 *   u8 version   LR_PROTO_VERSION
 *   u8 kind      the stream's kind (1 control, 2 data, 3 reverse)
 *   u16 type     the message the MAC travels in (HELLO, OPEN, WELCOME...)
 *   nonce[32], nonce[32]
 *                the host's MAC: the agent's nonce, then the host's;
 *                the agent's MAC: the host's nonce, then the agent's
 *   fields       the request or result the MAC authorises (lr_auth_fields_*)
 * and returns its length, or 0 if cap is too small. */
#define LR_AUTH_INPUT_MAX 512
size_t lr_auth_input(uint8_t *out, size_t cap, lr_role_t role, uint8_t kind, uint16_t type,
                     const uint8_t agent_nonce[LR_NONCE_LEN],
                     const uint8_t host_nonce[LR_NONCE_LEN], const uint8_t *fields,
                     size_t flen);
/* The fields each message's MAC covers, as on the wire:
 *   HELLO, WELCOME  u8 nlen, name, u8 vlen, version
 *   OPEN            u8 family, u16 port [, u8 flags when LR_OPEN_UDP is set]
 *   ATTACH          u32 id
 *   OPEN_RESULT     u32 status
 * Each returns the length written, or 0 if cap is too small. */
#define LR_AUTH_FIELDS_MAX 300
size_t lr_auth_fields_hello(uint8_t *out, size_t cap, const lr_hello_t *m);
size_t lr_auth_fields_open(uint8_t *out, size_t cap, const lr_open_t *m);
size_t lr_auth_fields_attach(uint8_t *out, size_t cap, const lr_attach_t *m);
size_t lr_auth_fields_result(uint8_t *out, size_t cap, uint32_t status);

/* Compare listeners for sorting/diffing (family, addr, port, flags). */
int lr_listener_cmp(const lr_listener_t *a, const lr_listener_t *b);
/* "0.0.0.0:8000", "[::]:8000" (v6only is not shown). */
char *lr_listener_format(const lr_listener_t *l, char *out, size_t outlen);

#endif
