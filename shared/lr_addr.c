/* Transport addresses: parsing and formatting of "KIND:..." strings, GUIDs
 * and numeric IP endpoints.
 *
 * Everything here is pure string work so the CLI, the config loader and both
 * platforms accept exactly the same addresses and reject the rest with the
 * same one-line message. Numeric IP conversion goes through libuv's
 * uv_inet_pton/uv_inet_ntop because inet_pton is not portable to the
 * mingw-w64 build; nothing here resolves names or touches a socket. */
#include "lr_addr.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "lr_log.h" /* LR_PRINTF */

#define LR_TCP_PORT_MAX 65535u

/* Writes "bad transport address 'S': <reason>" into err. The address is
 * clipped so a pathological argument cannot push the reason out of view. */
static int LR_PRINTF(4, 5) addr_fail(const char *s, char *err, size_t errlen, const char *fmt, ...) {
  if (err != NULL && errlen > 0) {
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "bad transport address '%.160s%s': %s", s, strlen(s) > 160 ? "..." : "",
             reason);
  }
  return -1;
}

/* Strict decimal: digits only (no sign, no spaces, no hex). Returns 0 with
 * *v set, -1 when not a decimal number, -2 when it exceeds max. Values
 * above UINT32 are still reported as "out of range" by keeping a 64-bit
 * accumulator clamped just past max. */
static int parse_decimal(const char *s, size_t len, uint32_t max, uint64_t *v) {
  uint64_t acc = 0;
  int overflow = 0;
  if (len == 0) return -1;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    if (!overflow) {
      acc = acc * 10 + (uint64_t)(s[i] - '0');
      if (acc > 0xFFFFFFFFull * 10) overflow = 1;
    }
  }
  *v = acc;
  if (overflow || acc > max) return -2;
  return 0;
}

/* The port after the last separator: shared by every kind so "missing port"
 * and "out of range" read the same everywhere. */
static int parse_port(const char *s, const char *p, size_t len, uint32_t max, uint32_t *out,
                      char *err, size_t errlen) {
  uint64_t v = 0;
  if (len == 0) return addr_fail(s, err, errlen, "missing port");
  switch (parse_decimal(p, len, max, &v)) {
  case 0:
    *out = (uint32_t)v;
    return 0;
  case -2:
    if (len > 20) return addr_fail(s, err, errlen, "port %.*s... out of range (0..%lu)", 20, p,
                                   (unsigned long)max);
    return addr_fail(s, err, errlen, "port %.*s out of range (0..%lu)", (int)len, p,
                     (unsigned long)max);
  default:
    return addr_fail(s, err, errlen, "bad port '%.*s' (expected a decimal number)",
                     (int)(len > 40 ? 40 : len), p);
  }
}

static int store_path(const char *s, const char *p, size_t len, lr_taddr_t *out, char *err,
                      size_t errlen) {
  if (len == 0) return addr_fail(s, err, errlen, "missing socket path");
  if (len >= LR_UNIX_PATH_MAX)
    return addr_fail(s, err, errlen, "path too long (%lu bytes, max %d)", (unsigned long)len,
                     LR_UNIX_PATH_MAX - 1);
  memcpy(out->path, p, len);
  out->path[len] = '\0';
  return 0;
}

static int parse_unix(const char *s, const char *rest, lr_taddr_t *out, char *err, size_t errlen) {
  return store_path(s, rest, strlen(rest), out, err, errlen);
}

