/* Unit tests for UDP forwarding's pure parts: the datagram framing of a
 * flow's stream (lr_dgram: every split of the reads, the size limits,
 * oversized and truncated frames), the bounded sender against a stream
 * whose peer does not read, and the protocol and config additions (OPEN's
 * UDP flag and what its MAC covers, HELLO's caps byte, LR_LISTENER_UDP in
 * the rules, the udp* keys). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_config.h"
#include "lr_dgram.h"
#include "lr_log.h"
#include "lr_proto.h"
#include "lr_rules.h"
#include "lr_testutil.h"

/* ---- the decoder -------------------------------------------------------- */

typedef struct {
  size_t n;
  size_t len[64];
  uint8_t first[64];
  int stop_after; /* 0: never */
} got_t;

static int collect(void *data, const uint8_t *p, size_t n) {
  got_t *g = data;
  assert_true(g->n < 64);
  g->len[g->n] = n;
  g->first[g->n] = n ? p[0] : 0;
  for (size_t i = 0; i < n; i++) assert_int_equal(p[i], (uint8_t)(p[0] + i));
  g->n++;
  return g->stop_after && g->n == (size_t)g->stop_after;
}

/* A stream of datagrams of the given sizes, each byte i of datagram k
 * being k*7 + i (so a shifted boundary shows). */
static uint8_t *stream_of(const size_t *sizes, size_t count, size_t *out_len) {
  size_t total = 0;
  for (size_t k = 0; k < count; k++) total += LR_DGRAM_HDR + sizes[k];
  uint8_t *s = malloc(total ? total : 1), *p = s;
  assert_non_null(s);
  for (size_t k = 0; k < count; k++) {
    lr_dgram_hdr_encode(p, sizes[k]);
    p += LR_DGRAM_HDR;
    for (size_t i = 0; i < sizes[k]; i++) *p++ = (uint8_t)(k * 7 + i);
  }
  *out_len = total;
  return s;
}

static void check_split(const size_t *sizes, size_t count, size_t chunk) {
  size_t len;
  uint8_t *s = stream_of(sizes, count, &len);
  lr_dgram_rx_t rx;
  got_t g;
  memset(&g, 0, sizeof g);
  lr_dgram_rx_init(&rx);
  for (size_t off = 0; off < len; off += chunk) {
    size_t n = len - off < chunk ? len - off : chunk;
    assert_int_equal(lr_dgram_rx_feed(&rx, s + off, n, collect, &g), LR_PROTO_OK);
  }
  assert_int_equal(g.n, count);
  for (size_t k = 0; k < count; k++) {
    assert_int_equal(g.len[k], sizes[k]);
    if (sizes[k]) assert_int_equal(g.first[k], (uint8_t)(k * 7));
  }
  assert_false(lr_dgram_rx_partial(&rx));
  assert_null(rx.part); /* nothing held between datagrams */
  lr_dgram_rx_free(&rx);
  free(s);
}

static void test_boundaries_every_split(void **state) {
  (void)state;
  static const size_t sizes[] = {1, 0, 2, 3, 100, 1472, 1, 65507, 7, 65507, 0, 300};
  const size_t count = sizeof sizes / sizeof sizes[0];
  static const size_t chunks[] = {1, 2, 3, 5, 64, 1000, 4096, 65536, 200000};
  for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++)
    check_split(sizes, count, chunks[i]);
}

