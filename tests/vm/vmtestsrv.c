/* lorelay-vmtestsrv: the servers the VM tier (tests/vm) runs inside its
 * test VM, where busybox has no equivalent: a TCP echo that passes a
 * client's half-close on, a UDP echo for any datagram size, a server that
 * sends a known byte count then closes, one that answers after the client's
 * SHUT_WR, one that resets, and a listener flood.
 *
 * Every mode forks first; the child binds and listens, then the parent prints the
 * serving child's pid and exits 0, so the control shell's command returns
 * only once the socket listens (the host test measures from there) and the
 * pid is what it kills later. The child is a plain blocking or poll() loop:
 * it is a test fixture inside a throw-away VM, so it is small rather than
 * fast, and it never exits by itself.
 *
 * Usage: lorelay-vmtestsrv MODE ADDR PORT [ARG]
 *   echo    ADDR PORT        TCP echo; the client's EOF is echoed as EOF
 *   uecho   ADDR PORT        UDP echo, datagrams up to 65 507 bytes
 *   send    ADDR PORT N      per connection: N bytes (i & 0xff), then close
 *   answer  ADDR PORT        per connection: read to EOF, then "got N\n", close;
 *                            each connection's end is appended to
 *                            /tmp/answer-PORT.log ("eof N" or "error E N")
 *   reset   ADDR PORT        per connection: read one byte, then RST
 *   listen  ADDR PORT [1]    listen and accept nothing; with 1, return at
 *                            once and listen only on SIGUSR1 (the detection
 *                            timing starts a listener with one kill)
 *   flood   ADDR PORT N      N listeners on PORT..PORT+N-1, accept nothing
 * and the VM's control server, started by the image's /init:
 *   ctl     TTY              runs each line "TAG COMMAND" read from TTY with
 *                            /bin/sh -c (stdin /dev/null), writes its output
 *                            then "TAG:STATUS\n"; a command still running
 *                            after 120 s is killed (STATUS 137)
 * ADDR is numeric; "::" is dual-stack, "::v6only" is [::] with IPV6_V6ONLY. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define BUF_SIZE 65536

static void die(const char *what) {
  fprintf(stderr, "lorelay-vmtestsrv: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int open_socket(const char *addr, int port, int type) {
  struct sockaddr_storage ss;
  socklen_t len;
  int v6only = 0;
  memset(&ss, 0, sizeof ss);
  char host[64];
  snprintf(host, sizeof host, "%s", addr);
  char *opt = strstr(host, "v6only");
  if (opt) {
    v6only = 1;
    *opt = 0;
  }
  if (strchr(host, ':')) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1) {
      fprintf(stderr, "lorelay-vmtestsrv: '%s' is not a numeric address\n", addr);
      exit(2);
    }
    len = sizeof *s6;
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &s4->sin_addr) != 1) {
      fprintf(stderr, "lorelay-vmtestsrv: '%s' is not a numeric address\n", addr);
      exit(2);
    }
    len = sizeof *s4;
  }
  int fd = socket(ss.ss_family, type, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
  if (bind(fd, (struct sockaddr *)&ss, len) < 0) die("bind");
  if (type == SOCK_STREAM && listen(fd, 512) < 0) die("listen");
  return fd;
}

/* Forks before the socket exists, so the process that binds and listens
 * (the one the agent reports as the owner) is the one that serves. The
 * parent waits for the child's "listening" byte, prints the child's pid and
 * exits: the caller's command returns only once the socket listens. */
static int ready_fd = -1;

static void fork_server(void) {
  int p[2];
  if (pipe(p) < 0) die("pipe");
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid > 0) {
    char c;
    close(p[1]);
    if (read(p[0], &c, 1) != 1) {
      int st = 0;
      waitpid(pid, &st, 0);
      exit(WIFEXITED(st) ? WEXITSTATUS(st) : 1);
    }
    printf("%d\n", (int)pid);
    exit(0);
  }
  close(p[0]);
  ready_fd = p[1];
  setsid();
}

static void serving(void) {
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (null > 2) close(null);
  }
  (void)!write(ready_fd, "r", 1);
  close(ready_fd);
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* One echo connection: bytes read and not yet written back; eof once the
 * client half-closed (then our write side closes after the last byte). */
typedef struct {
  int fd;
  char *buf;
  size_t len, off;
  int eof;
} conn_t;

