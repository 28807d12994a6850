#!/usr/bin/env bash
# Starts the whole system in the foreground and stops it all on Ctrl-C:
# the api (REST API + outbox relay), the webhook, one worker per provider in
# TANDEM_PROVIDERS (default stripe) and, when Stripe is enabled and no
# STRIPE_SECRET_KEY is set, the local Stripe sandbox (bin/sandbox) that the
# stripe worker and webhook are pointed at. With a STRIPE_SECRET_KEY the
# stripe worker talks to real Stripe, and STRIPE_WEBHOOK_SECRET must be set.
# Likewise, when Salesforce is enabled and no SALESFORCE_INSTANCE_URL is set,
# it starts the local Salesforce sandbox (bin/sfsandbox, UI at
# http://127.0.0.1:12112/_sandbox/; TANDEM_SF_SANDBOX_ADDR moves it) and
# points the salesforce worker and webhook at it.
#
# Called by `make run` after the services are up and bin/ is built. Every
# setting of configs/tandem.yaml can be overridden from the environment;
# besides those, TANDEM_SANDBOX_ADDR moves the sandbox (default
# 127.0.0.1:12111) and workers listen on consecutive ports from
# TANDEM_WORKER_ADDR.
#
# For development only, and only here: every process listens on 127.0.0.1
# unless its TANDEM_*_ADDR says otherwise (127.0.0.1:8080, :8081, :8082);
# with neither TANDEM_API_TOKENS nor TANDEM_CONFIG set the api accepts the
# development token dev-token-local-only; in sandbox mode the webhook and
# the sandbox share the published secret whsec_sandbox_local_only unless
# STRIPE_WEBHOOK_SECRET is set. A value the operator set is never replaced.
#
# TANDEM_RUN_DRY=1 prints what each process would get and starts nothing
# (secrets the operator set are shown as "(yours)").
set -uo pipefail
cd "$(dirname "$0")/.."

log() { printf 'run: %s\n' "$*"; }
die() { printf 'run: %s\n' "$*" >&2; exit 1; }

dry=${TANDEM_RUN_DRY:-}
dev_token=dev-token-local-only
sandbox_secret=whsec_sandbox_local_only

if [ -z "$dry" ]; then
  for b in api webhook worker sandbox sfsandbox; do
    [ -x "bin/$b" ] || die "bin/$b is missing: run 'make build' (or 'make run')"
  done
fi

port_of() { # host:port or :port -> port
  printf '%s' "${1##*:}"
}

api_addr=${TANDEM_API_ADDR:-127.0.0.1:8080}
webhook_addr=${TANDEM_WEBHOOK_ADDR:-127.0.0.1:8081}
worker_addr=${TANDEM_WORKER_ADDR:-127.0.0.1:8082}
api_port=$(port_of "$api_addr")
webhook_port=$(port_of "$webhook_addr")
worker_port=$(port_of "$worker_addr")
worker_host=${worker_addr%:*}
export TANDEM_API_ADDR=$api_addr TANDEM_WEBHOOK_ADDR=$webhook_addr
if [ -z "${TANDEM_API_TOKENS:-}" ] && [ -z "${TANDEM_CONFIG:-}" ]; then
  export TANDEM_API_TOKENS=$dev_token
fi

IFS=',' read -r -a providers <<<"${TANDEM_PROVIDERS:-stripe}"
clean=()
for p in "${providers[@]}"; do
  p=$(printf '%s' "$p" | tr -d '[:space:]' | tr '[:upper:]' '[:lower:]')
  [ -n "$p" ] && clean+=("$p")
done
providers=("${clean[@]}")
[ "${#providers[@]}" -gt 0 ] || die "TANDEM_PROVIDERS names no provider"
TANDEM_PROVIDERS=$(IFS=','; printf '%s' "${providers[*]}")
export TANDEM_PROVIDERS

