"""Screenshots of the Gradio app before, during and after a fast build (headless Chromium).

Starts ``python app.py`` on 127.0.0.1 (free port), opens it in headless Chromium (Python playwright,
``/usr/bin/chromium`` or $SEGA_CHROMIUM; playwright never downloads a browser here), uploads the
astronaut photo (``skimage.data.astronaut()``), keeps the fast preset and writes:

* docs/app_before.png  photo uploaded, nothing built yet
* docs/app_during.png  the build running (progress through the stages)
* docs/app_after.png   previews, turntable, splat, downloads, sliders and the embedded web viewer

Each PNG is reduced to a 256-colour palette so it stays under 400 KB. Requests the page makes to
hosts other than 127.0.0.1 are printed (expected: none).

Run: ``.venv/bin/python scripts/make_app_screenshots.py [--out docs]`` from the repository root (the package
is installed editable, so ``import sega`` works without any path set-up).
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

from sega.testing import AppProcess, launch_chromium

REPO = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1280, "height": 1500}
MAX_BYTES = 400_000


def save_small_png(png: bytes, path: Path, max_width: int = 1100) -> int:
    """Downscale to max_width and quantise to 256 colours; returns the file size."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > max_width:
        img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
    for colors in (256, 128, 64):
        img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES:
            break
    return path.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs")
    ap.add_argument("--during-s", type=float, default=10.0, help="seconds after clicking Build for the 'during' shot")
    args = ap.parse_args()

    from PIL import Image
    from playwright.sync_api import sync_playwright
    from skimage import data

    tmp = Path(tempfile.mkdtemp(prefix="sega-shots-"))
    photo = tmp / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    args.out.mkdir(parents=True, exist_ok=True)
    external: list[str] = []
    with AppProcess(args=["--work-dir", str(tmp / "work")], log_path=tmp / "app.log") as proc, sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport=VIEWPORT)
        page.on("request", lambda r: external.append(r.url) if urlsplit(r.url).hostname not in ("127.0.0.1", "localhost", None) and not r.url.startswith(("data:", "blob:")) else None)
        page.goto(proc.url, wait_until="load")
        page.wait_for_selector("#build", timeout=60_000)
        page.set_input_files("#photo input[type=file]", str(photo))
        page.wait_for_selector("#photo img", timeout=30_000)
        time.sleep(1.0)
        shots = {}
        shots["before"] = page.screenshot(full_page=True)
        page.click("#build")
        t0 = time.perf_counter()
        time.sleep(args.during_s)
        shots["during"] = page.screenshot(full_page=True)
        page.wait_for_function("document.querySelector('#status') && document.querySelector('#status').innerText.includes('Built')", timeout=240_000)
        print(f"build finished {time.perf_counter() - t0:.1f} s after the click")
        # Let the embedded viewer load the bundle and draw (SwiftShader WebGL is slow).
        frame = page.frame_locator("#viewer iframe")
        try:
            frame.locator("#bundle-info").filter(has_not_text="no bundle loaded").wait_for(state="attached", timeout=60_000)
        except Exception as err:  # still take the shot; say what happened
            print(f"viewer did not report a loaded bundle: {err}")
        time.sleep(8.0)
        shots["after"] = page.screenshot(full_page=True)
        browser.close()
    for name, png in shots.items():
        path = args.out / f"app_{name}.png"
        size = save_small_png(png, path)
        print(f"wrote {path} ({size / 1000:.0f} KB)")
    print("requests to other hosts:", external or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
