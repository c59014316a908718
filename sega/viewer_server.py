"""Local web server for the avatar viewer: ``web/dist`` at ``/`` and one avatar bundle at ``/bundle/``.

Why a server of our own: browsers do not run ES modules, WebAssembly or ``fetch`` from ``file://``
pages, and onnxruntime-web's worker threads need ``SharedArrayBuffer``, which only a cross-origin
isolated page gets (``Cross-Origin-Opener-Policy: same-origin`` + ``Cross-Origin-Embedder-Policy:
require-corp`` on every response). ``http.server`` sends neither those headers nor ``application/wasm``
reliably, so this module sets them itself. It binds to 127.0.0.1 by default and serves only two
trees, read-only:

* ``/`` -> the built viewer (``web/dist``: ``npm ci --prefix web && npm run build --prefix web``);
* ``/bundle/<path>`` -> files of the bundle folder, or members of the bundle zip (read from the zip,
  under the folder that holds ``manifest.json``); ``/bundle.zip`` -> the zip itself when the bundle is one.

Requested paths are decoded, split on ``/`` and refused (404) if any part is empty, ``.``, ``..``,
holds a backslash or NUL, or if the resolved file (symlinks followed) lies outside its tree.

Before serving, the bundle goes through ``export.playback.load_bundle`` (the checks ``sega play``
makes: zip safety, manifest schema, every file listed and hashed, ONNX graphs of the exporter's
operators with bounded shapes), so a hostile bundle is refused with one line and never reaches the
browser. ``check=False`` skips that (for testing the page's own error reporting).

``serve(...)`` returns a started ``ViewerServer`` (background thread) with ``.url`` (the page URL,
already pointing at the bundle) and ``.shutdown()``.
"""

from __future__ import annotations

import os
import posixpath
import threading
import webbrowser
import zipfile
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .errors import SegaError

BUILD_HINT = "run npm ci --prefix web && npm run build --prefix web"
MANIFEST = "manifest.json"
BUNDLE_PREFIX = "/bundle/"
BUNDLE_ZIP_PATH = "/bundle.zip"
DIST_ENV = "SEGA_WEB_DIST"  # overrides where the built viewer is looked for
MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".ply": "application/octet-stream",
    ".spz": "application/octet-stream",
    ".zip": "application/zip",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
CHUNK = 1 << 20


class ViewerError(SegaError):
    """The viewer cannot be served (not built, or the bundle is missing or malformed)."""


def default_dist_dir() -> Path:
    """``web/dist`` of this checkout (the package is installed editable), or ``$SEGA_WEB_DIST``."""
    env = os.environ.get(DIST_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "web" / "dist"


def find_dist_dir(dist_dir: str | Path | None = None) -> Path:
    """The built viewer folder; raises ``ViewerError`` with the build command when it is missing."""
    dist = Path(dist_dir) if dist_dir is not None else default_dist_dir()
    if not (dist / "index.html").is_file() or not (dist / "viewer.js").is_file():
        raise ViewerError(f"the web viewer has not been built ({dist} has no index.html / viewer.js): {BUILD_HINT}")
    return dist.resolve()


def _safe_parts(rel: str) -> list[str] | None:
    """URL path (already without the tree prefix) -> checked path parts, or None when unsafe."""
    rel = unquote(rel)
    if rel == "":
        return []
    parts = rel.split("/")
    for p in parts:
        if p in ("", ".", "..") or "\\" in p or "\x00" in p or ":" in p:
            return None
    return parts


class _Bundle:
    """Read access to a bundle folder or zip, by relative POSIX path."""

    def __init__(self, path: Path):
        self.path = path.resolve()
        self.zip_member_prefix = ""
        self._zip: zipfile.ZipFile | None = None
        self._lock = threading.Lock()
        if self.path.is_dir():
            if not (self.path / MANIFEST).is_file():
                raise ViewerError(f"{path} is not an avatar bundle: it has no {MANIFEST}")
            self.is_zip = False
        elif self.path.is_file():
            try:
                zf = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as err:
                raise ViewerError(f"{path} is neither a bundle folder nor a readable zip: {err}") from err
            names = [n for n in zf.namelist() if n == MANIFEST or n.endswith("/" + MANIFEST)]
            if not names:
                zf.close()
                raise ViewerError(f"{path} is not an avatar bundle: the zip has no {MANIFEST}")
            self.zip_member_prefix = min(names, key=len)[: -len(MANIFEST)]
            self._zip = zf
            self._members = {
                n[len(self.zip_member_prefix) :]: n
                for n in zf.namelist()
                if n.startswith(self.zip_member_prefix) and not n.endswith("/")
            }
            self.is_zip = True
        else:
            raise ViewerError(f"bundle not found: {path}")

    def open(self, parts: list[str]) -> tuple[bytes | Path, str] | None:
        """(file path or bytes, name) of a member, or None when it does not exist / is not allowed."""
        rel = "/".join(parts)
        if not parts:
            return None
        if self.is_zip:
            member = self._members.get(rel)
            if member is None:
                return None
            with self._lock:
                return self._zip.read(member), parts[-1]
        target = self.path.joinpath(*parts).resolve()
        if not target.is_relative_to(self.path) or not target.is_file():
            return None
        return target, parts[-1]

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _make_handler(dist: Path, bundle: _Bundle, quiet: bool, page_query: str):
    class Handler(BaseHTTPRequestHandler):
        server_version = "sega-viewer"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # http.server API
            if not quiet:
                super().log_message(fmt, *args)

        def do_HEAD(self):
            self._serve(head=True)

        def do_GET(self):
            self._serve(head=False)

        def _resolve(self):
            path = urlsplit(self.path).path
            if path == BUNDLE_ZIP_PATH:
                return (bundle.path, bundle.path.name) if bundle.is_zip else None
            if path.startswith(BUNDLE_PREFIX):
                parts = _safe_parts(path[len(BUNDLE_PREFIX) :])
                return None if parts is None else bundle.open(parts)
            if not path.startswith("/"):
                return None
            parts = _safe_parts(path[1:])
            if parts is None:
                return None
            if not parts:
                parts = ["index.html"]
            target = dist.joinpath(*parts).resolve()
            if not target.is_relative_to(dist):
                return None
            if target.is_dir():
                target = target / "index.html"
            return (target, target.name) if target.is_file() else None

        def _redirect_to_bundle(self) -> bool:
            """The page without ``bundle=`` (the bare address someone typed or bookmarked) goes to the page
            with this server's bundle, so it never shows "no bundle loaded"; other parameters are kept."""
            url = urlsplit(self.path)
            if url.path not in ("/", "/index.html") or "bundle" in parse_qs(url.query):
                return False
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", "/?" + "&".join(q for q in (page_query, url.query) if q))
            self.send_header("Content-Length", "0")
            for k, v in ISOLATION_HEADERS.items():
                self.send_header(k, v)
            self.end_headers()
            return True

        def _serve(self, head: bool):
            if self._redirect_to_bundle():
                return
            try:
                found = self._resolve()
            except OSError:
                found = None
            if found is None:
                self._send_error(HTTPStatus.NOT_FOUND)
                return
            body, name = found
            ctype = MIME_TYPES.get(posixpath.splitext(name)[1].lower(), "application/octet-stream")
            size = len(body) if isinstance(body, bytes) else body.stat().st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(size))
            for k, v in ISOLATION_HEADERS.items():
                self.send_header(k, v)
            self.end_headers()
            if head:
                return
            try:
                if isinstance(body, bytes):
                    self.wfile.write(body)
                else:
                    with open(body, "rb") as fh:
                        while block := fh.read(CHUNK):
                            self.wfile.write(block)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _send_error(self, status: HTTPStatus):
            body = f"{status.value} {status.phrase}\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for k, v in ISOLATION_HEADERS.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_POST(self):
            self._send_error(HTTPStatus.METHOD_NOT_ALLOWED)

        do_PUT = do_DELETE = do_PATCH = do_POST

    return Handler


