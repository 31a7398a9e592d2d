#!/usr/bin/env bash
# Usage: tools/slurm_run.sh PARTITION JOB_NAME SCRIPT [SCRIPT args...]
# srun of tools/SCRIPT, one task per GPU (slurm_train.sh, slurm_test.sh). Environment: GPUS
# (total, default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS (extra srun flags), PORT
# (rendezvous port, default 29500). --kill-on-bad-exit ends every task when one fails, so no
# rank waits on a dead peer.
set -x
TOOLS="$(dirname "$0")"
GPUS_PER_NODE=${GPUS_PER_NODE:-8}

PYTHONPATH="$TOOLS/..":$PYTHONPATH \
MASTER_PORT=${PORT:-29500} \
exec srun -p "$1" \
    --job-name="$2" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="${GPUS:-8}" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS:-} \
    python -u "$TOOLS/$3" "${@:4}"
