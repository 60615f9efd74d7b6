/* lorelay-agent: the guest-side process.
 *
 * Only the process shell lives here: flags, config, token, the transport
 * listener (bound here, or inherited from lorelay-init through
 * LORELAY_LISTEN_FD so that restarts never drop queued connections) and
 * signal handling. Everything the agent does on the wire is in agent*.c.
 *
 * Exit status: 0 after SIGINT/SIGTERM, 2 for a usage or configuration error
 * (lorelay-init does not restart those: a restart cannot fix them), 1 for a
 * failure at run time. */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "lr_addr.h"
#include "lr_agent.h"
#include "lr_config.h"
#include "lr_glisten.h"
#include "lr_file.h"
#include "lr_token.h"
#include "lr_log.h"
#include "lr_opts.h"
#include "lr_privdrop.h"
#include "lr_relay.h"
#include "lr_guest_pal.h"
#include "lr_linux.h"
#include "lr_version.h"

static const char usage_text[] =
    "Usage: lorelay-agent --listen ADDR [options]\n"
    "\n"
    "Guest side of lorelay: reports this system's listening TCP and bound UDP\n"
    "sockets to the lorelay host (lorelayd) and connects the host's relayed\n"
    "connections and datagrams to the real servers on this system's loopback.\n"
    "\n"
    "Options:\n"
    "  --listen ADDR       transport address to serve on:\n"
    "                        unix:PATH        Unix socket (a stale socket file is replaced)\n"
    "                        vsock:CID:PORT   AF_VSOCK; vsock:any:PORT for any CID\n"
    "                        tcp:HOST:PORT    TCP; requires --token-file\n"
    "                      Ignored when LORELAY_LISTEN_FD names an inherited\n"
    "                      listening socket (lorelay-init passes one).\n"
    "  --token-file F      shared key, at least 16 bytes (required for tcp:): every\n"
    "                      stream starts with a challenge the host must answer\n"
    "                      with it; the key itself never crosses the wire\n"
    "  --allow-uid UID     unix: also accept streams from this uid (repeatable);\n"
    "                      root and the agent's own uid always may. The socket is\n"
    "                      created mode 0600: grant the uid access too (setfacl)\n"
    "  -c, --config FILE   INI file, section [lorelay]: scanIntervalMs, ebpf,\n"
    "                      ebpfScanIntervalMs, logLevel\n"
    "  --name NAME         guest name sent to the host (default: the host name)\n"
    "  --log-level LEVEL   error, warn, info or debug (overrides the config)\n"
    "  -h, --help          show this help and exit\n"
    "  -V, --version       print the version and exit\n"
    "\n"
    "Environment:\n"
    "  LORELAY_LISTEN_FD   an already-listening socket to serve on instead of binding\n";

typedef struct {
  const char *listen;
  const char *token_file;
  const char *config;
  const char *name;
  const char *log_level;
  int help, version;
  uint32_t allow_uids[LR_AGENT_MAX_ALLOW_UIDS];
  size_t n_allow_uids;
  const char *bad_uid; /* the first --allow-uid value that is not a uid */
} agent_opts_t;

/* --allow-uid UID / --allow-uid=UID, repeatable (lr_opt_extra_fn). */
static int extra_opt(const char *opt, const char *val, void *data) {
  agent_opts_t *o = data;
  const char *v;
  int used;
  if (strcmp(opt, "--allow-uid") == 0) {
    if (!val) return 1; /* the parser reports the missing value */
    v = val;
    used = 1;
  } else if (strncmp(opt, "--allow-uid=", 12) == 0) {
    v = opt + 12;
    used = 0;
  } else {
    return -1;
  }
  char *end;
  errno = 0;
  unsigned long u = strtoul(v, &end, 10);
  if (o->bad_uid) return used;
  if (!*v || *end || errno || u > 0xFFFFFFFEul || v[0] == '-' ||
      o->n_allow_uids == LR_AGENT_MAX_ALLOW_UIDS)
    o->bad_uid = v;
  else
    o->allow_uids[o->n_allow_uids++] = (uint32_t)u;
  return used;
}

