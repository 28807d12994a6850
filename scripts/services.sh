#!/usr/bin/env bash
# Makes sure the services Tandem needs answer on this machine: MariaDB on
# 3306 (root, empty password over TCP), RabbitMQ on 5672 with the management
# API on 15672 (tests create a vhost each through it). Starts what is down and
# installs what is missing from Debian's packages. Idempotent; used by
# `make up`, `make run`, `make test` and .ci/run.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds name
  local i
  for ((i = 0; i < $2 * 4; i++)); do
    port_open "$1" && return 0
    sleep 0.25
  done
  log "$3 did not open port $1 within $2 s"
  return 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  log "installing $* from Debian packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

mariadb_up() {
  if port_open 3306; then return 0; fi
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server mariadb-client
  log "starting MariaDB"
  as_root mkdir -p /run/mysqld
  as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_port 3306 60 MariaDB
}

mariadb_root_tcp() {
  # Tests and the default DSN log in as root with an empty password over TCP.
  if mariadb -h127.0.0.1 -uroot -e 'SELECT 1' >/dev/null 2>&1; then return 0; fi
  log "allowing root with an empty password over TCP (local development only)"
  as_root mariadb -e "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;"
}

mariadb_connections() {
  # `make test` runs packages in parallel, each test with its own pools, and
  # the e2e suite runs whole processes: MariaDB's default of 151 connections
  # is not enough ("Error 1040: Too many connections"). A runtime setting,
  # for this development server only.
  local cur
  cur=$(mariadb -h127.0.0.1 -uroot -N -e 'SELECT @@max_connections' 2>/dev/null || echo 0)
  if [ "${cur:-0}" -lt 1000 ]; then
    log "raising MariaDB max_connections from ${cur} to 1000 (the tests open many pools at once)"
    mariadb -h127.0.0.1 -uroot -e 'SET GLOBAL max_connections = 1000'
  fi
}

rabbitmq_up() {
  if ! port_open 5672; then
    command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || apt_install rabbitmq-server
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached
    wait_port 5672 120 RabbitMQ
  fi
  if ! port_open 15672; then
    log "enabling rabbitmq_management (the tests create a vhost each through it)"
    as_root rabbitmq-plugins enable rabbitmq_management >/dev/null
    wait_port 15672 60 "RabbitMQ management"
  fi
}

mariadb_up
mariadb_root_tcp
mariadb_connections
rabbitmq_up
log "MariaDB and RabbitMQ are up"
