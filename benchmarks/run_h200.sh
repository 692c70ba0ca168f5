#!/usr/bin/env bash
# The H200 benchmark as one command (benchmarks/README.md, "GPU"): ViT-B/16 bf16 step time, MFU and peak
# memory for plain CLIP, SF-CLIP settings and OpenCLIP. Run through the device tool from the repo root:
#   bash benchmarks/run_h200.sh            (carry: [".whl"], timeout_s: 540)
# The machine has PyTorch but not OpenCLIP, OmegaConf or ftfy: they travel as wheels in .whl/ (README).
set -euo pipefail
out="${OUT:-benchmarks/results}"
py="${PYTHON:-python3}"  # the H200 image's python3 holds PyTorch
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv
# Under 8 minutes by construction: the script itself takes about 2 (README); the timeout is the backstop.
PYTHONUNBUFFERED=1 timeout 470 "$py" benchmarks/gpu_step.py --out "$out/gpu_step.json" "$@" 2>&1 | tee "$out/gpu_step.log"
