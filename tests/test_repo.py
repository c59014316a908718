"""The repository keeps its promises: the README's commands are the ones CI runs, the figures page is
what the bench records say, benches and scripts run without path tricks."""

import importlib.util
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


def _make_figures():
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "scripts" / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_figures_page_is_generated_from_the_bench_records():
    """docs/figures.md is exactly what scripts/make_figures.py makes of bench/results/*.json, so no
    figure on it can disagree with its record (after a bench run: python scripts/make_figures.py)."""
    expected = _make_figures().render()
    assert (ROOT / "docs" / "figures.md").read_text(encoding="utf-8") == expected, "run: python scripts/make_figures.py"


def test_figures_page_lists_a_bench_without_a_record(tmp_path):
    text = _make_figures().render(results_dir=tmp_path)
    assert "## bench_build" in text and "Not run yet" in text


def test_benches_write_records_and_nothing_edits_sys_path():
    for path in sorted((ROOT / "bench").glob("bench_*.py")):
        text = path.read_text(encoding="utf-8")
        assert f"write_record(\"{path.stem}\"" in text or f"write_record('{path.stem}'" in text, path
    for path in sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "scripts").glob("*.py")):
        assert "sys.path" not in path.read_text(encoding="utf-8"), path


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200
