/* Reading the Host Compute Service's answer to HcsEnumerateComputeSystems:
 * which compute system is the WSL utility VM, and what its hvsock VM id is.
 *
 * Pure (text in, GUID out) and separate from hcs.c so it is tested under
 * Wine, which has no HCS. Parsed with Debian's cJSON rather than by hand:
 * the document comes from another program, and every field is checked for
 * type before use. */
#include "lr_sbuf.h"
#include "lr_win32.h"

#include <stdio.h>
#include <string.h>
#include <cJSON.h>

static const char *str_field(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int str_ieq(const char *a, const char *b) {
  return a != NULL && lr_streq_nocase(a, b);
}

int lr_hcs_find_wsl_vm(const char *json, lr_guid_t *vmid, int *matches, char *err, size_t errlen) {
  cJSON *doc, *it;
  const char *chosen = NULL, *chosen_field = NULL;
  int n = 0, rc = -1;

  *matches = 0;
  if (json == NULL) {
    snprintf(err, errlen, "HCS returned no document");
    return -1;
  }
  doc = cJSON_Parse(json);
  if (doc == NULL) {
    snprintf(err, errlen, "HCS answer is not valid JSON");
    return -1;
  }
  if (!cJSON_IsArray(doc)) {
    snprintf(err, errlen, "HCS answer is not a JSON array of compute systems");
    goto out;
  }
  cJSON_ArrayForEach(it, doc) {
    const char *id, *field = "RuntimeId";
    if (!cJSON_IsObject(it))
      continue;
    if (!str_ieq(str_field(it, "Owner"), "WSL") ||
        !str_ieq(str_field(it, "SystemType"), "VirtualMachine"))
      continue;
    /* A WSL VM being torn down keeps its entry for a moment. */
    const char *state = str_field(it, "State");
    if (state != NULL && (str_ieq(state, "Stopped") || str_ieq(state, "SavedAsTemplate")))
      continue;
    id = str_field(it, "RuntimeId");
    if (id == NULL) {
      id = str_field(it, "Id");
      field = "Id";
    }
    if (id == NULL)
      continue;
    if (n++ == 0) {
      chosen = id;
      chosen_field = field;
    }
  }
  *matches = n;
  if (n == 0) {
    snprintf(err, errlen, "no running WSL VM found (no compute system with Owner \"WSL\" "
             "and SystemType \"VirtualMachine\"); start WSL or pass --vm-id GUID");
    goto out;
  }
  if (lr_guid_parse(chosen, vmid) != 0) {
    snprintf(err, errlen, "the WSL VM's %s '%.64s' is not a GUID", chosen_field, chosen);
    goto out;
  }
  rc = 0;
out:
  cJSON_Delete(doc);
  return rc;
}