static int parse_tcp(const char *s, const char *rest, lr_taddr_t *out, char *err, size_t errlen) {
  const char *host, *port;
  size_t hostlen;
  char hostbuf[sizeof out->host];

  if (rest[0] == '[') {
    const char *close = strchr(rest, ']');
    if (close == NULL) return addr_fail(s, err, errlen, "missing ']' after IPv6 address");
    host = rest + 1;
    hostlen = (size_t)(close - host);
    if (close[1] == '\0') return addr_fail(s, err, errlen, "missing port");
    if (close[1] != ':') return addr_fail(s, err, errlen, "expected ':' after ']'");
    port = close + 2;
  } else {
    const char *colon = strrchr(rest, ':');
    if (colon == NULL) {
      if (rest[0] == '\0') return addr_fail(s, err, errlen, "missing host and port");
      return addr_fail(s, err, errlen, "missing port");
    }
    host = rest;
    hostlen = (size_t)(colon - rest);
    if (memchr(host, ':', hostlen) != NULL)
      return addr_fail(s, err, errlen, "IPv6 address must be in brackets, e.g. tcp:[::1]:PORT");
    port = colon + 1;
  }
  if (hostlen == 0) return addr_fail(s, err, errlen, "missing host");
  if (hostlen >= sizeof hostbuf) return addr_fail(s, err, errlen, "host too long");
  memcpy(hostbuf, host, hostlen);
  hostbuf[hostlen] = '\0';

  if (parse_port(s, port, strlen(port), LR_TCP_PORT_MAX, &out->port, err, errlen) < 0) return -1;

  /* The one name accepted: tests and docs say tcp:localhost:N, and mapping
   * it to IPv4 loopback needs no resolver. */
  if (rest[0] != '[' && strcmp(hostbuf, "localhost") == 0) strcpy(hostbuf, "127.0.0.1");
  if (lr_ip_parse(hostbuf, &out->family, out->ip) < 0)
    return addr_fail(s, err, errlen, "bad host '%s' (expected a numeric IPv4 or [IPv6] address)",
                     hostbuf);
  if (rest[0] == '[' && out->family != 6)
    return addr_fail(s, err, errlen, "brackets are only for IPv6 addresses");
  if (rest[0] != '[' && out->family != 4)
    return addr_fail(s, err, errlen, "IPv6 address must be in brackets, e.g. tcp:[::1]:PORT");
  /* Canonical text, so "tcp:[0:0::1]:1" and "tcp:[::1]:1" print alike. */
  if (uv_inet_ntop(out->family == 4 ? AF_INET : AF_INET6, out->ip, out->host, sizeof out->host) != 0)
    memcpy(out->host, hostbuf, hostlen + 1);
  return 0;
}

static int parse_vsock(const char *s, const char *rest, lr_taddr_t *out, char *err, size_t errlen) {
  const char *colon = strchr(rest, ':');
  size_t cidlen = colon != NULL ? (size_t)(colon - rest) : strlen(rest);
  uint64_t v = 0;

  if (cidlen == 0) return addr_fail(s, err, errlen, "missing CID");
  if ((cidlen == 3 && strncmp(rest, "any", 3) == 0) || (cidlen == 2 && strncmp(rest, "-1", 2) == 0)) {
    out->cid = LR_VSOCK_CID_ANY;
  } else if (parse_decimal(rest, cidlen, 0xFFFFFFFFu, &v) == 0) {
    out->cid = (uint32_t)v;
  } else {
    return addr_fail(s, err, errlen, "bad CID '%.*s' (expected a decimal number or 'any')",
                     (int)(cidlen > 40 ? 40 : cidlen), rest);
  }
  if (colon == NULL) return addr_fail(s, err, errlen, "missing port");
  return parse_port(s, colon + 1, strlen(colon + 1), 0xFFFFFFFFu, &out->port, err, errlen);
}

/* The socket path may itself contain colons; the port never does, so the
 * split is at the last one. */
static int parse_fc(const char *s, const char *rest, lr_taddr_t *out, char *err, size_t errlen) {
  const char *colon = strrchr(rest, ':');
  if (colon == NULL) {
    if (rest[0] == '\0') return addr_fail(s, err, errlen, "missing socket path and port");
    return addr_fail(s, err, errlen, "missing port");
  }
  if (store_path(s, rest, (size_t)(colon - rest), out, err, errlen) < 0) return -1;
  return parse_port(s, colon + 1, strlen(colon + 1), 0xFFFFFFFFu, &out->port, err, errlen);
}

/* Well-known Hyper-V socket VM ids, by the names Microsoft's headers use,
 * so a config can say "hvsock:parent:50505" without looking them up. */
