#!/bin/sh
# Collects the release files into dist/ and checks each one there: the
# Windows zip (from the win64 build), the .deb and .tar.gz (from the pkg_build
# test) and SHA256SUMS over the three. dist/ is what CI uploads; it is
# emptied first, so it never holds files of another version.
#
# usage: test_dist.sh SOURCE_DIR PKG_DIR WIN64_ZIP VERSION
set -u
src=$1 pkgdir=$2 zip=$3 version=$4
dist="$src/dist"
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

arch=$(dpkg --print-architecture)
deb="$pkgdir/lorelay_${version}_${arch}.deb"
tgz="$pkgdir/lorelay-${version}-linux-${arch}.tar.gz"
for f in "$deb" "$tgz"; do
  [ -f "$f" ] || { echo "FAIL: $f not found (see the pkg_build test)" >&2; exit 1; }
done
if [ ! -f "$zip" ]; then
  echo "FAIL: $zip not found: build the win64 preset (cmake --build --preset win64 makes it; scripts/test.sh does)" >&2
  exit 1
fi
for tool in unzip dpkg sha256sum tar; do
  command -v $tool >/dev/null 2>&1 || { echo "FAIL: $tool not found (scripts/deps.sh test)" >&2; exit 1; }
done

rm -rf "$dist"
mkdir -p "$dist" || exit 1
cp "$zip" "$deb" "$tgz" "$dist/" || exit 1
zip=$dist/$(basename "$zip") deb=$dist/$(basename "$deb") tgz=$dist/$(basename "$tgz")
(cd "$dist" && sha256sum -- *.zip *.deb *.tar.gz >SHA256SUMS) || exit 1

# --- the zip: intact, one top directory named after the version, and the
# programs, scripts, sample config, README and licences in it.
top="lorelay-${version}-win64"
unzip -tq "$zip" >/dev/null || fail "$(basename "$zip") does not test as a valid zip"
unzip -Z1 "$zip" >"$dist/.zip.list" 2>/dev/null || fail "unzip -Z1 failed"
grep -v "^$top/" "$dist/.zip.list" >"$dist/.stray" && { cat "$dist/.stray" >&2; fail "zip entries outside $top/"; }
for f in lorelayd.exe lorelayctl.exe install.cmd uninstall.cmd lorelay.ini README.txt LICENSE.txt \
         licenses/libuv1-copyright.txt licenses/libinih-copyright.txt licenses/cjson-copyright.txt; do
  grep -qxF "$top/$f" "$dist/.zip.list" || fail "zip lacks $top/$f"
done
ok "zip: $(grep -vc '/$' "$dist/.zip.list") files under $top/"

# --- the .deb: dpkg reads it, and it has the programs, units and docs.
dpkg -c "$deb" >"$dist/.deb.list" 2>&1 || { cat "$dist/.deb.list" >&2; fail "dpkg -c $(basename "$deb") failed"; }
for f in usr/bin/lorelayd usr/bin/lorelay-agent usr/bin/lorelay-init usr/bin/lorelayctl \
         usr/lib/systemd/system/lorelayd@.service usr/share/doc/lorelay/copyright \
         usr/share/doc/lorelay/changelog.gz etc/lorelay/lorelay.ini; do
  awk '{print $6}' "$dist/.deb.list" | grep -qxF "./$f" || fail ".deb lacks /$f"
done
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail ".deb Version is '$(dpkg-deb -f "$deb" Version)', want $version"
ok "deb: $(grep -vc '/$' "$dist/.deb.list") files, dpkg -c reads it"

# --- the .tar.gz: same files as the .deb (test_deb.sh compares them).
tar -tzf "$tgz" >"$dist/.tgz.list" 2>&1 || fail "tar -tzf $(basename "$tgz") failed"
grep -qx './usr/bin/lorelayd\|usr/bin/lorelayd' "$dist/.tgz.list" || fail "tar.gz lacks usr/bin/lorelayd"
ok "tar.gz: $(grep -vc '/$' "$dist/.tgz.list") files"

# --- SHA256SUMS: covers exactly the three files, and each one matches.
if (cd "$dist" && sha256sum -c --strict SHA256SUMS); then
  [ "$(wc -l <"$dist/SHA256SUMS")" -eq 3 ] || fail "SHA256SUMS should list 3 files"
else
  fail "sha256sum -c SHA256SUMS failed"
fi
rm -f "$dist"/.zip.list "$dist"/.deb.list "$dist"/.tgz.list "$dist"/.stray

if [ $fails -ne 0 ]; then
  echo "$fails check(s) failed" >&2
  exit 1
fi
echo "dist: $(cd "$dist" && ls | tr '\n' ' ')"
exit 0
