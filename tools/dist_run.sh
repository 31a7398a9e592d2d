#!/usr/bin/env bash
# Usage: tools/dist_run.sh NUM_PROCS SCRIPT [SCRIPT args...]
# torchrun of tools/SCRIPT with NUM_PROCS processes per node (dist_train.sh, dist_test.sh).
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR; PORT picks the rendezvous port.
TOOLS="$(dirname "$0")"
PYTHONPATH="$TOOLS/..":$PYTHONPATH \
exec torchrun \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$1" \
    --master_port="${PORT:-29500}" \
    "$TOOLS/$2" "${@:3}"
