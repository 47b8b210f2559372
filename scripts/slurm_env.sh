# shellcheck shell=bash disable=SC2034
# Shared settings and helpers for scripts/slurm_up.sh and scripts/slurm_down.sh.
#
# Sourced, never executed. Every user-facing knob is an environment variable
# prefixed with TRAINRUN_SLURM_ (plain SLURM_* variables are read by the Slurm
# client commands themselves, so we stay out of that namespace).
#
#   TRAINRUN_SLURM_SKIP_APT=1       never run apt-get; fail if a binary is missing
#   TRAINRUN_SLURM_CLUSTER=trainrun cluster name (ClusterName / sacctmgr)
#   TRAINRUN_SLURM_PARTITION=debug  name of the single (default) partition
#   TRAINRUN_SLURM_TIMEOUT=60       seconds to wait for each daemon / readiness
#   TRAINRUN_SLURM_CRED_EXPIRE=5    AuthInfo cred_expire (>=5); a requeued job is
#                                   held pending for cred_expire+1 s by slurmctld
#   TRAINRUN_SLURM_REAL_MEMORY=MB   RealMemory of the node (default: 95% of RAM)
#   TRAINRUN_SLURM_DEF_MEM_PER_CPU=MB  DefMemPerCPU (default: RealMemory / CPUs)
#   TRAINRUN_SLURM_DB_PASS=...      password of the MariaDB user 'slurm'
#   TRAINRUN_SLURM_OWN_DIR=DIR      where slurm_up.sh records the daemons it started
#                                   (default /run/trainrun-slurm; slurm_down.sh stops only those)

TR_CLUSTER="${TRAINRUN_SLURM_CLUSTER:-trainrun}"
TR_PARTITION="${TRAINRUN_SLURM_PARTITION:-debug}"
TR_TIMEOUT="${TRAINRUN_SLURM_TIMEOUT:-60}"
TR_CRED_EXPIRE="${TRAINRUN_SLURM_CRED_EXPIRE:-5}"
TR_SKIP_APT="${TRAINRUN_SLURM_SKIP_APT:-0}"
TR_NODE="$(hostname -s)"

TR_CONF_DIR=/etc/slurm
TR_SLURM_CONF="$TR_CONF_DIR/slurm.conf"
TR_SLURMDBD_CONF="$TR_CONF_DIR/slurmdbd.conf"
TR_STATE_DIR=/var/lib/slurm/slurmctld
TR_SPOOL_DIR=/var/lib/slurm/slurmd
TR_LOG_DIR=/var/log/slurm
TR_RUN_DIR=/run/slurm
TR_LOCK_FILE=/run/lock/trainrun-slurm.lock

TR_CTLD_PID="$TR_RUN_DIR/slurmctld.pid"
TR_SLURMD_PID="$TR_RUN_DIR/slurmd.pid"
TR_DBD_PID="$TR_RUN_DIR/slurmdbd.pid"

TR_MUNGE_KEY=/etc/munge/munge.key
TR_MUNGE_RUN=/run/munge
TR_MUNGE_PID="$TR_MUNGE_RUN/munged.pid"

TR_MYSQL_RUN=/run/mysqld
TR_MYSQL_SOCK="$TR_MYSQL_RUN/mysqld.sock"
TR_MYSQL_PID="$TR_MYSQL_RUN/mysqld.pid"
TR_MYSQL_DATADIR=/var/lib/mysql
TR_MYSQL_LOG=/var/log/mysql/error.log
TR_DB_NAME=slurm_acct_db
TR_DB_USER=slurm
TR_DB_PASS="${TRAINRUN_SLURM_DB_PASS:-trainrun-slurm}"

# What slurm_up.sh started, so that slurm_down.sh stops exactly that (never a daemon that
# someone else runs on this machine) and removes only the files this pair owns.
TR_OWN_DIR="${TRAINRUN_SLURM_OWN_DIR:-/run/trainrun-slurm}"
TR_STARTED="$TR_OWN_DIR/started" # one line per daemon: NAME PID STARTTIME

TR_CTLD_PORT=6817
TR_SLURMD_PORT=6818
TR_DBD_PORT=6819

# ---------------------------------------------------------------- logging ---
tr_log() { printf '[%s %s] %s\n' "${TR_PROG:-slurm}" "$(date +%H:%M:%S)" "$*"; }
tr_die() {
	printf '[%s %s] ERROR: %s\n' "${TR_PROG:-slurm}" "$(date +%H:%M:%S)" "$*" >&2
	exit 1
}

