/* Lets host/win32/hcs_json.c compile on Linux for fuzz_hcs.
 *
 * hcs_json.c is pure (JSON text in, GUID out) but includes lr_win32.h,
 * which pulls in <windows.h>. Passed with -include, this header takes
 * lr_win32.h's include guard first, so the Windows headers stay out, and
 * declares the one function hcs_json.c defines. If lr_win32.h's prototype
 * changes, the definition in hcs_json.c no longer matches this declaration
 * and the fuzzer fails to compile instead of drifting. */
#ifndef LR_WIN32_H
#define LR_WIN32_H

#include <stddef.h>

#include "lr_addr.h"

int lr_hcs_find_wsl_vm(const char *json, lr_guid_t *vmid, int *matches, char *err, size_t errlen);

#endif