static void test_oversized_refused_before_payload(void **state) {
  (void)state;
  lr_dgram_rx_t rx;
  got_t g;
  memset(&g, 0, sizeof g);
  lr_dgram_rx_init(&rx);
  uint8_t hdr[2] = {0xFF, 0xE4}; /* 65508 */
  /* Header split across reads: the error comes with its second byte. */
  assert_int_equal(lr_dgram_rx_feed(&rx, hdr, 1, collect, &g), LR_PROTO_OK);
  assert_int_equal(lr_dgram_rx_feed(&rx, hdr + 1, 1, collect, &g), LR_PROTO_ETOOBIG);
  assert_int_equal(g.n, 0);
  assert_null(rx.part); /* nothing buffered for it */
  lr_dgram_rx_free(&rx);

  uint8_t max[2];
  lr_dgram_hdr_encode(max, LR_DGRAM_MAX);
  lr_dgram_rx_init(&rx);
  assert_int_equal(lr_dgram_rx_feed(&rx, max, 2, collect, &g), LR_PROTO_OK);
  assert_true(lr_dgram_rx_partial(&rx));
  lr_dgram_rx_free(&rx);
  assert_int_equal(max[0], 0xFF);
  assert_int_equal(max[1], 0xE3);
}

static void test_truncated_is_partial(void **state) {
  (void)state;
  static const size_t sizes[] = {10, 900};
  size_t len;
  uint8_t *s = stream_of(sizes, 2, &len);
  lr_dgram_rx_t rx;
  got_t g;
  memset(&g, 0, sizeof g);
  lr_dgram_rx_init(&rx);
  /* Everything but the last 5 bytes: one whole datagram, one cut. */
  assert_int_equal(lr_dgram_rx_feed(&rx, s, len - 5, collect, &g), LR_PROTO_OK);
  assert_int_equal(g.n, 1);
  assert_true(lr_dgram_rx_partial(&rx));
  lr_dgram_rx_free(&rx); /* frees the partial one (valgrind twin checks) */
  /* Half a header is partial too. */
  lr_dgram_rx_init(&rx);
  assert_int_equal(lr_dgram_rx_feed(&rx, s, 1, collect, &g), LR_PROTO_OK);
  assert_true(lr_dgram_rx_partial(&rx));
  lr_dgram_rx_free(&rx);
  free(s);
}

static void test_callback_stops(void **state) {
  (void)state;
  static const size_t sizes[] = {1, 2, 3, 4};
  size_t len;
  uint8_t *s = stream_of(sizes, 4, &len);
  lr_dgram_rx_t rx;
  got_t g;
  memset(&g, 0, sizeof g);
  g.stop_after = 2;
  lr_dgram_rx_init(&rx);
  assert_int_equal(lr_dgram_rx_feed(&rx, s, len, collect, &g), LR_DGRAM_STOPPED);
  assert_int_equal(g.n, 2);
  lr_dgram_rx_free(&rx);
  /* ... also when the datagram that stops was split across reads. */
  memset(&g, 0, sizeof g);
  g.stop_after = 2;
  lr_dgram_rx_init(&rx);
  assert_int_equal(lr_dgram_rx_feed(&rx, s, 5, collect, &g), LR_PROTO_OK);
  assert_int_equal(lr_dgram_rx_feed(&rx, s + 5, len - 5, collect, &g), LR_DGRAM_STOPPED);
  assert_int_equal(g.n, 2);
  lr_dgram_rx_free(&rx);
  free(s);
}

/* ---- the bounded sender -------------------------------------------------- */

typedef struct {
  uv_tcp_t lsn, cli, srv;
  int connected, accepted;
} pair_t;

static void on_conn(uv_stream_t *l, int status) {
  pair_t *p = l->data;
  assert_int_equal(status, 0);
  uv_tcp_init(l->loop, &p->srv);
  assert_int_equal(uv_accept(l, (uv_stream_t *)&p->srv), 0);
  p->accepted = 1;
}

static void on_connect(uv_connect_t *r, int status) {
  pair_t *p = r->data;
  assert_int_equal(status, 0);
  p->connected = 1;
}

/* A stream whose reader never reads fills up: the sender queues up to
 * LR_DGRAM_QUEUE_MAX, then drops whole datagrams and counts them, and
 * never breaks the framing. */
