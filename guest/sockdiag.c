/* NETLINK_SOCK_DIAG dumps of TCP listeners (see lr_sockdiag.h).
 *
 * Everything the kernel sends is treated as untrusted bytes: headers are
 * copied out with memcpy (a crafted or short buffer need not be aligned),
 * and every length is checked against what is actually left before it is
 * used, so a malformed reply is an error line, never a read past the end. */
#include "lr_sockdiag.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>

#define LR_TCP_LISTEN 10 /* TCP_LISTEN in the kernel's tcp_states.h */
#define LR_TCP_CLOSE 7   /* an unconnected UDP socket's state (connected: ESTABLISHED) */
#define LR_SOCKDIAG_BUF (64 * 1024)

void lr_sockdiag_list_init(lr_sockdiag_list_t *l) {
  l->v = NULL;
  l->n = l->cap = 0;
}

void lr_sockdiag_list_free(lr_sockdiag_list_t *l) {
  free(l->v);
  lr_sockdiag_list_init(l);
}

int lr_sockdiag_list_push(lr_sockdiag_list_t *l, const lr_sockdiag_entry_t *e) {
  if (l->n == l->cap) {
    size_t ncap = l->cap ? l->cap * 2 : 64;
    lr_sockdiag_entry_t *nv = realloc(l->v, ncap * sizeof *nv);
    if (!nv) return -1;
    l->v = nv;
    l->cap = ncap;
  }
  l->v[l->n++] = *e;
  return 0;
}

/* One SOCK_DIAG_BY_FAMILY message: struct inet_diag_msg + attributes. */
static int parse_diag_msg(const uint8_t *p, size_t plen, int udp, lr_sockdiag_list_t *out,
                          char *err, size_t errlen) {
  struct inet_diag_msg m;
  if (plen < sizeof m) {
    snprintf(err, errlen, "sock_diag message payload is %zu bytes, inet_diag_msg needs %zu", plen,
             sizeof m);
    return LR_SOCKDIAG_EPROTO;
  }
  memcpy(&m, p, sizeof m);

  int v6only = 0;
  size_t off = NLMSG_ALIGN(sizeof m);
  while (off < plen) {
    struct rtattr a;
    if (plen - off < sizeof a) {
      snprintf(err, errlen, "sock_diag attribute header truncated (%zu bytes left)", plen - off);
      return LR_SOCKDIAG_EPROTO;
    }
    memcpy(&a, p + off, sizeof a);
    if (a.rta_len < sizeof a || a.rta_len > plen - off) {
      snprintf(err, errlen, "sock_diag attribute %u has length %u, %zu bytes left",
               (unsigned)a.rta_type, (unsigned)a.rta_len, plen - off);
      return LR_SOCKDIAG_EPROTO;
    }
    if ((a.rta_type & NLA_TYPE_MASK) == INET_DIAG_SKV6ONLY && a.rta_len >= sizeof a + 1)
      v6only = p[off + sizeof a] != 0;
    size_t step = RTA_ALIGN(a.rta_len);
    if (step > plen - off) break; /* last attribute without padding */
    off += step;
  }

  /* UDP: a bound, unconnected socket is a server's (a connected one
   * talks to one peer; port 0 is not bound yet). */
  if (m.idiag_state != (udp ? LR_TCP_CLOSE : LR_TCP_LISTEN)) return 0;
  if (udp && m.id.idiag_sport == 0) return 0;
  lr_sockdiag_entry_t e;
  memset(&e, 0, sizeof e);
  if (udp) e.l.flags |= LR_LISTENER_UDP;
  if (m.idiag_family == AF_INET) {
    e.l.family = 4;
    memcpy(e.l.addr, m.id.idiag_src, 4);
  } else if (m.idiag_family == AF_INET6) {
    e.l.family = 6;
    memcpy(e.l.addr, m.id.idiag_src, 16);
    if (v6only) e.l.flags |= LR_LISTENER_V6ONLY;
  } else {
    return 0;
  }
  e.l.port = ntohs(m.id.idiag_sport);
  e.inode = m.idiag_inode;
  if (lr_sockdiag_list_push(out, &e) != 0) {
    snprintf(err, errlen, "out of memory while collecting listeners");
    return LR_SOCKDIAG_ENOMEM;
  }
  return 0;
}

int lr_sockdiag_parse(const uint8_t *buf, size_t len, uint32_t seq, lr_sockdiag_list_t *out,
                      int *kerr, char *err, size_t errlen) {
  return lr_sockdiag_parse_proto(buf, len, seq, 0, out, kerr, err, errlen);
}

