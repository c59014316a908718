"""``export.playback.load_bundle``: what it accepts and every kind of bundle it refuses, with its message.

Uses the small synthetic bundle of ``sega/testing/bundle_fixture.py`` (no avatar build needed); the real
avatar's bundle is tested in ``tests/test_export_bundle.py``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sega.testing.bundle_fixture import make_test_bundle, reference_outputs, zip_bundle

from export.playback import BundleError, BundleLimits, load_bundle
from sega.cli import main


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("bundle") / "b", num_splats=800, num_dynamic=200)


@pytest.fixture
def bundle(pristine, tmp_path) -> Path:
    """A fresh copy to damage."""
    return Path(shutil.copytree(pristine, tmp_path / "b"))


def manifest_of(b: Path) -> dict:
    return json.loads((b / "manifest.json").read_text())


def write_manifest(b: Path, m: dict, rehash: bool = True) -> None:
    if rehash:
        m["files"] = {f: hashlib.sha256((b / f).read_bytes()).hexdigest() for f in m["files"]}
    (b / "manifest.json").write_text(json.dumps(m))


def zip_members(path: Path, members: dict[str, bytes]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names warn
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items() if isinstance(members, dict) else members:
                zf.writestr(name, data)
    return path


def members_of(b: Path) -> list[tuple[str, bytes]]:
    return [(p.relative_to(b).as_posix(), p.read_bytes()) for p in sorted(b.rglob("*")) if p.is_file()]


# ---- accepted ------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["folder", "zip", "zip_in_folder"])
def test_loads_folders_and_zips_and_plays_like_onnxruntime(pristine, tmp_path, form):
    src = {"folder": lambda: pristine, "zip": lambda: zip_bundle(pristine, tmp_path / "b.zip"),
           "zip_in_folder": lambda: zip_bundle(pristine, tmp_path / "c.zip", prefix="avatar/")}[form]()  # fmt: skip
    with load_bundle(src) as b:
        assert b.num_splats == 800 and b.num_dynamic == 200 and "talk" in b.clip_names
        expr = b.expression_with(jawOpen=0.8, mouthSmile_L=0.3)
        pose = np.array([0.1, -0.2, 0.05, 0.01, 0.0, -0.01], np.float32)
        got = b.frame(expr, pose)
        ref = reference_outputs(pristine, expr, pose)
        for name in ("dynamic_means", "dynamic_quats", "head_matrix"):
            assert np.allclose(got[name], ref[name], atol=1e-6)
        g = b.gaussians(expr, pose)
        # Dynamic rows take the graph outputs, then everything is moved by head_matrix.
        m = ref["head_matrix"]
        assert np.allclose(g["means"][b.dynamic_rows], ref["dynamic_means"] @ m[:3, :3].T + m[:3, 3], atol=1e-5)
        frames = list(b.clip_frames("blink"))
        assert len(frames) > 10 and frames[0][0].shape == (len(b.expression_names),)
        root = b.root
    if form != "folder":
        assert not root.exists(), "the temporary folder of an unzipped bundle is removed on close"


# ---- refused: zips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, message",
    [("../evil.txt", "unsafe path"), ("/etc/evil", "unsafe path"), ("a/../../evil", "unsafe path"),
     ("C:/evil", "unsafe path"), ("a\\..\\evil", "unsafe path")],
)  # fmt: skip
def test_zip_path_traversal_is_refused(pristine, tmp_path, name, message):
    z = zip_members(tmp_path / "t.zip", members_of(pristine) + [(name, b"x")])
    with pytest.raises(BundleError, match=message):
        load_bundle(z)
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_member_is_refused(pristine, tmp_path):
    info = zipfile.ZipInfo("clips/link.json")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = tmp_path / "s.zip"
    zip_members(path, members_of(pristine))
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle(path)


def test_zip_bomb_by_ratio_size_and_count_is_refused(pristine, tmp_path):
    bomb = zip_members(tmp_path / "bomb.zip", members_of(pristine) + [("clips/zeros.bin", bytes(4 * 1024 * 1024))])
    with pytest.raises(BundleError, match="zip bomb"):
        load_bundle(bomb)
    ok = zip_bundle(pristine, tmp_path / "ok.zip")
    with pytest.raises(BundleError, match="over the 1000-byte limit"):
        load_bundle(ok, BundleLimits(max_member_bytes=1000))
    with pytest.raises(BundleError, match="more than the 3 a bundle may have"):
        load_bundle(ok, BundleLimits(max_members=3))
    with pytest.raises(BundleError, match="add up to more than"):
        load_bundle(ok, BundleLimits(max_total_bytes=20_000))


def test_zip_with_duplicate_damaged_or_no_manifest_is_refused(pristine, tmp_path):
    members = members_of(pristine)
    with pytest.raises(BundleError, match="appears twice"):
        load_bundle(zip_members(tmp_path / "d.zip", members + [members[0]]))
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(zip_members(tmp_path / "n.zip", [m for m in members if m[0] != "manifest.json"]))
    # Flip bytes inside the deflated data of the largest member: CRC / inflate error -> "damaged".
    path = zip_bundle(pristine, tmp_path / "x.zip")
    with zipfile.ZipFile(path) as zf:
        big = max(zf.infolist(), key=lambda i: i.compress_size)
    raw = bytearray(path.read_bytes())
    start = big.header_offset + 30 + len(big.filename.encode()) + len(big.extra)
    for i in range(start + 100, start + 400):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="damaged"):
        load_bundle(path)
    not_zip = tmp_path / "photo.zip"
    not_zip.write_bytes(b"\xff\xd8\xff\xe0 not a zip")
    with pytest.raises(BundleError, match="not a readable zip"):
        load_bundle(not_zip)


# ---- refused: contents -----------------------------------------------------------------------------


def test_missing_files_and_missing_bundle_are_refused(bundle, tmp_path):
    with pytest.raises(BundleError, match="bundle not found"):
        load_bundle(tmp_path / "nowhere.zip")
    (bundle / "static.ply").unlink()
    with pytest.raises(BundleError, match="missing static.ply"):
        load_bundle(bundle)


def test_required_file_missing_from_the_manifest_list_is_still_required(bundle):
    m = manifest_of(bundle)
    del m["files"]["dynamic_decoder.onnx"]
    (bundle / "dynamic_decoder.onnx").unlink()
    write_manifest(bundle, m)
    with pytest.raises(BundleError, match="missing dynamic_decoder.onnx"):
        load_bundle(bundle)


def test_hash_mismatch_is_refused(bundle):
    clip = bundle / "clips" / "talk.json"
    data = json.loads(clip.read_text())
    data["fps"] = 25  # still a valid clip, but not the file the manifest lists
    clip.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="clips/talk.json: SHA-256 does not match"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    "edit, message",
    [(lambda m: m.update(format_version=99), "unknown bundle format version 99"),
     (lambda m: m.update(format="other"), "is not 'sega-bundle'"),
     (lambda m: m.pop("frame"), "lacks required keys \\['frame'\\]"),
     (lambda m: m["files"].update({"../outside.txt": "0" * 64}), "unsafe path"),
     (lambda m: m["splats"].update(count=801), "holds 800 splats, the manifest says 801"),
     (lambda m: m["frame"]["outputs"]["dynamic_means"].update(updates="teleport"), "unknown output update kinds"),
     (lambda m: m["frame"]["outputs"]["dynamic_means"].update(shape=[201, 3]), "has shape \\[200, 3\\], the manifest says \\[201, 3\\]"),
     (lambda m: m["frame"]["outputs"]["dynamic_means"].update(layout="diagonal"), "output dynamic_means has layout 'diagonal'"),
     (lambda m: (m.update(format_version=1), m["frame"]["outputs"]["dynamic_means"].update(layout="component_major")),
      "layout 'component_major'; format 1 knows \\['splat_major'\\]"),
     (lambda m: m["frame"]["outputs"]["dynamic_means"].update(layout="component_major"), "shape \\[200, 3\\] does not cover the 200 dynamic splats"),
     (lambda m: m["frame"]["outputs"]["dynamic_means"].update(layout="component_major", shape=[3, 200]), "has shape \\[200, 3\\], the manifest says \\[3, 200\\]")],
)  # fmt: skip
def test_bad_manifests_are_refused(bundle, edit, message):
    m = manifest_of(bundle)
    edit(m)
    write_manifest(bundle, m, rehash=False)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_component_major_outputs_play_like_splat_major_ones(pristine, tmp_path):
    """The same synthetic bundle with [C, D] outputs ("layout": "component_major", as sega writes them):
    ``frame`` hands back [D, C] arrays, and the posed splats are the same."""
    rows = make_test_bundle(tmp_path / "rows", num_splats=800, num_dynamic=200, component_major=True)
    expr = np.zeros(53, np.float32)
    pose = np.array([0.1, -0.2, 0.05, 0.01, 0.0, -0.01], np.float32)
    with load_bundle(pristine) as a, load_bundle(rows) as b:
        expr = a.expression_with(jawOpen=0.8, mouthSmile_L=0.3, eyeBlink_R=1.0)
        fa, fb = a.frame(expr, pose), b.frame(expr, pose)
        assert fb["dynamic_means"].shape == (200, 3) and fb["dynamic_quats"].shape == (200, 4)
        raw = reference_outputs(rows, expr, pose)["dynamic_means"]
        assert raw.shape == (3, 200)
        for name in ("dynamic_means", "dynamic_quats", "dynamic_scales", "dynamic_colors", "dynamic_opacities", "head_matrix"):
            assert np.allclose(fa[name], fb[name], atol=1e-6), name
        ga, gb = a.gaussians(expr, pose), b.gaussians(expr, pose)
        for k in ga:
            assert np.allclose(ga[k], gb[k], atol=1e-6), k


def test_manifest_that_is_not_json_is_refused(bundle):
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle)


def test_onnx_graphs_that_do_not_match_the_contract_are_refused(bundle):
    m = manifest_of(bundle)
    shutil.copy(bundle / "displacement_vae.onnx", bundle / "dynamic_decoder.onnx")  # wrong graph in place
    write_manifest(bundle, m)
    with pytest.raises(BundleError, match="dynamic_decoder.onnx: graph inputs \\['expression'\\] do not match"):
        load_bundle(bundle)
    (bundle / "dynamic_decoder.onnx").write_bytes(b"this is not onnx")
    write_manifest(bundle, m)
    with pytest.raises(BundleError, match="dynamic_decoder.onnx is not a loadable ONNX graph"):
        load_bundle(bundle)


def test_broken_dynamic_index_is_refused(bundle):
    from export.ply import read_splat_ply, write_splat_ply

    s = read_splat_ply(bundle / "static.ply")
    idx = s["extra"]["sega_dynamic_index"].copy()
    idx[idx == 5] = 6  # splat 5 missing, 6 twice
    write_splat_ply(bundle / "static.ply", s["means"], s["quats"], s["scales"], s["opacities"], s["colors"], extra={"sega_dynamic_index": idx})
    write_manifest(bundle, manifest_of(bundle))
    with pytest.raises(BundleError, match="must number the 200 dynamic splats"):
        load_bundle(bundle)


def test_cli_play_reports_a_bad_bundle_in_one_line(bundle, tmp_path, capsys):
    (bundle / "manifest.json").write_text("[]")
    assert main(["play", str(bundle), "-o", str(tmp_path / "x.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "JSON object" in err[0]
    assert not (tmp_path / "x.mp4").exists()


# ---- every member listed and hashed -----------------------------------------------------------------


def test_unlisted_members_are_refused_in_folders_and_zips(bundle, tmp_path):
    (bundle / "clips" / "notes.txt").write_text("not listed")
    with pytest.raises(BundleError, match="clips/notes.txt is in the bundle but not listed in manifest.json 'files'"):
        load_bundle(bundle)
    with pytest.raises(BundleError, match="clips/notes.txt is in the bundle but not listed"):
        load_bundle(zip_bundle(bundle, tmp_path / "u.zip"))
    (bundle / "clips" / "notes.txt").unlink()
    members = members_of(bundle)
    z = zip_members(tmp_path / "o.zip", [("avatar/" + n, d) for n, d in members] + [("elsewhere/x.onnx", b"x")])
    with pytest.raises(BundleError, match="member 'elsewhere/x.onnx' lies outside the bundle's folder 'avatar/'"):
        load_bundle(z)


def test_empty_files_and_referenced_files_missing_from_files_are_refused(bundle):
    m = manifest_of(bundle)
    m["files"] = {}
    write_manifest(bundle, m, rehash=False)
    with pytest.raises(BundleError, match=r"manifest.json: files: must be an object of 1 to 256 entries, got \{\}"):
        load_bundle(bundle)
    m = manifest_of(bundle)
    m["files"] = {p.relative_to(bundle).as_posix(): "" for p in bundle.rglob("*") if p.is_file() and p.name != "manifest.json"}
    m["clips"].append("manifest.json")  # present, but the one file that can never be listed
    write_manifest(bundle, m)
    with pytest.raises(BundleError, match="the clip manifest.json is not listed in 'files'"):
        load_bundle(bundle)


def test_symlinks_in_a_bundle_folder_are_refused(bundle, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (bundle / "clips" / "link.json").symlink_to(outside)
    with pytest.raises(BundleError, match="clips/link.json in the bundle is a symbolic link"):
        load_bundle(bundle)


# ---- manifest schema ---------------------------------------------------------------------------------


def nested(depth: int) -> list:
    """A list nested ``depth`` levels deep: [[[...]]]."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value



