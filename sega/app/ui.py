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
UPLOAD_REFUSAL = "The photo must be a file uploaded through this page."


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
    src = f"{VIEWER_ROUTE}/index.html?bundle={BUNDLE_ROUTE}/{token}/&amp;panel=0"
    return (f"<iframe title='SEGA web viewer' src='{src}' style='width:100%;height:520px;border:0;border-radius:8px' "
            f"allow='cross-origin-isolated; fullscreen'></iframe>"
            f"<p><a href='{src}' target='_blank' rel='noopener'>open the viewer in a new tab</a></p>")  # fmt: skip


MODEL3D_SCALE = 3.0  # gr.Model3D's splat viewer frames a scene of a few units; the head is ~0.25 m


def model3d_splat(static_ply: Path, dst: Path, center=(0.0, 0.0, 0.0), scale: float = MODEL3D_SCALE) -> Path:
    """``static.ply`` re-posed for gr.Model3D's splat viewer (gsplat.js: y down, looking along +z): centred on
    ``center``, turned 180 degrees about x and scaled by ``scale`` (positions and splat sizes). The
    bundle's own static.ply is unchanged; this copy only feeds the in-page preview."""
    import numpy as np
    from plyfile import PlyData, PlyElement

    v = PlyData.read(str(static_ply))["vertex"].data.copy()
    c = np.asarray(center, dtype=np.float64)
    v["x"] = (v["x"] - c[0]) * scale
    v["y"] = -(v["y"] - c[1]) * scale
    v["z"] = -(v["z"] - c[2]) * scale
    for k in ("scale_0", "scale_1", "scale_2"):  # log std-devs
        v[k] = v[k] + np.float32(np.log(scale))
    w, x, y, z = (v[f"rot_{i}"].copy() for i in range(4))  # (w, x, y, z); q' = (0, 1, 0, 0) * q
    v["rot_0"], v["rot_1"], v["rot_2"], v["rot_3"] = -x, w, -z, y
    PlyData([PlyElement.describe(v, "vertex")], text=False).write(str(dst))
    return dst


