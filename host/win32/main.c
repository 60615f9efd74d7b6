/* lorelayd.exe: the Windows host service, and the same program in a console.
 *
 * One binary, two ways in: when the Service Control Manager starts it,
 * StartServiceCtrlDispatcher succeeds and the work runs in ServiceMain with
 * honest status reports (START_PENDING, RUNNING, STOP_PENDING, STOPPED with
 * an exit code when start-up failed); started by hand, the dispatcher fails
 * with ERROR_FAILED_SERVICE_CONTROLLER_CONNECT and the same code runs in the
 * console. The dispatcher is only tried when the parent process is
 * services.exe: Wine's StartServiceCtrlDispatcher, called from a process the
 * SCM did not start, blocks for 10 s and can even attach to the control pipe
 * of another service that is starting, running us as that service. Both
 * stop the same way: the control arrives on another thread
 * (SCM handler or console Ctrl handler), which only wakes the loop with
 * uv_async_send; the loop thread then calls lr_hostd_stop. libuv handles are
 * never touched from a foreign thread. */
#include "lr_sbuf.h"
#include "lr_win32.h"

#include <tlhelp32.h>
#include <stdio.h>
#include <string.h>

#include "lr_hostd.h"
#include "lr_version.h"

#define LR_SERVICE_NAME L"lorelayd"
#define LR_STOP_GRACE_MS 10000

typedef struct {
  lr_hostd_opts_t opts;
  const char *vm_id;    /* --vm-id GUID|wsl */
  const char *log_file; /* --log-file F */
  char opt_err[256];    /* a Windows option's own error, reported after parsing */
  char guest[256];      /* the resolved guest address */
  const char *guest_arg; /* --guest as given (its port, with --vm-id wsl) */
  char wsl_desc[300];   /* what status shows until the WSL VM is found */
} lr_win32_args_t;

static lr_win32_args_t g_args;
static lr_hostd_t g_hostd;
static uv_async_t g_stop_async;
static uv_timer_t g_stop_timer;
static volatile LONG g_stop_ready; /* g_stop_async initialised and not closed */
/* SERVICE_CONTROL_PARAMCHANGE arrives on the SCM's thread; the reload runs
 * on the loop thread. Same life as g_stop_async. */
static uv_async_t g_reload_async;
static int g_stopping;
static int g_exit_code;

static SERVICE_STATUS_HANDLE g_svc;
static SERVICE_STATUS g_svc_status;
static CRITICAL_SECTION g_svc_lock;

static int extra_opt(const char *opt, const char *val, void *data) {
  lr_win32_args_t *a = data;
  if (strcmp(opt, "--vm-id") == 0 || strcmp(opt, "--log-file") == 0) {
    if (val == NULL || val[0] == '\0') {
      snprintf(a->opt_err, sizeof a->opt_err, "%s needs a value (see --help)", opt);
      return 0;
    }
    if (opt[2] == 'v')
      a->vm_id = val;
    else
      a->log_file = val;
    return 1;
  }
  if (strncmp(opt, "--vm-id=", 8) == 0) {
    a->vm_id = opt + 8;
    return 0;
  }
  if (strncmp(opt, "--log-file=", 11) == 0) {
    a->log_file = opt + 11;
    return 0;
  }
  return -1;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: lorelayd.exe (--guest ADDR... | --vm-id GUID|wsl | -c FILE) [options]\n"
          "Relays the listening TCP and UDP ports of guests (Hyper-V/WSL VMs over\n"
          "AF_HYPERV, or tcp: agents) to this host's loopback. Runs as a service when\n"
          "the Service Control Manager starts it (sc.exe start lorelayd), in the console\n"
          "otherwise. Apply an edited config file: sc.exe control lorelayd paramchange\n"
          "  --guest ADDR       agent address: hvsock:VMID:PORT (Hyper-V, WSL 2) or\n"
          "                     tcp:HOST:PORT (needs --token-file); repeatable\n"
          "  -c, --config FILE  INI config: section [lorelay], and one [guest NAME]\n"
          "                     section per guest (transport, tokenFile, hostAddress,\n"
          "                     any [lorelay] key as its own value)\n"
          "Windows options:\n"
          "  --vm-id GUID       guest is lorelay-agent in VM GUID: hvsock:GUID:%u, or the\n"
          "                     port of an hvsock: --guest\n"
          "  --vm-id wsl        find the running WSL 2 VM through the Host Compute Service\n"
          "  --log-file FILE    log to FILE too (service default:\n"
          "                     %%ProgramData%%\\lorelay\\lorelayd.log, and the Event Log)\n"
          "Default config: %%ProgramData%%\\lorelay\\lorelay.ini; status: \\\\.\\pipe\\lorelayd\n",
          LR_WIN32_DEFAULT_HVSOCK_PORT);
  fputs(lr_hostd_common_usage(), f);
}

