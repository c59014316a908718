"""The app's server: FastAPI with the Gradio UI at ``/``, the viewer and bundle routes, the file guard,
the session sweeper, and ``main`` (``python app.py``).

Routes of our own on the same server (no second port), GET only, checked paths, 404 otherwise:

* ``/sega/viewer/<file>``          the built web viewer (``web/dist``), with the viewer's headers;
* ``/sega/bundle/<token>/<file>``  the unzipped bundle of one build (``sega.app.sessions``).
"""

from __future__ import annotations

import argparse
import logging
import os
import posixpath
import sys
from pathlib import Path

from .options import AppOptions
from .sessions import SessionStore, SessionSweeper

VIEWER_ROUTE = "/sega/viewer"
BUNDLE_ROUTE = "/sega/bundle"


def _add_routes(app, store: SessionStore, dist: Path | None) -> None:
    """The viewer and bundle routes (GET only, checked paths; 404 otherwise)."""
    from fastapi import HTTPException
    from fastapi.responses import FileResponse

    from ..viewer_server import ISOLATION_HEADERS, MIME_TYPES, _safe_parts

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


def create_app(config: AppOptions | None = None):
    """(FastAPI app with the UI at ``/`` and the viewer routes, Gradio Blocks). Starts the session
    sweeper thread (``demo.sega_sweeper``; stopped when the FastAPI app shuts down)."""
    import gradio as gr
    from fastapi import FastAPI

    from .guard import FileDataGuard
    from .ui import build_ui

    config = config or AppOptions.from_env()
    demo = build_ui(config)
    demo.queue(max_size=config.max_queue, default_concurrency_limit=config.concurrency)
    sweeper = SessionSweeper(demo.sega_store)
    app = FastAPI(title="sega app", docs_url=None, redoc_url=None, openapi_url=None, on_shutdown=[sweeper.stop])
    _add_routes(app, demo.sega_store, demo.sega_dist)
    # System fonts only: the default theme would make browsers fetch Google Fonts.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    # allowed_paths: only the handed-out copies (public/); build folders (avatar.npz, fit.json) are never served.
    app = gr.mount_gradio_app(app, demo, path="/", server_name=config.host, server_port=config.port,
                              max_file_size=config.max_file_size, theme=theme, footer_links=["api"],
                              allowed_paths=[str(demo.sega_store.public_root)], ssr_mode=False, mcp_server=False)  # fmt: skip
    # mount_gradio_app never marks the Blocks as launched, and Gradio skips its own "inputs must be
    # uploads" check on Blocks that were not launched (sega.app.guard): mark it, and guard anyway.
    demo.has_launched = True
    app.add_middleware(FileDataGuard)
    demo.sega_sweeper = sweeper.start()
    return app, demo


def build_parser() -> argparse.ArgumentParser:
    from .ui import PRESET_CHOICES

    p = argparse.ArgumentParser(prog="python app.py", description="SEGA Gradio app: one photo -> drivable Gaussian head avatar.")
    p.add_argument("--host", default=os.environ.get("SEGA_APP_HOST", "127.0.0.1"), help="address (default 127.0.0.1; 0.0.0.0 on a Space)")
    p.add_argument("--port", type=int, default=int(os.environ.get("SEGA_APP_PORT", os.environ.get("PORT", "7860"))), help="port (default 7860)")
    p.add_argument("--concurrency", type=int, help="builds at the same time (default 1, $SEGA_APP_CONCURRENCY)")
    p.add_argument("--max-queue", type=int, help="waiting requests before refusing (default 16)")
    p.add_argument("--max-file-size", help="largest upload, e.g. 20mb (default)")
    p.add_argument("--build-timeout", type=float, dest="build_timeout_s", help="seconds before a build is stopped (default 600)")
    p.add_argument("--session-ttl", type=float, dest="session_ttl_s",
                   help="seconds a build's files are kept after their last use (default 3600); closing the tab deletes them at once")  # fmt: skip
    p.add_argument("--work-dir", type=Path, help="folder for session files (default: a new temporary folder)")
    p.add_argument("--preset", dest="default_preset", choices=PRESET_CHOICES, help="preset selected at start (default fast)")
    p.add_argument("--ict-dir", type=Path, help="ICT-FaceKit FaceXModel folder (default $SEGA_ICT_DIR, then the cache)")
    p.add_argument("--allow-download", action="store_true", default=None, help="download ICT-FaceKit when it is missing")
    p.add_argument("--flame", type=Path, dest="flame_path", help="FLAME .pkl or folder (adds the FLAME choice)")
    p.add_argument("--flame-uv", type=Path, help="FLAME UV file")
    p.add_argument("--prior", type=Path, help="a trained prior (sega train's prior.npz) every build starts from ($SEGA_PRIOR)")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = vars(build_parser().parse_args(argv))
    config = AppOptions.from_env(**args)
    if config.prior is not None:  # a bad prior is refused at start, not at the first user's build
        from ..errors import SegaError
        from ..nets.prior_file import load_prior

        try:
            load_prior(config.prior)
        except SegaError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app, _ = create_app(config)
    print(f"SEGA app on http://{config.host}:{config.port}/", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
    return 0
