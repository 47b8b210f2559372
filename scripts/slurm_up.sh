#!/usr/bin/env bash
# Bring up a real single-node Slurm cluster (munge + MariaDB + slurmdbd +
# slurmctld + slurmd) on this Debian 12 machine, without systemd.
#
# Idempotent: a second run only verifies, and (re)starts what is down or whose
# configuration changed. Must run as root. Prints the timing of each phase and,
# on success, a final line starting with "SLURM READY".
#
# Settings (environment variables): see scripts/slurm_env.sh.
#   TRAINRUN_SLURM_SKIP_APT=1  never call apt-get (fail if a binary is missing)
#
# Logs: /var/log/slurm/{slurmctld,slurmd,slurmdbd}.log, /var/log/mysql/error.log,
#       /var/log/munge/munged.log
set -euo pipefail

TR_PROG=slurm_up
# shellcheck source=scripts/slurm_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/slurm_env.sh"

[[ $EUID -eq 0 ]] || tr_die "must run as root"
if ! [[ "$TR_CRED_EXPIRE" =~ ^[0-9]+$ ]] || ((TR_CRED_EXPIRE < 5)); then
	tr_die "TRAINRUN_SLURM_CRED_EXPIRE must be an integer >= 5"
fi

tr_lock

# ------------------------------------------------------------- packages ----
tr_phase packages
need_pkgs=()
command -v slurmctld >/dev/null || need_pkgs+=(slurmctld)
command -v slurmd >/dev/null || need_pkgs+=(slurmd)
command -v sinfo >/dev/null && command -v sacct >/dev/null && command -v sacctmgr >/dev/null ||
	need_pkgs+=(slurm-client)
command -v slurmdbd >/dev/null || need_pkgs+=(slurmdbd)
command -v munged >/dev/null && command -v munge >/dev/null || need_pkgs+=(munge)
{ command -v mariadbd >/dev/null || command -v mysqld >/dev/null; } &&
	command -v mysql >/dev/null || need_pkgs+=(mariadb-server)
