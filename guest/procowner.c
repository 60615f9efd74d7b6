/* Socket owners from /proc; see lr_procowner.h. */
#include "lr_procowner.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int cmp_query(const void *a, const void *b) {
  uint32_t x = ((const lr_owner_query_t *)a)->inode, y = ((const lr_owner_query_t *)b)->inode;
  return x < y ? -1 : x > y;
}

static int all_digits(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return 0;
  return 1;
}

/* "socket:[12345]" -> 12345; 0 for anything else. */
static uint32_t socket_inode(const char *link) {
  if (strncmp(link, "socket:[", 8) != 0) return 0;
  char *end;
  unsigned long v = strtoul(link + 8, &end, 10);
  return *end == ']' && v <= 0xffffffffu ? (uint32_t)v : 0;
}

static size_t read_small(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, cap);
  close(fd);
  return n > 0 ? (size_t)n : 0;
}

static void read_command(const char *proc, const char *pid, lr_proc_owner_t *o) {
  char path[300], buf[LR_CMD_MAX + 2];
  snprintf(path, sizeof path, "%s/%s/cmdline", proc, pid);
  size_t n = read_small(path, buf, sizeof buf - 1);
  while (n && buf[n - 1] == '\0') n--; /* the last argument's NUL */
  for (size_t i = 0; i < n; i++)
    if (buf[i] == '\0') buf[i] = ' ';
  if (n == 0) { /* a kernel thread, or a process that cleared its arguments */
    snprintf(path, sizeof path, "%s/%s/comm", proc, pid);
    char comm[64];
    size_t c = read_small(path, comm, sizeof comm - 1);
    while (c && (comm[c - 1] == '\n' || comm[c - 1] == '\0')) c--;
    for (size_t i = 0; i < c; i++)
      if (comm[i] == '\0') comm[i] = ' ';
    comm[c] = '\0';
    snprintf(buf, sizeof buf, "[%s]", comm);
    n = strlen(buf);
  }
  if (n > LR_CMD_MAX) n = LR_CMD_MAX;
  memcpy(o->cmd, buf, n);
  o->cmd[n] = '\0';
  lr_utf8_sanitize(o->cmd);
}

static ino_t netns_of(const char *proc, const char *pid) {
  char path[300];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s/ns/net", proc, pid);
  return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* One process: marks the queries its descriptors hold. Returns how many
 * it found. */
static size_t scan_pid(const char *proc, const char *pid, lr_owner_query_t *q, size_t n) {
  char path[300], link[64];
  snprintf(path, sizeof path, "%s/%s/fd", proc, pid);
  DIR *d = opendir(path);
  if (!d) return 0; /* gone, or not ours to look at */
  size_t found = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    ssize_t l = readlinkat(dirfd(d), de->d_name, link, sizeof link - 1);
    if (l <= 0) continue;
    link[l] = '\0';
    lr_owner_query_t key;
    key.inode = socket_inode(link);
    if (!key.inode) continue;
    lr_owner_query_t *hit = bsearch(&key, q, n, sizeof *q, cmp_query);
    if (!hit) continue;
    /* bsearch may land on any of equal inodes: walk to the first. */
    while (hit > q && hit[-1].inode == key.inode) hit--;
    lr_proc_owner_t o;
    int have = 0;
    for (; hit < q + n && hit->inode == key.inode; hit++) {
      if (hit->owner.pid) continue;
      if (!have) {
        memset(&o, 0, sizeof o);
        o.pid = (uint32_t)strtoul(pid, NULL, 10);
        read_command(proc, pid, &o);
        have = 1;
      }
      hit->owner = o;
      found++;
    }
  }
  closedir(d);
  return found;
}

/* pass 0: processes in our network namespace; pass 1: the rest. */
static size_t walk(const char *proc, lr_owner_query_t *q, size_t n, size_t left, ino_t ours,
                   int pass) {
  DIR *d = opendir(proc);
  if (!d) return 0;
  size_t found = 0;
  struct dirent *de;
  while (found < left && (de = readdir(d)) != NULL) {
    if (!all_digits(de->d_name)) continue;
    if (ours && (netns_of(proc, de->d_name) == ours) != (pass == 0)) continue;
    found += scan_pid(proc, de->d_name, q, n);
  }
  closedir(d);
  return found;
}

size_t lr_procowner_lookup(const char *proc, lr_owner_query_t *q, size_t n) {
  if (!n) return 0;
  for (size_t i = 0; i < n; i++) memset(&q[i].owner, 0, sizeof q[i].owner);
  qsort(q, n, sizeof *q, cmp_query);
  ino_t ours = netns_of(proc, "self");
  size_t found = walk(proc, q, n, n, ours, 0);
  if (found < n && ours) found += walk(proc, q, n, n - found, ours, 1);
  return found;
}
