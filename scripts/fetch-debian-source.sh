#!/bin/sh
# Fetches and unpacks a Debian source package for the Windows cross build.
#
# The win64 build compiles libuv, inih, cmocka and cJSON from Debian's own
# source packages instead of vendoring them (BRIEF §7): the only place third
# party code comes from is the apt sources this machine already trusts. When
# those sources only have "deb" entries, a deb-src twin is derived from them
# (never a host name written by us), so a fresh machine needs nothing else.
#
# Usage: fetch-debian-source.sh PKG DESTDIR
#   Leaves the unpacked tree in DESTDIR/PKG (a stable name the build refers
#   to) and prints that path. Idempotent: an existing DESTDIR/PKG is reused.
set -eu

if [ $# -ne 2 ]; then
  echo "usage: $0 PKG DESTDIR" >&2
  exit 2
fi
pkg=$1
dest=$2

case $pkg in
  *[!a-z0-9.+-]*|'') echo "fetch-debian-source: bad package name '$pkg'" >&2; exit 2 ;;
esac

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
if [ -f "$dest/$pkg/.lorelay-unpacked" ]; then
  echo "$dest/$pkg"
  exit 0
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else
    echo "fetch-debian-source: need root to enable deb-src (run as root, or add deb-src lines yourself)" >&2
    return 1
  fi
}

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

# apt-get source needs dpkg-source (dpkg-dev) to unpack.
if ! command -v dpkg-source >/dev/null 2>&1; then
  as_root apt-get install -y -qq dpkg-dev >&2
fi

if ! have_deb_src; then
  enable_deb_src
fi

# Some mirrors (seen with a snapshot-pinned proxy) list a source package but
# answer 404 for its files. Then the same archive is asked for the next
# Debian release's version of that one package, through a private apt state
# under DESTDIR, so the machine's own apt configuration is not changed and
# no other package is pulled from that suite. Only the suite name is ours:
# archive URIs and keys are copied from the configured sources.
fetch_from_suite() {
  suite=$1
  state="$dest/.apt-$suite"
  mkdir -p "$state/lists/partial"
  uris=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' /etc/apt/sources.list.d/*.sources 2>/dev/null;
         sed -n 's/^[[:space:]]*deb\(-src\)\{0,1\}[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\).*/\3/p' \
           /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null)
  : >"$state/sources.list"
  for u in $(printf "%s\n" $uris | sort -u); do
    case $u in
      */debian|*/debian/) echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $u $suite main" >>"$state/sources.list" ;;
    esac
  done
  [ -s "$state/sources.list" ] || return 1
  set -- -o Dir::Etc::sourcelist="$state/sources.list" -o Dir::Etc::sourceparts=- \
         -o Dir::State::Lists="$state/lists"
  apt-get "$@" update -qq >&2 || return 1
  echo "fetch-debian-source: $pkg: configured suites failed, using Debian $suite's source package" >&2
  (cd "$work" && apt-get "$@" -o APT::Sandbox::User=root source -qq "$pkg" >&2)
}

work=$(mktemp -d "$dest/.fetch-$pkg.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Try first with the lists as they are; a machine that never ran apt-get
# update since deb-src was added needs one more update.
if ! (cd "$work" && apt-get -o APT::Sandbox::User=root source -qq "$pkg" >&2); then
  as_root apt-get update -qq >&2 || true
  if ! (cd "$work" && apt-get -o APT::Sandbox::User=root source -qq "$pkg" >&2); then
    ok=
    for suite in ${LORELAY_DEBSRC_FALLBACK_SUITES-trixie}; do
      rm -rf "$work"/*
      if fetch_from_suite "$suite"; then ok=1; break; fi
    done
    if [ -z "$ok" ]; then
      echo "fetch-debian-source: could not fetch Debian source package $pkg" >&2
      exit 1
    fi
  fi
fi
srcdir=
for d in "$work"/*/; do
  [ -d "$d" ] && srcdir=${d%/}
done
if [ -z "$srcdir" ]; then
  echo "fetch-debian-source: apt-get source $pkg unpacked nothing" >&2
  exit 1
fi
rm -rf "$dest/$pkg"
mv "$srcdir" "$dest/$pkg"
# Keep the .dsc beside it: it says which Debian version was built.
cp "$work"/*.dsc "$dest/" 2>/dev/null || true
touch "$dest/$pkg/.lorelay-unpacked"
echo "$dest/$pkg"
