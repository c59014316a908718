"""Write ``docs/figures.md`` from the bench records ``bench/results/*.json`` (``bench.record``).

Why generated: a figure is written once, by the bench that measured it, with the machine, the date and
the command; the docs only show it. ``tests/test_repo.py`` regenerates the page from the committed
records and checks that ``docs/figures.md`` is the same, so no figure in it can disagree with its record.

For every bench module ``bench/bench_*.py`` (sorted by name) the page shows its first docstring line,
the machine (CPU, cores, load at start and end, torch, GPU), the date, the exact command, and its
figures as tables: figures at the top level of the record in one table, every other group in its own
(nested groups flattened as ``group / name``; a group whose entries are all flat groups, such as one row
per photo, as one table: a row per item, or a row per figure when there are more figures than items).
Where the record holds a ``targets`` dict beside figures (or in an enclosing group), the target is shown
next to the measurement. A bench without a record is listed as
"not run yet". Output is deterministic: sorted names, fixed number formatting (4 significant digits).

Usage: ``python scripts/make_figures.py [--check]`` from the repository root (``--check``: exit 1 if
``docs/figures.md`` differs from what the records give, write nothing).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
FIGURES_MD = ROOT / "docs" / "figures.md"

# Targets that tests hold (they fail when a target is missed), with the test that measures each: not bench
# figures, so no measured value is shown here.
TEST_TARGETS = [
    ("input view of the fast astronaut: PSNR / SSIM in the face mask", ">= 28 dB / >= 0.90 (the bench's >= 30 / 0.93 at default)",
     "tests/test_avatar.py"),
    ("alpha inside the head silhouette, five yaws", ">= 0.99", "tests/test_avatar.py"),
    ("eyeBlink = 1: eyeball pixels still visible, of the open eye's", "<= 5 %", "tests/test_avatar.py"),
    ("jawOpen = 1: teeth pixels in the 384 px input view", ">= 40", "tests/test_avatar.py"),
    ("MediaPipe reads the blink: detected lid gap at eyeBlink = 1 / open", "<= 0.8", "tests/test_avatar.py"),
    ("floaters, 200 random expressions: largest splat / off-head alpha (worst render)", "<= 0.2 head radii / <= 0.02",
     "tests/test_avatar.py"),
    ("ONNX graphs vs the torch avatar, 100 random expressions, every output: max abs difference", "<= 1e-4",
     "tests/test_export_bundle.py"),
    ("re-imported bundle frame vs the torch avatar: PSNR", ">= 45 dB", "tests/test_export_bundle.py"),
    ("GLB of the avatar: Khronos validator errors / morph target names", "0 / the 53 ARKit names", "tests/test_export_bundle.py"),
    ("displacement VAE, held-out mean vertex error vs the linear blendshapes", "<= 1 mm", "tests/test_vae.py"),
    ("drive, 20 avatar renders (yaw +-25 deg, pitch +-15 deg): expression weight MAE / head-pose error",
     "<= 0.10 / <= 2 deg", "tests/test_drive.py"),
    ("eval of the avatar against its own renders, with photometric refinement: PSNR in the head mask", ">= 35 dB",
     "tests/test_drive.py"),
    ("still photo x60 with 1 px landmark noise: std of the smoothed weights", "<= 0.02", "tests/test_drive.py"),
]  # fmt: skip


def fmt(value) -> str:
    """One cell: numbers with 4 significant digits, lists comma-separated, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def flatten(group: dict, prefix: str = "", inherited: dict | None = None) -> list[tuple[str, object, object]]:
    """(name, value, target) rows of a figure group; nested groups as ``group / name``. A figure's target is
    the one its own group's ``targets`` names, else the nearest enclosing group's (``{"summary": {"means":
    {...}, "targets": {...}}}`` puts the targets beside the means)."""
    own = group.get("targets") if isinstance(group.get("targets"), dict) else {}
    targets = {**(inherited or {}), **own}
    rows = []
    for key in sorted(k for k in group if k != "targets"):
        value = group[key]
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flatten(value, f"{name} / ", targets)
        else:
            rows.append((name, value, targets.get(key)))
    return rows


def is_matrix(group: dict) -> bool:
    """A group of two or more flat groups without targets (one row per item, e.g. per photo)."""
    entries = [v for k, v in group.items() if k != "targets"]
    return (len(entries) >= 2 and "targets" not in group and all(isinstance(v, dict) for v in entries)
            and all(not isinstance(x, dict) for v in entries for x in v.values()))  # fmt: skip


TARGET = re.compile(r"^\s*(<=|>=|<|>|=)?\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*$")


