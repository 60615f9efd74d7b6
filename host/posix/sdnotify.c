/* lorelayd under systemd: readiness notification and the journal.
 *
 * Type=notify: systemd holds `systemctl start` (and units ordered after
 * lorelayd) until READY=1, which lorelayd sends once its status socket is
 * bound and its guests are started, so `lorelayctl status` works the moment
 * start returns. A reload is framed by RELOADING=1 (with MONOTONIC_USEC,
 * which systemd 253+ needs to match the reload it asked for) and READY=1;
 * a stop announces STOPPING=1. STATUS= carries the counts `systemctl
 * status` shows. The messages go through libsystemd's sd_notify (Debian's
 * libsystemd0): it does nothing when NOTIFY_SOCKET is unset, so a run by
 * hand is unchanged.
 *
 * The journal: systemd sets JOURNAL_STREAM to the device and inode of the
 * stream it connected stdout/stderr to. When stderr is still that stream
 * (not redirected by the admin), log lines carry "<N>" priorities and no
 * timestamp (lr_log_set_journal). */
#include "lr_sdnotify.h"

#include <cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "lr_log.h"
#include "lr_sbuf.h"

/* STATUS= is refreshed this often while systemd listens (ports come and go
 * with the guests); only a changed text is sent. */
#define LR_SD_STATUS_MS 5000

static uv_timer_t g_status_timer;
static int g_timer_on;
static lr_hostd_t *g_d;
static char g_last_status[200];

/* "2 guests (1 connected), 3 ports forwarding[, 1 in conflict]", from the
 * status document itself, so it says what lorelayctl status says. */
static void status_text(lr_hostd_t *d, char *out, size_t len) {
  lr_sbuf_t b;
  unsigned guests = 0, connected = 0, fwd = 0, conflict = 0;
  lr_sbuf_init(&b);
  if (d->host) lr_host_status_json(d->host, &b);
  cJSON *doc = !b.err && b.p ? cJSON_Parse(b.p) : NULL;
  lr_sbuf_free(&b);
  const cJSON *g;
  cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(doc, "guests")) {
    const cJSON *p;
    guests++;
    connected += cJSON_IsString(cJSON_GetObjectItemCaseSensitive(g, "state")) &&
                 !strcmp(cJSON_GetObjectItemCaseSensitive(g, "state")->valuestring, "connected");
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(g, "ports")) {
      const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "state");
      if (!cJSON_IsString(s)) continue;
      fwd += !strcmp(s->valuestring, "forwarding") || !strcmp(s->valuestring, "remapped");
      conflict += !strcmp(s->valuestring, "conflict");
    }
  }
  cJSON_Delete(doc);
  int n = snprintf(out, len, "%u guest%s (%u connected), %u port%s forwarding", guests,
                   guests == 1 ? "" : "s", connected, fwd, fwd == 1 ? "" : "s");
  if (conflict && n > 0 && (size_t)n < len)
    snprintf(out + n, len - (size_t)n, ", %u in conflict", conflict);
}

/* Sends STATUS= (after READY=1 when ready is set) when the text changed
 * or ready is set. */
static void send_status(int ready) {
  char s[sizeof g_last_status];
  if (!g_d) return;
  status_text(g_d, s, sizeof s);
  if (!ready && !strcmp(s, g_last_status)) return;
  snprintf(g_last_status, sizeof g_last_status, "%s", s);
  sd_notifyf(0, "%sSTATUS=%s", ready ? "READY=1\n" : "", s);
}

static void on_status_timer(uv_timer_t *t) {
  (void)t;
  send_status(0);
}

void lr_sd_ready(uv_loop_t *loop, lr_hostd_t *d) {
  if (!getenv("NOTIFY_SOCKET")) return;
  g_d = d;
  send_status(1);
  if (!g_timer_on && uv_timer_init(loop, &g_status_timer) == 0) {
    g_timer_on = 1;
    uv_unref((uv_handle_t *)&g_status_timer); /* never keeps the loop alive */
    uv_timer_start(&g_status_timer, on_status_timer, LR_SD_STATUS_MS, LR_SD_STATUS_MS);
  }
}

void lr_sd_reloading(void) {
  struct timespec ts;
  if (!g_d) return; /* not ready yet, or no systemd listening */
  clock_gettime(CLOCK_MONOTONIC, &ts);
  sd_notifyf(0, "RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC=%" PRIu64,
             (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u);
}

void lr_sd_reloaded(void) { send_status(1); }

void lr_sd_stopping(void) {
  if (!g_d) return;
  sd_notify(0, "STOPPING=1\nSTATUS=stopping");
  if (g_timer_on) {
    g_timer_on = 0;
    uv_close((uv_handle_t *)&g_status_timer, NULL);
  }
}