if ((${#need_pkgs[@]})); then
	if [[ "$TR_SKIP_APT" == 1 ]]; then
		tr_die "missing packages (${need_pkgs[*]}) and TRAINRUN_SLURM_SKIP_APT=1"
	fi
	tr_log "installing ${need_pkgs[*]} (apt; 'policy-rc.d denied execution' is harmless)"
	export DEBIAN_FRONTEND=noninteractive
	apt_opts=(-q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
	# shellcheck disable=SC2024
	if ! apt-get "${apt_opts[@]}" install --no-install-recommends \
		slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/tmp/trainrun-slurm-apt.log 2>&1; then
		tr_log "apt-get install failed, running apt-get update first"
		apt-get -q -o DPkg::Lock::Timeout=300 update >>/tmp/trainrun-slurm-apt.log 2>&1 ||
			tr_die "apt-get update failed, see /tmp/trainrun-slurm-apt.log"
		apt-get "${apt_opts[@]}" install --no-install-recommends \
			slurmctld slurmd slurm-client slurmdbd munge mariadb-server >>/tmp/trainrun-slurm-apt.log 2>&1 ||
			{ tail -n 30 /tmp/trainrun-slurm-apt.log >&2; tr_die "apt-get install failed, see /tmp/trainrun-slurm-apt.log"; }
	fi
	for b in slurmctld slurmd sinfo sacct sacctmgr slurmdbd munged munge mysql; do
		command -v "$b" >/dev/null || tr_die "$b still missing after apt-get install"
	done
else
	tr_log "packages present, apt skipped"
fi

# ---------------------------------------------------------------- dirs -----
tr_phase dirs
install -d -m 0755 "$TR_CONF_DIR" "$TR_LOG_DIR" "$TR_RUN_DIR" "$TR_STATE_DIR" "$TR_SPOOL_DIR"
chmod 0700 "$TR_STATE_DIR"

# ---------------------------------------------------------------- munge ----
tr_phase munge
getent passwd munge >/dev/null || tr_die "user munge does not exist (munge package broken?)"
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 "$TR_MUNGE_RUN"
if [[ ! -s "$TR_MUNGE_KEY" ]]; then
	tr_log "creating munge key $TR_MUNGE_KEY"
	umask 077
	if command -v mungekey >/dev/null; then
		mungekey --create --keyfile="$TR_MUNGE_KEY" --force
	else
		dd if=/dev/urandom of="$TR_MUNGE_KEY" bs=1024 count=1 status=none
	fi
	umask 022
fi
chown munge:munge "$TR_MUNGE_KEY"
chmod 0400 "$TR_MUNGE_KEY"
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
# Only probe a live munged: the munge client retries for ~2 s on a dead socket.
if ! pid="$(tr_daemon_pid munged "$TR_MUNGE_PID")" || ! munge_ok; then
	if [[ -n "${pid:-}" ]] && tr_pid_alive "$pid"; then
		tr_log "munged (pid $pid) does not answer, restarting it"
		tr_stop_daemon munged "$TR_MUNGE_PID" 5
	fi
	rm -f "$TR_MUNGE_RUN/munge.socket.2" "$TR_MUNGE_RUN/munge.socket.2.lock"
	tr_log "starting munged"
	setsid runuser -u munge -- /usr/sbin/munged --force </dev/null >>/var/log/munge/munged.stdout 2>&1 9>&- ||
		tr_die "munged failed to start (log: /var/log/munge/munged.log)"
	tr_record munged "$TR_MUNGE_PID"
	deadline=$((SECONDS + TR_TIMEOUT))
	until munge_ok; do
		((SECONDS < deadline)) || tr_die "munge -n | unmunge still fails after ${TR_TIMEOUT}s (log: /var/log/munge/munged.log)"
		sleep 0.2
	done
else
	tr_log "munged already running"
fi

# -------------------------------------------------------------- mariadb ----
tr_phase mariadb
tr_start_mariadb
tr_mysql --batch <<SQL || tr_die "could not create database $TR_DB_NAME / user $TR_DB_USER"
CREATE DATABASE IF NOT EXISTS \`$TR_DB_NAME\`;
CREATE USER IF NOT EXISTS '$TR_DB_USER'@'localhost' IDENTIFIED BY '$TR_DB_PASS';
ALTER USER '$TR_DB_USER'@'localhost' IDENTIFIED BY '$TR_DB_PASS';
GRANT ALL PRIVILEGES ON \`$TR_DB_NAME\`.* TO '$TR_DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL

# --------------------------------------------------------------- config ----
tr_phase config
ncpu="$(nproc)"
mem_total_mb=$(($(awk '/^MemTotal:/{print $2}' /proc/meminfo) / 1024))
real_mem="${TRAINRUN_SLURM_REAL_MEMORY:-$((mem_total_mb * 95 / 100))}"
def_mem_per_cpu="${TRAINRUN_SLURM_DEF_MEM_PER_CPU:-$((real_mem / ncpu))}"

# Write FILE with CONTENT and MODE only if it differs; returns 0 if changed.
write_if_changed() {
	local file="$1" mode="$2" content="$3"
	if [[ -f "$file" ]] && [[ "$(cat "$file")" == "$content" ]] &&
		[[ "$(stat -c %a "$file")" == "$mode" ]]; then
		return 1
	fi
	local tmp="$file.tmp.$$"
	(umask 077 && printf '%s\n' "$content" >"$tmp")
	chmod "$mode" "$tmp"
	chown root:root "$tmp"
	mv -f "$tmp" "$file"
	return 0
}

dbd_conf="# Generated by trainrun scripts/slurm_up.sh -- edits are overwritten.
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=localhost
DbdPort=$TR_DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$TR_LOG_DIR/slurmdbd.log
PidFile=$TR_DBD_PID
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$TR_DB_USER
StoragePass=$TR_DB_PASS
StorageLoc=$TR_DB_NAME"

slurm_conf="# Generated by trainrun scripts/slurm_up.sh -- edits are overwritten.
ClusterName=$TR_CLUSTER
SlurmctldHost=$TR_NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$TR_CTLD_PORT
SlurmdPort=$TR_SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
# A requeued batch job is held for cred_expire+1 s (slurmctld batch_requeue_fini);
# 5 s is the smallest value Slurm accepts (default 120 s).
AuthInfo=cred_expire=$TR_CRED_EXPIRE
StateSaveLocation=$TR_STATE_DIR
SlurmdSpoolDir=$TR_SPOOL_DIR
SlurmctldPidFile=$TR_CTLD_PID
SlurmdPidFile=$TR_SLURMD_PID
SlurmctldLogFile=$TR_LOG_DIR/slurmctld.log
SlurmdLogFile=$TR_LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=60
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=60
MessageTimeout=10
SchedulerType=sched/backfill
# Short periodic passes so a requeued job starts right after its BeginTime.
SchedulerParameters=sched_interval=2,bf_interval=1,batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$def_mem_per_cpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$TR_DBD_PORT
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
NodeName=$TR_NODE NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=$real_mem State=UNKNOWN
PartitionName=$TR_PARTITION Nodes=$TR_NODE Default=YES MaxTime=INFINITE State=UP"

dbd_changed=0
slurm_changed=0
write_if_changed "$TR_SLURMDBD_CONF" 600 "$dbd_conf" && dbd_changed=1
write_if_changed "$TR_SLURM_CONF" 644 "$slurm_conf" && slurm_changed=1
((dbd_changed)) && tr_log "wrote $TR_SLURMDBD_CONF"
((slurm_changed)) && tr_log "wrote $TR_SLURM_CONF (node $TR_NODE: CPUs=$ncpu RealMemory=$real_mem)"
# The Debian packages look for /etc/slurm/*.conf; make sure no stale SLURM_CONF
# environment points the daemons/clients elsewhere.
unset SLURM_CONF

# ------------------------------------------------------------- slurmdbd ----
tr_phase slurmdbd
if ((dbd_changed)); then
	tr_stop_daemon slurmdbd "$TR_DBD_PID" 15
fi
if pid="$(tr_daemon_pid slurmdbd "$TR_DBD_PID")"; then
	tr_log "slurmdbd already running (pid $pid)"
else
	tr_log "starting slurmdbd"
	setsid slurmdbd </dev/null >>"$TR_LOG_DIR/slurmdbd.stdout" 2>&1 9>&- ||
		tr_die "slurmdbd failed to start (log: $TR_LOG_DIR/slurmdbd.log)"
	tr_record slurmdbd "$TR_DBD_PID"
fi
deadline=$((SECONDS + TR_TIMEOUT))
until tr_port_open "$TR_DBD_PORT" && sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1; do
	if ((SECONDS >= deadline)); then
		tail -n 20 "$TR_LOG_DIR/slurmdbd.log" >&2 2>/dev/null || true
		tr_die "slurmdbd not answering after ${TR_TIMEOUT}s (log: $TR_LOG_DIR/slurmdbd.log)"
	fi
	if ! tr_daemon_pid slurmdbd "$TR_DBD_PID" >/dev/null; then
		tail -n 20 "$TR_LOG_DIR/slurmdbd.log" >&2 2>/dev/null || true
		tr_die "slurmdbd exited (log: $TR_LOG_DIR/slurmdbd.log)"
	fi
	sleep 0.2
done

tr_phase cluster
if sacctmgr -n -P list cluster format=cluster | grep -qx "$TR_CLUSTER"; then
	tr_log "cluster $TR_CLUSTER already registered"
else
	tr_log "registering cluster $TR_CLUSTER"
	out="$(sacctmgr -i add cluster "$TR_CLUSTER" 2>&1)" || true
	sacctmgr -n -P list cluster format=cluster | grep -qx "$TR_CLUSTER" ||
		tr_die "sacctmgr add cluster $TR_CLUSTER failed: $out"
fi

# ------------------------------------------------------------ slurmctld ----
tr_phase slurmctld
if ((slurm_changed)); then
	# Node definition / plugins may have changed: restart both daemons.
	tr_stop_daemon slurmd "$TR_SLURMD_PID" 15
	tr_stop_daemon slurmctld "$TR_CTLD_PID" 20
fi
ctld_ping() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
if pid="$(tr_daemon_pid slurmctld "$TR_CTLD_PID")"; then
	tr_log "slurmctld already running (pid $pid)"
else
	# The state dir remembers the cluster name; a different one makes
	# slurmctld refuse to start.
	if [[ -f "$TR_STATE_DIR/clustername" ]] &&
		[[ "$(cat "$TR_STATE_DIR/clustername")" != "$TR_CLUSTER" ]]; then
		tr_log "state dir belongs to cluster '$(cat "$TR_STATE_DIR/clustername")': removing $TR_STATE_DIR/clustername"
		rm -f "$TR_STATE_DIR/clustername"
	fi
	tr_log "starting slurmctld"
	setsid slurmctld </dev/null >>"$TR_LOG_DIR/slurmctld.stdout" 2>&1 9>&- ||
		tr_die "slurmctld failed to start (log: $TR_LOG_DIR/slurmctld.log)"
	tr_record slurmctld "$TR_CTLD_PID"
fi
deadline=$((SECONDS + TR_TIMEOUT))
until ctld_ping; do
	if ((SECONDS >= deadline)) || ! tr_daemon_pid slurmctld "$TR_CTLD_PID" >/dev/null; then
		tail -n 20 "$TR_LOG_DIR/slurmctld.log" >&2 2>/dev/null || true
		tr_die "slurmctld not UP (log: $TR_LOG_DIR/slurmctld.log)"
	fi
	sleep 0.2
done

# --------------------------------------------------------------- slurmd ----
tr_phase slurmd
slurmd_t0=0
if pid="$(tr_daemon_pid slurmd "$TR_SLURMD_PID")"; then
	tr_log "slurmd already running (pid $pid)"
else
	tr_log "starting slurmd (PMIx warnings in its log are harmless)"
	slurmd_t0=$(($(date +%s) - 1))
	setsid slurmd -N "$TR_NODE" </dev/null >>"$TR_LOG_DIR/slurmd.stdout" 2>&1 9>&- ||
		tr_die "slurmd failed to start (log: $TR_LOG_DIR/slurmd.log)"
	tr_record slurmd "$TR_SLURMD_PID"
fi

node_state() { sinfo -h -N -n "$TR_NODE" -o '%T' 2>/dev/null | head -n1; }
# Epoch of the slurmd start that slurmctld knows about (0 = not registered):
# slurmctld may report a node recovered from its state file as idle before the
# freshly started slurmd has registered.
node_slurmd_start() {
	local t
	t="$(scontrol show node -o "$TR_NODE" 2>/dev/null | tr ' ' '\n' | sed -n 's/^SlurmdStartTime=//p')"
	date -d "$t" +%s 2>/dev/null || echo 0
}
deadline=$((SECONDS + TR_TIMEOUT))
resumed=0
while :; do
	state="$(node_state)"
	case "$state" in
	idle | mixed | allocated | completing)
		(($(node_slurmd_start) >= slurmd_t0)) && break
		;;
	*drain* | down | *fail*)
		if ((!resumed)); then
			reason="$(sinfo -h -N -n "$TR_NODE" -o '%E' 2>/dev/null | head -n1)"
			tr_log "node $TR_NODE is '$state' ($reason): resuming it"
			scontrol update NodeName="$TR_NODE" State=RESUME >/dev/null 2>&1 || true
			resumed=1
		fi
		;;
	esac
	if ((SECONDS >= deadline)) || ! tr_daemon_pid slurmd "$TR_SLURMD_PID" >/dev/null; then
		tail -n 20 "$TR_LOG_DIR/slurmd.log" >&2 2>/dev/null || true
		tr_die "node $TR_NODE not ready (state '${state:-?}') (log: $TR_LOG_DIR/slurmd.log)"
	fi
	sleep 0.2
done

# ---------------------------------------------------------------- verify ---
tr_phase verify
sacct -n -X -S now-1hour -o jobid >/dev/null 2>&1 || tr_die "sacct does not work (slurmdbd: $TR_LOG_DIR/slurmdbd.log)"
sinfo -h -p "$TR_PARTITION" -o '%P %a' | grep -q 'up' || tr_die "partition $TR_PARTITION is not up"

tr_phase_summary
tr_log "cluster=$TR_CLUSTER node=$TR_NODE state=$state partition=$TR_PARTITION CPUs=$ncpu RealMemory=$real_mem logs=$TR_LOG_DIR"
echo "SLURM READY cluster=$TR_CLUSTER node=$TR_NODE partition=$TR_PARTITION"
