#!/usr/bin/env bash
# Here, before a device call: fetch the wheels the GPU machine lacks into .whl/ (ignored, carried by the
# device tool; 64 MiB per call with the working tree) for bench/gpu_session.sh to install there.
#
# The machine (device README / KINDS.md) has Python 3.12, torch 2.11 cu130, transformers 5.17, accelerate,
# onnxruntime 1.30, onnx, pandas, pyarrow, pytest... but not what is listed below. onnxruntime 1.32 travels
# because onnxruntime-genai 0.18 requires >= 1.31; peft travels pinned (the machine's version is unknown);
# transformers does not (5.25 would drag huggingface_hub 2.x and kernels past the size limit: 5.17 is
# what runs there). evaluate is imported only when an evaluator scores accuracy (the gpu tests do not; the
# CPU-provider evaluation does). bitsandbytes' wheel (43 MB) holds a library per CUDA/ROCm/XPU version; only the CPU
# and CUDA 13 ones are kept, so that onnxruntime and onnxruntime-genai fit beside it.
#
# .gpu_snapshot/ (ignored, carried) is the committed tree (HEAD) with this session's GPU scripts over it:
# the device call sends the whole working tree, which other sessions may be editing; the script runs from
# the snapshot, so what runs there is what was tested here.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >>.git/info/exclude
grep -qx '/.gpu_snapshot/' .git/info/exclude 2>/dev/null || echo /.gpu_snapshot/ >>.git/info/exclude
rm -rf .gpu_snapshot && mkdir -p .gpu_snapshot
git archive HEAD autotune tests bench configs pyproject.toml | tar -x -C .gpu_snapshot
cp bench/gpu_session.sh bench/bench_gpu_steps.py bench/gpu_cpu_provider_eval.py .gpu_snapshot/bench/
git rev-parse HEAD >.gpu_snapshot/SNAPSHOT
echo "snapshot of $(git rev-parse --short HEAD) + bench GPU scripts: $(du -sb .gpu_snapshot | cut -f1) bytes"
rm -rf .whl && mkdir -p .whl
PY=${PYTHON:-.venv/bin/python}
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl \
  bitsandbytes==0.50.2 peft==0.21.2 onnxruntime==1.32.0 onnxruntime-genai==0.18.0 \
  optuna==5.0.0 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 colorlog==6.12.0 \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 evaluate==0.4.6
"$PY" - <<'EOF'
import glob, os, zipfile
(wheel,) = glob.glob(".whl/bitsandbytes-*.whl")
keep = ("libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so", "libbitsandbytes_cuda132.so")
dropped = lambda name: name.startswith("bitsandbytes/libbitsandbytes_") and os.path.basename(name) not in keep
slim = wheel + ".slim"
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        if dropped(info.filename):
            continue
        data = src.read(info)
        if info.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(keepends=True) if not dropped(line.decode().split(",")[0]))
        dst.writestr(info, data)
os.replace(slim, wheel)
EOF
du -cb .whl/* | tail -1
echo "tracked tree: $(git ls-files -z | xargs -0 du -cb | tail -1)"
