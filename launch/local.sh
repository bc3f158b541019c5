#!/usr/bin/env bash
# lumiere-train as N processes x M CPU devices on this machine, joined on loopback
# (lumiere_jax/parallel/local_launch.py).
#
#   launch/local.sh 2 2 --config configs/lumiere.py:stage=base,size=tiny --workdir runs/two_processes
set -euo pipefail
PYTHON="${PYTHON:-.venv/bin/python}"
processes="$1" devices="$2"
shift 2
exec "$PYTHON" -m lumiere_jax.parallel.local_launch --processes "$processes" --devices_per_process "$devices" -- \
  "$PYTHON" -m lumiere_jax.cli.train "$@"
