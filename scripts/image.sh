#!/usr/bin/env bash
# Builds Tandem's container image (deploy/Dockerfile): static binaries of the
# api, webhook, worker and tandemctl (CGO_ENABLED=0) and this machine's CA
# certificates copied into a FROM scratch image with Docker's classic builder,
# so nothing is pulled. Used by `make image` and by the container test
# (deploy/container).
#
#   IMAGE     the tag to build (default tandem:dev)
#   DOCKER    the docker client (default: docker); DOCKER_HOST picks the daemon
#   CA_CERTS  the CA bundle to copy (default /etc/ssl/certs/ca-certificates.crt)
#   IMAGE_TAR when no Docker daemon answers, the image is built by a daemon
#             started for this build alone and saved to this file (default
#             bin/tandem-image.tar; `docker load -i` it where you push from)
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-tandem:dev}
DOCKER=${DOCKER:-docker}
CA_CERTS=${CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
IMAGE_TAR=${IMAGE_TAR:-bin/tandem-image.tar}
GO=${GO:-go}
log() { printf 'image: %s\n' "$*" >&2; }

[ -r "$CA_CERTS" ] || { log "no CA certificates at $CA_CERTS (apt-get install ca-certificates)"; exit 1; }
ctx=$(mktemp -d)
tmpd=""
cleanup() {
  rm -rf "$ctx"
  if [ -n "$tmpd" ]; then
    [ -f "$tmpd/docker.pid" ] && kill "$(cat "$tmpd/docker.pid")" 2>/dev/null && \
      for _ in $(seq 100); do [ -e "$tmpd/docker.sock" ] || break; sleep 0.2; done
    umount -l "$tmpd/exec/netns/default" 2>/dev/null || true
    rm -rf "$tmpd"
  fi
}
trap cleanup EXIT

mkdir -p "$ctx/bin"
CGO_ENABLED=0 "$GO" build -trimpath -ldflags='-s -w' -o "$ctx/bin/" \
  ./cmd/api ./cmd/webhook ./cmd/worker ./cmd/tandemctl
cp "$CA_CERTS" "$ctx/ca-certificates.crt"
cp deploy/Dockerfile "$ctx/Dockerfile"

save=""
if ! "$DOCKER" info >/dev/null 2>&1; then
  # No daemon: start one for this build (root only), as the test does.
  [ "$(id -u)" = 0 ] || { log "no Docker daemon answers (DOCKER_HOST=${DOCKER_HOST:-default}); start one or run as root"; exit 1; }
  tmpd=$(mktemp -d /tmp/tandem-image-dockerd-XXXXXX)
  dockerd --iptables=false --bridge=none --data-root "$tmpd/data" --exec-root "$tmpd/exec" \
    --pidfile "$tmpd/docker.pid" -H "unix://$tmpd/docker.sock" >"$tmpd/dockerd.log" 2>&1 &
  export DOCKER_HOST="unix://$tmpd/docker.sock"
  for _ in $(seq 300); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.2; done
  "$DOCKER" info >/dev/null 2>&1 || { log "dockerd did not start:"; cat "$tmpd/dockerd.log" >&2; exit 1; }
  save=$IMAGE_TAR
fi

DOCKER_BUILDKIT=0 "$DOCKER" build --quiet \
  --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  -t "$IMAGE" "$ctx" >/dev/null
log "built $IMAGE ($("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE") bytes)"
if [ -n "$save" ]; then
  mkdir -p "$(dirname "$save")"
  "$DOCKER" save -o "$save" "$IMAGE"
  log "no Docker daemon was running: saved $IMAGE to $save (docker load -i $save)"
fi
