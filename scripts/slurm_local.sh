#!/usr/bin/env bash
# A real one-node SLURM on this machine, for CI and for trying the cluster path on a laptop (Debian/Ubuntu, root).
#   sudo scripts/slurm_local.sh up       # install the packages if missing, write the configs, start the daemons,
#                                        # wait until the node is idle and sacct answers (~40 s install, ~2 s start)
#   sudo scripts/slurm_local.sh status   # sinfo, and the daemons this script started
#   sudo scripts/slurm_local.sh down     # stop only the daemons this script started (their PIDs are recorded)
# The daemons: munged, mariadbd (accounting database), slurmdbd (so that sacct answers: submitit needs it),
# slurmctld, slurmd. Everything they write lives in $PTFORGET_SLURM_DIR (default /var/lib/ptforget-slurm); the
# configs go to /etc/slurm, which the SLURM commands read. An /etc/slurm/slurm.conf this script did not write is
# never overwritten. No systemd needed.
set -euo pipefail

STATE="${PTFORGET_SLURM_DIR:-/var/lib/ptforget-slurm}"
CONF_DIR=/etc/slurm
MARK="# written by ptforget scripts/slurm_local.sh"
PACKAGES=(slurm-wlm slurmdbd mariadb-server munge)
DB_PORT="${PTFORGET_SLURM_DB_PORT:-3307}"
NODE="$(hostname -s)"
PIDS="$STATE/pids"

die() { echo "slurm_local.sh: $*" >&2; exit 1; }

need_root() { [[ "$(id -u)" == 0 ]] || die "run as root (sudo $0 $1): it installs packages and starts daemons"; }

install_packages() {
    local missing=()
    for cmd in slurmctld slurmd slurmdbd mariadbd munged sacct; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install ${PACKAGES[*]} yourself"
    echo "slurm_local.sh: installing ${PACKAGES[*]} (missing: ${missing[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

pid_of() { [[ -s "$1" ]] && cat "$1" || true; }

# wait until a command succeeds (at most $1 seconds)
wait_for() {
    local limit=$1 what=$2; shift 2
    local t=0
    until "$@" >/dev/null 2>&1; do
        sleep 0.5; t=$((t + 1))
        (( t < limit * 2 )) || die "$what did not come up within $limit s (logs: $STATE/*.log)"
    done
}

write_configs() {
    if [[ -e "$CONF_DIR/slurm.conf" ]] && ! grep -qF "$MARK" "$CONF_DIR/slurm.conf"; then
        die "$CONF_DIR/slurm.conf exists and was not written by this script: not overwriting it"
    fi
    local node_line
    node_line="$(slurmd -C | head -n 1)"   # NodeName=... CPUs=... RealMemory=...
    node_line="${node_line/NodeName=* CPUs=/NodeName=$NODE NodeAddr=127.0.0.1 CPUs=}"
    mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d"
    cat > "$CONF_DIR/slurm.conf" <<EOF
$MARK
ClusterName=ptforget
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
EnforcePartLimits=ALL
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=600
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/none
$node_line State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat > "$CONF_DIR/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$CONF_DIR/slurmdbd.conf"
}

start_munge() {
    alive "$(pid_of /run/munge/munged.pid)" && return 0
    [[ -s /etc/munge/munge.key ]] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged
    wait_for 10 munged munge -n
    echo "munged $(pid_of /run/munge/munged.pid)" >> "$PIDS"
}

db() { mariadb --no-defaults --socket="$STATE/mysqld.sock" -u root "$@"; }

start_mariadb() {
    alive "$(pid_of "$STATE/mysqld.pid")" && return 0
    if [[ ! -d "$STATE/mysql/mysql" ]]; then
        mkdir -p "$STATE/mysql"
        chown mysql:mysql "$STATE/mysql"
        mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" --skip-test-db \
            --auth-root-authentication-method=socket > "$STATE/mariadb-install.log" 2>&1
    fi
    chown mysql:mysql "$STATE"  # the socket and pid file are created by the mysql user
    mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" --socket="$STATE/mysqld.sock" \
        --pid-file="$STATE/mysqld.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --innodb-buffer-pool-size=64M --log-error="$STATE/mariadb.log" &
    wait_for 30 mariadbd db -e "SELECT 1"
    db -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
           CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
           CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
           GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
           GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    echo "mariadbd $(pid_of "$STATE/mysqld.pid")" >> "$PIDS"
}

start_slurm() {
    if ! alive "$(pid_of "$STATE/slurmdbd.pid")"; then
        slurmdbd
        wait_for 30 slurmdbd test -s "$STATE/slurmdbd.pid"
        wait_for 30 slurmdbd sacctmgr -i -n list cluster
        echo "slurmdbd $(pid_of "$STATE/slurmdbd.pid")" >> "$PIDS"
    fi
    if ! alive "$(pid_of "$STATE/slurmctld.pid")"; then
        slurmctld
        wait_for 30 slurmctld test -s "$STATE/slurmctld.pid"
        wait_for 30 slurmctld scontrol ping
        echo "slurmctld $(pid_of "$STATE/slurmctld.pid")" >> "$PIDS"
    fi
    if ! alive "$(pid_of "$STATE/slurmd.pid")"; then
        slurmd -N "$NODE"
        wait_for 30 slurmd test -s "$STATE/slurmd.pid"
        echo "slurmd $(pid_of "$STATE/slurmd.pid")" >> "$PIDS"
    fi
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
    wait_for 60 "the node (sinfo idle)" node_idle
    wait_for 30 "accounting (sacct)" sacct -n -X -S now
}

node_idle() { [[ "$(sinfo -h -n "$NODE" -o %t 2>/dev/null)" =~ ^(idle|mix|alloc) ]]; }

up() {
    need_root up
    install_packages
    mkdir -p "$STATE"
    chmod 755 "$STATE"
    write_configs
    start_munge
    start_mariadb
    start_slurm
    sinfo
    echo "slurm_local.sh: SLURM is up (node $NODE; state and logs in $STATE; stop with: $0 down)"
}

down() {
    need_root down
    [[ -s "$PIDS" ]] || { echo "slurm_local.sh: nothing recorded in $PIDS: nothing to stop"; return 0; }
    # the reverse order of starting: slurmd, slurmctld, slurmdbd, mariadbd, munged
    tac "$PIDS" | while read -r name pid; do
        if alive "$pid"; then
            kill -TERM "$pid"
            for _ in $(seq 1 40); do alive "$pid" || break; sleep 0.25; done
            alive "$pid" && { echo "slurm_local.sh: $name ($pid) still running after 10 s: SIGKILL"; kill -KILL "$pid"; }
            echo "slurm_local.sh: stopped $name ($pid)"
        fi
    done
    rm -f "$PIDS"
}

status() {
    [[ -s "$PIDS" ]] && while read -r name pid; do
        if alive "$pid"; then echo "$name $pid running"; else echo "$name $pid not running"; fi
    done < "$PIDS"
    sinfo
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