sandbox=
stripe=
for p in "${providers[@]}"; do [ "$p" = stripe ] && stripe=1; done
if [ -n "$stripe" ]; then
  if [ -z "${STRIPE_SECRET_KEY:-}" ]; then
    sandbox=${TANDEM_SANDBOX_ADDR:-127.0.0.1:12111}
    export TANDEM_SANDBOX_ADDR=$sandbox
    export STRIPE_SECRET_KEY=sk_test_sandbox
    export STRIPE_API_BASE="http://$sandbox"
    export STRIPE_WEBHOOK_SECRET=${STRIPE_WEBHOOK_SECRET:-$sandbox_secret}
    export TANDEM_SANDBOX_WEBHOOK_URL="http://127.0.0.1:$webhook_port/webhook/stripe"
  elif [ -z "${STRIPE_WEBHOOK_SECRET:-}" ]; then
    die "STRIPE_SECRET_KEY is set, so Stripe itself is used: set STRIPE_WEBHOOK_SECRET too (the endpoint's signing secret, whsec_…; 'stripe listen --forward-to localhost:$webhook_port/webhook/stripe' prints one)"
  fi
fi

sfsandbox=
salesforce=
for p in "${providers[@]}"; do [ "$p" = salesforce ] && salesforce=1; done
sf_secret=sf-sandbox-local-only
if [ -n "$salesforce" ] && [ -z "${SALESFORCE_INSTANCE_URL:-}" ]; then
  sfsandbox=${TANDEM_SF_SANDBOX_ADDR:-127.0.0.1:12112}
  export TANDEM_SF_SANDBOX_ADDR=$sfsandbox
  export SALESFORCE_INSTANCE_URL="http://$sfsandbox"
  export SALESFORCE_TOKEN_URL="http://$sfsandbox/services/oauth2/token"
  # The sandbox's published development credentials (internal/fakes/salesforcefake).
  export SALESFORCE_CLIENT_ID=3MVG9fake.tandem.client.id
  export SALESFORCE_CLIENT_SECRET=fake-client-secret-0123456789
  export SALESFORCE_ORG_ID=00D5g00000TndmQEAR
  export SALESFORCE_INTEGRATION_USER_ID=0055g00000TndmIAAR
  export SALESFORCE_METADATA_FIELD=${SALESFORCE_METADATA_FIELD:-Tandem_Metadata__c}
  export SALESFORCE_WEBHOOK_SECRET=${SALESFORCE_WEBHOOK_SECRET:-$sf_secret}
  export TANDEM_SF_SANDBOX_WEBHOOK_URL="http://127.0.0.1:$webhook_port/webhook/salesforce"
fi

# shown: a value for the dry run: itself when run.sh chose it (or it is not a
# secret), "(yours)" for a secret the operator set, "(unset)".
shown() { # name
  local v=${!1:-}
  case "$1" in
    TANDEM_API_TOKENS|STRIPE_WEBHOOK_SECRET|STRIPE_SECRET_KEY|SALESFORCE_WEBHOOK_SECRET|SALESFORCE_CLIENT_SECRET)
      case "$v" in
        ''|"$dev_token"|"$sandbox_secret"|sk_test_sandbox|"$sf_secret"|fake-client-secret-0123456789) ;;
        *) v='(yours)' ;;
      esac ;;
  esac
  printf '%s' "${v:-(unset)}"
}

