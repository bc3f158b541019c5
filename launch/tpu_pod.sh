#!/usr/bin/env bash
# lumiere-train on every worker of an existing Cloud TPU VM slice (v5p-128, v6e-64, ...). Creates nothing: the TPU VM,
# the shared run directory and the data are yours to provide.
#
#   TPU_NAME=my-v5p ZONE=us-east5-a REPO=https://github.com/<you>/lumiere_jax.git [REF=main] [PROJECT=...] \
#     launch/tpu_pod.sh --config configs/lumiere.py:stage=base,size=paper --workdir /mnt/shared/runs/base
#
# On every worker at once (gcloud ... ssh --worker=all): fetch REPO at REF into ~/lumiere_jax, install it with the `tpu`
# extra into ~/lumiere_venv, then run lumiere-train --distributed=auto with the given flags (JAX finds the slice's
# workers itself). --workdir must be one directory all workers see (NFS / Filestore, or a gcsfuse mount): each writes
# its checkpoint shards there. Rerun the same command to resume; preemption (SIGTERM) saves first.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${REPO:?set REPO to the git URL of this repository}"
REF="${REF:-main}"
train_flags=$(printf '%q ' "$@")
remote="set -euo pipefail
[ -d ~/lumiere_jax ] || git clone -q $(printf '%q' "$REPO") ~/lumiere_jax
cd ~/lumiere_jax && git fetch -q origin $(printf '%q' "$REF") && git checkout -q FETCH_HEAD
[ -x ~/lumiere_venv/bin/python ] || python3 -m venv ~/lumiere_venv
~/lumiere_venv/bin/pip install -q -e '.[tpu]'
exec ~/lumiere_venv/bin/lumiere-train --distributed=auto $train_flags"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"} --worker=all \
  --command="$remote"