/* ---- service status ----------------------------------------------------- */

static void svc_report(DWORD state, int exit_code, DWORD wait_hint) {
  static DWORD checkpoint = 1;
  if (g_svc == NULL)
    return;
  EnterCriticalSection(&g_svc_lock);
  g_svc_status.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
  g_svc_status.dwCurrentState = state;
  g_svc_status.dwControlsAccepted =
      state == SERVICE_RUNNING
          ? SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN | SERVICE_ACCEPT_PARAMCHANGE
          : 0;
  g_svc_status.dwWin32ExitCode = exit_code != 0 ? ERROR_SERVICE_SPECIFIC_ERROR : NO_ERROR;
  g_svc_status.dwServiceSpecificExitCode = (DWORD)exit_code;
  g_svc_status.dwWaitHint = wait_hint;
  g_svc_status.dwCheckPoint =
      (state == SERVICE_RUNNING || state == SERVICE_STOPPED) ? 0 : checkpoint++;
  SetServiceStatus(g_svc, &g_svc_status);
  LeaveCriticalSection(&g_svc_lock);
}

/* ---- stopping (any thread -> loop thread) ------------------------------- */

static void request_stop(void) {
  if (InterlockedCompareExchange(&g_stop_ready, 1, 1) == 1)
    uv_async_send(&g_stop_async);
}

static void on_stop_timeout(uv_timer_t *t) {
  LR_ERROR("shutdown did not finish within %d ms; exiting anyway", LR_STOP_GRACE_MS);
  uv_stop(t->loop);
}

static void on_hostd_stopped(void *data) {
  (void)data;
  InterlockedExchange(&g_stop_ready, 0);
  uv_close((uv_handle_t *)&g_stop_async, NULL);
  uv_close((uv_handle_t *)&g_reload_async, NULL);
  uv_close((uv_handle_t *)&g_stop_timer, NULL);
}

/* sc.exe control lorelayd paramchange: read the config file again. */
static void on_reload_async(uv_async_t *a) {
  (void)a;
  if (!g_stopping)
    lr_hostd_reload(&g_hostd);
}

static void on_stop_async(uv_async_t *a) {
  if (g_stopping)
    return;
  g_stopping = 1;
  LR_INFO("stopping");
  uv_timer_start(&g_stop_timer, on_stop_timeout, LR_STOP_GRACE_MS, 0);
  lr_hostd_stop(&g_hostd, on_hostd_stopped, NULL);
}

static BOOL WINAPI console_ctrl(DWORD type) {
  switch (type) {
  case CTRL_C_EVENT:
  case CTRL_BREAK_EVENT:
  case CTRL_CLOSE_EVENT:
  case CTRL_SHUTDOWN_EVENT:
    request_stop();
    return TRUE;
  default:
    return FALSE;
  }
}

static DWORD WINAPI svc_ctrl(DWORD ctrl, DWORD type, LPVOID event, LPVOID ctx) {
  (void)type;
  (void)event;
  (void)ctx;
  switch (ctrl) {
  case SERVICE_CONTROL_STOP:
  case SERVICE_CONTROL_SHUTDOWN:
    svc_report(SERVICE_STOP_PENDING, 0, LR_STOP_GRACE_MS + 2000);
    request_stop();
    return NO_ERROR;
  case SERVICE_CONTROL_PARAMCHANGE:
    if (InterlockedCompareExchange(&g_stop_ready, 1, 1) == 1)
      uv_async_send(&g_reload_async);
    return NO_ERROR;
  case SERVICE_CONTROL_INTERROGATE:
    return NO_ERROR;
  default:
    return ERROR_CALL_NOT_IMPLEMENTED;
  }
}

/* ---- the run, shared by console and service ----------------------------- */

/* --vm-id wsl: the WSL utility VM gets a new id at every WSL start, and a
 * service starting at boot may come up before WSL does. So the VM is looked
 * up again before every connect attempt (lr_guest_resolve_fn), and lorelayd
 * follows WSL across restarts instead of failing or going stale. The core
 * runs this on a libuv worker thread, because the HCS query may block for
 * seconds; it only reads g_args, which is set before the loop starts. */
