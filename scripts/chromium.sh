#!/usr/bin/env bash
# Makes sure Debian's chromium is installed: the console's browser test
# (e2e/console_test.go) drives it headless through chromedp. Idempotent;
# used by `make tools` (and so `make test` and .ci/run).
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
printf 'tools: installing chromium from Debian packages (the console test drives it)\n' >&2
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}
