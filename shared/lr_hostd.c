/* The lorelayd process shell shared by every platform; see lr_hostd.h. */
#include "lr_hostd.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lr_file.h"
#include "lr_log.h"
#include "lr_opts.h"
#include "lr_relay.h"

const char *lr_hostd_common_usage(void) {
  return "  --guest ADDR        agent address: unix:PATH, tcp:HOST:PORT, vsock:CID:PORT,\n"
         "                      fc:UDS_PATH:PORT or hvsock:VMID:PORT; repeatable\n"
         "  --name NAME         guest name shown in status (default: the address); one\n"
         "                      guest only (name several in [guest NAME] sections)\n"
         "  --token-file FILE   shared key (at least 16 bytes); required for tcp:. Both\n"
         "                      sides prove they know it on every stream; it is never\n"
         "                      sent. For every --guest\n"
         "  -c, --config FILE   INI config: section [lorelay], and one [guest NAME]\n"
         "                      section per guest (netns or transport, tokenFile,\n"
         "                      hostAddress, any [lorelay] key as its own value)\n"
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
      {"--guest", NULL, LR_OPT_LIST, offsetof(lr_hostd_opts_t, guests)},
      {"--netns", NULL, LR_OPT_LIST, offsetof(lr_hostd_opts_t, netns)},
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
  for (size_t i = 0; i < o->netns.n; i++)
    if (!lr_config_guest_name_ok(o->netns.v[i])) {
      snprintf(err, errlen,
               "--netns '%.100s': a namespace name is 1-%d letters, digits, '.', '_' or '-'",
               o->netns.v[i], LR_GUEST_NAME_MAX - 1);
      return -1;
    }
  if (o->name && o->guests.n + o->netns.n > 1) {
    snprintf(err, errlen,
             "--name names one guest; with several, name them in [guest NAME] sections of "
             "the config file");
    return -1;
  }
  o->guest = o->guests.n ? o->guests.v[0] : NULL;
  return 0;
}

/* A key an attacker could guess: fewer than LR_KEY_MIN_DISTINCT distinct
 * byte values (16 x 'a', 16 NUL bytes, a hex digit run), or one shorter
 * pattern repeated over its whole length. What it was, for the error; NULL
 * when it is fine. */
static const char *weak_key(const uint8_t *k, size_t n, char *why, size_t whylen) {
  unsigned char seen[256] = {0};
  unsigned distinct = 0;
  for (size_t i = 0; i < n; i++)
    if (!seen[k[i]]++) distinct++;
  if (distinct < LR_KEY_MIN_DISTINCT) {
    snprintf(why, whylen, "it has only %u distinct byte values (at least %d are required)",
             distinct, LR_KEY_MIN_DISTINCT);
    return why;
  }
  for (size_t p = 1; p <= n / 2; p++) {
    size_t i = p;
    while (i < n && k[i] == k[i - p]) i++;
    if (i == n) {
      snprintf(why, whylen, "it is one %zu-byte pattern repeated", p);
      return why;
    }
  }
  return NULL;
}

