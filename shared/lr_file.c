/* Bounded, non-blocking reads of admin-supplied files; see lr_file.h. */
#include "lr_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

lr_secret_check_fn lr_file_secret_check;

static const char *kind_of(uint64_t mode) {
  switch (mode & S_IFMT) {
#ifdef S_IFIFO
    case S_IFIFO: return "a FIFO";
#endif
    case S_IFCHR: return "a character device";
    case S_IFDIR: return "a directory";
#ifdef S_IFSOCK
    case S_IFSOCK: return "a socket";
#endif
#ifdef S_IFBLK
    case S_IFBLK: return "a block device";
#endif
    default: return "not a regular file";
  }
}

int lr_file_read(const char *path, const char *what, size_t cap, char **out, size_t *len,
                 uv_stat_t *st_out, char *err, size_t errlen) {
  uv_loop_t loop;
  uv_fs_t req;
  char *buf = NULL;
  size_t have = 0;
  int rc = uv_loop_init(&loop);
  *out = NULL;
  *len = 0;
  if (rc) {
    snprintf(err, errlen, "%s %s: %s", what, path, uv_strerror(rc));
    return rc;
  }
  /* Non-blocking: opening a FIFO with no writer must not wait for one. */
  int fd = uv_fs_open(&loop, &req, path, UV_FS_O_RDONLY | UV_FS_O_NONBLOCK, 0, NULL);
  uv_fs_req_cleanup(&req);
  if (fd < 0) {
    snprintf(err, errlen, "%s %s: %s", what, path, uv_strerror(fd));
    rc = fd;
    goto out;
  }
  rc = uv_fs_fstat(&loop, &req, fd, NULL);
  uv_stat_t st = req.statbuf;
  uv_fs_req_cleanup(&req);
  if (rc < 0) {
    snprintf(err, errlen, "%s %s: %s", what, path, uv_strerror(rc));
    goto close;
  }
  if ((st.st_mode & S_IFMT) != S_IFREG) {
    snprintf(err, errlen, "%s %s is %s, not a regular file: refused (it could block or never end)",
             what, path, kind_of(st.st_mode));
    rc = UV_EINVAL;
    goto close;
  }
  if (st.st_size > cap) {
    snprintf(err, errlen, "%s %s is %llu bytes, more than the %zu allowed", what, path,
             (unsigned long long)st.st_size, cap);
    rc = UV_EFBIG;
    goto close;
  }
  if (st_out) *st_out = st;
  buf = malloc(cap + 2);
  if (!buf) {
    snprintf(err, errlen, "%s %s: out of memory", what, path);
    rc = UV_ENOMEM;
    goto close;
  }
  /* The size may change under us: read to EOF, but never past cap + 1. */
  while (have <= cap) {
    uv_buf_t b = uv_buf_init(buf + have, (unsigned)(cap + 1 - have));
    int n = uv_fs_read(&loop, &req, fd, &b, 1, -1, NULL);
    uv_fs_req_cleanup(&req);
    if (n < 0) {
      snprintf(err, errlen, "%s %s: %s", what, path, uv_strerror(n));
      rc = n;
      goto close;
    }
    if (n == 0) break;
    have += (size_t)n;
  }
  if (have > cap) {
    snprintf(err, errlen, "%s %s is more than the %zu bytes allowed", what, path, cap);
    rc = UV_EFBIG;
    goto close;
  }
  buf[have] = '\0';
  *out = buf;
  *len = have;
  buf = NULL;
  rc = 0;
close:
  uv_fs_close(&loop, &req, fd, NULL);
  uv_fs_req_cleanup(&req);
out:
  free(buf);
  uv_loop_close(&loop);
  return rc;
}
