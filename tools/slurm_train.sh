#!/usr/bin/env bash
# Usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# Environment: see tools/slurm_run.sh (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS, PORT).
exec bash "$(dirname "$0")/slurm_run.sh" "$1" "$2" train.py "$3" --work-dir="$4" \
    --launcher=slurm "${@:5}"
