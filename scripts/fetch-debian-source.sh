#!/bin/sh
# Fetches one pinned Debian source package for the Windows cross build,
# checks it and unpacks it. Called by scripts/deps.sh for each line of
# cmake/win32-deps.lock; not by the CMake configure step.
#
# The win64 build compiles libuv, inih, cmocka and cJSON from Debian's own
# source packages instead of vendoring them: the only place third-party code
# comes from is the apt sources this machine already trusts. When those
# sources only have "deb" entries, a deb-src twin is derived from them (never
# a host name written by us), so a fresh machine needs nothing else.
#
# Usage: fetch-debian-source.sh PKG VERSION RELEASE SHA256 DESTDIR
#   Leaves the unpacked tree in DESTDIR/PKG with a .lorelay-verified marker
#   holding "PKG VERSION RELEASE SHA256", which the build checks. A tree whose
#   marker already says exactly that is kept as it is (no network).
#   Anything else that goes wrong is one line on stderr naming the package,
#   the version wanted and what was found, and exit status 1. There is no
#   fallback to another version or another release: those are chosen in the
#   lock file, nowhere else.
set -eu

if [ $# -ne 5 ]; then
  echo "usage: $0 PKG VERSION RELEASE SHA256 DESTDIR" >&2
  exit 2
fi
pkg=$1 version=$2 release=$3 sha=$4 dest=$5
ME=fetch-debian-source
. "$(dirname "$0")/debian-apt.sh"

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
want="$pkg $version $release $sha"
marker="$dest/$pkg/.lorelay-verified"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
  echo "fetch-debian-source: $pkg $version ($release) already verified" >&2
  exit 0
fi

have_deb_src() {
  grep -qsE '^[[:space:]]*deb-src[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list && return 0
  grep -qsE '^[[:space:]]*Types:.*deb-src' /etc/apt/sources.list.d/*.sources && return 0
  return 1
}

# The derived file mirrors every "deb" source as "deb-src", copying URIs,
# suites, components and keys from what is already configured.
enable_deb_src() {
  out=/etc/apt/sources.list.d/lorelay-deb-src.sources
  tmp=$(mktemp)
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    # deb822: one stanza per blank-line-separated block; keep only stanzas
    # whose Types contain "deb", rewrite that line to "deb-src".
    awk '
      BEGIN { RS = ""; ORS = "\n\n" }
      {
        n = split($0, lines, "\n"); keep = 0; out = ""
        for (i = 1; i <= n; i++) {
          l = lines[i]
          if (l ~ /^[ \t]*#/) continue
          if (l ~ /^Types:/) {
            if (l ~ /(^|[ \t])deb([ \t]|$)/) keep = 1
            l = "Types: deb-src"
          }
          if (l ~ /^Architectures:/) continue
          out = out l "\n"
        }
        if (keep) printf "%s\n", out
      }' /etc/apt/sources.list.d/debian.sources >"$tmp"
  elif [ -f /etc/apt/sources.list ]; then
    {
      echo "# Derived from /etc/apt/sources.list by lorelay's fetch-debian-source.sh"
      sed -n 's/^[[:space:]]*deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}/deb-src \1/p' /etc/apt/sources.list
    } >"$tmp"
    out=/etc/apt/sources.list.d/lorelay-deb-src.list
  else
    rm -f "$tmp"
    echo "fetch-debian-source: no /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list to derive deb-src from" >&2
    return 1
  fi
  if ! grep -q 'deb-src' "$tmp"; then
    rm -f "$tmp"
    echo "fetch-debian-source: found no 'deb' entries to derive deb-src from" >&2
    return 1
  fi
  as_root install -m 0644 "$tmp" "$out"
  rm -f "$tmp"
  echo "fetch-debian-source: enabled deb-src in $out" >&2
  as_root apt-get update -qq >&2
}

# dpkg-source (dpkg-dev) unpacks and checks the tarballs; dpkg-parsechangelog
# reads the version the unpacked tree says it is.
command -v dpkg-source >/dev/null 2>&1 || as_root apt-get install -y -qq dpkg-dev >&2

. /etc/os-release
host_release=${VERSION_CODENAME:-}

# APT options: the machine's own configuration for its own release; for any
# other release a private state under DESTDIR whose only entries are that
# release's deb-src lines. Only the suite name is ours: archive URIs and keys
# are copied from the configured sources. The binary caches are switched off
# so the private lists never replace the system's cache files.
if [ "$release" = "$host_release" ]; then
  have_deb_src || enable_deb_src
  set --
  update() { as_root apt-get update -qq >&2; }
else
  state="$dest/.apt-$release"
  lr_apt_private_state "$state" deb-src signed-by=/usr/share/keyrings/debian-archive-keyring.gpg
  set -- -o Dir::Etc::sourcelist="$state/sources.list" -o Dir::Etc::sourceparts=- \
         -o Dir::State::Lists="$state/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
  update() { apt-get "$@" update -qq >&2; }
  [ -n "$(ls "$state/lists" 2>/dev/null | grep -v -e '^partial$' -e '^lock$')" ] || update "$@" ||
    die "$pkg: wanted $version from $release, but apt-get update of $release's sources failed"
fi

# Which versions of PKG the archive offers (as source package, not binary).
offered() {
  apt-cache "$@" showsrc --only-source "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | sort -u | tr '\n' ' ' | sed 's/ $//'
}
lr_apt_want_version offered update "$@"

work=$(mktemp -d "$dest/.fetch-$pkg.XXXXXX")
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get "$@" -o APT::Sandbox::User=root source --download-only -qq "$pkg=$version" >"$work/apt.log" 2>&1); then
  die "$pkg: wanted $version ($release), listed but apt-get source could not download it: $(grep -E '^(E|Err):' "$work/apt.log" | head -n 1)"
fi

# The .dsc file name drops an epoch ("1:2.0-1" -> "_2.0-1.dsc").
dsc="$work/${pkg}_${version#*:}.dsc"
[ -f "$dsc" ] || die "$pkg: wanted $version ($release), but apt-get source left no $(basename "$dsc")"
got=$(sha256sum "$dsc" | cut -d' ' -f1)
[ "$got" = "$sha" ] ||
  die "$pkg $version: .dsc sha256 wanted $sha (cmake/win32-deps.lock), found $got"

# dpkg-source checks every tarball against the checksums in the .dsc and
# fails on a mismatch. Without Debian's developer keyring it cannot check the
# uploader's signature and says so; the pinned .dsc hash stands in for it.
if ! (cd "$work" && dpkg-source -x "$dsc" "$work/tree" >"$work/unpack.log" 2>&1); then
  cat "$work/unpack.log" >&2
  die "$pkg $version: dpkg-source -x failed"
fi
tree_version=$(dpkg-parsechangelog -l "$work/tree/debian/changelog" -S Version)
[ "$tree_version" = "$version" ] ||
  die "$pkg: wanted $version, the unpacked debian/changelog says $tree_version"

rm -rf "${dest:?}/$pkg"
mv "$work/tree" "$dest/$pkg"
# Keep the .dsc beside the tree: it says what was built, with its hashes.
cp "$dsc" "$dest/"
echo "$want" >"$dest/$pkg/.lorelay-verified"
echo "fetch-debian-source: $pkg $version ($release) fetched and verified" >&2
