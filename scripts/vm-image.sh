#!/bin/sh
# Builds the test VM's initramfs from a build tree: busybox-static, lorelay's
# guest binaries (and lorelayctl, lorelay-vmtestsrv) with the libraries ldd
# lists and the dynamic loader, the kernel modules a bare Debian kernel needs
# for virtio-vsock and the agent's socket scan, and an /init.
#
# The VM boots Debian's own kernel (linux-image-amd64) under QEMU with this
# initramfs as its only file system: nothing is installed into a disk image,
# so the image always holds exactly the build tree under test and takes a
# second to make. /init mounts what the agent needs (proc, sys, devtmpfs,
# cgroup2 for its UDP hooks, bpffs and tracefs for its eBPF trigger), brings
# lo up, inserts the modules, starts a control server on the second serial
# port (the host test drives the VM through it), and then becomes
# `lorelay-init -- --listen vsock:any:PORT`: the VM's PID 1 is lorelay's own
# supervisor, the "VM whose init is lorelay-init" of docs/setups.md.
#
# Usage: vm-image.sh BIN_DIR OUT_DIR [KERNEL_RELEASE] [EXTRA_FILE...]
#   BIN_DIR         build/linux/bin (lorelay-init, lorelay-agent, lorelayctl)
#   OUT_DIR         gets initramfs.cpio (uncompressed: under TCG the kernel
#                   would spend longer inflating it than cpio takes to write)
#                   and vmlinuz (a symlink to the kernel to boot)
#   KERNEL_RELEASE  "" (or left out): the newest /boot/vmlinuz-* with a
#                   matching /lib/modules/RELEASE
#   EXTRA_FILE      more executables for /bin, as absolute paths
#                   (lorelay-vmtestsrv: the test servers, and the control
#                   server /init starts on the second serial port)
# Environment: LORELAY_VM_AGENT_PORT (default 50505), LORELAY_VM_AGENT_ARGS
# (more agent arguments, default "--log-level debug").
set -eu

