/* Unit tests for the sock_diag parser and, where the kernel allows it, a
 * live dump.
 *
 * The crafted buffers cover what a dump can look like on the wire:
 * several messages per datagram, a dump spread over datagrams (multipart),
 * NLMSG_ERROR and NLMSG_DONE carrying an error, replies to an older
 * sequence number, and every way a length can lie (truncated header,
 * nlmsg_len past the end or below the header size, short payload, a bad
 * attribute length). The live test opens real listeners on 127.0.0.1:0 and
 * [::]:0 with and without IPV6_V6ONLY and must find each, with the right
 * flags and inode, in a dump. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>

#include "lr_sockdiag.h"
#include "lr_testutil.h"

#define SEQ 42

typedef struct {
  uint8_t b[8192];
  size_t len;
} buf_t;

static void put_hdr(buf_t *b, uint16_t type, uint32_t seq, size_t payload_len) {
  struct nlmsghdr h;
  memset(&h, 0, sizeof h);
  h.nlmsg_len = (uint32_t)(NLMSG_HDRLEN + payload_len);
  h.nlmsg_type = type;
  h.nlmsg_flags = NLM_F_MULTI;
  h.nlmsg_seq = seq;
  memcpy(b->b + b->len, &h, sizeof h);
  b->len += NLMSG_HDRLEN;
}

static void pad(buf_t *b) {
  while (b->len % 4) b->b[b->len++] = 0;
}

/* One SOCK_DIAG_BY_FAMILY message; v6only < 0: no SKV6ONLY attribute. */
static void put_sock(buf_t *b, uint32_t seq, int family, uint8_t state, const void *addr,
                     uint16_t port, uint32_t inode, int v6only) {
  struct inet_diag_msg m;
  memset(&m, 0, sizeof m);
  m.idiag_family = (uint8_t)family;
  m.idiag_state = state;
  m.id.idiag_sport = htons(port);
  memcpy(m.id.idiag_src, addr, family == AF_INET6 ? 16 : 4);
  m.idiag_inode = inode;
  size_t plen = NLMSG_ALIGN(sizeof m) + (v6only >= 0 ? RTA_SPACE(1) : 0);
  put_hdr(b, SOCK_DIAG_BY_FAMILY, seq, plen);
  memcpy(b->b + b->len, &m, sizeof m);
  b->len += sizeof m;
  pad(b);
  if (v6only >= 0) {
    struct rtattr a;
    a.rta_len = RTA_LENGTH(1);
    a.rta_type = INET_DIAG_SKV6ONLY;
    memcpy(b->b + b->len, &a, sizeof a);
    b->len += sizeof a;
    b->b[b->len++] = (uint8_t)v6only;
    pad(b);
  }
}

static void put_done(buf_t *b, uint32_t seq, int err) {
  put_hdr(b, NLMSG_DONE, seq, sizeof err);
  memcpy(b->b + b->len, &err, sizeof err);
  b->len += sizeof err;
}

static void put_error(buf_t *b, uint32_t seq, int err) {
  struct nlmsgerr e;
  memset(&e, 0, sizeof e);
  e.error = err;
  put_hdr(b, NLMSG_ERROR, seq, sizeof e);
  memcpy(b->b + b->len, &e, sizeof e);
  b->len += sizeof e;
}

static const uint8_t any4[4] = {0, 0, 0, 0};
static const uint8_t lo4[4] = {127, 0, 0, 1};
static const uint8_t any6[16] = {0};
static const uint8_t lo6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

static int parse(const buf_t *b, lr_sockdiag_list_t *l, int *kerr, char *err) {
  return lr_sockdiag_parse(b->b, b->len, SEQ, l, kerr, err, 256);
}

static void test_single_datagram_dump(void **state) {
  (void)state;
  buf_t b = {.len = 0};
  put_sock(&b, SEQ, AF_INET, 10, any4, 8080, 1001, -1);
  put_sock(&b, SEQ, AF_INET, 10, lo4, 5432, 1002, -1);
  put_sock(&b, SEQ, AF_INET6, 10, any6, 22, 1003, 0);
  put_sock(&b, SEQ, AF_INET6, 10, lo6, 9000, 1004, 1);
  put_done(&b, SEQ, 0);
  lr_sockdiag_list_t l;
  lr_sockdiag_list_init(&l);
  int kerr;
  char err[256];
  assert_int_equal(parse(&b, &l, &kerr, err), LR_SOCKDIAG_DONE);
  assert_int_equal(l.n, 4);
  assert_int_equal(l.v[0].l.family, 4);
  assert_int_equal(l.v[0].l.port, 8080);
  assert_int_equal(l.v[0].inode, 1001);
  assert_memory_equal(l.v[1].l.addr, lo4, 4);
  assert_int_equal(l.v[2].l.family, 6);
  assert_int_equal(l.v[2].l.flags, 0); /* dual-stack [::]:22 */
  assert_int_equal(l.v[3].l.flags, LR_LISTENER_V6ONLY);
  assert_memory_equal(l.v[3].l.addr, lo6, 16);
  lr_sockdiag_list_free(&l);
}

