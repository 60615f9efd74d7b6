# Sourced by scripts/fetch-debian-source.sh and fetch-debian-binary.sh: the
# parts of fetching one pinned package that both do the same way.
#
# - The arguments of a lock line are checked the same way (a package name,
#   a release name, a sha256), and ME names the script in every message.
# - Another Debian release is read through a private apt state: a sources
#   list of our own under STATE whose only entries are that release, with
#   the archive URIs and keys copied from the apt sources this machine
#   already has (the only name we write is the suite), and package lists
#   kept there too. The machine's apt configuration is never changed.
# - A version missing from lists older than the lock gets one update, then
#   the answer is final.
# The caller sets ME, pkg, version, release, sha before sourcing.

die() { echo "$ME: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else
    echo "$ME: $pkg: need root (run as root)" >&2
    return 1
  fi
}

case $pkg in
  *[!a-z0-9.+-]*|'') echo "$ME: bad package name '$pkg'" >&2; exit 2 ;;
esac
case $release in
  *[!a-z-]*|'') echo "$ME: $pkg: bad release name '$release'" >&2; exit 2 ;;
esac
case $sha in
  *[!0-9a-f]*|'') echo "$ME: $pkg: the lock's sha256 '$sha' is not a sha256" >&2; exit 2 ;;
esac

# lr_apt_private_state STATE TYPE OPTIONS: writes STATE/sources.list with
# one "TYPE [OPTIONS] URI $release main" line per configured Debian archive.
lr_apt_private_state() {
  mkdir -p "$1/lists/partial"
  uris=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' /etc/apt/sources.list.d/*.sources 2>/dev/null;
         sed -n 's/^[[:space:]]*deb\(-src\)\{0,1\}[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\).*/\3/p' \
           /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  : >"$1/sources.list.new"
  for u in $(printf "%s\n" $uris | sort -u); do
    case $u in
      */debian|*/debian/) echo "$2 [$3] $u $release main" >>"$1/sources.list.new" ;;
    esac
  done
  [ -s "$1/sources.list.new" ] ||
    die "$pkg: wanted $version from $release, but no configured apt source is a Debian archive to read $release from"
  mv "$1/sources.list.new" "$1/sources.list"
}

# lr_apt_want_version OFFERED_FN UPDATE_FN APT-OPTIONS...: succeeds when
# OFFERED_FN lists $version, after at most one UPDATE_FN; dies otherwise.
lr_apt_want_version() {
  offered_fn=$1 update_fn=$2
  shift 2
  found=$($offered_fn "$@")
  case " $found " in
    *" $version "*) return 0 ;;
  esac
  $update_fn "$@" || true
  found=$($offered_fn "$@")
  case " $found " in
    *" $version "*) return 0 ;;
  esac
  die "$pkg: wanted $version ($release), apt offers ${found:-nothing}"
}
