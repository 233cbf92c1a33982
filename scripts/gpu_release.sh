#!/usr/bin/env bash
# The device half of issue #33 (see scripts/gpu_release.py): two Lite0 runs side by side on one GPU, each fitted
# to $BUDGET seconds of training, their weights, configs, logs and curves copied to $OUT (8 files).
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
BUDGET=${BUDGET:-380}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/runs
nvidia-smi -L || true
${PY:-python3} -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))"
mkdir -p /tmp/pack && ${PY:-python3} -m zipfile -e .gpu/pack.zip /tmp/pack || exit 1
common="--backbone tf_efficientnet_lite0 --last-stride 1 --height 256 --width 128 --device-crops --workers 7 --out /tmp/runs ${EXTRA:-}"
run() {
  name=$1; shift
  timeout $((BUDGET + 120)) ${PY:-python3} scripts/gpu_release.py train --pack /tmp/pack --budget-s "$BUDGET" -- $common \
    --name "$name" "$@" 2>&1 | tr '\r' '\n' | grep -v -E '%\|' > "$OUT/$name.log"
  [ -f "/tmp/runs/$name/model.safetensors" ] || ${PY:-python3} scripts/gpu_release.py salvage --run "/tmp/runs/$name"
  cp "/tmp/runs/$name/model.safetensors" "$OUT/$name.safetensors"
  cp "/tmp/runs/$name/model.json" "$OUT/$name.json"
  cp "/tmp/runs/$name/log.csv" "$OUT/$name.csv"
  echo "$name done"; tail -3 "$OUT/$name.log"
}
run lite0_joint &
run lite0_joint_imnet --norm imagenet &
wait
ls -la "$OUT"
