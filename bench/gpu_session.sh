#!/usr/bin/env bash
# On the GPU machine (the device tool), from the repo root, after bench/gpu_session_prepare.sh here:
#   bash .gpu_snapshot/bench/gpu_session.sh      (carry: .whl, .gpu_snapshot)
# Installs the carried wheels into /tmp/site, prints the machine and versions, runs the gpu-marked tests,
# the LoRA/QLoRA steps/s benchmark (autotune vs plain peft + Trainer) and a CPU-provider build and evaluation
# of a GPU-trained model. A step that outruns its timeout is stopped with SIGABRT, so that faulthandler
# prints where each thread was. Logs go to $OUT (the device tool brings them back), else results/gpu_session.
# A dry run of the machinery on a CPU machine (3.11 here: the cp312 wheels do not install, so point WHEELS
# at a folder of pure-Python ones, or an empty one):
#   PY=.venv/bin/python SITE=/tmp/site-dry WHEELS=/tmp/wheels-dry DEVICE=cpu SHAPE=tiny STEPS=4 REPEATS=1 bash .gpu_snapshot/bench/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."  # the snapshot's root
OUT=${OUT:-$PWD/results/gpu_session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WHEELS=${WHEELS:-$PWD/../.whl}
PY=${PY:-python3} SITE=${SITE:-/tmp/site} DEVICE=${DEVICE:-cuda} SHAPE=${SHAPE:-smollm2} STEPS=${STEPS:-30} REPEATS=${REPEATS:-3}
# The CPU-provider evaluation's model: tiny by default. On SmolLM2's shape the int4 build alone (autotune's
# GPTQ, numpy on the CPU) took 119 s of the H200 machine's 16 cores; allow ~250 s for EVAL_SHAPE=smollm2.
EVAL_SHAPE=${EVAL_SHAPE:-tiny} EVAL_TIMEOUT=${EVAL_TIMEOUT:-100}
began=$(date +%s)
step() { echo; echo "=== $1 ($(( $(date +%s) - began )) s into the session)"; }

{
  step "machine"
  nvidia-smi
  echo "snapshot of: $(cat SNAPSHOT 2>/dev/null || echo unknown)"
  step "the machine's own packages"
  $PY -m pip list 2>/dev/null | grep -iE '^(torch|transformers|peft|accelerate|onnxruntime|onnx|pyarrow|fsspec|huggingface.hub|tokenizers|safetensors|pytest|numpy) '
} 2>&1 | tee "$OUT/env.log"

step "install the carried wheels" | tee -a "$OUT/env.log"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl 2>&1 | tee -a "$OUT/env.log" \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=$SITE:$PWD
$PY - <<'PY' 2>&1 | tee -a "$OUT/env.log"
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "onnxruntime", "onnxruntime_genai", "optuna", "datasets",
             "pyarrow", "huggingface_hub"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {module.__version__} ({module.__file__})")
    except Exception as exc:  # a report, not a check: every line is wanted
        print(f"{name}: {type(exc).__name__}: {exc}")
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
from autotune.passes.qlora import four_bit_support
from autotune.device import cuda_provider_problem
print("4-bit on cuda:", (four_bit_support("cuda") or "ok") if torch.cuda.is_available() else "no GPU")
print("CUDA provider:", cuda_provider_problem() or "ok")
PY

step "gpu tests" | tee -a "$OUT/gpu_tests.log"
timeout -s ABRT 150 $PY -m pytest -q -rA -p no:cacheprovider -m gpu tests/passes/test_gpu.py 2>&1 | tee -a "$OUT/gpu_tests.log"
echo "pytest exit: $?" | tee -a "$OUT/gpu_tests.log"

step "steps/s: autotune vs plain peft + Trainer" | tee -a "$OUT/bench_gpu.log"
timeout -s ABRT 200 $PY bench/bench_gpu_steps.py --device $DEVICE --shape $SHAPE --steps $STEPS --repeats $REPEATS --warmup 5 2>&1 | tee -a "$OUT/bench_gpu.log"
echo "bench exit: $?" | tee -a "$OUT/bench_gpu.log"
cp results/bench/bench_gpu_steps-$SHAPE-$DEVICE.json "$OUT/" 2>/dev/null

step "trained on the GPU, int4 build evaluated on the CPU provider" | tee -a "$OUT/cpu_provider_eval.log"
timeout -s ABRT "$EVAL_TIMEOUT" $PY bench/gpu_cpu_provider_eval.py --device $DEVICE --shape $EVAL_SHAPE --steps $(( STEPS < 20 ? STEPS : 20 )) 2>&1 | tee -a "$OUT/cpu_provider_eval.log"
echo "eval exit: $?" | tee -a "$OUT/cpu_provider_eval.log"
cp results/bench/gpu_cpu_provider_eval-$EVAL_SHAPE-$DEVICE.json "$OUT/" 2>/dev/null
step "done" | tee -a "$OUT/env.log"
