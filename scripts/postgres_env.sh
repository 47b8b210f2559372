# Settings of the PostgreSQL server scripts/postgres_up.sh starts (override them in the environment).
export TRAINRUN_PG_PORT="${TRAINRUN_PG_PORT:-55432}"
export TRAINRUN_PG_DATA="${TRAINRUN_PG_DATA:-/var/lib/trainrun-postgres}"
export TRAINRUN_PG_USER="${TRAINRUN_PG_USER:-trainrun}"
export TRAINRUN_PG_PASSWORD="${TRAINRUN_PG_PASSWORD:-trainrun}"
export TRAINRUN_PG_DB="${TRAINRUN_PG_DB:-optuna}"
export TRAINRUN_PG_LOG="${TRAINRUN_PG_LOG:-/var/log/trainrun-postgres.log}"
