"""``report.html``: ``sega eval``'s report to look at, not read: per-frame curves and the contact sheet.

One self-contained file (inline SVG charts, the contact sheet as a data URI, no script, no CDN), so it
opens offline from the output folder or an e-mail attachment. Curves, per scored frame, driven against
the frozen baseline (the source expression at the same head pose) where both exist:

* PSNR in the head mask, and in the mouth and eye regions;
* landmark measures of target, driven and frozen: mouth opening, eye opening (mean of both eyes);
* expression error (IOD) and head-pose error (degrees) of the driven render, and the tracked yaw change
  from the source frame.

``report_html(report, contact_sheet_png)`` -> str; ``sega.evaluate.write_report`` writes it beside
``report.json``.
"""

from __future__ import annotations

import base64
import html
import math

CHART_W, CHART_H = 560, 180  # px, one chart's SVG viewport
PAD_L, PAD_R, PAD_T, PAD_B = 48, 12, 12, 28  # px, plot margins (axis labels on the left and bottom)
TICKS = 4  # horizontal grid lines per chart
COLOURS = {"target": "#222222", "driven": "#d62728", "frozen": "#1f77b4", "other": "#2ca02c"}  # series colour by role
SUMMARY_KEYS = ("psnr_db", "ssim", "mouth_psnr_db", "eye_psnr_db", "mouth_opening_error", "eye_opening_error",
                "gaze_error", "brow_height_error", "expression_error", "pose_error_deg", "identity_distance")  # fmt: skip


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _series_values(frames: list[dict], get) -> list[float | None]:
    out = []
    for e in frames:
        try:
            v = get(e)
        except (KeyError, TypeError):
            v = None
        out.append(None if v is None or not math.isfinite(float(v)) else float(v))
    return out


