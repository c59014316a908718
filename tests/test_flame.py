"""FLAME path: safe unpickling, validation, conversion, cache and smplx-based deformation.

Uses a small synthetic FLAME-format model (``sega.testing.flame_synthetic``); real FLAME is never needed.
"""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.spatial.transform import Rotation

from sega.errors import HeadModelError
from sega.headmodel import flame as flame_mod
from sega.headmodel import load_head_model
from sega.headmodel.flame import (
    FLAME_EMBEDDING_FILE,
    FLAME_SMPLX_FILE,
    FlameHeadModel,
    find_flame_pkl,
    load_flame,
)
from sega.headmodel.safe_pickle import ChumpyStub, _np_multiarray, safe_load_pickle, to_numpy, to_plain_arrays

from sega.testing import flame_synthetic as syn

NUM_ID = 12
NUM_EXP = 7


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGA_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def arrays():
    return syn.make_synthetic_flame(seed=0)


@pytest.fixture
def flame_dir(tmp_path, arrays):
    """Folder as a user would lay it out: FLAME2020/generic_model.pkl + head_template_mesh.obj."""
    root = tmp_path / "flame_download"
    (root / "FLAME2020").mkdir(parents=True)
    syn.write_flame_pickle(root / "FLAME2020" / "generic_model.pkl", arrays)
    uvs = syn.write_uv_obj(root / "head_template_mesh.obj", arrays)
    return root, uvs


def _expected(arrays, identity, expression):
    sd = arrays["shapedirs"]
    return arrays["v_template"] + sd[:, :, : len(identity)] @ identity + sd[:, :, 300 : 300 + len(expression)] @ expression


# ---- safe unpickler -------------------------------------------------------------------------
def test_safe_load_handles_chumpy_sparse_and_legacy_paths(tmp_path, arrays):
    path = syn.write_flame_pickle(tmp_path / "m.pkl", arrays)
    assert b"chumpy.ch\nCh" in path.read_bytes() and b"scipy.sparse.csc\n" in path.read_bytes()
    raw = safe_load_pickle(path)
    assert isinstance(raw["shapedirs"], ChumpyStub) and raw["shapedirs"].chumpy_class == "chumpy.ch.Ch"
    np.testing.assert_array_equal(np.asarray(raw["shapedirs"]), arrays["shapedirs"])
    assert scipy.sparse.issparse(raw["J_regressor"])
    np.testing.assert_allclose(raw["J_regressor"].toarray(), arrays["J_regressor"])
    plain = to_plain_arrays(raw)
    assert "J" not in plain  # chumpy expression without a stored value is left out
    assert scipy.sparse.issparse(plain["J_regressor"])
    assert isinstance(to_plain_arrays(raw, densify=True)["J_regressor"], np.ndarray)
    with pytest.raises(HeadModelError, match="chumpy.ch_ops.add"):
        to_plain_arrays(raw, strict=True)
    with pytest.raises(HeadModelError, match="no stored array"):
        to_numpy(raw["J"], name="J")


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_safe_load_all_protocols(tmp_path, arrays, protocol):
    """Protocols 0/1 use copyreg._reconstructor; 5 uses numpy's _frombuffer."""
    path = syn.write_flame_pickle(tmp_path / "m.pkl", arrays, protocol=protocol, legacy_names=protocol < 3)
    raw = safe_load_pickle(path)
    np.testing.assert_array_equal(to_numpy(raw["shapedirs"]), arrays["shapedirs"])
    np.testing.assert_array_equal(raw["f"], arrays["f"])


@pytest.mark.parametrize(("via", "refused"), [("os.system", "posix.system"), ("eval", ".eval")])
def test_malicious_pickle_refused(tmp_path, via, refused):
    marker = tmp_path / "pwned"
    path = syn.write_malicious_pickle(tmp_path / "generic_model.pkl", marker, via=via)
    with pytest.raises(HeadModelError, match="refusing to load") as err:
        safe_load_pickle(path)
    assert refused in str(err.value) and str(path) in str(err.value)
    assert "FLAME pickles contain only arrays" in str(err.value)
    assert not marker.exists()


