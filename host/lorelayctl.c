/* lorelayctl: asks a running lorelayd for its status, or watches its
 * events.
 *
 * The daemon renders the table, the JSON and the event lines (one model,
 * one place), so this client stays a thin, portable libuv pipe client that
 * works the same over a Unix socket and a Windows named pipe; where the
 * endpoint lives by default is the platform layer's answer, shared with
 * lorelayd. `status` collects the document and prints it; `watch` checks
 * the daemon's "ok" and then copies each line to stdout as it arrives,
 * until interrupted or the daemon goes. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "lr_opts.h"
#include "lr_pal.h"
#include "lr_sbuf.h"
#include "lr_version.h"

typedef struct {
  uv_pipe_t pipe;
  uv_connect_t creq;
  uv_write_t wreq;
  uv_timer_t timer;
  const char *path;
  char request[512];
  lr_sbuf_t out;
  int status;
  int watch;      /* watching: lines go to stdout as they come */
  int subscribed; /* the daemon said "ok" */
  char rbuf[16384];
} ctl_t;

static void usage(FILE *f) {
  fprintf(f, "usage: lorelayctl [--socket PATH] status [--json] [--wide] [GUEST]\n"
             "       lorelayctl [--socket PATH] watch [--json] [--guest GUEST]\n"
             "status: lorelayd's configuration file, guests, forwarded ports, owners,\n"
             "        connections and bytes; with GUEST, that guest only.\n"
             "watch:  the current ports first (marked snapshot, then a snapshot-end line),\n"
             "        then one line per event (port added, removed or changing state,\n"
             "        guest connected or disconnected) as it happens, until interrupted.\n\n"
             "  --socket PATH   lorelayd's status endpoint (default: this user's daemon's,\n"
             "                  else the system daemon's)\n"
             "  --json          machine-readable output (watch: one JSON object a line)\n"
             "  --wide          status: do not fit the table to the terminal's width\n"
             "  --guest GUEST   watch: only this guest's events\n"
             "  -h, --help      this text\n"
             "  -V, --version   print the version\n");
}

static void finish(ctl_t *c, int status) {
  if (c->status == 0) c->status = status;
  uv_close((uv_handle_t *)&c->timer, NULL);
  if (!uv_is_closing((uv_handle_t *)&c->pipe)) uv_close((uv_handle_t *)&c->pipe, NULL);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  ctl_t *c = h->data;
  (void)sz;
  buf->base = c->rbuf;
  buf->len = sizeof c->rbuf;
}

/* Watching: the first line is the daemon's answer to the subscription
 * ("ok", or "error: ..."), then events, copied through as they come. */
static void watch_data(ctl_t *c, const char *p, size_t n) {
  if (c->subscribed) {
    fwrite(p, 1, n, stdout);
    fflush(stdout);
    return;
  }
  lr_sbuf_append(&c->out, p, n);
  char *nl = c->out.p ? memchr(c->out.p, '\n', c->out.len) : NULL;
  if (!nl) {
    if (c->out.len > 4096) {
      fprintf(stderr, "lorelayctl: %s does not answer like lorelayd\n", c->path);
      finish(c, 1);
    }
    return;
  }
  size_t first = (size_t)(nl - c->out.p) + 1;
  if (first != 3 || memcmp(c->out.p, "ok\n", 3) != 0) {
    fprintf(stderr, "lorelayctl: %.*s\n", (int)first - 1, c->out.p);
    finish(c, 1);
    return;
  }
  c->subscribed = 1;
  uv_timer_stop(&c->timer); /* the 5 s bound is for the answer; a watch runs on */
  fprintf(stderr, "lorelayctl: watching lorelayd at %s (Ctrl-C to stop)\n", c->path);
  fwrite(c->out.p + first, 1, c->out.len - first, stdout);
  fflush(stdout);
  c->out.len = 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  ctl_t *c = s->data;
  if (n > 0) {
    if (c->watch)
      watch_data(c, buf->base, (size_t)n);
    else
      lr_sbuf_append(&c->out, buf->base, (size_t)n);
    return;
  }
  if (n == UV_EOF && c->watch) {
    if (c->subscribed) fprintf(stderr, "lorelayctl: lorelayd ended the watch\n");
    else fprintf(stderr, "lorelayctl: lorelayd closed the connection without an answer\n");
    finish(c, 1);
    return;
  }
  if (n == UV_EOF) {
    finish(c, c->out.len ? 0 : 1);
    if (!c->out.len) fprintf(stderr, "lorelayctl: lorelayd closed the connection without an answer\n");
    return;
  }
  if (n < 0) {
    fprintf(stderr, "lorelayctl: reading from %s: %s\n", c->path, uv_strerror((int)n));
    finish(c, 1);
  }
}