die() { echo "vm-image: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: $0 BIN_DIR OUT_DIR [KERNEL_RELEASE] [EXTRA_FILE...]"
bindir=$1 out=$2
shift 2
kver=
if [ $# -gt 0 ] && [ -n "$1" ] && [ "${1#/}" = "$1" ]; then kver=$1; shift; fi
[ $# -gt 0 ] && [ -z "$1" ] && shift

if [ -z "$kver" ]; then
  for k in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V); do
    r=${k#/boot/vmlinuz-}
    [ -f "/lib/modules/$r/modules.dep" ] && kver=$r
  done
fi
[ -n "$kver" ] || die "no /boot/vmlinuz-* with its /lib/modules/*/modules.dep (apt-get install linux-image-amd64)"
kernel=/boot/vmlinuz-$kver
moddir=/lib/modules/$kver
[ -r "$kernel" ] || die "$kernel is not readable"
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || die "busybox not found (apt-get install busybox-static)"
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' ||
  ldd "$busybox" 2>&1 | grep -q 'not a dynamic' ||
  die "$busybox is not statically linked (apt-get install busybox-static)"
for b in lorelay-init lorelay-agent lorelayctl; do
  [ -x "$bindir/$b" ] || die "$bindir/$b is missing (build the linux preset first)"
done

mkdir -p "$out"
root=$(mktemp -d "$out/.root.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/sbin" "$root/etc/lorelay" "$root/lib/modules" "$root/proc" "$root/sys" \
         "$root/dev" "$root/tmp" "$root/run" "$root/root"
cp "$busybox" "$root/bin/busybox"

# Binaries, then every library ldd names, at the same path (so the loader
# finds them without a cache), plus the loader itself.
copy_exe() {
  cp "$1" "$root/bin/"
  ldd "$1" 2>/dev/null | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }' | while read -r lib; do
    [ -e "$root$lib" ] && continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
for b in lorelay-init lorelay-agent lorelayctl; do copy_exe "$bindir/$b"; done
for f in "$@"; do
  [ -x "$f" ] || die "extra file $f is not an executable"
  copy_exe "$f"
done

# Modules: the wanted ones and everything modules.dep says they need,
# dependencies first, decompressed here (busybox insmod may not inflate).
# A module that is built into this kernel (modules.builtin) is skipped.
builtin_file=$moddir/modules.builtin
[ -f "$builtin_file" ] || builtin_file=/dev/null
want="virtio_pci vmw_vsock_virtio_transport inet_diag tcp_diag udp_diag ipv6"
# awk, for its local variables: a depth-first walk of modules.dep that
# prints each module's path after those it depends on, once. A name missing
# from modules.dep but listed in modules.builtin prints nothing; one in
# neither prints "MISSING name".
order=$(awk -v want="$want" -v builtin="$builtin_file" '
  function base(p,   b) { b = p; sub(/.*\//, "", b); sub(/\.ko.*/, "", b); return b }
  function visit(name,   i, n, d) {
    if (name in done) return
    done[name] = 1
    if (!(name in path)) {
      if (!(name in bi)) print "MISSING " name
      return
    }
    n = split(deps[name], d, " ")
    for (i = 1; i <= n; i++) visit(base(d[i]))
    print path[name]
  }
  FILENAME == builtin { bi[base($0)] = 1; next }
  { p = $1; sub(/:$/, "", p); b = base(p); path[b] = p; $1 = ""; deps[b] = $0 }
  END { n = split(want, w, " "); for (i = 1; i <= n; i++) visit(w[i]) }
' "$builtin_file" "$moddir/modules.dep")
case $order in *MISSING*)
  die "kernel $kver has neither a module nor a built-in for: $(echo "$order" | sed -n 's/^MISSING //p' | tr '\n' ' ')" ;;
esac
n=0
: >"$root/lib/modules/order"
for path in $order; do
  base=$(basename "$path"); base=${base%%.ko*}.ko
  case $path in
    *.ko.xz) xz -dc "$moddir/$path" >"$root/lib/modules/$base" ;;
    *.ko.zst) zstd -qdc "$moddir/$path" >"$root/lib/modules/$base" ;;
    *.ko.gz) gzip -dc "$moddir/$path" >"$root/lib/modules/$base" ;;
    *) cp "$moddir/$path" "$root/lib/modules/$base" ;;
  esac
  echo "$base" >>"$root/lib/modules/order"
  n=$((n + 1))
done

port=${LORELAY_VM_AGENT_PORT:-50505}
agent_args=${LORELAY_VM_AGENT_ARGS:---log-level debug}
: >"$root/etc/lorelay/agent.ini"
cat >"$root/init" <<INIT
#!/bin/busybox sh
# The test VM's init (written by scripts/vm-image.sh).
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /sys/fs/cgroup /sys/fs/bpf
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
hostname lrvm
ip link set lo up
# The VM's own client sockets (the agent's connections to guest servers)
# take their ports from 50000 up, away from the ports the tests bind in it.
echo "50000 60999" >/proc/sys/net/ipv4/ip_local_port_range
while read -r m; do
  insmod /lib/modules/\$m || echo "lrvm-init: insmod \$m failed"
done </lib/modules/order
echo "lrvm-init: modules inserted"
# The host test's control server on the second serial port (lorelay-
# vmtestsrv ctl: one line per command, each run by its own sh), when the
# image carries it.
if [ -x /bin/lorelay-vmtestsrv ]; then
  setsid /bin/lorelay-vmtestsrv ctl /dev/ttyS1 </dev/null >/dev/null 2>&1 &
fi
echo "lrvm-init: starting lorelay-init (agent on vsock:any:$port)"
exec /bin/lorelay-init -- --listen vsock:any:$port -c /etc/lorelay/agent.ini --name lrvm $agent_args
INIT
chmod 755 "$root/init"

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$out/initramfs.cpio.new"
mv "$out/initramfs.cpio.new" "$out/initramfs.cpio"
ln -sf "$kernel" "$out/vmlinuz"
echo "vm-image: $out/initramfs.cpio: kernel $kver, $n modules, $(du -k "$out/initramfs.cpio" | cut -f1) KiB" >&2
