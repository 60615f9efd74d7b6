/* lorelayd's systemd integration (sdnotify.c): sd_notify readiness,
 * reload and stop messages with a STATUS= line (whether stderr is the
 * journal is platform/linux's lr_linux_stderr_is_journal). Every call is a no-op when systemd is not listening. The
 * status timer lr_sd_ready starts is owned here and closed by
 * lr_sd_stopping. */
#ifndef LR_SDNOTIFY_H
#define LR_SDNOTIFY_H

#include <uv.h>

#include "lr_hostd.h"

/* READY=1 with STATUS=; d must stay valid until lr_sd_stopping. */
void lr_sd_ready(uv_loop_t *loop, lr_hostd_t *d);
/* RELOADING=1 before a reload, READY=1 (and a fresh STATUS=) after it,
 * whether the file was applied or not: lorelayd runs either way. */
void lr_sd_reloading(void);
void lr_sd_reloaded(void);
/* STOPPING=1; stops the status timer. */
void lr_sd_stopping(void);

#endif
