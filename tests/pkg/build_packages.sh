#!/bin/sh
# Makes the .deb and .tar.gz with cpack from this build tree into PKG_DIR
# (emptied first, so no package from an older version is left to be
# checked or collected). The pkg_deb, pkg_lintian and pkg_dist tests check
# and collect exactly these files.
#
# usage: build_packages.sh BUILD_DIR CPACK PKG_DIR
set -u
build=$1 cpack=$2 out=$3

if [ ! -f "$build/CPackConfig.cmake" ]; then
  echo "FAIL: $build/CPackConfig.cmake missing: the top-level CMakeLists.txt must include cmake/LorelayPackaging.cmake" >&2
  exit 1
fi
rm -rf "$out"
mkdir -p "$out" || exit 1
if ! "$cpack" --config "$build/CPackConfig.cmake" -G "DEB;TGZ" -B "$out" >"$out/cpack.log" 2>&1; then
  cat "$out/cpack.log" >&2
  echo "FAIL: cpack failed" >&2
  exit 1
fi
# cpack's staging tree is not a package.
rm -rf "$out/_CPack_Packages"
ls -l "$out"
