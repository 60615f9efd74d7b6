/* One option parser for every lorelay program; see lr_opts.h. */
#include "lr_opts.h"

#include <stdio.h>
#include <string.h>

/* 1 and *val set when arg is "name" (value follows) or "name=value". */
static int match(const char *arg, const char *name, const char **inline_val) {
  size_t n;
  if (!name) return 0;
  n = strlen(name);
  if (strncmp(arg, name, n) != 0) return 0;
  if (arg[n] == '\0') {
    *inline_val = NULL;
    return 1;
  }
  if (arg[n] == '=' && n > 2) {
    *inline_val = arg + n + 1;
    return 1;
  }
  return 0;
}

int lr_opts_parse(int argc, char **argv, const lr_opt_t *table, size_t n, void *out,
                  lr_opt_extra_fn extra, void *data, char *err, size_t errlen) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL, *inl = NULL;
    size_t k;
    for (k = 0; k < n; k++)
      if (match(a, table[k].name, &inl) || match(a, table[k].alias, &inl)) break;
    if (k < n) {
      char *slot = (char *)out + table[k].off;
      if (table[k].kind == LR_OPT_FLAG) {
        if (inl) {
          snprintf(err, errlen, "option %s takes no value", table[k].name);
          return -1;
        }
        *(int *)(void *)slot = 1;
        continue;
      }
      if (!inl && !v) {
        snprintf(err, errlen, "option %s needs a value", a);
        return -1;
      }
      if (table[k].kind == LR_OPT_LIST) {
        lr_opt_list_t *l = (lr_opt_list_t *)(void *)slot;
        if (l->n == LR_OPT_LIST_MAX) {
          snprintf(err, errlen, "option %s given more than %d times", table[k].name,
                   LR_OPT_LIST_MAX);
          return -1;
        }
        l->v[l->n++] = inl ? inl : v;
      } else {
        /* Given twice, which one would count? Refused, naming the flag. */
        if (*(const char **)(void *)slot) {
          snprintf(err, errlen, "option %s given twice (it takes one value)", table[k].name);
          return -1;
        }
        *(const char **)(void *)slot = inl ? inl : v;
      }
      if (!inl) i++;
      continue;
    }
    int used = extra ? extra(a, v, data) : -1;
    if (used < 0) {
      if (a[0] == '-')
        snprintf(err, errlen, "unknown option '%s' (see --help)", a);
      else
        snprintf(err, errlen, "unexpected argument '%s' (see --help)", a);
      return -1;
    }
    if (used == 1 && !v) {
      snprintf(err, errlen, "option %s needs a value", a);
      return -1;
    }
    i += used;
  }
  return 0;
}
