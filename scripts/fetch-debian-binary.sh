#!/bin/sh
# Fetches one pinned Debian binary package from another Debian release and
# installs it. Called by scripts/deps.sh for each line of cmake/vm-deps.lock.
#
# The VM test tier needs vhost-device-vsock (rust-vmm's vhost-user vsock
# backend), which Debian ships in a newer release than the one this project
# builds on. Its dependencies (libc6, libgcc-s1) are met by the machine's
# own release, so the one .deb is all that is taken from the other release.
# It is read through a private apt state (sources list and package lists
# under DESTDIR): the machine's apt configuration is never changed, and the
# archive URIs and keys are the ones already configured here (the only name
# we write is the suite), exactly as scripts/fetch-debian-source.sh does for
# the Windows build's sources.
#
# Usage: fetch-debian-binary.sh PKG VERSION RELEASE SHA256 DESTDIR
#   A PKG already installed at VERSION is left as it is (no network).
#   Otherwise PKG=VERSION is downloaded with apt-get download, its sha256
#   checked against the lock's, and installed with dpkg -i. Anything that
#   goes wrong is one line on stderr naming the package, what was wanted and
#   what was found, and exit status 1. There is no fallback to another
#   version: versions are chosen in the lock file, nowhere else.
set -eu

if [ $# -ne 5 ]; then
  echo "usage: $0 PKG VERSION RELEASE SHA256 DESTDIR" >&2
  exit 2
fi
pkg=$1 version=$2 release=$3 sha=$4 dest=$5
ME=fetch-debian-binary
. "$(dirname "$0")/debian-apt.sh"

installed=$(dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>/dev/null || true)
if [ "$installed" = "install ok installed $version" ]; then
  echo "fetch-debian-binary: $pkg $version already installed" >&2
  exit 0
fi

arch=$(dpkg --print-architecture)
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
state="$dest/.apt-$release-bin"
mkdir -p "$state/archives/partial"
lr_apt_private_state "$state" deb "arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg"
# The private lists, and no binary caches, so the system's own cache files
# are never replaced by ones that know $release.
set -- -o Dir::Etc::sourcelist="$state/sources.list" -o Dir::Etc::sourceparts=- \
       -o Dir::State::Lists="$state/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= \
       -o Dir::Cache::archives="$state/archives" -o APT::Architectures::="$arch"
update() { apt-get "$@" update -qq >&2; }

offered() {
  apt-cache "$@" madison "$pkg" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' | sort -u | tr '\n' ' ' | sed 's/ $//'
}
[ -n "$(ls "$state/lists" 2>/dev/null | grep -v -e '^partial$' -e '^lock$')" ] || update "$@" ||
  die "$pkg: wanted $version from $release, but apt-get update of $release's sources failed"
lr_apt_want_version offered update "$@"

work=$(mktemp -d "$dest/.fetch-$pkg.XXXXXX")
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get "$@" -o APT::Sandbox::User=root download -qq "$pkg=$version" >"$work/apt.log" 2>&1); then
  die "$pkg: wanted $version ($release), listed but apt-get download failed: $(grep -E '^(E|Err):' "$work/apt.log" | head -n 1)"
fi
deb=$(ls "$work"/*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || die "$pkg: wanted $version ($release), but apt-get download left no .deb"
got=$(sha256sum "$deb" | cut -d' ' -f1)
[ "$got" = "$sha" ] ||
  die "$pkg $version: .deb sha256 wanted $sha (cmake/vm-deps.lock), found $got"
debver=$(dpkg-deb -f "$deb" Version)
[ "$debver" = "$version" ] || die "$pkg: wanted $version, the .deb says $debver"
# Keep the verified .deb beside the state: it says what was installed.
cp "$deb" "$dest/"
as_root dpkg -i "$dest/$(basename "$deb")" >&2 ||
  die "$pkg $version: dpkg -i failed (its Depends must be met by this release)"
echo "fetch-debian-binary: $pkg $version ($release) fetched, verified and installed" >&2
