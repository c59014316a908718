#!/usr/bin/env bash
# The GPU check (issue 19): run on a CUDA machine in one call, < 10 minutes with gsplat's first JIT.
# Prepare here first (scripts/gpu_check_prepare.sh: wheels in .whl/, head model and photos in .gpu-data/),
# carry both, then run `bash scripts/gpu_check.sh`. It runs
#   1. gsplat's JIT (timed), then the CUDA tests (render parity, batched views and frames, device plumbing);
#   2. default-preset builds of the example photo and the dev photos in .gpu-data/photos on CUDA, and of the
#      example on this machine's CPU (the input-view PSNR / SSIM baseline of the same code, same machine);
#   3. the per-frame bench (animate + render one at a time and in a 60-frame batch, batched views).
# Records go to $OUT (or out/gpu_check): bench_build_cuda.json, bench_build_cpu.json, bench_frames_cuda.json;
# copy them into bench/results/ and run scripts/make_figures.py to put them in docs/figures.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu_check}"
mkdir -p "$OUT"
gunzip -f .gpu-data/ict/*.gz .gpu-data/cache/headmodels/*.gz 2>/dev/null  # packed by gpu_check_prepare.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
export SEGA_ICT_DIR="$PWD/.gpu-data/ict" SEGA_CACHE_DIR="$PWD/.gpu-data/cache"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" TORCH_EXTENSIONS_DIR=/tmp/torch_extensions
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 - <<'PY' 2>&1 | tee "$OUT/jit.txt"
import time, torch
t = time.perf_counter()
from gsplat.cuda import _backend  # compiles the extension on first import
state = "ready" if _backend._C is not None else "FAILED to build"
print(f"gsplat extension {state} in {time.perf_counter() - t:.1f} s on {torch.cuda.get_device_name()} (torch {torch.__version__})")
PY
python3 -m pytest -q -p no:cacheprovider tests/test_render.py tests/test_devices.py 2>&1 | tee "$OUT/tests.txt" | tail -15
python3 -m bench.bench_build --presets default --device cuda --photos .gpu-data/photos/* --json "$OUT/bench_build_cuda.json" 2>&1 \
  | grep -v "^W0000\|^I0000" | tee "$OUT/build_cuda.txt"
python3 -m bench.bench_build --presets default --device cpu --json "$OUT/bench_build_cpu.json" 2>&1 \
  | grep -v "^W0000\|^I0000" | tee "$OUT/build_cpu.txt"
python3 -m bench.bench_frames --device cuda --size 512 --frames 60 --json "$OUT/bench_frames_cuda.json" 2>&1 | tee "$OUT/frames.txt"
