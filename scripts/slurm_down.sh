#!/usr/bin/env bash
# Stop the single-node Slurm cluster started by scripts/slurm_up.sh:
# slurmd, slurmctld, slurmdbd, MariaDB and munged (SIGTERM, bounded wait, then
# SIGKILL). Idempotent: fine when nothing runs. Installed packages are kept.
#
#   --keep-jobs     do not cancel queued/running jobs first (by default all jobs
#                   are scancel'ed and leftover slurmstepd processes are killed)
#   --purge-state   also wipe slurmctld state, slurmd spool and the accounting
#                   database, so the next slurm_up.sh starts from job id 1
#                   with an empty sacct history
set -euo pipefail

TR_PROG=slurm_down
# shellcheck source=scripts/slurm_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/slurm_env.sh"

purge=0
keep_jobs=0
for arg in "$@"; do
	case "$arg" in
	--purge-state) purge=1 ;;
	--keep-jobs) keep_jobs=1 ;;
	-h | --help)
		sed -n '2,12p' "$0"
		exit 0
		;;
	*) tr_die "unknown argument: $arg (use --purge-state / --keep-jobs)" ;;
	esac
done

[[ $EUID -eq 0 ]] || tr_die "must run as root"
tr_lock
unset SLURM_CONF

# ----------------------------------------------------------------- jobs ----
tr_phase jobs
if ((!keep_jobs)) && command -v squeue >/dev/null &&
	tr_daemon_pid slurmctld "$TR_CTLD_PID" >/dev/null &&
	timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; then
	mapfile -t jobs < <(timeout 10 squeue -h -o '%A' 2>/dev/null || true)
	if ((${#jobs[@]})); then
		tr_log "cancelling ${#jobs[@]} job(s): ${jobs[*]}"
		timeout 10 scancel "${jobs[@]}" >/dev/null 2>&1 || true
		deadline=$((SECONDS + 15))
		while ((SECONDS < deadline)) && [[ -n "$(timeout 5 squeue -h -o '%A' 2>/dev/null || true)" ]]; do
			sleep 0.3
		done
	fi
fi

# -------------------------------------------------------------- daemons ----
tr_phase slurmd
tr_stop_daemon slurmd "$TR_SLURMD_PID" 15
if ((!keep_jobs)); then
	tr_stop_daemon slurmstepd /nonexistent 10
fi

tr_phase slurmctld
tr_stop_daemon slurmctld "$TR_CTLD_PID" 20

tr_phase slurmdbd
tr_stop_daemon slurmdbd "$TR_DBD_PID" 15

tr_phase mariadb
if ((purge)) && command -v mysql >/dev/null; then
	# Dropping the accounting DB needs a running server (started if down).
	tr_start_mariadb
	tr_log "dropping accounting database $TR_DB_NAME"
	tr_mysql -e "DROP DATABASE IF EXISTS \`$TR_DB_NAME\`;" ||
		tr_log "WARNING: could not drop $TR_DB_NAME"
fi
tr_stop_mariadb

tr_phase munged
tr_stop_daemon munged "$TR_MUNGE_PID" 10
rm -f "$TR_MUNGE_RUN/munge.socket.2.lock"

if ((purge)); then
	tr_phase purge
	tr_log "wiping $TR_STATE_DIR and $TR_SPOOL_DIR"
	rm -rf "${TR_STATE_DIR:?}" "${TR_SPOOL_DIR:?}"
fi

tr_phase_summary
echo "SLURM STOPPED"
