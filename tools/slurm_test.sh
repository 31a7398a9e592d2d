#!/usr/bin/env bash
# Usage: tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
# Environment: see tools/slurm_run.sh (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS, PORT).
exec bash "$(dirname "$0")/slurm_run.sh" "$1" "$2" test.py "$3" "$4" --launcher=slurm \
    "${@:5}"
