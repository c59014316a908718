"""Settings of one app server: command-line flags and SEGA_APP_* environment variables fill ``AppOptions``."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..presets import QUICK_PRESET


@dataclass
class AppOptions:
    """Settings of one app server (command line flags and SEGA_APP_* environment variables fill it)."""

    host: str = "127.0.0.1"  # address to listen on; 0.0.0.0 only where the app should be public (a Space)
    port: int = 7860  # port (0: any free port)
    concurrency: int = 1  # builds running at the same time
    max_queue: int = 16  # requests waiting in the queue before new ones are refused
    max_file_size: str = "20mb"  # largest upload Gradio accepts
    build_timeout_s: float = 600.0  # a build running longer stops with a message
    session_ttl_s: float = 3600.0  # a build's files are deleted this long after their last use (or when the tab closes)
    work_dir: Path | None = None  # where per-session build folders live (None: a new temporary folder)
    default_preset: str = QUICK_PRESET  # preset selected when the page opens
    preview_size: int = 256  # side (px) of previews, turntable frames and slider re-renders
    ict_dir: Path | None = None  # ICT-FaceKit FaceXModel folder (None: $SEGA_ICT_DIR, then the cache)
    allow_download: bool = False  # let the app download ICT-FaceKit when missing (off: no outbound traffic)
    flame_path: Path | None = None  # FLAME .pkl or folder; enables the FLAME choice
    flame_uv: Path | None = None  # FLAME UV file
    dist_dir: Path | None = None  # built web viewer (None: web/dist or $SEGA_WEB_DIST)
    prior: Path | None = None  # a trained prior (``sega train``'s prior.npz) every build starts from (None: none)

    @classmethod
    def from_env(cls, **overrides) -> AppOptions:
        """Defaults, then SEGA_APP_CONCURRENCY / _MAX_QUEUE / _MAX_FILE_SIZE / _BUILD_TIMEOUT / _SESSION_TTL /
        _WORK_DIR, SEGA_FLAME / SEGA_FLAME_UV, SEGA_PRIOR, SEGA_APP_ALLOW_DOWNLOAD=1, then ``overrides``."""
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
            "SEGA_PRIOR": ("prior", Path),
        }
        for var, (name, typ) in conv.items():
            if env.get(var):
                cfg = replace(cfg, **{name: typ(env[var])})
        if env.get("SEGA_APP_ALLOW_DOWNLOAD") == "1":
            cfg = replace(cfg, allow_download=True)
        return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
