#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests/integration/test_slurm.py: installs Debian's
# slurm-wlm and munge, writes slurm.conf for this host (its name, CPUs and memory as slurmd
# reports them; no GPUs, no accounting database), creates the munge key, starts munged,
# slurmctld and slurmd directly (CI machines have no systemd) and waits until the node is idle.
# Idempotent: run it again and it only (re)starts what is not running.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
HOST=$(hostname -s)

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  $SUDO apt-get update -qq
  # slurm-wlm pulls slurmctld, slurmd and the client commands; munge authenticates them
  $SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

start_munge() {
  $SUDO mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  if ! $SUDO test -s /etc/munge/munge.key; then
    $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  $SUDO chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  $SUDO chmod 0400 /etc/munge/munge.key
  $SUDO chmod 0755 /run/munge  # clients (sbatch, squeue) reach munged through its socket here
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    $SUDO runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  munge -n | unmunge >/dev/null || { echo "munged did not start" >&2; exit 1; }
}

write_config() {
  local node proctrack cgroup_conf="" tmp
  # slurmd -C prints this machine's NodeName line (CPUs, sockets, cores, RealMemory in MB), so the
  # node never drains for claiming resources it lacks
  node=$(slurmd -C | head -1)
  # a real cluster tracks a job's processes in cgroups and kills all of them when the job ends;
  # do the same where the cgroup v1 freezer is available, so the test sees what a cluster does
  if [ -d /sys/fs/cgroup/freezer ]; then
    proctrack=proctrack/cgroup
    cgroup_conf="CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no"
  else
    proctrack=proctrack/linuxproc
  fi
  $SUDO mkdir -p $CONF_DIR /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
  $SUDO chown slurm:slurm /var/spool/slurmctld /var/log/slurm /run/slurm
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
# written by .ci/slurm.sh: one node, this machine
ClusterName=potforge-ci
SlurmctldHost=$HOST
SlurmUser=slurm
AuthType=auth/munge
MpiDefault=none
ProctrackType=$proctrack
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
# CPUs are the consumable resource; memory is not, so a job asking for none does not take it all
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# finished jobs stay visible to 'scontrol show job' for 10 minutes (tests read their final state)
MinJobAge=600
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$node State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  $SUDO install -m 0644 "$tmp" $CONF
  if [ -n "$cgroup_conf" ]; then
    printf '%s\n' "$cgroup_conf" >"$tmp"
    $SUDO install -m 0644 "$tmp" $CONF_DIR/cgroup.conf
  else
    $SUDO rm -f $CONF_DIR/cgroup.conf
  fi
  rm -f "$tmp"
}

running() {  # running PIDFILE: whether the daemon that wrote it is alive
  $SUDO test -s "$1" && $SUDO kill -0 "$($SUDO cat "$1")" 2>/dev/null
}

start_slurm() {
  local changed=$1
  if running /run/slurm/slurmctld.pid; then
    [ "$changed" = 1 ] && $SUDO scontrol reconfigure
  else
    $SUDO slurmctld
  fi
  for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
  running /run/slurm/slurmd.pid || $SUDO slurmd
}

wait_idle() {
  local state=""
  for _ in $(seq 120); do
    state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -1)
    case $state in
      idle) sinfo; return 0 ;;
      drain* | down*) $SUDO scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  echo "node $HOST is '$state', not idle, after 60 s; see /var/log/slurm/" >&2
  exit 1
}

install_packages
start_munge
config_hash() { cat $CONF $CONF_DIR/cgroup.conf 2>/dev/null | sha256sum || true; }
before=$(config_hash)
write_config
after=$(config_hash)
start_slurm "$([ "$before" = "$after" ] && echo 0 || echo 1)"
wait_idle