static void on_write(uv_write_t *w, int status) {
  ctl_t *c = w->data;
  if (status < 0) {
    fprintf(stderr, "lorelayctl: sending to %s: %s\n", c->path, uv_strerror(status));
    finish(c, 1);
  }
}

static void on_connect(uv_connect_t *req, int status) {
  ctl_t *c = req->data;
  if (status < 0) {
    char hint[400];
    const lr_pal_t *pal = lr_pal_host();
    if (status == UV_EACCES && pal->endpoint_access_hint &&
        pal->endpoint_access_hint(c->path, hint, sizeof hint))
      fprintf(stderr, "lorelayctl: cannot reach lorelayd at %s: permission denied: %s\n",
              c->path, hint);
    else
      fprintf(stderr,
              "lorelayctl: cannot reach lorelayd at %s: %s (is it running? --socket?)\n",
              c->path, uv_strerror(status));
    finish(c, 1);
    return;
  }
  uv_buf_t b = uv_buf_init(c->request, (unsigned)strlen(c->request));
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->pipe, &b, 1, on_write) != 0 ||
      uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) != 0)
    finish(c, 1);
}

static void on_timeout(uv_timer_t *t) {
  ctl_t *c = t->data;
  fprintf(stderr, "lorelayctl: lorelayd at %s did not answer within 5 s\n", c->path);
  finish(c, 1);
}

typedef struct {
  const char *socket;
  int json, help, version, wide;
  const char *guest; /* --guest NAME (watch) */
  const char *cmd;
  const char *name; /* status NAME */
} ctl_opts_t;

/* The command word, and for status a guest name: the positional arguments. */
static int take_command(const char *opt, const char *val, void *data) {
  ctl_opts_t *o = data;
  (void)val;
  if (opt[0] == '-') return -1;
  if (!o->cmd) {
    o->cmd = opt;
    return 0;
  }
  if (!o->name && !strcmp(o->cmd, "status")) {
    o->name = opt;
    return 0;
  }
  return -1;
}

/* Whether a file is there (a socket path). */
static int exists(const char *path) {
  uv_fs_t req;
  int rc = uv_fs_stat(NULL, &req, path, NULL);
  uv_fs_req_cleanup(&req);
  return rc == 0 || rc == UV_EACCES;
}

/* The terminal's width when stdout is one (or $COLUMNS), else 0: a pipe
 * gets whole lines. */
