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
    from sega.app import AppProcess

    proxy = f"http://127.0.0.1:{recorder.port}"
    env = {
        "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "ALL_PROXY": proxy,
        "http_proxy": proxy, "https_proxy": proxy, "all_proxy": proxy,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "SEGA_ICT_DIR": str(ict_dir),
    }  # fmt: skip
    work = tmp_path_factory.mktemp("app-work")
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
    """The gr.Model3D copy of static.ply: centred, turned 180 degrees about x, scaled; each splat's
    rotation turns with it (R' = Rx(180) R) and its log-scales grow by log(scale)."""
    import numpy as np
    from plyfile import PlyData, PlyElement

    from sega.app import model3d_splat

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

    rx = np.diag([1.0, -1.0, -1.0])
    for i in range(n):
        p = np.array([v["x"][i], v["y"][i], v["z"][i]]) - (0.1, 0.2, 0.3)
        np.testing.assert_allclose([w["x"][i], w["y"][i], w["z"][i]], 2.0 * rx @ p, rtol=1e-5, atol=1e-5)
        q0 = np.array([v[f"rot_{k}"][i] for k in range(4)], dtype=np.float64)
        q1 = np.array([w[f"rot_{k}"][i] for k in range(4)], dtype=np.float64)
        np.testing.assert_allclose(rotmat(q1), rx @ rotmat(q0), atol=1e-5)
        np.testing.assert_allclose(w["scale_0"][i], v["scale_0"][i] + np.log(2.0), atol=1e-5)
    np.testing.assert_array_equal(w["opacity"], v["opacity"])


def test_session_store_tokens_and_expiry(tmp_path):
    """Build folders: random tokens, no path tricks, deleted on request and by the TTL sweep."""
    from sega.app import SessionStore, _session_state_deleted

    store = SessionStore(tmp_path / "sessions", ttl_s=60)
    t1, f1 = store.new()
    t2, f2 = store.new()
    assert t1 != t2 and len(t1) >= 20 and f1.is_dir()
    for bad in ("..", "../sessions", "x", None, 3, "a/b" * 10):
        assert store.folder(bad) is None
    store.remember(t1, object())
    _session_state_deleted(store)({"token": t1})  # what gr.State's delete_callback does at expiry
    assert not f1.exists() and store.avatar(t1) is None
    old = time.time() - 120
    os.utime(f2, (old, old))
    store.sweep()
    assert not f2.exists()


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
    from sega.viewer import BUILD_HINT

    note = viewer_html("tok" * 8, None)
    assert "not available" in note and BUILD_HINT in note and "<iframe" not in note
    frame = viewer_html("tok" * 8, Path("/some/dist"))
    assert "<iframe" in frame and "/sega/bundle/" + "tok" * 8 + "/" in frame
