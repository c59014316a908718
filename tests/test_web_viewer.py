"""The web viewer (web/dist, served by sega.viewer_server) on a synthetic bundle, in headless chromium.

Checks: the page loads without console errors and draws the avatar where the manifest camera puts
it; the jawOpen slider changes the mouth region only; the yaw slider turns the head the right way;
clip playback changes frames over time; the decoder's ``scale`` output reaches Spark's packed splats;
the camera orbit hook turns the view; onnxruntime-web outputs equal onnxruntime (Python) outputs;
zip bundles load; the test probes are a chunk loaded only on demand; the page requests nothing
outside 127.0.0.1; the server's headers, MIME types and path checks. Software WebGL (SwiftShader)
is slow, so the page is 480x360 and the bundle small. No frame rates are asserted. Needs
``npm ci --prefix web && npm run build --prefix web`` first (the tests fail, not skip, without it)
and Debian's chromium at /usr/bin/chromium.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

from sega.testing import bundle_fixture as fx
from sega.testing.browser import launch_chromium

from sega.viewer_server import BUILD_HINT, ViewerError, find_dist_dir, serve

WIDTH, HEIGHT = 480, 360
BACKGROUND = (0x1E, 0x21, 0x27)  # the viewer's default background
DIFF = 24  # summed |RGB| difference that counts as "a different pixel"
SCREENSHOT_DIR = Path(os.environ.get("SEGA_SCREENSHOT_DIR", "/tmp"))
PARITY_TOL = 1e-4
PROBES_CHUNK = "/chunks/probes-"  # web/src/probes.js, built to dist/chunks/probes-HASH.js
PROBE_NAMES = ["renderOnce", "snapshot", "runGraphs", "readSplats", "benchGraphs", "benchSteps", "benchFrames"]


# ---- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dist_dir() -> Path:
    try:
        return find_dist_dir()
    except ViewerError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return fx.make_test_bundle(tmp_path_factory.mktemp("bundle") / "avatar")


@pytest.fixture(scope="module")
def server(bundle, dist_dir):
    srv = serve(bundle, dist_dir=dist_dir)
    yield srv
    srv.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch_chromium(pw)
        yield b
        b.close()


class PageLog:
    def __init__(self, page):
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: self.requests.append(r.url))


def open_viewer(browser, url: str):
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT}, device_scale_factor=1)
    log = PageLog(page)
    page.set_default_timeout(60_000)
    page.goto(url)
    info = page.evaluate("window.segaViewer.ready")
    return page, log, info


@pytest.fixture(scope="module")
def viewer(browser, server):
    page, log, info = open_viewer(browser, server.url)
    yield page, log, info
    page.close()


# ---- helpers ---------------------------------------------------------------------------------------


def snapshot(page) -> np.ndarray:
    url = page.evaluate("window.segaViewer.snapshot()")
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
    assert img.size == (WIDTH, HEIGHT)
    return np.asarray(img).astype(np.int32)


def save(img: np.ndarray, name: str) -> Path:
    path = SCREENSHOT_DIR / name
    Image.fromarray(img.astype(np.uint8)).save(path)
    return path


def differs(a: np.ndarray, b) -> np.ndarray:
    return np.abs(a - np.asarray(b, dtype=np.int32)).sum(axis=-1) > DIFF


def project(points, camera) -> np.ndarray:
    """World points [K, 3] -> pixel (x, y) for the manifest camera (looking at its target, y up) at WIDTH x HEIGHT."""
    pos, target, up = (np.asarray(camera[k], dtype=np.float64) for k in ("position", "target", "up"))
    fwd = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    true_up = np.cross(right, fwd)
    rel = np.asarray(points, dtype=np.float64) - pos
    depth = rel @ fwd
    f = (HEIGHT / 2) / math.tan(math.radians(camera["fov_deg"]) / 2)
    return np.stack([WIDTH / 2 + f * (rel @ right) / depth, HEIGHT / 2 - f * (rel @ true_up) / depth], axis=1)


def box(points, camera, pad: float = 0.0) -> tuple[slice, slice]:
    """(rows, cols) slices of the projected bounding box of ``points``, grown by ``pad`` pixels."""
    px = project(points, camera)
    x0, y0 = np.floor(px.min(axis=0) - pad).astype(int)
    x1, y1 = np.ceil(px.max(axis=0) + pad).astype(int)
    return slice(max(0, y0), min(HEIGHT, y1)), slice(max(0, x0), min(WIDTH, x1))


def set_slider(page, selector: str, value: float) -> None:
    """Move a range input the way a user's drag ends: set the value, fire "input"."""
    page.locator(selector).evaluate(
        "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', {bubbles: true})); }", value
    )


