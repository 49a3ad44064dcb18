#!/usr/bin/env bash
# Stand up, inspect or tear down a real single-node SLURM cluster on this
# machine, for CI and local tests of the workflow's SLURM profile.
#
#   scripts/slurm-cluster.sh start|stop|status [--state-dir DIR] [--gpus N] [--timeout S]
#
# Needs Debian (apt), root, and no systemd: munged runs as the munge user,
# slurmctld and slurmd run as root, all three in the background; their PIDs
# are kept in the state directory and `stop` kills exactly those processes.
# The node has this machine's CPUs and memory and N fake GPUs (gres/gpu backed
# by character devices, so jobs asking for GPUs are scheduled; nothing more).
# Quiet on success; on failure prints what went wrong and the daemons' logs.
set -euo pipefail

readonly PACKAGES=(munge slurmctld slurmd slurm-client)
readonly CONF_DIR=/etc/slurm
readonly MARKER="# Written by featreg scripts/slurm-cluster.sh; rewritten on every start."
readonly MUNGE_KEY=/etc/munge/munge.key
readonly DAEMONS=(munged slurmctld slurmd)

usage() {
    echo "usage: $0 start|stop|status [--state-dir DIR] [--gpus N] [--timeout SECONDS]" >&2
    exit 2
}

die() {
    echo "slurm-cluster: $*" >&2
    exit 1
}

action=${1:-}
[[ $action == start || $action == stop || $action == status ]] || usage
shift
state_dir=/var/lib/featreg-slurm
gpus=1
timeout=60
while (($#)); do
    case $1 in
        --state-dir) state_dir=${2:?--state-dir needs a value}; shift 2 ;;
        --gpus) gpus=${2:?--gpus needs a value}; shift 2 ;;
        --timeout) timeout=${2:?--timeout needs a value}; shift 2 ;;
        *) usage ;;
    esac
