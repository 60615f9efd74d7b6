#!/bin/sh
# The folders are the architecture: the guest links no host code, and the
# status client links neither the daemon core nor libcrypto. Checked on the
# built binaries, so a stray include that drags the host core in (as the
# token reader once did, through lr_hostd.h) fails here.
#   check_links.sh BIN_DIR HOST_CORE_LIB
set -eu
bin=$1 lib=$2
fail=0
for t in nm ldd; do
  command -v $t >/dev/null 2>&1 || { echo "check_links: $t not found (binutils, libc-bin)"; exit 1; }
done
[ -f "$lib" ] || { echo "check_links: $lib not built"; exit 1; }
core=$(mktemp)
trap 'rm -f "$core"' EXIT
# Every function and object the host core defines.
nm --defined-only -g "$lib" 2>/dev/null | awk 'NF == 3 && $2 ~ /[TDBR]/ { print $3 }' | sort -u >"$core"
n=$(wc -l <"$core")
[ "$n" -gt 50 ] || { echo "check_links: only $n symbols read from $lib"; exit 1; }
for exe in lorelay-agent lorelay-init lorelayctl; do
  [ -x "$bin/$exe" ] || { echo "check_links: $bin/$exe not built"; fail=1; continue; }
  found=$(nm --defined-only "$bin/$exe" | awk '{ print $NF }' | sort -u | comm -12 - "$core" | head -n 5)
  if [ -n "$found" ]; then
    echo "FAIL: $exe contains host-core symbols: $(echo $found)"
    fail=1
  else
    echo "ok: $exe has none of the host core's $n symbols"
  fi
done
if ldd "$bin/lorelayctl" | grep -q libcrypto; then
  echo "FAIL: lorelayctl links libcrypto"
  fail=1
else
  echo "ok: lorelayctl does not link libcrypto"
fi
# And the check can fail: lorelayd does carry the core.
if ! nm --defined-only "$bin/lorelayd" | awk '{ print $NF }' | sort -u | comm -12 - "$core" | grep -q .; then
  echo "FAIL: lorelayd shows no host-core symbol: the check reads the wrong thing"
  fail=1
fi
exit $fail