int lr_token_load_file(const char *path, uint8_t *tok, size_t *len, char *err, size_t errlen) {
  char *text = NULL, why[96];
  size_t n = 0;
  uv_stat_t st;
  /* Regular files only, read without blocking and bounded (lr_file.h). */
  int rc = lr_file_read(path, "token file", LR_TOKEN_MAX + 64, &text, &n, &st, err, errlen);
  if (rc == UV_EFBIG) {
    snprintf(err, errlen, "token file %s: token longer than %d bytes", path, LR_TOKEN_MAX);
    return -1;
  }
  if (rc) return -1;
  if (lr_file_secret_check && lr_file_secret_check(path, &st, err, errlen) != 0) {
    free(text);
    return -1;
  }
  const uint8_t *buf = (const uint8_t *)text;
  size_t a = 0, b = n;
  while (a < b && (buf[a] == ' ' || buf[a] == '\t' || buf[a] == '\r' || buf[a] == '\n')) a++;
  while (b > a && (buf[b - 1] == ' ' || buf[b - 1] == '\t' || buf[b - 1] == '\r' ||
                   buf[b - 1] == '\n'))
    b--;
  rc = -1;
  if (b - a > LR_TOKEN_MAX) {
    snprintf(err, errlen, "token file %s: token longer than %d bytes", path, LR_TOKEN_MAX);
  } else if (b == a) {
    snprintf(err, errlen, "token file %s is empty", path);
  } else if (b - a < LR_KEY_MIN) {
    snprintf(err, errlen,
             "token file %s: the key is %zu bytes, at least %d are required "
             "(make one with: (umask 077; head -c 32 /dev/urandom | base64 > %s))",
             path, b - a, LR_KEY_MIN, path);
  } else if (weak_key(buf + a, b - a, why, sizeof why)) {
    snprintf(err, errlen,
             "token file %s: the key is weak: %s (make one with: "
             "(umask 077; head -c 32 /dev/urandom | base64 > %s))",
             path, why, path);
  } else {
    memcpy(tok, buf + a, b - a);
    *len = b - a;
    rc = 0;
  }
  free(text);
  return rc;
}

static lr_hostd_guest_t *guest_slot(lr_hostd_t *d) {
  lr_hostd_guest_t *n = realloc(d->guests, (d->nguests + 1) * sizeof *n);
  if (!n) return NULL;
  d->guests = n;
  n = &d->guests[d->nguests];
  memset(n, 0, sizeof *n);
  return n;
}

/* Starts the guest hg describes (its namespace first, for a netns guest)
 * and keeps it in d's list. 0, or -1 with a reason in err. */
static int guest_open(lr_hostd_t *d, lr_hostd_guest_t *hg, const lr_config_t *cfg,
                      lr_guest_resolve_fn resolve, void *rdata, int pass_fd, char *err,
                      size_t errlen) {
  const lr_hostd_opts_t *o = d->opts;
  if (hg->netns[0]) {
    if (!o->netns_open) {
      snprintf(err, errlen, "%s: network namespace guests (netns) need Linux", hg->name);
      return -1;
    }
    if (o->netns_open(o->netns_data, hg->netns, hg->transport, sizeof hg->transport, err,
                      errlen) != 0)
      return -1;
    pass_fd = cfg->one_hop; /* our own namespace: one hop per connection (oneHop) */
  }
  lr_guest_opts_t go = {hg->name, hg->transport, hg->token, hg->token_len,
                        resolve,  rdata,         pass_fd,   cfg};
  if (lr_host_add_guest(d->host, &go, err, errlen) != 0) {
    if (hg->netns[0]) o->netns_close(o->netns_data, hg->netns);
    return -1;
  }
  hg->g = lr_host_last_guest(d->host);
  d->nguests++;
  return 0;
}

/* The tokens of a file's guests, loaded before anything changes. */
static int load_file_tokens(const lr_config_file_t *f, lr_hostd_guest_t *out, const char *path) {
  char err[512];
  for (size_t i = 0; i < f->nguests; i++) {
    const lr_guest_conf_t *gc = &f->guests[i];
    memset(&out[i], 0, sizeof out[i]);
    snprintf(out[i].name, sizeof out[i].name, "%s", gc->name);
    snprintf(out[i].netns, sizeof out[i].netns, "%s", gc->netns);
    snprintf(out[i].transport, sizeof out[i].transport, "%s", gc->transport);
    out[i].from_file = 1;
    if (gc->token_file[0] &&
        lr_token_load_file(gc->token_file, out[i].token, &out[i].token_len, err, sizeof err)) {
      LR_ERROR("%s:%d: [guest %s]: %s", path, gc->line, gc->name, err);
      return -1;
    }
  }
  return 0;
}