def reset(page) -> None:
    page.evaluate("window.segaViewer.reset()")


def eye_centroid(img: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """Mean (x, y) of the near-black eye pixels inside the box (the bluish background is excluded: eyes have r > b)."""
    sub = img[rows, cols]
    mask = (sub.max(axis=-1) < 45) & (sub[..., 0] >= sub[..., 2] + 3)
    ys, xs = np.nonzero(mask)
    assert xs.size > 20, "no eye pixels found"
    return np.array([xs.mean() + cols.start, ys.mean() + rows.start])


# ---- tests: page in the browser ---------------------------------------------------------------------------


def test_page_loads_and_draws_the_avatar(viewer, bundle):
    page, log, info = viewer
    manifest = fx.read_manifest(bundle)
    assert info["splats"] == manifest["splats"]["count"] == 3000
    assert info["dynamic"] == manifest["splats"]["dynamic_count"] == 600
    assert info["expressions"] == manifest["expressions"]["names"] and "jawOpen" in info["expressions"]
    assert sorted(info["clips"]) == sorted(Path(c).stem for c in manifest["clips"])
    assert info["crossOriginIsolated"] is True  # COOP/COEP served: ORT may use threads
    assert {"static.ply", "displacement_vae.onnx", "dynamic_decoder.onnx"} <= set(info["verifiedFiles"])
    img = snapshot(page)
    save(img, "sega_viewer_neutral.png")
    cam = manifest["camera"]
    r = fx.HEAD_RADII
    corners = np.array([[sx * r[0], sy * r[1], 0.0] for sx in (-1, 1) for sy in (-1, 1)])
    head = differs(img, BACKGROUND)
    inner = box(corners * 0.6, cam)
    assert head[inner].mean() > 0.97, "the centre of the head box is not covered by splats"
    # Nothing is drawn far outside the head (front points project a little wider than z=0: pad).
    rows, cols = box(corners, cam, pad=40)
    outside = head.copy()
    outside[rows, cols] = False
    assert outside.mean() < 0.005, "splats drawn outside the expected head box"
    assert head.mean() > 0.1
    assert log.errors == [], log.errors


def test_jaw_open_slider_moves_the_mouth_region_only(viewer, bundle):
    page, _, _ = viewer
    cam = fx.read_manifest(bundle)["camera"]
    reset(page)
    neutral = snapshot(page)
    set_slider(page, "#expr-jawOpen", 1.0)
    assert page.evaluate("window.segaViewer.getExpression()")[fx.ARKIT_NAMES.index("jawOpen")] == pytest.approx(1.0)
    jaw = snapshot(page)
    save(jaw, "sega_viewer_jawopen.png")
    z = fx.HEAD_RADII[2]
    mouth = box([[-0.05, fx.MOUTH_CENTRE_Y + 0.01, z], [0.05, fx.MOUTH_CENTRE_Y - 0.045, z]], cam)
    upper = box([[-0.06, 0.0, z], [0.06, 0.09, z]], cam)  # eyes and forehead
    changed = differs(jaw, neutral)
    assert changed[mouth].mean() > 0.15, f"jawOpen changed only {changed[mouth].mean():.3f} of the mouth region"
    assert changed[upper].mean() < 0.01, "jawOpen changed the upper face"
    reset(page)


def test_head_pose_yaw_slider_turns_the_head(viewer, bundle):
    page, _, _ = viewer
    cam = fx.read_manifest(bundle)["camera"]
    reset(page)
    neutral = snapshot(page)
    z = fx.HEAD_RADII[2]
    eyes = box([[-0.07, -0.01, z], [0.07, 0.06, z]], cam, pad=10)
    before = eye_centroid(neutral, *eyes)
    set_slider(page, "#pose-yaw", 30)
    pose = page.evaluate("window.segaViewer.getHeadPose()")
    assert pose[1] == pytest.approx(math.radians(30), abs=1e-3) and abs(pose[0]) < 1e-6 and abs(pose[2]) < 1e-6
    turned = snapshot(page)
    save(turned, "sega_viewer_yaw30.png")
    after = eye_centroid(turned, *eyes)
    # +yaw turns the face to the subject's left (+X), which the frontal camera shows on the image right.
    assert after[0] - before[0] > 15, f"eyes moved {after - before} px"
    assert differs(turned, neutral).mean() > 0.02
    reset(page)


def test_clip_playback_changes_frames_over_time(viewer):
    page, _, info = viewer
    assert "talk" in info["clips"]
    reset(page)
    page.evaluate("window.segaViewer.playClip('talk', {loop: true})")
    frames0 = page.evaluate("window.segaViewer.frameCount")
    first = snapshot(page)
    t0 = page.evaluate("window.segaViewer.clipTime")
    page.wait_for_timeout(700)
    second = snapshot(page)
    t1 = page.evaluate("window.segaViewer.clipTime")
    assert page.evaluate("window.segaViewer.playing")
    assert page.evaluate("window.segaViewer.frameCount") > frames0 + 2
    assert t1 > t0
    assert differs(first, second).mean() > 0.002, "the animated clip drew the same image twice"
    scrub = page.locator("#clip-time").text_content()
    assert "/" in scrub
    page.evaluate("window.segaViewer.pauseClip()")
    reset(page)


def test_play_and_label_parameters_start_a_clip_with_the_face_in_view(browser, server, bundle):
    """?play=1 plays the first clip by itself once the bundle is loaded; ?label= names the bundle in the
    panel (``sega view`` passes the bundle's file name); panel=0 keeps the panel out of the face."""
    page, log, info = open_viewer(browser, server.url + "&play=1&panel=0")
    try:
        page.wait_for_function("window.segaViewer.playing && window.segaViewer.clipTime > 0.2", timeout=20_000)
        assert page.evaluate("window.segaViewer.clipNames")[0] == page.evaluate("document.querySelector('#clip-select').value")
        assert "collapsed" in page.locator("#panel").get_attribute("class")
        assert page.locator("#bundle-info").text_content().startswith(bundle.name), page.locator("#bundle-info").text_content()
        assert log.errors == []
    finally:
        page.close()


def test_panel_shows_whole_expression_names_and_the_stats_clear_the_header(browser, server):
    """With the panel open, no expression name is cut (the longest ARKit / ICT ones, "mouthLowerDown_L",
    fit); with it closed, the stats line ends before the panel's header."""
    page = browser.new_page(viewport={"width": 800, "height": 600}, device_scale_factor=1)
    page.set_default_timeout(60_000)
    try:
        page.goto(server.url + "&panel=1")
        page.evaluate("window.segaViewer.ready")
        page.evaluate("document.querySelectorAll('#expressions details').forEach(d => d.open = true)")
        cut = page.evaluate("[...document.querySelectorAll('.slider span')].filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)")
        assert cut == [], cut
        longest = page.evaluate("(() => { const s = document.createElement('span'); s.textContent = 'mouthLowerDown_L';"
                                " const row = document.querySelector('.slider'); row.replaceChild(s, row.firstChild);"
                                " return [s.scrollWidth, s.clientWidth]; })()")  # fmt: skip
        assert longest[0] <= longest[1] + 1, longest
        page.click("#toggle-panel")
        page.wait_for_function("document.querySelector('#stats').textContent.length > 0")
        stats, header = (page.locator(sel).bounding_box() for sel in ("#stats", "#panel header"))
        assert stats["x"] + stats["width"] <= header["x"] or stats["y"] >= header["y"] + header["height"], (stats, header)
    finally:
        page.close()


def test_embedding_page_drives_the_viewer_with_postmessage(browser, server):
    """The parent page (the app) sets expressions and the head's yaw through postMessage (web/src/embed.js);
    the clip pauses for it. Messages from anywhere but the parent are ignored."""
    page = browser.new_page(viewport={"width": WIDTH + 40, "height": HEIGHT + 40})
    page.set_default_timeout(60_000)
    try:
        page.set_content(f"<iframe id='v' src='{server.url}&play=1&panel=0' width='{WIDTH}' height='{HEIGHT}'></iframe>")
        frame = page.wait_for_selector("#v").content_frame()
        frame.wait_for_function("window.segaViewer && window.segaViewer.playing", timeout=30_000)
        jaw = "segaViewer.getExpression()[segaViewer.expressionNames.indexOf('jawOpen')]"
        page.evaluate("document.querySelector('#v').contentWindow.postMessage({sega: 'set', expressions: {jawOpen: 0.8, noSuchName: 1},"
                      " yawDeg: 20, pitchDeg: 0, rollDeg: 0}, '*')")  # fmt: skip
        frame.wait_for_function(f"Math.abs({jaw} - 0.8) < 1e-4", timeout=10_000)
        pose = frame.evaluate("segaViewer.getHeadPose()")
        assert abs(pose[1] - math.radians(20)) < 1e-4 and abs(pose[0]) < 1e-6 and abs(pose[2]) < 1e-6, pose
        assert not frame.evaluate("segaViewer.playing")
        assert frame.locator("#expr-jawOpen").input_value().startswith("0.8")  # the panel follows
        frame.evaluate("window.postMessage({sega: 'set', expressions: {jawOpen: 0.1}}, '*')")  # not from the parent
        page.wait_for_timeout(500)
        assert abs(frame.evaluate(jaw) - 0.8) < 1e-4
        page.evaluate("document.querySelector('#v').contentWindow.postMessage({sega: 'play', clip: true}, '*')")
        frame.wait_for_function("window.segaViewer.playing", timeout=10_000)
    finally:
        page.close()


def test_scale_output_resizes_the_dynamic_splats(viewer, bundle):
    """The decoder's dynamic_scales (``updates: "scale"``, linear std devs) end up in Spark's packed splats."""
    page, _, _ = viewer
    manifest = fx.read_manifest(bundle)
    assert manifest["frame"]["outputs"]["dynamic_scales"]["updates"] == "scale"
    names, d = manifest["expressions"]["names"], manifest["splats"]["dynamic_count"]
    static = fx.read_static_splats(bundle)
    dyn = static["extra"][fx.DYNAMIC_INDEX_PROPERTY]
    splat_of = np.empty(d, dtype=np.int64)
    splat_of[dyn[dyn >= 0]] = np.flatnonzero(dyn >= 0)
    read = "(i) => window.segaViewer.readSplats(i, true)"
    reset(page)
    neutral = page.evaluate(read, list(range(d)))
    assert [s["index"] for s in neutral] == splat_of.tolist()
    expression = np.zeros(len(names), dtype=np.float32)
    expression[names.index(fx.SCALE_EXPRESSION)] = 1.0
    page.evaluate("(n) => window.segaViewer.setExpression(n, 1)", fx.SCALE_EXPRESSION)
    grown = page.evaluate(read, list(range(d)))
    ref = fx.reference_outputs(bundle, expression, np.zeros(6))["dynamic_scales"].astype(np.float64)
    ref0 = static["scales"][splat_of].astype(np.float64)
    got, got0 = np.array([s["scales"] for s in grown]), np.array([s["scales"] for s in neutral])
    # Spark keeps ln(scale) in 8 bits over [-12, 9]: half a step is 21 / 254 / 2 = 0.041.
    assert np.abs(np.log(got0) - np.log(ref0)).max() <= 0.045
    assert np.abs(np.log(got) - np.log(ref)).max() <= 0.045
    grew = ref[:, 0] / ref0[:, 0] > 1.5
    assert grew.sum() >= 10, "the fixture's scale expression grows too few splats"
    assert (got[grew, 0] / got0[grew, 0] > 1.3).all()
    same = np.isclose(ref, ref0, rtol=1e-6).all(axis=1)
    assert same.sum() >= 100 and np.array_equal(got[same], got0[same])  # the eye splats
    reset(page)


def test_orbit_camera_hook_turns_the_view(viewer):
    """orbitCamera(90) looks at the (narrower than deep) ellipsoid head from its side: a wider silhouette."""
    page, _, _ = viewer
    reset(page)

    def width(img):
        cols = np.flatnonzero(differs(img, BACKGROUND).any(axis=0))
        return cols.max() - cols.min()

    front = width(snapshot(page))
    page.evaluate("window.segaViewer.orbitCamera(90, 0, 1)")
    side = snapshot(page)
    save(side, "sega_viewer_side.png")
    ratio = width(side) / front
    assert 1.1 < ratio < 1.4, ratio  # HEAD_RADII z / x = 1.2
    reset(page)
    assert width(snapshot(page)) == pytest.approx(front, abs=2)


def test_ort_web_matches_onnxruntime_python(viewer, bundle):
    page, _, _ = viewer
    e = len(fx.read_manifest(bundle)["expressions"]["names"])
    rng = np.random.default_rng(3)
    cases = [
        (np.zeros(e), np.zeros(6)),
        (rng.uniform(0, 1, e), np.concatenate([rng.normal(0, 0.3, 3), rng.normal(0, 0.02, 3)])),
        (np.eye(e)[fx.ARKIT_NAMES.index("jawOpen")], np.array([0.0, 0.5, 0.0, 0.01, 0.0, 0.0])),
    ]
    for expression, pose in cases:
        expression, pose = expression.astype(np.float32), pose.astype(np.float32)
        web = page.evaluate("([e, p]) => window.segaViewer.runGraphs(e, p)", [expression.tolist(), pose.tolist()])
        ref = fx.reference_outputs(bundle, expression, pose)
        for name in ("expression_feature", "dynamic_means", "dynamic_quats", "dynamic_scales", "dynamic_colors", "dynamic_opacities", "head_matrix"):
            got = np.asarray(web[name]["data"], dtype=np.float64).reshape(web[name]["dims"])
            assert got.shape == ref[name].shape, name
            err = np.abs(got - ref[name]).max()
            assert err <= PARITY_TOL, f"{name}: max |ORT-web - onnxruntime| = {err}"


def test_zip_bundle_loads_and_runs(browser, bundle, dist_dir, tmp_path):
    zip_path = fx.zip_bundle(bundle, tmp_path / "avatar.zip", prefix="avatar/")
    with serve(zip_path, dist_dir=dist_dir) as srv:
        with urllib.request.urlopen(srv.origin + "/bundle.zip") as res:
            assert res.headers["Content-Type"] == "application/zip" and res.read() == zip_path.read_bytes()
        # The page reads the zip itself (fflate), not the server's extracted members.
        page, log, info = open_viewer(browser, f"{srv.origin}/?bundle=/bundle.zip&threads=1&graphopt=disabled")
        try:
            assert info["splats"] == 3000 and info["threads"] == 1
            assert info["graphOptimizationLevel"] == "disabled"  # the parity check below holds without ORT's optimiser too
            assert "dynamic_decoder.onnx" in info["verifiedFiles"]
            assert not any("/bundle/" in u for u in log.requests)
            # The test / benchmark probes are a separate chunk, fetched only when asked for.
            assert not any(PROBES_CHUNK in u for u in log.requests)
            assert page.evaluate("window.segaViewer.probes().then((p) => Object.keys(p).sort())") == sorted(PROBE_NAMES)
            assert any(PROBES_CHUNK in u for u in log.requests)
            img = snapshot(page)
            assert differs(img, BACKGROUND).mean() > 0.1
            e = len(info["expressions"])
            web = page.evaluate("([e, p]) => window.segaViewer.runGraphs(e, p)", [[0.5] * e, [0.1, 0, 0, 0, 0, 0]])
            ref = fx.reference_outputs(bundle, np.full(e, 0.5), [0.1, 0, 0, 0, 0, 0])
            assert np.abs(np.asarray(web["dynamic_means"]["data"]) - ref["dynamic_means"].ravel()).max() <= PARITY_TOL
            # The same zip through the page's "Open .zip" file input (the drag-and-drop code path).
            page.set_input_files("#open-file", str(zip_path))
            page.wait_for_function("window.segaViewer.lastLoad() && window.segaViewer.info().label === 'avatar.zip'")
            loaded = page.evaluate("window.segaViewer.lastLoad()")
            assert loaded and loaded["label"] == "avatar.zip" and loaded["splats"] == 3000
            assert differs(snapshot(page), BACKGROUND).mean() > 0.1
            assert log.errors == []
        finally:
            page.close()


def test_component_major_outputs_update_the_same_splats(browser, viewer, bundle, dist_dir, tmp_path):
    """A bundle whose graph writes [C, D] outputs (``"layout": "component_major"``, what sega exports)
    ends with the same packed splats as the same bundle written splat-major, for a moving expression."""
    rows = fx.make_test_bundle(tmp_path / "rows", component_major=True)
    assert fx.read_manifest(rows)["frame"]["outputs"]["dynamic_means"] == {"shape": [3, 600], "updates": "center", "layout": "component_major"}
    d = fx.read_manifest(bundle)["splats"]["dynamic_count"]
    read = "(i) => window.segaViewer.readSplats(i, true)"
    weights = {"jawOpen": 1.0, fx.SCALE_EXPRESSION: 0.7, "eyeBlink_L": 1.0}
    page, _, _ = viewer
    reset(page)
    for name, w in weights.items():
        page.evaluate("([n, w]) => window.segaViewer.setExpression(n, w)", [name, w])
    want = page.evaluate(read, list(range(d)))
    reset(page)
    with serve(rows, dist_dir=dist_dir) as srv:
        other, log, _ = open_viewer(browser, srv.url + "&probes=1")
        try:
            assert any(PROBES_CHUNK in u for u in log.requests)  # ?probes=1: loaded at start-up
            for name, w in weights.items():
                other.evaluate("([n, w]) => window.segaViewer.setExpression(n, w)", [name, w])
            got = other.evaluate(read, list(range(d)))
            assert log.errors == []
        finally:
            other.close()
    moved = sum(a["center"] != b["center"] for a, b in zip(want, page.evaluate(read, list(range(d)))))
    assert moved > 50, "the expression should move the fixture's mouth splats"
    assert got == want


def test_damaged_bundle_is_reported_not_drawn(browser, bundle, dist_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["files"]["static.ply"] = "0" * 64
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with serve(bad, dist_dir=dist_dir, check=False) as srv:  # the server's own check would refuse it first
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        try:
            page.goto(srv.url)
            msg = page.evaluate("window.segaViewer.ready.then(() => 'loaded', (e) => String(e.message))")
            assert "SHA-256 mismatch" in msg and "static.ply" in msg
            assert "SHA-256" in page.locator("#message").text_content()
        finally:
            page.close()


def test_no_console_errors_and_only_local_requests(viewer, server):
    """Runs last on the shared page: everything the earlier tests did left no error and fetched nothing remote."""
    page, log, _ = viewer
    page.evaluate("window.segaViewer.renderOnce()")
    assert log.errors == [], log.errors
    assert log.requests, "no requests recorded"
    remote = [u for u in log.requests if not u.startswith((server.origin + "/", "data:", "blob:" + server.origin))]
    assert remote == [], remote
    assert server.origin.startswith("http://127.0.0.1:")
    wasm = [u for u in log.requests if u.endswith(".wasm")]
    assert wasm and all("/ort/" in u for u in wasm)


# ---- tests: the server alone ----------------------------------------------------------------------------------


def _get(url: str):
    try:
        with urllib.request.urlopen(url) as res:
            return res.status, dict(res.headers), res.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_server_headers_and_mime_types(server):
    for path, ctype in [
        ("/", "text/html"),
        ("/viewer.js", "text/javascript"),
        ("/ort/ort-wasm-simd-threaded.wasm", "application/wasm"),
        ("/ort/ort-wasm-simd-threaded.mjs", "text/javascript"),
        ("/bundle/manifest.json", "application/json"),
        ("/bundle/dynamic_decoder.onnx", "application/octet-stream"),
        ("/bundle/static.ply", "application/octet-stream"),
    ]:
        status, headers, body = _get(server.origin + path)
        assert status == 200, path
        assert headers["Content-Type"].startswith(ctype), (path, headers["Content-Type"])
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert int(headers["Content-Length"]) == len(body)
    assert server.url.startswith("http://127.0.0.1:") and "bundle=/bundle/" in server.url


def test_bare_address_redirects_to_the_served_bundle(server, bundle):
    """Opening the server's bare address (or index.html without a bundle) lands on the page with this
    bundle, never on "no bundle loaded"; other parameters are kept."""
    import http.client

    for path, kept in (("/", None), ("/index.html?threads=1", "threads=1")):
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", path)
        res = conn.getresponse()
        res.read()
        conn.close()
        assert res.status == 302, (path, res.status)
        location = res.getheader("Location")
        assert location.startswith("/?bundle=/bundle/") and f"label={bundle.name}" in location, location
        assert kept is None or kept in location
    assert _get(server.origin + "/?bundle=/bundle/")[0] == 200


def test_server_rejects_path_traversal(server, bundle):
    secret = bundle.parent / "secret.txt"
    secret.write_text("not for the browser")
    for path in [
        "/bundle/../secret.txt",
        "/bundle/%2e%2e/secret.txt",
        "/bundle/..%2fsecret.txt",
        "/bundle/clips/../../secret.txt",
        "/bundle//etc/passwd",
        "/bundle/..%5csecret.txt",
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/bundle.zip",  # the bundle is a folder here
        "/bundle/missing.json",
    ]:
        import http.client

        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", path)  # raw path: no client-side normalisation
        res = conn.getresponse()
        body = res.read()
        conn.close()
        assert res.status == 404, (path, res.status)
        assert b"not for the browser" not in body and b"root:" not in body


def test_server_refuses_missing_build_and_bad_bundles(tmp_path, bundle):
    with pytest.raises(ViewerError) as err:
        serve(bundle, dist_dir=tmp_path / "nowhere")
    assert BUILD_HINT in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "index.html").write_text("x")
    (empty / "viewer.js").write_text("x")
    with pytest.raises(ViewerError, match="manifest.json"):
        serve(tmp_path, dist_dir=empty)
    not_zip = tmp_path / "x.zip"
    not_zip.write_bytes(b"nope")
    with pytest.raises(ViewerError, match="zip"):
        serve(not_zip, dist_dir=empty)
    with pytest.raises(ViewerError, match="not found"):
        serve(tmp_path / "missing", dist_dir=empty)
