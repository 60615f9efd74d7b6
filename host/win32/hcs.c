/* Asking the Host Compute Service which VMs run, to find WSL's.
 *
 * computecore.dll exists only on Windows 10 1809 and later (and not under
 * Wine), so it is loaded at run time: lorelayd.exe must still start, with a
 * clear error for --vm-id wsl, where it is missing. The answer is parsed by
 * lr_hcs_find_wsl_vm (hcs_json.c), which is where the tests are. */
#include "lr_win32.h"

#include <computecore.h>
#include <stdio.h>
#include <stdlib.h>

typedef HCS_OPERATION(WINAPI *create_op_fn)(const void *, HCS_OPERATION_COMPLETION);
typedef void(WINAPI *close_op_fn)(HCS_OPERATION);
typedef HRESULT(WINAPI *enumerate_fn)(PCWSTR, HCS_OPERATION);
typedef HRESULT(WINAPI *wait_fn)(HCS_OPERATION, DWORD, PWSTR *);

#define LR_HCS_TIMEOUT_MS 5000

int lr_win32_find_wsl_vm(lr_guid_t *vmid, char *err, size_t errlen) {
  HMODULE dll;
  create_op_fn create_op;
  close_op_fn close_op;
  enumerate_fn enumerate;
  wait_fn wait;
  HCS_OPERATION op;
  PWSTR doc = NULL;
  HRESULT hr;
  char *utf8 = NULL;
  int rc = -1, n, matches;

  dll = LoadLibraryExW(L"computecore.dll", NULL, LOAD_LIBRARY_SEARCH_SYSTEM32);
  if (dll == NULL) {
    snprintf(err, errlen, "cannot find the WSL VM: the Host Compute Service API (computecore.dll) "
             "is not available here (needs Windows 10 1809+; Wine has none); pass --vm-id GUID");
    return -1;
  }
  create_op = (create_op_fn)(void (*)(void))GetProcAddress(dll, "HcsCreateOperation");
  close_op = (close_op_fn)(void (*)(void))GetProcAddress(dll, "HcsCloseOperation");
  enumerate = (enumerate_fn)(void (*)(void))GetProcAddress(dll, "HcsEnumerateComputeSystems");
  wait = (wait_fn)(void (*)(void))GetProcAddress(dll, "HcsWaitForOperationResult");
  if (!create_op || !close_op || !enumerate || !wait) {
    snprintf(err, errlen, "cannot find the WSL VM: computecore.dll lacks the HCS functions; "
             "pass --vm-id GUID");
    goto out_dll;
  }
  op = create_op(NULL, NULL);
  if (op == NULL) {
    snprintf(err, errlen, "cannot find the WSL VM: HcsCreateOperation failed");
    goto out_dll;
  }
  hr = enumerate(NULL, op);
  if (SUCCEEDED(hr))
    hr = wait(op, LR_HCS_TIMEOUT_MS, &doc);
  close_op(op);
  if (FAILED(hr)) {
    snprintf(err, errlen, "cannot find the WSL VM: HcsEnumerateComputeSystems failed "
             "(HRESULT 0x%08lx%s); pass --vm-id GUID", (unsigned long)hr,
             hr == E_ACCESSDENIED ? ", run as administrator" : "");
    goto out_doc;
  }
  n = WideCharToMultiByte(CP_UTF8, 0, doc, -1, NULL, 0, NULL, NULL);
  if (n <= 0 || (utf8 = malloc((size_t)n)) == NULL ||
      WideCharToMultiByte(CP_UTF8, 0, doc, -1, utf8, n, NULL, NULL) != n) {
    snprintf(err, errlen, "cannot find the WSL VM: HCS answer is not valid UTF-16");
    goto out_doc;
  }
  if (lr_hcs_find_wsl_vm(utf8, vmid, &matches, err, errlen) != 0)
    goto out_doc;
  if (matches > 1)
    LR_WARN("HCS lists %d WSL VMs; using the first", matches);
  rc = 0;
out_doc:
  free(utf8);
  if (doc != NULL)
    LocalFree(doc);
out_dll:
  FreeLibrary(dll);
  return rc;
}
