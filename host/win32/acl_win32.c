/* Who may touch what lorelayd.exe serves and reads: the security
 * descriptors of the status pipe and of %ProgramData%\lorelay, and the
 * check that refuses a data directory (or a file in it) that someone other
 * than SYSTEM, the Administrators or lorelayd's own account (the one it
 * runs as, and the service's NT SERVICE\lorelayd) could have written.
 *
 * Everything is spelled in SDDL, so each descriptor reads as one line:
 *   pipe: D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)[(A;;GA;;;<self>)]
 *   dir:  D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)[(A;OICI;FA;;;<self>)]
 * "P" blocks inheritance from the parent (ProgramData lets Users create
 * files in subfolders). <self> is the account lorelayd runs as, added only
 * when it is neither SYSTEM nor Administrators (a virtual service account
 * NT SERVICE\lorelayd, or the user of a console run): a named pipe's server
 * must itself pass the pipe's DACL with FILE_CREATE_PIPE_INSTANCE to create
 * the next instance, and the service must write its own log. It admits no
 * one new: that account owns both objects, and an owner may rewrite their
 * DACL anyway. */
#include "lr_win32.h"

#include <aclapi.h>
#include <sddl.h>
#include <stdio.h>
#include <string.h>

/* TrustedInstaller owns the system's own folders; ProgramData may be too. */
#define LR_SID_TRUSTED_INSTALLER "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"

/* Rights that let a holder change what lorelayd reads or where it writes:
 * data, appended data / subfolders, delete (a file or a child), DACL and
 * owner, and the generic forms of those. */
#define LR_WRITE_RIGHTS                                                                    \
  (FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_DELETE_CHILD | DELETE | WRITE_DAC |           \
   WRITE_OWNER | GENERIC_WRITE | GENERIC_ALL)

int lr_win32_self_sid(char *out, size_t len) {
  HANDLE tok;
  union {
    TOKEN_USER tu;
    char buf[sizeof(TOKEN_USER) + SECURITY_MAX_SID_SIZE];
  } u;
  DWORD n = 0;
  char *s = NULL;
  int r = -1;
  if (!OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &tok))
    return -1;
  if (GetTokenInformation(tok, TokenUser, &u, sizeof u, &n) &&
      ConvertSidToStringSidA(u.tu.User.Sid, &s)) {
    if (strlen(s) < len) {
      memcpy(out, s, strlen(s) + 1);
      r = 0;
    }
    LocalFree(s);
  }
  CloseHandle(tok);
  return r;
}

/* Appends (A;FLAGS;RIGHTS;;;<self>) when the process runs as an account
 * that the fixed ACEs do not already name. */