/* A UDP dump: bound unconnected sockets (state CLOSE) are reported with
 * LR_LISTENER_UDP; connected ones (ESTABLISHED) and unbound ones (port 0)
 * are not servers and are left out. */
static void test_udp_dump_parse(void **state) {
  (void)state;
  buf_t b = {.len = 0};
  put_sock(&b, SEQ, AF_INET, 7, any4, 5353, 2001, -1);
  put_sock(&b, SEQ, AF_INET, 1, lo4, 5354, 2002, -1);  /* connected */
  put_sock(&b, SEQ, AF_INET, 7, any4, 0, 2003, -1);    /* not bound */
  put_sock(&b, SEQ, AF_INET6, 7, any6, 5355, 2004, 1); /* V6ONLY */
  put_sock(&b, SEQ, AF_INET, 10, any4, 5356, 2005, -1); /* a TCP state: not UDP's */
  put_done(&b, SEQ, 0);
  lr_sockdiag_list_t l;
  lr_sockdiag_list_init(&l);
  int kerr;
  char err[256];
  assert_int_equal(lr_sockdiag_parse_proto(b.b, b.len, SEQ, 1, &l, &kerr, err, sizeof err),
                   LR_SOCKDIAG_DONE);
  assert_int_equal(l.n, 2);
  assert_int_equal(l.v[0].l.port, 5353);
  assert_int_equal(l.v[0].l.flags, LR_LISTENER_UDP);
  assert_int_equal(l.v[1].l.port, 5355);
  assert_int_equal(l.v[1].l.flags, LR_LISTENER_UDP | LR_LISTENER_V6ONLY);
  /* The same bytes as a TCP dump: only the LISTEN one. */
  l.n = 0;
  assert_int_equal(parse(&b, &l, &kerr, err), LR_SOCKDIAG_DONE);
  assert_int_equal(l.n, 1);
  assert_int_equal(l.v[0].l.port, 5356);
  assert_int_equal(l.v[0].l.flags, 0);
  lr_sockdiag_list_free(&l);
}

static void test_multipart_over_datagrams(void **state) {
  (void)state;
  buf_t d1 = {.len = 0}, d2 = {.len = 0};
  put_sock(&d1, SEQ, AF_INET, 10, any4, 1, 1, -1);
  put_sock(&d1, SEQ, AF_INET, 10, any4, 2, 2, -1);
  put_sock(&d2, SEQ, AF_INET, 10, any4, 3, 3, -1);
  put_done(&d2, SEQ, 0);
  lr_sockdiag_list_t l;
  lr_sockdiag_list_init(&l);
  int kerr;
  char err[256];
  assert_int_equal(parse(&d1, &l, &kerr, err), LR_SOCKDIAG_MORE);
  assert_int_equal(l.n, 2);
  assert_int_equal(parse(&d2, &l, &kerr, err), LR_SOCKDIAG_DONE);
  assert_int_equal(l.n, 3);
  assert_int_equal(l.v[2].l.port, 3);
  lr_sockdiag_list_free(&l);
}

static void test_skips_other_seq_states_and_types(void **state) {
  (void)state;
  buf_t b = {.len = 0};
  put_sock(&b, SEQ - 1, AF_INET, 10, any4, 1111, 1, -1); /* late reply to an old dump */
  put_done(&b, SEQ - 1, 0);                              /* ... and its end: not ours */
  put_sock(&b, SEQ, AF_INET, 1 /* ESTABLISHED */, any4, 2222, 2, -1);
  put_sock(&b, SEQ, AF_UNIX, 10, any4, 3333, 3, -1);
  put_hdr(&b, 0x7777, SEQ, 0); /* unknown message type */
  put_hdr(&b, NLMSG_NOOP, SEQ, 0);
  put_error(&b, SEQ, 0); /* an ACK */
  put_sock(&b, SEQ, AF_INET, 10, any4, 4444, 4, -1);
  lr_sockdiag_list_t l;
  lr_sockdiag_list_init(&l);
  int kerr;
  char err[256];
  assert_int_equal(parse(&b, &l, &kerr, err), LR_SOCKDIAG_MORE);
  assert_int_equal(l.n, 1);
  assert_int_equal(l.v[0].l.port, 4444);
  lr_sockdiag_list_free(&l);
}

