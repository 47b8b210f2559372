#!/usr/bin/env bash
# Stop the single-node Slurm cluster started by scripts/slurm_up.sh: the slurmd,
# slurmctld, slurmdbd, MariaDB and munged that it started (recorded in
# /run/trainrun-slurm/started), never a daemon it did not start (SIGTERM, bounded
# wait, then SIGKILL). Exits 1 when one of them still runs. Idempotent: fine when
# nothing runs. Installed packages are kept.
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
		sed -n '2,14p' "$0"
		exit 0
		;;
	*) tr_die "unknown argument: $arg (use --purge-state / --keep-jobs)" ;;
	esac
done

[[ $EUID -eq 0 ]] || tr_die "must run as root"
tr_lock
unset SLURM_CONF

# Only what slurm_up.sh started is stopped (recorded in $TR_STARTED with its start time): a
# daemon someone else runs on this machine, or a pid reused since, is left alone. A step that
# fails does not end the script: every daemon gets its stop, and the exit status says whether
# one of ours still runs.
still=()
stop_owned() { # NAME WAIT_S
	local pid
	if pid="$(tr_owned_pid "$1")"; then
		tr_stop_pid "$1" "$pid" "$2" || still+=("$1 (pid $pid)")
	else
		tr_log "$1: none of ours runs (not started by slurm_up.sh, or already stopped)"
	fi
}

# ----------------------------------------------------------------- jobs ----
tr_phase jobs
if ((!keep_jobs)) && command -v squeue >/dev/null && tr_owned_pid slurmctld >/dev/null &&
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
ours_slurmd=0
tr_owned_pid slurmd >/dev/null && ours_slurmd=1
stop_owned slurmd 15
if ((!keep_jobs && ours_slurmd)); then
	# the job steps of our slurmd's jobs (their slurmd is gone: nobody else would end them)
	for pid in $(tr_pids_by_name slurmstepd); do
		tr_stop_pid slurmstepd "$pid" 10 || still+=("slurmstepd (pid $pid)")
	done
fi

tr_phase slurmctld
stop_owned slurmctld 20

tr_phase slurmdbd
stop_owned slurmdbd 15

tr_phase mariadb
if pid="$(tr_owned_pid mariadbd)"; then
	if ((purge)); then
		tr_log "dropping accounting database $TR_DB_NAME"
		tr_mysql -e "DROP DATABASE IF EXISTS \`$TR_DB_NAME\`;" || tr_log "WARNING: could not drop $TR_DB_NAME"
	fi
	timeout 30 mysqladmin --protocol=socket -S "$TR_MYSQL_SOCK" -uroot shutdown >/dev/null 2>&1 || true
	tr_stop_pid mariadbd "$pid" 30 || still+=("mariadbd (pid $pid)")
else
	tr_log "mariadbd: none of ours runs (not started by slurm_up.sh, or already stopped)"
fi

tr_phase munged
stop_owned munged 10

if ((purge)); then
	tr_phase purge
	tr_log "wiping $TR_STATE_DIR and $TR_SPOOL_DIR"
	rm -rf "${TR_STATE_DIR:?}" "${TR_SPOOL_DIR:?}"
fi

if ((${#still[@]})); then
	tr_phase_summary
	tr_die "still running after slurm_down.sh: ${still[*]}"
fi
rm -rf "${TR_OWN_DIR:?}" # every daemon we started is gone: nothing left to remember

tr_phase_summary
echo "SLURM STOPPED"
