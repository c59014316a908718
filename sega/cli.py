"""``python -m sega``: a thin shell over the pipeline objects.

Each subcommand parses options, calls library functions and turns ``SegaError`` into a one-line
message and exit code 2 (no traceback for a bad input).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .devices import DEFAULT_DEVICE, DEVICES
from .errors import SegaError
from .presets import DEFAULT_PRESET, PRESET_HELP, PRESET_NAMES, QUICK_PRESET

EXIT_USER_ERROR = 2  # bad input or missing data: message printed, no traceback


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (argparse names the option in its one-line error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def _add_headmodel_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("head model")
    g.add_argument("--head-model", choices=("ict", "flame"), default="ict", help="parametric head model (default: ict)")
    g.add_argument("--ict-dir", type=Path, help="ICT-FaceKit FaceXModel folder (default: $SEGA_ICT_DIR, then the download cache)")
    g.add_argument("--num-identity", type=int, default=50, help="identity components to use (ICT: 1..100)")
    g.add_argument("--no-download", action="store_true", help="never download ICT-FaceKit; fail if it is not found locally")
    g.add_argument("--flame", type=Path, help="FLAME .pkl file or folder (with --head-model flame)")
    g.add_argument("--flame-uv", type=Path, help="FLAME UV file: head_template_mesh.obj or FLAME_texture.npz")


def _add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=DEVICES, default=DEFAULT_DEVICE,
                   help="where the torch work and rendering run: auto (CUDA when torch sees a GPU, else the CPU), cpu or cuda; "
                        "MediaPipe always runs on the CPU (default: auto)")  # fmt: skip


def _device_from_args(args: argparse.Namespace) -> str:
    """--device resolved ("cpu" / "cuda") after the output check and before anything slow: ``DeviceError`` (one
    line) when CUDA is asked for and missing."""
    from .devices import resolve_device

    return resolve_device(args.device)


def load_model_from_args(args: argparse.Namespace):
    """The head model selected on the command line, with its shipped landmark embedding attached."""
    from .headmodel.ict import load_ict
    from .landmarks import with_mediapipe_embedding

    if args.head_model == "flame":
        if args.flame is None:
            raise SegaError("--head-model flame needs --flame PATH (your FLAME .pkl or its folder)")
        from .headmodel.flame import load_flame

        return with_mediapipe_embedding(load_flame(args.flame, uv=args.flame_uv))
    return with_mediapipe_embedding(load_ict(args.ict_dir, num_identity=args.num_identity, download=not args.no_download))


def _photo_output_model(args: argparse.Namespace):
    """(photo path, decoded photo, output folder (created), head model) from PHOTO|--example, -o, head-model flags."""
    from .io import check_output_dir, load_photo

    if (args.photo is None) == (not args.example):
        raise SegaError("give a PHOTO or --example (not both)")
    check_output_dir(args.output)  # before anything slow loads
    from .examples import example_photo

    photo_path = example_photo() if args.example else args.photo
    img = load_photo(photo_path)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    return photo_path, img, out, load_model_from_args(args)


def cmd_fit(args: argparse.Namespace) -> int:
    from .fit import FitOptions, fit_photo
    from .io import save_png
    from .overlay import fit_overlay

    photo_path, img, out, model = _photo_output_model(args)
    result, detection = fit_photo(img, model, FitOptions.preset(args.preset))
    result.save(out / "fit.json")
    save_png(out / "fit_overlay.png", fit_overlay(img, result, model, detection))
    for note in detection.notes:
        print(f"note: {note}")
    print(f"fitted {photo_path}: {len(result.landmarks_detected)} landmarks, NME {result.nme:.4f}, {result.seconds:.2f} s")
    print(f"wrote {out / 'fit.json'} and {out / 'fit_overlay.png'}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Photo -> avatar.npz, fit.json, preview PNGs, a contact sheet and a turntable MP4 (+ bundle) in the output folder.

    The same ``sega.pipeline.BuildPipeline`` the Gradio app runs."""
    from .io import check_output_dir

    check_output_dir(args.output)  # before anything slow loads
    device = _device_from_args(args)
    from tqdm import tqdm

    from .examples import example_photo
    from .pipeline import BuildOptions, BuildPipeline, HeadModelOptions, pipeline_stages

    if (args.photo is None) == (not args.example):
        raise SegaError("give a PHOTO or --example (not both)")
    photo_path = example_photo() if args.example else args.photo
    pipe = BuildPipeline(HeadModelOptions(args.head_model, args.ict_dir, args.num_identity, not args.no_download, args.flame, args.flame_uv))
    if args.prior is not None and not args.prior.is_file():
        raise SegaError(f"prior file not found: {args.prior}")
    options = BuildOptions(preset=args.preset, seed=args.seed, preview_size=args.preview_size, bundle=args.bundle, device=device,
                           prior=None if args.prior is None else str(args.prior))  # fmt: skip
    stages = [s for s in pipeline_stages() if args.bundle or s != "export"]
    with tqdm(total=len(stages), unit="stage", bar_format="{l_bar}{bar}| {elapsed}", disable=args.quiet) as bar:
        shown = {"stage": ""}

        def progress(stage: str, fraction: float) -> None:
            if shown["stage"] != stage:
                shown["stage"] = stage
                bar.set_description(stage, refresh=False)
            bar.update(stages.index(stage) + fraction - bar.n)  # rate-limited by tqdm's mininterval

        result = pipe.run(photo_path, args.output, options, progress=progress)
    for note in result.notes:
        print(f"note: {note}")
    avatar = result.avatar
    build_s = sum(v for k, v in result.seconds.items() if k not in ("previews", "export"))
    print(f"built {photo_path}: {avatar.num_gaussians} Gaussians ({int(avatar.static_mask.sum())} static), "
          f"preset {args.preset}, {build_s:.1f} s on {avatar.provenance.get('device', avatar.options.device)}")
    extra = f", bundle.zip ({result.bundle_zip.stat().st_size / 1e6:.1f} MB), avatar.glb, static.ply" if result.bundle_zip else ""
    print(f"wrote avatar.npz, fit.json, {len(result.previews)} previews, previews.png, turntable.mp4{extra} in {result.out_dir}")
    return 0


