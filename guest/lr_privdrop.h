/* The agent gives up, once set up, every privilege it no longer needs.
 *
 * lorelayd starts a --netns agent as root in the host's mount and PID
 * namespaces, and a VM's init often starts it as root too: with every
 * capability a bug in the agent's parsing of the host's frames would be
 * root on the machine. Root is needed only to set up (load and attach the
 * eBPF programs: CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_NET_ADMIN); after
 * that the eBPF objects are descriptors the agent holds, and what it still
 * does with privilege was measured:
 *   - the owner column: listing /proc/PID/fd of another user's process
 *     needs CAP_DAC_READ_SEARCH, and reading its links (and
 *     /proc/PID/ns/net) CAP_SYS_PTRACE: both, neither alone;
 *   - reverse ports below 1024 published on the guest loopback:
 *     CAP_NET_BIND_SERVICE.
 * So those three stay (when the agent had them), everything else goes from
 * the effective, permitted, inheritable, ambient and bounding sets, and
 * no_new_privs is set, so nothing the agent could ever exec regains any.
 * Raw capget/capset and prctl: three calls do not need a library. */
#ifndef LR_PRIVDROP_H
#define LR_PRIVDROP_H

#include <stddef.h>

/* 0 with a summary of what was kept in what (e.g. "kept cap_dac_read_search,
 * cap_sys_ptrace; no_new_privs"), or -1 with the reason in err. */
int lr_privdrop_agent(char *what, size_t whatlen, char *err, size_t errlen);

#endif
