#!/usr/bin/env bash
# Stop the PostgreSQL server scripts/postgres_up.sh started (--purge-state: also delete its
# data folder, every study in it). Run as root.
set -euo pipefail
source "$(dirname "$0")/postgres_env.sh"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -n "$BIN" ] && [ -f "$TRAINRUN_PG_DATA/PG_VERSION" ]; then
    runuser -u postgres -- "$BIN/pg_ctl" -D "$TRAINRUN_PG_DATA" -m fast -w -t 60 stop >/dev/null 2>&1 || true
fi
if [ "${1:-}" = "--purge-state" ]; then
    rm -rf "$TRAINRUN_PG_DATA"
fi
echo "POSTGRES STOPPED"
