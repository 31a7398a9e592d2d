#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR; PORT picks the rendezvous port.
exec bash "$(dirname "$0")/dist_run.sh" "$3" test.py "$1" "$2" --launcher pytorch "${@:4}"