static const struct {
  const char *name;
  const char *guid;
} hv_aliases[] = {
    {"any", "00000000-0000-0000-0000-000000000000"},      /* HV_GUID_WILDCARD */
    {"wildcard", "00000000-0000-0000-0000-000000000000"}, /* HV_GUID_WILDCARD */
    {"children", "90DB8B89-0D35-4F79-8CE9-49EA0AC8B7CD"}, /* HV_GUID_CHILDREN */
    {"loopback", "E0E16197-DD56-4A10-9195-5EE7A155A838"}, /* HV_GUID_LOOPBACK */
    {"parent", "A42E7CDA-D03F-480C-9CC2-A4DE20ABB878"},   /* HV_GUID_PARENT */
};

static int parse_hvsock(const char *s, const char *rest, lr_taddr_t *out, char *err, size_t errlen) {
  const char *colon = strrchr(rest, ':');
  size_t idlen = colon != NULL ? (size_t)(colon - rest) : strlen(rest);
  char idbuf[48];
  int ok = -1;

  if (idlen == 0) return addr_fail(s, err, errlen, "missing VM id");
  if (idlen < sizeof idbuf) {
    memcpy(idbuf, rest, idlen);
    idbuf[idlen] = '\0';
    for (size_t i = 0; i < sizeof hv_aliases / sizeof hv_aliases[0]; i++)
      if (strcmp(idbuf, hv_aliases[i].name) == 0) ok = lr_guid_parse(hv_aliases[i].guid, &out->vmid);
    if (ok < 0) ok = lr_guid_parse(idbuf, &out->vmid);
  }
  if (ok < 0)
    return addr_fail(s, err, errlen,
                     "bad GUID '%.*s' (expected XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX)",
                     (int)(idlen > 40 ? 40 : idlen), rest);
  if (colon == NULL) return addr_fail(s, err, errlen, "missing port");
  return parse_port(s, colon + 1, strlen(colon + 1), 0xFFFFFFFFu, &out->port, err, errlen);
}

int lr_taddr_parse(const char *s, lr_taddr_t *out, char *err, size_t errlen) {
  static const struct {
    const char *prefix;
    lr_taddr_kind_t kind;
    int (*parse)(const char *, const char *, lr_taddr_t *, char *, size_t);
  } kinds[] = {
      {"unix", LR_TADDR_UNIX, parse_unix},    {"tcp", LR_TADDR_TCP, parse_tcp},
      {"vsock", LR_TADDR_VSOCK, parse_vsock}, {"fc", LR_TADDR_FC, parse_fc},
      {"hvsock", LR_TADDR_HVSOCK, parse_hvsock},
  };
  const char *colon;
  size_t plen;

  if (err != NULL && errlen > 0) err[0] = '\0';
  if (out == NULL) return -1;
  memset(out, 0, sizeof *out);
  if (s == NULL || s[0] == '\0') {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "empty transport address (expected unix:, tcp:, vsock:, fc: or hvsock:)");
    return -1;
  }
  colon = strchr(s, ':');
  if (colon == NULL)
    return addr_fail(s, err, errlen,
                     "missing transport prefix (expected unix:, tcp:, vsock:, fc: or hvsock:)");
  plen = (size_t)(colon - s);
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    if (strlen(kinds[i].prefix) == plen && strncmp(s, kinds[i].prefix, plen) == 0) {
      out->kind = kinds[i].kind;
      if (kinds[i].parse(s, colon + 1, out, err, errlen) < 0) {
        memset(out, 0, sizeof *out);
        return -1;
      }
      return 0;
    }
  }
  return addr_fail(s, err, errlen, "unknown transport '%.*s' (expected unix, tcp, vsock, fc or hvsock)",
                   (int)(plen > 40 ? 40 : plen), s);
}

