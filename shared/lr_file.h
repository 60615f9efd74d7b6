/* Reading the small files an administrator gives lorelay (the config, a
 * shared key) without trusting what the path names.
 *
 * A path can name a FIFO (the read blocks the loop until a writer comes),
 * a device (/dev/zero: an endless parse that never returns to the loop, so
 * not even SIGTERM is handled), a directory, or a file far larger than any
 * real config. So the file is opened non-blocking, fstat'ed on the opened
 * descriptor (no race with a rename), refused unless it is a regular file,
 * and read up to a size cap, with a one-line error naming the file and what
 * is wrong. Platform-neutral through libuv's synchronous file calls, on a
 * private loop of its own: no caller's loop is touched or needed.
 *
 * Secret files (keys) are further checked by lr_file_secret_check when the
 * platform sets it (Linux: owner and mode, like ssh with a private key; a
 * Windows file's mode bits mean nothing, its ACL is the installer's). */
#ifndef LR_FILE_H
#define LR_FILE_H

#include <stddef.h>
#include <uv.h>

/* The config's size cap: far beyond any real one. */
#define LR_CONFIG_FILE_MAX (1024 * 1024)

/* Reads the regular file at path whole into a malloc'd, NUL-terminated
 * buffer (*out, *len without the NUL) if it is at most cap bytes. what
 * names the file in errors ("config", "token file"). 0; UV_ENOENT when it
 * does not exist (err filled too); or another negative value with err.
 * st, if not NULL, receives the opened file's status. */
int lr_file_read(const char *path, const char *what, size_t cap, char **out, size_t *len,
                 uv_stat_t *st, char *err, size_t errlen);

/* Set by the platform's main before any key is loaded; NULL: no check. 0
 * when the key file at path, with status st, may be used; -1 with err
 * naming the file, what is wrong and the fix. */
typedef int (*lr_secret_check_fn)(const char *path, const uv_stat_t *st, char *err,
                                  size_t errlen);
extern lr_secret_check_fn lr_file_secret_check;

#endif
