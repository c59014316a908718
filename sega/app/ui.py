"""The Gradio UI of the app: upload a photo, watch it build, preview it, download the bundle, play it.

A thin shell over ``sega.pipeline.BuildPipeline`` (the same pipeline as ``python -m sega build --bundle``).
``build_ui(config)`` returns the Blocks (not launched); ``sega.app.server.create_app`` serves it.

Queue: ``concurrency`` builds at a time (default 1), at most ``max_queue`` waiting; uploads larger than
``max_file_size`` are refused by Gradio; a build past ``build_timeout_s`` stops with a message. Every
``SegaError`` (not an image, no face, ...) comes back as a ``gr.Error`` with its message and the server
keeps serving. The photo input takes only files inside Gradio's upload folder (``sega.app.guard``).
Each build's files live in a per-build folder (``sega.app.sessions``); the UI hands out links to
copies in the build's public folder only. Nothing heavy happens at import: torch, mediapipe and the
head model load on first use. On Hugging Face ZeroGPU the build callback is wrapped with
``spaces.GPU`` when ``spaces`` is importable.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
from pathlib import Path

from ..errors import SegaError
from ..presets import PRESET_NAMES
from .options import AppOptions
from .guard import allowed_path, upload_folder
from .server import BUNDLE_ROUTE, VIEWER_ROUTE
from .sessions import SessionStore

log = logging.getLogger("sega.app")

PRESET_CHOICES = PRESET_NAMES  # the preset registry (sega.presets)
HEAD_MODEL_LABELS = {"ict": "ICT-FaceKit", "flame": "FLAME"}
SLIDER_EXPRESSIONS = (  # (ARKit name, label) of the server-side re-render sliders
    ("jawOpen", "jaw open"),
    ("mouthSmile_L", "smile left"),
    ("mouthSmile_R", "smile right"),
    ("eyeBlink_L", "blink left"),
    ("eyeBlink_R", "blink right"),
    ("browInnerUp", "brows up"),
)
SIDES = ("_L", "_R")  # a slider named X drives X, or X_L and X_R where the head model splits it (ICT: browInnerUp_L/_R)


def slider_channels(name: str, known) -> list[str]:
    """The head model's expression channels that the slider ``name`` sets (none when it has neither form)."""
    known = set(known)
    return [name] if name in known else [name + side for side in SIDES if name + side in known]


UPLOAD_REFUSAL = "The photo must be a file uploaded through this page."
STATUS_IDLE = "Pick a photo (or the example) and press **Build avatar**; the progress shows on the previews box."
STATUS_BUILDING = "Building… (the stages and their times show on the previews box)"
STATUS_FAILED = "The build stopped: the message in the top right corner says why. Nothing was lost; pick another photo or try again."
NO_PHOTO = "Upload a photo first (or pick the example, or take a webcam snapshot)."
VIEWER_LABEL = "bundle.zip"  # the embedded viewer's name for the bundle it plays (the download's name)
BUILD_LABEL, BUILDING_LABEL = "Build avatar", "Building…"
# The example photo (skimage's astronaut, 512 px) has a small face: say so as what it is, not as a
# fault of the user's photo.
EXAMPLE_NOTE = ("The example is a 512 px photo with a small face (about 95 px wide), so its avatar is softer than one "
                "from a closer photo of your own.")  # fmt: skip
# JavaScript run in the page when the user moves an expression slider: the embedded web viewer gets the
# same values through postMessage (web/src/embed.js), so its face follows the server's sliders.
SLIDERS_TO_VIEWER_JS = """(yaw, ...weights) => {
  const frame = document.querySelector('#viewer iframe');
  if (frame && frame.contentWindow) {
    const names = %s;
    const expressions = {};
    names.forEach((n, i) => { for (const c of [n, n + '_L', n + '_R']) expressions[c] = weights[i]; });  // slider_channels
    frame.contentWindow.postMessage({sega: 'set', expressions, yawDeg: yaw, pitchDeg: 0, rollDeg: 0}, window.location.origin);
  }
  return [yaw, ...weights];
}"""