def _check_bundle_output(path: Path) -> None:
    """A bundle goes to a .zip file, or else a folder (as ``export.bundle.write_bundle`` decides)."""
    from .io import check_output_dir, check_output_file

    if Path(path).suffix.lower() == ".zip":
        check_output_file(path, "output bundle")
    else:
        check_output_dir(path, "output bundle folder")


def cmd_export(args: argparse.Namespace) -> int:
    """avatar.npz -> bundle (.zip or folder)."""
    if not Path(args.avatar).is_file():
        raise SegaError(f"avatar file not found: {args.avatar}")
    _check_bundle_output(args.output)  # before anything slow loads
    from export.bundle import BundleOptions, write_bundle

    from .avatar import Avatar

    avatar = Avatar.load(args.avatar, load_model_from_args(args))
    summary = write_bundle(avatar, args.output, BundleOptions(glb=not args.no_glb))
    print(f"wrote {summary}")
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    """Render a clip of a bundle to an MP4 using the bundle alone (onnxruntime + the CPU/gsplat renderer)."""
    from .io import check_output_file

    check_output_file(args.output, "output video")  # before anything slow loads
    device = _device_from_args(args)
    import imageio.v2 as imageio
    import numpy as np
    from tqdm import tqdm

    from export.playback import load_bundle

    from .camera import orbit_camera

    play_sizes = (16, 4096)  # video side in pixels: smaller shows nothing, larger takes minutes a frame on a CPU
    out = Path(args.output)
    if out.suffix.lower() != ".mp4":
        raise SegaError(f"output must be an .mp4 file, got {out}")
    if args.max_frames < 0:
        raise SegaError(f"--max-frames must be 0 (the whole clip) or more, got {args.max_frames}")
    if not play_sizes[0] <= args.size <= play_sizes[1]:
        raise SegaError(f"--size must be {play_sizes[0]} to {play_sizes[1]} pixels, got {args.size}")
    if not np.isfinite(args.yaw):
        raise SegaError(f"--yaw must be a finite number of degrees, got {args.yaw}")
    with load_bundle(args.bundle, device=device) as bundle:
        clip = bundle.clip(args.clip, max_frames=args.max_frames or None)  # converts only the frames played
        cam = bundle.camera(args.size, args.size)
        if args.yaw:
            c = bundle.manifest["camera"]
            target = np.asarray(c["target"])
            cam = orbit_camera(args.yaw, 0.0, float(np.linalg.norm(np.asarray(c["position"]) - target)), target, c["fov_deg"], args.size, args.size)
        fps, count = clip["fps"], len(clip["frames"])
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.stem + ".partial.mp4")  # a frame may still be refused: no half video under the real name
        try:
            with imageio.get_writer(partial, fps=fps, macro_block_size=1) as writer:
                for expr, pose in tqdm(bundle.frames_of(clip), total=count, unit="frame", disable=args.quiet):
                    rgb = bundle.render(expr, pose, camera=cam, backend=args.backend).rgb.cpu().numpy()
                    writer.append_data((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))
            partial.replace(out)
        finally:
            partial.unlink(missing_ok=True)
    print(f"wrote {out}: clip {args.clip!r}, {count} frames at {fps:g} fps, {args.size}x{args.size}")
    return 0


