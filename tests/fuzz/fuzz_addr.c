/* libFuzzer target: transport addresses (lr_taddr_parse / lr_taddr_format),
 * GUIDs and numeric IPs (lr_addr.h).
 *
 * The addresses come from the command line and the config file, and a WSL
 * VM id from the HCS, so every string must parse or fail with a bounded,
 * terminated message. What parses must survive formatting: the canonical
 * form is what status shows and what a resolved guest is compared by, so
 * parse(format(parse(x))) must equal parse(x) field by field, and the
 * canonical text must be a fixed point of format(parse(.)). */
#include <string.h>

#include "fuzz_common.h"
#include "lr_addr.h"

static void check_err(const char *err, size_t cap) {
  FZ_CHECK(memchr(err, '\0', cap) != NULL);
  FZ_CHECK(err[0] != '\0'); /* a failure always says why */
}

static void check_same(const lr_taddr_t *a, const lr_taddr_t *b) {
  FZ_CHECK(a->kind == b->kind);
  switch (a->kind) {
    case LR_TADDR_UNIX:
      FZ_CHECK(strcmp(a->path, b->path) == 0);
      break;
    case LR_TADDR_TCP:
      FZ_CHECK(a->family == b->family && memcmp(a->ip, b->ip, sizeof a->ip) == 0);
      FZ_CHECK(strcmp(a->host, b->host) == 0 && a->port == b->port);
      break;
    case LR_TADDR_VSOCK:
      FZ_CHECK(a->cid == b->cid && a->port == b->port);
      break;
    case LR_TADDR_FC:
      FZ_CHECK(strcmp(a->path, b->path) == 0 && a->port == b->port);
      break;
    case LR_TADDR_HVSOCK:
      FZ_CHECK(memcmp(&a->vmid, &b->vmid, sizeof a->vmid) == 0 && a->port == b->port);
      break;
    default:
      FZ_CHECK(!"parse returned an unknown kind");
  }
}

static void check_invariants(const lr_taddr_t *a) {
  switch (a->kind) {
    case LR_TADDR_UNIX:
    case LR_TADDR_FC:
      FZ_CHECK(a->path[0] != '\0' && memchr(a->path, '\0', sizeof a->path) != NULL);
      break;
    case LR_TADDR_TCP:
      FZ_CHECK((a->family == 4 || a->family == 6) && a->port <= 65535);
      FZ_CHECK(memchr(a->host, '\0', sizeof a->host) != NULL);
      break;
    default:
      break;
  }
}

static void fuzz_taddr(const char *s) {
  lr_taddr_t a, b, c;
  char err[256], text[512], text2[512];

  if (lr_taddr_parse(s, &a, err, sizeof err) != 0) {
    check_err(err, sizeof err);
    /* Small and absent error buffers are legal too. */
    char tiny[7];
    FZ_CHECK(lr_taddr_parse(s, &b, tiny, sizeof tiny) != 0);
    FZ_CHECK(memchr(tiny, '\0', sizeof tiny) != NULL);
    FZ_CHECK(lr_taddr_parse(s, &b, NULL, 0) != 0);
    return;
  }
  check_invariants(&a);
  lr_taddr_format(&a, text, sizeof text);
  FZ_CHECK(strlen(text) < sizeof text - 1); /* not cut: the round trip below is exact */
  if (lr_taddr_parse(text, &b, err, sizeof err) != 0) {
    fprintf(stderr, "'%s' parses, its canonical form '%s' does not: %s\n", s, text, err);
    abort();
  }
  check_same(&a, &b);
  lr_taddr_format(&b, text2, sizeof text2);
  FZ_CHECK(strcmp(text, text2) == 0);
  FZ_CHECK(lr_taddr_parse(text2, &c, NULL, 0) == 0);
  check_same(&a, &c);

  char small[9];
  lr_taddr_format(&a, small, sizeof small);
  FZ_CHECK(strncmp(small, text, sizeof small - 1) == 0);
}

static void fuzz_guid(const char *s) {
  lr_guid_t g, h;
  char text[40];
  if (lr_guid_parse(s, &g) != 0) return;
  lr_guid_format(&g, text, sizeof text);
  FZ_CHECK(strlen(text) == 36);
  FZ_CHECK(lr_guid_parse(text, &h) == 0 && memcmp(&g, &h, sizeof g) == 0);
}

static void fuzz_ip(const char *s, uint16_t port) {
  int family = 0, f2 = 0;
  uint8_t ip[16], ip2[16];
  char text[80], host[80];
  if (lr_ip_parse(s, &family, ip) != 0) return;
  FZ_CHECK(family == 4 || family == 6);
  lr_ipport_format(family, ip, port, text, sizeof text);
  /* "1.2.3.4:P" or "[v6]:P": strip the port (and brackets), parse again. */
  char *colon = strrchr(text, ':');
  FZ_CHECK(colon != NULL);
  *colon = '\0';
  if (family == 6) {
    size_t n = strlen(text);
    FZ_CHECK(n >= 2 && text[0] == '[' && text[n - 1] == ']');
    memcpy(host, text + 1, n - 2);
    host[n - 2] = '\0';
  } else {
    memcpy(host, text, strlen(text) + 1);
  }
  FZ_CHECK(lr_ip_parse(host, &f2, ip2) == 0 && f2 == family);
  FZ_CHECK(memcmp(ip, ip2, family == 4 ? 4 : 16) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = fz_strdup(data, size);
  fuzz_taddr(s);
  fuzz_guid(s);
  fuzz_ip(s, (uint16_t)(size * 257));
  /* The input as the tail of each kind, so the mutator need not find the
   * prefixes first. */
  static const char *const kinds[] = {"unix:", "tcp:", "vsock:", "fc:", "hvsock:"};
  char *t = malloc(size + 8);
  FZ_CHECK(t != NULL);
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    size_t k = strlen(kinds[i]);
    memcpy(t, kinds[i], k);
    memcpy(t + k, s, strlen(s) + 1);
    fuzz_taddr(t);
  }
  free(t);
  free(s);
  return 0;
}
