/* The lorelayd process shell shared by every platform; see lr_hostd.h. */
#include "lr_hostd.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_log.h"
#include "lr_opts.h"
#include "lr_relay.h"

const char *lr_hostd_common_usage(void) {
  return "  --guest ADDR        agent address: unix:PATH, tcp:HOST:PORT, vsock:CID:PORT,\n"
         "                      fc:UDS_PATH:PORT or hvsock:VMID:PORT\n"
         "  --name NAME         guest name shown in status (default: the address)\n"
         "  --token-file FILE   shared key (at least 16 bytes); required for tcp:. Both\n"
         "                      sides prove they know it on every stream; it is never\n"
         "                      sent\n"
         "  -c, --config FILE   INI config, section [lorelay]\n"
         "  --socket PATH       status endpoint (default: platform path)\n"
         "  --log-level LEVEL   error, warn, info or debug (overrides logLevel)\n"
         "  -h, --help          this text\n"
         "  -V, --version       print the version\n";
}

int lr_hostd_parse_args(int argc, char **argv, lr_hostd_opts_t *o, lr_hostd_extra_fn extra,
                        void *data, char *err, size_t errlen) {
  static const lr_opt_t table[] = {
      {"--help", "-h", LR_OPT_FLAG, offsetof(lr_hostd_opts_t, help)},
      {"--version", "-V", LR_OPT_FLAG, offsetof(lr_hostd_opts_t, version)},
      {"--guest", NULL, LR_OPT_STRING, offsetof(lr_hostd_opts_t, guest)},
      {"--name", NULL, LR_OPT_STRING, offsetof(lr_hostd_opts_t, name)},
      {"--token-file", NULL, LR_OPT_STRING, offsetof(lr_hostd_opts_t, token_file)},
      {"--config", "-c", LR_OPT_STRING, offsetof(lr_hostd_opts_t, config)},
      {"--socket", NULL, LR_OPT_STRING, offsetof(lr_hostd_opts_t, socket)},
      {"--log-level", NULL, LR_OPT_STRING, offsetof(lr_hostd_opts_t, log_level)},
  };
  memset(o, 0, sizeof *o);
  if (lr_opts_parse(argc, argv, table, sizeof table / sizeof table[0], o, extra, data, err,
                    errlen) != 0)
    return -1;
  if (o->log_level && lr_log_level_parse(o->log_level) < 0) {
    snprintf(err, errlen, "--log-level '%s': expected error, warn, info or debug", o->log_level);
    return -1;
  }
  return 0;
}

int lr_token_load_file(const char *path, uint8_t *tok, size_t *len, char *err, size_t errlen) {
  uint8_t buf[LR_TOKEN_MAX + 64];
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "token file %s: %s", path, strerror(errno));
    return -1;
  }
  size_t n = fread(buf, 1, sizeof buf, f);
  int too_long = n == sizeof buf || (n > 0 && !feof(f) && fgetc(f) != EOF);
  fclose(f);
  size_t a = 0, b = n;
  while (a < b && (buf[a] == ' ' || buf[a] == '\t' || buf[a] == '\r' || buf[a] == '\n')) a++;
  while (b > a && (buf[b - 1] == ' ' || buf[b - 1] == '\t' || buf[b - 1] == '\r' ||
                   buf[b - 1] == '\n'))
    b--;
  if (too_long || b - a > LR_TOKEN_MAX) {
    snprintf(err, errlen, "token file %s: token longer than %d bytes", path, LR_TOKEN_MAX);
    return -1;
  }
  if (b == a) {
    snprintf(err, errlen, "token file %s is empty", path);
    return -1;
  }
  if (b - a < LR_KEY_MIN) {
    snprintf(err, errlen,
             "token file %s: the key is %zu bytes, at least %d are required "
             "(make one with: head -c 32 /dev/urandom | base64 > %s)",
             path, b - a, LR_KEY_MIN, path);
    return -1;
  }
  memcpy(tok, buf + a, b - a);
  *len = b - a;
  return 0;
}

int lr_hostd_start(lr_hostd_t *d, uv_loop_t *loop, const lr_pal_t *pal, const lr_hostd_opts_t *o) {
  char err[512], buf[512];
  memset(d, 0, sizeof *d);
  lr_config_defaults(&d->cfg);
  const char *cfg_path = o->config;
  int missing_ok = 0;
  if (!cfg_path && pal->default_config_path) {
    cfg_path = pal->default_config_path(buf, sizeof buf);
    missing_ok = 1;
  }
  if (cfg_path && lr_config_load_file(&d->cfg, cfg_path, missing_ok) != 0) {
    LR_ERROR("not starting: fix the configuration in %s", cfg_path);
    return -1;
  }
  lr_log_set_level(o->log_level ? lr_log_level_parse(o->log_level) : d->cfg.log_level);
  lr_relay_set_zero_copy(d->cfg.zero_copy, d->cfg.zero_copy_after);
  if (o->token_file &&
      lr_token_load_file(o->token_file, d->token, &d->token_len, err, sizeof err) != 0) {
    LR_ERROR("%s", err);
    return -1;
  }
  if (!o->guest) {
    LR_ERROR("no guest given: use --guest ADDR (see --help)");
    return -1;
  }
  d->host = lr_host_new(loop, pal, &d->cfg);
  if (!d->host) {
    LR_ERROR("out of memory");
    return -1;
  }
  lr_guest_opts_t go = {o->name,   o->guest,          d->token,   d->token_len,
                        o->resolve, o->resolve_data, o->pass_fd && d->cfg.one_hop};
  if (lr_host_add_guest(d->host, &go, err, sizeof err) != 0) {
    LR_ERROR("%s", err);
    return -1;
  }
  const char *sp = o->socket;
  if (!sp && pal->default_status_path) sp = pal->default_status_path(buf, sizeof buf);
  if (sp) {
    snprintf(d->status_path, sizeof d->status_path, "%s", sp);
    if (lr_host_serve_status(d->host, d->status_path, err, sizeof err) != 0) {
      LR_ERROR("%s", err);
      return -1;
    }
  }
  return 0;
}

void lr_hostd_stop(lr_hostd_t *d, void (*done)(void *), void *data) {
  if (!d->host) {
    if (done) done(data);
    return;
  }
  lr_host_shutdown(d->host, done, data);
}