/* Returns 0, or -1 after printing a one-line error. */
static int parse_args(int argc, char **argv, agent_opts_t *o) {
  static const lr_opt_t table[] = {
      {"--help", "-h", LR_OPT_FLAG, offsetof(agent_opts_t, help)},
      {"--version", "-V", LR_OPT_FLAG, offsetof(agent_opts_t, version)},
      {"--listen", NULL, LR_OPT_STRING, offsetof(agent_opts_t, listen)},
      {"--token-file", NULL, LR_OPT_STRING, offsetof(agent_opts_t, token_file)},
      {"--config", "-c", LR_OPT_STRING, offsetof(agent_opts_t, config)},
      {"--name", NULL, LR_OPT_STRING, offsetof(agent_opts_t, name)},
      {"--log-level", NULL, LR_OPT_STRING, offsetof(agent_opts_t, log_level)},
  };
  char err[256];
  memset(o, 0, sizeof *o);
  if (lr_opts_parse(argc, argv, table, sizeof table / sizeof table[0], o, extra_opt, o, err,
                    sizeof err) != 0) {
    fprintf(stderr, "lorelay-agent: %s\n", err);
    return -1;
  }
  if (o->bad_uid) {
    fprintf(stderr, "lorelay-agent: --allow-uid '%s': not a uid, or more than %d given\n",
            o->bad_uid, LR_AGENT_MAX_ALLOW_UIDS);
    return -1;
  }
  return 0;
}

/* The inherited listener, if LORELAY_LISTEN_FD is set: fd, -1 if unset,
 * -2 after an error line. */
static int inherited_fd(int *family) {
  const char *s = getenv("LORELAY_LISTEN_FD");
  if (!s || !*s) return -1;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < 0 || v > 65535) {
    LR_ERROR("LORELAY_LISTEN_FD='%s' is not a file descriptor number", s);
    return -2;
  }
  char err[256];
  if (lr_guest_listen_check((int)v, family, err, sizeof err) != 0) {
    LR_ERROR("LORELAY_LISTEN_FD: %s", err);
    return -2;
  }
  /* Not for anything this process might start. */
  unsetenv("LORELAY_LISTEN_FD");
  return (int)v;
}

static lr_agent_t *g_agent;
static uv_signal_t g_sigint, g_sigterm;