def _maybe_gpu(fn, duration: int = 120):
    """``spaces.GPU(fn)`` on Hugging Face ZeroGPU (package ``spaces`` importable), else ``fn`` unchanged."""
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

    def build(photo, preset, head_model, state, request: gr.Request, progress=gr.Progress()):  # noqa: B008 (Gradio injects both)
        if photo is None:
            raise gr.Error("Upload a photo first (or pick the example, or take a webcam snapshot).")
        if preset not in PRESET_CHOICES:
            raise gr.Error(f"unknown preset {preset!r} (choose {', '.join(PRESET_CHOICES)})")
        store.sweep()
        token, folder = store.new()
        progress(0.0, desc="starting")

        def report(stage: str, fraction: float) -> None:
            progress(overall_fraction(stage, fraction), desc=stage)

        options = BuildOptions(preset=preset, preview_size=config.preview_size, keep_bundle_folder=True,
                               timeout_s=config.build_timeout_s)  # fmt: skip
        try:
            result = pipeline.run(photo, folder / "out", options, head_model=head_model, progress=report)
        except SegaError as err:
            store.delete(token)
            # Uploads sit at <gradio cache>/<hash>/<original name>: show the name, not the server path.
            message = str(err).replace(str(photo), Path(photo).name) if isinstance(photo, str) else str(err)
            raise gr.Error(message) from err
        except Exception as err:  # a bug, not the user's fault: log it, say so, keep serving
            store.delete(token)
            log.exception("build failed")
            raise gr.Error(f"The build failed with an internal error ({type(err).__name__}); see the server log.") from err
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
        status = (f"Built **{result.num_gaussians:,}** Gaussians with the **{preset}** preset in "
                  f"**{result.total_seconds:.1f} s** ({', '.join(f'{k} {v:.1f}' for k, v in result.seconds.items())}).")  # fmt: skip
        if result.notes:
            status += "\n\n" + "\n".join(f"- note: {n}" for n in result.notes)
        new_state = {"token": token, "head_model": head_model, "avatar": str(result.avatar_path)}
        return (gallery, str(out["turntable"]), str(out["splat"]), str(out["bundle"]), str(out["glb"]),
                viewer_html(token, dist), status, str(previews.get("yaw+0")), new_state)  # fmt: skip

    build_gpu = _maybe_gpu(build)

    def rerender(state, yaw, *weights):
        import numpy as np

        from ..avatar import Avatar
        from ..io import save_png

        if not isinstance(state, dict) or store.folder(state.get("token")) is None:
            raise gr.Error("Build an avatar first; the sliders re-render it.")
        token = state["token"]
        avatar = store.avatar(token)
        if avatar is None:
            avatar = Avatar.load(state["avatar"], pipeline.model(state.get("head_model")))
            store.remember(token, avatar)
        known = set(avatar.head_model.expression_names)
        named = {name: float(w) for (name, _), w in zip(SLIDER_EXPRESSIONS, weights) if name in known}
        expr = avatar.expression_with(**named)
        rgb = avatar.render(expr, camera=avatar.orbit_camera(float(yaw), size=config.preview_size), backend="auto").rgb.numpy()
        path = store.public_file(token, f"render_{secrets.token_hex(4)}.png")
        save_png(path, np.clip(rgb, 0.0, 1.0))
        store.touch(token)
        return str(path)

    css = ".sega-note{padding:12px;border-radius:8px;background:var(--block-background-fill);border:1px dashed var(--border-color-primary)}"
    with gr.Blocks(title="SEGA: one photo to a drivable Gaussian head avatar", delete_cache=(600, int(config.session_ttl_s))) as demo:
        gr.HTML(f"<style>{css}</style>")
        gr.Markdown("## SEGA: one photo → drivable 3D Gaussian head avatar\n"
                    "Upload a photo with one face (or take a webcam snapshot, or use the example), pick a preset and build. "
                    "You get previews, a turntable, the splat, expression sliders, the bundle for the web viewer and a GLB.")  # fmt: skip
        state = gr.State(None, time_to_live=config.session_ttl_s, delete_callback=_session_state_deleted(store))
        with gr.Row():
            with gr.Column(scale=1):
                photo = PhotoInput(label="Photo", type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"], height=320, elem_id="photo")
                gr.Examples(examples=[[str(example)]], inputs=[photo], label="Example (offline): astronaut", cache_examples=False)
                preset = gr.Radio(list(PRESET_CHOICES), value=config.default_preset, label="Quality preset",
                                  info="fast ≈ 30 s, default ≈ 1 min, high: several minutes on 2 CPU cores")  # fmt: skip
                head = gr.Dropdown(head_choices, value=head_choices[0][1], label="Head model",
                                   info=None if pipeline.flame_configured() else "FLAME appears when FLAME files are configured (SEGA_FLAME)")  # fmt: skip
                go = gr.Button("Build avatar", variant="primary", elem_id="build")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="Previews (views and expressions)", columns=5, height=340, elem_id="previews")
                with gr.Row():
                    video = gr.Video(label="Turntable", height=280, autoplay=True, loop=True)
                    splat = gr.Model3D(label="Static splat (static.ply of the bundle, neutral face)", height=280)
                with gr.Row():
                    bundle_file = gr.File(label="bundle.zip (web viewer / playback)")
                    glb_file = gr.File(label="avatar.glb (mesh + ARKit morph targets)")
        with gr.Row():
            with gr.Column(scale=1):
                gr.Markdown("### Expressions (re-rendered on the server)")
                yaw = gr.Slider(-180, 180, value=0, step=5, label="yaw (degrees)")
                sliders = [gr.Slider(0.0, 1.0, value=0.0, step=0.05, label=f"{label} ({name})") for name, label in SLIDER_EXPRESSIONS]
            with gr.Column(scale=1):
                rendered = gr.Image(label="Re-rendered preview", type="filepath", height=300, interactive=False)
            with gr.Column(scale=2):
                gr.Markdown("### Web viewer (plays the bundle in your browser)")
                viewer = gr.HTML(viewer_html(None, dist), elem_id="viewer")

        go.click(build_gpu, [photo, preset, head, state],
                 [gallery, video, splat, bundle_file, glb_file, viewer, status, rendered, state],
                 api_name="build", concurrency_limit=config.concurrency, concurrency_id="build")  # fmt: skip
        gr.on([s.release for s in [yaw, *sliders]], rerender, [state, yaw, *sliders], rendered, api_name="rerender",
              concurrency_limit=max(2, config.concurrency), trigger_mode="always_last")  # fmt: skip

        def tab_closed(request: gr.Request) -> None:  # the browser session ended: its files go now
            store.end_session(getattr(request, "session_hash", None))

        demo.unload(tab_closed)
    demo.sega_store = store  # for shells and tests
    demo.sega_root = root
    demo.sega_dist = dist
    return demo