static void echo_loop(int lfd) {
  static conn_t conns[MAX_CONNS];
  static struct pollfd pfds[MAX_CONNS + 1];
  int n = 0;
  fcntl(lfd, F_SETFL, O_NONBLOCK);
  for (;;) {
    pfds[0].fd = lfd;
    pfds[0].events = n < MAX_CONNS ? POLLIN : 0;
    for (int i = 0; i < n; i++) {
      pfds[i + 1].fd = conns[i].fd;
      pfds[i + 1].events = conns[i].len > conns[i].off ? POLLOUT : (conns[i].eof ? 0 : POLLIN);
      pfds[i + 1].revents = 0;
    }
    if (poll(pfds, (nfds_t)n + 1, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    for (int i = 0; i < n; i++) {
      conn_t *c = &conns[i];
      short re = pfds[i + 1].revents;
      int done = 0;
      if (re & POLLOUT) {
        ssize_t w = write(c->fd, c->buf + c->off, c->len - c->off);
        if (w < 0 && errno != EAGAIN && errno != EINTR) done = 1;
        if (w > 0) c->off += (size_t)w;
        if (c->off == c->len) c->off = c->len = 0;
        if (!done && c->eof && c->len == 0) {
          shutdown(c->fd, SHUT_WR);
          done = 1;
        }
      } else if (re & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t r = read(c->fd, c->buf, BUF_SIZE);
        if (r < 0 && errno != EAGAIN && errno != EINTR) done = 1;
        if (r == 0) {
          c->eof = 1;
          shutdown(c->fd, SHUT_WR);
          done = 1;
        }
        if (r > 0) c->len = (size_t)r;
      }
      if (done) {
        close(c->fd);
        free(c->buf);
        conns[i] = conns[n - 1];
        pfds[i + 1] = pfds[n];
        n--;
        i--;
      }
    }
    if (pfds[0].revents & POLLIN) {
      for (;;) {
        if (n >= MAX_CONNS) break;
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) break;
        conns[n].fd = fd;
        conns[n].buf = malloc(BUF_SIZE);
        if (!conns[n].buf) die("malloc");
        conns[n].len = conns[n].off = 0;
        conns[n].eof = 0;
        pfds[n + 1].revents = 0;
        n++;
      }
    }
  }
}

static void uecho_loop(int fd) {
  static char buf[65536];
  for (;;) {
    struct sockaddr_storage from;
    socklen_t flen = sizeof from;
    ssize_t r = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
    if (r < 0) {
      if (errno == EINTR) continue;
      die("recvfrom");
    }
    if (sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&from, flen) < 0)
      fprintf(stderr, "lorelay-vmtestsrv: sendto %zd bytes: %s\n", r, strerror(errno));
  }
}

/* Sequential servers: one connection at a time is all these cases need, and
 * each child is reaped so no zombie piles up in the VM. */
static void per_conn_loop(const char *mode, int lfd, int port, long n) {
  static char buf[BUF_SIZE];
  for (;;) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR) continue;
      die("accept");
    }
    if (strcmp(mode, "send") == 0) {
      for (long sent = 0; sent < n;) {
        size_t k = (size_t)(n - sent < BUF_SIZE ? n - sent : BUF_SIZE);
        for (size_t i = 0; i < k; i++) buf[i] = (char)((sent + (long)i) & 0xff);
        if (write_all(fd, buf, k) < 0) break;
        sent += (long)k;
      }
    } else if (strcmp(mode, "answer") == 0) {
      long got = 0;
      ssize_t r;
      while ((r = read(fd, buf, sizeof buf)) > 0) got += r;
      int err = r < 0 ? errno : 0;
      char path[64];
      snprintf(path, sizeof path, "/tmp/answer-%d.log", port);
      FILE *f = fopen(path, "a");
      if (f) {
        if (err)
          fprintf(f, "error %s %ld\n", strerrorname_np(err) ? strerrorname_np(err) : "?", got);
        else
          fprintf(f, "eof %ld\n", got);
        fclose(f);
      }
      int k = snprintf(buf, sizeof buf, "got %ld\n", got);
      if (!err) write_all(fd, buf, (size_t)k);
    } else { /* reset */
      char c;
      (void)!read(fd, &c, 1);
      struct linger lg = {1, 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(fd);
  }
}

/* The host drives the VM through this: a busybox shell on the serial port
 * would be interactive (job control, prompts) and stopped answering once a
 * background pipeline ended; here every command is its own non-interactive
 * sh, and the answer ends when that sh exits, not when its output pipe
 * closes (a server it left in the background may hold the pipe open). */
