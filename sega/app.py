"""The Gradio app: upload a photo, watch it build, preview it, download the bundle, play it in the web viewer.

A thin shell over ``sega.pipeline.BuildPipeline`` (the same pipeline as ``python -m sega build --bundle``).
``create_app(config)`` returns a FastAPI app with the Gradio UI mounted at ``/`` and two read-only
routes of our own on the same server (no second port):

* ``/sega/viewer/<file>``          the built web viewer (``web/dist``), with the viewer's headers;
* ``/sega/bundle/<token>/<file>``  the unzipped bundle of one build. ``token`` is a random 128-bit id
  made per build and known only to the session that built it, so one user's files are not reachable
  by another; the folder is deleted when the session ends or expires (``gr.State`` time-to-live),
  when the same session builds again, and by a sweep of folders older than the TTL.

Queue: ``concurrency`` builds at a time (default 1), at most ``max_queue`` waiting; uploads larger than
``max_file_size`` are refused by Gradio; a build past ``build_timeout_s`` stops with a message. Every
``SegaError`` (not an image, no face, ...) comes back as a ``gr.Error`` with its message and the server
keeps serving. Nothing heavy happens at import: torch, mediapipe and the head model load on first use.
On Hugging Face ZeroGPU the build callback is wrapped with ``spaces.GPU`` when ``spaces`` is importable.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import SegaError

log = logging.getLogger("sega.app")

PRESET_CHOICES = ("fast", "default", "high")
HEAD_MODEL_LABELS = {"ict": "ICT-FaceKit", "flame": "FLAME"}
SLIDER_EXPRESSIONS = (  # (ARKit name, label) of the server-side re-render sliders
    ("jawOpen", "jaw open"),
    ("mouthSmile_L", "smile left"),
    ("mouthSmile_R", "smile right"),
    ("eyeBlink_L", "blink left"),
    ("eyeBlink_R", "blink right"),
    ("browInnerUp", "brows up"),
)
VIEWER_ROUTE = "/sega/viewer"
BUNDLE_ROUTE = "/sega/bundle"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
AVATAR_CACHE_SIZE = 4  # avatars kept in memory for the sliders (others reload from their avatar.npz)


@dataclass
class AppConfig:
    """Settings of one app server (command line flags and SEGA_APP_* environment variables fill it)."""

    host: str = "127.0.0.1"  # address to listen on; 0.0.0.0 only where the app should be public (a Space)
    port: int = 7860  # port (0: any free port)
    concurrency: int = 1  # builds running at the same time
    max_queue: int = 16  # requests waiting in the queue before new ones are refused
    max_file_size: str = "20mb"  # largest upload Gradio accepts
    build_timeout_s: float = 600.0  # a build running longer stops with a message
    session_ttl_s: float = 3600.0  # a session's build folder is deleted this long after its last build
    work_dir: Path | None = None  # where per-session build folders live (None: a new temporary folder)
    default_preset: str = "fast"  # preset selected when the page opens
    preview_size: int = 256  # side (px) of previews, turntable frames and slider re-renders
    ict_dir: Path | None = None  # ICT-FaceKit FaceXModel folder (None: $SEGA_ICT_DIR, then the cache)
    allow_download: bool = False  # let the app download ICT-FaceKit when missing (off: no outbound traffic)
    flame_path: Path | None = None  # FLAME .pkl or folder; enables the FLAME choice
    flame_uv: Path | None = None  # FLAME UV file
    dist_dir: Path | None = None  # built web viewer (None: web/dist or $SEGA_WEB_DIST)

    @classmethod
    def from_env(cls, **overrides) -> AppConfig:
        """Defaults, then SEGA_APP_CONCURRENCY / _MAX_QUEUE / _MAX_FILE_SIZE / _BUILD_TIMEOUT / _SESSION_TTL /
        _WORK_DIR, SEGA_FLAME / SEGA_FLAME_UV, SEGA_APP_ALLOW_DOWNLOAD=1, then ``overrides``."""
        env = os.environ
        cfg = cls()
        conv = {
            "SEGA_APP_CONCURRENCY": ("concurrency", int),
            "SEGA_APP_MAX_QUEUE": ("max_queue", int),
            "SEGA_APP_MAX_FILE_SIZE": ("max_file_size", str),
            "SEGA_APP_BUILD_TIMEOUT": ("build_timeout_s", float),
            "SEGA_APP_SESSION_TTL": ("session_ttl_s", float),
            "SEGA_APP_WORK_DIR": ("work_dir", Path),
            "SEGA_FLAME": ("flame_path", Path),
            "SEGA_FLAME_UV": ("flame_uv", Path),
        }
        for var, (name, typ) in conv.items():
            if env.get(var):
                cfg = replace(cfg, **{name: typ(env[var])})
        if env.get("SEGA_APP_ALLOW_DOWNLOAD") == "1":
            cfg = replace(cfg, allow_download=True)
        return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


class SessionStore:
    """Per-build folders ``work_dir/<token>/`` and a small in-memory cache of built avatars."""

    def __init__(self, root: Path, ttl_s: float):
        self.root = root
        self.ttl_s = ttl_s
        self._avatars: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    def new(self) -> tuple[str, Path]:
        token = secrets.token_urlsafe(16)
        folder = self.root / token
        folder.mkdir()
        return token, folder

    def folder(self, token) -> Path | None:
        if not isinstance(token, str) or not TOKEN_RE.match(token):
            return None
        folder = self.root / token
        return folder if folder.is_dir() else None

    def remember(self, token: str, avatar) -> None:
        with self._lock:
            self._avatars[token] = avatar
            self._avatars.move_to_end(token)
            while len(self._avatars) > AVATAR_CACHE_SIZE:
                self._avatars.popitem(last=False)

    def avatar(self, token: str):
        with self._lock:
            return self._avatars.get(token)

    def delete(self, token) -> None:
        if not isinstance(token, str) or not TOKEN_RE.match(token):
            return
        with self._lock:
            self._avatars.pop(token, None)
        shutil.rmtree(self.root / token, ignore_errors=True)

    def sweep(self) -> None:
        """Delete build folders older than the TTL (sessions that never ended cleanly)."""
        cutoff = time.time() - self.ttl_s
        for p in self.root.iterdir():
            if p.is_dir() and TOKEN_RE.match(p.name) and p.stat().st_mtime < cutoff:
                self.delete(p.name)


def _session_state_deleted(store: SessionStore):
    def cleanup(state) -> None:
        if isinstance(state, dict):
            store.delete(state.get("token"))

    return cleanup


def _viewer_available(dist_dir: Path | None) -> Path | None:
    from .viewer import ViewerError, find_dist_dir

    try:
        return find_dist_dir(dist_dir)
    except ViewerError:
        return None


def viewer_html(token: str | None, dist: Path | None) -> str:
    """The HTML of the embedded viewer panel."""
    from .viewer import BUILD_HINT

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


def build_ui(config: AppConfig, pipeline=None, store: SessionStore | None = None):
    """The Gradio Blocks of the app (not launched). ``pipeline``: a ``BuildPipeline`` (default: from config)."""
    import gradio as gr

    from .examples import example_photo
    from .pipeline import BuildOptions, BuildPipeline, HeadModelConfig, overall_fraction

    if pipeline is None:
        pipeline = BuildPipeline(HeadModelConfig(ict_dir=config.ict_dir, allow_download=config.allow_download,
                                                 flame_path=config.flame_path, flame_uv=config.flame_uv))  # fmt: skip
    root = Path(config.work_dir) if config.work_dir else Path(tempfile.mkdtemp(prefix="sega-app-"))
    store = store or SessionStore(root / "sessions", config.session_ttl_s)
    example = example_photo(root / "examples")
    dist = _viewer_available(config.dist_dir)
    head_choices = [(HEAD_MODEL_LABELS[n], n) for n in pipeline.available_head_models()]

    class PhotoInput(gr.Image):
        """gr.Image (upload, webcam, clipboard) that hands the uploaded file itself to ``load_photo``
        instead of decoding it first, so a bad file gets our specific message, not a generic error."""

        is_template = True  # use the frontend of gr.Image

        def preprocess(self, payload):
            if payload is not None and getattr(payload, "path", None) and not (payload.url or "").startswith("data:"):
                return str(payload.path)
            return super().preprocess(payload)

    def build(photo, preset, head_model, state, progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
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
        if isinstance(state, dict):  # one build folder per session: the previous one goes once this one worked
            store.delete(state.get("token"))
        store.remember(token, result.avatar)
        from export.bundle import default_camera

        shown_ply = model3d_splat(result.static_ply, result.out_dir / "static_preview.ply", default_camera(result.avatar)["target"])
        gallery = [(str(p), name) for name, p in result.previews.items()]
        status = (f"Built **{result.num_gaussians:,}** Gaussians with the **{preset}** preset in "
                  f"**{result.total_seconds:.1f} s** ({', '.join(f'{k} {v:.1f}' for k, v in result.seconds.items())}).")  # fmt: skip
        if result.notes:
            status += "\n\n" + "\n".join(f"- note: {n}" for n in result.notes)
        new_state = {"token": token, "head_model": head_model, "avatar": str(result.avatar_path)}
        return (gallery, str(result.turntable), str(shown_ply), str(result.bundle_zip), str(result.glb),
                viewer_html(token, dist), status, str(result.previews.get("yaw+0")), new_state)  # fmt: skip

    build_gpu = _maybe_gpu(build)

    def rerender(state, yaw, *weights):
        import numpy as np

        from .avatar import Avatar
        from .io import save_png

        if not isinstance(state, dict) or store.folder(state.get("token")) is None:
            raise gr.Error("Build an avatar first; the sliders re-render it.")
        token = state["token"]
        avatar = store.avatar(token)
        if avatar is None:
            avatar = Avatar.load(state["avatar"], pipeline.model(state.get("head_model")))
            store.remember(token, avatar)
        known = set(avatar.model.expression_names)
        named = {name: float(w) for (name, _), w in zip(SLIDER_EXPRESSIONS, weights) if name in known}
        expr = avatar.expression_with(**named)
        rgb = avatar.render(expr, camera=avatar.orbit_camera(float(yaw), size=config.preview_size), backend="auto").rgb.numpy()
        path = store.root / token / f"render_{secrets.token_hex(4)}.png"
        save_png(path, np.clip(rgb, 0.0, 1.0))
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
    demo.sega_store = store  # for shells and tests
    demo.sega_root = root
    demo.sega_dist = dist
    return demo


def _add_routes(app, store: SessionStore, dist: Path | None) -> None:
    """The viewer and bundle routes (GET only, checked paths; 404 otherwise)."""
    import posixpath

    from fastapi import HTTPException
    from fastapi.responses import FileResponse

    from .viewer import ISOLATION_HEADERS, MIME_TYPES, _safe_parts

    def send(base: Path, rel: str):
        parts = _safe_parts(rel)
        if not parts:
            raise HTTPException(404)
        base = base.resolve()
        target = base.joinpath(*parts).resolve()
        if not target.is_relative_to(base) or not target.is_file():
            raise HTTPException(404)
        ctype = MIME_TYPES.get(posixpath.splitext(target.name)[1].lower(), "application/octet-stream")
        return FileResponse(target, media_type=ctype, headers=ISOLATION_HEADERS)

    @app.get(VIEWER_ROUTE + "/{rel:path}")
    def viewer_file(rel: str):
        if dist is None:
            raise HTTPException(404, "the web viewer is not built on this server")
        return send(dist, rel or "index.html")

    @app.get(BUNDLE_ROUTE + "/{token}/{rel:path}")
    def bundle_file(token: str, rel: str):
        folder = store.folder(token)
        if folder is None:
            raise HTTPException(404)
        return send(folder / "out" / "bundle", rel)


def create_app(config: AppConfig | None = None):
    """(FastAPI app with the UI at ``/`` and the viewer routes, Gradio Blocks)."""
    import gradio as gr
    from fastapi import FastAPI

    config = config or AppConfig.from_env()
    demo = build_ui(config)
    demo.queue(max_size=config.max_queue, default_concurrency_limit=config.concurrency)
    app = FastAPI(title="sega app", docs_url=None, redoc_url=None, openapi_url=None)
    _add_routes(app, demo.sega_store, demo.sega_dist)
    # System fonts only: the default theme would make browsers fetch Google Fonts.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    app = gr.mount_gradio_app(app, demo, path="/", server_name=config.host, server_port=config.port,
                              max_file_size=config.max_file_size, theme=theme, footer_links=["api"],
                              allowed_paths=[str(demo.sega_root)], ssr_mode=False, mcp_server=False)  # fmt: skip
    return app, demo


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python app.py", description="SEGA Gradio app: one photo -> drivable Gaussian head avatar.")
    p.add_argument("--host", default=os.environ.get("SEGA_APP_HOST", "127.0.0.1"), help="address (default 127.0.0.1; 0.0.0.0 on a Space)")
    p.add_argument("--port", type=int, default=int(os.environ.get("SEGA_APP_PORT", os.environ.get("PORT", "7860"))), help="port (default 7860)")
    p.add_argument("--concurrency", type=int, help="builds at the same time (default 1, $SEGA_APP_CONCURRENCY)")
    p.add_argument("--max-queue", type=int, help="waiting requests before refusing (default 16)")
    p.add_argument("--max-file-size", help="largest upload, e.g. 20mb (default)")
    p.add_argument("--build-timeout", type=float, dest="build_timeout_s", help="seconds before a build is stopped (default 600)")
    p.add_argument("--session-ttl", type=float, dest="session_ttl_s", help="seconds a session's files are kept (default 3600)")
    p.add_argument("--work-dir", type=Path, help="folder for session files (default: a new temporary folder)")
    p.add_argument("--preset", dest="default_preset", choices=PRESET_CHOICES, help="preset selected at start (default fast)")
    p.add_argument("--ict-dir", type=Path, help="ICT-FaceKit FaceXModel folder (default $SEGA_ICT_DIR, then the cache)")
    p.add_argument("--allow-download", action="store_true", default=None, help="download ICT-FaceKit when it is missing")
    p.add_argument("--flame", type=Path, dest="flame_path", help="FLAME .pkl or folder (adds the FLAME choice)")
    p.add_argument("--flame-uv", type=Path, help="FLAME UV file")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see sega.cli cmd_build)
    args = vars(build_parser().parse_args(argv))
    config = AppConfig.from_env(**args)
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app, _ = create_app(config)
    print(f"SEGA app on http://{config.host}:{config.port}/", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
    return 0


# ---- running the app in a child process (tests, bench, screenshot script) ----------------------


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class AppProcess:
    """``python app.py`` in a child process on 127.0.0.1 and a free port; a context manager.

    ``with AppProcess(extra_env={...}, args=[...]) as proc: proc.url`` waits until ``GET /`` answers
    (raises RuntimeError with the log tail if the process exits or ``start_timeout_s`` passes) and
    stops the child (terminate, then kill) on exit. The child's stdout+stderr go to ``proc.log_path``."""

    def __init__(self, args: list[str] | None = None, extra_env: dict | None = None, start_timeout_s: float = 120.0,
                 log_path: Path | None = None, cwd: Path | None = None):  # fmt: skip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.args = list(args or [])
        self.extra_env = dict(extra_env or {})
        self.start_timeout_s = start_timeout_s
        self.cwd = Path(cwd) if cwd else Path(__file__).resolve().parents[1]
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="sega-app-", suffix=".log")[1])
        self.proc = None

    def __enter__(self) -> AppProcess:
        import subprocess
        import sys
        import urllib.request

        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", **self.extra_env)
        log_fh = open(self.log_path, "wb")
        cmd = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=log_fh, stderr=subprocess.STDOUT)
        log_fh.close()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with opener.open(self.url, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"app did not answer within {self.start_timeout_s:g} s:\n{self.log_tail()}")
            time.sleep(0.3)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __exit__(self, *exc) -> None:
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
