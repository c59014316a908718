#!/usr/bin/env bash
# Prepares, on this (CPU) machine, what scripts/gpu_check.sh needs on a GPU machine that has CUDA torch but
# nothing else of ours and no network (see README "On a GPU"): cp312 wheels of the packages it lacks in
# .whl/, and in .gpu-data/ the ICT neutral mesh, its vertex indices, the converted head-model cache and the
# example and two dev photos (the dev photos are test material: both folders are git-ignored, never committed).
# Then: carry [".whl", ".gpu-data"] and run `bash scripts/gpu_check.sh` there (one call, < 10 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
ICT_DIR="${SEGA_ICT_DIR:-../shared/ict-facekit/FaceXModel}"
DEV_PHOTOS="${DEV_PHOTOS:-../shared/dev-media/photos}"
GPU_DEV_PHOTOS="${GPU_DEV_PHOTOS:-echomimic_a.png hallo_1.jpg}"  # a short-haired and a long-haired portrait
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
grep -qx '/.gpu-data/' .git/info/exclude 2>/dev/null || echo /.gpu-data/ >> .git/info/exclude
rm -rf .whl .gpu-data
mkdir -p .whl .gpu-data/ict .gpu-data/cache .gpu-data/photos
# The GPU image has torch, numpy, scipy, numba, pillow, scikit-image, opencv, imageio, onnx(runtime), pytest;
# these it lacks (mediapipe 0.10.14 needs protobuf < 5, older than the image's).
WHEELS="mediapipe==0.10.14 protobuf==4.25.8 plyfile==1.1.5 gsplat==1.5.3 dlib-bin==20.0.0 flatbuffers==25.2.10 sounddevice==0.5.2"
for w in $WHEELS; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$w"
done
cp "$ICT_DIR/generic_neutral_mesh.obj" "$ICT_DIR/vertex_indices.json" .gpu-data/ict/
python3 - <<'PY'
from pathlib import Path
import shutil
from sega.headmodel.ict import load_ict
from sega.headmodel.cache import cache_dir
load_ict()  # converts once into the cache if needed
(Path(".gpu-data/cache/headmodels")).mkdir(parents=True, exist_ok=True)
for f in (cache_dir() / "headmodels").glob("ict-*.npz"):
    shutil.copy(f, ".gpu-data/cache/headmodels/")
PY
for p in $GPU_DEV_PHOTOS; do cp "$DEV_PHOTOS/$p" .gpu-data/photos/; done
# Compressed to fit the 64 MiB a call may carry (the wheels are ~45 MB); gpu_check.sh unpacks them.
gzip -9 .gpu-data/ict/*.obj .gpu-data/cache/headmodels/*.npz
du -sh .whl .gpu-data
echo "carry: .whl .gpu-data (64 MiB in all with the tree: $(du -cb .whl .gpu-data $(git ls-files) 2>/dev/null | tail -1 | cut -f1) bytes)"
