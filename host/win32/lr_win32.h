/* The Windows host platform layer: what lorelayd.exe needs beyond the
 * portable core. One header for the whole of host/win32 (libuv's shape: one
 * public header, one file per concern behind it), so the tests in
 * tests/unit/test_win32_*.c and tests/win32/ see the same prototypes the
 * service uses.
 *
 * Everything here that can be pure is pure (address construction, the
 * --vm-id rewrite, the HCS JSON answer) so it is unit-tested under Wine; the
 * native calls that Wine cannot exercise (AF_HYPERV connect, HCS, the real
 * SCM) are kept thin around them. */
#ifndef LR_WIN32_H
#define LR_WIN32_H

#include <winsock2.h>
#include <windows.h>
#include <hvsocket.h>
#include <stddef.h>

#include "lr_addr.h"
#include "lr_log.h"
#include "lr_pal.h"

/* ---- AF_HYPERV (pal_win32.c) ------------------------------------------- */

/* mingw-w64 ships hvsocket.h (SOCKADDR_HV) but not the address family. */
#ifndef AF_HYPERV
#define AF_HYPERV 34
#endif

/* The default vsock port lorelay-agent listens on inside a Hyper-V / WSL
 * guest when only --vm-id is given. */
#define LR_WIN32_DEFAULT_HVSOCK_PORT 50505u

/* The platform table handed to lr_hostd_start. */
const lr_pal_t *lr_pal_win32(void);

/* Fills the hvsock address for a (kind LR_TADDR_HVSOCK) transport address:
 * VmId from the address, ServiceId = the vsock template with Data1 = port.
 * 0, or -1 with a reason in err for any other kind. */
int lr_win32_hvsock_sockaddr(const lr_taddr_t *a, SOCKADDR_HV *sa, char *err, size_t errlen);

/* lr_guid_t (host order fields) to/from the Windows GUID layout. */
void lr_win32_guid_to_win(const lr_guid_t *in, GUID *out);

/* ---- --vm-id (options.c) ----------------------------------------------- */

/* The guest address lorelayd.exe connects to, from --guest and --vm-id:
 * - only --guest: it, unchanged;
 * - only --vm-id: "hvsock:VMID:50505";
 * - both: --guest must be an hvsock: address; its VM id is replaced and its
 *   port kept (so "--guest hvsock:00000000-0000-0000-0000-000000000000:6000
 *   --vm-id X" targets port 6000 of VM X).
 * 0, or -1 with a one-line reason in err. */
int lr_win32_guest_address(const char *guest, const lr_guid_t *vmid, char *out, size_t outlen,
                           char *err, size_t errlen);
/* 0 when lorelayd.exe can connect to addr (hvsock:, tcp:, or an address
 * that does not parse: the core reports that); -1 with a one-line reason
 * for unix:, vsock: and fc:, which need Linux. */
int lr_win32_transport_check(const char *addr, char *err, size_t errlen);

/* ---- HCS: finding the WSL utility VM (hcs_json.c, hcs.c) ---------------- */

/* Picks the WSL utility VM out of an HcsEnumerateComputeSystems result
 * document (UTF-8 JSON: an array of {"Id","RuntimeId","SystemType","Owner",
 * "State",...}). The VM is the entry with Owner "WSL" and SystemType
 * "VirtualMachine" (case-insensitive), not in a stopped state; its hvsock id
 * is RuntimeId when present, else Id. *matches counts the candidates (a
 * caller may warn when there are several; the first is used). 0, or -1 with
 * a one-line reason (malformed JSON, no such VM, bad GUID). */
int lr_hcs_find_wsl_vm(const char *json, lr_guid_t *vmid, int *matches, char *err, size_t errlen);

/* Asks the Host Compute Service (computecore.dll, loaded at run time) for
 * the running WSL VM. 0, or -1 with a reason (no computecore.dll, as under
 * Wine or before Windows 10 1809; access denied; no WSL VM running). */
int lr_win32_find_wsl_vm(lr_guid_t *vmid, char *err, size_t errlen);

/* ---- logging (log_win32.c) --------------------------------------------- */

typedef enum {
  LR_WIN32_LOG_CONSOLE = 0, /* stderr */
  LR_WIN32_LOG_SERVICE = 1, /* log file + Windows Event Log */
} lr_win32_log_mode_t;

/* Installs the lorelayd log sink. Service mode: the log file (file, or by
 * default %ProgramData%\lorelay\lorelayd.log, else beside the executable)
 * and the Event Log source "lorelayd". Console mode: stderr, plus file when
 * one is given. */
void lr_win32_log_open(lr_win32_log_mode_t mode, const char *file);
void lr_win32_log_close(void);
/* Where the log file went ("" if none). */
const char *lr_win32_log_path(void);

/* <ProgramData>\lorelay\NAME into buf (the shell's common application data
 * folder; directory not created). Returns buf. */
const char *lr_win32_programdata_path(const char *name, char *buf, size_t len);

/* ---- who may touch the pipe and the data directory (acl_win32.c) -------- */

/* The SID lorelayd runs as ("S-1-5-18" for LocalSystem), as text. 0 or -1. */
int lr_win32_self_sid(char *out, size_t len);

/* The SDDL of the status pipe: NETWORK denied, SYSTEM, Administrators and
 * (when it is neither) lorelayd's own account allowed, protected. 0 or -1. */
int lr_win32_pipe_sddl(char *out, size_t len);

/* The SDDL of %ProgramData%\lorelay: the same three, full control,
 * inherited by everything inside, protected from ProgramData's ACEs. */
int lr_win32_dir_sddl(char *out, size_t len);

/* 0 when path is owned by SYSTEM, Administrators, TrustedInstaller or
 * lorelayd's own account and its DACL lets no one else write, delete or
 * change it; else -1 with the reason (who owns it, or who may write). */
int lr_win32_path_trusted(const char *path, char *why, size_t whylen);

/* %ProgramData%\lorelay before lorelayd uses it. Absent: with create, made
 * with lr_win32_dir_sddl (*created = 1); without, nothing to check (0).
 * Present: must be a plain directory passing lr_win32_path_trusted, and so
 * must lorelay.ini and lorelayd.log in it when they exist (plain files with
 * one name). 0, or -1 with why lorelayd must not use it. */
int lr_win32_data_dir_prepare(int create, int *created, char *why, size_t whylen);

#endif