def test_malicious_model_refused_through_load_flame(tmp_path, arrays):
    marker = tmp_path / "pwned"
    path = syn.write_malicious_pickle(tmp_path / "generic_model.pkl", marker)
    syn.write_uv_obj(tmp_path / "head_template_mesh.obj", arrays)
    with pytest.raises(HeadModelError, match=r"refusing to load posix\.system"):
        load_flame(tmp_path)
    assert not marker.exists()


def test_self_referencing_chumpy_object(tmp_path):
    with syn.fake_chumpy() as (ch_cls, _):
        obj = ch_cls()
        obj.__dict__["x"] = obj
        blob = pickle.dumps({"shapedirs": obj}, protocol=2)
    path = tmp_path / "cycle.pkl"
    path.write_bytes(blob)
    raw = safe_load_pickle(path)
    with pytest.raises(HeadModelError, match="does not resolve to an array"):
        to_numpy(raw["shapedirs"], name="shapedirs")


def test_reconstructor_only_for_stub_classes(tmp_path):
    # Protocol-0 pickle: copy_reg._reconstructor(numpy.dtype, object, None).
    path = tmp_path / "x.pkl"
    path.write_bytes(b"ccopy_reg\n_reconstructor\n(cnumpy\ndtype\nc__builtin__\nobject\nNtR.")
    with pytest.raises(HeadModelError, match="refusing to reconstruct"):
        safe_load_pickle(path)


def test_not_a_pickle_and_not_a_dict(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"this is not a pickle")
    with pytest.raises(HeadModelError, match="cannot read FLAME pickle"):
        safe_load_pickle(bad)
    lst = tmp_path / "list.pkl"
    lst.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(HeadModelError, match="does not hold a dict"):
        safe_load_pickle(lst)


# ---- loading --------------------------------------------------------------------------------
# ---- bounded memory and time (hostile pickles) -------------------------------------------------
MAX_REFUSAL_PEAK_BYTES = 20 * 2**20  # a refused allocation request costs at most this (the request is 1 GB)
MAX_REFUSAL_SECONDS = 1.0


