#!/bin/bash
# Run one `lm` command on every worker of a Cloud TPU pod slice (the same command on each
# host; JAX finds the other hosts from the TPU metadata and `lm` initialises jax.distributed).
#
#   TPU=my-v5p-64 ZONE=us-east5-a launch/tpu_pod.sh lm run experiments/shakespeare_char.py --rung=gpu
#   TPU=my-v4-32 ZONE=us-central2-b SETUP=1 launch/tpu_pod.sh lm train \
#       --config=experiments/quickstart.py:medium --workdir=gs://my-bucket/runs/medium
#
# SETUP=1 first installs lm (this checkout's origin, REPO/REF) and jax[tpu] on every worker.
# Workdirs on a pod should be gs:// URLs (every host writes its shards of a checkpoint).
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}"
if [ "$#" -eq 0 ]; then
  echo "usage: TPU=name ZONE=zone launch/tpu_pod.sh lm COMMAND [flags]" >&2
  exit 2
fi
REPO="${REPO:-$(git config --get remote.origin.url)}"
REF="${REF:-$(git rev-parse HEAD)}"
ssh() { gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "$1"; }
if [ "${SETUP:-0}" = 1 ]; then
  ssh "set -e; [ -d lm ] || git clone $REPO lm; cd lm && git fetch -q && git checkout -q $REF \
       && pip install -q -U 'jax[tpu]' && pip install -q -e '.[gcs]'"
fi
CACHE="${LM_COMPILATION_CACHE_DIR:-\$HOME/.cache/lm/xla}"
ssh "cd lm && LM_COMPILATION_CACHE_DIR=$CACHE $(printf '%q ' "$@")"
