#!/usr/bin/env bash
# Start a PostgreSQL server on this machine for shared Optuna studies (several `train -m`
# drivers joining one study), as the tests do: Debian's postgresql package (installed if
# missing), a cluster of its own in $TRAINRUN_PG_DATA listening on 127.0.0.1:$TRAINRUN_PG_PORT,
# a user and a database. Idempotent: a running server is checked and left alone. Run as root.
# Prints `POSTGRES READY <url>` with the SQLAlchemy URL for hydra.sweeper.storage.
set -euo pipefail
source "$(dirname "$0")/postgres_env.sh"

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
fi
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
as_pg() { runuser -u postgres -- "$@"; }

mkdir -p "$TRAINRUN_PG_DATA" "$(dirname "$TRAINRUN_PG_LOG")"
chown postgres:postgres "$TRAINRUN_PG_DATA"
touch "$TRAINRUN_PG_LOG" && chown postgres:postgres "$TRAINRUN_PG_LOG"
if [ ! -f "$TRAINRUN_PG_DATA/PG_VERSION" ]; then
    pwfile="$(mktemp)"
    echo "$TRAINRUN_PG_PASSWORD" > "$pwfile" && chown postgres "$pwfile"
    as_pg "$BIN/initdb" -D "$TRAINRUN_PG_DATA" -A scram-sha-256 --username=postgres --pwfile="$pwfile" >/dev/null
    rm -f "$pwfile"
fi
if ! as_pg "$BIN/pg_ctl" -D "$TRAINRUN_PG_DATA" status >/dev/null 2>&1; then
    as_pg "$BIN/pg_ctl" -D "$TRAINRUN_PG_DATA" -l "$TRAINRUN_PG_LOG" -w -t 60 start \
        -o "-p $TRAINRUN_PG_PORT -c listen_addresses=127.0.0.1 -k /tmp -c max_connections=200" >/dev/null
fi
export PGPASSWORD="$TRAINRUN_PG_PASSWORD"
psql_pg() { psql -h 127.0.0.1 -p "$TRAINRUN_PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_pg -c "SELECT 1 FROM pg_roles WHERE rolname='$TRAINRUN_PG_USER'")" != "1" ]; then
    psql_pg -c "CREATE ROLE $TRAINRUN_PG_USER LOGIN PASSWORD '$TRAINRUN_PG_PASSWORD'"
fi
if [ "$(psql_pg -c "SELECT 1 FROM pg_database WHERE datname='$TRAINRUN_PG_DB'")" != "1" ]; then
    psql_pg -c "CREATE DATABASE $TRAINRUN_PG_DB OWNER $TRAINRUN_PG_USER"
fi
echo "POSTGRES READY postgresql+psycopg://$TRAINRUN_PG_USER:$TRAINRUN_PG_PASSWORD@127.0.0.1:$TRAINRUN_PG_PORT/$TRAINRUN_PG_DB"
