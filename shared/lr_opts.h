/* Command-line options, parsed one way for every lorelay program.
 *
 * A program describes its options as a table (flag, alias, where the value
 * goes) and gets the same behaviour everywhere: "--flag VALUE" and
 * "--flag=VALUE", -h/--help and -V/--version, and one-line errors naming
 * the bad flag. Platform mains add flags the common table does not know
 * through the extra callback, so no flag is parsed in two places. */
#ifndef LR_OPTS_H
#define LR_OPTS_H

#include <stddef.h>

typedef enum { LR_OPT_STRING, LR_OPT_FLAG, LR_OPT_LIST } lr_opt_kind_t;

/* A repeatable option (LR_OPT_LIST): every value, in order. */
#define LR_OPT_LIST_MAX 64
typedef struct {
  const char *v[LR_OPT_LIST_MAX];
  size_t n;
} lr_opt_list_t;

typedef struct {
  const char *name;  /* "--guest" */
  const char *alias; /* "-c", or NULL */
  lr_opt_kind_t kind;
  size_t off;        /* offsetof the const char * (STRING), int (FLAG) or lr_opt_list_t (LIST) */
} lr_opt_t;

/* Called for an option the table does not know. val is the next argv
 * element or NULL. Return 1 if val was consumed, 0 if only opt was, -1 if
 * opt is unknown (the parser then reports it). */
typedef int (*lr_opt_extra_fn)(const char *opt, const char *val, void *data);

/* Fills out (already zeroed by the caller) from argv[1..]. 0, or -1 with a
 * one-line reason in err (unknown flag, missing value, stray argument, a
 * single-valued flag given twice). */
int lr_opts_parse(int argc, char **argv, const lr_opt_t *table, size_t n, void *out,
                  lr_opt_extra_fn extra, void *data, char *err, size_t errlen);

#endif
