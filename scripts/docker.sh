#!/usr/bin/env bash
# Makes sure Docker's daemon and client are installed (Debian's docker.io),
# for `make image` and the container test (deploy/container), which starts
# a daemon of its own. Installs nothing when dockerd is already there;
# starts no daemon. Used by `make test` and `make image`.
set -euo pipefail
if command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ]; then exit 0; fi
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
echo "docker: installing docker.io from Debian packages" >&2
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