@pytest.mark.parametrize(
    "edit, message",
    [(lambda m: m["camera"].update(fov_deg=0), r"manifest.json: camera.fov_deg: must be a number in \[1, 170\], got 0"),
     (lambda m: m["camera"].update(target=m["camera"]["position"]), "camera position .* is \\(almost\\) its target"),
     (lambda m: m["camera"].update(up=[0.0, 0.0, 1.0]), "camera up .* parallel to the viewing direction"),
     (lambda m: m["splats"].update(count=10**400), "manifest.json: splats.count: must be a whole number"),
     (lambda m: m["splats"].update(count=1e308), "manifest.json: splats.count: must be a whole number"),
     (lambda m: m["frame"]["inputs"]["head_pose"].update(shape=[1, 7]), r"head_pose input shape \[1, 7\] is not \[1, 6\]"),
     (lambda m: m["frame"]["outputs"]["dynamic_opacities"].update(updates="center"), r"output dynamic_opacities \(center\) has shape \[200\], its update kind needs \[200, 3\]"),
     (lambda m: m["expressions"]["names"].__setitem__(1, m["expressions"]["names"][0]), "expressions.names holds duplicates"),
     (lambda m: m["files"].update({"static.ply": "not a hash"}), "manifest.json: files.static.ply: has an unexpected form"),
     (lambda m: m.update(provenance=nested(100)), "nested more than 64 levels"),
     (lambda m: m["frame"]["steps"][1]["outputs"].append("expression"), "already provides")],
)  # fmt: skip
def test_manifest_schema_refusals_are_one_line(bundle, edit, message):
    m = manifest_of(bundle)
    edit(m)
    write_manifest(bundle, m, rehash=False)
    with pytest.raises(BundleError, match=message) as err:
        load_bundle(bundle)
    assert len(str(err.value).splitlines()) == 1