static int run_command(int tty, const char *tag, const char *cmd) {
  int p[2];
  if (pipe(p) < 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int null = open("/dev/null", O_RDONLY);
    dup2(null, 0);
    dup2(p[1], 1);
    dup2(p[1], 2);
    close(p[0]);
    close(p[1]);
    close(tty);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  char buf[4096];
  int status = 0, done = 0;
  time_t deadline = time(NULL) + 120;
  while (!done) {
    struct pollfd pf = {p[0], POLLIN, 0};
    poll(&pf, 1, 5);
    ssize_t r;
    while ((r = read(p[0], buf, sizeof buf)) > 0) write_all(tty, buf, (size_t)r);
    if (waitpid(pid, &status, WNOHANG) == pid) done = 1;
    else if (time(NULL) > deadline) kill(pid, SIGKILL);
  }
  ssize_t r;
  while ((r = read(p[0], buf, sizeof buf)) > 0) write_all(tty, buf, (size_t)r);
  close(p[0]);
  int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  int k = snprintf(buf, sizeof buf, "\n%s:%d\n", tag, rc);
  return write_all(tty, buf, (size_t)k);
}

static void ctl_loop(const char *path) {
  int tty = open(path, O_RDWR | O_NOCTTY);
  if (tty < 0) die(path);
  struct termios t;
  if (tcgetattr(tty, &t) == 0) {
    cfmakeraw(&t);
    tcsetattr(tty, TCSANOW, &t);
  }
  static char line[8192];
  size_t len = 0;
  for (;;) {
    char c;
    ssize_t r = read(tty, &c, 1);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      usleep(100000);
      continue;
    }
    if (c == '\r') continue;
    if (c != '\n') {
      if (len < sizeof line - 1) line[len++] = c;
      continue;
    }
    line[len] = 0;
    len = 0;
    char *sp = strchr(line, ' ');
    if (!sp || strncmp(line, "@@@", 3) != 0) continue; /* noise from before the host attached */
    *sp = 0;
    run_command(tty, line, sp + 1);
  }
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "ctl") == 0) {
    ctl_loop(argv[2]);
    return 1;
  }
  if (argc < 4) {
    fprintf(stderr, "usage: lorelay-vmtestsrv echo|uecho|send|answer|reset|listen|flood ADDR PORT [N]\n");
    return 2;
  }
  const char *mode = argv[1], *addr = argv[2];
  int port = atoi(argv[3]);
  long n = argc > 4 ? atol(argv[4]) : 0;
  signal(SIGPIPE, SIG_IGN);
  fork_server();
  if (port <= 0 || port > 65535) {
    fprintf(stderr, "lorelay-vmtestsrv: port '%s' is not 1-65535\n", argv[3]);
    return 2;
  }
  if (strcmp(mode, "flood") == 0) {
    struct rlimit rl = {(rlim_t)n + 64, (rlim_t)n + 64};
    if (n <= 0 || port + n - 1 > 65535) {
      fprintf(stderr, "lorelay-vmtestsrv: flood count '%ld' does not fit above port %d\n", n, port);
      return 2;
    }
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) die("setrlimit");
    for (long i = 0; i < n; i++) open_socket(addr, port + (int)i, SOCK_STREAM);
    serving();
    for (;;) pause();
  }
  if (strcmp(mode, "uecho") == 0) {
    int fd = open_socket(addr, port, SOCK_DGRAM);
    serving();
    uecho_loop(fd);
  }
  if (strcmp(mode, "listen") == 0 && n == 1) {
    sigset_t set;
    int sig;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    serving();
    sigwait(&set, &sig);
    open_socket(addr, port, SOCK_STREAM);
    for (;;) pause();
  }
  int lfd = open_socket(addr, port, SOCK_STREAM);
  if (strcmp(mode, "echo") == 0) {
    serving();
    echo_loop(lfd);
  } else if (strcmp(mode, "listen") == 0) {
    serving();
    for (;;) pause();
  } else if (strcmp(mode, "send") == 0 || strcmp(mode, "answer") == 0 ||
             strcmp(mode, "reset") == 0) {
    serving();
    per_conn_loop(mode, lfd, port, n);
  }
  fprintf(stderr, "lorelay-vmtestsrv: unknown mode '%s'\n", mode);
  return 2;
}
