"""The Gradio app (``python app.py``; a Hugging Face Space's ``app_file``).

* ``options``:  ``AppOptions`` (command-line flags and SEGA_APP_* variables);
* ``ui``:       ``build_ui``: the Blocks, a thin shell over ``sega.pipeline.BuildPipeline``;
* ``server``:   ``create_app`` (FastAPI + the UI + viewer/bundle routes), ``main``;
* ``sessions``: per-build folders, what of them is served, deletion on the app's own schedule;
* ``guard``:    refusal of requests that name server files instead of uploads;

Importing this package loads nothing heavy (no gradio, torch or mediapipe).
"""

from __future__ import annotations

from .options import AppOptions
from .server import BUNDLE_ROUTE, VIEWER_ROUTE, build_parser, create_app, main
from .sessions import SessionStore, SessionSweeper
from .ui import HEAD_MODEL_LABELS, PRESET_CHOICES, SLIDER_EXPRESSIONS, build_ui, model3d_splat, viewer_html

__all__ = [
    "BUNDLE_ROUTE", "HEAD_MODEL_LABELS", "PRESET_CHOICES", "SLIDER_EXPRESSIONS", "VIEWER_ROUTE", "AppOptions",
    "SessionStore", "SessionSweeper", "build_parser", "build_ui", "create_app", "main",
    "model3d_splat", "viewer_html",
]
