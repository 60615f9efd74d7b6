/* Listening-socket detection through NETLINK_SOCK_DIAG.
 *
 * The agent asks the kernel for every TCP socket in state LISTEN (and,
 * when UDP is forwarded, every bound unconnected UDP socket), once for
 * AF_INET and once for AF_INET6, instead of reading /proc/net/tcp*: the
 * netlink dump is binary, cheap enough to repeat every 100 ms, and carries
 * INET_DIAG_SKV6ONLY, the one bit that tells a dual-stack [::] listener from
 * a V6ONLY one. The parse of a received buffer is a separate pure function
 * so that truncated, multipart and error replies can be unit-tested with
 * crafted bytes; the I/O part around it stays thin. */
#ifndef LR_SOCKDIAG_H
#define LR_SOCKDIAG_H

#include <stddef.h>
#include <stdint.h>
#include "lr_proto.h"

/* One listening socket as the kernel reported it. The inode lets the agent
 * leave out its own sockets (fstat(fd).st_ino of a socket is this inode). */
typedef struct {
  lr_listener_t l;
  uint32_t inode;
} lr_sockdiag_entry_t;

/* A growable array of entries. */
typedef struct {
  lr_sockdiag_entry_t *v;
  size_t n, cap;
} lr_sockdiag_list_t;

void lr_sockdiag_list_init(lr_sockdiag_list_t *l);
void lr_sockdiag_list_free(lr_sockdiag_list_t *l);
/* 0, or -1 when out of memory. */
int lr_sockdiag_list_push(lr_sockdiag_list_t *l, const lr_sockdiag_entry_t *e);

/* Results of lr_sockdiag_parse. */
#define LR_SOCKDIAG_MORE 0 /* buffer consumed, the dump continues in the next datagram */
#define LR_SOCKDIAG_DONE 1 /* NLMSG_DONE seen: the dump is complete */
#define LR_SOCKDIAG_EPROTO (-1) /* malformed reply (lengths, truncation) */
#define LR_SOCKDIAG_EKERNEL (-2) /* NLMSG_ERROR from the kernel; *kerr holds its errno */
#define LR_SOCKDIAG_ENOMEM (-3)

/* Parses one received netlink datagram of a sock_diag dump with sequence
 * number seq. Messages with another sequence number (a late reply to an
 * earlier, abandoned dump) are skipped. Sockets of a family other than
 * AF_INET/AF_INET6 or not in state LISTEN are skipped. Entries are appended
 * to out. On an error, err gets a one-line reason. */
int lr_sockdiag_parse(const uint8_t *buf, size_t len, uint32_t seq, lr_sockdiag_list_t *out,
                      int *kerr, char *err, size_t errlen);
/* The same for a UDP dump (udp = 1): sockets in state CLOSE (bound, not
 * connected) with a port, reported with LR_LISTENER_UDP. */
int lr_sockdiag_parse_proto(const uint8_t *buf, size_t len, uint32_t seq, int udp,
                            lr_sockdiag_list_t *out, int *kerr, char *err, size_t errlen);

/* A NETLINK_SOCK_DIAG socket, kept open across scans. */
typedef struct {
  int fd;
  uint32_t seq;
  uint8_t *buf; /* receive buffer, large enough for any datagram of a dump */
  size_t cap;
} lr_sockdiag_t;

/* 0, or -1 with a reason in err. */
int lr_sockdiag_open(lr_sockdiag_t *sd, char *err, size_t errlen);
void lr_sockdiag_close(lr_sockdiag_t *sd);

/* Dumps TCP LISTEN sockets of both families and appends them to out (which
 * the caller cleared). 0, or -1 with a reason in err. */
int lr_sockdiag_dump(lr_sockdiag_t *sd, lr_sockdiag_list_t *out, char *err, size_t errlen);
/* Appends bound, unconnected UDP sockets of both families (V6ONLY as for
 * TCP). 0, or -1 with a reason in err. */
int lr_sockdiag_dump_udp(lr_sockdiag_t *sd, lr_sockdiag_list_t *out, char *err, size_t errlen);

#endif