# Phase timing: tr_phase NAME starts a phase (and closes the previous one);
# tr_phase_summary prints all of them.
TR_T0="${EPOCHREALTIME:-$(date +%s.%N)}"
TR_PHASE_NAME=""
TR_PHASE_T0=""
TR_PHASES=()
_tr_now() { echo "${EPOCHREALTIME:-$(date +%s.%N)}"; }
_tr_close_phase() {
	if [[ -n "$TR_PHASE_NAME" ]]; then
		local dt
		dt="$(awk -v a="$TR_PHASE_T0" -v b="$(_tr_now)" 'BEGIN{printf "%.2f", b-a}')"
		TR_PHASES+=("$TR_PHASE_NAME=${dt}s")
		tr_log "phase '$TR_PHASE_NAME' took ${dt}s"
	fi
	TR_PHASE_NAME=""
}
tr_phase() {
	_tr_close_phase
	TR_PHASE_NAME="$1"
	TR_PHASE_T0="$(_tr_now)"
}
tr_phase_summary() {
	_tr_close_phase
	local total
	total="$(awk -v a="$TR_T0" -v b="$(_tr_now)" 'BEGIN{printf "%.2f", b-a}')"
	tr_log "timings: ${TR_PHASES[*]} total=${total}s"
}

# Serialise concurrent up/down runs (e.g. several pytest workers).
tr_lock() {
	mkdir -p "$(dirname "$TR_LOCK_FILE")"
	exec 9>"$TR_LOCK_FILE"
	if ! flock -w 900 9; then
		tr_die "could not get lock $TR_LOCK_FILE within 900 s"
	fi
}

# ---------------------------------------------------------------- processes -
# True if PID exists and is not a zombie.
tr_pid_alive() {
	local pid="$1" st
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	[[ -r "/proc/$pid/stat" ]] || return 1
	st="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
	[[ -n "$st" && "$st" != Z && "$st" != X ]]
}

# The start time of PID (field 22 of /proc/PID/stat, in clock ticks since boot): with the pid,
# it names one process, never a later one that got the same pid.
tr_starttime() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

# tr_record NAME PIDFILE: note the daemon NAME that this script has just started (its pid from
# PIDFILE or its name, waiting up to 10 s for it to appear) as ours.
tr_record() {
	local name="$1" pidfile="$2" pid="" deadline=$((SECONDS + 10))
	until pid="$(tr_daemon_pid "$name" "$pidfile")"; do
		((SECONDS < deadline)) || { tr_log "WARNING: $name started but no pid found: not recorded"; return 0; }
		sleep 0.2
	done
	install -d -m 0700 "$TR_OWN_DIR"
	{ grep -v "^$name " "$TR_STARTED" 2>/dev/null || true; echo "$name $pid $(tr_starttime "$pid")"; } >"$TR_STARTED.tmp"
	mv -f "$TR_STARTED.tmp" "$TR_STARTED"
}

# tr_owned_pid NAME: the pid of the daemon NAME that slurm_up.sh started, if it still runs
# (same pid, same start time, same name). Returns 1 if none.
tr_owned_pid() {
	local name="$1" rec_name pid start comm
	[[ -r "$TR_STARTED" ]] || return 1
	while read -r rec_name pid start; do
		[[ "$rec_name" == "$name" ]] || continue
		tr_pid_alive "$pid" || return 1
		[[ "$(tr_starttime "$pid")" == "$start" ]] || return 1
		comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
		[[ "$comm" == "$name" || "$comm" == "${name:0:15}" ]] || return 1
		echo "$pid"
		return 0
	done <"$TR_STARTED"
	return 1
}

# tr_stop_pid NAME PID [WAIT_S]: SIGTERM one process, wait, then SIGKILL; 1 if it still lives.
tr_stop_pid() {
	local name="$1" pid="$2" wait_s="${3:-15}" deadline
	tr_log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + wait_s))
	while tr_pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
	if tr_pid_alive "$pid"; then
		tr_log "$name (pid $pid) did not exit after ${wait_s}s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.5
	fi
	! tr_pid_alive "$pid"
}

# Print the live pids (not zombies) whose command name is exactly NAME.
tr_pids_by_name() {
	local pid
	for pid in $(pgrep -x "$1" 2>/dev/null); do
		tr_pid_alive "$pid" && echo "$pid"
	done
	return 0
}

# Print the pid of daemon NAME: from PIDFILE if it names a live NAME process,
# else any live process called exactly NAME. Returns 1 if none.
tr_daemon_pid() {
	local name="$1" pidfile="$2" pid comm
	if [[ -r "$pidfile" ]]; then
		pid="$(tr -dc '0-9' <"$pidfile" 2>/dev/null || true)"
		if tr_pid_alive "$pid"; then
			comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
			if [[ "$comm" == "$name" || "$comm" == "${name:0:15}" ]]; then
				echo "$pid"
				return 0
			fi
		fi
	fi
	pid="$(tr_pids_by_name "$name" | head -n1)"
	[[ -n "$pid" ]] || return 1
	echo "$pid"
}