class _Calls:
    """Unpickling this calls ``func(*args)`` (the allowed globals, asked for too much)."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _measured(fn):
    """(exception raised or None, peak traced bytes, seconds) of ``fn()``."""
    import time
    import tracemalloc

    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        fn()
        err = None
    except Exception as e:  # noqa: BLE001 - the caller asserts the type
        err = e
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return err, peak, seconds


@pytest.mark.parametrize("payload", [
    _Calls(bytearray, 10**9),
    _Calls(bytes, 10**9),
    _Calls(bytearray, np.int64(10**9)),  # a numpy integer is a size too
    _Calls(np.ndarray, (10**9,), "u1"),  # numpy.ndarray is an inert token, not callable
    _Calls(_np_multiarray._reconstruct, np.ndarray, (10**9,), b"b"),
    _Calls(_np_multiarray.scalar, np.dtype("V1000000000")),
], ids=["bytearray", "bytes", "bytearray-np-int", "ndarray", "reconstruct", "scalar"])
def test_huge_allocation_requests_are_refused_before_allocating(tmp_path, payload):
    path = tmp_path / "bomb.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3)), "f": payload}, protocol=2))
    assert path.stat().st_size < 2000
    err, peak, seconds = _measured(lambda: safe_load_pickle(path))
    assert isinstance(err, HeadModelError), err
    assert peak < MAX_REFUSAL_PEAK_BYTES and seconds < MAX_REFUSAL_SECONDS, (peak, seconds)


def test_oversized_pickle_file_is_refused_unread(tmp_path, arrays, monkeypatch):
    from sega.headmodel import safe_pickle

    path = syn.write_flame_pickle(tmp_path / "m.pkl", arrays)
    monkeypatch.setattr(safe_pickle, "MAX_PICKLE_BYTES", path.stat().st_size - 1)
    with pytest.raises(HeadModelError, match="limit for a FLAME pickle"):
        safe_load_pickle(path)


def _shared_nest(levels: int, leaf=0.5, kind=list):
    """Each level holds the previous one twice: ``levels`` distinct containers, 2**levels leaves when expanded."""
    x = kind([leaf])
    for _ in range(levels):
        x = kind([x, x])
    return x


@pytest.mark.parametrize("levels", [60, 26])  # 60: deeper than MAX_LIST_DEPTH; 26: 2^26 elements, over MAX_CONVERTED_ELEMENTS
def test_shared_nested_lists_are_refused_in_linear_time(tmp_path, levels):
    path = tmp_path / "nest.pkl"
    path.write_bytes(pickle.dumps({"shapedirs": _shared_nest(levels)}, protocol=2))
    raw = safe_load_pickle(path)
    err, peak, seconds = _measured(lambda: to_numpy(raw["shapedirs"], name="shapedirs"))
    assert isinstance(err, HeadModelError) and "shapedirs" in str(err), err
    assert seconds < 0.5 and peak < MAX_REFUSAL_PEAK_BYTES, (seconds, peak)


def test_shared_nested_lists_within_limits_convert_exactly(tmp_path):
    path = tmp_path / "nest.pkl"
    path.write_bytes(pickle.dumps({"shapedirs": _shared_nest(18, leaf=1.5), "ragged": [[1.0], [1.0, 2.0]], "text": [["a", 1]]}, protocol=2))
    raw = safe_load_pickle(path)
    import time

    t0 = time.perf_counter()
    arr = to_numpy(raw["shapedirs"], name="shapedirs")
    assert time.perf_counter() - t0 < 0.5
    assert arr.shape == (2,) * 18 + (1,) and arr.dtype == np.float64 and np.all(arr == 1.5)
    np.testing.assert_array_equal(to_numpy([(1, 2), [3, 4]]), np.array([[1, 2], [3, 4]]))
    assert to_numpy([]).shape == (0,)
    with pytest.raises(HeadModelError, match="ragged"):
        to_numpy(raw["ragged"], name="ragged")
    np.testing.assert_array_equal(to_numpy(raw["text"], name="text"), np.asarray([["a", 1]]))  # as numpy makes it (flame.py wants numbers)
    loop = [1.0]
    loop.append(loop)
    with pytest.raises(HeadModelError, match="self-referencing"):
        to_numpy(loop)


def _nested_tuple_ops(levels: int) -> bytes:
    """Pickle opcodes pushing ``_shared_nest(levels, kind=tuple)`` (built by memo references, never hashed here)."""
    return b"G" + struct.pack(">d", 0.5) + b"\x85q\x00" + b"h\x00h\x00\x86q\x00" * levels  # TUPLE1, then (m0, m0) per level


HASHING_OPCODES = {  # each puts the nested tuple on the stack and hashes it as a dict key or set member
    "SETITEM": b"}" + _nested_tuple_ops(60) + b"K\x01s",
    "SETITEMS": b"}(" + _nested_tuple_ops(60) + b"K\x01u",
    "DICT": b"(" + _nested_tuple_ops(60) + b"K\x01d",
    "ADDITEMS": b"\x8f(" + _nested_tuple_ops(60) + b"\x90",
    "FROZENSET": b"(" + _nested_tuple_ops(60) + b"\x91",
    "set()": b"c__builtin__\nset\n](" + _nested_tuple_ops(60) + b"e\x85R",
}


@pytest.mark.parametrize("opcodes", HASHING_OPCODES.values(), ids=HASHING_OPCODES.keys())
def test_shared_nested_tuples_are_never_hashed(tmp_path, opcodes):
    """Hashing a tuple of shared tuples takes time exponential in its depth (2^60 here): such dict keys and
    set members are refused before they are hashed."""
    path = tmp_path / "hash.pkl"
    path.write_bytes(b"\x80\x04}X\x01\x00\x00\x00f" + opcodes + b"s.")  # {"f": <container>}
    err, _, seconds = _measured(lambda: safe_load_pickle(path))
    assert isinstance(err, HeadModelError) and "tuple" in str(err), err
    assert seconds < MAX_REFUSAL_SECONDS


def test_plain_dict_keys_and_set_members_still_load(tmp_path):
    path = tmp_path / "plain.pkl"
    value = {"f": np.arange(3), "bs_style": "lbs", "s": {1, "a"}, "fs": frozenset({2.5}), "d": {"k": 1, 2: None}}
    for protocol in (0, 2, 4):
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        raw = safe_load_pickle(path)
        assert raw["s"] == {1, "a"} and raw["fs"] == frozenset({2.5}) and raw["d"] == {"k": 1, 2: None}


def test_sparse_matrix_too_large_to_densify_is_refused():
    from sega.headmodel.safe_pickle import MAX_CONVERTED_ELEMENTS

    huge = scipy.sparse.csc_matrix((1, MAX_CONVERTED_ELEMENTS + 1))
    assert scipy.sparse.issparse(to_numpy(huge, densify=False))
    with pytest.raises(HeadModelError, match="too large to make dense"):
        to_numpy(huge, name="J_regressor")


def test_load_from_pkl_and_folder(flame_dir, arrays):
    root, uvs = flame_dir
    pkl = root / "FLAME2020" / "generic_model.pkl"
    assert find_flame_pkl(root) == pkl
    for source in (pkl, root):
        model = load_flame(source, num_identity=NUM_ID, num_expressions=NUM_EXP, cache=False)
        V, F = len(arrays["v_template"]), len(arrays["f"])
        assert isinstance(model, FlameHeadModel) and model.name == "flame"
        assert model.vertices.shape == (V, 3) and model.vertices.dtype == np.float32
        assert model.faces.shape == (F, 3) and model.faces.dtype == np.int64
        assert model.face_uvs.shape == (F, 3, 2)
        np.testing.assert_allclose(model.face_uvs, uvs, atol=1e-6)  # OBJ corners were rotated
        assert model.identity_basis.shape == (NUM_ID, V, 3)
        assert model.expression_basis.shape == (NUM_EXP, V, 3)
        np.testing.assert_allclose(model.identity_basis[3], arrays["shapedirs"][:, :, 3], atol=1e-7)
        np.testing.assert_allclose(model.expression_basis[2], arrays["shapedirs"][:, :, 302], atol=1e-7)
        assert model.expression_names[:2] == ("flame_exp_000", "flame_exp_001")
        assert model.region_names == ("head", "eyeball_left", "eyeball_right")
        left_verts = model.vertices[model.region_vertex_mask("eyeball_left")]
        assert np.all(left_verts[:, 0] > 0)  # +X is the subject's left
        # mirror symmetry: partner of each vertex is its x-reflection
        np.testing.assert_allclose(model.vertices[model.symmetry], model.vertices * [-1, 1, 1], atol=1e-6)
        pivot = arrays["J_regressor"][1] @ arrays["v_template"]
        np.testing.assert_allclose(model.pivot, pivot, atol=1e-6)
        assert "flame.is.tue.mpg.de" in model.licence and "non-commercial" in model.licence


def test_load_head_model_dispatch(flame_dir):
    root, _ = flame_dir
    model = load_head_model("flame", source=root, num_identity=NUM_ID, num_expressions=NUM_EXP)
    assert isinstance(model, FlameHeadModel)


def test_flame2023_name_and_npz_uv(tmp_path, arrays):
    syn.write_flame_pickle(tmp_path / "flame2023.pkl", arrays)
    uvs = syn.write_uv_npz(tmp_path / "FLAME_texture.npz", arrays)
    model = load_flame(tmp_path, num_identity=NUM_ID, num_expressions=NUM_EXP, cache=False)
    np.testing.assert_allclose(model.face_uvs, uvs, atol=1e-7)
    assert model.source["uv_file"].endswith("FLAME_texture.npz")


def test_explicit_uv_without_chumpy(tmp_path, arrays):
    pkl = syn.write_flame_pickle(tmp_path / "model.pkl", arrays, chumpy=False)
    uvs = syn.write_uv_obj(tmp_path / "elsewhere.obj", arrays, rotate_corners=False)
    model = load_flame(pkl, uv=tmp_path / "elsewhere.obj", num_identity=NUM_ID, num_expressions=NUM_EXP, cache=False)
    np.testing.assert_allclose(model.face_uvs, uvs, atol=1e-6)


# ---- deformation ----------------------------------------------------------------------------
def test_deform_matches_linear_blend_at_zero_pose(flame_dir, arrays):
    root, _ = flame_dir
    model = load_flame(root, num_identity=NUM_ID, num_expressions=NUM_EXP)
    rng = np.random.default_rng(1)
    ident = rng.normal(size=(2, NUM_ID))
    expr = rng.normal(size=(2, NUM_EXP))
    out = model.deform(model.torch_buffers(), torch.tensor(ident, dtype=torch.float32), torch.tensor(expr, dtype=torch.float32))
    assert out.shape == (2, model.num_vertices, 3)
    for b in range(2):
        np.testing.assert_allclose(out[b].numpy(), _expected(arrays, ident[b], expr[b]), atol=1e-5)
    # unbatched input, float64 buffers, gradients flow
    buffers = model.torch_buffers(dtype=torch.float64)
    ident_t = torch.tensor(ident[0], dtype=torch.float64, requires_grad=True)
    single = model.deform(buffers, ident_t, torch.tensor(expr[0]))
    assert single.shape == (model.num_vertices, 3) and single.dtype == torch.float64
    np.testing.assert_allclose(single.detach().numpy(), _expected(arrays, ident[0], expr[0]), atol=1e-9)
    single.sum().backward()
    assert ident_t.grad is not None and torch.isfinite(ident_t.grad).all()


def test_jaw_pose_rotates_jaw_vertices(tmp_path, arrays):
    arrays = dict(arrays, posedirs=np.zeros_like(arrays["posedirs"]))  # no pose correctives: pure skinning
    syn.write_flame_pickle(tmp_path / "generic_model.pkl", arrays)
    syn.write_uv_obj(tmp_path / "head_template_mesh.obj", arrays)
    model = load_flame(tmp_path, num_identity=NUM_ID, num_expressions=NUM_EXP)
    ident = torch.zeros(NUM_ID)
    expr = torch.zeros(NUM_EXP)
    jaw = torch.tensor([0.3, 0.0, 0.0])
    rest = model.flame_forward(ident, expr).numpy()
    posed = model.flame_forward(ident, expr, jaw_pose=jaw).numpy()
    moved = np.nonzero(np.linalg.norm(posed - rest, axis=-1) > 1e-6)[0]
    np.testing.assert_array_equal(moved, np.sort(arrays["jaw_vertices"]))
    joint = arrays["J_regressor"][2] @ arrays["v_template"]
    rot = Rotation.from_rotvec(jaw.numpy()).as_matrix()
    jv = arrays["jaw_vertices"]
    np.testing.assert_allclose(posed[jv], (arrays["v_template"][jv] - joint) @ rot.T + joint, atol=1e-5)
    # neck pose moves the whole head; broadcasting of leading dims
    neck = model.flame_forward(ident, expr, neck_pose=torch.tensor([[0.0, 0.2, 0.0]] * 3))
    assert neck.shape == (3, model.num_vertices, 3)
    assert (np.linalg.norm(neck[0].numpy() - rest, axis=-1) > 1e-6).sum() > 0.9 * model.num_vertices


def test_jaw_pose_with_pose_correctives(flame_dir, arrays):
    root, _ = flame_dir
    model = load_flame(root, num_identity=NUM_ID, num_expressions=NUM_EXP, cache=False)
    ident, expr = torch.zeros(NUM_ID), torch.zeros(NUM_EXP)
    delta = model.flame_forward(ident, expr, jaw_pose=torch.tensor([0.3, 0.0, 0.0])) - model.flame_forward(ident, expr)
    dist = delta.norm(dim=-1).numpy()
    jaw = arrays["jaw_vertices"]
    assert dist[jaw].min() > 1e-3  # rotated by 0.3 rad about the jaw joint
    assert dist.max() > 0 and np.median(np.delete(dist, jaw)) < dist[jaw].min()


def test_model_pickles_and_rebuilds_runtime(flame_dir):
    for cache in (True, False):
        model = load_flame(flame_dir[0], num_identity=NUM_ID, num_expressions=NUM_EXP, cache=cache)
        ident, expr = torch.full((NUM_ID,), 0.3), torch.full((NUM_EXP,), -0.2)
        expected = model.flame_forward(ident, expr)
        clone = pickle.loads(pickle.dumps(model))
        torch.testing.assert_close(clone.flame_forward(ident, expr), expected)


def test_forward_rejects_wrong_sizes(flame_dir):
    model = load_flame(flame_dir[0], num_identity=NUM_ID, num_expressions=NUM_EXP, cache=False)
    with pytest.raises(ValueError, match="expected identity"):
        model.flame_forward(torch.zeros(NUM_ID + 1), torch.zeros(NUM_EXP))


# ---- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: a.pop("f"), r"missing 'f' \(triangle list\)"),
        (lambda a: a.update(shapedirs=a["shapedirs"][:, :, 0]), r"'shapedirs' .* must have shape \[\d+, 3, \*\], got \[\d+, 3\]"),
        (lambda a: a.update(shapedirs=a["shapedirs"][:, :, :305]), r"'shapedirs' has 305 components"),
        (lambda a: a.update(posedirs=a["posedirs"][:, :, :9]), r"'posedirs' .* must have shape \[\d+, 3, 36\]"),
        (lambda a: a.update(J_regressor=a["J_regressor"][:4]), r"'J_regressor' .* must have shape \[5, \d+\]"),
        (lambda a: a.update(kintree_table=a["kintree_table"][:, :4]), r"'kintree_table' .* must have shape \[2, 5\]"),
        (lambda a: a.update(weights=a["weights"][:-1]), r"'weights' .* must have shape \[\d+, 5\]"),
        (lambda a: a.update(f=a["f"] + 1000), r"'f' must index the \d+ vertices"),
        (lambda a: a.update(v_template=a["v_template"][:, :2]), r"'v_template' .* must have shape \[\*, 3\]"),
    ],
)
def test_malformed_models_give_specific_messages(tmp_path, arrays, edit, message):
    edit(arrays)
    syn.write_flame_pickle(tmp_path / "generic_model.pkl", arrays)
    syn.write_uv_npz(tmp_path / "FLAME_texture.npz", syn.make_synthetic_flame())
    with pytest.raises(HeadModelError, match=message):
        load_flame(tmp_path, num_identity=NUM_ID, num_expressions=NUM_EXP, cache=False)


def test_bad_options_and_missing_files(tmp_path, flame_dir, arrays):
    root, _ = flame_dir
    with pytest.raises(HeadModelError, match="num_expressions must be in 1..100"):
        load_flame(root, num_expressions=101)
    with pytest.raises(HeadModelError, match="num_identity must be in 1..300"):
        load_flame(root, num_identity=0)
    with pytest.raises(HeadModelError, match="does not exist"):
        load_flame(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HeadModelError, match="no FLAME model found .*flame.is.tue.mpg.de"):
        load_flame(empty)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    syn.write_flame_pickle(lonely / "generic_model.pkl", arrays)
    with pytest.raises(HeadModelError, match="no FLAME UV layout found"):
        load_flame(lonely)
    other = syn.make_synthetic_flame()
    other["f"] = other["f"][:, ::-1].copy()  # flipped winding: triangles no longer match
    syn.write_uv_obj(lonely / "head_template_mesh.obj", other)
    with pytest.raises(HeadModelError, match="does not match the FLAME model's triangles"):
        load_flame(lonely)


# ---- cache ----------------------------------------------------------------------------------
def test_cache_is_written_and_reused_without_unpickling(flame_dir, arrays, monkeypatch, tmp_path):
    root, uvs = flame_dir
    first = load_flame(root, num_identity=NUM_ID, num_expressions=NUM_EXP)
    folder = first.runtime.model_dir
    assert folder.parent == tmp_path / "cache" / "flame"
    for name in (FLAME_SMPLX_FILE, FLAME_EMBEDDING_FILE, f"headmodel-i{NUM_ID}-e{NUM_EXP}.npz"):
        assert (folder / name).is_file()
    with open(folder / FLAME_EMBEDDING_FILE, "rb") as fh:  # plain-numpy pickle smplx can read
        emb = pickle.load(fh, encoding="latin1")
    assert set(emb) == {"lmk_face_idx", "lmk_b_coords"} and emb["lmk_b_coords"].shape == (1, 3)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("cache hit must not unpickle the FLAME file")

    monkeypatch.setattr(flame_mod, "safe_load_pickle", no_unpickling)
    second = load_flame(root, num_identity=NUM_ID, num_expressions=NUM_EXP)
    assert isinstance(second, FlameHeadModel) and second.runtime.model_dir == folder
    np.testing.assert_array_equal(second.faces, first.faces)
    np.testing.assert_allclose(second.face_uvs, uvs, atol=1e-6)
    np.testing.assert_allclose(second.vertices, first.vertices)
    assert second.region_names == first.region_names and second.licence == first.licence
    ident = torch.linspace(-1, 1, NUM_ID)
    expr = torch.linspace(1, -1, NUM_EXP)
    out = second.deform(second.torch_buffers(), ident, expr)
    np.testing.assert_allclose(out.numpy(), _expected(arrays, ident.numpy(), expr.numpy()), atol=1e-5)
    # different component counts need a conversion (a new headmodel file in the same folder)
    with pytest.raises(AssertionError, match="cache hit"):
        load_flame(root, num_identity=NUM_ID + 1, num_expressions=NUM_EXP)


def test_cache_key_follows_file_contents(flame_dir, arrays):
    root, _ = flame_dir
    first = load_flame(root, num_identity=NUM_ID, num_expressions=NUM_EXP)
    arrays = dict(arrays, v_template=arrays["v_template"] * 1.01)
    syn.write_flame_pickle(root / "FLAME2020" / "generic_model.pkl", arrays)
    second = load_flame(root, num_identity=NUM_ID, num_expressions=NUM_EXP)
    assert second.runtime.model_dir != first.runtime.model_dir
    np.testing.assert_allclose(second.vertices, arrays["v_template"], atol=1e-6)


def test_corrupt_cache_is_rebuilt(flame_dir):
    root, _ = flame_dir
    first = load_flame(root, num_identity=NUM_ID, num_expressions=NUM_EXP)
    path = first.runtime.model_dir / f"headmodel-i{NUM_ID}-e{NUM_EXP}.npz"
    path.write_bytes(b"garbage")
    again = load_flame(root, num_identity=NUM_ID, num_expressions=NUM_EXP)
    np.testing.assert_array_equal(again.faces, first.faces)
    assert path.stat().st_size > 100
