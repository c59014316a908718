"""The app's first-time path in headless chromium, as a new user takes it (issue: what a first-time user sees).

One app process (``python app.py``) and one page at 1280x900: press Build with no photo (one message on
the photo, no error on the outputs, the button still usable), pick the example and build it (the
button is locked while it builds, the status heads the outputs and calls the example's small face what
it is), then the embedded web viewer plays a clip by itself with its panel closed, the server's sliders
read the avatar's fitted expression and move the web viewer's face too, and at 800 px the download
names and the previews fit. Software WebGL (SwiftShader) is slow: waits are generous, no frame rates.
Screenshots of these states: ``scripts/make_app_screenshots.py``.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest

pytestmark = pytest.mark.browser

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

from sega.app.ui import BUILD_LABEL, BUILDING_LABEL, NO_PHOTO, SLIDER_EXPRESSIONS, slider_channels  # noqa: E402
from sega.testing import AppProcess, launch_chromium  # noqa: E402

VIEWPORT = {"width": 1280, "height": 900}
NARROW = {"width": 800, "height": 900}
BUILD_TIMEOUT_MS = 300_000  # a fast build is ~25 s alone; CI machines may be busier
PLAY_WITHIN_S = 30.0  # the embedded viewer loads the bundle (ONNX on wasm, SwiftShader) and starts its clip


@pytest.fixture(scope="module")
def app(tmp_path_factory, ict_dir):
    work = tmp_path_factory.mktemp("app-browser")
    env = {"SEGA_ICT_DIR": str(ict_dir), "GRADIO_TEMP_DIR": str(work / "gradio-uploads")}
    with AppProcess(args=["--work-dir", str(work)], extra_env=env, log_path=work.parent / "app-browser.log") as proc:
        proc.work_dir = work
        yield proc


@pytest.fixture(scope="module")
def page(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        pg = browser.new_page(viewport=VIEWPORT)
        pg.set_default_timeout(60_000)
        pg.goto(app.url)
        pg.wait_for_selector("#build")
        yield pg
        browser.close()


def _error_badges(page) -> int:
    """Gradio's red "Error" badges on output boxes (its status trackers)."""
    return page.locator(".error").filter(has_text="Error").count()


def _shown_texts(page, text: str) -> list[str]:
    """Visible elements that show ``text`` themselves (the innermost ones; screen-reader-only copies excluded)."""
    return page.evaluate("""(text) => [...document.querySelectorAll('body *')].filter(e => {
        if (!e.textContent.includes(text) || [...e.children].some(c => c.textContent.includes(text))) return false;
        const r = e.getBoundingClientRect(), st = getComputedStyle(e);
        return r.width > 2 && r.height > 2 && st.visibility !== 'hidden' && st.opacity !== '0' && e.checkVisibility();
    }).map(e => e.tagName + '.' + e.className)""", text)


def _viewer_frame(page):
    """The embedded web viewer's frame (the iframe of the build's bundle), or None."""
    return next((f for f in page.frames if "bundle=" in f.url), None)


@pytest.fixture(scope="module")
def built(page):
    """The missing-photo check first (it needs the page before any photo), then the example built."""
    page.click("#build")
    page.wait_for_selector(f"text={NO_PHOTO}", timeout=10_000)
    missing = {"messages": _shown_texts(page, NO_PHOTO), "badges": _error_badges(page),
               "enabled": page.locator("#build").is_enabled()}  # fmt: skip
    page.locator(".gallery-item, [data-testid=examples] button, .examples button").first.click()  # the example photo
    page.wait_for_selector("#photo img", timeout=30_000)
    t0 = time.perf_counter()
    page.click("#build")
    locked = []
    while time.perf_counter() - t0 < 5.0 and not locked:
        if page.locator("#build").is_disabled():
            locked.append(page.locator("#build").inner_text())
        page.wait_for_timeout(100)
    page.wait_for_function("document.querySelector('#status') && document.querySelector('#status').innerText.includes('Built')",
                           timeout=BUILD_TIMEOUT_MS)  # fmt: skip
    page.wait_for_function("!document.querySelector('#build').disabled", timeout=10_000)
    return {"missing": missing, "locked": locked, "build_s": time.perf_counter() - t0}


def test_missing_photo_shows_one_message_and_nothing_else(built):
    m = built["missing"]
    assert len(m["messages"]) == 1, m
    assert m["badges"] == 0, m  # no "Error" on the seven output boxes
    assert m["enabled"], "the Build button must stay usable after a refused click"


def test_build_button_is_locked_while_building(page, built):
    assert built["locked"] == [BUILDING_LABEL], built
    assert page.locator("#build").is_enabled() and page.locator("#build").inner_text() == BUILD_LABEL
    assert _error_badges(page) == 0