static void test_send_bounded_drops(void **state) {
  (void)state;
  uv_loop_t loop;
  pair_t p;
  memset(&p, 0, sizeof p);
  uv_loop_init(&loop);
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  uv_tcp_init(&loop, &p.lsn);
  p.lsn.data = &p;
  assert_int_equal(uv_tcp_bind(&p.lsn, (struct sockaddr *)&sa, 0), 0);
  int salen = sizeof sa;
  uv_tcp_getsockname(&p.lsn, (struct sockaddr *)&sa, &salen);
  assert_int_equal(uv_listen((uv_stream_t *)&p.lsn, 4, on_conn), 0);
  uv_tcp_init(&loop, &p.cli);
  uv_connect_t creq;
  creq.data = &p;
  assert_int_equal(uv_tcp_connect(&creq, &p.cli, (struct sockaddr *)&sa, on_connect), 0);
  while (!p.connected || !p.accepted) uv_run(&loop, UV_RUN_ONCE);

  lr_dgram_tx_t tx;
  uint64_t port_drops = 0;
  memset(&tx, 0, sizeof tx);
  tx.drop_counter = &port_drops;
  static uint8_t dg[60000];
  memset(dg, 'd', sizeof dg);
  int sent = 0, dropped = 0;
  for (int i = 0; i < 2000 && dropped < 10; i++) {
    int rc = lr_dgram_send((uv_stream_t *)&p.cli, &tx, dg, sizeof dg);
    assert_true(rc == 0 || rc == 1);
    if (rc == 0) sent++;
    else dropped++;
    assert_true(tx.queued <= LR_DGRAM_QUEUE_MAX + sizeof dg + LR_DGRAM_HDR);
  }
  assert_int_equal(dropped, 10);
  assert_int_equal(tx.dropped, 10);
  assert_int_equal(port_drops, 10);
  assert_true(sent > 0);
  assert_true(tx.queued > 0);
  /* Closing the stream cancels the queue: every queued byte is accounted. */
  uv_close((uv_handle_t *)&p.cli, NULL);
  uv_close((uv_handle_t *)&p.srv, NULL);
  uv_close((uv_handle_t *)&p.lsn, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(tx.queued, 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- protocol and config additions --------------------------------------- */

static void test_open_udp_flag_and_mac_fields(void **state) {
  (void)state;
  uint8_t buf[64], f1[16], f2[16];
  lr_open_t o, d;
  memset(&o, 0, sizeof o);
  o.family = 6;
  o.port = 5353;
  o.flags = LR_OPEN_UDP;
  size_t n = lr_encode_open(buf, sizeof buf, &o);
  lr_frame_t f;
  size_t used;
  assert_int_equal(lr_frame_decode(buf, n, &f, &used), LR_PROTO_OK);
  assert_int_equal(lr_decode_open(&f, &d), LR_PROTO_OK);
  assert_int_equal(d.flags, LR_OPEN_UDP);
  /* UDP is part of what OPEN's MAC covers; a TCP OPEN's fields are as
   * before (older agents compute them so). */
  size_t a = lr_auth_fields_open(f1, sizeof f1, &o);
  o.flags = 0;
  size_t b = lr_auth_fields_open(f2, sizeof f2, &o);
  assert_int_equal(a, 4);
  assert_int_equal(b, 3);
  assert_int_equal(f1[3], LR_OPEN_UDP);
  o.flags = LR_OPEN_PASS_FD;
  assert_int_equal(lr_auth_fields_open(f2, sizeof f2, &o), 3);
}

static void test_hello_caps(void **state) {
  (void)state;
  uint8_t buf[512];
  lr_hello_t h, d;
  memset(&h, 0, sizeof h);
  snprintf(h.name, sizeof h.name, "host");
  snprintf(h.version, sizeof h.version, "1");
  size_t plain = lr_encode_hello(buf, sizeof buf, LR_MSG_HELLO, &h);
  h.caps = LR_CAP_UDP;
  size_t n = lr_encode_hello(buf, sizeof buf, LR_MSG_HELLO, &h);
  assert_int_equal(n, plain + 1); /* one byte more, after the version */
  lr_frame_t f;
  size_t used;
  assert_int_equal(lr_frame_decode(buf, n, &f, &used), LR_PROTO_OK);
  assert_int_equal(lr_decode_hello(&f, &d), LR_PROTO_OK);
  assert_int_equal(d.caps, LR_CAP_UDP);
  assert_string_equal(d.version, "1");
  /* An older host's HELLO: no caps byte, caps 0. */
  h.caps = 0;
  assert_int_equal(lr_encode_hello(buf, sizeof buf, LR_MSG_HELLO, &h), plain);
  assert_int_equal(lr_frame_decode(buf, plain, &f, &used), LR_PROTO_OK);
  assert_int_equal(lr_decode_hello(&f, &d), LR_PROTO_OK);
  assert_int_equal(d.caps, 0);
}

static void test_rules_udp(void **state) {
  (void)state;
  lr_config_t cfg;
  lr_config_defaults(&cfg);
  lr_listener_t l = lr_test_v4(0, 0, 0, 0, 5353);
  l.flags = LR_LISTENER_UDP;
  lr_host_bind_t out[2];
  int n;
  assert_int_equal(lr_rules_map(&l, &cfg, out, &n), LR_RULE_FORWARD);
  assert_int_equal(n, 1);
  assert_int_equal(out[0].udp, 1);
  assert_int_equal(out[0].family, 4);
  /* The same port policy: 53 is outside forwardPorts. */
  l.port = 53;
  assert_int_equal(lr_rules_map(&l, &cfg, out, &n), LR_RULE_DENIED);
  l.port = 5353;
  cfg.udp = 0;
  assert_int_equal(lr_rules_map(&l, &cfg, out, &n), LR_RULE_IGNORED);
  /* TCP is untouched by udp = false. */
  l.flags = 0;
  assert_int_equal(lr_rules_map(&l, &cfg, out, &n), LR_RULE_FORWARD);
  assert_int_equal(out[0].udp, 0);
}

static void test_config_udp_keys(void **state) {
  (void)state;
  lr_config_t c;
  lr_config_defaults(&c);
  assert_int_equal(c.udp, 1);
  assert_int_equal(c.udp_idle_timeout_s, 60);
  assert_int_equal(lr_config_parse_string(&c,
                                          "[lorelay]\nudp = false\nudpIdleTimeout = 5\n"
                                          "maxUdpFlows = 10\nmaxUdpFlowsPerPort = 3\n"
                                          "udpScanIntervalMs = 50\n",
                                          "t.ini"),
                   0);
  assert_int_equal(c.udp, 0);
  assert_int_equal(c.udp_idle_timeout_s, 5);
  assert_int_equal(c.max_udp_flows, 10);
  assert_int_equal(c.max_udp_flows_per_port, 3);
  assert_int_equal(c.udp_scan_interval_ms, 50);
  lr_config_defaults(&c);
  assert_int_equal(lr_config_parse_string(&c, "[lorelay]\nudpIdleTimeout = 0\n", "t.ini"), -1);
  assert_int_equal(lr_config_parse_string(&c, "[lorelay]\nudp = maybe\n", "t.ini"), -1);
}

int main(void) {
  lr_log_set_level(LR_LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_boundaries_every_split),
      cmocka_unit_test(test_oversized_refused_before_payload),
      cmocka_unit_test(test_truncated_is_partial),
      cmocka_unit_test(test_callback_stops),
      cmocka_unit_test(test_send_bounded_drops),
      cmocka_unit_test(test_open_udp_flag_and_mac_fields),
      cmocka_unit_test(test_hello_caps),
      cmocka_unit_test(test_rules_udp),
      cmocka_unit_test(test_config_udp_keys),
  };
  return lr_test_exit_code(cmocka_run_group_tests(tests, NULL, NULL));
}
