/* The lorelayd process shell shared by host/posix and host/win32: option
 * parsing for the flags every platform has, config and token loading, and
 * bringing up an lr_host_t with its guests: those of the command line
 * (--guest, --netns, both repeatable) and the config file's [guest NAME]
 * sections. A reload (SIGHUP, SERVICE_CONTROL_PARAMCHANGE) reads the file
 * again and applies the difference; a bad file changes nothing. Platform mains add their own flags (--netns on
 * Linux, --vm-id and the service dispatcher on Windows) through the extra
 * option callback, so no option is parsed in two places. */
#ifndef LR_HOSTD_H
#define LR_HOSTD_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "lr_config.h"
#include "lr_host.h"
#include "lr_opts.h"
#include "lr_pal.h"
#include "lr_proto.h"

/* A namespace guest (--netns NAME, netns = NAME): the platform creates or
 * finds the namespace, starts lorelay-init in it and gives back the
 * agent's transport address. 0, or -1 with a one-line reason. */
typedef int (*lr_hostd_netns_open_fn)(void *data, const char *netns, char *addr, size_t addrlen,
                                      char *err, size_t errlen);
/* The guest is gone (a reload removed it, or the daemon stops): stop its
 * lorelay-init. */
typedef void (*lr_hostd_netns_close_fn)(void *data, const char *netns);

typedef struct {
  const char *guest;       /* the first --guest ADDR (a platform may rewrite it) */
  lr_opt_list_t guests;    /* every --guest, in order */
  lr_opt_list_t netns;     /* every --netns */
  const char *name;        /* --name NAME (status display name) */
  const char *token_file;  /* --token-file F */
  const char *config;      /* -c FILE / --config FILE; NULL: platform default, missing ok */
  const char *socket;      /* --socket PATH: status endpoint; NULL: platform default */
  const char *log_level;   /* --log-level LEVEL: overrides the config */
  int help, version;
  /* Set by a platform main whose guest address is found at run time; then
   * `guest` is only a description (see lr_guest_resolve_fn). */
  lr_guest_resolve_fn resolve;
  void *resolve_data;
  int pass_fd; /* see lr_guest_opts_t.pass_fd; for the first --guest */
  /* Namespace guests; NULL where the platform has none (then refused). */
  lr_hostd_netns_open_fn netns_open;
  lr_hostd_netns_close_fn netns_close;
  void *netns_data;
} lr_hostd_opts_t;

/* Platform flags the common table does not know: see lr_opt_extra_fn. */
typedef lr_opt_extra_fn lr_hostd_extra_fn;

/* Parses argv. 0, or -1 with a one-line reason in err (unknown flag,
 * missing value, stray argument). */
int lr_hostd_parse_args(int argc, char **argv, lr_hostd_opts_t *o, lr_hostd_extra_fn extra,
                        void *data, char *err, size_t errlen);

/* Usage lines for the common flags, to print after the platform's own. */
const char *lr_hostd_common_usage(void);

/* Reads a token file (the shared key): a regular file (lr_file_read),
 * accepted by lr_file_secret_check when the platform set one (owner and
 * mode), surrounding whitespace trimmed, LR_KEY_MIN..LR_TOKEN_MAX bytes, at
 * least LR_KEY_MIN_DISTINCT distinct byte values and not one pattern
 * repeated. 0, or -1 with a one-line reason and the fix in err. */
int lr_token_load_file(const char *path, uint8_t *tok, size_t *len, char *err, size_t errlen);

/* One guest the daemon runs, and where it came from. */
typedef struct {
  char name[300];
  char netns[LR_GUEST_NAME_MAX];
  char transport[420];
  uint8_t token[LR_TOKEN_MAX];
  size_t token_len;
  int from_file; /* a [guest NAME] section: a reload may change or remove it */
  lr_guest_t *g; /* owned by the host */
} lr_hostd_guest_t;

typedef struct {
  lr_config_t cfg; /* [lorelay]: the host's, and every command-line guest's */
  uint8_t token[LR_TOKEN_MAX];
  size_t token_len;
  lr_host_t *host;
  char status_path[512];
  char config_path[512]; /* what a reload reads; empty: none */
  int config_missing_ok;
  const lr_hostd_opts_t *opts;
  lr_hostd_guest_t *guests;
  size_t nguests;
} lr_hostd_t;

/* Loads config (o->config or pal default), applies the log level, loads the
 * token, creates the host, adds the guests (--guest, --netns, [guest NAME]
 * sections: at least one) and serves status. o must outlive d. 0, or -1
 * after logging one line saying what was wrong (-2 when no guest was
 * given at all: a usage error, exit status 2). */
int lr_hostd_start(lr_hostd_t *d, uv_loop_t *loop, const lr_pal_t *pal, const lr_hostd_opts_t *o);
/* Reads the config file again and applies it: guests added, removed or
 * changed, every guest's forwarding re-evaluated. A file with any error
 * changes nothing (the errors were logged with their lines). 0 or -1. */
int lr_hostd_reload(lr_hostd_t *d);
/* Graceful stop: closes everything, then done(data). */
void lr_hostd_stop(lr_hostd_t *d, void (*done)(void *), void *data);

#endif
