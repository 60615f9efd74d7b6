/* Default paths on Linux (lr_paths.h): the run directory the daemon's
 * sockets live in, the status socket and the config file, the system
 * daemon's socket a user falls back to, and who may open a socket that
 * refused us. Apart from pal_posix.c so that lorelayctl links only this. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

const char *lr_paths_system_status(char *buf, size_t len) {
  snprintf(buf, len, "/run/lorelay/lorelayd.sock");
  return buf;
}

/* "members of group lorelay (the socket is 0660 root:lorelay)", or NULL
 * when the socket cannot even be looked at. */
const char *lr_paths_access_hint(const char *path, char *out, size_t len) {
  struct stat st;
  char buf[4096], ubuf[4096];
  struct group gr, *g = NULL;
  struct passwd pw, *u = NULL;
  if (stat(path, &st) != 0) {
    if (errno != EACCES) return NULL;
    /* The run directory is closed to us: its group is the statusGroup. */
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) *slash = '\0';
    if (stat(dir, &st) == 0 && st.st_gid != 0 &&
        getgrgid_r(st.st_gid, &gr, buf, sizeof buf, &g) == 0 && g)
      snprintf(out, len, "members of group %s may use it (%s is %04o, group %s); add this user "
                         "to it (usermod -aG %s USER, then log in again)",
               g->gr_name, dir, (unsigned)(st.st_mode & 07777), g->gr_name, g->gr_name);
    else
      snprintf(out, len, "its directory is closed to this user: the daemon's statusGroup "
                         "(default lorelay) grants access to its members");
    return out;
  }
  if (getgrgid_r(st.st_gid, &gr, buf, sizeof buf, &g) != 0) g = NULL;
  if (getpwuid_r(st.st_uid, &pw, ubuf, sizeof ubuf, &u) != 0) u = NULL;
  if (g && st.st_gid != 0)
    snprintf(out, len, "members of group %s may use it (the socket is %04o %s:%s); add this "
                       "user to it (usermod -aG %s USER, then log in again)",
             g->gr_name, (unsigned)(st.st_mode & 07777), u ? u->pw_name : "?", g->gr_name,
             g->gr_name);
  else
    snprintf(out, len, "only %s may use it: the daemon's statusGroup (default lorelay) does "
                       "not exist or was not applied",
             u ? u->pw_name : "its owner");
  return out;
}