def _session_state_deleted(store: SessionStore):
    def cleanup(state) -> None:
        if isinstance(state, dict):
            store.delete(state.get("token"))

    return cleanup


def _viewer_available(dist_dir: Path | None) -> Path | None:
    from ..viewer_server import ViewerError, find_dist_dir

    try:
        return find_dist_dir(dist_dir)
    except ViewerError:
        return None


def viewer_html(token: str | None, dist: Path | None) -> str:
    """The HTML of the embedded viewer panel."""
    from ..viewer_server import BUILD_HINT

    if dist is None:
        return (f"<div class='sega-note'><b>Web viewer not available:</b> it has not been built on this server "
                f"(<code>{BUILD_HINT}</code>). Download <code>bundle.zip</code> and open it with "
                f"<code>python -m sega view bundle.zip</code> instead.</div>")  # fmt: skip
    if token is None:
        return "<div class='sega-note'>The web viewer appears here after a build, playing the new bundle.</div>"
    # Panel collapsed (the face stays in view), the first clip playing by itself, the bundle called what
    # the user downloads rather than its internal route.
    src = f"{VIEWER_ROUTE}/index.html?bundle={BUNDLE_ROUTE}/{token}/&amp;panel=0&amp;play=1&amp;label={VIEWER_LABEL}"
    return (f"<iframe title='SEGA web viewer' src='{src}' style='width:100%;height:520px;border:0;border-radius:8px' "
            f"allow='cross-origin-isolated; fullscreen'></iframe>"
            f"<p><a href='{src}' target='_blank' rel='noopener'>open the viewer in a new tab</a></p>")  # fmt: skip


PHOTO_HEIGHT_PX = 260  # the photo box: low enough that the Build button fits a 900 px tall window
PREVIEW_TILE_MIN_PX = 104  # the previews' narrowest tile: 3 a row on an 800 px window, 7 at 1280 px
FILE_MIN_WIDTH_PX = 300  # a download box narrower than this wraps to its own line (names stay readable)
MODEL3D_SCALE = 2.2  # gr.Model3D's splat viewer frames a scene of a few units: the head (~0.25 m) with hair and a margin
# gr.Model3D shows splats through gsplat.js's orbit controls with their built-in start (Gradio's
# camera_position is ignored for splats): the camera orbits the origin at alpha = beta = 0.5 rad, 5 units out,
# which shows a head in gsplat.js's own axes from above and to the side. The preview copy is turned so that
# this camera sees the face from the front.
GSPLAT_ORBIT_ALPHA_RAD = 0.5  # longitude of the camera about the target
GSPLAT_ORBIT_BETA_RAD = 0.5  # latitude (above the target; gsplat.js's y points down)


def model3d_rotation():
    """[3, 3] rotation from the bundle's world (y up, the face looking along +z) into the preview copy:
    180 degrees about x into gsplat.js's axes (y down, looking along +z), then onto the line of sight of
    the orbit camera's start, so that the camera sees what the identity camera sees head-on."""
    import numpy as np

    a, b = GSPLAT_ORBIT_ALPHA_RAD, GSPLAT_ORBIT_BETA_RAD
    # gsplat.js OrbitControls: camera = target + r (sin a cos b, -sin b, -cos a cos b), looking at the target.
    forward = -np.array([np.sin(a) * np.cos(b), -np.sin(b), -np.cos(a) * np.cos(b)])
    right = np.cross([0.0, 1.0, 0.0], forward)  # no roll: the camera's right stays horizontal
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    view = np.stack([right, down, forward], 1)  # camera axes as columns: camera -> gsplat.js world
    return view @ np.diag([1.0, -1.0, -1.0])


