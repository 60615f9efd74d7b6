/* The Windows-only part of lorelayd.exe's command line: turning --vm-id into
 * the guest address. WSL's VM id changes at every WSL start, so users give
 * the id (or let HCS find it) separately from the port; this is the one
 * place that combines the two, kept pure so it is unit-tested. */
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
