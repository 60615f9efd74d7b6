/* libFuzzer target: the status endpoint's request line, as it exists (the
 * parsing lives inside lr_ctlsrv.c's read callback, not in a function of
 * its own, so the real endpoint is driven instead).
 *
 * One host core per process, with a guest whose agent never answers (its
 * name full of characters JSON must escape) and reverse ports, serving the
 * status endpoint on a Unix socket in a private temporary directory. Each
 * input is one lorelayctl-like client: connect, write the input in a few
 * pieces, half-close, read the answer to the end. The input only ever
 * reaches the loopback-free Unix socket; the guest's address is a path
 * that does not exist.
 *
 * Checked, from docs/protocol.md ("one request line, status json or status
 * table, answered with the document, then closes"; "watch json" or "watch
 * table", answered "ok" and then events until either side closes): the
 * endpoint always closes (a watchdog aborts after 5 s; a watcher closes
 * when the client's half-close arrives), a known request gets its
 * document, a watch request its "ok" and nothing else (the guest never
 * connects, so there is no event), an unknown one an "error:" line, and no
 * client record outlives its connection. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "fuzz_common.h"
#include "lr_config.h"
#include "lr_host.h"
#include "lr_host_int.h" /* h->clients: the endpoint's live connection records */
#include "lr_log.h"

static uv_loop_t g_loop;
static lr_host_t *g_host;
static lr_config_t g_cfg;
static lr_host_pal_t g_pal; /* no member is needed: no stand-ins, no VM sockets */
static char g_dir[64], g_path[128];

typedef struct {
  uv_pipe_t pipe;
  uv_connect_t creq;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  uv_timer_t watchdog;
  const uint8_t *data;
  size_t size, sent, chunk;
  char *answer;
  size_t alen, acap;
  int closed, timer_closed;
} client_t;

static void silent(lr_log_level_t level, const char *line, void *data) {
  (void)level;
  (void)line;
  (void)data;
}

static void cleanup(void) {
  unlink(g_path);
  rmdir(g_dir);
}

static void setup(void) {
  char err[256];
  /* Writing to an endpoint that has answered and closed is part of the
   * game: an EPIPE, not a signal that ends the fuzzer. */
  signal(SIGPIPE, SIG_IGN);
  lr_log_set_sink(silent, NULL);
  lr_log_set_level(LR_LOG_DEBUG); /* format every message the endpoint may log */
  snprintf(g_dir, sizeof g_dir, "/tmp/lorelay-fuzz-status-XXXXXX");
  FZ_CHECK(mkdtemp(g_dir) != NULL);
  snprintf(g_path, sizeof g_path, "%s/status.sock", g_dir);
  atexit(cleanup);
  FZ_CHECK(uv_loop_init(&g_loop) == 0);
  lr_config_defaults(&g_cfg);
  FZ_CHECK(lr_portset_parse(&g_cfg.reverse_ports, "20001-20003, 20010", err, sizeof err) == 0);
  g_pal.base.name = "fuzz";
  g_host = lr_host_new(&g_loop, &g_pal, &g_cfg);
  FZ_CHECK(g_host != NULL);
  char transport[160];
  snprintf(transport, sizeof transport, "unix:%s/no-agent.sock", g_dir);
  lr_guest_opts_t go = {.name = "fuzz \"guest\" \\ \t\x01\x1f\x7f caf\xc3\xa9",
                        .transport = transport};
  FZ_CHECK(lr_host_add_guest(g_host, &go, err, sizeof err) == 0);
  FZ_CHECK(lr_host_serve_status(g_host, g_path, err, sizeof err) == 0);
}

static void on_closed(uv_handle_t *h) { ((client_t *)h->data)->closed = 1; }
static void on_timer_closed(uv_handle_t *h) { ((client_t *)h->data)->timer_closed = 1; }

static void client_close(client_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->pipe)) uv_close((uv_handle_t *)&c->pipe, on_closed);
}

static void on_watchdog(uv_timer_t *t) {
  client_t *c = t->data;
  fprintf(stderr, "status endpoint neither answered nor closed within 5 s (%zu of %zu bytes "
                  "sent, %zu received)\n", c->sent, c->size, c->alen);
  abort();
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  client_t *c = h->data;
  (void)sz;
  if (c->acap - c->alen < 4096) {
    c->acap = c->acap * 2 + 4096;
    c->answer = realloc(c->answer, c->acap);
    FZ_CHECK(c->answer != NULL);
  }
  buf->base = c->answer + c->alen;
  buf->len = c->acap - c->alen;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  client_t *c = s->data;
  (void)buf;
  if (n < 0) { /* EOF, or a reset when the endpoint closed with our bytes unread */
    client_close(c);
    return;
  }
  c->alen += (size_t)n;
}

static void on_shutdown(uv_shutdown_t *req, int status) { (void)req, (void)status; }

static void write_next(client_t *c);

static void on_written(uv_write_t *req, int status) {
  client_t *c = req->data;
  if (status < 0) return; /* the endpoint stopped reading: on_read ends it */
  write_next(c);
}

static void write_next(client_t *c) {
  if (uv_is_closing((uv_handle_t *)&c->pipe)) return;
  if (c->sent == c->size) {
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->pipe, on_shutdown) != 0) client_close(c);
    return;
  }
  size_t n = c->size - c->sent < c->chunk ? c->size - c->sent : c->chunk;
  uv_buf_t b = uv_buf_init((char *)c->data + c->sent, (unsigned)n);
  c->sent += n;
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->pipe, &b, 1, on_written) != 0) client_close(c);
}

