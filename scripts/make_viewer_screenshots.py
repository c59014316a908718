"""Screenshots of the web viewer playing a bundle, taken with headless chromium (docs/viewer_*.png).

Serves the built viewer (web/dist) and the bundle with ``sega.viewer_server.serve`` (as ``sega view`` does),
opens the page with the control panel collapsed, and saves the canvas (``segaViewer.snapshot()``:
the current inputs are run through the bundle's graphs, drawn, sorted and drawn again) for:

* ``viewer_neutral.png``: all expression weights 0, head pose 0, the manifest camera;
* ``viewer_jawopen.png``: jawOpen = 1;
* ``viewer_smile.png``: mouthSmile_L = mouthSmile_R = 1;
* ``viewer_side.png``: neutral, camera orbited ``--side-deg`` degrees (default 70) about the target
  towards the subject's left.

Run from the repository root after ``npm ci --prefix web && npm run build --prefix web``::

    .venv/bin/python scripts/make_viewer_screenshots.py BUNDLE [--out docs] [--size 512]

BUNDLE is a bundle folder or .zip (``export/bundle.py``). Uses Debian's chromium (/usr/bin/chromium,
or $SEGA_CHROMIUM) through Python playwright (``sega.testing.launch_chromium``); WebGL is
software-rendered (SwiftShader), which takes a few seconds per image. Fails if the page logs an error.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
from pathlib import Path

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # Debian's chromium, never a downloaded one

from PIL import Image

from sega.testing import launch_chromium
from sega.viewer_server import serve

ROOT = Path(__file__).resolve().parents[1]

# name -> (expression weights, camera azimuth in degrees or None for the manifest camera)
SHOTS = {
    "neutral": ({}, None),
    "jawopen": ({"jawOpen": 1.0}, None),
    "smile": ({"mouthSmile_L": 1.0, "mouthSmile_R": 1.0}, None),
    "side": ({}, "side"),
}
MAX_BYTES = 300_000


def save_png(data_url: str, path: Path) -> int:
    img = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")
    img.save(path, optimize=True)
    if path.stat().st_size > MAX_BYTES:  # rarely: fall back to a 256-colour palette
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path.stat().st_size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path, help="bundle folder or .zip")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="output folder (default docs/)")
    ap.add_argument("--prefix", default="viewer_", help="file name prefix (default viewer_)")
    ap.add_argument("--size", type=int, default=512, help="square page size in pixels (default 512)")
    ap.add_argument("--side-deg", type=float, default=70.0, help="camera orbit for the side view, degrees (default 70)")
    ap.add_argument("--bg", default="1e2127", help="background colour RRGGBB (default the viewer's)")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    srv = serve(args.bundle)
    try:
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                page = browser.new_page(viewport={"width": args.size, "height": args.size}, device_scale_factor=1)
                page.set_default_timeout(300_000)
                page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
                page.goto(f"{srv.url}&panel=0&bg={args.bg}")
                info = page.evaluate("window.segaViewer.ready")
                print(f"{args.bundle}: {info['splats']} splats ({info['dynamic']} dynamic), {len(info['expressions'])} expressions")
                for name, (weights, view) in SHOTS.items():
                    missing = [k for k in weights if k not in info["expressions"]]
                    if missing:
                        raise SystemExit(f"the bundle has no expression {missing}")
                    page.evaluate("window.segaViewer.reset()")
                    page.evaluate("(w) => window.segaViewer.setExpressions(w)", weights)
                    if view == "side":
                        page.evaluate("(a) => window.segaViewer.orbitCamera(a, 0, 1)", args.side_deg)
                    path = args.out / f"{args.prefix}{name}.png"
                    size = save_png(page.evaluate("window.segaViewer.snapshot()"), path)
                    print(f"  {path} ({size / 1000:.0f} KB)")
                page.close()
            finally:
                browser.close()
    finally:
        srv.shutdown()
    if errors:
        print("page errors:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