static void test_kernel_errors(void **state) {
  (void)state;
  lr_sockdiag_list_t l;
  lr_sockdiag_list_init(&l);
  int kerr;
  char err[256];

  buf_t b = {.len = 0};
  put_error(&b, SEQ, -EPERM);
  assert_int_equal(parse(&b, &l, &kerr, err), LR_SOCKDIAG_EKERNEL);
  assert_int_equal(kerr, EPERM);
  assert_non_null(strstr(err, strerror(EPERM)));

  buf_t d = {.len = 0};
  put_sock(&d, SEQ, AF_INET, 10, any4, 1, 1, -1);
  put_done(&d, SEQ, -EINTR);
  assert_int_equal(parse(&d, &l, &kerr, err), LR_SOCKDIAG_EKERNEL);
  assert_int_equal(kerr, EINTR);

  buf_t s = {.len = 0};
  put_hdr(&s, NLMSG_ERROR, SEQ, 2); /* error message too short for its code */
  s.len += 2;
  assert_int_equal(parse(&s, &l, &kerr, err), LR_SOCKDIAG_EPROTO);
  lr_sockdiag_list_free(&l);
}

static void test_lying_lengths(void **state) {
  (void)state;
  lr_sockdiag_list_t l;
  lr_sockdiag_list_init(&l);
  int kerr;
  char err[256];
  buf_t good = {.len = 0};
  put_sock(&good, SEQ, AF_INET6, 10, any6, 80, 7, 1);

  /* Every truncation of a valid message is an error, never a read past it. */
  for (size_t cut = 1; cut < good.len; cut++) {
    l.n = 0;
    int rc = lr_sockdiag_parse(good.b, cut, SEQ, &l, &kerr, err, sizeof err);
    assert_int_equal(rc, LR_SOCKDIAG_EPROTO);
    assert_int_equal(l.n, 0);
    assert_true(strlen(err) > 0);
  }

  /* nlmsg_len beyond the datagram. */
  buf_t b = good;
  struct nlmsghdr h;
  memcpy(&h, b.b, sizeof h);
  h.nlmsg_len = (uint32_t)b.len + 4;
  memcpy(b.b, &h, sizeof h);
  assert_int_equal(parse(&b, &l, &kerr, err), LR_SOCKDIAG_EPROTO);

  /* nlmsg_len smaller than the header itself. */
  h.nlmsg_len = 8;
  memcpy(b.b, &h, sizeof h);
  assert_int_equal(parse(&b, &l, &kerr, err), LR_SOCKDIAG_EPROTO);

  /* A payload too short for struct inet_diag_msg. */
  buf_t s = {.len = 0};
  put_hdr(&s, SOCK_DIAG_BY_FAMILY, SEQ, 12);
  s.len += 12;
  assert_int_equal(parse(&s, &l, &kerr, err), LR_SOCKDIAG_EPROTO);

  /* An attribute whose length runs past the message. */
  buf_t a = good;
  size_t attr_off = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct inet_diag_msg));
  struct rtattr ra;
  memcpy(&ra, a.b + attr_off, sizeof ra);
  ra.rta_len = 200;
  memcpy(a.b + attr_off, &ra, sizeof ra);
  assert_int_equal(parse(&a, &l, &kerr, err), LR_SOCKDIAG_EPROTO);
  ra.rta_len = 2; /* shorter than its own header */
  memcpy(a.b + attr_off, &ra, sizeof ra);
  assert_int_equal(parse(&a, &l, &kerr, err), LR_SOCKDIAG_EPROTO);

  /* An empty datagram is just "nothing yet". */
  assert_int_equal(lr_sockdiag_parse(good.b, 0, SEQ, &l, &kerr, err, sizeof err),
                   LR_SOCKDIAG_MORE);
  lr_sockdiag_list_free(&l);
}

static void test_unaligned_buffer(void **state) {
  (void)state;
  buf_t b = {.len = 0};
  put_sock(&b, SEQ, AF_INET, 10, lo4, 6379, 9, -1);
  put_done(&b, SEQ, 0);
  uint8_t shifted[sizeof b.b + 1];
  memcpy(shifted + 1, b.b, b.len);
  lr_sockdiag_list_t l;
  lr_sockdiag_list_init(&l);
  int kerr;
  char err[256];
  assert_int_equal(lr_sockdiag_parse(shifted + 1, b.len, SEQ, &l, &kerr, err, sizeof err),
                   LR_SOCKDIAG_DONE);
  assert_int_equal(l.n, 1);
  assert_int_equal(l.v[0].l.port, 6379);
  lr_sockdiag_list_free(&l);
}

/* ---- live ---------------------------------------------------------------- */

