/* Where lorelayd.exe's log lines go on Windows.
 *
 * A console run logs to stderr like any CLI. A service has no console, and
 * a Windows admin looks in two places: the Event Log (source "lorelayd",
 * message table compiled into the exe from lorelayd_msg.mc so Event Viewer shows
 * the text) and a plain file under %ProgramData%\lorelay for the full,
 * debug-level story. Debug lines go to the file only, so a chatty log level
 * cannot flood the Event Log. A console run given --log-file writes both
 * stderr and that file (how the Wine tests check the file sink). */
#include "lr_win32.h"

#include <stdio.h>
#include <string.h>

#include "lorelayd_msg.h"

#define LR_LOG_FILE_MAX (10L * 1024 * 1024) /* rotated to .1 at start-up past this */

static struct {
  int open;
  lr_win32_log_mode_t mode;
  CRITICAL_SECTION lock;
  HANDLE event_source;
  FILE *file;
  char path[MAX_PATH];
  int dir_created; /* the default log's directory was made just now */
} g_log;

static const char *level_tag(lr_log_level_t level) {
  switch (level) {
  case LR_LOG_ERROR: return "error";
  case LR_LOG_WARN: return "warn";
  case LR_LOG_INFO: return "info";
  default: return "debug";
  }
}

static void win32_sink(lr_log_level_t level, const char *line, void *data) {
  SYSTEMTIME t;
  (void)data;
  GetLocalTime(&t);
  EnterCriticalSection(&g_log.lock);
  if (g_log.mode == LR_WIN32_LOG_CONSOLE) {
    fprintf(stderr, "%02u:%02u:%02u.%03u lorelayd %s: %s\n", t.wHour, t.wMinute, t.wSecond,
            t.wMilliseconds, level_tag(level), line);
    fflush(stderr);
  }
  if (g_log.file != NULL) {
    fprintf(g_log.file, "%04u-%02u-%02u %02u:%02u:%02u.%03u %s: %s\n", t.wYear, t.wMonth, t.wDay,
            t.wHour, t.wMinute, t.wSecond, t.wMilliseconds, level_tag(level), line);
    fflush(g_log.file);
  }
  if (g_log.event_source != NULL && level <= LR_LOG_INFO) {
    WORD type = level == LR_LOG_ERROR  ? EVENTLOG_ERROR_TYPE
                : level == LR_LOG_WARN ? EVENTLOG_WARNING_TYPE
                                       : EVENTLOG_INFORMATION_TYPE;
    const char *strings[1] = {line};
    ReportEventA(g_log.event_source, type, 0, LR_MSG_LINE, NULL, 1, 0, strings, NULL);
  }
  LeaveCriticalSection(&g_log.lock);
}

static FILE *open_log_file(const char *path) {
  WIN32_FILE_ATTRIBUTE_DATA st;
  if (GetFileAttributesExA(path, GetFileExInfoStandard, &st) && st.nFileSizeHigh == 0 &&
      st.nFileSizeLow > (DWORD)LR_LOG_FILE_MAX) {
    char old[MAX_PATH + 4];
    snprintf(old, sizeof old, "%s.1", path);
    MoveFileExA(path, old, MOVEFILE_REPLACE_EXISTING);
  }
  return fopen(path, "a");
}

/* %ProgramData%\lorelay\lorelayd.log, creating the directory for SYSTEM,
 * Administrators and the service's own account only (acl_win32.c); else
 * beside the executable (a service must log somewhere even on a locked-down
 * box, and say there why it will not start). A directory that someone else
 * owns or may write is not logged into: its log could be a link planted to
 * make the service write elsewhere. main.c refuses to start then. */
static FILE *open_default_log(char *path, size_t len) {
  char dir[MAX_PATH], why[600];
  FILE *f;
  if (lr_win32_data_dir_prepare(1, &g_log.dir_created, why, sizeof why) == 0) {
    lr_win32_programdata_path("lorelayd.log", path, len);
    if ((f = open_log_file(path)) != NULL)
      return f;
  }
  DWORD n = GetModuleFileNameA(NULL, dir, sizeof dir);
  if (n == 0 || n >= sizeof dir)
    return NULL;
  char *slash = strrchr(dir, '\\');
  if (slash != NULL)
    *slash = '\0';
  snprintf(path, len, "%s\\lorelayd.log", dir);
  return open_log_file(path);
}

void lr_win32_log_open(lr_win32_log_mode_t mode, const char *file) {
  lr_win32_log_close();
  lr_log_set_ident("lorelayd");
  g_log.mode = mode;
  g_log.path[0] = '\0';
  g_log.dir_created = 0;
  if (mode == LR_WIN32_LOG_CONSOLE && file == NULL) {
    lr_log_set_sink(NULL, NULL);
    return;
  }
  InitializeCriticalSection(&g_log.lock);
  g_log.open = 1;
  if (file != NULL) {
    snprintf(g_log.path, sizeof g_log.path, "%s", file);
    g_log.file = open_log_file(g_log.path);
  } else {
    g_log.file = open_default_log(g_log.path, sizeof g_log.path);
  }
  if (g_log.file == NULL) {
    if (mode == LR_WIN32_LOG_CONSOLE)
      fprintf(stderr, "lorelayd: cannot open log file %s\n", g_log.path);
    g_log.path[0] = '\0';
  }
  if (mode == LR_WIN32_LOG_SERVICE)
    g_log.event_source = RegisterEventSourceA(NULL, "lorelayd");
  lr_log_set_sink(win32_sink, NULL);
  if (g_log.dir_created) {
    char dir[MAX_PATH];
    LR_INFO("created %s for SYSTEM, Administrators and this service's account only",
            lr_win32_programdata_path("", dir, sizeof dir));
  }
}

void lr_win32_log_close(void) {
  if (!g_log.open)
    return;
  lr_log_set_sink(NULL, NULL);
  if (g_log.event_source != NULL)
    DeregisterEventSource(g_log.event_source);
  if (g_log.file != NULL)
    fclose(g_log.file);
  g_log.event_source = NULL;
  g_log.file = NULL;
  DeleteCriticalSection(&g_log.lock);
  g_log.open = 0;
}

const char *lr_win32_log_path(void) {
  return g_log.path;
}
