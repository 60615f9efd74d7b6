/* Logging: one line per event, with a level, routed to a platform sink.
 *
 * The core only formats; where the line goes (stderr, syslog, the Windows
 * Event Log, a file) is the platform's business, so the sink is a function
 * pointer set once at start-up. Levels match the config's logLevel names. */
#ifndef LR_LOG_H
#define LR_LOG_H

#include <stdarg.h>
#include <stdint.h>

typedef enum {
  LR_LOG_ERROR = 0,
  LR_LOG_WARN = 1,
  LR_LOG_INFO = 2,
  LR_LOG_DEBUG = 3,
} lr_log_level_t;

/* Receives a finished line without trailing newline. */
typedef void (*lr_log_sink_fn)(lr_log_level_t level, const char *line, void *data);

void lr_log_set_level(lr_log_level_t level);
lr_log_level_t lr_log_get_level(void);
/* NULL restores the default sink (stderr with a timestamp). */
void lr_log_set_sink(lr_log_sink_fn sink, void *data);
/* Prefix for the default sink, e.g. the program name. */
void lr_log_set_ident(const char *ident);
/* on: the default sink writes for the systemd journal ("<N>LEVEL: message",
 * N the syslog priority; no timestamp: journald adds it, and the ident of
 * the process that owns the stream). with_ident: "<N>IDENT LEVEL: message",
 * for a program writing into another one's stream (the agent lorelayd
 * starts). Whether stderr is the journal is the platform's to find out. */
void lr_log_set_journal(int on, int with_ident);

/* "error", "warn"/"warning", "info", "debug" (case-insensitive). -1 if unknown. */
int lr_log_level_parse(const char *name);
const char *lr_log_level_name(lr_log_level_t level);

#if defined(__MINGW32__)
/* mingw-w64 builds with __USE_MINGW_ANSI_STDIO: C99 formats (%zu, %llu). */
#define LR_PRINTF(a, b) __attribute__((format(gnu_printf, a, b)))
#elif defined(__GNUC__)
#define LR_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LR_PRINTF(a, b)
#endif

void lr_log(lr_log_level_t level, const char *fmt, ...) LR_PRINTF(2, 3);
void lr_logv(lr_log_level_t level, const char *fmt, va_list ap);

/* A burst gate for a kind of line someone else (a guest, a client) can
 * provoke at will but that is worth seeing one by one while it is rare
 * (a stand-in opened or closed, a conflict): at most LR_LOG_BURST lines of
 * the kind per second; the rest are counted, and the count is logged as one
 * line ("N more ... not logged") when the next second starts or on
 * lr_log_gate_flush. Zero-initialised; the caller owns it and supplies a
 * millisecond clock (uv_now). */
#define LR_LOG_BURST 5
typedef struct {
  uint64_t window;     /* start of the current second (ms, +1) */
  unsigned n;          /* lines logged in it */
  uint64_t suppressed; /* lines not logged in it */
} lr_log_gate_t;
/* Logs the line if the gate lets it through. who prefixes the suppressed
 * count (a guest's name, or ""), what names the kind ("stand-in opened or
 * closed"). */
void lr_log_gated(lr_log_gate_t *gate, uint64_t now_ms, const char *who, const char *what,
                  lr_log_level_t level, const char *fmt, ...) LR_PRINTF(6, 7);
/* Logs the pending suppressed count, if the current second is over. */
void lr_log_gate_flush(lr_log_gate_t *gate, uint64_t now_ms, const char *who, const char *what,
                       lr_log_level_t level);

#define LR_ERROR(...) lr_log(LR_LOG_ERROR, __VA_ARGS__)
#define LR_WARN(...) lr_log(LR_LOG_WARN, __VA_ARGS__)
#define LR_INFO(...) lr_log(LR_LOG_INFO, __VA_ARGS__)
#define LR_DEBUG(...) \
  do { if (lr_log_get_level() >= LR_LOG_DEBUG) lr_log(LR_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
