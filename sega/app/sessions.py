"""Per-build folders of the app, what of them is served, and their deletion on the app's own schedule.

Layout under the app's work folder:

* ``sessions/<token>/``  everything a build writes (``out/``: avatar.npz, fit.json, the bundle folder, ...).
  Never reachable through Gradio's ``/gradio_api/file=`` route; the unzipped bundle is served only by
  the app's own ``/sega/bundle/<token>/`` route.
* ``public/<token>/``    only the files the UI hands out (previews, turntable, splat preview, bundle.zip,
  avatar.glb, slider renders): hard links (or copies) of build outputs. This folder is the app's
  only Gradio ``allowed_paths`` entry.

``token`` is a random 128-bit id made per build and known only to the session that built it.

Why our own schedule: Gradio keeps a closed browser session's ``gr.State`` (and so calls its
``delete_callback``) only after its own hour, whatever ``--session-ttl`` says. ``SessionSweeper``
deletes the folders of every token idle for longer than the TTL, from a background thread started
by ``create_app`` (never at import); a tab that closes deletes its files at once (``Blocks.unload``).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
AVATAR_CACHE_SIZE = 4  # avatars kept in memory for the sliders (others reload from their avatar.npz)
SWEEP_FRACTION_OF_TTL = 0.25  # the sweeper wakes this often (as a fraction of the TTL) ...
SWEEP_INTERVAL_RANGE_S = (0.5, 60.0)  # ... within these bounds: a short TTL is honoured to about a quarter of itself
PRIVATE_DIR, PUBLIC_DIR = "sessions", "public"


def valid_token(token) -> bool:
    return isinstance(token, str) and bool(TOKEN_RE.match(token))


class SessionStore:
    """Per-build folders ``<root>/sessions/<token>/`` and ``<root>/public/<token>/``, and a small
    in-memory cache of built avatars. Thread-safe."""

    def __init__(self, root: Path, ttl_s: float):
        self.root = Path(root)
        self.private_root = self.root / PRIVATE_DIR
        self.public_root = self.root / PUBLIC_DIR
        self.ttl_s = float(ttl_s)
        self._avatars: OrderedDict[str, object] = OrderedDict()
        self._sessions: dict[str, str] = {}  # Gradio session hash -> token of its latest build
        self._lock = threading.Lock()
        self.private_root.mkdir(parents=True, exist_ok=True)
        self.public_root.mkdir(parents=True, exist_ok=True)

    # ---- tokens and folders ----------------------------------------------------------------
    def new(self) -> tuple[str, Path]:
        """A new token and its (private) build folder."""
        token = secrets.token_urlsafe(16)
        folder = self.private_root / token
        folder.mkdir()
        (self.public_root / token).mkdir()
        return token, folder

    def folder(self, token) -> Path | None:
        """The private build folder of ``token``, or None (unknown token, or not a token at all)."""
        if not valid_token(token):
            return None
        folder = self.private_root / token
        return folder if folder.is_dir() else None

    def publish(self, token: str, path: Path, name: str | None = None) -> Path:
        """Hand out one file of a build: a hard link (else a copy) in ``public/<token>/`` -> its path."""
        target = self.public_root / token / (name or Path(path).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)
        except OSError:  # another file system, or links not allowed: copy
            shutil.copyfile(path, target)
        return target

    def public_file(self, token: str, name: str) -> Path:
        """Where a new handed-out file of ``token`` goes (e.g. a slider render)."""
        return self.public_root / token / name

    def touch(self, token: str) -> None:
        """Mark ``token`` as in use now (the sweeper counts idle time from here)."""
        now = time.time()
        for base in (self.private_root, self.public_root):
            try:
                os.utime(base / token, (now, now))
            except OSError:
                pass

    # ---- sessions and avatars ----------------------------------------------------------------
    def bind(self, session_hash: str | None, token: str) -> str | None:
        """Record ``token`` as the latest build of a browser session; returns the session's previous token."""
        if not session_hash:
            return None
        with self._lock:
            old = self._sessions.get(session_hash)
            self._sessions[session_hash] = token
        return old

    def end_session(self, session_hash: str | None) -> None:
        """A browser session ended (tab closed): delete its build's files now."""
        if not session_hash:
            return
        with self._lock:
            token = self._sessions.pop(session_hash, None)
        self.delete(token)

    def remember(self, token: str, avatar) -> None:
        with self._lock:
            self._avatars[token] = avatar
            self._avatars.move_to_end(token)
            while len(self._avatars) > AVATAR_CACHE_SIZE:
                self._avatars.popitem(last=False)

    def avatar(self, token: str):
        with self._lock:
            return self._avatars.get(token)

    # ---- deletion ----------------------------------------------------------------------------
    def delete(self, token) -> None:
        if not valid_token(token):
            return
        with self._lock:
            self._avatars.pop(token, None)
            for k in [k for k, v in self._sessions.items() if v == token]:
                del self._sessions[k]
        shutil.rmtree(self.private_root / token, ignore_errors=True)
        shutil.rmtree(self.public_root / token, ignore_errors=True)

    def sweep(self) -> list[str]:
        """Delete the folders of every token idle for longer than the TTL -> the tokens deleted."""
        cutoff = time.time() - self.ttl_s
        stale = set()
        for base in (self.private_root, self.public_root):
            try:
                entries = list(base.iterdir())
            except OSError:
                continue
            for p in entries:
                if valid_token(p.name) and p.is_dir() and not self._active_since(p.name, cutoff):
                    stale.add(p.name)
        for token in stale:
            self.delete(token)
        return sorted(stale)

    def _active_since(self, token: str, cutoff: float) -> bool:
        for base in (self.private_root, self.public_root):
            try:
                if (base / token).stat().st_mtime >= cutoff:
                    return True
            except OSError:
                pass
        return False


class SessionSweeper:
    """A daemon thread calling ``store.sweep()`` every ``interval_s`` until ``stop()``."""

    def __init__(self, store: SessionStore, interval_s: float | None = None):
        lo, hi = SWEEP_INTERVAL_RANGE_S
        self.store = store
        self.interval_s = interval_s if interval_s is not None else min(max(store.ttl_s * SWEEP_FRACTION_OF_TTL, lo), hi)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sega-session-sweeper", daemon=True)

    def start(self) -> SessionSweeper:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.store.sweep()
            except Exception:  # never let a file-system hiccup end the sweeping
                pass

    def stop(self) -> None:
        self._stop.set()