static void on_connect(uv_connect_t *req, int status) {
  client_t *c = req->data;
  FZ_CHECK(status == 0);
  FZ_CHECK(uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) == 0);
  write_next(c);
}

/* What the endpoint must answer, by the contract. */
/* memmem without _GNU_SOURCE: the answer is not NUL-terminated. */
static const char *lr_fz_find(const char *hay, size_t n, const char *needle) {
  size_t m = strlen(needle);
  for (size_t i = 0; m <= n && i <= n - m; i++)
    if (memcmp(hay + i, needle, m) == 0) return hay + i;
  return NULL;
}

enum { ANY, NOTHING, JSON, TABLE, WATCH, ERROR_LINE };

/* What the endpoint must answer, modelled on its grammar: "VERB [FORMAT]
 * [guest=NAME] [width=N]", words split on spaces, VERB status or watch,
 * FORMAT json, --json or table (or none). The fuzz guest's name holds
 * spaces, so no guest= option can name it: every one is an unknown guest. */
static int expected(const uint8_t *d, size_t n) {
  /* The endpoint holds at most 511 bytes of request. Before a newline in
   * those, a NUL makes the outcome an implementation detail. */
  size_t lim = n < 511 ? n : 511, i;
  for (i = 0; i < lim && d[i] != '\n'; i++)
    if (d[i] == '\0') return ANY;
  if (i == lim && n < 511) return NOTHING; /* closed before a whole line */
  size_t len = i;
  if (len && d[len - 1] == '\r') len--;
  char line[512], *save = NULL;
  memcpy(line, d, len);
  line[len] = '\0';
  const char *verb = strtok_r(line, " ", &save);
  const char *fmt = verb ? strtok_r(NULL, " ", &save) : NULL;
  if (!verb || (strcmp(verb, "status") && strcmp(verb, "watch"))) return ERROR_LINE;
  int json = fmt && (!strcmp(fmt, "json") || !strcmp(fmt, "--json"));
  if (fmt && !json && strcmp(fmt, "table")) return ERROR_LINE;
  for (char *w = strtok_r(NULL, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
    if (!strncmp(w, "guest=", 6) && w[6] && strlen(w + 6) < 300) return ERROR_LINE;
    if (strncmp(w, "width=", 6)) return ERROR_LINE;
    char *end;
    unsigned long v = strtoul(w + 6, &end, 10);
    if (*end || v > 100000) return ERROR_LINE;
  }
  if (!strcmp(verb, "watch")) return WATCH;
  return json ? JSON : TABLE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int init;
  if (!init) {
    init = 1;
    setup();
  }
  static client_t c;
  memset(&c, 0, sizeof c);
  c.data = data;
  c.size = size;
  /* A few different ways of splitting the request into writes. */
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 16777619u;
  c.chunk = (h & 3) == 0 ? size + 1 : 1 + (h >> 2) % 16;

  FZ_CHECK(uv_pipe_init(&g_loop, &c.pipe, 0) == 0);
  c.pipe.data = &c;
  FZ_CHECK(uv_timer_init(&g_loop, &c.watchdog) == 0);
  c.watchdog.data = &c;
  FZ_CHECK(uv_timer_start(&c.watchdog, on_watchdog, 5000, 0) == 0);
  c.creq.data = &c;
  uv_pipe_connect(&c.creq, &c.pipe, g_path, on_connect);

  /* Until our side is closed and the endpoint has freed its record. */
  while (!c.closed || g_host->clients != NULL) uv_run(&g_loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&c.watchdog, on_timer_closed);
  while (!c.timer_closed) uv_run(&g_loop, UV_RUN_ONCE);

  const char *a = c.answer ? c.answer : "";
  switch (expected(data, size)) {
    case NOTHING:
      FZ_CHECK(c.alen == 0);
      break;
    case JSON: /* the config object first, then the guests */
      FZ_CHECK(c.alen > 11 && memcmp(a, "{\"config\":{", 11) == 0);
      FZ_CHECK(lr_fz_find(a, c.alen, "\"guests\":[{") != NULL);
      FZ_CHECK(memcmp(a + c.alen - 3, "]}\n", 3) == 0);
      break;
    case TABLE: /* the config line, then the guests */
      FZ_CHECK(c.alen > 7 && memcmp(a, "config ", 7) == 0 && a[c.alen - 1] == '\n');
      FZ_CHECK(lr_fz_find(a, c.alen, "\nguest ") != NULL);
      break;
    case WATCH: /* "ok", the present ports (snapshot), then the mark */
      FZ_CHECK(c.alen > 3 && memcmp(a, "ok\n", 3) == 0 && a[c.alen - 1] == '\n');
      FZ_CHECK(lr_fz_find(a, c.alen, "snapshot-end") != NULL);
      break;
    case ERROR_LINE:
      FZ_CHECK(c.alen > 7 && memcmp(a, "error: ", 7) == 0 && a[c.alen - 1] == '\n');
      FZ_CHECK(memchr(a, '\n', c.alen) == a + c.alen - 1);
      break;
    default:
      break;
  }
  free(c.answer);
  return 0;
}
