#!/usr/bin/env bash
# One command from a fresh clone to a running lorelay: installs what is
# missing, builds the Linux preset and starts lorelayd with a demo guest
# network namespace (default "lorelay-demo"; pass another name as $1).
set -euo pipefail
cd "$(dirname "$0")/.."
ns=${1:-lorelay-demo}

scripts/deps.sh run
cmake --preset linux -DLORELAY_TESTS=OFF >/dev/null
cmake --build --preset linux -j"$(nproc)"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi
bin=$PWD/build/linux/bin
cat <<MSG

lorelay is starting: guest network namespace "$ns" -> this host's loopback.
In another terminal, start a server inside the guest:

    ${SUDO[*]:+${SUDO[*]} }ip netns exec $ns python3 -m http.server 8000

then reach it from the host:

    curl http://127.0.0.1:8000/
    ${SUDO[*]:+${SUDO[*]} }$bin/lorelayctl status

Stop with Ctrl-C.
MSG
exec "${SUDO[@]}" "$bin/lorelayd" --netns "$ns"
