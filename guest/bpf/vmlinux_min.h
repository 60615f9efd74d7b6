/* The kernel types listen_trace.bpf.c uses, and nothing else: a committed,
 * minimal stand-in for the vmlinux.h that `bpftool btf dump file
 * /sys/kernel/btf/vmlinux format c` prints, so the eBPF object is built
 * the same on every machine, whatever kernel (if any, with or without BTF)
 * the build runs on.
 *
 * Why this is enough: every kernel structure is marked
 * preserve_access_index, so clang records each field access as a CO-RE
 * relocation (type name + field names), and libbpf resolves it at load
 * time against the running kernel's own BTF. The layouts below only have to
 * name the fields; their offsets here are never used on a kernel whose
 * layout differs. Inner members may be declared flat: libbpf finds a field
 * inside the kernel's anonymous unions and structs by name (skc_num sits in
 * skc_portpair's anonymous struct). sk_protocol and sk_userlocks are read
 * with BPF_CORE_READ_BITFIELD_PROBED, which works whether the running
 * kernel has them as bitfields (sk_protocol before Linux 5.6, sk_userlocks
 * in older kernels) or as whole bytes. struct bpf_sock is the UAPI context of the cgroup socket
 * hooks (include/uapi/linux/bpf.h), given whole with its stable offsets.
 * The constants are the UAPI values of the same header.
 *
 * How it was derived: the object was built once against a full vmlinux.h
 * of Linux 6.18, then `bpftool gen min_core_btf /sys/kernel/btf/vmlinux
 * min.btf build/linux/guest/bpf/listen_trace.bpf.o` and `bpftool btf dump
 * file min.btf format c` listed exactly the types and fields its CO-RE
 * relocations touch; those are the members below (padding dropped).
 *
 * When listen_trace.bpf.c reads a new kernel field: add it here, under its
 * kernel name and type (from `bpftool btf dump file /sys/kernel/btf/vmlinux
 * format c`), and run scripts/bpf-core-check.sh, which checks that every
 * CO-RE relocation of the built object resolves against a kernel's BTF
 * (this machine's by default, or any BTF file given, such as an older
 * distribution kernel's). The unit test test_guest_bpfwatch loads and
 * attaches the object on the running kernel. */
#ifndef LR_VMLINUX_MIN_H
#define LR_VMLINUX_MIN_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum; /* named by bpf_helper_defs.h */
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef _Bool bool;

/* include/uapi/linux/bpf.h */
enum bpf_map_type {
  BPF_MAP_TYPE_SK_STORAGE = 24,
  BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
  BPF_F_NO_PREALLOC = (1U << 0),
};

enum {
  BPF_SK_STORAGE_GET_F_CREATE = (1ULL << 0),
};

struct bpf_sock {
  __u32 bound_dev_if;
  __u32 family;
  __u32 type;
  __u32 protocol;
  __u32 mark;
  __u32 priority;
  __u32 src_ip4;
  __u32 src_ip6[4];
  __u32 src_port; /* host byte order */
  __be16 dst_port;
  __u16 : 16;
  __u32 dst_ip4;
  __u32 dst_ip6[4];
  __u32 state;
  __s32 rx_queue_mapping;
} __attribute__((preserve_access_index));

/* include/linux/ns_common.h, include/net/net_namespace.h */
struct ns_common {
  unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
  struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
  struct net *net;
} __attribute__((preserve_access_index)) possible_net_t;

/* include/net/sock.h */
struct sock_common {
  __u16 skc_num; /* in the kernel: inside an anonymous union/struct (skc_portpair) */
  unsigned short skc_family;
  possible_net_t skc_net;
} __attribute__((preserve_access_index));

struct sock {
  struct sock_common __sk_common;
  u8 sk_userlocks; /* a 4-bit bitfield in older kernels: read with the probed bitfield macro */
  u16 sk_protocol; /* an 8-bit bitfield before Linux 5.6: likewise */
} __attribute__((preserve_access_index));

#endif