# tr_stop_daemon NAME PIDFILE [WAIT_S]: SIGTERM, wait, then SIGKILL stragglers.
tr_stop_daemon() {
	local name="$1" pidfile="$2" wait_s="${3:-15}" pids pid deadline
	pids="$( { [[ -r "$pidfile" ]] && tr -dc '0-9\n' <"$pidfile"; echo; tr_pids_by_name "$name"; } 2>/dev/null | sort -u)"
	local live=()
	for pid in $pids; do
		if tr_pid_alive "$pid"; then
			local comm
			comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
			[[ "$comm" == "$name" || "$comm" == "${name:0:15}" ]] && live+=("$pid")
		fi
	done
	if ((${#live[@]} == 0)); then
		rm -f "$pidfile"
		return 0
	fi
	tr_log "stopping $name (pid ${live[*]})"
	kill -TERM "${live[@]}" 2>/dev/null || true
	deadline=$((SECONDS + wait_s))
	while ((SECONDS < deadline)); do
		local any=0
		for pid in "${live[@]}"; do tr_pid_alive "$pid" && any=1; done
		((any)) || break
		sleep 0.2
	done
	for pid in "${live[@]}"; do
		if tr_pid_alive "$pid"; then
			tr_log "$name (pid $pid) did not exit after ${wait_s}s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	sleep 0.2
	rm -f "$pidfile"
}

# Wait (bounded) until a TCP port on 127.0.0.1 accepts connections.
tr_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- mariadb ---
tr_mysql() { mysql --protocol=socket -S "$TR_MYSQL_SOCK" -uroot "$@"; }
tr_mariadb_ping() { mysqladmin --protocol=socket -S "$TR_MYSQL_SOCK" -uroot --connect-timeout=2 ping >/dev/null 2>&1; }

tr_mariadb_bin() {
	if [[ -x /usr/sbin/mariadbd ]]; then echo /usr/sbin/mariadbd
	elif [[ -x /usr/sbin/mysqld ]]; then echo /usr/sbin/mysqld
	else command -v mariadbd || command -v mysqld
	fi
}

tr_start_mariadb() {
	if tr_mariadb_ping; then
		return 0
	fi
	local bin
	bin="$(tr_mariadb_bin)" || tr_die "mariadbd not found"
	install -d -o mysql -g mysql -m 0755 "$TR_MYSQL_RUN"
	install -d -o mysql -g adm -m 2750 "$(dirname "$TR_MYSQL_LOG")"
	if [[ ! -d "$TR_MYSQL_DATADIR/mysql" ]]; then
		tr_log "initialising MariaDB data dir $TR_MYSQL_DATADIR"
		install -d -o mysql -g mysql -m 0755 "$TR_MYSQL_DATADIR"
		mariadb-install-db --user=mysql --datadir="$TR_MYSQL_DATADIR" \
			--auth-root-authentication-method=socket --skip-test-db \
			>>"$TR_LOG_DIR/mariadb-install.log" 2>&1 ||
			tr_die "mariadb-install-db failed, see $TR_LOG_DIR/mariadb-install.log"
	fi
	# A stale pid/socket from an unclean stop confuses nobody but is removed anyway.
	if ! tr_daemon_pid mariadbd "$TR_MYSQL_PID" >/dev/null &&
		! tr_daemon_pid mysqld "$TR_MYSQL_PID" >/dev/null; then
		rm -f "$TR_MYSQL_SOCK" "$TR_MYSQL_SOCK.lock" "$TR_MYSQL_PID"
		tr_log "starting MariaDB ($bin)"
		setsid "$bin" --user=mysql --datadir="$TR_MYSQL_DATADIR" \
			--socket="$TR_MYSQL_SOCK" --pid-file="$TR_MYSQL_PID" \
			--log-error="$TR_MYSQL_LOG" --bind-address=127.0.0.1 \
			--innodb-buffer-pool-size=1G --innodb-lock-wait-timeout=900 \
			--innodb-flush-log-at-trx-commit=2 \
			</dev/null >>"$TR_LOG_DIR/mariadb.stdout" 2>&1 9>&- &
		disown || true
		local started=1
	fi
	local deadline=$((SECONDS + TR_TIMEOUT))
	until tr_mariadb_ping; do
		((SECONDS < deadline)) || {
			tail -n 20 "$TR_MYSQL_LOG" >&2 2>/dev/null || true
			tr_die "MariaDB did not answer within ${TR_TIMEOUT}s (log: $TR_MYSQL_LOG)"
		}
		sleep 0.2
	done
	if [[ -n "${started:-}" ]]; then
		tr_record mariadbd "$TR_MYSQL_PID"
	fi
}

tr_stop_mariadb() {
	local name pid
	for name in mariadbd mysqld; do
		pid="$(tr_daemon_pid "$name" "$TR_MYSQL_PID")" || continue
		tr_log "stopping MariaDB (pid $pid)"
		timeout 30 mysqladmin --protocol=socket -S "$TR_MYSQL_SOCK" -uroot shutdown >/dev/null 2>&1 || true
		tr_stop_daemon "$name" "$TR_MYSQL_PID" 30
	done
	rm -f "$TR_MYSQL_SOCK.lock"
}
