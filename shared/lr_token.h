/* Loading the shared key (a token file) that both lorelayd and the agent
 * prove they know on every stream. One reader for both sides, so the two
 * accept and refuse exactly the same files. */
#ifndef LR_TOKEN_H
#define LR_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "lr_proto.h" /* LR_KEY_MIN, LR_TOKEN_MAX */

/* Reads a token file (the shared key): a regular file (lr_file_read),
 * accepted by lr_file_secret_check when the platform set one (owner and
 * mode), surrounding whitespace trimmed, LR_KEY_MIN..LR_TOKEN_MAX bytes, at
 * least LR_KEY_MIN_DISTINCT distinct byte values and not one pattern
 * repeated. 0, or -1 with a one-line reason and the fix in err. */
int lr_token_load_file(const char *path, uint8_t *tok, size_t *len, char *err, size_t errlen);

#endif
