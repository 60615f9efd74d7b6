/* libFuzzer target: the hybrid-vsock reply parser, lr_fc_parse_reply.
 *
 * The reply comes from the VMM's Unix socket (Firecracker, Cloud
 * Hypervisor) before any lorelay framing, and the host calls the parser
 * again after every read with everything received so far. So besides
 * memory safety: an accepted reply must be exactly "OK <n>\n" as
 * consumed, its canonical spelling must give the same port, and every
 * strict prefix of it must ask for more (a reply split across reads must
 * never be refused). */
#include <string.h>

#include "fuzz_common.h"
#include "lr_proto.h"
#include "lr_transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = (char *)fz_dup(data, size);
  uint32_t port = 0;
  size_t used = 0;
  int rc = lr_fc_parse_reply(buf, size, &port, &used);
  FZ_CHECK(rc == LR_PROTO_OK || rc == LR_PROTO_NEED_MORE || rc == LR_PROTO_EINVAL);

  if (rc == LR_PROTO_NEED_MORE) {
    /* Waiting is bounded: no newline yet, and at most one line's worth. */
    FZ_CHECK(size <= 32 && memchr(buf, '\n', size) == NULL);
  } else if (rc == LR_PROTO_OK) {
    FZ_CHECK(used >= 5 && used <= size && buf[used - 1] == '\n');
    FZ_CHECK(memcmp(buf, "OK ", 3) == 0);
    for (size_t i = 3; i < used - 1; i++) FZ_CHECK(buf[i] >= '0' && buf[i] <= '9');

    char canon[32];
    int n = snprintf(canon, sizeof canon, "OK %u\n", port);
    uint32_t port2 = 0;
    size_t used2 = 0;
    FZ_CHECK(lr_fc_parse_reply(canon, (size_t)n, &port2, &used2) == LR_PROTO_OK);
    FZ_CHECK(port2 == port && used2 == (size_t)n);

    for (size_t k = 0; k < used; k++) {
      char *prefix = (char *)fz_dup(data, k);
      uint32_t p3;
      size_t u3;
      int rc3 = lr_fc_parse_reply(prefix, k, &p3, &u3);
      free(prefix);
      if (rc3 != LR_PROTO_NEED_MORE) {
        fprintf(stderr, "reply accepted whole, refused after %zu of its %zu bytes\n", k, used);
        abort();
      }
    }
  }

  /* The request side: the line lorelayd writes must fit its buffer. */
  char req[32];
  size_t rn = lr_fc_request(port, req, sizeof req);
  FZ_CHECK(rn > 0 && rn < sizeof req && req[rn - 1] == '\n');
  free(buf);
  return 0;
}
