#!/usr/bin/env bash
# A one-node SLURM on this machine for the cluster-profile test (Debian 12, Slurm 22.05).
#
#   tests/workflow/slurm/local_slurm.sh start STATE_DIR   # prints SLURM_CONF=STATE_DIR/slurm.conf
#   tests/workflow/slurm/local_slurm.sh stop STATE_DIR
#
# start installs the Debian packages if they are missing (root only), makes sure the host name
# resolves, starts munged (as the munge user) only if none is running, writes a one-node
# slurm.conf into STATE_DIR (proctrack/linuxproc, task/none, no accounting database: jobs stay
# visible to `squeue --states=all` for MinJobAge seconds) and starts slurmctld and slurmd with
# it, linking /etc/slurm/slurm.conf to it. Every daemon it starts and every system file it adds
# (that link; an /etc/hosts line and a munge key, only if they were missing) is recorded in
# STATE_DIR/started; stop kills exactly those daemons, by pid, and removes those files and lines.
# Exit status 77 means SLURM cannot be started here, with the reason on stderr.
set -euo pipefail

cmd=${1:-}; state=${2:-}
[[ -n "$cmd" && -n "$state" ]] || { echo "usage: $0 start|stop STATE_DIR" >&2; exit 2; }
T="timeout -k 5"

skip() { echo "SLURM unavailable: $*" >&2; [[ -n "${state:-}" && -f "$state/started" ]] && stop; exit 77; }

stop() {
    [[ -f "$state/started" ]] || return 0
    while read -r name pidfile; do
        case "$name" in  # the second field is a pid file, or what to undo
            link|file) rm -f "$pidfile"; echo "removed $pidfile" >&2; continue ;;
            hosts) sed -i "/^127\.0\.0\.1 $pidfile\$/d" /etc/hosts; echo "removed $pidfile from /etc/hosts" >&2; continue ;;
        esac
        [[ -f "$pidfile" ]] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        echo "stopped $name ($pid)" >&2
    done < <(tac "$state/started")
    rm -f "$state/started"
}

if [[ "$cmd" == stop ]]; then stop; exit 0; fi
[[ "$cmd" == start ]] || { echo "unknown command $cmd" >&2; exit 2; }

need=(munged slurmctld slurmd sbatch squeue scancel sinfo)
missing() { for c in "${need[@]}"; do command -v "$c" >/dev/null || { echo "$c"; return; }; done; }
if [[ -n "$(missing)" ]]; then
    [[ $(id -u) -eq 0 ]] || skip "$(missing) is not installed and this is not root (apt-get install munge slurmctld slurmd slurm-client)"
    command -v apt-get >/dev/null || skip "$(missing) is not installed and there is no apt-get"
    export DEBIAN_FRONTEND=noninteractive
    pk=(munge slurmctld slurmd slurm-client)
    $T 600 apt-get install -y -q "${pk[@]}" >&2 || { $T 600 apt-get update -q >&2 && $T 600 apt-get install -y -q "${pk[@]}" >&2; } \
        || skip "apt-get install ${pk[*]} failed"
fi
[[ $(id -u) -eq 0 ]] || skip "starting slurmd needs root"

mkdir -p "$state"
state=$(cd "$state" && pwd)
: > "$state/started"
host=$(hostname -s)
if ! getent hosts "$host" >/dev/null; then
    echo "127.0.0.1 $host" >> /etc/hosts
    echo "hosts $host" >> "$state/started"
fi

# munge: reuse a running munged, else start one as the munge user
if ! pgrep -x munged >/dev/null; then
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        install -d -o munge -g munge -m 0700 /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
        echo "file /etc/munge/munge.key" >> "$state/started"
    fi
    $T 20 runuser -u munge -- munged --pid-file=/run/munge/munged.pid || skip "munged did not start"
    echo "munged /run/munge/munged.pid" >> "$state/started"
fi

node=$(slurmd -C | head -n 1)
cat > "$state/slurm.conf" <<CONF
ClusterName=neurotrain-ci
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# finished jobs stay in squeue --states=all this long (the CI profile polls with squeue)
MinJobAge=600
KillWait=10
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
$node
PartitionName=ci Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p "$state/ctld" "$state/slurmd"
# Job steps run `srun` with the SLURM_* variables scrubbed (the slurm-jobstep plugin does), so
# the config must be at the default path too: link it there for the lifetime of this cluster.
if [[ -e /etc/slurm/slurm.conf && "$(readlink -f /etc/slurm/slurm.conf)" != "$state/slurm.conf" ]]; then
    skip "/etc/slurm/slurm.conf exists: this machine has a SLURM of its own"
fi
mkdir -p /etc/slurm
ln -sfn "$state/slurm.conf" /etc/slurm/slurm.conf
echo "link /etc/slurm/slurm.conf" >> "$state/started"
export SLURM_CONF="$state/slurm.conf"
$T 30 slurmctld -f "$SLURM_CONF" || skip "slurmctld did not start (see $state/slurmctld.log)"
echo "slurmctld $state/slurmctld.pid" >> "$state/started"
$T 30 slurmd -f "$SLURM_CONF" || skip "slurmd did not start (see $state/slurmd.log)"
echo "slurmd $state/slurmd.pid" >> "$state/started"
for _ in $(seq 60); do
    if $T 5 sinfo -h -o %T 2>/dev/null | grep -qx idle; then echo "SLURM_CONF=$SLURM_CONF"; exit 0; fi
    sleep 0.5
done
echo "SLURM did not become idle:" >&2; $T 5 sinfo >&2 || true
stop; exit 1
