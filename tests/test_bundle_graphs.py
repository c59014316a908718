"""Hostile ONNX graphs in a bundle (``export.bundle_checks``): refused with ``onnx`` before onnxruntime
loads them, or caught every frame (NaN, wrong shapes, onnxruntime failures), each as one ``BundleError``.

Every hostile graph here keeps the manifest's input / output names, dtypes and shapes, so only the new
checks can catch it: the synthetic decoder of ``sega/testing/bundle_fixture.py`` with nodes spliced in front
of one of its outputs.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from sega.testing.bundle_fixture import make_test_bundle
from onnx import TensorProto, helper, numpy_helper

from export.bundle_checks import EXPORTER_OPS, GRAPH_OPS, READ_ALSO_OPS
from export.playback import BundleError, BundleLimits, load_bundle
from sega.cli import main

DECODER = "dynamic_decoder.onnx"
NUM_DYNAMIC = 200
HUGE_ELEMENTS = 1 << 28  # 1 GiB of float32
MAX_REFUSAL_S = 5.0  # a refusal must not wait for onnxruntime to build (or run) anything large
MAX_REFUSAL_RSS_KB = 200 * 1024  # ... nor allocate the huge tensor (peak RSS growth, kB)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("bundle") / "b", num_splats=800, num_dynamic=NUM_DYNAMIC)


@pytest.fixture
def bundle(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "b"))


def rehash(b: Path, extra: tuple[str, ...] = ()) -> None:
    m = json.loads((b / "manifest.json").read_text())
    m["files"] = {f: hashlib.sha256((b / f).read_bytes()).hexdigest() for f in list(m["files"]) + list(extra)}
    (b / "manifest.json").write_text(json.dumps(m))


def decoder(b: Path) -> onnx.ModelProto:
    return onnx.load(str(b / DECODER))


def splice(model: onnx.ModelProto, output: str, nodes_for) -> onnx.ModelProto:
    """Rename the producer of graph output ``output`` to ``output + '_raw'`` and append
    ``nodes_for(raw_name, output)`` (a list of nodes that make ``output`` from it)."""
    raw = output + "_raw"
    for node in model.graph.node:
        for i, o in enumerate(node.output):
            if o == output:
                node.output[i] = raw
    model.graph.node.extend(nodes_for(raw, output))
    return model


def const(name: str, array) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name + "_value"))


def save(b: Path, model: onnx.ModelProto, extra: tuple[str, ...] = ()) -> Path:
    onnx.save(model, str(b / DECODER))
    rehash(b, extra)
    return b


def refused_quickly(b: Path, message: str, limits: BundleLimits = BundleLimits()) -> None:
    rss0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(BundleError, match=message) as err:
        load_bundle(b, limits)
    assert time.perf_counter() - t0 < MAX_REFUSAL_S
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < MAX_REFUSAL_RSS_KB
    assert len(str(err.value).splitlines()) == 1 and ".onnx" in str(err.value)  # one line naming the graph file


# ---- the allow-list ---------------------------------------------------------------------------------


def test_allow_list_covers_the_fixture_and_nothing_of_control_flow(pristine):
    used = {n.op_type for g in ("displacement_vae.onnx", DECODER) for n in onnx.load(str(pristine / g)).graph.node}
    assert used <= GRAPH_OPS, used - GRAPH_OPS
    assert not {"Loop", "If", "Scan", "SequenceMap", "Identity"} & GRAPH_OPS
    assert EXPORTER_OPS.isdisjoint(READ_ALSO_OPS)


# ---- refused before onnxruntime --------------------------------------------------------------------


def _loop(raw: str, out: str) -> list:
    """out = raw + 0 * (a float [D] carried through 10^12 iterations of a Loop)."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [NUM_DYNAMIC])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [NUM_DYNAMIC])],
    )  # fmt: skip
    return [const("trips", np.array(10**12, np.int64)), const("go", np.array(True)), const("zero", np.float32(0.0)),
            helper.make_node("Loop", ["trips", "go", raw], ["looped"], body=body),
            helper.make_node("Mul", ["looped", "zero"], ["nothing"]), helper.make_node("Add", [raw, "nothing"], [out])]  # fmt: skip