static int resolve_wsl(void *data, lr_taddr_t *out, char *err, size_t errlen) {
  lr_guid_t vmid;
  char addr[256];
  (void)data;
  if (lr_win32_find_wsl_vm(&vmid, err, errlen) != 0) return -1;
  if (lr_win32_guest_address(g_args.guest_arg, &vmid, addr, sizeof addr, err, errlen) != 0)
    return -1;
  return lr_taddr_parse(addr, out, err, errlen);
}

/* --guest/--vm-id to the address lr_hostd_start connects to. */
static int resolve_guest(void) {
  char err[512];
  lr_guid_t vmid;
  const lr_guid_t *v = NULL;
  g_args.guest_arg = g_args.opts.guest;
  if (g_args.opts.guest == NULL && g_args.vm_id == NULL)
    return 0; /* guests from the config file's [guest NAME] sections */
  if (g_args.vm_id != NULL) {
    if (lr_streq_nocase(g_args.vm_id, "wsl")) {
      lr_guid_t zero;
      memset(&zero, 0, sizeof zero);
      /* Check --guest now, so a bad flag fails at start, not at each retry. */
      if (lr_win32_guest_address(g_args.guest_arg, &zero, g_args.guest, sizeof g_args.guest, err,
                                 sizeof err) != 0) {
        LR_ERROR("%s", err);
        return -1;
      }
      lr_taddr_t a;
      lr_taddr_parse(g_args.guest, &a, err, sizeof err);
      snprintf(g_args.wsl_desc, sizeof g_args.wsl_desc, "hvsock:wsl:%u", a.port);
      g_args.opts.guest = g_args.wsl_desc;
      g_args.opts.resolve = resolve_wsl;
      if (!g_args.opts.name) g_args.opts.name = "wsl";
      return 0;
    }
    if (lr_guid_parse(g_args.vm_id, &vmid) != 0) {
      LR_ERROR("--vm-id: '%s' is not a GUID (XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX) or 'wsl'",
               g_args.vm_id);
      return -1;
    }
    v = &vmid;
  }
  if (lr_win32_guest_address(g_args.opts.guest, v, g_args.guest, sizeof g_args.guest, err,
                             sizeof err) != 0) {
    LR_ERROR("%s", err);
    return -1;
  }
  g_args.opts.guest = g_args.guest;
  return 0;
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* %ProgramData%\lorelay holds the config lorelayd obeys and the service's
 * log. Any local user may create folders in ProgramData, so a directory
 * that is there already proves nothing: before reading or writing in it,
 * lorelayd checks that SYSTEM, Administrators or its own account own it and
 * that no one else may write it (acl_win32.c). The service creates it when
 * it is missing (with that DACL); a console run only checks it, and only
 * when it reads the default config from it. */
static int check_data_dir(int as_service) {
  char why[600], dir[MAX_PATH];
  int uses = g_args.opts.config == NULL || (as_service && g_args.log_file == NULL);
  if (!uses)
    return 0;
  if (lr_win32_data_dir_prepare(as_service, NULL, why, sizeof why) == 0)
    return 0;
  lr_win32_programdata_path("", dir, sizeof dir);
  dir[strlen(dir) - 1] = '\0'; /* its trailing backslash */
  LR_ERROR("not starting: %s. Run install.cmd again as an administrator (it resets the owner "
           "and ACL of %s), or check who made it, or give -c FILE and --log-file FILE elsewhere",
           why, dir);
  return -1;
}

static int run(int as_service) {
  uv_loop_t loop;
  int r;

  g_exit_code = 0;
  if (check_data_dir(as_service) != 0)
    return 1;
  r = uv_loop_init(&loop);
  if (r != 0) {
    LR_ERROR("uv_loop_init: %s", uv_strerror(r));
    return 1;
  }
  uv_async_init(&loop, &g_stop_async, on_stop_async);
  uv_async_init(&loop, &g_reload_async, on_reload_async);
  uv_timer_init(&loop, &g_stop_timer);
  uv_unref((uv_handle_t *)&g_stop_timer);
  InterlockedExchange(&g_stop_ready, 1);

  int rc = resolve_guest() != 0 ? -1 : lr_hostd_start(&g_hostd, &loop, lr_pal_host(), &g_args.opts);
  if (rc != 0) {
    g_exit_code = rc == -2 ? 2 : 1; /* 2: a bad config file, a usage error */
    InterlockedExchange(&g_stop_ready, 0);
    uv_walk(&loop, close_any, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return g_exit_code;
  }
  if (as_service)
    svc_report(SERVICE_RUNNING, 0, 0);
  else
    SetConsoleCtrlHandler(console_ctrl, TRUE);
  LR_INFO("lorelayd %s running %s, %zu guest%s, status %s", LR_VERSION_STRING,
          as_service ? "as a service" : "in the console", g_hostd.nguests,
          g_hostd.nguests == 1 ? "" : "s", g_hostd.status_path);

  uv_run(&loop, UV_RUN_DEFAULT);
  if (!g_stopping) {
    LR_ERROR("event loop ended unexpectedly");
    g_exit_code = 1;
  }
  uv_walk(&loop, close_any, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    LR_DEBUG("loop closed with handles still open");
  free(g_hostd.guests);
  LR_INFO("stopped");
  return g_exit_code;
}

static void WINAPI svc_main(DWORD argc, LPWSTR *argv) {
  int rc;
  g_svc = RegisterServiceCtrlHandlerExW(argc > 0 ? argv[0] : LR_SERVICE_NAME, svc_ctrl, NULL);
  if (g_svc == NULL)
    return;
  svc_report(SERVICE_START_PENDING, 0, 30000);
  lr_win32_log_open(LR_WIN32_LOG_SERVICE, g_args.log_file);
  rc = run(1);
  if (rc != 0)
    LR_ERROR("service stopped with exit code %d; see the log above", rc);
  lr_win32_log_close();
  svc_report(SERVICE_STOPPED, rc, 0);
}

/* Services are started by services.exe; anything else is a console run. */
static int parent_is_scm(void) {
  PROCESSENTRY32W pe;
  DWORD self = GetCurrentProcessId(), parent = 0;
  int found = 0;
  HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
  if (snap == INVALID_HANDLE_VALUE)
    return 1; /* cannot tell: let the dispatcher decide */
  pe.dwSize = sizeof pe;
  for (BOOL ok = Process32FirstW(snap, &pe); ok; ok = Process32NextW(snap, &pe)) {
    if (pe.th32ProcessID == self) {
      parent = pe.th32ParentProcessID;
      break;
    }
  }
  pe.dwSize = sizeof pe;
  for (BOOL ok = Process32FirstW(snap, &pe); parent != 0 && ok; ok = Process32NextW(snap, &pe)) {
    if (pe.th32ProcessID == parent) {
      found = _wcsicmp(pe.szExeFile, L"services.exe") == 0;
      break;
    }
  }
  CloseHandle(snap);
  return found;
}

int main(int argc, char **argv) {
  char err[512];
  SERVICE_TABLE_ENTRYW table[] = {{LR_SERVICE_NAME, svc_main}, {NULL, NULL}};

  if (lr_hostd_parse_args(argc, argv, &g_args.opts, extra_opt, &g_args, err, sizeof err) != 0 ||
      g_args.opt_err[0] != '\0') {
    fprintf(stderr, "lorelayd: %s\n", g_args.opt_err[0] != '\0' ? g_args.opt_err : err);
    return 2;
  }
  if (g_args.opts.help) {
    usage(stdout);
    return 0;
  }
  if (g_args.opts.version) {
    printf("lorelayd %s (win32)\n", LR_VERSION_STRING);
    return 0;
  }
  /* What Windows cannot reach is a usage error, at once: a service that
   * retried it forever would look like it is waiting for a guest. */
  if (g_args.opts.netns.n > 0) {
    fprintf(stderr, "lorelayd: --netns %s: network namespace guests need lorelayd on Linux; on "
                    "Windows a guest is hvsock:VMID:PORT (or --vm-id) or tcp:HOST:PORT\n",
            g_args.opts.netns.v[0]);
    return 2;
  }
  for (size_t i = 0; i < g_args.opts.guests.n; i++)
    if (lr_win32_transport_check(g_args.opts.guests.v[i], err, sizeof err) != 0) {
      fprintf(stderr, "lorelayd: --guest %s\n", err);
      return 2;
    }
  g_args.opts.transport_check = lr_win32_transport_check;

  InitializeCriticalSection(&g_svc_lock);
  if (parent_is_scm()) {
    if (StartServiceCtrlDispatcherW(table))
      return 0; /* the service ran and reported its own exit code to the SCM */
    if (GetLastError() != ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) {
      fprintf(stderr, "lorelayd: StartServiceCtrlDispatcher failed: error %lu\n", GetLastError());
      return 1;
    }
  }
  lr_win32_log_open(LR_WIN32_LOG_CONSOLE, g_args.log_file);
  int rc = run(0);
  lr_win32_log_close();
  return rc;
}