def model3d_splat(static_ply: Path, dst: Path, center=(0.0, 0.0, 0.0), scale: float = MODEL3D_SCALE) -> Path:
    """``static.ply`` re-posed for gr.Model3D's splat viewer: centred on ``center``, turned by
    ``model3d_rotation()`` and scaled by ``scale`` (positions and splat sizes), so that the viewer's fixed
    start camera shows the face. The bundle's own static.ply is unchanged; this copy only feeds the
    in-page preview."""
    import numpy as np
    import torch
    from plyfile import PlyData, PlyElement

    from ..geometry import matrix_to_quat, quat_multiply

    v = PlyData.read(str(static_ply))["vertex"].data.copy()
    r = model3d_rotation()
    p = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64) - np.asarray(center, dtype=np.float64)
    p = scale * p @ r.T
    v["x"], v["y"], v["z"] = p[:, 0], p[:, 1], p[:, 2]
    for k in ("scale_0", "scale_1", "scale_2"):  # log std-devs
        v[k] = v[k] + np.float32(np.log(scale))
    q = torch.as_tensor(np.stack([v[f"rot_{i}"] for i in range(4)], 1), dtype=torch.float64)  # wxyz
    q = quat_multiply(matrix_to_quat(torch.as_tensor(r)).expand_as(q), q).numpy()  # q' = q_r * q
    for i in range(4):
        v[f"rot_{i}"] = q[:, i]
    PlyData([PlyElement.describe(v, "vertex")], text=False).write(str(dst))
    return dst


def _same_file(a, b: Path) -> bool:
    """Whether file a (Gradio hands the example over as a copy in its cache) has b's bytes."""
    from ..io import file_sha256

    try:
        return isinstance(a, str) and Path(a).stat().st_size == b.stat().st_size and file_sha256(a) == file_sha256(b)
    except OSError:
        return False


def _is_small_face_note(note: str) -> bool:
    from ..face import SMALL_FACE_NOTE

    return note.startswith(SMALL_FACE_NOTE.split("{", 1)[0])


# ZeroGPU slot lengths (seconds) asked for per call. Upper bounds, not measurements: no ZeroGPU Space has
# been timed yet (a default-preset build is ~40 s on 2 CPU cores; docs/figures.md for what was measured).
BUILD_GPU_SECONDS = 120
RERENDER_GPU_SECONDS = 10  # one animate + render at the preview size


def _maybe_gpu(fn, duration: int = BUILD_GPU_SECONDS):
    """``spaces.GPU(fn)`` on Hugging Face ZeroGPU (package ``spaces`` importable), else ``fn`` unchanged. There
    the GPU exists only inside such calls, so every callback that does CUDA work is wrapped."""
    try:
        import spaces  # type: ignore
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


