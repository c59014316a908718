"""Seeded fuzz of manifest.json and clip files: every field path x a set of bad values must end in a
``SegaError`` (one line for the CLI) or a bundle that loads and plays, never another exception.

Why: a field-by-field fuzz of manifest.json once raised hundreds of raw exceptions (TypeError,
OverflowError, RecursionError, ZeroDivisionError at ``fov_deg: 0``) and ``sega play`` printed
tracebacks. Each case goes through the public path (``load_bundle``, then a frame, the posed splats,
the camera and two clip frames when it loads); manifest mutations leave the other files as they are,
so their hashes stay valid and most cases are refused by the manifest checks, before any graph loads.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sega.testing.bundle_fixture import make_test_bundle

from export.clips import make_clip, read_clip
from export.playback import load_bundle
from sega.cli import main
from sega.errors import SegaError

SEED = 20240611
NAN = object()  # written as the raw token NaN (not valid JSON, but what a careless writer produces)
DELETE = object()  # the key is removed
NESTED_DEPTH = 100
LONG_LIST = 10_000
BAD_VALUES = [None, True, -1, 0, 1e308, -1e308, "x", "", [], {}, "NESTED", "LONG", 10**400, NAN, "../outside", 1e-9, DELETE]
MIN_CASES = 1000  # manifest + clip cases in all (the issue asks for at least 1,000)
CLI_SAMPLE = 30  # refused cases also run through ``sega.cli.main`` in process
MAX_FUZZ_S = 60.0  # the whole module on 2 shared cores (measured: see the module's timing assertion)
REPO = Path(__file__).resolve().parents[1]


def _bad(value):
    if value == "NESTED":
        out: list = []
        for _ in range(NESTED_DEPTH - 1):
            out = [out]
        return out
    if value == "LONG":
        return list(range(LONG_LIST))
    return value


def _dumps(doc) -> str:
    """JSON text of ``doc`` with the NAN marker as the raw token NaN."""
    return json.dumps(doc, default=lambda o: "__SEGA_NAN__").replace('"__SEGA_NAN__"', "NaN")


def field_paths(doc, prefix=()) -> list[tuple]:
    """Every path into ``doc`` (objects: every key; lists: the first and the last item), containers included."""
    out = []
    if isinstance(doc, dict):
        items = list(doc.items())
    elif isinstance(doc, list):
        items = [(i, doc[i]) for i in sorted({0, len(doc) - 1})] if doc else []
    else:
        return out
    for key, value in items:
        out.append(prefix + (key,))
        out += field_paths(value, prefix + (key,))
    return out


def mutated(doc, path: tuple, value) -> str:
    doc = json.loads(json.dumps(doc))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = _bad(value)
    return _dumps(doc)


def play_case(folder: Path) -> str:
    """Load and play one frame of ``folder``: 'loaded' or 'refused' (a SegaError); anything else propagates."""
    try:
        with load_bundle(folder) as b:
            b.gaussians(b.expression_with(), None)
            b.camera(32, 32)
            for name in b.clip_names[:1]:
                for expr, pose in b.clip_frames(name, max_frames=2):
                    b.frame(expr, pose)
        return "loaded"
    except SegaError:
        return "refused"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("fuzz") / "b", num_splats=300, num_dynamic=60)


@pytest.fixture(scope="module")
def manifest_results(pristine, tmp_path_factory):
    """{(path, value index): outcome} of every manifest case, run once for the module (timed)."""
    work = Path(shutil.copytree(pristine, tmp_path_factory.mktemp("fuzz_work") / "b"))
    doc = json.loads((pristine / "manifest.json").read_text())
    results, crashes = {}, []
    t0 = time.perf_counter()
    for path in field_paths(doc):
        for k, value in enumerate(BAD_VALUES):
            (work / "manifest.json").write_text(mutated(doc, path, value))
            try:
                results[(path, k)] = play_case(work)
            except Exception as err:  # noqa: BLE001 - the point of the test: nothing but SegaError escapes
                crashes.append(f"{'.'.join(map(str, path))} = {value!r:.40}: {type(err).__name__}: {str(err)[:120]}")
    return results, crashes, time.perf_counter() - t0


def test_manifest_fuzz_raises_only_sega_errors(manifest_results):
    results, crashes, seconds = manifest_results
    assert not crashes, f"{len(crashes)} non-SegaError exceptions, e.g.\n" + "\n".join(crashes[:15])
    outcomes = list(results.values())
    assert outcomes.count("refused") > 0.5 * len(outcomes)  # the fuzz does reach the checks
    assert outcomes.count("loaded") > 0  # ... and informative fields stay free (provenance, licences, meaning)
    print(f"manifest fuzz: {len(outcomes)} cases, {outcomes.count('loaded')} loaded, {seconds:.1f} s")


def clip_cases(tmp: Path):
    clip = make_clip("talk", ["jawOpen", "mouthSmile_L", "eyeBlink_L"], seconds=1.0)
    for path in field_paths(clip):
        for k, value in enumerate(BAD_VALUES):
            file = tmp / f"c{len(path)}_{k}.json"
            file.write_text(mutated(clip, path, value))
            yield path, value, file


def test_clip_fuzz_raises_only_sega_errors(pristine, manifest_results, tmp_path):
    crashes, count = [], 0
    with load_bundle(pristine) as bundle:
        for path, value, file in clip_cases(tmp_path):
            count += 1
            try:
                clip = read_clip(file)
                for expr, pose in bundle.frames_of(clip):
                    bundle.frame(expr, pose)
                    break
            except SegaError:
                pass
            except Exception as err:  # noqa: BLE001
                crashes.append(f"{'.'.join(map(str, path))} = {value!r:.40}: {type(err).__name__}: {str(err)[:120]}")
    assert not crashes, f"{len(crashes)} non-SegaError exceptions, e.g.\n" + "\n".join(crashes[:15])
    assert count + len(manifest_results[0]) >= MIN_CASES, count + len(manifest_results[0])


def test_cli_play_prints_one_error_line_for_refused_manifests(pristine, manifest_results, tmp_path, capsys):
    results = manifest_results[0]
    refused = sorted(case for case, outcome in results.items() if outcome == "refused")
    doc = json.loads((pristine / "manifest.json").read_text())
    work = Path(shutil.copytree(pristine, tmp_path / "b"))
    out = tmp_path / "x.mp4"
    for path, k in random.Random(SEED).sample(refused, CLI_SAMPLE):
        (work / "manifest.json").write_text(mutated(doc, path, BAD_VALUES[k]))
        code = main(["play", str(work), "-o", str(out), "--max-frames", "1", "--size", "16", "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (path, BAD_VALUES[k], err)
        assert not out.exists()


@pytest.mark.parametrize(
    "path, value",
    [(("camera", "fov_deg"), 0), (("camera", "position", 0), NAN), (("splats", "count"), "NESTED")],
)  # fmt: skip
def test_python_m_sega_play_prints_no_traceback(pristine, tmp_path, path, value):
    work = Path(shutil.copytree(pristine, tmp_path / "b"))
    (work / "manifest.json").write_text(mutated(json.loads((pristine / "manifest.json").read_text()), path, value))
    proc = subprocess.run([sys.executable, "-m", "sega", "play", str(work), "-o", str(tmp_path / "x.mp4"), "--max-frames", "1", "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: manifest.json"), lines


def test_fuzz_stays_fast(manifest_results):
    assert manifest_results[2] < MAX_FUZZ_S, manifest_results[2]
