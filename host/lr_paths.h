/* Where a host's daemon endpoints and files are by default: the one piece
 * of the platform that lorelayctl needs too. Kept apart from the host
 * platform layer (lr_host_pal_t) so that the status client links only
 * this and the portable core, not the daemon, libcrypto or the VM-socket
 * code. Each host platform implements it (host/posix/paths_posix.c,
 * host/win32/paths_win32.c); lr_host_pal_t's path members point here. */
#ifndef LR_PATHS_H
#define LR_PATHS_H

#include <stddef.h>

/* Default status endpoint for this user (a Unix socket path, or a named
 * pipe's name on Windows), written into buf; returns buf. */
const char *lr_paths_default_status(char *buf, size_t len);
/* Default config file, written into buf; returns buf. */
const char *lr_paths_default_config(char *buf, size_t len);
/* The system daemon's status endpoint, which a user without a daemon of
 * their own falls back to; NULL where there is no such thing. */
const char *lr_paths_system_status(char *buf, size_t len);
/* After EACCES on the endpoint at path: one line saying who may use it and
 * how to join (the socket's or its directory's group), in buf; NULL when
 * nothing useful can be said. */
const char *lr_paths_access_hint(const char *path, char *buf, size_t len);

#endif