def build_ui(config: AppOptions, pipeline=None, store: SessionStore | None = None):
    """The Gradio Blocks of the app (not launched). ``pipeline``: a ``BuildPipeline`` (default: from config)."""
    import gradio as gr

    from ..examples import example_photo
    from ..pipeline import BuildOptions, BuildPipeline, HeadModelOptions, overall_fraction

    if pipeline is None:
        pipeline = BuildPipeline(HeadModelOptions(ict_dir=config.ict_dir, allow_download=config.allow_download,
                                                 flame_path=config.flame_path, flame_uv=config.flame_uv))  # fmt: skip
    root = Path(config.work_dir) if config.work_dir else Path(tempfile.mkdtemp(prefix="sega-app-"))
    store = store or SessionStore(root, config.session_ttl_s)
    example = example_photo(root / "examples")
    dist = _viewer_available(config.dist_dir)
    head_choices = [(HEAD_MODEL_LABELS[n], n) for n in pipeline.available_head_models()]

    class PhotoInput(gr.Image):
        """gr.Image (upload, webcam, clipboard) that hands the uploaded file itself to ``load_photo``
        instead of decoding it first, so a bad file gets our specific message, not a generic error.
        It takes only files inside Gradio's upload folder (and the example photo): a request naming
        any other path or a URL is refused before the file is opened or copied."""

        is_template = True  # use the frontend of gr.Image

        def _check_source(self, path) -> None:
            if path is None or str(path) == str(example) or allowed_path(str(path), upload_folder()):
                return
            raise gr.Error(UPLOAD_REFUSAL)

        def move_resource_to_block_cache(self, url_or_file_path):
            self._check_source(url_or_file_path)
            return super().move_resource_to_block_cache(url_or_file_path)

        async def async_move_resource_to_block_cache(self, url_or_file_path):
            self._check_source(url_or_file_path)
            return await super().async_move_resource_to_block_cache(url_or_file_path)

        def preprocess(self, payload):
            if payload is not None and getattr(payload, "path", None) and not (payload.url or "").startswith("data:"):
                self._check_source(payload.path)
                return str(payload.path)
            return super().preprocess(payload)

    def check_inputs(photo, preset, head_model, state):
        """Gradio validator of a Build click: one message on the input at fault, before anything runs."""
        return [gr.validate(photo is not None, NO_PHOTO),
                gr.validate(preset in PRESET_CHOICES, f"unknown preset {preset!r} (choose {', '.join(PRESET_CHOICES)})"),
                gr.validate(True, ""), gr.validate(True, "")]  # fmt: skip

    def lock(*_inputs):
        return gr.update(interactive=False, value=BUILDING_LABEL), STATUS_BUILDING

    def unlock():
        return gr.update(interactive=True, value=BUILD_LABEL)

    def unlock_failed():
        return unlock(), STATUS_FAILED

    def after_build(state):
        """The Build button back, and the sliders at yaw 0 and the avatar's own (fitted) weights, as its
        previews show it."""
        import numpy as np

        avatar = store.avatar(state.get("token")) if isinstance(state, dict) else None
        if avatar is None:
            return [unlock()] + [gr.update()] * (1 + len(SLIDER_EXPRESSIONS))
        names = list(avatar.head_model.expression_names)
        weights = [np.mean([avatar.expression[names.index(ch)] for ch in slider_channels(n, names)] or [0.0]) for n, _ in SLIDER_EXPRESSIONS]
        return [unlock(), 0] + [round(float(np.clip(w, 0.0, 1.0)), 2) for w in weights]

    def build(photo, preset, head_model, state, request: gr.Request, progress=gr.Progress()):  # noqa: B008 (Gradio injects both)
        # The validator catches these in the page; API calls come straight here.
        if photo is None:
            raise gr.Error(NO_PHOTO, print_exception=False)
        if preset not in PRESET_CHOICES:
            raise gr.Error(f"unknown preset {preset!r} (choose {', '.join(PRESET_CHOICES)})", print_exception=False)
        store.sweep()
        token, folder = store.new()
        progress(0.0, desc="starting")

        def report(stage: str, fraction: float) -> None:
            progress(overall_fraction(stage, fraction), desc=stage)

        options = BuildOptions(preset=preset, preview_size=config.preview_size, keep_bundle_folder=True,
                               timeout_s=config.build_timeout_s, prior=None if config.prior is None else str(config.prior))  # fmt: skip
        try:
            result = pipeline.run(photo, folder / "out", options, head_model=head_model, progress=report)
        except SegaError as err:
            store.delete(token)
            # Uploads sit at <gradio cache>/<hash>/<original name>: show the name, not the server path.
            message = str(err).replace(str(photo), Path(photo).name) if isinstance(photo, str) else str(err)
            log.info("build refused: %s", message)  # the user's input, not a fault here: one line, no traceback
            raise gr.Error(message, print_exception=False) from err
        except Exception as err:  # a bug, not the user's fault: log it (once, with its traceback), say so, keep serving
            store.delete(token)
            log.exception("build failed")
            raise gr.Error(f"The build failed with an internal error ({type(err).__name__}); see the server log.",
                           print_exception=False) from err  # fmt: skip
        previous = store.bind(getattr(request, "session_hash", None), token)
        for old in {previous, state.get("token") if isinstance(state, dict) else None} - {None, token}:
            store.delete(old)  # one build folder per session: the previous one goes once this one worked
        store.remember(token, result.avatar)
        from export.bundle import default_camera

        shown_ply = model3d_splat(result.static_ply, result.out_dir / "static_preview.ply", default_camera(result.avatar)["target"])
        out = {name: store.publish(token, p) for name, p in [("turntable", result.turntable), ("splat", shown_ply),
               ("bundle", result.bundle_zip), ("glb", result.glb)]}  # fmt: skip
        previews = {name: store.publish(token, p) for name, p in result.previews.items()}
        gallery = [(str(p), name) for name, p in previews.items()]
        device = result.avatar.provenance.get("device", result.avatar.options.device)  # e.g. "cpu", "cuda (NVIDIA H100 ...)"
        status = (f"Built **{result.num_gaussians:,}** Gaussians with the **{preset}** preset in "
                  f"**{result.total_seconds:.1f} s** on **{device}** ({', '.join(f'{k} {v:.1f}' for k, v in result.seconds.items())}).")  # fmt: skip
        prior = result.avatar.provenance.get("prior")
        if prior:  # which trained prior the decoders started from (the file name: never the server's path)
            status += f" Started from the prior **{prior['file']}** ({prior['sha256'][:12]})."
        notes = list(result.notes)
        if _same_file(photo, example):
            notes = [n for n in notes if not _is_small_face_note(n)] + [EXAMPLE_NOTE]
        if notes:
            status += "\n\n" + "\n".join(f"- note: {n}" for n in notes)
        new_state = {"token": token, "head_model": head_model, "avatar": str(result.avatar_path)}
        return (gallery, str(out["turntable"]), str(out["splat"]), str(out["bundle"]), str(out["glb"]),
                viewer_html(token, dist), status, str(previews.get("yaw+0")), new_state)  # fmt: skip

    build_gpu = _maybe_gpu(build, BUILD_GPU_SECONDS)

    def rerender(state, yaw, *weights):
        import numpy as np

        from ..avatar import Avatar
        from ..devices import resolve_device
        from ..io import save_png

        if not isinstance(state, dict) or store.folder(state.get("token")) is None:
            raise gr.Error("Build an avatar first; the sliders re-render it.")
        token = state["token"]
        device = resolve_device("auto")  # gsplat on a GPU when there is one (backend "auto" follows the tensors)
        cached = store.avatar(token)
        avatar = (cached if cached is not None else Avatar.load(state["avatar"], pipeline.model(state.get("head_model")), device=device)).to(device)
        if avatar is not cached:
            store.remember(token, avatar)
        known = avatar.head_model.expression_names
        named = {ch: float(w) for (name, _), w in zip(SLIDER_EXPRESSIONS, weights) for ch in slider_channels(name, known)}
        expr = avatar.expression_with(**named)
        rgb = avatar.render(expr, camera=avatar.orbit_camera(float(yaw), size=config.preview_size), backend="auto").rgb.cpu().numpy()
        path = store.public_file(token, f"render_{secrets.token_hex(4)}.png")
        save_png(path, np.clip(rgb, 0.0, 1.0))
        store.touch(token)
        return str(path)

    css = (".sega-note{padding:12px;border-radius:8px;background:var(--block-background-fill);border:1px dashed var(--border-color-primary)}"
           # The previews wrap to as many columns as fit (Gradio's fixed count overflows a narrow window).
           f"#previews .grid-container{{grid-template-columns:repeat(auto-fill,minmax({PREVIEW_TILE_MIN_PX}px,1fr)) !important;"
           "grid-template-rows:none !important}")  # fmt: skip
    with gr.Blocks(title="SEGA: one photo to a drivable Gaussian head avatar", delete_cache=(600, int(config.session_ttl_s))) as demo:
        gr.HTML(f"<style>{css}</style>")
        gr.Markdown("## SEGA: one photo → drivable 3D Gaussian head avatar\n"
                    "Upload a photo with one face (or take a webcam snapshot, or use the example), pick a preset and build. "
                    "You get previews, a turntable, the splat, expression sliders, the bundle for the web viewer and a GLB.")  # fmt: skip
        state = gr.State(None, time_to_live=config.session_ttl_s, delete_callback=_session_state_deleted(store))
        with gr.Row():
            with gr.Column(scale=1):
                photo = PhotoInput(label="Photo", type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"], height=PHOTO_HEIGHT_PX, elem_id="photo")
                gr.Examples(examples=[[str(example)]], inputs=[photo], label="Example (offline): astronaut", cache_examples=False)
                preset = gr.Radio(list(PRESET_CHOICES), value=config.default_preset, label="Quality preset",
                                  info="fast ≈ 30 s, default ≈ 1 min, high: several minutes on 2 CPU cores")  # fmt: skip
                head = gr.Dropdown(head_choices, value=head_choices[0][1], label="Head model",
                                   info=None if pipeline.flame_configured() else "FLAME appears when FLAME files are configured (SEGA_FLAME)")  # fmt: skip
                go = gr.Button(BUILD_LABEL, variant="primary", elem_id="build")
            with gr.Column(scale=2):
                # The status heads the outputs: in view during and after a build whatever the window's height
                # (on a narrow window the columns stack and it follows the Build button).
                status = gr.Markdown(STATUS_IDLE, elem_id="status")
                gallery = gr.Gallery(label="Previews (views and expressions)", columns=5, height=340, elem_id="previews",
                                     object_fit="contain")  # fmt: skip
                with gr.Row():
                    video = gr.Video(label="Turntable", height=280, autoplay=True, loop=True)
                    splat = gr.Model3D(label="Static splats, neutral face (a preview copy of the bundle's static.ply)", height=280,
                                       elem_id="splat")  # fmt: skip
                with gr.Row():  # min_width: on a narrow window the two wrap rather than cut their file names
                    bundle_file = gr.File(label="bundle.zip (web viewer / playback)", min_width=FILE_MIN_WIDTH_PX, elem_id="bundle-file")
                    glb_file = gr.File(label="avatar.glb (mesh + ARKit morph targets)", min_width=FILE_MIN_WIDTH_PX, elem_id="glb-file")
        with gr.Row():
            with gr.Column(scale=1):
                gr.Markdown("### Expressions (re-rendered on the server)")
                yaw = gr.Slider(-180, 180, value=0, step=5, label="yaw (degrees)", elem_id="slider-yaw")
                sliders = [gr.Slider(0.0, 1.0, value=0.0, step=0.05, label=f"{label} ({name})", elem_id=f"slider-{name}")
                           for name, label in SLIDER_EXPRESSIONS]  # fmt: skip
            with gr.Column(scale=1):
                rendered = gr.Image(label="Re-rendered preview", type="filepath", height=300, interactive=False)
            with gr.Column(scale=2):
                gr.Markdown("### Web viewer (plays the bundle in your browser)")
                viewer = gr.HTML(viewer_html(None, dist), elem_id="viewer")

        # Build: check the inputs (one message on the photo when there is none), lock the button, build, unlock;
        # after a build that worked, the sliders read what the previews show.
        inputs = [photo, preset, head, state]
        # (Gradio runs validators on queued events only: the lock is queued.)
        started = go.click(lock, inputs, [go, status], validator=check_inputs, show_progress="hidden", api_name=False)
        # Progress (and an error) shows on the previews box only, not on every output; the error's message
        # is Gradio's one toast.
        built = started.success(build_gpu, inputs, [gallery, video, splat, bundle_file, glb_file, viewer, status, rendered, state],
                                api_name="build", concurrency_limit=config.concurrency, concurrency_id="build",
                                show_progress_on=gallery)  # fmt: skip
        # (Gradio 6 does not run a .then() after an event that raised: unlock on success and on failure.)
        built.success(after_build, state, [go, yaw, *sliders], queue=False, show_progress="hidden", api_name=False)
        built.failure(unlock_failed, None, [go, status], queue=False, show_progress="hidden", api_name=False)
        gr.on([s.release for s in [yaw, *sliders]], _maybe_gpu(rerender, RERENDER_GPU_SECONDS), [state, yaw, *sliders], rendered, api_name="rerender",
              concurrency_limit=max(2, config.concurrency), trigger_mode="always_last")  # fmt: skip
        names = "[" + ", ".join(f"'{name}'" for name, _ in SLIDER_EXPRESSIONS) + "]"
        gr.on([s.input for s in [yaw, *sliders]], None, [yaw, *sliders], None, js=SLIDERS_TO_VIEWER_JS % names,
              queue=False, show_progress="hidden", api_name=False)  # fmt: skip

        def tab_closed(request: gr.Request) -> None:  # the browser session ended: its files go now
            store.end_session(getattr(request, "session_hash", None))

        demo.unload(tab_closed)
    demo.sega_store = store  # for shells and tests
    demo.sega_root = root
    demo.sega_dist = dist
    return demo