pids=()
names=()
start() { # name command...
  local name=$1; shift
  if [ -n "$dry" ]; then
    local k line="$name:"
    for k in TANDEM_API_ADDR TANDEM_WEBHOOK_ADDR TANDEM_WORKER_ADDR TANDEM_SANDBOX_ADDR TANDEM_API_TOKENS \
      STRIPE_SECRET_KEY STRIPE_WEBHOOK_SECRET STRIPE_API_BASE SALESFORCE_INSTANCE_URL SALESFORCE_WEBHOOK_SECRET; do
      line+=" $k=$(shown "$k")"
    done
    printf '%s\n' "$line"
    pids+=(0)
    names+=("$name")
    return
  fi
  # The log filter ignores SIGINT, so a Ctrl-C in the terminal (which
  # reaches the whole process group) does not cut the processes' last lines.
  ( exec "$@" ) > >(trap '' INT; exec sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
  names+=("$name")
  log "started $name (pid $!)"
}

stopping=
stop() { # exit status
  trap - INT TERM
  stopping=1
  log "stopping"
  # Tandem's processes first (they finish in-flight work within
  # TANDEM_SHUTDOWN_TIMEOUT), then the sandbox they may still be calling.
  local i tandem=() last=()
  for i in "${!pids[@]}"; do
    if [ "${names[$i]}" = sandbox ] || [ "${names[$i]}" = sfsandbox ]; then last+=("${pids[$i]}"); else tandem+=("${pids[$i]}"); fi
  done
  [ "${#tandem[@]}" -gt 0 ] && { kill -TERM "${tandem[@]}" 2>/dev/null; wait "${tandem[@]}" 2>/dev/null; }
  [ "${#last[@]}" -gt 0 ] && { kill -TERM "${last[@]}" 2>/dev/null; wait "${last[@]}" 2>/dev/null; }
  wait # the log filters
  log "stopped"
  exit "${1:-0}"
}
trap 'stop 0' INT TERM

# wait_up name url seconds: poll url until it answers 200 or the process dies.
wait_up() {
  [ -n "$dry" ] && return 0
  local name=$1 url=$2 secs=$3 i pid=${pids[-1]}
  for ((i = 0; i < secs * 10; i++)); do
    curl -fs -o /dev/null --max-time 1 "$url" && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited during start-up (see its lines above)"
      stop 1
    fi
    sleep 0.1
  done
  log "$name did not answer $url within $secs s"
  stop 1
}

local_url() { # addr -> http://127.0.0.1:port (or the host given)
  local host=${1%:*}
  [ -z "$host" ] || [ "$host" = 0.0.0.0 ] && host=127.0.0.1
  printf 'http://%s:%s' "$host" "$(port_of "$1")"
}

if [ -n "$sandbox" ]; then
  start sandbox bin/sandbox
  wait_up sandbox "http://$sandbox/_sandbox/customers" 10
fi

if [ -n "$sfsandbox" ]; then
  start sfsandbox bin/sfsandbox
  wait_up sfsandbox "http://$sfsandbox/_sandbox/contacts" 10
fi

# The api migrates the schema: start it first.
start api bin/api
wait_up api "$(local_url "$api_addr")/readyz" 60

start webhook bin/webhook
wait_up webhook "$(local_url "$webhook_addr")/healthz" 30

worker_urls=()
for i in "${!providers[@]}"; do
  p=${providers[$i]}
  addr="$worker_host:$((worker_port + i))"
  TANDEM_WORKER_ADDR=$addr start "worker-$p" bin/worker -provider "$p"
  wait_up "worker-$p" "$(local_url "$addr")/healthz" 30
  worker_urls+=("worker-$p $(local_url "$addr")/metrics")
done

[ -n "$dry" ] && exit 0

api_url=$(local_url "$api_addr")
printf '\n'
if [ "${TANDEM_API_TOKENS:-}" = "$dev_token" ]; then
  log "API        $api_url/v1/users   (Authorization: Bearer $dev_token, the development token)"
else
  log "API        $api_url/v1/users   (Authorization: Bearer <a token of TANDEM_API_TOKENS>)"
fi
log "webhook    $(local_url "$webhook_addr")/webhook/<provider>"
for w in "${worker_urls[@]}"; do log "${w%% *}   ${w#* }"; done
if [ -n "$sandbox" ]; then
  log "Stripe     local sandbox: dashboard http://$sandbox/_sandbox/ (JSON: GET /_sandbox/customers)"
elif [ -n "$stripe" ]; then
  log "Stripe     the real Stripe API with your STRIPE_SECRET_KEY; forward its webhooks to $(local_url "$webhook_addr")/webhook/stripe"
fi
if [ -n "$sfsandbox" ]; then
  log "Salesforce local sandbox: UI http://$sfsandbox/_sandbox/ (JSON: GET /_sandbox/contacts)"
fi
log "Ctrl-C stops everything"
printf '\n'

wait -n "${pids[@]}"
status=$?
[ -n "$stopping" ] && exit 0
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[$i]}" 2>/dev/null; then
    log "${names[$i]} exited (status $status); stopping the others"
  fi
done
stop 1
