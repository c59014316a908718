"""``report.html`` (``sega.eval_html``): per-frame curves of driven against frozen, the contact sheet, one
offline file."""

from __future__ import annotations

import re

import numpy as np


def _report(n: int = 6) -> dict:
    rng = np.random.default_rng(0)
    m = lambda: {"eye_opening_left": 0.3, "eye_opening_right": 0.28, "mouth_opening": float(rng.uniform(0, 0.4)),  # noqa: E731
                 "mouth_width": 0.9, "gaze_x": 0.0, "gaze_y": 0.0, "brow_height": 0.5}  # fmt: skip
    frames = []
    for i in range(1, n + 1):
        e = {"frame": i * 5, "yaw_from_source_deg": float(i), "psnr_db": 20.0 + i, "mouth_psnr_db": 22.0, "eye_psnr_db": 21.0,
             "expression_error": 0.02, "pose_error_deg": None if i == 3 else 1.0, "target_measures": m(), "render_measures": m(),
             "frozen": {"psnr_db": 19.0 + i, "mouth_psnr_db": 20.0, "eye_psnr_db": 21.0, "render_measures": m()}}  # fmt: skip
        frames.append(e)
    frames.append({"frame": 99, "skipped": "no face in the target frame"})
    summ = {"mean": 1.0, "median": 1.0, "min": 1.0, "max": 1.0}
    return {"source": "clip<1>.mp4", "frames": 100, "scored_frames": n, "avatar": {"preset": "fast"}, "per_frame": frames,
            "overall": {"psnr_db": summ}, "frozen": {"psnr_db": summ}, "gain": {"psnr_db": 0.5},
            "teeth": {"agreement": 0.5, "frozen_agreement": 0.25}, "eyes_closed_wrongly": {"count": 0},
            "turned": {"frames": [30], "min_abs_yaw_deg": 6.0, "psnr_db": 26.0, "frozen_psnr_db": 25.0}}  # fmt: skip


def test_report_html_draws_every_curve_offline_and_escapes_names():
    from sega.eval_html import report_html

    page = report_html(_report(), b"\x89PNG fake")
    assert page.count("<svg") == 7  # PSNR x3, mouth and eye opening, expression error, head pose
    assert "data:image/png;base64," in page and "<script" not in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # nothing fetched from outside
    assert "clip&lt;1&gt;.mp4" in page and "clip<1>" not in page
    # driven and frozen PSNR: one polyline each, 6 points; the pose chart breaks at the unmeasured frame 15
    psnr = page.split("<figcaption>PSNR in the head mask</figcaption>")[1].split("</figure>")[0]
    lines = re.findall(r"<polyline points='([^']*)'", psnr)
    assert len(lines) == 2 and all(len(p.split()) == 6 for p in lines)
    pose = page.split("<figcaption>Head pose</figcaption>")[1].split("</figure>")[0]
    assert len(re.findall(r"<polyline", pose)) == 3  # pose error in two runs (2 + 3 frames), yaw in one
    assert "turned furthest" in page


def test_report_html_without_scored_frames_says_not_measured():
    from sega.eval_html import report_html

    page = report_html({"per_frame": [{"frame": 1, "skipped": "x"}]})
    assert page.count("not measured") == 7 and "<svg" not in page


def test_contact_sheet_shows_the_frames_with_most_to_drive_in_frame_order():
    """The sheet's rows are the frames furthest from the frozen baseline (lowest frozen PSNR), not the first
    scored ones (a talking-head clip's first frames are often its calmest)."""
    from sega.evaluate import sheet_images

    report = _report(6)
    for e, frozen_psnr in zip(report["per_frame"], (30.0, 12.0, 25.0, 11.0, 28.0, 14.0)):
        e["frozen"]["psnr_db"] = frozen_psnr
    report["_images"] = [(e["frame"], {"tag": e["frame"]}) for e in report["per_frame"] if "psnr_db" in e]
    assert [i for i, _ in sheet_images(report, 3)] == [10, 20, 30]
    assert [i for i, _ in sheet_images(report, 10)] == [5, 10, 15, 20, 25, 30]