def _if(raw: str, out: str) -> list:
    branch = helper.make_graph([helper.make_node("Identity", [raw], ["y"])], "branch", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [NUM_DYNAMIC])])  # fmt: skip
    return [const("flag", np.array(True)), helper.make_node("If", ["flag"], [out], then_branch=branch, else_branch=branch)]


def _outside_op(raw: str, out: str) -> list:
    return [helper.make_node("Abs", [raw], [out])]  # a harmless standard op, but not one the exporter writes


def _custom_domain(raw: str, out: str) -> list:
    return [helper.make_node("Relu", [raw], [out], domain="com.example.evil")]


def _huge_expand(raw: str, out: str) -> list:
    """out = raw + 0 * sum(Expand(1, [2^28])): 1 GiB a frame, every name and shape as the manifest says."""
    return [const("one", np.ones(1, np.float32)), const("huge", np.array([HUGE_ELEMENTS], np.int64)), const("zero", np.float32(0.0)),
            helper.make_node("Expand", ["one", "huge"], ["big"]), helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
            helper.make_node("Mul", ["total", "zero"], ["nothing"]), helper.make_node("Add", [raw, "nothing"], [out])]  # fmt: skip


def _data_dependent_shape(raw: str, out: str) -> list:
    """Reshape to a shape computed from the frame's expression: not known before running."""
    return [const("to_int", np.array(0, np.int64)), helper.make_node("Cast", ["expression"], ["e_int"], to=TensorProto.INT64),
            helper.make_node("ReduceSum", ["e_int"], ["e_sum"], keepdims=0), helper.make_node("Add", ["e_sum", "to_int"], ["extra"]),
            const("base", np.array([NUM_DYNAMIC], np.int64)), helper.make_node("Unsqueeze", ["extra", "axis0"], ["extra1"]),
            const("axis0", np.array([0], np.int64)), helper.make_node("Add", ["base", "extra1"], ["target"]),
            helper.make_node("Reshape", [raw, "target"], [out])]  # fmt: skip


@pytest.mark.parametrize(
    "build, message",
    [(_loop, r"control flow \(Loop\)"), (_if, r"control flow \(If\)"), (_outside_op, "operator 'Abs' is not one of the"),
     (_custom_domain, "custom"), (_huge_expand, "over the 8388608-element limit"),
     (_data_dependent_shape, "is not known before running")],
)  # fmt: skip
def test_hostile_graphs_with_matching_io_are_refused_before_onnxruntime(bundle, build, message):
    model = splice(decoder(bundle), "dynamic_opacities", build)
    if build is _custom_domain:
        model.opset_import.append(helper.make_opsetid("com.example.evil", 1))
    if build is _data_dependent_shape:  # the constant must come before its user (topological order)
        nodes = list(model.graph.node)
        axis = next(n for n in nodes if n.output[0] == "axis0")
        nodes.remove(axis)
        nodes.insert(0, axis)
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    refused_quickly(save(bundle, model), message)


def test_external_data_is_refused(bundle):
    model = decoder(bundle)
    onnx.save_model(model, str(bundle / DECODER), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="decoder.bin", size_threshold=0)  # fmt: skip
    rehash(bundle, ("decoder.bin",))
    refused_quickly(bundle, "external file")


def test_functions_and_weight_caps_are_refused(bundle, pristine):
    model = decoder(bundle)
    model.functions.append(helper.make_function("com.example", "F", ["x"], ["y"], [helper.make_node("Neg", ["x"], ["y"])],
                                                [helper.make_opsetid("", 17)]))  # fmt: skip
    refused_quickly(save(bundle, model), "defines functions")
    refused_quickly(pristine, "over the 1000-byte limit", BundleLimits(max_initializer_bytes=1000))
    refused_quickly(pristine, "values add up to more than", BundleLimits(max_total_elements=10_000))
    refused_quickly(pristine, "operations a frame", BundleLimits(max_frame_work=10_000))
    refused_quickly(pristine, "over the 100-byte limit of a graph", BundleLimits(max_graph_bytes=100))