def test_oversized_manifest_is_refused_before_parsing(bundle):
    (bundle / "manifest.json").write_text(" " * (5 * 1024 * 1024) + "{}")
    with pytest.raises(BundleError, match="over the 4194304-byte limit"):
        load_bundle(bundle)


# ---- play reads only the frames it plays ------------------------------------------------------------


def test_cli_play_max_frames_converts_only_what_it_plays(pristine, tmp_path, monkeypatch, capsys):
    import imageio.v2 as imageio

    import export.playback as playback

    seen = []
    real = playback.read_clip

    def spy(path, max_frames=None):
        clip = real(path, max_frames=max_frames)
        seen.append((max_frames, clip["frames"].shape[0]))
        return clip

    monkeypatch.setattr(playback, "read_clip", spy)
    out = tmp_path / "one.mp4"
    assert main(["play", str(pristine), "--clip", "talk", "-o", str(out), "--max-frames", "1", "--size", "32", "--quiet"]) == 0
    assert seen == [(1, 1)], "the clip is read once, one frame converted"
    assert "1 frames" in capsys.readouterr().out
    with imageio.get_reader(out) as reader:
        assert reader.count_frames() == 1
    assert not (tmp_path / "one.partial.mp4").exists()


def test_viewer_refuses_a_hostile_bundle_with_the_loader_message(bundle, tmp_path):
    from sega.viewer_server import ViewerError, serve

    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("x")
    (dist / "viewer.js").write_text("x")
    with serve(bundle, dist_dir=dist) as srv:  # the good bundle is served
        assert srv.url.startswith("http://127.0.0.1:")
    (bundle / "extra.onnx").write_bytes(b"unlisted")
    with pytest.raises(ViewerError, match="extra.onnx is in the bundle but not listed"):
        serve(bundle, dist_dir=dist)
    with serve(bundle, dist_dir=dist, check=False):  # the page's own error reporting can still be tested
        pass


def test_export_into_a_folder_with_other_files_is_refused_and_an_old_bundle_is_replaced(tmp_path):
    """Every member of a bundle must be listed, so exporting into a folder that holds other files would
    make an unloadable bundle: refused before anything is written. An earlier bundle there is replaced."""
    from export.bundle import BundleExportError, _prepare_folder

    folder = tmp_path / "b"
    (folder / "clips").mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    (folder / "clips" / "talk.json").write_text("{}")
    _prepare_folder(folder)  # an earlier bundle's files: cleared
    assert folder.is_dir() and list(folder.iterdir()) == []
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(BundleExportError, match="holds other files .*notes.txt"):
        _prepare_folder(folder)
    assert (folder / "notes.txt").read_text() == "mine"
