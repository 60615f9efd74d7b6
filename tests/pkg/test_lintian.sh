#!/bin/sh
# Runs Debian's lintian on the .deb the pkg_build test made. Errors (E:) and
# warnings (W:) fail the test: they are what would keep the package out of a
# distribution. Informational and pedantic tags (I:, P:) are printed, not
# counted: they are suggestions. Those left at the time of writing:
#   binary-has-unneeded-section .comment  cpack strips with plain `strip`,
#     which keeps the compiler's version note (dh_strip would remove it);
#   package-supports-alternative-init-but-no-init.d-script  lorelay ships
#     systemd units only, no sysvinit scripts.
#
# usage: test_lintian.sh PKG_DIR VERSION
# Exit 0 pass, 1 fail, 77 skip (lintian missing outside CI; in CI, as
# tests/lrci.sh defines it, a missing lintian is a failure).
set -u
. "$(dirname "$0")/../lrci.sh"
pkgdir=$1 version=$2

if ! command -v lintian >/dev/null 2>&1; then
  lr_skip_or_fail "pkg_lintian: lintian not found (scripts/deps.sh test installs it)"
fi
deb="$pkgdir/lorelay_${version}_$(dpkg --print-architecture).deb"
if [ ! -f "$deb" ]; then
  echo "FAIL: $deb not found (see the pkg_build test)" >&2
  exit 1
fi

out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT INT TERM
# --fail-on error,warning: lintian's exit status says whether any E: or W:
# tag was emitted (or lintian could not run at all).
lintian --fail-on error,warning --display-info --pedantic --tag-display-limit 0 "$deb" >"$out" 2>&1
rc=$?
cat "$out"
if [ $rc -ne 0 ]; then
  echo "FAIL: lintian exited $rc: $(grep -c -E '^[EW]: ' "$out") error/warning tag(s) for $(basename "$deb")" >&2
  exit 1
fi
echo "lintian: no errors or warnings for $(basename "$deb")"
