"""Fitting figures for issue 2: astronaut landmark error and fit time, synthetic recovery.

Usage: python bench/bench_fit.py [--cases 20]
Prints: detection time, fit time (median of 3), NME on skimage.data.astronaut(); on N synthetic
cases (random identity and sparse expression, yaw within +-30 deg, exact projected landmarks + 1 px
noise): expression-weight MAE and face-region vertex error after similarity alignment.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

from sega.face import FaceDetector
from sega.fit import FitOptions, fit_landmarks
from sega.headmodel.ict import load_ict
from sega.landmarks import with_mediapipe_embedding
from sega.synthetic import random_case, similarity_align


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--preset", default="default")
    args = ap.parse_args()
    print(f"# {' '.join(sys.argv)} | {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    model = with_mediapipe_embedding(load_ict())
    opts = FitOptions.preset(args.preset)

    from skimage import data

    photo = data.astronaut()
    with FaceDetector() as det:
        det.detect(photo)  # warm-up (graph creation)
        t0 = time.perf_counter()
        detection = det.detect(photo)
        t_det = time.perf_counter() - t0
    times, nmes = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        fit = fit_landmarks(model, detection.landmarks, photo.shape[:2], opts)
        times.append(time.perf_counter() - t0)
        nmes.append(fit.nme)
    print(f"astronaut: {len(detection.landmarks)} landmarks, detect {t_det * 1000:.0f} ms, "
          f"fit {statistics.median(times):.2f} s (median of 3; target <= 5 s), NME {nmes[0]:.4f} (target <= 0.03)")

    rng = np.random.default_rng(1234)
    buf = model.torch_buffers()
    face = model.region_vertex_mask("face")
    maes, errs = [], []
    for _ in range(args.cases):
        case = random_case(model, rng, max_yaw_deg=30.0, noise_px=1.0)
        fit = fit_landmarks(model, case.landmarks, (512, 512), opts)
        with torch.no_grad():
            v = model.deform(buf, torch.as_tensor(fit.identity), torch.as_tensor(fit.expression)).numpy()
        aligned = similarity_align(v[face], case.vertices[face])
        errs.append(np.linalg.norm(aligned - case.vertices[face], axis=1).mean() * 1000)
        maes.append(np.abs(fit.expression - case.expression).mean())
    print(f"synthetic x{args.cases} (yaw +-30 deg, 1 px noise): expression MAE {np.mean(maes):.4f} (max {np.max(maes):.4f}; target <= 0.10), "
          f"face vertex error {np.mean(errs):.2f} mm (max {np.max(errs):.2f}; target <= 2 mm)")


if __name__ == "__main__":
    main()
