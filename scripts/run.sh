#!/usr/bin/env bash
# Starts the whole system in the foreground and stops it all on Ctrl-C.
# Called by `make run` after the services are up and bin/ is built.
set -uo pipefail
cd "$(dirname "$0")/.."

pids=()
start() { # name command...
  local name=$1; shift
  ( exec "$@" ) > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
  printf 'run: started %s (pid %s)\n' "$name" "$!"
}
stop() {
  trap - INT TERM
  printf '\nrun: stopping\n'
  kill -TERM "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
  exit 0
}
trap stop INT TERM

start api bin/api

printf 'run: API on http://localhost%s (token: dev-token); Ctrl-C stops everything\n' "${TANDEM_API_ADDR:-:8080}"
wait -n "${pids[@]}"
printf 'run: a process exited; stopping the others\n'
stop