int lr_hostd_start(lr_hostd_t *d, uv_loop_t *loop, const lr_pal_t *pal, const lr_hostd_opts_t *o) {
  char err[512], buf[512];
  lr_config_file_t f;
  lr_hostd_guest_t *fg = NULL;
  int rc = -1;
  memset(d, 0, sizeof *d);
  d->opts = o;
  const char *cfg_path = o->config;
  int missing_ok = 0;
  if (!cfg_path && pal->default_config_path) {
    cfg_path = pal->default_config_path(buf, sizeof buf);
    missing_ok = 1;
  }
  memset(&f, 0, sizeof f);
  lr_config_defaults(&f.base);
  if (cfg_path) {
    snprintf(d->config_path, sizeof d->config_path, "%s", cfg_path);
    d->config_missing_ok = missing_ok;
    if (lr_config_file_load(&f, cfg_path, missing_ok) != 0) {
      LR_ERROR("not starting: fix the configuration in %s", cfg_path);
      goto out;
    }
  }
  d->cfg = f.base;
  lr_log_set_level(o->log_level ? lr_log_level_parse(o->log_level) : d->cfg.log_level);
  lr_relay_set_zero_copy(d->cfg.zero_copy, d->cfg.zero_copy_after);
  if (o->token_file &&
      lr_token_load_file(o->token_file, d->token, &d->token_len, err, sizeof err) != 0) {
    LR_ERROR("%s", err);
    goto out;
  }
  size_t ncl = (o->guest ? 1 : 0) + (o->guests.n > 1 ? o->guests.n - 1 : 0) + o->netns.n;
  if (ncl + f.nguests == 0) {
    LR_ERROR("no guest given: use --guest ADDR or --netns NAME, or [guest NAME] sections in "
             "the config file (see --help)");
    rc = -2;
    goto out;
  }
  if (f.nguests && (!(fg = calloc(f.nguests, sizeof *fg)) ||
                    load_file_tokens(&f, fg, d->config_path) != 0))
    goto out;
  d->host = lr_host_new(loop, pal, &d->cfg);
  if (!d->host) {
    LR_ERROR("out of memory");
    goto out;
  }
  /* The command line's guests, then the file's, in the order given. */
  for (size_t i = 0; i < ncl + f.nguests; i++) {
    lr_hostd_guest_t *hg = guest_slot(d);
    const lr_config_t *cfg = &d->cfg;
    lr_guest_resolve_fn resolve = NULL;
    int pass_fd = 0;
    if (!hg) {
      LR_ERROR("out of memory");
      goto out;
    }
    if (i < o->netns.n) {
      snprintf(hg->netns, sizeof hg->netns, "%s", o->netns.v[i]);
      snprintf(hg->name, sizeof hg->name, "%s", o->name ? o->name : o->netns.v[i]);
    } else if (i < ncl) {
      size_t k = i - o->netns.n; /* 0: o->guest, the one a platform may resolve */
      const char *t = k == 0 && o->guest ? o->guest : o->guests.v[o->guest ? k : k + 1];
      snprintf(hg->transport, sizeof hg->transport, "%s", t);
      if (o->name) snprintf(hg->name, sizeof hg->name, "%s", o->name);
      if (k == 0 && o->guest) {
        resolve = o->resolve;
        pass_fd = o->pass_fd;
      }
    } else {
      *hg = fg[i - ncl];
      cfg = &f.guests[i - ncl].cfg;
    }
    if (!hg->from_file && d->token_len) {
      memcpy(hg->token, d->token, d->token_len);
      hg->token_len = d->token_len;
    }
    if (guest_open(d, hg, cfg, resolve, resolve ? o->resolve_data : NULL, pass_fd, err,
                   sizeof err) != 0) {
      LR_ERROR("%s", err);
      goto out;
    }
  }
  const char *sp = o->socket;
  if (!sp && pal->default_status_path) sp = pal->default_status_path(buf, sizeof buf);
  if (sp) {
    snprintf(d->status_path, sizeof d->status_path, "%s", sp);
    if (lr_host_serve_status(d->host, d->status_path, err, sizeof err) != 0) {
      LR_ERROR("%s", err);
      goto out;
    }
  }
  rc = 0;
out:
  free(fg);
  lr_config_file_free(&f);
  return rc;
}