def _video_model_avatar(args: argparse.Namespace, required: bool, device: str):
    """(frames of --video, head model, avatar of AVATAR/--avatar on ``device``, or None); the video is read first,
    so a bad video is reported before anything slow loads."""
    from .avatar import Avatar
    from .video import read_frames

    if args.avatar is not None and not Path(args.avatar).is_file():
        raise SegaError(f"avatar file not found: {args.avatar}")
    frames = read_frames(args.video)
    model = load_model_from_args(args)
    avatar = Avatar.load(args.avatar, model, device=device) if (required or args.avatar is not None) else None
    return frames, model, avatar


def cmd_drive(args: argparse.Namespace) -> int:
    """Drive an avatar with a video (or a folder of frames, or one image) -> side-by-side MP4 (+ clip JSON)."""
    from .io import check_output_file

    out = Path(args.output)
    if out.suffix.lower() != ".mp4":
        raise SegaError(f"output must be an .mp4 file, got {out}")
    check_output_file(out, "output video")  # before the video is read and anything slow loads
    if args.clip:
        check_output_file(args.clip, "clip file")
    device = _device_from_args(args)
    from dataclasses import replace

    from tqdm import tqdm

    from .drive import DriveOptions, drive_frames, render_side_by_side, to_clip
    from .face import FaceDetector
    from .video import write_video

    frames, model, avatar = _video_model_avatar(args, required=True, device=device)
    options = replace(DriveOptions(), smooth=not args.no_smooth, remove_neutral=not args.keep_neutral, render_size=args.size)
    with FaceDetector() as detector:
        result = drive_frames(frames, model, detector, options)
    if result.missing:
        shown = ", ".join(str(i) for i in result.missing[:10]) + (" ..." if len(result.missing) > 10 else "")
        print(f"note: no face in {len(result.missing)} of {len(frames)} frames ({shown}); they hold the last good fit")
    if args.clip:
        from export.clips import write_clip

        write_clip(args.clip, to_clip(result, Path(args.clip).stem, str(args.video), options))
    with tqdm(total=len(frames), unit="frame", disable=args.quiet) as bar:
        write_video(out, render_side_by_side(avatar, frames, result, args.size, lambda i: bar.update(1)), result.fps)
    fps = len(frames) / max(result.seconds["landmarks"] + result.seconds["solve"], 1e-9)
    print(f"wrote {out}: {len(frames)} frames at {result.fps:g} fps (tracking {fps:.1f} frames/s)" + (f", clip {args.clip}" if args.clip else ""))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Self-reenactment fidelity on a video: build from one frame, drive with the others, compare."""
    from .io import check_output_dir

    check_output_dir(args.output, "report folder")  # before the video is read and anything slow loads
    device = _device_from_args(args)
    from tqdm import tqdm

    from dataclasses import replace

    from .evaluate import EvalOptions, evaluate_frames, write_report
    from .face import FaceDetector
    from .video import write_video

    frames, model, avatar = _video_model_avatar(args, required=False, device=device)
    if args.prior is not None and args.avatar is not None:
        raise SegaError("give --prior (the avatar is built here from it) or --avatar, not both")
    options = EvalOptions(source_frame=args.source_frame, every=args.every, preset=args.preset, device=device,
                          prior=None if args.prior is None else str(args.prior))  # fmt: skip
    if args.max_scored is not None:
        options = replace(options, max_scored=args.max_scored)
    with FaceDetector() as detector, tqdm(unit="frame", disable=args.quiet) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = evaluate_frames(frames, model, detector, options, avatar, progress)
    path = write_report(report, args.output)
    if args.video_out:
        import numpy as np

        sheet = [np.concatenate([p["target"], p["driven"], p["frozen"]], 1) for _, p in report["_images"]]
        if sheet:
            write_video(Path(args.output) / "side_by_side.mp4", sheet, max(1.0, (frames.fps or 1.0) / args.every))
    o, f, g = report["overall"], report["frozen"], report["gain"]

    def show(key: str, fmt: str, src: dict = o) -> str:
        return "n/a" if src.get(key) is None else fmt.format(src[key]["mean"])

    print(f"scored {report['scored_frames']} frames: PSNR {show('psnr_db', '{:.2f} dB')} (mouth {show('mouth_psnr_db', '{:.2f}')}, "
          f"eyes {show('eye_psnr_db', '{:.2f}')}), SSIM {show('ssim', '{:.3f}')}, pose error {show('pose_error_deg', '{:.2f} deg')}")
    print(f"  errors (IOD): eye opening {show('eye_opening_error', '{:.3f}')} (frozen {show('eye_opening_error', '{:.3f}', f)}), "
          f"mouth opening {show('mouth_opening_error', '{:.3f}')} (frozen {show('mouth_opening_error', '{:.3f}', f)}), "
          f"gaze {show('gaze_error', '{:.3f}')} (frozen {show('gaze_error', '{:.3f}', f)}); "
          f"mouth PSNR gain over frozen {g.get('mouth_psnr_db', float('nan')):+.2f} dB")
    teeth = report["teeth"]["agreement"]
    print(f"  teeth agree on {'n/a' if teeth is None else f'{teeth:.0%}'} of frames; eyes closed where open: "
          f"{report['eyes_closed_wrongly']['count']} frames; identity distance {show('identity_distance', '{:.3f}')}")
    if report["identity_note"]:
        print(f"note: identity {report['identity_note']}")
    print(f"wrote {path}, {Path(args.output) / 'report.html'} (open it in a browser) and {Path(args.output) / 'contact_sheet.png'}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Videos / frame folders -> a prepared training set (``sega.train.prepare``)."""
    from tqdm import tqdm

    from .train.prepare import PrepareOptions, prepare

    missing = [str(p) for p in args.sources if not Path(p).exists()]
    if missing:
        raise SegaError(f"not found: {', '.join(missing[:5])}")
    options = PrepareOptions(size=args.size, every=args.every, max_frames=args.max_frames, source_frames=args.source_frames,
                             atlas_resolution=args.atlas_resolution, workers=args.workers, head_model=args.head_model)  # fmt: skip
    with tqdm(total=len(args.sources), unit="clip", disable=args.quiet) as bar:
        def progress(done: int, total: int, cid: str | None) -> None:
            bar.update(done - bar.n)

        manifest = prepare(args.sources, args.output, options, progress)
    frames = sum(c["frames"] for c in manifest["clips"].values())
    print(f"wrote {args.output}: {len(manifest['clips'])} clips, {frames} frames")
    for cid, why in sorted(manifest["failed"].items()):
        print(f"failed: {cid}: {why}")
    return 0 if manifest["clips"] else EXIT_USER_ERROR