class ViewerServer:
    """A running viewer server (see ``serve``)."""

    def __init__(self, httpd: ThreadingHTTPServer, bundle: _Bundle, dist: Path, page_query: str):
        self._httpd = httpd
        self._bundle = bundle
        self.dist_dir = dist
        self.bundle_path = bundle.path
        host, port = httpd.server_address[:2]
        self.host, self.port = host, port
        if host in ("0.0.0.0", ""):  # listening on every interface: the local page is still on 127.0.0.1
            host = "127.0.0.1"
        self.origin = f"http://{host}:{port}"
        self.bundle_url = f"{self.origin}{BUNDLE_PREFIX}"
        self.url = f"{self.origin}/?{page_query}"
        self._thread = threading.Thread(target=httpd.serve_forever, name="sega-viewer", daemon=True)
        self._stopped = threading.Event()
        self._thread.start()

    def shutdown(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._bundle.close()

    def wait(self) -> None:
        """Block until ``shutdown`` (Ctrl-C raises KeyboardInterrupt in the caller, who should shut down)."""
        while not self._stopped.wait(0.5):
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"ViewerServer(url={self.url!r}, bundle={str(self.bundle_path)!r})"


def check_bundle(bundle_path: str | Path) -> None:
    """Load the bundle once with ``export.playback.load_bundle`` (and close it); its ``BundleError``
    becomes a ``ViewerError`` with the same one-line message."""
    from export.playback import BundleError, load_bundle

    try:
        load_bundle(bundle_path, threads=1).close()
    except BundleError as err:
        raise ViewerError(str(err)) from err


def serve(
    bundle_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    dist_dir: str | Path | None = None,
    open_browser: bool = False,
    threads: int | None = None,
    quiet: bool = True,
    check: bool = True,
) -> ViewerServer:
    """Serve the viewer and one bundle; returns the started server (``.url``, ``.shutdown()``).

    bundle_path: a bundle folder (with manifest.json) or a bundle .zip
    host, port: where to listen (port 0 picks a free port); keep 127.0.0.1 unless you mean to share it
    dist_dir: the built viewer (default: web/dist of this checkout, or $SEGA_WEB_DIST)
    open_browser: open ``.url`` in the default browser
    threads: onnxruntime-web wasm threads (``?threads=``; default: the viewer picks)
    quiet: no request log on stderr
    check: refuse the bundle unless ``load_bundle`` accepts it (``check_bundle``; default)
    Raises ``ViewerError`` when the viewer is not built, the bundle is missing/malformed/refused or
    the address cannot be bound.
    """
    dist = find_dist_dir(dist_dir)
    if check:
        check_bundle(bundle_path)
    bundle = _Bundle(Path(bundle_path))
    # The page's query: this bundle, named by its file (not the internal route), and the thread count.
    query = "bundle=" + quote(BUNDLE_PREFIX, safe="/") + "&label=" + quote(bundle.path.name, safe="")
    if threads is not None:
        query += f"&threads={int(threads)}"
    try:
        httpd = ThreadingHTTPServer((host, int(port)), _make_handler(dist, bundle, quiet, query))
    except OSError as err:
        bundle.close()
        raise ViewerError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    httpd.daemon_threads = True
    server = ViewerServer(httpd, bundle, dist, query)
    if open_browser:
        webbrowser.open(server.url)
    return server