static int sddl_with_self(char *out, size_t len, const char *base, const char *self_ace_fmt) {
  char self[SECURITY_MAX_SID_SIZE * 4];
  int n;
  if (lr_win32_self_sid(self, sizeof self) != 0)
    return -1;
  if (strcmp(self, "S-1-5-18") == 0 || strcmp(self, "S-1-5-32-544") == 0)
    n = snprintf(out, len, "%s", base);
  else {
    n = snprintf(out, len, "%s", base);
    if (n >= 0 && (size_t)n < len)
      n += snprintf(out + n, len - (size_t)n, self_ace_fmt, self);
  }
  return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* Deny NETWORK first: a named pipe is reachable over SMB as
 * \\host\pipe\lorelayd, libuv cannot set PIPE_REJECT_REMOTE_CLIENTS, and the
 * status endpoint is for this machine only. GA for the rest: lorelayctl
 * (a libuv client) opens with GENERIC_READ|GENERIC_WRITE, and on a pipe
 * GENERIC_WRITE includes FILE_CREATE_PIPE_INSTANCE, so whoever may use
 * lorelayctl may also create instances; that is why no group other than
 * these is ever added (docs/windows.md). */
int lr_win32_pipe_sddl(char *out, size_t len) {
  return sddl_with_self(out, len, "D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)", "(A;;GA;;;%s)");
}

int lr_win32_dir_sddl(char *out, size_t len) {
  return sddl_with_self(out, len, "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)", "(A;OICI;FA;;;%s)");
}

static int sid_is(PSID sid, const char *want) {
  char *s = NULL;
  int eq;
  if (!ConvertSidToStringSidA(sid, &s))
    return 0;
  eq = strcmp(s, want) == 0;
  LocalFree(s);
  return eq;
}

/* The lorelayd service's own SID (NT SERVICE\lorelayd), which install.cmd
 * grants Modify on the data directory when the service runs as that
 * virtual account. Looked up by name: it resolves only while the service
 * is installed (never under Wine), and then nothing is added. */
static int sid_is_service(PSID sid) {
  BYTE buf[SECURITY_MAX_SID_SIZE];
  char dom[64];
  DWORD n = sizeof buf, dn = sizeof dom;
  SID_NAME_USE use;
  if (!LookupAccountNameA(NULL, "NT SERVICE\\lorelayd", buf, &n, dom, &dn, &use))
    return 0;
  return EqualSid(sid, (PSID)buf);
}

/* SYSTEM, Administrators, TrustedInstaller, the lorelayd service, or the
 * account we run as. */
static int sid_trusted(PSID sid) {
  char self[SECURITY_MAX_SID_SIZE * 4];
  if (sid_is(sid, "S-1-5-18") || sid_is(sid, "S-1-5-32-544") ||
      sid_is(sid, LR_SID_TRUSTED_INSTALLER))
    return 1;
  /* OWNER RIGHTS stands for the owner, which is checked separately. */
  if (sid_is(sid, "S-1-3-4"))
    return 1;
  if (lr_win32_self_sid(self, sizeof self) == 0 && sid_is(sid, self))
    return 1;
  return sid_is_service(sid);
}

static void sid_text(PSID sid, char *out, size_t len) {
  char *s = NULL;
  char name[128] = "", dom[128] = "";
  DWORD nn = sizeof name, dn = sizeof dom;
  SID_NAME_USE use;
  if (!ConvertSidToStringSidA(sid, &s)) {
    snprintf(out, len, "(unreadable SID)");
    return;
  }
  if (LookupAccountSidA(NULL, sid, name, &nn, dom, &dn, &use) && name[0])
    snprintf(out, len, "%s%s%s (%s)", dom, dom[0] ? "\\" : "", name, s);
  else
    snprintf(out, len, "%s", s);
  LocalFree(s);
}

int lr_win32_path_trusted(const char *path, char *why, size_t whylen) {
  PSECURITY_DESCRIPTOR sd = NULL;
  PSID owner = NULL;
  PACL dacl = NULL;
  BOOL present = FALSE, defaulted = FALSE;
  char who[300];
  DWORD e;
  int r = 0;

  e = GetNamedSecurityInfoA(path, SE_FILE_OBJECT,
                            OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION, &owner, NULL,
                            NULL, NULL, &sd);
  if (e != ERROR_SUCCESS) {
    snprintf(why, whylen, "%s: cannot read its owner and DACL (error %lu)", path,
             (unsigned long)e);
    return -1;
  }
  if (owner == NULL || !sid_trusted(owner)) {
    if (owner != NULL)
      sid_text(owner, who, sizeof who);
    else
      snprintf(who, sizeof who, "no one");
    snprintf(why, whylen,
             "%s is owned by %s, not by SYSTEM, Administrators or lorelayd's own account: "
             "someone else may have created it to plant a config or redirect the log",
             path, who);
    r = -1;
    goto done;
  }
  if (!GetSecurityDescriptorDacl(sd, &present, &dacl, &defaulted) || !present || dacl == NULL) {
    snprintf(why, whylen, "%s has no DACL: everyone may change it", path);
    r = -1;
    goto done;
  }
  for (DWORD i = 0; i < dacl->AceCount; i++) {
    ACE_HEADER *h;
    if (!GetAce(dacl, i, (void **)&h))
      continue;
    if (h->AceType != ACCESS_ALLOWED_ACE_TYPE || (h->AceFlags & INHERIT_ONLY_ACE))
      continue;
    ACCESS_ALLOWED_ACE *a = (ACCESS_ALLOWED_ACE *)h;
    PSID sid = (PSID)&a->SidStart;
    if ((a->Mask & LR_WRITE_RIGHTS) == 0 || sid_trusted(sid))
      continue;
    sid_text(sid, who, sizeof who);
    snprintf(why, whylen,
             "%s lets %s write to it (access mask 0x%lx): only SYSTEM, Administrators and "
             "lorelayd's own account may",
             path, who, (unsigned long)a->Mask);
    r = -1;
    goto done;
  }
done:
  LocalFree(sd);
  return r;
}

/* Strips one trailing backslash (lr_win32_programdata_path("") ends in one). */
static void data_dir(char *buf, size_t len) {
  lr_win32_programdata_path("", buf, len);
  size_t n = strlen(buf);
  if (n > 0 && buf[n - 1] == '\\')
    buf[n - 1] = '\0';
}

int lr_win32_data_dir_prepare(int create, int *created, char *why, size_t whylen) {
  char dir[MAX_PATH], sddl[512], file[MAX_PATH];
  static const char *const files[] = {"lorelay.ini", "lorelayd.log"};
  DWORD attr;

  if (created)
    *created = 0;
  data_dir(dir, sizeof dir);
  attr = GetFileAttributesA(dir);
  if (attr == INVALID_FILE_ATTRIBUTES) {
    if (!create)
      return 0; /* nothing there to trust or distrust */
    SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, FALSE};
    if (lr_win32_dir_sddl(sddl, sizeof sddl) != 0 ||
        !ConvertStringSecurityDescriptorToSecurityDescriptorA(sddl, SDDL_REVISION_1,
                                                              &sa.lpSecurityDescriptor, NULL)) {
      snprintf(why, whylen, "%s: cannot build its security descriptor (error %lu)", dir,
               (unsigned long)GetLastError());
      return -1;
    }
    BOOL ok = CreateDirectoryA(dir, &sa);
    DWORD e = GetLastError();
    LocalFree(sa.lpSecurityDescriptor);
    if (!ok && e != ERROR_ALREADY_EXISTS) {
      snprintf(why, whylen, "cannot create %s (error %lu)", dir, (unsigned long)e);
      return -1;
    }
    /* ERROR_ALREADY_EXISTS: someone made it meanwhile; the check decides. */
    if (ok && created)
      *created = 1;
    attr = GetFileAttributesA(dir);
  }
  /* A reparse point could lead anywhere: a directory junction planted
   * before the service first ran would send its log elsewhere. */
  if (attr == INVALID_FILE_ATTRIBUTES || !(attr & FILE_ATTRIBUTE_DIRECTORY) ||
      (attr & FILE_ATTRIBUTE_REPARSE_POINT)) {
    snprintf(why, whylen, "%s is not a plain directory (a file, link or junction)", dir);
    return -1;
  }
  if (lr_win32_path_trusted(dir, why, whylen) != 0)
    return -1;
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    snprintf(file, sizeof file, "%s\\%s", dir, files[i]);
    attr = GetFileAttributesA(file);
    if (attr == INVALID_FILE_ATTRIBUTES)
      continue;
    if (attr & (FILE_ATTRIBUTE_REPARSE_POINT | FILE_ATTRIBUTE_DIRECTORY)) {
      snprintf(why, whylen, "%s is not a plain file (a directory, link or junction)", file);
      return -1;
    }
    if (lr_win32_path_trusted(file, why, whylen) != 0)
      return -1;
    /* A second name for the file is a hard link planted while the
     * directory was open to others: appending to the log would then write
     * into whatever file it points at. */
    HANDLE fh = CreateFileA(file, FILE_READ_ATTRIBUTES,
                            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                            OPEN_EXISTING, FILE_FLAG_OPEN_REPARSE_POINT, NULL);
    BY_HANDLE_FILE_INFORMATION fi;
    if (fh != INVALID_HANDLE_VALUE && GetFileInformationByHandle(fh, &fi) &&
        fi.nNumberOfLinks > 1) {
      CloseHandle(fh);
      snprintf(why, whylen, "%s has %lu names (hard links): not using it", file,
               (unsigned long)fi.nNumberOfLinks);
      return -1;
    }
    if (fh != INVALID_HANDLE_VALUE)
      CloseHandle(fh);
  }
  return 0;
}
