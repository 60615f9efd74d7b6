/* Who owns a listening socket: the guest process holding it, found from the
 * socket's inode (sock_diag gives it) by looking for "socket:[INODE]" among
 * /proc/PID/fd, the way ss -p and lsof do.
 *
 * Walking /proc costs a readlink per open descriptor of every process, so
 * the agent asks only when a listener appears, never on every scan, and
 * asks for all the listeners of one scan in one walk. Processes in the
 * agent's own network namespace are looked at first (a listener of this
 * namespace is nearly always held there); the others only for inodes the
 * first pass did not find. The proc root is a parameter so that the unit
 * tests can hand it a fake tree. Pure file reading, no state, no loop. */
#ifndef LR_PROCOWNER_H
#define LR_PROCOWNER_H

#include <stddef.h>
#include <stdint.h>

#include "lr_proto.h"

typedef struct {
  uint32_t inode;        /* in: the socket */
  size_t tag;            /* the caller's, left as it is */
  lr_proc_owner_t owner; /* out: pid 0 when no process holds it */
} lr_owner_query_t;

/* Looks every q[i].inode up under proc ("/proc"); returns how many were
 * found. The command line is /proc/PID/cmdline with its NULs as spaces
 * ("[comm]" for a process without one: a kernel thread), cut to
 * LR_CMD_MAX bytes and made valid UTF-8. Sorts q by inode. */
size_t lr_procowner_lookup(const char *proc, lr_owner_query_t *q, size_t n);

#endif