def line_chart(title: str, xs: list[int], series: list[tuple[str, str, list[float | None]]], unit: str = "") -> str:
    """An inline SVG line chart. xs: frame numbers; series: (label, colour, values; None = gap)."""
    vals = [v for _, _, ys in series for v in ys if v is not None]
    head = f"<figure><figcaption>{html.escape(title)}</figcaption>"
    if not xs or not vals:
        return head + "<p class='none'>not measured</p></figure>"
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    pw, ph = CHART_W - PAD_L - PAD_R, CHART_H - PAD_T - PAD_B

    def px(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return PAD_T + (hi - y) / (hi - lo) * ph

    parts = [f"<svg viewBox='0 0 {CHART_W} {CHART_H}' role='img' aria-label='{html.escape(title)}'>"]
    digits = max(0, 2 - math.floor(math.log10(hi - lo)))  # tick labels to about 3 significant digits of the range
    for k in range(TICKS + 1):
        y = lo + (hi - lo) * k / TICKS
        parts.append(f"<line x1='{PAD_L}' x2='{CHART_W - PAD_R}' y1='{py(y):.1f}' y2='{py(y):.1f}' class='grid'/>"
                     f"<text x='{PAD_L - 4}' y='{py(y) + 4:.1f}' class='yl'>{y:.{digits}f}</text>")  # fmt: skip
    parts.append(f"<text x='{PAD_L}' y='{CHART_H - 6}' class='xl'>frame {x0}</text>"
                 f"<text x='{CHART_W - PAD_R}' y='{CHART_H - 6}' class='xl end'>frame {x1}</text>")  # fmt: skip
    for label, colour, ys in series:
        runs, run = [], []
        for x, y in zip(xs, ys):
            if y is None:
                runs, run = runs + [run] if run else runs, []
            else:
                run.append(f"{px(x):.1f},{py(y):.1f}")
        runs += [run] if run else []
        for r in runs:
            if len(r) == 1:
                cx, cy = r[0].split(",")
                parts.append(f"<circle cx='{cx}' cy='{cy}' r='2.5' fill='{colour}'/>")
            else:
                parts.append(f"<polyline points='{' '.join(r)}' fill='none' stroke='{colour}' stroke-width='1.8'/>")
    parts.append("</svg>")
    legend = " ".join(f"<span><i style='background:{c}'></i>{html.escape(lbl)}</span>" for lbl, c, _ in series)
    return head + "".join(parts) + f"<div class='legend'>{legend}{' · ' + html.escape(unit) if unit else ''}</div></figure>"


def _mean_eye(m: dict | None) -> float | None:
    if not m:
        return None
    return 0.5 * (m["eye_opening_left"] + m["eye_opening_right"])


def charts(report: dict) -> list[str]:
    """The per-frame charts of a report (``sega.evaluate``'s per_frame entries)."""
    scored = [e for e in report.get("per_frame", []) if "psnr_db" in e]
    xs = [int(e["frame"]) for e in scored]
    d, f = COLOURS["driven"], COLOURS["frozen"]

    def pair(key: str) -> list[tuple[str, str, list]]:
        return [("driven", d, _series_values(scored, lambda e: e[key])), ("frozen", f, _series_values(scored, lambda e: e["frozen"][key]))]

    def measure(get) -> list[tuple[str, str, list]]:
        return [("target", COLOURS["target"], _series_values(scored, lambda e: get(e["target_measures"]))),
                ("driven", d, _series_values(scored, lambda e: get(e["render_measures"]))),
                ("frozen", f, _series_values(scored, lambda e: get(e["frozen"]["render_measures"])))]  # fmt: skip

    return [
        line_chart("PSNR in the head mask", xs, pair("psnr_db"), "dB"),
        line_chart("PSNR in the mouth region", xs, pair("mouth_psnr_db"), "dB"),
        line_chart("PSNR in the eye region", xs, pair("eye_psnr_db"), "dB"),
        line_chart("Mouth opening (inner-lip gap)", xs, measure(lambda m: m["mouth_opening"]), "IOD"),
        line_chart("Eye opening (mean of both eyes)", xs, measure(_mean_eye), "IOD"),
        line_chart("Expression error (mouth, eye and brow landmarks)", xs,
                   [("driven", d, _series_values(scored, lambda e: e.get("expression_error")))], "IOD"),  # fmt: skip
        line_chart("Head pose", xs, [("pose error", d, _series_values(scored, lambda e: e.get("pose_error_deg"))),
                                     ("yaw from the source frame", COLOURS["other"], _series_values(scored, lambda e: e.get("yaw_from_source_deg")))],
                   "degrees"),  # fmt: skip
    ]


def summary_table(report: dict) -> str:
    o, fz, g = report.get("overall", {}), report.get("frozen", {}), report.get("gain", {})
    rows = []
    for k in SUMMARY_KEYS:
        if o.get(k) is None and fz.get(k) is None:
            continue
        mean = lambda src: None if src.get(k) is None else src[k]["mean"]  # noqa: E731
        rows.append(f"<tr><td>{k}</td><td>{_fmt(mean(o))}</td><td>{_fmt(mean(fz))}</td><td>{_fmt(g.get(k))}</td></tr>")
    return "<table><tr><th>score (mean)</th><th>driven</th><th>frozen</th><th>gain</th></tr>" + "".join(rows) + "</table>"


STYLE = """body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px}figure{display:inline-block;margin:8px 12px 8px 0;vertical-align:top;width:560px;max-width:100%}
figcaption{font-weight:600;margin-bottom:2px}svg{width:100%;height:auto;background:#fafafa;border:1px solid #ddd}
.grid{stroke:#e3e3e3}.yl{font-size:10px;text-anchor:end;fill:#666}.xl{font-size:10px;fill:#666}.end{text-anchor:end}
.legend span{margin-right:12px;font-size:12px}.legend i{display:inline-block;width:12px;height:3px;margin:0 4px 3px 0}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}.none{color:#888}"""


def report_html(report: dict, contact_sheet_png: bytes | None = None) -> str:
    """The whole page (one string, no outside resources)."""
    teeth = report.get("teeth") or {}
    turned = report.get("turned")
    facts = [f"source: {_fmt(report.get('source'))}", f"frames: {_fmt(report.get('frames'))}",
             f"scored: {_fmt(report.get('scored_frames'))}", f"avatar: {_fmt((report.get('avatar') or {}).get('preset'))} preset",
             f"teeth agreement: {_fmt(teeth.get('agreement'))} (frozen {_fmt(teeth.get('frozen_agreement'))})",
             f"eyes closed wrongly: {_fmt((report.get('eyes_closed_wrongly') or {}).get('count'))} frames"]  # fmt: skip
    if turned:
        facts.append(f"turned furthest (|yaw| ≥ {turned['min_abs_yaw_deg']:.1f}°): PSNR {turned['psnr_db']:.2f} dB (frozen {turned['frozen_psnr_db']:.2f})")
    sheet = ""
    if contact_sheet_png:
        data = base64.b64encode(contact_sheet_png).decode("ascii")
        sheet = f"<h2>Contact sheet: target | driven | frozen | error</h2><img alt='contact sheet' src='data:image/png;base64,{data}'>"
    notes = "".join(f"<p class='none'>{html.escape(str(report[k]))}</p>" for k in ("identity_note", "lpips_note") if report.get(k))
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>sega eval: {_fmt(report.get('source'))}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{STYLE}</style></head><body>"
            f"<h1>Self-reenactment report</h1><p>{' · '.join(facts)}</p>{summary_table(report)}{notes}"
            f"<h2>Per frame: driven against frozen</h2>{''.join(charts(report))}{sheet}</body></html>")  # fmt: skip


__all__ = ["line_chart", "report_html"]