def cmd_train(args: argparse.Namespace) -> int:
    """A prepared set -> a trained prior (``sega.train.loop``); under torchrun every process runs this."""
    from .train.loop import FINAL_PRIOR, train
    from .train.options import TrainOptions

    if not Path(args.dataset).is_dir():
        raise SegaError(f"not a folder: {args.dataset} (give the folder `python -m sega prepare` wrote)")
    defaults = TrainOptions()
    options = TrainOptions(steps=args.steps, static_steps=defaults.static_steps if args.static_steps is None else args.static_steps,
                           batch=args.batch, lr=args.lr, preset=args.preset, val_clips=tuple(args.val_clips or ()),
                           val_every=args.val_every, val_frames=args.val_frames, checkpoint_every=args.checkpoint_every, seed=args.seed,
                           device=_device_from_args(args), threads=args.threads)  # fmt: skip
    summary = train(args.dataset, args.output, options, resume=args.resume, show_progress=not args.quiet)
    if summary["world_size"] == 1 or int(os.environ.get("RANK", "0")) == 0:
        val = summary["validation"]
        shown = "; ".join(f"{r['clip']}: {r['psnr_db']:.2f} dB (zero residuals {r['psnr_db_zero']:.2f})" for r in val) or "no validation clips"
        print(f"trained {summary['steps']} steps ({summary['samples_per_s']:.2f} samples/s on {summary['world_size']} process(es)); "
              f"validation: {shown}")
        print(f"wrote {Path(args.output) / FINAL_PRIOR} (use: python -m sega build PHOTO --prior {Path(args.output) / FINAL_PRIOR})")
    if summary["world_size"] > 1:
        # Every rank has passed the closing barrier, rank 0 has written every file and the process group is
        # destroyed: leave without the interpreter's C++ teardown. There, gloo's threads once raced it on a
        # loaded machine and a finished rank aborted ("terminate called without an active exception",
        # SIGABRT), so torchrun failed a complete run.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def cmd_headmodel(args: argparse.Namespace) -> int:
    if args.action == "download":
        from .headmodel.download import download_ict

        path = download_ict(num_identity=args.num_identity)
        print(f"ICT-FaceKit files in {path}")
        return 0
    model = load_model_from_args(args)
    info = {
        "name": model.name,
        "vertices": model.num_vertices,
        "triangles": model.num_faces,
        "identity_components": model.num_identity,
        "expressions": model.num_expressions,
        "regions": list(model.region_names),
        "landmark_sets": {k: len(v) for k, v in model.landmarks.items()},
        "licence": model.licence,
    }
    print(json.dumps(info, indent=1))
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    """Serve the web viewer for a bundle on this machine until Ctrl-C."""
    from .viewer_server import serve

    server = serve(args.bundle, host=args.host, port=args.port, open_browser=args.open, threads=args.threads, quiet=not args.verbose)
    print(f"viewer for {args.bundle} at {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sega", description="One photo -> drivable 3D Gaussian head avatar.")
    parser.add_argument("--version", action="version", version=f"sega {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="detect the face and fit the head model; writes fit.json and fit_overlay.png")
    p.add_argument("photo", nargs="?", type=Path, help="photo file (JPEG, PNG, WebP, ...)")
    p.add_argument("--example", action="store_true", help="use the bundled example photo (astronaut)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--preset", choices=PRESET_NAMES, default=DEFAULT_PRESET, help="fitting effort")
    _add_headmodel_args(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("build", help="build a drivable Gaussian avatar from one photo; writes avatar.npz, fit.json, previews")
    p.add_argument("photo", nargs="?", type=Path, help="photo file (JPEG, PNG, WebP, ...)")
    p.add_argument("--example", action="store_true", help="use the bundled example photo (astronaut)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--preset", choices=PRESET_NAMES, default=DEFAULT_PRESET, help=f"build effort (default: {DEFAULT_PRESET}; " + "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()) + ")")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same machine: same avatar)")
    p.add_argument("--preview-size", type=int, default=256, help="side (px) of preview images and turntable frames")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--bundle", action="store_true", help="also export the avatar bundle (bundle.zip) for the web viewer")
    p.add_argument("--prior", type=Path, help="a trained prior (sega train's prior.npz): the decoders start from its prediction")
    _add_device_arg(p)
    _add_headmodel_args(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("export", help="export an avatar.npz as a bundle: splat PLY, ONNX per-frame graphs, GLB, clips, manifest")
    p.add_argument("avatar", type=Path, help="avatar file written by build (avatar.npz)")
    p.add_argument("-o", "--output", required=True, type=Path, help="bundle .zip (or a folder when the name has no .zip)")
    p.add_argument("--no-glb", action="store_true", help="leave out avatar.glb (mesh with ARKit morph targets)")
    _add_headmodel_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("play", help="render a clip of a bundle to an MP4 (uses the bundle alone)")
    p.add_argument("bundle", type=Path, help="bundle .zip or folder")
    p.add_argument("--clip", default="talk", help="clip name (talk, smile, blink, look_around; default: talk)")
    p.add_argument("-o", "--output", required=True, type=Path, help="output .mp4")
    p.add_argument("--size", type=int, default=384, help="video side in pixels (default: 384)")
    p.add_argument("--yaw", type=float, default=0.0, help="camera yaw in degrees around the head (default: 0, frontal)")
    p.add_argument("--max-frames", type=int, default=0, help="render at most this many frames (0: the whole clip)")
    p.add_argument("--backend", choices=("auto", "cpu", "gsplat"), default="auto", help="renderer (auto: gsplat on CUDA, else cpu)")
    _add_device_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_play)

    p = sub.add_parser("drive", help="drive an avatar with a video: side-by-side MP4 and optionally the clip (ARKit weights + head pose)")
    p.add_argument("avatar", type=Path, help="avatar file written by build (avatar.npz)")
    p.add_argument("--video", required=True, type=Path, help="driving video, folder of frames, or one image")
    p.add_argument("-o", "--output", required=True, type=Path, help="output .mp4 (driving frame | avatar)")
    p.add_argument("--clip", type=Path, help="also write the driving signal as a clip JSON (bundle clip format)")
    p.add_argument("--size", type=int, default=384, help="render size in pixels (default: 384)")
    p.add_argument("--no-smooth", action="store_true", help="no temporal smoothing (One-Euro filter)")
    p.add_argument("--keep-neutral", action="store_true", help="keep the driver's resting face (default: removed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device_arg(p)
    _add_headmodel_args(p)
    p.set_defaults(func=cmd_drive)

    p = sub.add_parser("eval", help="self-reenactment fidelity: build from one frame of a video, compare renders with the others")
    p.add_argument("--video", required=True, type=Path, help="video, folder of frames")
    p.add_argument("-o", "--output", required=True, type=Path, help="report folder (report.json, report.html, contact_sheet.png)")
    p.add_argument("--source-frame", type=int, default=0, help="frame to build the avatar from (default: 0)")
    p.add_argument("--every", type=positive_int, default=5, help="score every K-th other frame (default: 5)")
    p.add_argument("--max-scored", type=positive_int, default=None,
                   help="score at most this many frames, the first ones (default: EvalOptions.max_scored; the report's options say)")
    p.add_argument("--preset", choices=PRESET_NAMES, default=DEFAULT_PRESET, help=f"avatar preset (default: {DEFAULT_PRESET}; {QUICK_PRESET} for a quick look)")
    p.add_argument("--avatar", type=Path, help="use this avatar (built from the source frame) instead of building one")
    p.add_argument("--video-out", action="store_true", help="also write side_by_side.mp4 of the scored frames")
    p.add_argument("--prior", type=Path, help="build the avatar from a trained prior (sega train's prior.npz)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device_arg(p)
    _add_headmodel_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("prepare", help="videos or frame folders -> a training set for the prior (tracked, cropped, masked, unwrapped shards)")
    p.add_argument("sources", nargs="+", type=Path, help="video files or folders of frames, one clip each")
    p.add_argument("-o", "--output", required=True, type=Path, help="dataset folder (resumed when it holds a set of the same options)")
    p.add_argument("--size", type=positive_int, default=256, help="training resolution: head-crop side in px (default: 256)")
    p.add_argument("--every", type=positive_int, default=1, help="keep every K-th frame (default: 1)")
    p.add_argument("--max-frames", type=int, default=0, help="at most this many frames per clip (default: 0 = all)")
    p.add_argument("--source-frames", type=positive_int, default=2, help="frames per clip unwrapped into UV space (default: 2)")
    p.add_argument("--atlas-resolution", type=positive_int, default=128, help="UV atlas of the unwraps, texels per side (default: 128)")
    p.add_argument("--workers", type=positive_int, default=1, help="clips prepared in parallel processes (default: 1)")
    p.add_argument("--head-model", choices=("ict",), default="ict", help="head model (default: ict)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    from .train.options import TrainOptions

    p = sub.add_parser("train", help="train the prior on a prepared set (run it under torchrun for several processes)")
    p.add_argument("dataset", type=Path, help="the folder `python -m sega prepare` wrote")
    p.add_argument("-o", "--output", required=True, type=Path, help="run folder: log.csv, val.csv, checkpoints/, prior.npz, summary.json")
    p.add_argument("--steps", type=positive_int, default=TrainOptions().steps, help=f"optimiser steps in all (default: {TrainOptions().steps})")
    p.add_argument("--static-steps", type=int, help=f"first steps with the static branch only (default: {TrainOptions().static_steps})")
    p.add_argument("--batch", type=positive_int, default=TrainOptions().batch, help=f"samples per step per process (default: {TrainOptions().batch})")
    p.add_argument("--lr", type=float, default=TrainOptions().lr, help=f"Adam learning rate (default: {TrainOptions().lr})")
    p.add_argument("--preset", choices=PRESET_NAMES, default=DEFAULT_PRESET, help="the avatar preset the prior is made for (default: %(default)s)")
    p.add_argument("--val-clips", nargs="*", help="clips or persons to validate on (default: the last person, when there are two or more)")
    p.add_argument("--val-every", type=int, default=TrainOptions().val_every, help="validate every N steps (0: at the end only)")
    p.add_argument("--val-frames", type=positive_int, default=TrainOptions().val_frames, help="frames per validation clip")
    p.add_argument("--checkpoint-every", type=int, default=TrainOptions().checkpoint_every, help="checkpoint every N steps (and at the end)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--threads", type=int, default=0, help="torch / numba threads per process (default: torch's; torchrun sets 1)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUTPUT from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("headmodel", help="head-model data: show info or download ICT-FaceKit into the cache")
    p.add_argument("action", choices=("info", "download"))
    _add_headmodel_args(p)
    p.set_defaults(func=cmd_headmodel)
    p = sub.add_parser("view", help="serve the web viewer for an avatar bundle (folder or .zip) on 127.0.0.1")
    p.add_argument("bundle", type=Path, help="avatar bundle: a folder with manifest.json, or a bundle .zip")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=0, help="port (default: 0 = any free port)")
    p.add_argument("--threads", type=int, help="onnxruntime-web wasm threads (default: the viewer picks)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=cmd_view)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SegaError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
