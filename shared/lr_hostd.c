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
  /* --guest and -c are the platform's to describe: each lists only the
   * transports (and guest keys) it has. */
  return "  --name NAME         guest name shown in status (default: the address); one\n"
         "                      guest only (name several in [guest NAME] sections)\n"
         "  --token-file FILE   shared key (at least 16 bytes); required for tcp:. Both\n"
         "                      sides prove they know it on every stream; it is never\n"
         "                      sent. For every --guest\n"
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
                      lr_guest_resolve_fn resolve, void *rdata, int ns_open, char *err,
                      size_t errlen) {
  const lr_hostd_opts_t *o = d->opts;
  const char *one_hop = NULL;
  /* An address the platform cannot reach fails here, not at every retry. */
  if (!hg->netns[0] && !resolve && o->transport_check &&
      o->transport_check(hg->transport, err, errlen) != 0)
    return -1;
  if (hg->netns[0]) {
    if (!o->netns_open) {
      snprintf(err, errlen, "%s: network namespace guests (netns) need Linux", hg->name);
      return -1;
    }
    if (!ns_open && o->netns_open(o->netns_data, hg->netns, hg->transport, sizeof hg->transport,
                                  err, errlen) != 0)
      return -1;
    /* Our own namespace: lorelayd can connect inside it itself (one hop,
     * per connection while oneHop is on; a reload may turn it either way). */
    one_hop = hg->netns;
  }
  lr_guest_opts_t go = {hg->name, hg->transport, hg->token, hg->token_len,
                        resolve,  rdata,         one_hop,   cfg};
  if (lr_host_add_guest(d->host, &go, err, errlen) != 0) {
    if (hg->netns[0]) o->netns_close(o->netns_data, hg->netns);
    return -1;
  }
  hg->g = lr_host_last_guest(d->host);
  return 0;
}

/* The tokens of a file's guests, loaded before anything changes. */
static int load_file_tokens(const lr_config_file_t *f, lr_hostd_guest_t *out, const char *path,
                            char *why, size_t whylen) {
  char err[400];
  for (size_t i = 0; i < f->nguests; i++) {
    const lr_guest_conf_t *gc = &f->guests[i];
    memset(&out[i], 0, sizeof out[i]);
    snprintf(out[i].name, sizeof out[i].name, "%s", gc->name);
    snprintf(out[i].netns, sizeof out[i].netns, "%s", gc->netns);
    snprintf(out[i].transport, sizeof out[i].transport, "%s", gc->transport);
    out[i].from_file = 1;
    if (gc->token_file[0] &&
        lr_token_load_file(gc->token_file, out[i].token, &out[i].token_len, err, sizeof err)) {
      snprintf(why, whylen, "%.200s:%d: [guest %.64s]: %.300s", path, gc->line, gc->name, err);
      LR_ERROR("%s", why);
      return -1;
    }
  }
  return 0;
}

static int64_t unix_now(void) {
  uv_timeval64_t tv;
  return uv_gettimeofday(&tv) == 0 ? tv.tv_sec : 0;
}

static int config_exists(const char *path) {
  uv_fs_t req;
  int rc = uv_fs_stat(NULL, &req, path, NULL);
  uv_fs_req_cleanup(&req);
  return rc == 0;
}

/* Status "config": path NULL when running on defaults. reload: 0 at
 * start, 1 after a reload (ok, error). */
static void config_info_set(lr_hostd_t *d, const char *path, int reload, int ok,
                            const char *error) {
  lr_host_t *h = d->host;
  if (!h) return;
  int64_t now = unix_now();
  if (ok) {
    snprintf(d->loaded_path, sizeof d->loaded_path, "%s", path ? path : "");
    d->loaded_at = path ? now : 0;
  }
  lr_host_set_config_info(h, d->loaded_path[0] ? d->loaded_path : NULL, d->loaded_at,
                          reload ? now : 0, ok, error);
}

