"""A bundle's ONNX graphs, checked with ``onnx`` before onnxruntime sees them, and their outputs each frame.

Why: a bundle's graphs are programs. A hostile graph whose inputs and outputs match the manifest can
still allocate a gigabyte a frame (an ``Expand`` to a huge shape), hang the player (a ``Loop`` of
10^12 iterations), read files next to it (external tensor data), call custom kernels, or return NaN
or wrongly sized outputs that would play on silently. ``check_graph`` accepts only graphs that
sega's exporter could have written:

* the operators of ``GRAPH_OPS`` (derived from the graphs ``export/graphs.py`` writes), in the
  default ONNX domain at opsets ``MIN_OPSET`` .. ``OPSET``; no control flow, no attribute holding a
  graph, no model-local functions, no training info, no sparse tensors;
* every tensor's data inside the file (no external data), initialisers and constants together at
  most ``BundleLimits.max_initializer_bytes``;
* every value's shape known before running (static shape inference, node by node, with the small
  shape-computing sub-graphs evaluated by ``onnx.reference``), each value at most
  ``max_value_elements`` elements, all values together at most ``max_total_elements``, and the
  estimated multiply-adds of a frame at most ``max_frame_work``.

``check_frame_output`` then holds every output of every frame to the shape found here (which the
manifest also states) and to finite values. Every refusal is a ``BundleError`` naming the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sega.errors import SegaError

from .graphs import OPSET


class BundleError(SegaError, ValueError):
    """A bundle that cannot be loaded or played (the message says which file and why)."""


@dataclass(frozen=True)
class BundleLimits:
    """Caps on what a bundle may hold and compute (a hostile bundle must not fill the disk or the
    memory, nor stall the player). The graph caps leave a wide margin over sega's own graphs, measured
    on the fast-preset astronaut's decoder (atlas 128, 4181 dynamic splats): 597 nodes, 3.9 MB of
    initialisers, a largest value (initialisers included) of 144,828 elements, 2.8 M elements in all
    values, ~10 M operations a frame (``_node_work``). Those grow with the number of dynamic splats,
    about 7x for the high preset (atlas 320) and 16x for an atlas of 512."""

    max_members: int = 256  # files in a zip or folder
    max_member_bytes: int = 512 * 1024 * 1024  # uncompressed size of one file
    max_total_bytes: int = 1024 * 1024 * 1024  # uncompressed size of all files
    max_ratio: float = 200.0  # uncompressed / compressed size of one member above which it is a bomb
    ratio_min_bytes: int = 1024 * 1024  # the ratio check applies to members larger than this
    max_manifest_bytes: int = 4 * 1024 * 1024  # a real manifest is ~10 KB; long provenance may grow it
    max_graph_bytes: int = 256 * 1024 * 1024  # one .onnx file (the fast preset's decoder is 4 MB)
    max_graph_nodes: int = 20_000  # nodes of one graph (sega's decoder: ~600)
    max_initializer_bytes: int = 256 * 1024 * 1024  # initialisers + Constant tensors of one graph
    max_value_elements: int = 1 << 23  # elements of any one value (32 MiB as float32; ~8x the high preset's largest)
    max_total_elements: int = 1 << 27  # elements of all values of one graph (512 MiB as float32; ~7x the high preset)
    max_frame_work: int = 1 << 31  # estimated operations of one graph per frame (~1 s of one core; ~30x the high preset)


# Operators sega's exporter writes (``export.graphs``: ``ExpressionFeatureGraph`` and
# ``DynamicBranchGraph`` through torch's legacy exporter at ``OPSET``, plus the Casts of
# ``int32_gather_indices``), collected from the graphs of a real avatar bundle and from the code paths
# it does not take there (the four-tap sampler: GatherElements/Mul/Add; SiLU encoder layers:
# Sigmoid/Mul). Anything else is refused: each of these is a fixed-shape tensor op whose cost is
# bounded by the sizes of its inputs and outputs.
EXPORTER_OPS = frozenset({
    "Add", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "Cos", "Div", "Equal", "Exp",
    "Expand", "Gather", "GatherElements", "Gemm", "LeakyRelu", "Less", "MatMul", "Max", "Min", "Mul", "Neg",
    "ReduceSum", "Reshape", "Resize", "Shape", "Sigmoid", "Sin", "Slice", "Split", "Sqrt", "Squeeze", "Sub", "Tanh",
    "Unsqueeze", "Where",
})  # fmt: skip
# Also read: Transpose (format-1 bundles hold splat-major [D, C] outputs, made by transposing the
# component-major rows; the synthetic test bundle of ``sega/testing/bundle_fixture.py`` uses it too).
READ_ALSO_OPS = frozenset({"Transpose"})
GRAPH_OPS = EXPORTER_OPS | READ_ALSO_OPS
CONTROL_FLOW_OPS = frozenset({"Loop", "If", "Scan", "SequenceMap"})  # named in the refusal message
ONNX_DOMAINS = ("", "ai.onnx")  # the default operator set; custom domains name custom kernels
MIN_OPSET = 13  # the oldest default-domain opset whose operator forms (Split/Squeeze axes as inputs ...) this check knows
MAX_RANK = 8  # dimensions of any value (sega's graphs use at most 4)
FOLD_MAX_ELEMENTS = 4096  # constant values up to this size are evaluated for shape inference (shapes, axes, scales)
FLOAT_TYPE = 1  # onnx.TensorProto.FLOAT: the contract's only input / output type
VALUE_TYPES = (1, 6, 7, 9, 11)  # FLOAT, INT32, INT64, BOOL, DOUBLE (scale constants of the exported Resize): no strings
MATMUL_OPS = ("MatMul", "Gemm")


# ---- file-level checks ------------------------------------------------------------------------


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (third-party messages can span many lines), capped."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def _parse(data: bytes, name: str):
    import onnx

    try:
        return onnx.load_model_from_string(data)
    except Exception as err:  # protobuf's DecodeError, RecursionError on deep nesting, ...
        raise BundleError(f"{name} is not a loadable ONNX graph: {first_line(err)}") from err


def _check_header(model, name: str) -> int:
    """Opsets, functions, training info, sparse tensors -> the default-domain opset version."""
    versions = {}
    for entry in model.opset_import:
        if entry.domain not in ONNX_DOMAINS:
            raise BundleError(f"{name}: custom operator domain {entry.domain[:60]!r}; bundles use standard ONNX operators only")
        versions[entry.domain or ""] = int(entry.version)
    version = versions.get("", versions.get("ai.onnx"))
    if version is None or not MIN_OPSET <= version <= OPSET:
        raise BundleError(f"{name}: ONNX opset {version} is not one this player reads ({MIN_OPSET} to {OPSET})")
    if len(model.functions):
        raise BundleError(f"{name}: the graph defines functions; bundles use standard ONNX operators only")
    if len(model.training_info):
        raise BundleError(f"{name}: the graph carries training information (more graphs); bundles hold one graph")
    if len(model.graph.sparse_initializer):
        raise BundleError(f"{name}: the graph holds sparse initialisers, which sega's exporter never writes")
    return version


def _tensor_bytes(tensor, name: str) -> int:
    """Bytes of an initialiser / Constant tensor; refuses data kept outside the file."""
    if tensor.data_location == 1 or len(tensor.external_data):  # TensorProto.EXTERNAL
        raise BundleError(f"{name}: tensor {tensor.name[:60]!r} keeps its data in an external file; bundles hold self-contained graphs")
    return tensor.ByteSize()


def _check_attributes(node, name: str) -> int:
    """Refuses attributes that hold graphs or sparse tensors; returns the bytes of tensor attributes."""
    total = 0
    for attr in node.attribute:
        if attr.type in (5, 10) or attr.HasField("g") or len(attr.graphs):  # GRAPH, GRAPHS
            raise BundleError(f"{name}: node {node.op_type} holds a sub-graph in attribute {attr.name!r}; bundles hold no control flow")
        if attr.type in (11, 12, 9) or attr.HasField("sparse_tensor") or len(attr.sparse_tensors) or len(attr.tensors):
            raise BundleError(f"{name}: node {node.op_type} has attribute {attr.name!r} of a kind sega's exporter never writes")
        if attr.ref_attr_name:
            raise BundleError(f"{name}: node {node.op_type} refers to a function attribute; bundles hold no functions")
        if attr.HasField("t"):
            total += _tensor_bytes(attr.t, name)
    return total


def _check_nodes(model, name: str, limits: BundleLimits) -> None:
    """Operator allow-list, domains, attributes, node count and tensor bytes."""
    graph = model.graph
    if len(graph.node) > limits.max_graph_nodes:
        raise BundleError(f"{name}: {len(graph.node)} nodes, more than the {limits.max_graph_nodes} a bundle graph may have")
    total = sum(_tensor_bytes(t, name) for t in graph.initializer)
    for node in graph.node:
        if node.domain not in ONNX_DOMAINS:
            raise BundleError(f"{name}: operator {node.op_type[:60]!r} of custom domain {node.domain[:60]!r} is not allowed")
        if node.op_type in CONTROL_FLOW_OPS:
            raise BundleError(f"{name}: control flow ({node.op_type}) is not allowed in a bundle graph")
        if node.op_type not in GRAPH_OPS:
            raise BundleError(f"{name}: operator {node.op_type[:60]!r} is not one of the {len(GRAPH_OPS)} operators sega's exporter writes")
        total += _check_attributes(node, name)
    if total > limits.max_initializer_bytes:
        raise BundleError(f"{name}: {total} bytes of weights and constants, over the {limits.max_initializer_bytes}-byte limit")


def _check_model(model, name: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(model)
    except Exception as err:  # onnx.checker.ValidationError and friends
        raise BundleError(f"{name} is not a valid ONNX graph: {first_line(err)}") from err


# ---- static shapes ----------------------------------------------------------------------------


def _dims(type_proto) -> list[int] | None:
    """Static dims of a tensor type, or None when not all are known numbers."""
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    dims = type_proto.tensor_type.shape.dim
    if any(not d.HasField("dim_value") or d.dim_value < 0 for d in dims):
        return None
    return [int(d.dim_value) for d in dims]


def _node_work(op: str, in_shapes: list[list[int]], out_shapes: list[list[int]], attrs: dict) -> int:
    """Estimated element operations of one node: the elements it reads and writes, plus the
    multiply-adds of a MatMul / Gemm (output x K) or Conv (output x input channels per group x kernel)."""
    work = sum(math.prod(s) for s in in_shapes + out_shapes)
    if op in MATMUL_OPS and in_shapes and in_shapes[0] and out_shapes:
        a = in_shapes[0]
        k = a[0] if (op == "Gemm" and attrs.get("transA")) or len(a) == 1 else a[-1]
        work += math.prod(out_shapes[0]) * k
    elif op == "Conv" and len(in_shapes) > 1 and out_shapes:
        work += math.prod(out_shapes[0]) * math.prod(in_shapes[1][1:])
    return work


class _ShapeWalk:
    """Node-by-node static shape inference of a checked graph (see the module docstring)."""

    def __init__(self, model, name: str, opset: int, limits: BundleLimits):
        from onnx import numpy_helper

        self.model, self.name, self.opset, self.limits = model, name, opset, limits
        self.types: dict = {}  # value name -> onnx.TypeProto with static dims
        self.small: dict = {}  # value name -> TensorProto of a constant of at most FOLD_MAX_ELEMENTS elements
        self.total = self.work = 0
        for init in model.graph.initializer:
            dims = list(init.dims)
            self._set_type(init.name, init.data_type, dims, "initialiser")
            if math.prod(dims) <= FOLD_MAX_ELEMENTS:
                self.small[init.name] = init
        self._np = numpy_helper

    def _set_type(self, value: str, elem_type: int, dims: list[int], what: str) -> None:
        from onnx import helper

        if elem_type not in VALUE_TYPES:
            raise BundleError(f"{self.name}: {what} {value[:60]!r} has element type {elem_type}, not one sega's graphs compute with")
        n = math.prod(dims)
        if len(dims) > MAX_RANK or n > self.limits.max_value_elements:
            raise BundleError(f"{self.name}: {what} {value[:60]!r} has shape {dims[:MAX_RANK + 1]}, over the "
                              f"{self.limits.max_value_elements}-element limit of one value")  # fmt: skip
        self.total += n
        if self.total > self.limits.max_total_elements:
            raise BundleError(f"{self.name}: the graph's values add up to more than the {self.limits.max_total_elements}-element limit")
        self.types[value] = helper.make_tensor_type_proto(elem_type, dims)

    def add_input(self, value: str, elem_type: int, dims: list[int]) -> None:
        self._set_type(value, elem_type, dims, "input")

    def run(self) -> None:
        for node in self.model.graph.node:
            self._node(node)
        if self.work > self.limits.max_frame_work:
            raise BundleError(f"{self.name}: about {self.work} operations a frame, over the {self.limits.max_frame_work} limit")

    def dims(self, value: str) -> list[int]:
        return [d.dim_value for d in self.types[value].tensor_type.shape.dim]

    def _node(self, node) -> None:
        from onnx import defs, helper, shape_inference

        inputs = [n for n in node.input if n]
        missing = [n for n in inputs if n not in self.types]
        if missing:
            raise BundleError(f"{self.name}: node {node.op_type} reads {missing[0][:60]!r}, which nothing before it defines")
        try:
            schema = defs.get_schema(node.op_type, self.opset, "")
            inferred = shape_inference.infer_node_outputs(
                schema, node, {n: self.types[n] for n in inputs}, {n: self.small[n] for n in inputs if n in self.small},
                opset_imports=[helper.make_opsetid("", self.opset)],
            )  # fmt: skip
        except Exception as err:  # onnx.shape_inference.InferenceError, SchemaError, ...
            raise BundleError(f"{self.name}: node {node.op_type} {node.name[:60]!r} fails shape inference: {first_line(err)}") from err
        outs = [o for o in node.output if o]
        for out in outs:
            dims = _dims(inferred[out]) if out in inferred else None
            if dims is None:
                raise BundleError(f"{self.name}: the shape of {out[:60]!r} ({node.op_type}) is not known before running; "
                                  "bundle graphs must have fixed shapes")  # fmt: skip
            if out in self.types:
                raise BundleError(f"{self.name}: value {out[:60]!r} is defined twice")
            self._set_type(out, inferred[out].tensor_type.elem_type, dims, "value")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.type in (1, 2)}  # FLOAT, INT
        self.work += _node_work(node.op_type, [self.dims(n) for n in inputs], [self.dims(o) for o in outs], attrs)
        self._fold(node, inputs, outs)

    def _fold(self, node, inputs: list[str], outs: list[str]) -> None:
        """Evaluate a node whose inputs are small constants and whose outputs are small (shape arithmetic),
        so that the shapes computed from them are known to the nodes after it."""
        if any(math.prod(self.dims(o)) > FOLD_MAX_ELEMENTS for o in outs):
            return
        if node.op_type == "Shape":
            attrs = {a.name: a.i for a in node.attribute}
            shape = np.asarray(self.dims(inputs[0]), dtype=np.int64)[attrs.get("start", 0) : attrs.get("end")]
            self.small[outs[0]] = self._np.from_array(shape, outs[0])
            return
        if not all(n in self.small for n in inputs):
            return
        from onnx.reference import ReferenceEvaluator

        try:
            with np.errstate(all="ignore"):
                feeds = {n: self._np.to_array(self.small[n]) for n in inputs}
                results = ReferenceEvaluator(node, opsets={"": self.opset}).run(None, feeds)
        except Exception as err:  # a constant sub-graph the reference cannot evaluate: its users stay unknown
            raise BundleError(f"{self.name}: constant node {node.op_type} {node.name[:60]!r} cannot be evaluated: {first_line(err)}") from err
        for out, value in zip(outs, results):
            value = np.asarray(value)
            if list(value.shape) != self.dims(out):
                raise BundleError(f"{self.name}: constant node {node.op_type} gives shape {list(value.shape)}, inference said {self.dims(out)}")
            self.small[out] = self._np.from_array(value, out)


# ---- the graph's inputs and outputs vs the manifest ---------------------------------------------


def _check_inputs(model, name: str, want: dict[str, list[int]]) -> None:
    """Graph inputs: exactly the step's, float32, declared dims (where numbers) equal to the manifest's."""
    declared = {i.name: i for i in model.graph.input}
    if set(declared) != set(want):
        raise BundleError(f"{name}: graph inputs {sorted(declared)[:8]} do not match the manifest's {sorted(want)}")
    for n, shape in want.items():
        t = declared[n].type
        if not t.HasField("tensor_type") or t.tensor_type.elem_type != FLOAT_TYPE:
            raise BundleError(f"{name}: input {n!r} is not float32, the contract needs float32")
        got = [d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim]
        if t.tensor_type.HasField("shape") and (len(got) != len(shape) or any(g is not None and g != s for g, s in zip(got, shape))):
            raise BundleError(f"{name}: input {n!r} has shape {got}, the manifest says {shape}")


def check_graph(data: bytes, name: str, inputs: dict[str, list[int]], outputs: list[str], limits: BundleLimits) -> dict[str, list[int]]:
    """Check one graph file's bytes (see the module docstring) before onnxruntime loads them.

    data: the .onnx file's bytes (already size-checked); name: its bundle path, for messages
    inputs: {graph input name: static shape} the step feeds; outputs: [names] the step reads
    returns: {output name: static shape} of the step's outputs (all float32).
    """
    model = _parse(data, name)
    opset = _check_header(model, name)
    _check_nodes(model, name, limits)
    _check_model(model, name)
    _check_inputs(model, name, inputs)
    declared = [o.name for o in model.graph.output]
    if not set(outputs) <= set(declared):
        raise BundleError(f"{name}: graph outputs {sorted(declared)[:8]} do not include the manifest's {outputs}")
    walk = _ShapeWalk(model, name, opset, limits)
    for n, shape in inputs.items():
        walk.add_input(n, FLOAT_TYPE, list(shape))
    walk.run()
    for n in outputs:
        if walk.types[n].tensor_type.elem_type != FLOAT_TYPE:
            raise BundleError(f"{name}: output {n!r} is not float32, the contract needs float32")
    return {n: walk.dims(n) for n in outputs}


def check_frame_output(graph: str, name: str, value, shape: tuple[int, ...]) -> np.ndarray:
    """One output of one frame: float32 of the checked ``shape`` and finite, else ``BundleError``."""
    if not isinstance(value, np.ndarray) or value.dtype != np.float32 or value.shape != tuple(shape):
        got = getattr(value, "shape", type(value).__name__)
        raise BundleError(f"{graph}: output {name!r} came back as {got} ({getattr(value, 'dtype', '?')}), the graph promised float32 {list(shape)}")
    if not np.isfinite(value).all():
        raise BundleError(f"{graph}: output {name!r} holds NaN or infinite values at this frame")
    return value


__all__ = ["GRAPH_OPS", "BundleError", "BundleLimits", "check_frame_output", "check_graph", "first_line"]
