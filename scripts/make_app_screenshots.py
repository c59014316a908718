"""Screenshots of the app's first-time path (headless Chromium), at 1280 and 800 px wide.

Starts ``python app.py`` on 127.0.0.1 (free port), opens it in headless Chromium (Python playwright,
``/usr/bin/chromium`` or $SEGA_CHROMIUM; playwright never downloads a browser here), and takes the path
that ``tests/test_app_browser.py`` asserts:

* docs/app_no_photo.png   Build pressed with no photo: one message, on the photo (1280x900 window)
* docs/app_building.png   the example building: the button locked, progress on the previews (1280x900)
* docs/app_built.png      after the build: status, previews, turntable, splat preview, downloads, the
                          sliders at the fitted expression and the embedded viewer playing a clip (1280)
* docs/app_sliders.png    jaw open and brows up moved on the server's sliders: the server's re-render
                          and the embedded web viewer both show them (1280)
* docs/app_built_800.png  the built page in an 800 px window (downloads and previews wrap)

Each PNG is reduced to a palette so it stays under 400 KB. Requests the page makes to hosts other
than 127.0.0.1 are printed (expected: none).

Run: ``.venv/bin/python scripts/make_app_screenshots.py [--out docs]`` from the repository root.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # Debian's chromium, never a downloaded one

from sega.app.ui import NO_PHOTO
from sega.testing import AppProcess, launch_chromium

REPO = Path(__file__).resolve().parents[1]
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 800, "height": 900}
MAX_BYTES = 400_000
BUILD_TIMEOUT_MS = 300_000
VIEWER_SETTLE_S = 6.0  # the embedded viewer loads the bundle and starts its clip (SwiftShader is slow)


def save_small_png(png: bytes, path: Path, max_width: int = 1100) -> int:
    """Downscale to max_width and quantise to 256 colours (fewer if needed); returns the file size."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > max_width:
        img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
    for colors in (256, 128, 64):
        img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES:
            break
    return path.stat().st_size


def wait_for_viewer_clip(page, timeout_s: float = 60.0) -> bool:
    """Until the embedded viewer plays a clip (True) or timeout_s passes (False)."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        frame = next((f for f in page.frames if "bundle=" in f.url), None)
        try:
            if frame is not None and frame.evaluate("() => !!(window.segaViewer && segaViewer.playing && segaViewer.clipTime > 0.2)"):
                return True
        except Exception:  # still loading
            pass
        page.wait_for_timeout(500)  # (not time.sleep: playwright learns of the new frame while it waits)
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="sega-shots-"))
    args.out.mkdir(parents=True, exist_ok=True)
    external: list[str] = []
    shots: dict[str, bytes] = {}
    with AppProcess(args=["--work-dir", str(tmp / "work")], log_path=tmp / "app.log") as proc, sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport=WIDE)
        page.set_default_timeout(60_000)
        page.on("request", lambda r: external.append(r.url) if urlsplit(r.url).hostname not in ("127.0.0.1", "localhost", None) and not r.url.startswith(("data:", "blob:")) else None)
        page.goto(proc.url, wait_until="load")
        page.wait_for_selector("#build")
        page.click("#build")
        page.wait_for_selector(f"text={NO_PHOTO}", timeout=10_000)
        shots["no_photo"] = page.screenshot()
        page.locator(".gallery-item, [data-testid=examples] button, .examples button").first.click()
        page.wait_for_selector("#photo img", timeout=30_000)
        page.click("#build")
        t0 = time.perf_counter()
        page.wait_for_timeout(6000)  # into the optimisation stage
        page.evaluate("window.scrollTo(0, 0)")  # (playwright scrolled to the button it clicked)
        shots["building"] = page.screenshot()
        page.wait_for_function("document.querySelector('#status') && document.querySelector('#status').innerText.includes('Built')", timeout=BUILD_TIMEOUT_MS)
        print(f"build finished {time.perf_counter() - t0:.1f} s after the click")
        print("embedded viewer playing:", wait_for_viewer_clip(page))
        page.wait_for_timeout(VIEWER_SETTLE_S * 1000)
        shots["built"] = page.screenshot(full_page=True)
        page.locator("#slider-jawOpen input[type=range]").fill("0.8")
        page.locator("#slider-browInnerUp input[type=range]").fill("0.8")
        page.locator("#slider-browInnerUp input[type=range]").dispatch_event("pointerup")  # the server re-renders on release
        page.wait_for_timeout(8000)
        row = page.locator("#viewer").locator("xpath=ancestor::div[contains(@class,'row')][1]")
        shots["sliders"] = row.screenshot() if row.count() else page.screenshot(full_page=True)
        page.set_viewport_size(NARROW)
        page.wait_for_timeout(2000)
        shots["built_800"] = page.screenshot(full_page=True)
        browser.close()
    for name, png in shots.items():
        path = args.out / f"app_{name}.png"
        size = save_small_png(png, path, max_width=1100 if name != "built_800" else 800)
        print(f"wrote {path} ({size / 1000:.0f} KB)")
    print("requests to other hosts:", external or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