int lr_hostd_start(lr_hostd_t *d, uv_loop_t *loop, const lr_pal_t *pal, const lr_hostd_opts_t *o) {
  char err[1400], buf[512];
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
      rc = -2; /* a usage error: exit status 2 */
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
  /* No guest yet is a state, not an error: an installed daemon waits for
   * [guest NAME] sections and a reload. */
  if (ncl + f.nguests == 0)
    LR_INFO("no guest configured: waiting (add [guest NAME] sections to %s and reload)",
            cfg_path ? cfg_path : "a config file (-c FILE)");
  if (f.nguests && (!(fg = calloc(f.nguests, sizeof *fg)) ||
                    load_file_tokens(&f, fg, d->config_path, err, sizeof err) != 0))
    goto out;
  d->host = lr_host_new(loop, pal, &d->cfg);
  if (!d->host) {
    LR_ERROR("out of memory");
    goto out;
  }
  config_info_set(d, cfg_path && config_exists(cfg_path) ? cfg_path : NULL, 0, 1, NULL);
  /* The command line's guests, then the file's, in the order given. */
  for (size_t i = 0; i < ncl + f.nguests; i++) {
    lr_hostd_guest_t *hg = guest_slot(d);
    const lr_config_t *cfg = &d->cfg;
    lr_guest_resolve_fn resolve = NULL;
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
      if (k == 0 && o->guest) resolve = o->resolve;
    } else {
      *hg = fg[i - ncl];
      cfg = &f.guests[i - ncl].cfg;
    }
    if (!hg->from_file && d->token_len) {
      memcpy(hg->token, d->token, d->token_len);
      hg->token_len = d->token_len;
    }
    if (guest_open(d, hg, cfg, resolve, resolve ? o->resolve_data : NULL, 0, err, sizeof err) !=
        0) {
      LR_ERROR("%s", err);
      goto out;
    }
    d->nguests++;
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

/* What a reload does with one [guest NAME] of the new file. */
enum { PLAN_KEEP, PLAN_NEW, PLAN_REPLACE };

int lr_hostd_reload(lr_hostd_t *d) {
  char err[512], why[1400] = "";
  lr_config_file_t f;
  const lr_hostd_opts_t *o = d->opts;
  if (!d->host) return -1;
  if (!d->config_path[0]) {
    snprintf(why, sizeof why,
             "no configuration file: lorelayd was started without -c FILE, nothing to read");
    LR_WARN("reload: %s", why);
    config_info_set(d, NULL, 1, 0, why);
    return -1;
  }
  int exists = config_exists(d->config_path);
  if (exists || !d->config_missing_ok)
    LR_INFO("reloading %s", d->config_path);
  else
    LR_INFO("reload: %s does not exist: the defaults apply", d->config_path);
  lr_hostd_guest_t *fg = NULL;
  int *plan = NULL, *match = NULL; /* match: the running guest of the same name, or -1 */
  unsigned char *opened = NULL, *reused = NULL; /* netns opened here / kept from a replaced one */
  lr_guest_t **added = NULL;
  size_t nadded = 0;
  int rc = -1;
  memset(&f, 0, sizeof f);
  if (lr_config_file_load(&f, d->config_path, d->config_missing_ok) != 0) {
    snprintf(why, sizeof why, "%s", f.first_error[0] ? f.first_error : "the file has errors");
    goto bad;
  }
  size_t n = f.nguests ? f.nguests : 1;
  if (!(fg = calloc(n, sizeof *fg)) || !(plan = calloc(n, sizeof *plan)) ||
      !(match = calloc(n, sizeof *match)) || !(opened = calloc(n, 1)) ||
      !(reused = calloc(d->nguests + 1, 1)) || !(added = calloc(n, sizeof *added))) {
    snprintf(why, sizeof why, "out of memory");
    goto bad;
  }
  if (load_file_tokens(&f, fg, d->config_path, why, sizeof why) != 0) goto bad;

  /* 1. Plan and check, changing nothing. */
  for (size_t i = 0; i < f.nguests; i++) {
    match[i] = -1;
    for (size_t k = 0; k < d->nguests; k++) {
      lr_hostd_guest_t *hg = &d->guests[k];
      if (strcmp(hg->name, fg[i].name)) continue;
      if (!hg->from_file) {
        snprintf(why, sizeof why, "%.200s:%d: [guest %.64s]: a guest of the command line has that name",
                 d->config_path, f.guests[i].line, fg[i].name);
        goto bad;
      }
      match[i] = (int)k;
    }
    plan[i] = PLAN_NEW;
    if (match[i] >= 0) {
      lr_hostd_guest_t *hg = &d->guests[match[i]];
      int same = !strcmp(fg[i].netns, hg->netns) &&
                 (hg->netns[0] || !strcmp(fg[i].transport, hg->transport)) &&
                 fg[i].token_len == hg->token_len &&
                 !memcmp(fg[i].token, hg->token, hg->token_len);
      plan[i] = same && hg->g ? PLAN_KEEP : PLAN_REPLACE;
    }
    if (plan[i] == PLAN_KEEP) continue;
    if (fg[i].netns[0]) {
      if (!o->netns_open) {
        snprintf(why, sizeof why, "%.200s:%d: [guest %.64s]: network namespace guests (netns) need Linux",
                 d->config_path, f.guests[i].line, fg[i].name);
        goto bad;
      }
      continue;
    }
    lr_guest_opts_t go = {fg[i].name, fg[i].transport, fg[i].token, fg[i].token_len,
                          NULL,       NULL,            0,            &f.guests[i].cfg};
    if (lr_host_check_guest(d->host, &go, err, sizeof err) != 0) {
      snprintf(why, sizeof why, "%.200s:%d: [guest %.64s]: %.250s", d->config_path, f.guests[i].line,
               fg[i].name, err);
      goto bad;
    }
  }
  /* Namespaces: open those of new guests now, so one that cannot be
   * opened refuses the file before anything running changes. A namespace
   * a replaced guest serves stays open for its successor. */
  for (size_t i = 0; i < f.nguests; i++) {
    if (plan[i] == PLAN_KEEP || !fg[i].netns[0]) continue;
    int held = -1;
    for (size_t k = 0; k < d->nguests; k++)
      if (!strcmp(d->guests[k].netns, fg[i].netns)) held = (int)k;
    if (held >= 0) {
      int going = d->guests[held].from_file;
      for (size_t j = 0; j < f.nguests && going; j++)
        if (match[j] == held && plan[j] == PLAN_KEEP) going = 0;
      if (!going || reused[held]) {
        snprintf(why, sizeof why, "%.200s:%d: [guest %.64s]: network namespace %s is served by guest %s",
                 d->config_path, f.guests[i].line, fg[i].name, fg[i].netns, d->guests[held].name);
        goto bad;
      }
      reused[held] = 1;
      snprintf(fg[i].transport, sizeof fg[i].transport, "%s", d->guests[held].transport);
      opened[i] = 2; /* not ours to close on failure */
      continue;
    }
    if (o->netns_open(o->netns_data, fg[i].netns, fg[i].transport, sizeof fg[i].transport, err,
                      sizeof err) != 0) {
      snprintf(why, sizeof why, "%.200s:%d: [guest %.64s]: %.250s", d->config_path, f.guests[i].line,
               fg[i].name, err);
      goto bad;
    }
    opened[i] = 1;
  }

  /* 2. Apply. Brand-new guests first: if one fails, the ones added are
   * taken away again and nothing else has changed. */
  for (size_t i = 0; i < f.nguests; i++) {
    if (plan[i] != PLAN_NEW) continue;
    lr_hostd_guest_t tmp = fg[i];
    if (guest_open(d, &tmp, &f.guests[i].cfg, NULL, NULL, 1, err, sizeof err) != 0) {
      opened[i] = 0; /* guest_open closed it */
      snprintf(why, sizeof why, "[guest %.64s] not started: %.300s", fg[i].name, err);
      LR_ERROR("%s", why);
      for (size_t k = 0; k < nadded; k++) lr_host_remove_guest(added[k]);
      nadded = 0;
      goto bad;
    }
    fg[i].g = tmp.g;
    added[nadded++] = tmp.g;
  }
  /* The list the daemon keeps from now on: command-line guests, then the
   * file's in its order. */
  size_t ncl = 0;
  for (size_t k = 0; k < d->nguests; k++) ncl += !d->guests[k].from_file;
  lr_hostd_guest_t *next = calloc(ncl + f.nguests + 1, sizeof *next);
  if (!next) {
    snprintf(why, sizeof why, "out of memory");
    for (size_t k = 0; k < nadded; k++) lr_host_remove_guest(added[k]);
    nadded = 0;
    goto bad;
  }
  size_t nn = 0;
  d->cfg = f.base;
  if (!o->log_level) lr_log_set_level(d->cfg.log_level);
  /* Process-wide: connections that switch from now on follow it. */
  lr_relay_set_zero_copy(d->cfg.zero_copy, d->cfg.zero_copy_after);
  for (size_t k = 0; k < d->nguests; k++)
    if (!d->guests[k].from_file) {
      if (d->guests[k].g) lr_host_configure_guest(d->guests[k].g, &d->cfg);
      next[nn++] = d->guests[k];
    }
  /* Guests gone from the file, and the old half of replaced ones, stop. */
  for (size_t k = 0; k < d->nguests; k++) {
    lr_hostd_guest_t *hg = &d->guests[k];
    int kept = 0;
    for (size_t i = 0; i < f.nguests; i++) kept |= match[i] == (int)k && plan[i] == PLAN_KEEP;
    if (!hg->from_file || kept) continue;
    if (hg->g) lr_host_remove_guest(hg->g);
    if (hg->netns[0] && o->netns_close && !reused[k]) o->netns_close(o->netns_data, hg->netns);
  }
  for (size_t i = 0; i < f.nguests; i++) {
    if (plan[i] == PLAN_KEEP) {
      lr_hostd_guest_t *hg = &d->guests[match[i]];
      lr_host_configure_guest(hg->g, &f.guests[i].cfg);
      next[nn++] = *hg;
      continue;
    }
    if (plan[i] == PLAN_REPLACE) {
      /* Every check passed above: only memory can fail here. Then the old
       * definition is started again under its name. */
      lr_hostd_guest_t tmp = fg[i];
      if (guest_open(d, &tmp, &f.guests[i].cfg, NULL, NULL, 1, err, sizeof err) != 0) {
        LR_ERROR("[guest %.64s] not started: %s; starting its previous definition again", fg[i].name,
                 err);
        snprintf(why, sizeof why, "[guest %.64s] not started: %.300s", fg[i].name, err);
        tmp = d->guests[match[i]];
        tmp.g = NULL;
        if (guest_open(d, &tmp, &d->cfg, NULL, NULL, 0, err, sizeof err) != 0)
          LR_ERROR("[guest %.64s]: %s", tmp.name, err);
      }
      fg[i].g = tmp.g;
      if (!tmp.g) continue;
      next[nn++] = tmp;
      continue;
    }
    next[nn++] = fg[i];
  }
  free(d->guests);
  d->guests = next;
  d->nguests = nn;
  if (exists || !d->config_missing_ok)
    LR_INFO("%s reloaded: %zu guest%s", d->config_path, d->nguests, d->nguests == 1 ? "" : "s");
  else
    LR_INFO("reload done: defaults (no file at %s), %zu guest%s", d->config_path, d->nguests,
            d->nguests == 1 ? "" : "s");
  config_info_set(d, exists ? d->config_path : NULL, 1, why[0] == '\0', why[0] ? why : NULL);
  rc = 0;
  goto out;
bad:
  for (size_t i = 0; opened && i < f.nguests; i++)
    if (opened[i] == 1 && o->netns_close) o->netns_close(o->netns_data, fg[i].netns);
  LR_ERROR("%s was not applied: %s; the running configuration stays", d->config_path, why);
  config_info_set(d, NULL, 1, 0, why);
out:
  free(fg);
  free(plan);
  free(match);
  free(opened);
  free(reused);
  free(added);
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
