/* libFuzzer target: the Host Compute Service answer parser of the Windows
 * host (lr_hcs_find_wsl_vm in host/win32/hcs_json.c), built on Linux
 * against Debian's cJSON (see hcs_json_posix.h for how).
 *
 * The document comes from another program, so any text must give either a
 * GUID or a terminated one-line reason, never a read of a field of the
 * wrong type. A GUID that comes out must survive formatting (it becomes
 * the hvsock address lorelayd connects to). */
#include <string.h>

#include "fuzz_common.h"
#include "hcs_json_posix.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *json = fz_strdup(data, size);
  lr_guid_t id, back;
  int matches = -1;
  char err[256];
  err[0] = '\0';

  int rc = lr_hcs_find_wsl_vm(json, &id, &matches, err, sizeof err);
  FZ_CHECK(rc == 0 || rc == -1);
  FZ_CHECK(matches >= 0);
  if (rc == 0) {
    char text[40];
    FZ_CHECK(matches >= 1);
    lr_guid_format(&id, text, sizeof text);
    FZ_CHECK(lr_guid_parse(text, &back) == 0 && memcmp(&id, &back, sizeof id) == 0);
  } else {
    FZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
    /* A reason cut to a tiny buffer is still terminated inside it. */
    char *tiny = malloc(8);
    FZ_CHECK(tiny != NULL);
    FZ_CHECK(lr_hcs_find_wsl_vm(json, &id, &matches, tiny, 8) == -1);
    FZ_CHECK(memchr(tiny, '\0', 8) != NULL);
    free(tiny);
  }
  free(json);
  return 0;
}
