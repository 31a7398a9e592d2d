#!/usr/bin/env bash
# Usage: tools/dist_run.sh NUM_PROCS SCRIPT [SCRIPT args...]
# torchrun of tools/SCRIPT with NUM_PROCS processes per node (dist_train.sh, dist_test.sh).
# Multi-node: on every node set NNODES, NODE_RANK (0 .. NNODES-1), MASTER_ADDR (node 0's
# address) and the same PORT (rendezvous port, default 29500).
TOOLS="$(dirname "$0")"
if [ "${NNODES:-1}" -gt 1 ] && [ -z "${MASTER_ADDR:-}" ]; then
  echo "dist_run.sh: NNODES=$NNODES needs MASTER_ADDR, the address of the node with" \
    "NODE_RANK=0 (and the same PORT on every node)" >&2
  exit 2
fi
PYTHONPATH="$TOOLS/..":$PYTHONPATH \
exec torchrun \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$1" \
    --master_port="${PORT:-29500}" \
    "$TOOLS/$2" "${@:3}"
