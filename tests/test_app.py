"""The Gradio app (issue 6): end to end through gradio_client against `python app.py` in a subprocess,
import lightness, no outbound traffic, the Space card.

The end-to-end module fixture starts one app (about 10 s) and one fast build (about 25 s on 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ConnectionRecorder:
    """A TCP listener on 127.0.0.1 that records every connection (and what was asked) and closes it.
    Used as HTTP(S)/ALL proxy of the app: any outbound request made by a proxy-aware client
    (httpx, requests, urllib, huggingface_hub, gradio's analytics) lands here instead of leaving."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(1.0)
                try:
                    self.seen.append(conn.recv(512))
                except OSError:
                    self.seen.append(b"")

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def recorder():
    rec = ConnectionRecorder()
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def app_server(recorder, tmp_path_factory, ict_dir):
    from sega.testing import AppProcess

    proxy = f"http://127.0.0.1:{recorder.port}"
    env = {
        "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "ALL_PROXY": proxy,
        "http_proxy": proxy, "https_proxy": proxy, "all_proxy": proxy,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "SEGA_ICT_DIR": str(ict_dir),
    }  # fmt: skip
    work = tmp_path_factory.mktemp("app-work")
    env["GRADIO_TEMP_DIR"] = str(work / "gradio-uploads")  # where this app's uploads (and Gradio's cache) go
    with AppProcess(args=["--work-dir", str(work)], extra_env=env, log_path=work.parent / "app.log") as proc:
        proc.work_dir = work
        yield proc


@pytest.fixture(scope="module")
def client(app_server):
    from gradio_client import Client

    return Client(app_server.url, verbose=False)


@pytest.fixture(scope="module")
def fast_result(client, tmp_path_factory):
    from gradio_client import handle_file
    from PIL import Image
    from skimage import data

    photo = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    return client.predict(handle_file(str(photo)), "fast", "ict", api_name="/build")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with NO_PROXY_OPENER.open(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def test_import_app_is_light():
    """`import app` (and sega.app) starts no server and loads neither gradio, torch, mediapipe nor a model."""
    code = (
        "import sys, threading, app, sega.app, sega.pipeline\n"
        "heavy = [m for m in ('gradio', 'torch', 'mediapipe', 'uvicorn', 'fastapi') if m in sys.modules]\n"
        "print(heavy, threading.active_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[] 1", out.stdout + out.stderr


def test_build_returns_a_valid_bundle(fast_result, app_server):
    from export.playback import load_bundle

    gallery, video, ply, bundle_zip, glb, viewer, status, rendered = fast_result
    assert Path(bundle_zip).name == "bundle.zip"
    from plyfile import PlyData

    with load_bundle(bundle_zip) as bundle:
        assert bundle.num_splats > 1000
        assert "jawOpen" in bundle.expression_names
        assert PlyData.read(ply)["vertex"].count == bundle.num_splats
    assert {item["caption"] for item in gallery} >= {"yaw+0", "yaw+90", "jawopen", "smile", "blink"}
    assert Path(video).suffix == ".mp4" and Path(video).stat().st_size > 10_000
    assert Path(ply).name == "static_preview.ply" and Path(glb).name == "avatar.glb"
    assert Path(glb).read_bytes()[:4] == b"glTF"
    assert "preset in" in status or "fast" in status
    assert re.search(r" on \*\*(cpu|cuda \(.+\))\*\* \(", status), status  # the device that built it
    assert Path(rendered).is_file()

    # The embedded viewer points at this build's bundle on the same server; the files are served.
    src = re.search(r"src='([^']+)'", viewer).group(1).replace("&amp;", "&")
    token = re.search(r"bundle=/sega/bundle/([A-Za-z0-9_-]+)/", src).group(1)
    status_code, page = _get(app_server.url.rstrip("/") + src)
    assert status_code == 200 and b"SEGA viewer" in page
    status_code, manifest = _get(f"{app_server.url}sega/bundle/{token}/manifest.json")
    assert status_code == 200 and json.loads(manifest)["format"] == "sega-bundle"
    # Other tokens and path tricks get nothing.
    assert _get(f"{app_server.url}sega/bundle/{'A' * 22}/manifest.json")[0] == 404
    assert _get(f"{app_server.url}sega/bundle/{token}/../../app.py")[0] == 404
    assert _get(f"{app_server.url}sega/bundle/{token}/%2e%2e/avatar.npz")[0] == 404
    assert _get(f"{app_server.url}sega/viewer/..%2fapp.py")[0] == 404


def test_bad_file_gets_the_specific_error_and_the_server_keeps_serving(fast_result, client, app_server, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a photo\n")
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(bad)), "fast", "ict", api_name="/build")
    message = str(info.value)
    assert "notes.txt" in message and "is not an image file" in message, message
    assert "/tmp" not in message and str(app_server.work_dir) not in message  # no server paths in messages
    # The user's mistake is one log line, not a traceback.
    log = app_server.log_path.read_text(errors="replace")
    assert "is not an image file" in log and "Traceback" not in log, log[-2000:]

    # Still serving: the page, and a second call on the same server (the sliders re-render this
    # session's avatar at yaw 30 with the jaw open).
    assert _get(app_server.url)[0] == 200
    rendered = client.predict(30, 1.0, 0, 0, 0, 0, 0, api_name="/rerender")
    from PIL import Image

    assert Image.open(rendered).size == (256, 256)
    assert app_server.alive()


def test_sliders_rerender_on_the_server(fast_result, app_server):
    """The /rerender endpoint uses the session's avatar: a fresh client session has none and is told so."""
    from gradio_client import Client

    fresh = Client(app_server.url, verbose=False)
    with pytest.raises(Exception, match="Build an avatar first"):
        fresh.predict(30, 1.0, 0, 0, 0, 0, 0, api_name="/rerender")
    assert app_server.alive()


def test_every_slider_drives_a_channel_of_each_head_model(ict_model):
    """A slider named X sets X, or X_L and X_R where the head model splits it (ICT has no browInnerUp)."""
    from sega.app.ui import SLIDER_EXPRESSIONS, slider_channels

    for name, _ in SLIDER_EXPRESSIONS:
        assert slider_channels(name, ict_model.expression_names), name
    assert slider_channels("browInnerUp", ict_model.expression_names) == ["browInnerUp_L", "browInnerUp_R"]
    assert slider_channels("browInnerUp", ["browInnerUp", "jawOpen"]) == ["browInnerUp"]
    assert slider_channels("noSuch", ict_model.expression_names) == []


def test_no_outbound_connection(fast_result, recorder, app_server):
    """After start-up and a build, nothing went to the (recording) proxy: no outbound HTTP(S).

    Limit: this catches proxy-aware clients (httpx, requests, urllib, huggingface_hub), not raw sockets."""
    assert recorder.seen == [], recorder.seen
    log = app_server.log_tail(20000)
    assert "Traceback" not in log or "gradio.exceptions.Error" in log


def test_space_card_metadata():
    from huggingface_hub import RepoCard

    card = RepoCard.load(REPO / "space" / "README.md")
    meta = card.data.to_dict()
    assert meta["app_file"] == "app.py" and (REPO / meta["app_file"]).is_file()
    assert str(meta["python_version"]) == "3.11"
    assert meta["license"] == "mit"
    assert meta["title"] and meta["emoji"]
    assert 0 < len(meta["short_description"]) <= 60  # the Hub's limit
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", (REPO / "requirements.txt").read_text(), re.MULTILINE))
    assert pins.get("gradio") == "6.31.0"
    import gradio

    assert gradio.__version__ == pins["gradio"]
    assert meta["sdk"] in ("gradio", "docker")
    if meta["sdk"] == "gradio":
        assert meta["sdk_version"] == pins["gradio"]
    else:  # Docker Space: the image installs requirements.txt, builds the viewer and runs app.py on app_port
        docker = (REPO / "space" / "Dockerfile").read_text()
        assert "FROM python:3.11" in docker and "setup_20.x" in docker and "scripts/setup.sh" in docker
        assert f'"--port", "{meta["app_port"]}"' in docker and '"0.0.0.0"' in docker and '"app.py"' in docker


def test_pipeline_timeout_is_a_user_error(astronaut, tmp_path):
    """A build past its time limit stops with BuildTimeoutError (a SegaError: the app shows the message)."""
    from sega.errors import SegaError
    from sega.pipeline import (
        BuildOptions,
        BuildPipeline,
        BuildTimeoutError,
        overall_fraction,
        pipeline_stages,
    )

    stages = pipeline_stages()
    assert stages[:6] == ("detect", "fit", "segment", "initialise", "optimise", "precompute") and stages[-1] == "export"
    assert overall_fraction("detect", 0.0) == 0.0 and overall_fraction("export", 1.0) == 1.0
    with pytest.raises(BuildTimeoutError) as info:
        BuildPipeline().run(astronaut, tmp_path / "out", BuildOptions(preset="fast", timeout_s=0.0))
    assert isinstance(info.value, SegaError) and "limit" in str(info.value)


def test_model3d_splat_turns_the_splats_rigidly(tmp_path):
    """The gr.Model3D copy of static.ply: centred, turned (``model3d_rotation``: 180 degrees about x, then
    onto the viewer's start camera), scaled; each splat's rotation turns with it (R' = R_view R) and its
    log-scales grow by log(scale). The start camera then looks at the face: the bundle's +z (the face's
    forward) points from the target towards gsplat.js's orbit camera."""
    import numpy as np
    from plyfile import PlyData, PlyElement

    from sega.app.ui import GSPLAT_ORBIT_ALPHA_RAD as a, GSPLAT_ORBIT_BETA_RAD as b, model3d_rotation, model3d_splat

    rng = np.random.default_rng(0)
    n = 8
    names = ["x", "y", "z", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "opacity"]
    v = np.zeros(n, dtype=[(k, "f4") for k in names])
    for k in names:
        v[k] = rng.normal(size=n)
    src, dst = tmp_path / "static.ply", tmp_path / "shown.ply"
    PlyData([PlyElement.describe(v, "vertex")]).write(str(src))
    model3d_splat(src, dst, center=(0.1, 0.2, 0.3), scale=2.0)
    w = PlyData.read(str(dst))["vertex"].data

    def rotmat(q):
        q = q / np.linalg.norm(q)
        a, b, c, d = q
        return np.array([[1 - 2 * (c * c + d * d), 2 * (b * c - a * d), 2 * (b * d + a * c)],
                         [2 * (b * c + a * d), 1 - 2 * (b * b + d * d), 2 * (c * d - a * b)],
                         [2 * (b * d - a * c), 2 * (c * d + a * b), 1 - 2 * (b * b + c * c)]])  # fmt: skip

    rx = model3d_rotation()
    np.testing.assert_allclose(rx @ rx.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rx) > 0
    to_camera = np.array([np.sin(a) * np.cos(b), -np.sin(b), -np.cos(a) * np.cos(b)])  # gsplat.js orbit start
    np.testing.assert_allclose(rx @ [0.0, 0.0, 1.0], to_camera, atol=1e-12)  # the face looks at the camera
    assert (rx @ [0.0, 1.0, 0.0])[1] < 0  # and its up is the viewer's up (gsplat.js: y down)
    for i in range(n):
        p = np.array([v["x"][i], v["y"][i], v["z"][i]]) - (0.1, 0.2, 0.3)
        np.testing.assert_allclose([w["x"][i], w["y"][i], w["z"][i]], 2.0 * rx @ p, rtol=1e-5, atol=1e-5)
        q0 = np.array([v[f"rot_{k}"][i] for k in range(4)], dtype=np.float64)
        q1 = np.array([w[f"rot_{k}"][i] for k in range(4)], dtype=np.float64)
        np.testing.assert_allclose(rotmat(q1), rx @ rotmat(q0), atol=1e-5)
        np.testing.assert_allclose(w["scale_0"][i], v["scale_0"][i] + np.log(2.0), atol=1e-5)
    np.testing.assert_array_equal(w["opacity"], v["opacity"])


def test_session_store_tokens_and_expiry(tmp_path):
    """Build folders: random tokens, no path tricks, a public folder of handed-out files only, deleted on
    request, at tab close and by the TTL sweep (idle time counted from the last use)."""
    from sega.app import SessionStore
    from sega.app.ui import _session_state_deleted

    store = SessionStore(tmp_path, ttl_s=60)
    t1, f1 = store.new()
    t2, f2 = store.new()
    t3, f3 = store.new()
    assert t1 != t2 and len(t1) >= 20 and f1.is_dir() and f1.parent == store.private_root
    for bad in ("..", "../sessions", "x", None, 3, "a/b" * 10):
        assert store.folder(bad) is None
    (f1 / "avatar.npz").write_bytes(b"private")
    shown = store.publish(t1, f1 / "avatar.npz", "bundle.zip")
    assert shown.parent == store.public_root / t1 and shown.read_bytes() == b"private"
    store.remember(t1, object())
    _session_state_deleted(store)({"token": t1})  # what gr.State's delete_callback does at expiry
    assert not f1.exists() and not shown.exists() and store.avatar(t1) is None
    assert store.bind("session-a", t3) is None
    store.end_session("session-a")  # the tab closed
    assert not f3.exists() and not (store.public_root / t3).exists()
    old = time.time() - 120
    for base in (store.private_root, store.public_root):
        os.utime(base / t2, (old, old))
    store.touch(t2)  # used again just now: kept
    assert store.sweep() == [] and f2.exists()
    for base in (store.private_root, store.public_root):
        os.utime(base / t2, (old, old))
    assert store.sweep() == [t2] and not f2.exists() and not (store.public_root / t2).exists()


def test_session_sweeper_thread_deletes_idle_builds(tmp_path):
    """The app's own schedule: a background sweeper removes idle build folders without any request."""
    from sega.app import SessionStore, SessionSweeper

    store = SessionStore(tmp_path, ttl_s=0.3)
    token, folder = store.new()
    sweeper = SessionSweeper(store, interval_s=0.1).start()
    try:
        deadline = time.monotonic() + 5
        while (folder.exists() or (store.public_root / token).exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sweeper.stop()
    assert not folder.exists() and not (store.public_root / token).exists()


def test_file_data_guard_refuses_server_paths(tmp_path):
    """The ASGI guard: JSON API requests naming files outside the upload folder (or URLs) get 403 before
    the app sees them; uploads, other routes and file-free requests pass."""
    import asyncio

    from sega.app.guard import FileDataGuard

    uploads = (tmp_path / "uploads").resolve()
    (uploads / "abc").mkdir(parents=True)
    (uploads / "abc" / "photo.png").write_bytes(b"x")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (uploads / "abc" / "link.png").symlink_to(outside)
    seen = []

    async def inner(scope, receive, send):
        seen.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = FileDataGuard(inner, upload_dir=uploads)

    def post(path: str, data, content_type=b"application/json") -> int:
        body = json.dumps(data).encode()
        out = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            out.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-type", content_type)]}
        asyncio.run(guard(scope, receive, send))
        return out[0]["status"]

    def file_data(p):
        return {"data": [{"path": p, "meta": {"_type": "gradio.FileData"}}, "fast"], "fn_index": 1}

    assert post("/gradio_api/queue/join", file_data(str(uploads / "abc" / "photo.png"))) == 200
    assert post("/gradio_api/queue/join", {"data": [None, 30, 1.0], "fn_index": 2}) == 200
    for bad in (str(outside), "/etc/hostname", str(uploads / "abc" / ".." / ".." / "secret.txt"),
                str(uploads / "abc" / "link.png"), "http://127.0.0.1:1/x.png", "file:///etc/hostname", "", 3):
        assert post("/gradio_api/queue/join", file_data(bad)) == 403, bad
        assert post("/gradio_api/run/build", file_data(bad)) == 403, bad
    nested = {"data": [[[{"path": "/etc/hostname", "orig_name": "x.png"}]]]}  # anywhere in the data, any depth
    assert post("/gradio_api/queue/join", nested) == 403
    assert post("/sega/other", file_data("/etc/hostname")) == 200  # not the Gradio API: not our business
    assert len(seen) == 3 and b"photo.png" in seen[0]  # the app got the body of each passed request intact


def _raw_join(base: str, fn_index: int, data: list) -> tuple[int, str]:
    """POST a raw /gradio_api/queue/join (what a hostile client can send) -> (status, body)."""
    import httpx

    body = {"data": data, "fn_index": fn_index, "session_hash": "rawclient01", "event_data": None, "trigger_id": None}
    with httpx.Client(trust_env=False, timeout=30) as c:
        r = c.post(base + "gradio_api/queue/join", json=body)
        return r.status_code, r.text


def test_raw_file_paths_outside_the_upload_folder_are_refused(fast_result, app_server, tmp_path):
    """A raw request naming a server file as the photo (or as a slider value) is refused, and the file is
    neither opened nor copied into Gradio's cache; so are URLs and the build folders' own files."""
    import uuid

    import httpx

    with httpx.Client(trust_env=False, timeout=30) as c:
        config = c.get(app_server.url + "config").json()
    fns = {d.get("api_name"): i for i, d in enumerate(config["dependencies"])}
    secret = tmp_path / f"secret-{uuid.uuid4().hex}.png"
    from PIL import Image

    Image.new("RGB", (256, 256), (200, 150, 120)).save(secret)  # a real image: it would build if opened
    private = next((app_server.work_dir / "sessions").iterdir()) / "out" / "avatar.npz"
    assert private.is_file()

    def fd(p):
        return {"path": p, "meta": {"_type": "gradio.FileData"}, "orig_name": "x.png"}

    for path in (str(secret), "/etc/hostname", str(private), "http://127.0.0.1:9/photo.png",
                 str(app_server.work_dir / "gradio-uploads" / ".." / secret.name)):
        status, body = _raw_join(app_server.url, fns["build"], [fd(path), "fast", "ict", None])
        assert status == 403 and "uploaded through the page" in body, (path, status, body)
        status, body = _raw_join(app_server.url, fns["rerender"], [None, fd(path), 0, 0, 0, 0, 0, 0])
        assert status == 403, (path, status, body)
    copies = [p for p in (app_server.work_dir / "gradio-uploads").rglob("*") if p.name in (secret.name, "hostname", "avatar.npz")]
    assert copies == []
    assert app_server.alive() and _get(app_server.url)[0] == 200


def test_only_handed_out_files_are_served(fast_result, app_server):
    """/gradio_api/file= serves what the UI handed out (public/<token>/), never the build folder's avatar.npz or fit.json."""
    token = re.search(r"bundle=/sega/bundle/([A-Za-z0-9_-]+)/", fast_result[5]).group(1)
    private = app_server.work_dir / "sessions" / token / "out"
    public = app_server.work_dir / "public" / token
    assert (private / "avatar.npz").is_file() and (private / "fit.json").is_file()
    for f in ("avatar.npz", "fit.json", "bundle.zip", "bundle/manifest.json"):
        assert _get(f"{app_server.url}gradio_api/file={private / f}")[0] in (403, 404), f
    assert {p.name for p in public.iterdir()} >= {"avatar.glb", "bundle.zip", "turntable.mp4", "static_preview.ply"}
    assert not any(p.suffix in (".npz", ".json") for p in public.iterdir())
    status, data = _get(f"{app_server.url}gradio_api/file={public / 'bundle.zip'}")
    assert status == 200 and data[:2] == b"PK"


def test_app_deletes_idle_session_files_on_its_own(tmp_path, ict_dir):
    """With a short --session-ttl the app deletes a build folder nobody uses any more by itself (Gradio
    would keep a closed session's state for its own hour)."""
    from sega.testing import AppProcess

    work = tmp_path / "work"
    with AppProcess(args=["--work-dir", str(work), "--session-ttl", "1"], extra_env={"SEGA_ICT_DIR": str(ict_dir)}) as proc:
        folder = work / "sessions" / ("T" * 22)
        (folder / "out").mkdir(parents=True)
        (folder / "out" / "avatar.npz").write_bytes(b"x")
        deadline = time.monotonic() + 15
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not folder.exists(), proc.log_tail()


def test_recorder_sees_proxied_traffic():
    """The no-outbound test's recorder does catch a proxy-aware client (so an empty record means something)."""
    recorder = ConnectionRecorder()
    try:
        proxy = f"http://127.0.0.1:{recorder.port}"
        code = "import httpx\ntry:\n    httpx.get('http://example.com/', timeout=3)\nexcept Exception:\n    pass\n"
        subprocess.run([sys.executable, "-c", code], env=dict(os.environ, HTTP_PROXY=proxy, http_proxy=proxy), timeout=60, check=True)
        assert recorder.seen and b"example.com" in recorder.seen[-1]
    finally:
        recorder.close()


def test_viewer_panel_without_a_built_viewer():
    """No web/dist: a clear note with the build command instead of a broken iframe."""
    from sega.app import viewer_html
    from sega.viewer_server import BUILD_HINT

    note = viewer_html("tok" * 8, None)
    assert "not available" in note and BUILD_HINT in note and "<iframe" not in note
    frame = viewer_html("tok" * 8, Path("/some/dist"))
    assert "<iframe" in frame and "/sega/bundle/" + "tok" * 8 + "/" in frame