char *lr_taddr_format(const lr_taddr_t *a, char *out, size_t outlen) {
  char tmp[64];
  if (out == NULL || outlen == 0) return out;
  switch (a->kind) {
  case LR_TADDR_UNIX:
    snprintf(out, outlen, "unix:%s", a->path);
    break;
  case LR_TADDR_TCP: {
    char ep[80];
    lr_ipport_format(a->family, a->ip, (uint16_t)a->port, ep, sizeof ep);
    snprintf(out, outlen, "tcp:%s", ep);
    break;
  }
  case LR_TADDR_VSOCK:
    if (a->cid == LR_VSOCK_CID_ANY)
      snprintf(out, outlen, "vsock:any:%lu", (unsigned long)a->port);
    else
      snprintf(out, outlen, "vsock:%lu:%lu", (unsigned long)a->cid, (unsigned long)a->port);
    break;
  case LR_TADDR_FC:
    snprintf(out, outlen, "fc:%s:%lu", a->path, (unsigned long)a->port);
    break;
  case LR_TADDR_HVSOCK:
    snprintf(out, outlen, "hvsock:%s:%lu", lr_guid_format(&a->vmid, tmp, sizeof tmp),
             (unsigned long)a->port);
    break;
  default:
    snprintf(out, outlen, "invalid:%d", (int)a->kind);
    break;
  }
  return out;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Reads n hex digits; the fixed layout below guarantees they exist. */
static int read_hex(const char *p, int n, uint32_t *v) {
  uint32_t acc = 0;
  for (int i = 0; i < n; i++) {
    int h = hexval(p[i]);
    if (h < 0) return -1;
    acc = (acc << 4) | (uint32_t)h;
  }
  *v = acc;
  return 0;
}

int lr_guid_parse(const char *s, lr_guid_t *out) {
  size_t len;
  uint32_t v;
  lr_guid_t g;

  if (s == NULL || out == NULL) return -1;
  len = strlen(s);
  if (len == 38) {
    if (s[0] != '{' || s[37] != '}') return -1;
    s++;
    len = 36;
  } else if (len != 36) {
    return -1;
  }
  if (s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-') return -1;
  if (read_hex(s, 8, &v) < 0) return -1;
  g.data1 = v;
  if (read_hex(s + 9, 4, &v) < 0) return -1;
  g.data2 = (uint16_t)v;
  if (read_hex(s + 14, 4, &v) < 0) return -1;
  g.data3 = (uint16_t)v;
  for (int i = 0; i < 2; i++) {
    if (read_hex(s + 19 + 2 * i, 2, &v) < 0) return -1;
    g.data4[i] = (uint8_t)v;
  }
  for (int i = 0; i < 6; i++) {
    if (read_hex(s + 24 + 2 * i, 2, &v) < 0) return -1;
    g.data4[2 + i] = (uint8_t)v;
  }
  *out = g;
  return 0;
}

char *lr_guid_format(const lr_guid_t *g, char *out, size_t outlen) {
  if (out == NULL || outlen == 0) return out;
  snprintf(out, outlen, "%08lX-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X", (unsigned long)g->data1,
           (unsigned)g->data2, (unsigned)g->data3, g->data4[0], g->data4[1], g->data4[2],
           g->data4[3], g->data4[4], g->data4[5], g->data4[6], g->data4[7]);
  return out;
}

void lr_hvsock_service_id(uint32_t port, lr_guid_t *out) {
  static const uint8_t tail[8] = {0xBD, 0x58, 0x64, 0x00, 0x6A, 0x79, 0x86, 0xD3};
  out->data1 = port;
  out->data2 = 0xFACB;
  out->data3 = 0x11E6;
  memcpy(out->data4, tail, sizeof tail);
}

char *lr_ipport_format(int family, const uint8_t ip[16], uint16_t port, char *out, size_t outlen) {
  char host[64];
  if (out == NULL || outlen == 0) return out;
  if ((family != 4 && family != 6) ||
      uv_inet_ntop(family == 4 ? AF_INET : AF_INET6, ip, host, sizeof host) != 0) {
    snprintf(out, outlen, "?:%u", (unsigned)port);
    return out;
  }
  if (family == 6)
    snprintf(out, outlen, "[%s]:%u", host, (unsigned)port);
  else
    snprintf(out, outlen, "%s:%u", host, (unsigned)port);
  return out;
}

int lr_ip_parse(const char *s, int *family, uint8_t ip[16]) {
  uint8_t buf[16];
  if (s == NULL || s[0] == '\0') return -1;
  /* libuv would silently drop a "%zone" suffix; a zone we then ignore is
   * worse than an error. */
  if (strchr(s, '%') != NULL) return -1;
  memset(buf, 0, sizeof buf);
  if (uv_inet_pton(AF_INET, s, buf) == 0) {
    *family = 4;
  } else if (uv_inet_pton(AF_INET6, s, buf) == 0) {
    *family = 6;
  } else {
    return -1;
  }
  memcpy(ip, buf, 16);
  return 0;
}
