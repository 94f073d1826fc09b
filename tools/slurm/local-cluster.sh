#!/usr/bin/env bash
# A real one-node SLURM cluster in a private folder, for tests and for trying `--launcher slurm`.
#
#   tools/slurm/local-cluster.sh start DIR   # munged + slurmctld + slurmd, this host as the node
#   eval "$(tools/slurm/local-cluster.sh env DIR)"   # SLURM_CONF for sbatch, squeue, scancel ...
#   tools/slurm/local-cluster.sh stop DIR    # cancels every job, ends the daemons by their pid
#
# DIR must be new or a folder this script made (its path must be short: it holds UNIX sockets).
# Needs Debian's slurm-wlm and munge (tools/setup.sh installs them) and root, as SLURM's daemons
# do. Nothing is left running after `stop`; `start` on a folder whose cluster still runs is
# refused. The cluster has one partition, `debug`, with all of this machine's CPUs; no
# accounting database, so state comes from squeue (jobs stay listed for MinJobAge = 30 min).
set -euo pipefail

usage() {
  echo "usage: $0 start|stop|env|status DIR" >&2
  exit 2
}
[[ $# -eq 2 ]] || usage
cmd=$1
dir=$2

die() {
  echo "local-cluster: $*" >&2
  exit 1
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# The job steps of this cluster that outlived slurmd (slurmstepd and what it started): found by
# the SLURM_CONF in their environment, then their descendants. Ended with SIGKILL.
end_job_processes() {
  local conf=$1 steps=() all=() pid child
  for env in /proc/[0-9]*/environ; do
    pid=${env#/proc/}
    pid=${pid%/environ}
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == slurmstepd ]] || continue
    tr '\0' '\n' <"$env" 2>/dev/null | grep -qx "SLURM_CONF=$conf" && steps+=("$pid")
  done
  [[ ${#steps[@]} -gt 0 ]] || return 0
  all=("${steps[@]}")
  for ((i = 0; i < ${#all[@]}; i++)); do
    for child in $(pgrep -P "${all[$i]}" 2>/dev/null); do all+=("$child"); done
  done
  kill -KILL "${all[@]}" 2>/dev/null || true
}

# Ends the process whose pid is in file $1: SIGTERM, then SIGKILL after 10 s.
end_pid() {
  local file=$1 pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

# A TCP port nobody listens on, other than those in $taken.
taken=""
free_port() {
  local port
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 30000))
    [[ " $taken " == *" $port "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      taken="$taken $port"
      echo "$port"
      return
    fi
  done
  die "no free TCP port found for the SLURM daemons"
}

case $cmd in
  env)
    [[ -f $dir/slurm.conf ]] || die "no cluster in '$dir'; start one with: $0 start $dir"
    echo "export SLURM_CONF='$(cd "$dir" && pwd)/slurm.conf'"
    ;;

  status)
    for d in munged slurmctld slurmd; do
      if alive "$dir/$d.pid"; then echo "$d: running (pid $(cat "$dir/$d.pid"))"; else echo "$d: stopped"; fi
    done
    ;;

  start)
    for bin in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch; do
      [[ -x $bin ]] || die "$bin is missing; install Debian's packages: apt-get install slurm-wlm munge (tools/setup.sh does)"
    done
    [[ $(id -u) -eq 0 ]] || die "SLURM's daemons need root here (SlurmUser=root); run as root"
    id munge >/dev/null 2>&1 || die "the 'munge' user is missing; reinstall Debian's munge package"
    if alive "$dir/slurmctld.pid" || alive "$dir/slurmd.pid" || alive "$dir/munged.pid"; then
      die "a cluster already runs in '$dir'; stop it first: $0 stop $dir"
    fi
    # A start that fails half-way leaves nothing running.
    trap 'status=$?; [[ $status -ne 0 ]] && "$0" stop "$dir" >/dev/null 2>&1; exit $status' EXIT
    mkdir -p "$dir"
    chmod go+x "$dir"  # munged runs as the munge user and must reach its folder inside
    dir=$(cd "$dir" && pwd)
    (( ${#dir} <= 60 )) || die "'$dir' is too long for the daemons' UNIX sockets (at most 60 characters); use a shorter folder such as /tmp/tlab-slurm"
    rm -rf "$dir/munge" "$dir/state" "$dir/spool"
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool"

    # munge: a fresh key, the daemon running as the munge user on a private socket.
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chown -R munge:munge "$dir/munge"
    chmod 711 "$dir/munge"  # clients need to reach the socket
    chmod 400 "$dir/munge/munge.key"
    runuser -u munge -- /usr/sbin/munged --socket="$dir/munge/socket" \
      --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
      --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" ||
      die "munged did not start; see $dir/munge/munged.log"
    cp "$dir/munge/munged.pid" "$dir/munged.pid"

    host=$(hostname -s)
    # The machine's CPUs (its affinity), not OMP_NUM_THREADS: GNU nproc honours that variable,
    # and the tests set it to 1.
    cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    cat >"$dir/slurm.conf" <<CONF
# Written by tools/slurm/local-cluster.sh: a one-node cluster for tests.
ClusterName=tlab
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
AuthInfo=socket=$dir/munge/socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
MinJobAge=1800
KillWait=5
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF=$dir/slurm.conf
    /usr/sbin/slurmctld -c -f "$SLURM_CONF" || die "slurmctld did not start; see $dir/slurmctld.log"
    /usr/sbin/slurmd -f "$SLURM_CONF" -N "$host" || die "slurmd did not start; see $dir/slurmd.log"
    # Ready when the node is idle.
    for _ in $(seq 300); do
      state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)
      [[ $state == idle* ]] && break
      sleep 0.1
    done
    [[ ${state:-} == idle* ]] || {
      tail -5 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
      die "the node did not become idle in 30 s (state '${state:-none}'); logs in $dir"
    }
    trap - EXIT
    echo "SLURM cluster running in $dir (node $host, $cpus CPUs, partition debug)"
    echo "use it with: eval \"\$($0 env $dir)\""
    ;;

  stop)
    [[ -d $dir ]] || exit 0
    if [[ -f $dir/slurm.conf ]] && alive "$dir/slurmctld.pid"; then
      export SLURM_CONF=$dir/slurm.conf
      # Every job of this private cluster, whoever submitted it.
      jobs=$(squeue -h -t PENDING,RUNNING,SUSPENDED,COMPLETING -o %A 2>/dev/null | sort -u)
      [[ -n $jobs ]] && scancel --quiet $jobs 2>/dev/null || true
      for _ in $(seq 100); do
        [[ -z $(squeue -h -t PENDING,RUNNING,SUSPENDED,COMPLETING 2>/dev/null) ]] && break
        sleep 0.1
      done
    fi
    end_pid "$dir/slurmd.pid"
    end_job_processes "$(cd "$dir" && pwd)/slurm.conf"
    end_pid "$dir/slurmctld.pid"
    end_pid "$dir/munged.pid"
    rm -f "$dir/munge/munged.pid"
    ;;

  *) usage ;;
esac
