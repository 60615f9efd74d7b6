/* Default paths on Linux (lr_paths.h): the run directory the daemon's
 * sockets live in, the status socket and the config file. Apart from
 * pal_posix.c so that lorelayctl links only this. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "paths_posix.h"

const char *lr_posix_run_dir(char *buf, size_t len) {
  const char *xdg = getenv("XDG_RUNTIME_DIR");
  if (geteuid() == 0 || !xdg || !*xdg)
    snprintf(buf, len, geteuid() == 0 ? "/run/lorelay" : "/tmp/lorelay-%u", (unsigned)geteuid());
  else
    snprintf(buf, len, "%s/lorelay", xdg);
  return buf;
}

const char *lr_paths_default_status(char *buf, size_t len) {
  char dir[400];
  snprintf(buf, len, "%s/lorelayd.sock", lr_posix_run_dir(dir, sizeof dir));
  return buf;
}

const char *lr_paths_default_config(char *buf, size_t len) {
  snprintf(buf, len, "/etc/lorelay/lorelay.ini");
  return buf;
}
