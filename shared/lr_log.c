/* Logging core: level filter, formatting into one line, and a pluggable
 * sink. The default sink writes "TIME ident LEVEL: message" to stderr,
 * which is what a console wants; when stderr is the systemd journal (the
 * platform finds out, lr_log_set_journal), it writes "<N>LEVEL: message"
 * instead: journald reads the syslog priority N from the prefix and adds
 * its own timestamp and identifier, so ours would only be noise. The
 * programs lorelayd starts (lorelay-init, the agent) share its stream, and
 * journald names their lines after lorelayd: they keep their own name,
 * "<N>lorelay-agent LEVEL: message". Services
 * install their own sink (Event Log, file). */
#include "lr_log.h"
#include "lr_sbuf.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

static lr_log_level_t g_level = LR_LOG_INFO;
static lr_log_sink_fn g_sink;
static void *g_sink_data;
static char g_ident[32] = "lorelay";
static int g_journal;

void lr_log_set_level(lr_log_level_t level) { g_level = level; }
lr_log_level_t lr_log_get_level(void) { return g_level; }

void lr_log_set_sink(lr_log_sink_fn sink, void *data) {
  g_sink = sink;
  g_sink_data = data;
}

void lr_log_set_ident(const char *ident) {
  snprintf(g_ident, sizeof g_ident, "%s", ident ? ident : "lorelay");
}

static int g_journal_ident;

void lr_log_set_journal(int on, int with_ident) {
  g_journal = on != 0;
  g_journal_ident = with_ident != 0;
}

static const char *const level_names[] = {"error", "warn", "info", "debug"};

const char *lr_log_level_name(lr_log_level_t level) {
  if ((unsigned)level > LR_LOG_DEBUG) return "?";
  return level_names[level];
}

int lr_log_level_parse(const char *name) {
  if (!name) return -1;
  if (lr_streq_nocase(name, "error")) return LR_LOG_ERROR;
  if (lr_streq_nocase(name, "warn") || lr_streq_nocase(name, "warning")) return LR_LOG_WARN;
  if (lr_streq_nocase(name, "info")) return LR_LOG_INFO;
  if (lr_streq_nocase(name, "debug")) return LR_LOG_DEBUG;
  return -1;
}

static void default_sink(lr_log_level_t level, const char *line) {
  /* syslog(3)'s LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG: the numbers of
   * sd-daemon(3)'s SD_ERR... prefixes. */
  static const int priority[] = {3, 4, 6, 7};
  uv_timeval64_t tv;
  char ts[32] = "";
  if (g_journal) {
    fprintf(stderr, "<%d>%s%s%s: %s\n", priority[(unsigned)level <= LR_LOG_DEBUG ? level : LR_LOG_DEBUG],
            g_journal_ident ? g_ident : "", g_journal_ident ? " " : "", lr_log_level_name(level),
            line);
    fflush(stderr);
    return;
  }
  if (uv_gettimeofday(&tv) == 0) {
    /* UTC time of day from the epoch seconds: no gmtime_r/gmtime_s split. */
    long long day = (long long)(tv.tv_sec % 86400);
    snprintf(ts, sizeof ts, "%02lld:%02lld:%02lld.%03d", day / 3600, day / 60 % 60, day % 60,
             (int)(tv.tv_usec / 1000));
  }
  fprintf(stderr, "%s %s %s: %s\n", ts, g_ident, lr_log_level_name(level), line);
  fflush(stderr);
}

void lr_logv(lr_log_level_t level, const char *fmt, va_list ap) {
  char raw[1024], line[1024 * 4];
  size_t o = 0;
  if (level > g_level) return;
  vsnprintf(raw, sizeof raw, fmt, ap);
  /* One event, one line, no terminal control: a string a guest supplied
   * (a name, a command line) must not forge lines or move the cursor of
   * whoever reads the log, so control bytes are written as \xNN. */
  for (const unsigned char *p = (const unsigned char *)raw; *p && o + 5 < sizeof line; p++) {
    if (*p < 0x20 || *p == 0x7f) {
      static const char hex[] = "0123456789abcdef";
      line[o++] = '\\';
      line[o++] = 'x';
      line[o++] = hex[*p >> 4];
      line[o++] = hex[*p & 15];
    } else {
      line[o++] = (char)*p;
    }
  }
  line[o] = '\0';
  if (g_sink)
    g_sink(level, line, g_sink_data);
  else
    default_sink(level, line);
}

void lr_log(lr_log_level_t level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lr_logv(level, fmt, ap);
  va_end(ap);
}

static void gate_report(lr_log_gate_t *gate, uint64_t now, const char *who, const char *what,
                        lr_log_level_t level) {
  if (gate->suppressed)
    lr_log(level, "%s%s%llu more line(s) like \"%s\" not logged in the last %.1f s", who,
           *who ? ": " : "",
           (unsigned long long)gate->suppressed, what,
           (double)(now - (gate->window - 1)) / 1000.0);
  gate->suppressed = 0;
}

void lr_log_gate_flush(lr_log_gate_t *gate, uint64_t now_ms, const char *who, const char *what,
                       lr_log_level_t level) {
  if (gate->suppressed && now_ms + 1 - gate->window >= 1000) {
    gate_report(gate, now_ms, who, what, level);
    gate->window = 0;
    gate->n = 0;
  }
}

void lr_log_gated(lr_log_gate_t *gate, uint64_t now_ms, const char *who, const char *what,
                  lr_log_level_t level, const char *fmt, ...) {
  if (level > g_level) return;
  if (!gate->window || now_ms + 1 - gate->window >= 1000) {
    gate_report(gate, now_ms, who, what, level);
    gate->window = now_ms + 1;
    gate->n = 0;
  }
  if (gate->n >= LR_LOG_BURST) {
    gate->suppressed++;
    return;
  }
  gate->n++;
  va_list ap;
  va_start(ap, fmt);
  lr_logv(level, fmt, ap);
  va_end(ap);
}
