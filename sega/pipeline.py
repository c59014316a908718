"""One build pipeline for every shell (CLI, Gradio app, benches): photo -> avatar + previews + bundle.

``BuildPipeline.run(photo, out_dir, options)`` does what ``python -m sega build --bundle`` does and a
little more for the app, all into one output folder:

* ``avatar.npz``, ``fit.json``                     the avatar and its head fit
* ``preview_<name>.png``, ``previews.png``          orbit views + expressions, and their contact sheet
* ``turntable.mp4``                                 one turn around the head
* ``bundle.zip``                                    the web/playback bundle (``export.bundle``)
* ``bundle/`` (``keep_bundle_folder``)              the same bundle unzipped (the app's viewer serves it)
* ``avatar.glb``, ``static.ply``                    copied out of the bundle (downloads, ``gr.Model3D``)

Progress is reported per stage (``PIPELINE_STAGES``: the avatar's ``BUILD_STAGES`` then previews and
export) through ``progress(stage, fraction_of_stage)``. A build can be given a time limit: the
deadline is checked at every progress report (the optimisation reports every step), and a build
past it stops with ``BuildTimeoutError`` (a ``SegaError``, so shells show its message).

Head models are loaded once per pipeline and reused (thread-safe); nothing heavy happens at import.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .devices import DEFAULT_DEVICE
from .errors import SegaError

EXPORT_STAGES = ("previews", "export")  # after sega.avatar.BUILD_STAGES
HEAD_MODELS = ("ict", "flame")


def pipeline_stages() -> tuple[str, ...]:
    """All stages in order: detect, fit, segment, initialise, optimise, precompute, previews, export."""
    from .avatar import BUILD_STAGES

    return tuple(BUILD_STAGES) + EXPORT_STAGES


class BuildTimeoutError(SegaError):
    """The build ran past its time limit."""


@dataclass(frozen=True)
class HeadModelOptions:
    """Which head model to build with, and where its files are."""

    name: str = "ict"  # "ict" (ICT-FaceKit) or "flame" (needs flame_path)
    ict_dir: Path | None = None  # ICT-FaceKit FaceXModel folder (None: $SEGA_ICT_DIR, then the download cache)
    num_identity: int = 50  # identity components to use (ICT: 1..100)
    allow_download: bool = False  # fetch ICT-FaceKit from upstream when it is not found locally
    flame_path: Path | None = None  # FLAME .pkl file or folder (name == "flame")
    flame_uv: Path | None = None  # FLAME UV file (head_template_mesh.obj or FLAME_texture.npz)


@dataclass(frozen=True)
class BuildOptions:
    """What one build produces and how hard it works."""

    preset: str = "default"  # sega.avatar.AvatarOptions preset: fast, default or high
    seed: int = 0  # random seed (same seed, same machine: same avatar)
    preview_size: int = 256  # side (px) of preview images and turntable frames
    turntable: bool = True  # write turntable.mp4
    bundle: bool = True  # write bundle.zip (+ avatar.glb and static.ply beside it)
    glb: bool = True  # include avatar.glb in the bundle (and copy it out)
    keep_bundle_folder: bool = False  # also keep the unzipped bundle in out/bundle/ (the app serves it to the viewer)
    timeout_s: float | None = None  # stop with BuildTimeoutError past this many seconds (None: no limit)
    device: str = DEFAULT_DEVICE  # where the build and the previews run: "auto" (CUDA when torch sees it), "cpu", "cuda"
    prior: str | None = None  # a trained prior file (``sega train``'s prior.npz): the decoders start from its prediction


@dataclass
class BuildResult:
    """Paths written by ``BuildPipeline.run`` (None where not produced) and what the build reported."""

    out_dir: Path  # the output folder
    avatar: object  # the sega.avatar.Avatar (in memory, for re-rendering)
    avatar_path: Path  # avatar.npz
    fit_path: Path  # fit.json
    previews: dict[str, Path]  # preview name -> PNG
    contact_sheet: Path  # previews.png
    turntable: Path | None  # turntable.mp4
    bundle_zip: Path | None  # bundle.zip
    bundle_dir: Path | None  # unzipped bundle (keep_bundle_folder)
    glb: Path | None  # avatar.glb
    static_ply: Path | None  # static.ply (all splats at the neutral expression)
    notes: list[str] = field(default_factory=list)  # detection notes (e.g. "the face is small")
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    total_seconds: float = 0.0  # whole run, wall time

    @property
    def num_gaussians(self) -> int:
        return int(self.avatar.num_gaussians)


ProgressFn = Callable[[str, float], None]


class BuildPipeline:
    """Photo -> avatar, previews, turntable, bundle. One instance can serve many builds (models cached)."""

    def __init__(self, head_model: HeadModelOptions = HeadModelOptions()):
        self.head_model = head_model
        self._models: dict[tuple, object] = {}
        self._priors: dict[tuple, object] = {}
        self._lock = threading.Lock()

    # ---- head models ---------------------------------------------------------------------------
    def flame_configured(self) -> bool:
        return self.head_model.flame_path is not None

    def available_head_models(self) -> list[str]:
        return ["ict", "flame"] if self.flame_configured() else ["ict"]

    def model(self, name: str | None = None):
        """The head model ``name`` (default: the configured one), with its landmark embedding; cached."""
        from .landmarks import with_mediapipe_embedding

        cfg = self.head_model
        name = name or cfg.name
        if name not in HEAD_MODELS:
            raise SegaError(f"unknown head model {name!r} (choose {' or '.join(HEAD_MODELS)})")
        key = (name,)
        with self._lock:
            if key not in self._models:
                if name == "flame":
                    if cfg.flame_path is None:
                        raise SegaError("FLAME is not configured: give the FLAME files (FLAME .pkl or its folder) to use it")
                    from .headmodel.flame import load_flame

                    self._models[key] = with_mediapipe_embedding(load_flame(cfg.flame_path, uv=cfg.flame_uv))
                else:
                    from .headmodel.ict import load_ict

                    self._models[key] = with_mediapipe_embedding(
                        load_ict(cfg.ict_dir, num_identity=cfg.num_identity, download=cfg.allow_download))
            return self._models[key]

    def prior(self, path: str | Path, model):
        """The prior file at ``path``, checked against ``model`` (``sega.nets.prior_file.load_prior``); cached while
        the file is unchanged. Raises ``PriorFileError`` (a ``SegaError``) with a one-line reason."""
        from .nets.prior_file import load_prior

        p = Path(path)
        stat = p.stat() if p.is_file() else None
        key = (str(p.resolve()), model.name, None if stat is None else (stat.st_size, stat.st_mtime_ns))
        with self._lock:
            if key not in self._priors:
                self._priors[key] = load_prior(p, model)
            return self._priors[key]

    # ---- the build -----------------------------------------------------------------------------
    def run(
        self,
        photo,
        out_dir: str | Path,
        options: BuildOptions = BuildOptions(),
        head_model: str | None = None,
        progress: ProgressFn | None = None,
    ) -> BuildResult:
        """Build from ``photo`` (a path, bytes or an [H, W, 3] uint8 array) into ``out_dir`` (created).

        Raises ``SegaError`` subclasses for anything the user can fix (bad photo, no face, missing
        head-model files, time limit)."""
        import imageio.v2 as imageio
        import numpy as np

        from .avatar import (
            TURNTABLE_FPS,
            AvatarOptions,
            build_avatar,
            contact_sheet,
            preview_images,
            turntable_frames,
        )
        from .io import load_photo, save_png

        t_start = time.perf_counter()
        deadline = None if options.timeout_s is None else t_start + float(options.timeout_s)

        def report(stage: str, fraction: float) -> None:
            if deadline is not None and time.perf_counter() > deadline:
                raise BuildTimeoutError(f"the build took longer than the limit of {options.timeout_s:g} s and was stopped "
                                        f"(during {stage}); try the fast preset or a smaller photo")
            if progress is not None:
                progress(stage, float(fraction))

        img = photo if isinstance(photo, np.ndarray) else load_photo(photo)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise SegaError(f"the photo array must be [H, W, 3] uint8, got {img.shape} {img.dtype}")
        try:
            avatar_options = AvatarOptions.preset(options.preset, seed=options.seed, device=options.device)
        except ValueError as err:
            raise SegaError(str(err)) from err
        model = self.model(head_model)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)

        prior = None if options.prior is None else self.prior(options.prior, model)
        avatar, data = build_avatar(img, model, avatar_options, report, prior=prior)
        seconds = dict(avatar.provenance["build_seconds"])
        avatar_path = avatar.save(out / "avatar.npz")
        fit_path = out / "fit.json"
        data.fit.save(fit_path)

        t0 = time.perf_counter()
        report("previews", 0.0)
        images = preview_images(avatar, size=options.preview_size)
        previews = {}
        for name, image in images.items():
            previews[name] = out / f"preview_{name}.png"
            save_png(previews[name], image)
        sheet = out / "previews.png"
        save_png(sheet, contact_sheet(list(images.values())))
        report("previews", 0.5)
        turntable = None
        if options.turntable:
            turntable = out / "turntable.mp4"
            frames = turntable_frames(avatar, size=options.preview_size)
            imageio.mimwrite(turntable, frames, fps=TURNTABLE_FPS, macro_block_size=1)
        seconds["previews"] = time.perf_counter() - t0
        report("previews", 1.0)

        bundle_zip = bundle_dir = glb = ply = None
        if options.bundle:
            t0 = time.perf_counter()
            report("export", 0.0)
            bundle_zip, bundle_dir, glb, ply = self._export(avatar, out, options, report)
            seconds["export"] = time.perf_counter() - t0
            report("export", 1.0)
        return BuildResult(
            out_dir=out, avatar=avatar, avatar_path=Path(avatar_path), fit_path=fit_path, previews=previews,
            contact_sheet=sheet, turntable=turntable, bundle_zip=bundle_zip, bundle_dir=bundle_dir, glb=glb,
            static_ply=ply, notes=list(data.detection.notes), seconds={k: round(v, 3) for k, v in seconds.items()},
            total_seconds=time.perf_counter() - t_start,
        )  # fmt: skip

    @staticmethod
    def _export(avatar, out: Path, options: BuildOptions, report: ProgressFn):
        """bundle.zip (same content as ``export.bundle.write_bundle``), plus avatar.glb / static.ply copies."""
        from export.bundle import (
            GLB_FILE,
            STATIC_PLY,
            BundleOptions,
            write_bundle_folder,
            zip_folder,
        )

        folder = out / "bundle"
        if folder.exists():
            shutil.rmtree(folder)
        summary = write_bundle_folder(avatar, folder, BundleOptions(glb=options.glb))
        report("export", 0.8)
        bundle_zip = zip_folder(summary.path, out / "bundle.zip")
        ply = shutil.copyfile(folder / STATIC_PLY, out / STATIC_PLY)
        glb = shutil.copyfile(folder / GLB_FILE, out / GLB_FILE) if options.glb else None
        bundle_dir = folder
        if not options.keep_bundle_folder:
            shutil.rmtree(folder)
            bundle_dir = None
        return bundle_zip, bundle_dir, Path(glb) if glb else None, Path(ply)


def overall_fraction(stage: str, fraction: float, stages: tuple[str, ...] | None = None) -> float:
    """Progress of the whole pipeline in [0, 1] from (stage, fraction of that stage); stages weigh equally
    except optimise, which weighs 5 (it takes most of the time)."""
    stages = stages or pipeline_stages()
    weights = [5.0 if s == "optimise" else 1.0 for s in stages]
    k = stages.index(stage) if stage in stages else 0
    done = sum(weights[:k]) + weights[k] * min(max(fraction, 0.0), 1.0)
    return done / sum(weights)


__all__ = [
    "BuildOptions",
    "BuildPipeline",
    "BuildResult",
    "BuildTimeoutError",
    "HeadModelOptions",
    "overall_fraction",
    "pipeline_stages",
]