int lr_hostd_reload(lr_hostd_t *d) {
  char err[512];
  lr_config_file_t f;
  const lr_hostd_opts_t *o = d->opts;
  if (!d->host) return -1;
  if (!d->config_path[0]) {
    LR_WARN("reload: lorelayd runs without a configuration file: nothing to read");
    return -1;
  }
  LR_INFO("reloading %s", d->config_path);
  lr_hostd_guest_t *fg = NULL;
  unsigned char *taken = NULL;
  int rc = -1;
  if (lr_config_file_load(&f, d->config_path, d->config_missing_ok) != 0) goto bad;
  if (f.nguests && (!(fg = calloc(f.nguests, sizeof *fg)) ||
                    !(taken = calloc(f.nguests, 1)) ||
                    load_file_tokens(&f, fg, d->config_path) != 0))
    goto bad;
  for (size_t i = 0; i < f.nguests; i++)
    for (size_t k = 0; k < d->nguests; k++)
      if (!d->guests[k].from_file && lr_host_find_guest(d->host, fg[i].name) == d->guests[k].g) {
        LR_ERROR("%s:%d: [guest %s]: a guest of the command line has that name", d->config_path,
                 f.guests[i].line, fg[i].name);
        goto bad;
      }

  d->cfg = f.base;
  if (!o->log_level) lr_log_set_level(d->cfg.log_level);
  /* Process-wide: connections that switch from now on follow it. */
  lr_relay_set_zero_copy(d->cfg.zero_copy, d->cfg.zero_copy_after);
  size_t keep = 0;
  for (size_t k = 0; k < d->nguests; k++) {
    lr_hostd_guest_t *hg = &d->guests[k];
    lr_guest_t *g = hg->g;
    if (!hg->from_file) {
      if (g) lr_host_configure_guest(g, &d->cfg);
      d->guests[keep++] = *hg;
      continue;
    }
    size_t i = 0;
    while (i < f.nguests && strcmp(fg[i].name, hg->name)) i++;
    int same = i < f.nguests && !strcmp(fg[i].netns, hg->netns) &&
               (hg->netns[0] || !strcmp(fg[i].transport, hg->transport)) &&
               fg[i].token_len == hg->token_len &&
               !memcmp(fg[i].token, hg->token, hg->token_len);
    if (same && g) {
      lr_host_configure_guest(g, &f.guests[i].cfg);
      taken[i] = 1;
      d->guests[keep++] = *hg;
      continue;
    }
    /* Gone, or now a different guest under the same name: stop it (and
     * start the new one below). */
    if (g) lr_host_remove_guest(g);
    if (hg->netns[0] && o->netns_close) o->netns_close(o->netns_data, hg->netns);
  }
  d->nguests = keep;
  for (size_t i = 0; i < f.nguests; i++) {
    if (taken[i]) continue;
    lr_hostd_guest_t *hg = guest_slot(d);
    if (!hg) {
      LR_ERROR("[guest %s]: out of memory", fg[i].name);
      continue;
    }
    *hg = fg[i];
    if (guest_open(d, hg, &f.guests[i].cfg, NULL, NULL, 0, err, sizeof err) != 0)
      LR_ERROR("%s:%d: [guest %s] not started: %s", d->config_path, f.guests[i].line,
               fg[i].name, err);
  }
  LR_INFO("%s reloaded: %zu guest%s", d->config_path, d->nguests, d->nguests == 1 ? "" : "s");
  rc = 0;
  goto out;
bad:
  LR_ERROR("%s was not applied (see above): the running configuration stays", d->config_path);
out:
  free(fg);
  free(taken);
  lr_config_file_free(&f);
  return rc;
}

void lr_hostd_stop(lr_hostd_t *d, void (*done)(void *), void *data) {
  if (!d->host) {
    if (done) done(data);
    return;
  }
  if (d->opts && d->opts->netns_close)
    for (size_t i = 0; i < d->nguests; i++)
      if (d->guests[i].netns[0]) d->opts->netns_close(d->opts->netns_data, d->guests[i].netns);
  lr_host_shutdown(d->host, done, data);
}
