/* The Windows-only part of lorelayd.exe's command line: turning --vm-id into
 * the guest address, and refusing the addresses Windows cannot reach. WSL's
 * VM id changes at every WSL start, so users give the id (or let HCS find
 * it) separately from the port; this is the one place that combines the
 * two, kept pure so it is unit-tested. */
#include "lr_win32.h"

#include <stdio.h>

int lr_win32_guest_address(const char *guest, const lr_guid_t *vmid, char *out, size_t outlen,
                           char *err, size_t errlen) {
  lr_taddr_t a;
  char why[256];
  int n;

  if (vmid == NULL) {
    if (guest == NULL) {
      snprintf(err, errlen, "no guest: give --guest ADDR or --vm-id GUID");
      return -1;
    }
    if (lr_taddr_parse(guest, &a, why, sizeof why) != 0) {
      snprintf(err, errlen, "--guest: %s", why);
      return -1;
    }
    n = snprintf(out, outlen, "%s", guest);
  } else {
    if (guest != NULL) {
      if (lr_taddr_parse(guest, &a, why, sizeof why) != 0) {
        snprintf(err, errlen, "--guest: %s", why);
        return -1;
      }
      if (a.kind != LR_TADDR_HVSOCK) {
        snprintf(err, errlen, "--vm-id needs an hvsock: guest address, but --guest is '%s'", guest);
        return -1;
      }
    } else {
      a.kind = LR_TADDR_HVSOCK;
      a.port = LR_WIN32_DEFAULT_HVSOCK_PORT;
    }
    a.vmid = *vmid;
    char g[40];
    n = snprintf(out, outlen, "hvsock:%s:%u", lr_guid_format(&a.vmid, g, sizeof g), (unsigned)a.port);
  }
  if (n < 0 || (size_t)n >= outlen) {
    snprintf(err, errlen, "guest address too long");
    return -1;
  }
  return 0;
}

/* unix: (lorelayd.exe's pipes are named pipes, not AF_UNIX), vsock: (the
 * Linux host's AF_VSOCK; a Windows host reaches the same agent port as
 * hvsock:) and fc: (a Linux VMM's socket) would only fail at every connect
 * attempt, forever: refused here, at start. An address that does not parse
 * is left to the core, which says what is wrong with it. */
int lr_win32_transport_check(const char *addr, char *err, size_t errlen) {
  lr_taddr_t a;
  char why[256];
  if (lr_taddr_parse(addr, &a, why, sizeof why) != 0) return 0;
  if (a.kind == LR_TADDR_HVSOCK || a.kind == LR_TADDR_TCP) return 0;
  snprintf(err, errlen,
           "%s: %s guests need lorelayd on Linux; on Windows a guest is hvsock:VMID:PORT "
           "(or --vm-id) or tcp:HOST:PORT",
           addr,
           a.kind == LR_TADDR_UNIX ? "unix:" : a.kind == LR_TADDR_VSOCK ? "vsock:" : "fc:");
  return -1;
}
