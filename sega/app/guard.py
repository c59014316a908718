"""Refuse requests that name server files: the app accepts only files a user uploaded.

Gradio turns every ``FileData`` in a request's data (``{"path": ..., "meta": {"_type":
"gradio.FileData"}}``) into a copy in its cache *before* any component sees it, for every input
component (a slider too). Its own check that the path is an upload only runs on a Blocks that
``launch()`` started; a Blocks mounted with ``mount_gradio_app`` skips it, so a raw
``/gradio_api/queue/join`` naming ``/etc/passwd`` copied that file into the cache. ``create_app``
marks the Blocks as launched (Gradio's check then runs) and adds this middleware, which does not
depend on Gradio's internals: any JSON request to the Gradio API whose data holds a file path
outside Gradio's upload folder, or a URL, is refused with 403 before Gradio parses it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

API_PREFIX = "/gradio_api/"
MAX_JSON_BODY_BYTES = 4 * 1024 * 1024  # API request bodies name files, they do not carry them (uploads are multipart)
REFUSAL = "Refused: files must be uploaded through the page (no server paths or URLs)."
URL_SCHEMES = ("http://", "https://", "ftp://", "file:", "data:")  # "data:" payloads are in "url", never in "path"


def _paths_in(value, found: list[str], budget: list[int]) -> None:
    """Collect the "path" of every file-like object in a JSON value (iteratively, with a node budget)."""
    stack = [value]
    while stack:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError("request data too large")
        v = stack.pop()
        if isinstance(v, dict):
            if "path" in v and ("meta" in v or "orig_name" in v or "url" in v):
                found.append(v["path"])
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def allowed_path(path, upload_dir: Path) -> bool:
    """True for a local path inside Gradio's upload folder (after resolving links and '..')."""
    if not isinstance(path, str) or not path or "\x00" in path or path.lower().startswith(URL_SCHEMES):
        return False
    try:
        return Path(os.path.realpath(path)).is_relative_to(upload_dir)
    except (OSError, ValueError):
        return False


def upload_folder() -> Path:
    """Gradio's upload folder (``GRADIO_TEMP_DIR`` or the system temp dir's ``gradio``), resolved."""
    from gradio.utils import get_upload_folder

    return Path(os.path.realpath(get_upload_folder()))


class FileDataGuard:
    """ASGI middleware: 403 for Gradio API requests whose JSON data names a non-uploaded file."""

    NODE_BUDGET = 100_000  # JSON nodes looked at per request (a request of the app has a few dozen)

    def __init__(self, app, upload_dir: Path | None = None):
        self.app = app
        self.upload_dir = upload_dir

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope.get("path", "").startswith(API_PREFIX):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if b"application/json" not in headers.get(b"content-type", b""):
            return await self.app(scope, receive, send)  # uploads (multipart) and the rest go to Gradio
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_JSON_BODY_BYTES:
                return await _respond(send, 413, "Request too large.")
        if not self._acceptable(body):
            return await _respond(send, 403, REFUSAL)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _acceptable(self, body: bytes) -> bool:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return True  # not JSON after all: Gradio refuses it itself
        paths: list[str] = []
        try:
            _paths_in(data, paths, [self.NODE_BUDGET])
        except ValueError:
            return False
        if not paths:
            return True
        base = self.upload_dir or upload_folder()
        return all(allowed_path(p, base) for p in paths)


async def _respond(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