# ---- caught every frame ----------------------------------------------------------------------------


def _nan_means(raw: str, out: str) -> list:
    """out = raw / (raw - raw): allowed ops (Sub, Div), every shape static, inf / NaN at run time."""
    return [helper.make_node("Sub", [raw, raw], ["zeros"]), helper.make_node("Div", [raw, "zeros"], [out])]


def test_nan_outputs_are_refused_each_frame_and_play_reports_one_line(bundle, tmp_path, capsys):
    save(bundle, splice(decoder(bundle), "dynamic_means", _nan_means))
    with load_bundle(bundle) as b:  # every check before running passes: the graph is well formed
        with pytest.raises(BundleError, match="dynamic_decoder.onnx: output 'dynamic_means' holds NaN or infinite values"):
            b.frame()
    out = tmp_path / "nan.mp4"
    assert main(["play", str(bundle), "-o", str(out), "--max-frames", "1", "--size", "16", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "NaN" in err[0]
    assert not out.exists() and not (tmp_path / "nan.partial.mp4").exists()


def _bad_index(raw: str, out: str) -> list:
    """out = Gather(raw, index) with one index far outside [0, D): shapes static, onnxruntime fails at run time."""
    index = np.arange(NUM_DYNAMIC, dtype=np.int64)
    index[5] = 10**6
    return [const("index", index), helper.make_node("Gather", [raw, "index"], [out], axis=0)]


def test_onnxruntime_failures_at_run_time_become_bundle_errors(bundle):
    save(bundle, splice(decoder(bundle), "dynamic_opacities", _bad_index))
    with load_bundle(bundle) as b:
        with pytest.raises(BundleError, match="dynamic_decoder.onnx: onnxruntime failed on this frame") as err:
            b.frame()
    assert len(str(err.value).splitlines()) == 1


class _ReshapedSession:
    """A session whose outputs come back reshaped: the per-frame check must not trust the static
    inference (no graph of the allowed operators was found whose run-time shape differs from it)."""

    def __init__(self, session, name: str, shape: tuple[int, ...]):
        self.session, self.name, self.shape = session, name, shape

    def run(self, names, feeds):
        values = self.session.run(names, feeds)
        return [v.reshape(self.shape) if n == self.name else v for n, v in zip(names, values)]


def test_outputs_of_another_shape_at_run_time_are_refused(pristine):
    with load_bundle(pristine) as b:
        graph, step, session = b._sessions[1]
        b._sessions[1] = (graph, step, _ReshapedSession(session, "dynamic_means", (NUM_DYNAMIC * 3,)))
        with pytest.raises(BundleError, match=r"output 'dynamic_means' came back as \(600,\).*promised float32 \[200, 3\]"):
            b.frame()


def test_the_checked_fixture_still_plays_like_onnxruntime(pristine):
    """The checks change nothing for a good bundle: same outputs, finite, of the manifest's shapes."""
    from sega.testing.bundle_fixture import reference_outputs

    with load_bundle(pristine) as b:
        expr = b.expression_with(jawOpen=0.9, eyeBlink_L=1.0)
        pose = np.array([0.2, -0.1, 0.0, 0.0, 0.01, 0.0], np.float32)
        got, ref = b.frame(expr, pose), reference_outputs(pristine, expr, pose)
        for name, spec in b.manifest["frame"]["outputs"].items():
            assert list(got[name].shape) == spec["shape"] and np.array_equal(got[name], ref[name]), name
        with pytest.raises(BundleError, match="must be finite"):
            b.frame(np.full(len(b.expression_names), np.nan, np.float32))
