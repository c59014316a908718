"""The repository keeps its promises: the README's commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start\n(.*?)\n## ", text, re.S).group(1)
    return re.findall(r"^```(?:bash|sh)?\n(.*?)\n```", block, re.S | re.M)


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    cmds = _readme_commands()
    assert len(cmds) == 2, cmds
    assert all("\n" not in c for c in cmds)
    ci = (ROOT / ".ci" / "run").read_text()
    assert cmds[1] in ci.splitlines(), "the README's test command must be the one .ci/run runs"
    assert "pytest" in cmds[1]


def test_torch_is_pinned():
    reqs = (ROOT / "requirements.txt").read_text().splitlines()
    assert "torch==2.13.0" in reqs
    assert any(r.startswith("mediapipe==0.10.14") for r in reqs)
    assert any(r.startswith("protobuf") and "<5" in r for r in reqs)


def test_product_code_does_not_name_shared_folder():
    for path in list((ROOT / "sega").rglob("*.py")) + [ROOT / "app.py"]:
        if path.exists():
            assert "../shared" not in path.read_text(), path
