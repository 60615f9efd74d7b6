/* The POSIX host platform: the lr_host_pal_t for Linux and the helpers the
 * lorelayd main needs around it (run directory, socket paths, netns). */
#ifndef LR_POSIX_H
#define LR_POSIX_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

#include "lr_host_pal.h"
#include "paths_posix.h"

extern const lr_host_pal_t lr_pal_posix;

/* Ignores SIGPIPE and raises the
 * soft open-files limit to the hard one: every relayed connection costs two
 * fds per side, and systemd's default soft limit of 1024 would otherwise cap
 * a daemon at about 500 connections (the benchmark holds 5 000). */
void lr_posix_init(void);

int lr_posix_mkdir_p(const char *path, mode_t mode);

/* Creates dir (mode 0750) if missing, then refuses it unless it is a real
 * directory owned by this process's uid; group/other write bits are
 * removed. 0 or -1 with err. */
int lr_posix_own_dir(const char *dir, char *err, size_t errlen);

/* Makes path usable for a listening Unix socket: creates its directory,
 * removes a stale socket left by a crash, refuses if a live process
 * answers there or the file is not a socket. 0 or -1 with err. */
int lr_posix_claim_socket_path(const char *path, char *err, size_t errlen);

/* Network namespaces (netns.c). */
/* Creates /run/netns/NAME as `ip netns add` does, unless it exists, and
 * brings its loopback up, without forking: on a short-lived thread the
 * calling (loop) thread joins, which waits on no other process. 0 or -1
 * with err. */
int lr_netns_ensure(const char *name, char *err, size_t errlen);
/* Forks a child that enters netns NAME and execs argv[0] with argv.
 * The child gets SIGTERM if lorelayd dies. Returns the pid or -1 with err. */
pid_t lr_netns_spawn(const char *name, char *const argv[], char *err, size_t errlen);

/* lr_host_pal_t.nsock_open/take/close (nsock.c): sockets made inside a
 * namespace guest's network namespace. */
lr_nsock_t *lr_posix_nsock_open(uv_loop_t *loop, const char *netns, void (*ready)(void *),
                                void *data, char *err, size_t errlen);
int lr_posix_nsock_take(lr_nsock_t *p, const struct sockaddr *sa, int udp, uv_os_sock_t *out);
void lr_posix_nsock_close(lr_nsock_t *p);

#endif
