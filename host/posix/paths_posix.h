/* The Linux side of lr_paths.h, plus the run directory the daemon's
 * sockets live in (lorelayd's, and the status client's default). */
#ifndef LR_PATHS_POSIX_H
#define LR_PATHS_POSIX_H

#include <stddef.h>

#include "lr_paths.h"

/* /run/lorelay as root, else $XDG_RUNTIME_DIR/lorelay (or /tmp/lorelay-UID). */
const char *lr_posix_run_dir(char *buf, size_t len);

#endif