static void on_signal(uv_signal_t *h, int signum) {
  LR_INFO("received %s; shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
  lr_agent_shutdown(g_agent);
  uv_close((uv_handle_t *)&g_sigint, NULL);
  uv_close((uv_handle_t *)&g_sigterm, NULL);
  (void)h;
}

int main(int argc, char **argv) {
  agent_opts_t o;
  lr_log_set_ident("lorelay-agent");
  lr_log_set_journal(lr_linux_stderr_is_journal(), 1);
  lr_file_secret_check = lr_linux_secret_check; /* key files: owner and mode */
  if (parse_args(argc, argv, &o) != 0) return 2;
  if (o.help) {
    fputs(usage_text, stdout);
    return 0;
  }
  if (o.version) {
    printf("lorelay-agent %s (protocol %d)\n", LR_VERSION_STRING, LR_PROTO_VERSION);
    return 0;
  }

  lr_config_t cfg;
  lr_config_defaults(&cfg);
  if (o.config && lr_config_load_file(&cfg, o.config, 0) != 0) {
    LR_ERROR("configuration %s is not usable; not starting", o.config);
    return 2;
  }
  lr_log_set_level((lr_log_level_t)cfg.log_level);
  lr_relay_set_zero_copy(cfg.zero_copy, cfg.zero_copy_after);
  if (o.log_level) {
    int lvl = lr_log_level_parse(o.log_level);
    if (lvl < 0) {
      LR_ERROR("--log-level '%s' is not one of error, warn, info, debug", o.log_level);
      return 2;
    }
    lr_log_set_level((lr_log_level_t)lvl);
  }

  char err[512];
  uint8_t token[LR_TOKEN_MAX];
  size_t token_len = 0;
  if (o.token_file && lr_token_load_file(o.token_file, token, &token_len, err, sizeof err) != 0) {
    LR_ERROR("%s", err);
    return 2;
  }

  lr_taddr_t ta;
  memset(&ta, 0, sizeof ta);
  if (o.listen && lr_taddr_parse(o.listen, &ta, err, sizeof err) != 0) {
    LR_ERROR("--listen: %s", err);
    return 2;
  }
  int family = 0;
  int fd = inherited_fd(&family);
  if (fd == -2) return 2;
  int bound_here = 0;
  if (fd < 0) {
    if (!o.listen) {
      LR_ERROR("missing --listen ADDR (see --help)");
      return 2;
    }
    if (ta.kind == LR_TADDR_TCP && token_len == 0) {
      LR_ERROR("--listen %s: the tcp transport requires --token-file", o.listen);
      return 2;
    }
    fd = lr_guest_listen(&ta, err, sizeof err);
    if (fd < 0) {
      LR_ERROR("%s", err);
      /* A host-side address kind is a usage error, not a transient one. */
      return ta.kind == LR_TADDR_FC || ta.kind == LR_TADDR_HVSOCK ? 2 : 1;
    }
    bound_here = 1;
  } else if ((family == AF_INET || family == AF_INET6) && token_len == 0) {
    LR_ERROR("the inherited listener is a TCP socket: the tcp transport requires --token-file");
    return 2;
  }

  char name[128];
  if (o.name) {
    snprintf(name, sizeof name, "%s", o.name);
  } else if (gethostname(name, sizeof name) != 0) {
    snprintf(name, sizeof name, "guest");
  }
  name[sizeof name - 1] = 0;

  /* A host that vanishes mid-write must be an error return, not a kill. */
  signal(SIGPIPE, SIG_IGN);
  lr_linux_raise_nofile(); /* two fds per relayed connection */

  uv_loop_t *loop = uv_default_loop();
  lr_agent_opts_t ao;
  memset(&ao, 0, sizeof ao);
  ao.name = name;
  ao.token = token_len ? token : NULL;
  ao.token_len = token_len;
  ao.scan_interval_ms = cfg.scan_interval_ms;
  ao.allow_uids = o.allow_uids;
  ao.n_allow_uids = o.n_allow_uids;
  ao.ebpf = cfg.ebpf;
  ao.ebpf_scan_interval_ms = cfg.ebpf_scan_interval_ms;
  ao.no_udp = !cfg.udp;
  ao.udp_scan_interval_ms = cfg.udp_scan_interval_ms;
  g_agent = lr_agent_new(loop, &ao, err, sizeof err);
  if (!g_agent) {
    LR_ERROR("%s", err);
    return 1;
  }
  if (lr_agent_serve_fd(g_agent, fd, err, sizeof err) != 0) {
    LR_ERROR("%s", err);
    return 1;
  }
  /* Set up (eBPF loaded and attached, the transport listening): from here
   * the agent keeps only what it still uses (lr_privdrop.h). */
  char kept[160];
  if (lr_privdrop_agent(kept, sizeof kept, err, sizeof err) != 0) {
    LR_ERROR("dropping privileges: %s", err);
    return 1;
  }
  LR_INFO("privileges: %s", kept);
  uv_signal_init(loop, &g_sigint);
  uv_signal_init(loop, &g_sigterm);
  uv_signal_start(&g_sigint, on_signal, SIGINT);
  uv_signal_start(&g_sigterm, on_signal, SIGTERM);

  char astr[256];
  LR_INFO("lorelay-agent %s '%s' serving on %s%s", LR_VERSION_STRING, name,
          o.listen ? lr_taddr_format(&ta, astr, sizeof astr) : "an inherited socket",
          bound_here ? "" : " (inherited)");

  uv_run(loop, UV_RUN_DEFAULT);
  lr_agent_free(g_agent);
  if (bound_here && ta.kind == LR_TADDR_UNIX) unlink(ta.path);
  int rc = uv_loop_close(loop);
  if (rc != 0) LR_DEBUG("loop close: %s", uv_strerror(rc));
  LR_INFO("stopped");
  return 0;
}
