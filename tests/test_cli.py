"""The command line: help, the fit command end to end, and clean errors for bad input."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from sega.cli import main


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sega", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_subcommands():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("fit", "headmodel"):
        assert cmd in r.stdout


def test_fit_example_writes_outputs(tmp_path):
    r = run("fit", "--example", "-o", str(tmp_path), "--preset", "fast", "--no-download")
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "fit.json").read_text())
    assert len(d["landmarks_detected"]) == 478 and set(d["expression"]) and d["nme"] < 0.05
    img = np.asarray(Image.open(tmp_path / "fit_overlay.png"))
    assert img.ndim == 3 and img.shape[0] >= 512


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, not a photo")
    assert main(["fit", str(bad), "-o", str(tmp_path / "o"), "--no-download"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not an image" in err and "Traceback" not in err
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert main(["fit", str(empty), "-o", str(tmp_path / "o"), "--no-download"]) == 2
    assert "empty" in capsys.readouterr().err
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((300, 300, 3), 128, np.uint8)).save(flat)
    assert main(["fit", str(flat), "-o", str(tmp_path / "o"), "--no-download"]) == 2
    assert "No face" in capsys.readouterr().err


def test_headmodel_info(capsys):
    assert main(["headmodel", "info", "--no-download"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["expressions"] == 53 and info["landmark_sets"]["mediapipe478"] == 478