static unsigned term_width(uv_loop_t *loop) {
  const char *cols = getenv("COLUMNS");
  if (cols && atoi(cols) > 0) return (unsigned)atoi(cols);
  if (uv_guess_handle(1) != UV_TTY) return 0;
  uv_tty_t tty;
  int w = 0, h = 0;
  if (uv_tty_init(loop, &tty, 1, 0) != 0) return 0;
  if (uv_tty_get_winsize(&tty, &w, &h) != 0) w = 0;
  uv_close((uv_handle_t *)&tty, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return w > 0 ? (unsigned)w : 0;
}

int main(int argc, char **argv) {
  static const lr_opt_t table[] = {
      {"--help", "-h", LR_OPT_FLAG, offsetof(ctl_opts_t, help)},
      {"--version", "-V", LR_OPT_FLAG, offsetof(ctl_opts_t, version)},
      {"--socket", NULL, LR_OPT_STRING, offsetof(ctl_opts_t, socket)},
      {"--json", NULL, LR_OPT_FLAG, offsetof(ctl_opts_t, json)},
      {"--wide", NULL, LR_OPT_FLAG, offsetof(ctl_opts_t, wide)},
      {"--guest", NULL, LR_OPT_STRING, offsetof(ctl_opts_t, guest)},
  };
  ctl_opts_t o;
  char defpath[512], err[256];
  memset(&o, 0, sizeof o);
  if (lr_opts_parse(argc, argv, table, sizeof table / sizeof table[0], &o, take_command, &o, err,
                    sizeof err) != 0) {
    fprintf(stderr, "lorelayctl: %s\n", err);
    return 2;
  }
  if (o.help) {
    usage(stdout);
    return 0;
  }
  if (o.version) {
    printf("lorelayctl %s\n", LR_VERSION_STRING);
    return 0;
  }
  const char *sock = o.socket, *cmd = o.cmd;
  int json = o.json;
  if (!cmd) {
    usage(stderr);
    return 2;
  }
  int watch = strcmp(cmd, "watch") == 0;
  if (strcmp(cmd, "status") != 0 && !watch) {
    fprintf(stderr, "lorelayctl: unknown command '%s' (known: status, watch)\n", cmd);
    return 2;
  }
  if (o.guest && !watch) {
    fprintf(stderr, "lorelayctl: --guest is for watch (status takes the name: status GUEST)\n");
    return 2;
  }
  const char *only = watch ? o.guest : o.name;
  if (only && (!*only || strlen(only) > 256 || strpbrk(only, " \t\r\n"))) {
    fprintf(stderr, "lorelayctl: '%s' is not a guest name\n", only);
    return 2;
  }
  char syspath[512];
  if (!sock) {
    /* The daemon's own default, from the same platform layer; a user who
     * runs no daemon of their own means the system's (a member of its
     * statusGroup may use it). */
    const lr_pal_t *pal = lr_pal_host();
    sock = pal->default_status_path(defpath, sizeof defpath);
    if (!exists(sock) && pal->system_status_path &&
        strcmp(pal->system_status_path(syspath, sizeof syspath), sock) != 0)
      sock = syspath;
  }
  ctl_t c;
  memset(&c, 0, sizeof c);
  c.path = sock;
  c.watch = watch;
  uv_loop_t *loop = uv_default_loop();
  unsigned width = !watch && !json && !o.wide ? term_width(loop) : 0;
  snprintf(c.request, sizeof c.request, "%s %s%s%s", watch ? "watch" : "status",
           json ? "json" : "table", only ? " guest=" : "", only ? only : "");
  if (width) {
    size_t l = strlen(c.request);
    snprintf(c.request + l, sizeof c.request - l, " width=%u", width);
  }
  {
    size_t l = strlen(c.request);
    snprintf(c.request + l, sizeof c.request - l, "\n");
  }
  lr_sbuf_init(&c.out);
  uv_pipe_init(loop, &c.pipe, 0);
  uv_timer_init(loop, &c.timer);
  c.pipe.data = c.timer.data = c.creq.data = &c;
  uv_timer_start(&c.timer, on_timeout, 5000, 0);
  uv_pipe_connect(&c.creq, &c.pipe, sock, on_connect);
  uv_run(loop, UV_RUN_DEFAULT);
  if (c.status == 0 && c.out.len && !watch) {
    if (strncmp(c.out.p, "error:", 6) == 0) { /* "error: no guest named 'x' (guests: ...)" */
      fprintf(stderr, "lorelayctl: %.*s", (int)c.out.len, c.out.p);
      c.status = 1;
    } else {
      fwrite(c.out.p, 1, c.out.len, stdout);
    }
  }
  lr_sbuf_free(&c.out);
  uv_loop_close(loop);
  return c.status;
}