done
[[ $gpus =~ ^[0-9]+$ ]] || die "--gpus must be a non-negative integer, got '$gpus'"
[[ $timeout =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive integer, got '$timeout'"
state_dir=$(realpath -m "$state_dir")

# Print the PID recorded for daemon $1 if that process is still alive and is
# that daemon (a recycled PID belonging to something else is never reported).
live_pid() {
    local pidfile="$state_dir/$1.pid" pid
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$1" ]] || return 1
    echo "$pid"
}

node_state() {
    timeout 5 sinfo --noheader --Node --format=%t 2>/dev/null | head -n1
}

log_tails() {
    local log
    # The daemons run in the foreground, so their .out files hold their whole logs.
    for log in "$state_dir/log/munged.out" "$state_dir/log/slurmctld.out" "$state_dir/log/slurmd.out"; do
        [[ -s $log ]] || continue
        echo "--- last lines of $log" >&2
        tail -n 15 "$log" >&2
    done
}

stop_cluster() {
    local name pid waited
    for name in slurmd slurmctld munged; do
        if pid=$(live_pid "$name"); then
            kill "$pid"
            for ((waited = 0; waited < 50; waited++)); do
                [[ -d /proc/$pid ]] || break
                sleep 0.1
            done
            if [[ -d /proc/$pid ]]; then kill -KILL "$pid"; fi
        fi
        rm -f "$state_dir/$name.pid"
    done
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query --show --showformat='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
            || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    mkdir -p "$state_dir/log"
    local log="$state_dir/log/apt.log"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
        apt-get update >>"$log" 2>&1 && apt-get install -y --no-install-recommends "${missing[@]}" >>"$log" 2>&1 \
            || { tail -n 20 "$log" >&2; die "could not install ${missing[*]} (log: $log)"; }
    fi
}

# Refuse to overwrite a slurm.conf that this script did not write.
check_conf_is_ours() {
    local conf=$CONF_DIR/$1
    [[ ! -e $conf ]] || head -n1 "$conf" | grep -qxF "$MARKER" \
        || die "$conf exists and was not written by this script; move it away first"
}

write_config() {
    local host node_line hardware cpus mem def_mem i
    host=$(hostname --short)
    # "NodeName=h CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
    node_line=$(slurmd -C | head -n1)
    hardware=${node_line#NodeName=* }
    cpus=$(sed -E 's/.* CPUs=([0-9]+).*/\1/' <<<"$node_line")
    mem=$(sed -E 's/.* RealMemory=([0-9]+).*/\1/' <<<"$node_line")
    def_mem=$((mem / cpus < 1024 ? mem / cpus : 1024))
    check_conf_is_ours slurm.conf
    check_conf_is_ours gres.conf
    mkdir -p "$CONF_DIR"

    local gres_node="" gres_types=""
    : >"$CONF_DIR/gres.conf.tmp"
    echo "$MARKER" >>"$CONF_DIR/gres.conf.tmp"
    if ((gpus > 0)); then
        gres_types="GresTypes=gpu"
        gres_node="Gres=gpu:$gpus"
        mkdir -p "$state_dir/dev"
        for ((i = 0; i < gpus; i++)); do
            # SLURM accepts only character devices as gres files; 1,3 is /dev/null's.
            [[ -c $state_dir/dev/gpu$i ]] || mknod "$state_dir/dev/gpu$i" c 1 3
            echo "NodeName=$host Name=gpu File=$state_dir/dev/gpu$i" >>"$CONF_DIR/gres.conf.tmp"
        done
    fi
    mv "$CONF_DIR/gres.conf.tmp" "$CONF_DIR/gres.conf"

    cat >"$CONF_DIR/slurm.conf.tmp" <<EOF
$MARKER
ClusterName=featreg
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
SchedulerType=sched/backfill
ReturnToService=2
# The SLURM executor plugin polls squeue (no sacct without slurmdbd): keep
# finished jobs visible for longer than its status-check interval.
MinJobAge=300
KillWait=5
InactiveLimit=0
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$state_dir/ctld
SlurmdSpoolDir=$state_dir/spool
SlurmctldPidFile=$state_dir/run/slurmctld.pid
SlurmdPidFile=$state_dir/run/slurmd.pid
SlurmctldLogFile=$state_dir/log/slurmctld.log
SlurmdLogFile=$state_dir/log/slurmd.log
$gres_types
NodeName=$host NodeAddr=127.0.0.1 $hardware $gres_node State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF_DIR/slurm.conf.tmp" "$CONF_DIR/slurm.conf"
}

write_munge_key() {
    if [[ ! -s $MUNGE_KEY ]]; then
        mkdir -p "$(dirname "$MUNGE_KEY")"
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 400 "$MUNGE_KEY"
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
}

# Start daemon $1 (command "$@") detached in its own session and record its PID.
launch() {
    local name=$1
    shift
    setsid "$@" </dev/null >"$state_dir/log/$name.out" 2>&1 &
    echo $! >"$state_dir/$name.pid"
}

start_cluster() {
    if live_pid munged >/dev/null && live_pid slurmctld >/dev/null && live_pid slurmd >/dev/null \
        && [[ $(node_state) =~ ^(idle|mix|alloc) ]]; then
        return 0
    fi
    stop_cluster
    install_packages
    mkdir -p "$state_dir"/{log,run,spool}
    # A node drained by an earlier run would stay drained: start from no state.
    rm -rf "$state_dir/ctld"
    mkdir -p "$state_dir/ctld"
    write_config
    write_munge_key

    launch munged setpriv --reuid=munge --regid=munge --clear-groups munged --foreground
    local waited
    for ((waited = 0; waited < 50; waited++)); do
        [[ -S /run/munge/munge.socket.2 ]] && break
        sleep 0.1
    done
    launch slurmctld slurmctld -D
    launch slurmd slurmd -D

    local deadline=$((SECONDS + timeout)) state=""
    while ((SECONDS < deadline)); do
        local name
        for name in "${DAEMONS[@]}"; do
            # Not live_pid: just after launch the process may not have exec'd yet.
            kill -0 "$(<"$state_dir/$name.pid")" 2>/dev/null || {
                echo "slurm-cluster: $name exited during start" >&2
                log_tails
                stop_cluster
                exit 1
            }
        done
        state=$(node_state) || true
        [[ $state == idle ]] && return 0
        sleep 0.5
    done
    echo "slurm-cluster: node not idle after ${timeout}s (sinfo state: '${state:-no answer}')" >&2
    log_tails
    stop_cluster
    exit 1
}

status_cluster() {
    local name pid up=0
    for name in "${DAEMONS[@]}"; do
        if pid=$(live_pid "$name"); then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running"
            up=1
        fi
    done
    ((up == 0)) && sinfo --Node --long 2>/dev/null || up=1
    return "$up"
}

[[ $(id -u) == 0 ]] || die "must run as root (it installs packages and starts system daemons)"
case $action in
    start) start_cluster ;;
    stop) stop_cluster ;;
    status) status_cluster ;;
esac