static int listen_on(int family, const void *addr, int v6only, uint16_t *port, uint32_t *ino) {
  int fd = socket(family, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_storage ss;
  socklen_t len;
  memset(&ss, 0, sizeof ss);
  if (family == AF_INET6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    memcpy(&s6->sin6_addr, addr, 16);
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    len = sizeof *s6;
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    memcpy(&s4->sin_addr, addr, 4);
    len = sizeof *s4;
  }
  if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 4) != 0) {
    close(fd);
    return -1;
  }
  len = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &len);
  *port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                   : ((struct sockaddr_in *)&ss)->sin_port);
  struct stat st;
  fstat(fd, &st);
  *ino = (uint32_t)st.st_ino;
  return fd;
}

static const lr_sockdiag_entry_t *find(const lr_sockdiag_list_t *l, uint32_t ino) {
  for (size_t i = 0; i < l->n; i++)
    if (l->v[i].inode == ino) return &l->v[i];
  return NULL;
}

static void test_live_dump(void **state) {
  (void)state;
  lr_sockdiag_t sd;
  char err[256];
  if (lr_sockdiag_open(&sd, err, sizeof err) != 0) {
    /* Only a sandbox without netlink gets here; CI must not hide that. */
    char why[320];
    snprintf(why, sizeof why, "no NETLINK_SOCK_DIAG, live dump not run: %s", err);
    LR_SKIP_OR_FAIL(why);
  }
  uint16_t p4, p6d, p6o;
  uint32_t i4, i6d, i6o;
  int f4 = listen_on(AF_INET, lo4, 0, &p4, &i4);
  assert_true(f4 >= 0);
  int f6d = listen_on(AF_INET6, any6, 0, &p6d, &i6d);
  int f6o = listen_on(AF_INET6, any6, 1, &p6o, &i6o);
  int have6 = f6d >= 0 && f6o >= 0;

  lr_sockdiag_list_t l;
  lr_sockdiag_list_init(&l);
  assert_int_equal(lr_sockdiag_dump(&sd, &l, err, sizeof err), 0);
  const lr_sockdiag_entry_t *e = find(&l, i4);
  assert_non_null(e);
  assert_int_equal(e->l.family, 4);
  assert_int_equal(e->l.port, p4);
  assert_memory_equal(e->l.addr, lo4, 4);
  if (have6) {
    e = find(&l, i6d);
    assert_non_null(e);
    assert_int_equal(e->l.family, 6);
    assert_int_equal(e->l.port, p6d);
    assert_int_equal(e->l.flags & LR_LISTENER_V6ONLY, 0);
    e = find(&l, i6o);
    assert_non_null(e);
    assert_int_equal(e->l.port, p6o);
    assert_int_equal(e->l.flags & LR_LISTENER_V6ONLY, LR_LISTENER_V6ONLY);
  }

  /* A bound UDP socket is in the UDP dump, marked, and not in the TCP one. */
  int u = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in us;
  memset(&us, 0, sizeof us);
  us.sin_family = AF_INET;
  us.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t ulen = sizeof us;
  assert_int_equal(bind(u, (struct sockaddr *)&us, sizeof us), 0);
  getsockname(u, (struct sockaddr *)&us, &ulen);
  struct stat ust;
  fstat(u, &ust);
  assert_null(find(&l, (uint32_t)ust.st_ino));
  assert_int_equal(lr_sockdiag_dump_udp(&sd, &l, err, sizeof err), 0);
  e = find(&l, (uint32_t)ust.st_ino);
  assert_non_null(e);
  assert_int_equal(e->l.port, ntohs(us.sin_port));
  assert_int_equal(e->l.flags, LR_LISTENER_UDP);
  close(u);

  /* A closed listener is gone from the next dump. */
  close(f4);
  l.n = 0;
  assert_int_equal(lr_sockdiag_dump(&sd, &l, err, sizeof err), 0);
  assert_null(find(&l, i4));
  if (f6d >= 0) close(f6d);
  if (f6o >= 0) close(f6o);
  lr_sockdiag_list_free(&l);
  lr_sockdiag_close(&sd);
  if (!have6) LR_SKIP_OR_FAIL("no IPv6 here: only the IPv4 listener was checked");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_single_datagram_dump),
      cmocka_unit_test(test_udp_dump_parse),
      cmocka_unit_test(test_multipart_over_datagrams),
      cmocka_unit_test(test_skips_other_seq_states_and_types),
      cmocka_unit_test(test_kernel_errors),
      cmocka_unit_test(test_lying_lengths),
      cmocka_unit_test(test_unaligned_buffer),
      cmocka_unit_test(test_live_dump),
  };
  return lr_test_exit_code(cmocka_run_group_tests(tests, NULL, NULL));
}