def met(name: str, value, target) -> str:
    """"yes" / "no" where a number meets / misses a target of the form "<= 60", ">= 0.99" or "478"; "" where
    that cannot be said. A bare number is an upper bound for a figure named ``max_*``, a lower bound for
    ``min_*``, else the value itself."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or target is None:
        return ""
    leaf = name.rsplit(" / ", 1)[-1]
    bare = "<=" if leaf.startswith("max_") else ">=" if leaf.startswith("min_") else "="
    if isinstance(target, (int, float)) and not isinstance(target, bool):
        op, bound = bare, float(target)
    else:
        m = TARGET.match(str(target))
        if m is None:
            return ""
        op, bound = m.group(1) or bare, float(m.group(2))
    ok = {"<=": value <= bound, ">=": value >= bound, "<": value < bound, ">": value > bound, "=": value == bound}[op]
    return "yes" if ok else "no"


def table(rows: list[tuple[str, object, object]]) -> list[str]:
    with_target = any(t is not None for _, _, t in rows)
    if not with_target:
        return ["| figure | measured |", "| --- | --- |"] + [f"| {fmt(n)} | {fmt(v)} |" for n, v, _ in rows]
    head = ["| figure | measured | target | met |", "| --- | --- | --- | --- |"]
    return head + [f"| {fmt(n)} | {fmt(v)} | {'' if t is None else fmt(t)} | {met(n, v, t)} |" for n, v, t in rows]


def matrix_table(group: dict) -> list[str]:
    """One row per item and a column per figure, or the transpose when there are more figures than items."""
    items = sorted(group)
    figures = sorted({c for v in group.values() for c in v})

    def cell(item: str, figure: str) -> str:
        return fmt(group[item][figure]) if figure in group[item] else ""

    if len(figures) > len(items):
        lines = ["| | " + " | ".join(fmt(i) for i in items) + " |", "| --- " * (len(items) + 1) + "|"]
        return lines + [f"| {fmt(f)} | " + " | ".join(cell(i, f) for i in items) + " |" for f in figures]
    lines = ["| | " + " | ".join(fmt(f) for f in figures) + " |", "| --- " * (len(figures) + 1) + "|"]
    return lines + [f"| {fmt(i)} | " + " | ".join(cell(i, f) for f in figures) + " |" for i in items]


def machine_line(m: dict) -> str:
    parts = [f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores"]
    if "load_1min_at_start" in m:
        parts.append(f"load (1 min) {fmt(m['load_1min_at_start'])} at start, {fmt(m.get('load_1min'))} at the end")
    else:
        parts.append(f"load (1 min) {fmt(m.get('load_1min'))} at the end")
    if "torch" in m:
        parts.append(f"torch {m['torch']} ({m.get('torch_threads', '?')} threads)")
    parts.append(f"GPU: {m['gpu']}" if m.get("gpu") else "no GPU")
    if "python" in m:
        parts.append(f"Python {m['python']}")
    return "; ".join(parts)


def bench_summary(path: Path) -> str:
    """First line of a bench module's docstring (read, not imported)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def bench_section(name: str, summary: str, record: dict | None) -> list[str]:
    lines = [f"## {name}", ""]
    if summary:
        lines += [summary, ""]
    if record is None:
        return lines + [f"Not run yet (no `bench/results/{name}.json`): `python -m bench.{name}`.", ""]
    lines += [f"- machine: {machine_line(record.get('machine', {}))}", f"- date: {record.get('date', '?')}"]
    code = record.get("code")
    if code:
        lines.append(f"- code: {code.get('commit', '?')}{' with uncommitted changes' if code.get('dirty') else ''}")
    lines += [f"- command: `{record.get('command', '?')}`", ""]
    figures = record.get("figures", {})
    top = {k: v for k, v in figures.items() if not isinstance(v, dict) or k == "targets"}
    if [k for k in top if k != "targets"]:
        lines += table(flatten(top)) + [""]
    for key in sorted(k for k, v in figures.items() if isinstance(v, dict) and k != "targets"):
        group = figures[key]
        lines += [f"### {key}", ""]
        lines += (matrix_table(group) if is_matrix(group) else table(flatten(group))) + [""]
    return lines


def render(bench_dir: Path = BENCH_DIR, results_dir: Path = RESULTS_DIR) -> str:
    """The whole of docs/figures.md from the bench modules and their records."""
    names = sorted(p.stem for p in bench_dir.glob("bench_*.py"))
    names += sorted(p.stem for p in results_dir.glob("*.json") if p.stem not in names)  # records of removed benches still show
    lines = [
        "# Measured figures",
        "",
        "<!-- Generated by `python scripts/make_figures.py` from `bench/results/*.json`; do not edit by hand. -->",
        "",
        "Every figure below was written by the bench that measured it (`python -m bench.NAME`, from the repository "
        "root), in the record `bench/results/NAME.json` with the machine, the date and the command. Timings on the "
        "shared 2-core machine move with the load shown (up to ~2x when other work competes for the cores); "
        "targets are the issues' targets. To refresh: run the bench, then `python scripts/make_figures.py`.",
        "",
        "Benches: " + ", ".join(f"[{n}](#{n})" for n in names) + ".",
        "",
    ]  # fmt: skip
    for name in names:
        path = results_dir / f"{name}.json"
        record = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        module = bench_dir / f"{name}.py"
        lines += bench_section(name, bench_summary(module) if module.exists() else "", record)
    lines += ["## Targets held by tests", "",
              "These are checked on every test run (a missed target fails the test); the test files hold the thresholds, and "
              "some tests record their measured values (`record_property`: `pytest --junitxml=report.xml`).", "",
              "| what | target | test |", "| --- | --- | --- |"]  # fmt: skip
    lines += [f"| {fmt(w)} | {fmt(t)} | {fmt(where)} |" for w, t, where in TEST_TARGETS]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/figures.md differs from the records; write nothing")
    ap.add_argument("--out", type=Path, default=FIGURES_MD)
    args = ap.parse_args()
    text = render()
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'differs from bench/results/*.json: run python scripts/make_figures.py'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