def test_status_is_in_view_and_the_example_is_not_called_blurry(page, built):
    status = page.locator("#status")
    text = status.inner_text()
    assert "Built" in text and "blurry" not in text and "The example is a 512 px photo" in text, text
    top = status.bounding_box()["y"]
    assert top < VIEWPORT["height"] - 40, f"the status starts at y={top}, below a 900 px window"


def test_embedded_viewer_plays_a_clip_by_itself_with_the_face_in_view(page, built):
    deadline = time.perf_counter() + PLAY_WITHIN_S
    state = None
    while time.perf_counter() < deadline:
        frame = _viewer_frame(page)
        if frame is not None:
            try:
                state = frame.evaluate("() => window.segaViewer && ({playing: segaViewer.playing, t: segaViewer.clipTime,"
                                       " frames: segaViewer.frameCount, info: document.querySelector('#bundle-info').textContent,"
                                       " collapsed: document.querySelector('#panel').classList.contains('collapsed')})")  # fmt: skip
            except Exception:  # the frame is still loading
                state = None
            if state and state["playing"] and state["t"] > 0.2:
                break
        page.wait_for_timeout(500)
    assert state and state["playing"] and state["t"] > 0.2, f"no clip playing {PLAY_WITHIN_S} s after the build: {state}"
    assert state["collapsed"], "the control panel covers the face"
    assert state["info"].startswith("bundle.zip"), state["info"]  # not the internal token path
    t1 = frame.evaluate("segaViewer.clipTime")
    page.wait_for_timeout(800)
    assert frame.evaluate("segaViewer.clipTime") != t1  # still moving


def test_sliders_start_at_the_fitted_expression_and_drive_the_web_viewer(page, app, built):
    from sega.avatar import Avatar
    from sega.headmodel.ict import load_ict

    path = next((app.work_dir / "sessions").rglob("avatar.npz"))
    avatar = Avatar.load(path, load_ict())
    names = list(avatar.head_model.expression_names)
    for name, _ in SLIDER_EXPRESSIONS:
        shown = float(page.locator(f"#slider-{name} input[type=number]").input_value())
        channels = slider_channels(name, names)
        assert channels, f"slider {name} drives nothing on {avatar.head_model.name}"
        fitted = min(max(float(np.mean([avatar.expression[names.index(c)] for c in channels])), 0.0), 1.0)
        assert abs(shown - fitted) <= 0.01, (name, shown, fitted)
    assert float(page.locator("#slider-yaw input[type=number]").input_value()) == 0
    frame = _viewer_frame(page)
    page.locator("#slider-jawOpen input[type=range]").fill("0.9")
    page.locator("#slider-browInnerUp input[type=range]").fill("0.7")  # ICT splits it: browInnerUp_L / _R
    page.locator("#slider-yaw input[type=range]").fill("30")
    deadline = time.perf_counter() + 10.0
    while time.perf_counter() < deadline:
        jaw = frame.evaluate("segaViewer.getExpression()[segaViewer.expressionNames.indexOf('jawOpen')]")
        pose = frame.evaluate("segaViewer.getHeadPose()")
        if abs(jaw - 0.9) < 1e-3 and abs(pose[1] - math.radians(30)) < 1e-3:
            break
        page.wait_for_timeout(200)
    assert abs(jaw - 0.9) < 1e-3, jaw
    brows = frame.evaluate("['browInnerUp_L', 'browInnerUp_R'].map(n => segaViewer.getExpression()[segaViewer.expressionNames.indexOf(n)])")
    assert np.allclose(brows, 0.7, atol=1e-3), brows
    assert abs(pose[1] - math.radians(30)) < 1e-3 and np.allclose([pose[0], pose[2]], 0, atol=1e-6), pose
    assert not frame.evaluate("segaViewer.playing")  # the slider took over from the clip


def test_downloads_and_previews_fit_an_800_px_window(page, built):
    page.set_viewport_size(NARROW)
    page.wait_for_timeout(1000)
    for sel, name in (("#bundle-file", "bundle"), ("#glb-file", "avatar")):
        box = page.locator(sel)
        assert name in box.inner_text()
        cut = box.evaluate("el => [...el.querySelectorAll('*')].filter(e => e.children.length === 0 && e.textContent.trim()"
                           " && e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.trim())")  # fmt: skip
        assert cut == [], f"{sel}: text cut at 800 px: {cut}"
    grid = page.locator("#previews .grid-container")
    over = grid.evaluate("el => el.scrollWidth - el.clientWidth")
    assert over <= 1, f"the previews overflow their box by {over} px at 800 px"
    page.set_viewport_size(VIEWPORT)
