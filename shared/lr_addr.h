/* Transport addresses and socket-address formatting.
 *
 * Every way of reaching a guest is one string ("unix:PATH", "tcp:HOST:PORT",
 * "vsock:CID:PORT", "fc:UDS_PATH:PORT", "hvsock:VMID:PORT"), parsed here in
 * one tested place so that the CLI, the config and both platforms agree on
 * what is valid and give the same one-line error for what is not. Parsing is
 * pure: no sockets, no name resolution. */
#ifndef LR_ADDR_H
#define LR_ADDR_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  LR_TADDR_UNIX = 1,   /* path-based AF_UNIX stream socket */
  LR_TADDR_TCP = 2,    /* numeric IPv4/IPv6 + port; needs a token */
  LR_TADDR_VSOCK = 3,  /* AF_VSOCK CID + port (Linux) */
  LR_TADDR_FC = 4,     /* Firecracker / Cloud Hypervisor hybrid vsock */
  LR_TADDR_HVSOCK = 5, /* AF_HYPERV VM id + vsock port (Windows) */
} lr_taddr_kind_t;

#define LR_UNIX_PATH_MAX 108 /* sizeof(sockaddr_un.sun_path) on Linux and Windows */
#define LR_VSOCK_CID_ANY 0xFFFFFFFFu

typedef struct {
  uint32_t data1;
  uint16_t data2, data3;
  uint8_t data4[8];
} lr_guid_t;

typedef struct {
  lr_taddr_kind_t kind;
  char path[LR_UNIX_PATH_MAX]; /* unix, fc: NUL-terminated, strlen < LR_UNIX_PATH_MAX */
  char host[64];               /* tcp: numeric address without brackets */
  int family;                  /* tcp: 4 or 6 */
  uint8_t ip[16];              /* tcp: network order (v4 in first 4 bytes) */
  uint32_t port;               /* tcp: 0..65535 (0 = any, listen only); vsock/fc/hvsock: 32-bit port */
  uint32_t cid;                /* vsock: CID, LR_VSOCK_CID_ANY for "vsock:any:PORT"/"vsock:-1:PORT" */
  lr_guid_t vmid;              /* hvsock: VM id (or a wildcard GUID) */
} lr_taddr_t;

/* Parses s into out. On failure returns -1 and writes a one-line reason
 * (naming the address and what is wrong) into err. */
int lr_taddr_parse(const char *s, lr_taddr_t *out, char *err, size_t errlen);
/* Canonical string form, e.g. "tcp:[::1]:7000". Returns out. */
char *lr_taddr_format(const lr_taddr_t *a, char *out, size_t outlen);

/* "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX" with or without braces. 0 or -1. */
int lr_guid_parse(const char *s, lr_guid_t *out);
/* Upper-case canonical form without braces; out needs 37 bytes. */
char *lr_guid_format(const lr_guid_t *g, char *out, size_t outlen);
/* The hvsocket service id for a vsock port: the vsock template
 * XXXXXXXX-FACB-11E6-BD58-64006A7986D3 with Data1 = port. */
void lr_hvsock_service_id(uint32_t port, lr_guid_t *out);

/* Formats a numeric endpoint as "127.0.0.1:80" or "[::1]:80".
 * family is 4 or 6, ip is in network order. */
char *lr_ipport_format(int family, const uint8_t ip[16], uint16_t port, char *out, size_t outlen);

/* Parses a numeric IPv4 or IPv6 address (no brackets). 0 or -1. */
int lr_ip_parse(const char *s, int *family, uint8_t ip[16]);

#endif