int lr_sockdiag_parse_proto(const uint8_t *buf, size_t len, uint32_t seq, int udp,
                            lr_sockdiag_list_t *out, int *kerr, char *err, size_t errlen) {
  size_t off = 0;
  if (kerr) *kerr = 0;
  while (off < len) {
    struct nlmsghdr h;
    if (len - off < sizeof h) {
      snprintf(err, errlen, "netlink message header truncated (%zu bytes left)", len - off);
      return LR_SOCKDIAG_EPROTO;
    }
    memcpy(&h, buf + off, sizeof h);
    if (h.nlmsg_len < NLMSG_HDRLEN || h.nlmsg_len > len - off) {
      snprintf(err, errlen, "netlink message claims %u bytes, %zu bytes left in the datagram",
               (unsigned)h.nlmsg_len, len - off);
      return LR_SOCKDIAG_EPROTO;
    }
    const uint8_t *p = buf + off + NLMSG_HDRLEN;
    size_t plen = h.nlmsg_len - NLMSG_HDRLEN;
    size_t step = NLMSG_ALIGN(h.nlmsg_len);
    off = step > len - off ? len : off + step;

    if (h.nlmsg_seq != seq) continue; /* a reply to an earlier, abandoned dump */
    switch (h.nlmsg_type) {
      case NLMSG_NOOP:
        break;
      case NLMSG_DONE: {
        int e = 0;
        if (plen >= sizeof e) memcpy(&e, p, sizeof e);
        if (e < 0) {
          if (kerr) *kerr = -e;
          snprintf(err, errlen, "sock_diag dump ended with an error: %s", strerror(-e));
          return LR_SOCKDIAG_EKERNEL;
        }
        return LR_SOCKDIAG_DONE;
      }
      case NLMSG_ERROR: {
        int e;
        if (plen < sizeof e) {
          snprintf(err, errlen, "netlink error message too short (%zu bytes)", plen);
          return LR_SOCKDIAG_EPROTO;
        }
        memcpy(&e, p, sizeof e);
        if (e == 0) break; /* an acknowledgement, not an error */
        if (kerr) *kerr = e < 0 ? -e : e;
        snprintf(err, errlen, "kernel refused the sock_diag dump: %s", strerror(e < 0 ? -e : e));
        return LR_SOCKDIAG_EKERNEL;
      }
      case NLMSG_OVERRUN:
        snprintf(err, errlen, "netlink reported an overrun: listener data was lost");
        return LR_SOCKDIAG_EPROTO;
      case SOCK_DIAG_BY_FAMILY: {
        int rc = parse_diag_msg(p, plen, udp, out, err, errlen);
        if (rc < 0) return rc;
        break;
      }
      default:
        break; /* a type this code does not know: skip it */
    }
  }
  return LR_SOCKDIAG_MORE;
}

int lr_sockdiag_open(lr_sockdiag_t *sd, char *err, size_t errlen) {
  sd->fd = -1;
  sd->seq = 0;
  sd->buf = malloc(LR_SOCKDIAG_BUF);
  sd->cap = LR_SOCKDIAG_BUF;
  if (!sd->buf) {
    snprintf(err, errlen, "out of memory for the sock_diag buffer");
    return -1;
  }
  sd->fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (sd->fd < 0) {
    snprintf(err, errlen, "cannot open a NETLINK_SOCK_DIAG socket: %s", strerror(errno));
    free(sd->buf);
    sd->buf = NULL;
    return -1;
  }
  /* The kernel answers a dump synchronously; the timeout only guards
   * against a reply that never comes, so a scan can never hang the agent. */
  struct timeval tv = {1, 0};
  setsockopt(sd->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return 0;
}

void lr_sockdiag_close(lr_sockdiag_t *sd) {
  if (sd->fd >= 0) close(sd->fd);
  sd->fd = -1;
  free(sd->buf);
  sd->buf = NULL;
}

static int dump_family(lr_sockdiag_t *sd, int family, int udp, lr_sockdiag_list_t *out,
                       int *kerr, char *err, size_t errlen) {
  *kerr = 0;
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 r;
  } req;
  memset(&req, 0, sizeof req);
  req.nlh.nlmsg_len = sizeof req;
  req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.nlh.nlmsg_seq = ++sd->seq;
  req.r.sdiag_family = (uint8_t)family;
  req.r.sdiag_protocol = udp ? IPPROTO_UDP : IPPROTO_TCP;
  req.r.idiag_states = 1u << (udp ? LR_TCP_CLOSE : LR_TCP_LISTEN);

  struct sockaddr_nl kernel;
  memset(&kernel, 0, sizeof kernel);
  kernel.nl_family = AF_NETLINK;
  ssize_t n;
  do {
    n = sendto(sd->fd, &req, sizeof req, 0, (struct sockaddr *)&kernel, sizeof kernel);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    snprintf(err, errlen, "sock_diag request failed: %s", strerror(errno));
    return -1;
  }

  for (;;) {
    struct iovec iov = {sd->buf, sd->cap};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    do {
      n = recvmsg(sd->fd, &mh, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      snprintf(err, errlen, "sock_diag reply failed: %s",
               errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : strerror(errno));
      return -1;
    }
    if (n == 0) {
      snprintf(err, errlen, "sock_diag socket returned end of file");
      return -1;
    }
    if (mh.msg_flags & MSG_TRUNC) {
      snprintf(err, errlen, "sock_diag reply larger than %zu bytes was truncated", sd->cap);
      return -1;
    }
    int rc = lr_sockdiag_parse_proto(sd->buf, (size_t)n, sd->seq, udp, out, kerr, err, errlen);
    if (rc == LR_SOCKDIAG_DONE) return 0;
    if (rc < 0) return -1;
  }
}

static int dump_proto(lr_sockdiag_t *sd, int udp, lr_sockdiag_list_t *out, char *err,
                      size_t errlen) {
  int kerr;
  if (dump_family(sd, AF_INET, udp, out, &kerr, err, errlen) != 0) return -1;
  /* A kernel without IPv6 answers ENOENT (no sock_diag handler for the
   * family): it simply has no AF_INET6 listeners to report. So does one
   * without UDP sock_diag (CONFIG_INET_UDP_DIAG) for UDP. */
  size_t before = out->n;
  if (dump_family(sd, AF_INET6, udp, out, &kerr, err, errlen) != 0) {
    out->n = before;
    return kerr == ENOENT || kerr == EAFNOSUPPORT ? 0 : -1;
  }
  return 0;
}

int lr_sockdiag_dump(lr_sockdiag_t *sd, lr_sockdiag_list_t *out, char *err, size_t errlen) {
  return dump_proto(sd, 0, out, err, errlen);
}

int lr_sockdiag_dump_udp(lr_sockdiag_t *sd, lr_sockdiag_list_t *out, char *err, size_t errlen) {
  return dump_proto(sd, 1, out, err, errlen);
}
