"""The command line: help, the fit command end to end, and clean errors for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
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


@pytest.mark.parametrize(("option", "value", "why"), [("--max-scored", "0", "0 is below 1"), ("--every", "-3", "-3 is below 1"),
                                                    ("--max-scored", "many", "'many' is not a whole number")])  # fmt: skip
def test_eval_counts_below_one_are_refused_by_name(tmp_path, capsys, option, value, why):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--video", str(tmp_path / "v.mp4"), "-o", str(tmp_path / "r"), option, value])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exc.value.code == 2 and err.endswith(f"argument {option}: {why}"), err
    assert not (tmp_path / "r").exists()


def test_headmodel_info(capsys):
    assert main(["headmodel", "info", "--no-download"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["expressions"] == 53 and info["landmark_sets"]["mediapipe478"] == 478


# ---- output paths are checked before any work ------------------------------------------------------
# "unwritable" is a folder under /proc (nothing can be created there, not even by root: the tests may
# run as root, which writes through chmod-based permissions, so chmod cannot make a folder unwritable).
UNWRITABLE_ROOT = Path("/proc/sega-test-no-such-folder")
MAX_REFUSAL_SECONDS = 2.0  # the refusal comes before the video is read or any model loads


def _bad_output(tmp_path: Path, kind: str, is_file: bool, suffix: str = "") -> Path:
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("a file in the way")
    if kind == "exists":  # a file where a folder goes, a folder where a file goes
        if not is_file:
            return blocker
        folder = tmp_path / f"folder{suffix}"
        folder.mkdir(exist_ok=True)
        return folder
    if kind == "under-file":
        return blocker / f"out{suffix}"
    if not Path("/proc").is_dir():
        pytest.skip("no /proc on this system")
    return UNWRITABLE_ROOT / f"out{suffix}"


def _commands(tmp_path: Path, out: Path) -> dict[str, list[str]]:
    """Each writing command with ``out`` as its output; inputs need not exist (the output is checked first)."""
    avatar = tmp_path / "avatar.npz"
    avatar.write_bytes(b"not read: the output is refused first")
    missing = str(tmp_path / "missing")
    return {
        "fit": ["fit", missing + ".png", "-o", str(out)],
        "build": ["build", missing + ".png", "-o", str(out), "--no-download"],
        "eval": ["eval", "--video", missing + ".mp4", "-o", str(out), "--no-download"],
        "export-zip": ["export", str(avatar), "-o", str(out), "--no-download"],
        "export-folder": ["export", str(avatar), "-o", str(out), "--no-download"],
        "play": ["play", missing + ".zip", "-o", str(out)],
        "drive": ["drive", missing + ".npz", "--video", missing + ".mp4", "-o", str(out), "--no-download"],
        "drive-clip": ["drive", missing + ".npz", "--video", missing + ".mp4", "-o", str(tmp_path / "ok.mp4"), "--clip", str(out)],
    }


OUTPUT_KINDS = {  # command -> (output is a file, suffix)
    "fit": (False, ""), "build": (False, ""), "eval": (False, ""), "export-zip": (True, ".zip"), "export-folder": (False, ""),
    "play": (True, ".mp4"), "drive": (True, ".mp4"), "drive-clip": (True, ".json"),
}


@pytest.mark.parametrize("kind", ["exists", "under-file", "unwritable"])
@pytest.mark.parametrize("command", sorted(OUTPUT_KINDS))
def test_bad_output_is_refused_first_with_one_line(tmp_path, capsys, command, kind):
    import time

    import sega.io  # noqa: F401 - imported here so the timing below is the command's own

    is_file, suffix = OUTPUT_KINDS[command]
    out = _bad_output(tmp_path, kind, is_file, suffix)
    t0 = time.perf_counter()
    code = main(_commands(tmp_path, out)[command])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(out) in err or str(out.parent) in err, err  # about the output, not the missing inputs
    assert seconds < MAX_REFUSAL_SECONDS, seconds
    assert not UNWRITABLE_ROOT.exists()


def test_output_checks_leave_nothing_behind(tmp_path, capsys):
    """A good output path passes the check and the command then fails on its missing input; the probe
    folder it created is gone again."""
    out = tmp_path / "new" / "deeper"
    assert main(["eval", "--video", str(tmp_path / "missing.mp4"), "-o", str(out), "--no-download"]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
