"""Simplify an exported transformer graph: fold at export time what the exporter leaves to every call.

Optimum's BERT export (scaled-dot-product attention) recomputes, on every inference, things that are fixed once
the model is exported, and ONNX Runtime's load-time optimiser folds none of them, because they hang off the
dynamic batch and sequence axes:

- each attention's reshape targets, from ``Shape -> Gather -> Unsqueeze -> Concat`` chains;
- its scale, ``1 / sqrt(sqrt(head_dim))``, from ``Shape -> Slice -> Cast -> Sqrt -> Div -> Sqrt``, applied by two
  ``Mul`` on activations (query and key);
- the query, key and value projections, as three MatMuls over one input (three small GEMMs and, once
  quantized, three activation quantizations where one would do).

After the exporter's ``Constant`` nodes become initializers, three passes, each exact up to float rounding, then
dead-node removal:

1. :func:`fold_static_shapes` evaluates shape arithmetic with the batch and sequence dims as symbols: a value
   that comes out constant becomes an initializer, and a Reshape target that still holds symbols is rewritten
   with ONNX's ``0`` (copy that input dim) and ``-1`` (infer one dim) where that is exact.
2. :func:`fold_scalar_scales` folds a ``Mul`` by a scalar constant into the weight and bias of the projection it
   follows (through Reshape and Transpose, which commute with it).
3. :func:`merge_parallel_matmuls` turns MatMuls with constant weights that read the same input, each followed by
   its bias ``Add``, into one MatMul, one Add and a ``Split``. Per-channel int8 gives every output column its own
   scale, so the merged weight quantizes to the same numbers.

``simplify_model(model, passes)`` runs a subset (:data:`PASSES`): the export runs all three for ONNX Runtime and the
shape folding alone for OpenVINO, which fuses attention itself and measured faster without the other two.

On the SST-2 MiniLM (``bench/results/simplify-sst2``; batch 1, one thread, ONNX Runtime per-channel int8) it
took the graph from 529 to 213 nodes and the time of a dev-set text down by 5.0% (dense) and 12.7% (50%-pruned);
1.3% and 5.0% at 128 tokens, where the GEMMs dominate. Graphs with com.microsoft fused ops (``--optimize``) are
not passed here.

Needs onnx and numpy; ONNX Runtime's symbolic shape inference where it is installed (the batch and sequence
axes keep their names through every op), else ONNX's own.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgesent.errors import ExportError


logger = logging.getLogger(__name__)

# The passes after constant folding, by name, in the order they always run (the scale folding needs the folded
# shapes). An export may run a subset: OpenVINO runs fastest on the shape folding alone (edgesent.export).
PASSES = ("fold_shapes", "fold_scales", "merge_matmuls")
MAX_FOLD_ELEMENTS = 4096  # values larger than this are never evaluated at export time (weights, activations)
MAX_PASSES = 8  # fold_static_shapes reaches a fixed point in 2-3 passes on BERT; a bound, not a tuning knob
# Shape arithmetic that stays exact with symbolic elements (the dynamic axes).
_SYMBOLIC_OPS = ("Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Identity")
_ONNX_DOMAINS = ("", "ai.onnx")
_LAYOUT_OPS = ("Reshape", "Transpose")  # a scalar factor commutes with them
_RANDOM_OPS = ("RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout")  # never folded


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in _ONNX_DOMAINS), 0)


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _infer_dims(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Each tensor's dims: ints where static, names where symbolic (one name is one size), fresh names if unknown.

    ONNX Runtime's symbolic shape inference keeps the input axes' names (``batch_size``, ``sequence_length``)
    through reshapes and attention; ONNX's own invents a new name after most of them, which only costs folds.
    """
    graph = None
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        graph = SymbolicShapeInference.infer_shapes(model, auto_merge=True).graph
    except Exception as err:  # noqa: BLE001 - any failure: fall back to ONNX's inference, fewer folds
        logger.debug("symbolic shape inference failed (%s); using onnx.shape_inference", err)
    if graph is None:
        graph = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    fresh = itertools.count()
    dims: dict[str, list[int | str]] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            dims[info.name] = [
                d.dim_value if d.HasField("dim_value") else d.dim_param or f"?{next(fresh)}" for d in tensor.shape.dim
            ]
    return dims


def _is_symbolic(value: np.ndarray | None) -> bool:
    return value is not None and value.dtype == object


def _symbolic_op(
    node: onnx.NodeProto, ins: list[np.ndarray | None], dims: dict[str, list[int | str]]
) -> np.ndarray | None:
    """Shape arithmetic on object arrays whose elements are ints or dim names; None where it is not exact."""
    op = node.op_type
    if op == "Shape":
        shape = dims.get(node.input[0])
        return None if shape is None else np.array(shape[_attr(node, "start", 0) : _attr(node, "end")], dtype=object)
    values = [value for value in ins if value is not None]
    if len(values) != len(ins):  # an input not known at export time, or an omitted optional one: not folded
        return None
    if op == "Concat":
        return np.concatenate([np.asarray(v, dtype=object).reshape(-1) for v in values])
    data, rest = values[0], values[1:]
    if data.dtype.kind not in "iuO" or any(_is_symbolic(v) for v in rest):
        return None
    if op == "Gather" and _attr(node, "axis", 0) == 0 and data.ndim == 1:
        return np.asarray(np.take(data, np.asarray(rest[0]).astype(np.int64)), dtype=object)
    if op in ("Unsqueeze", "Squeeze"):
        axes = rest[0] if rest else _attr(node, "axes")
        flat = np.asarray(data, dtype=object).reshape(-1)
        target_rank = 1 if op == "Unsqueeze" else 0
        ok = axes is not None and list(np.asarray(axes).reshape(-1)) == [0] and data.ndim == 1 - target_rank
        return flat.reshape((1,) if op == "Unsqueeze" else ()) if ok else None
    if op == "Slice" and data.ndim == 1 and len(rest) >= 2 and (len(rest) < 3 or list(rest[2]) in ([0], [-1])):
        step = int(rest[3][0]) if len(rest) > 3 else 1
        return data[int(rest[0][0]) : int(rest[1][0]) : step]
    if (op == "Cast" and _attr(node, "to") == onnx.TensorProto.INT64) or op == "Identity":
        return data
    return None


def _evaluate(node: onnx.NodeProto, ins: list[np.ndarray | None], opset: int) -> np.ndarray | None:
    """The output of a one-output standard node on constant inputs, by ONNX's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    names = [f"in{k}" if name else "" for k, name in enumerate(node.input)]
    feeds = {name: value for name, value in zip(names, ins) if name and value is not None}
    one = helper.make_node(node.op_type, names, ["out"])
    one.attribute.extend(node.attribute)
    inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in feeds.items()
    ]
    output = helper.make_tensor_value_info("out", onnx.TensorProto.UNDEFINED, None)
    model = helper.make_model(
        helper.make_graph([one], "fold", inputs, [output]), opset_imports=[helper.make_opsetid("", opset)]
    )
    try:
        outputs: list[Any] = list(ReferenceEvaluator(model).run(None, feeds))
        return np.asarray(outputs[0])
    except Exception:  # noqa: BLE001 - an op the reference evaluator cannot run is simply not folded
        return None


def _all_constant(node: onnx.NodeProto, ins: list[np.ndarray | None]) -> bool:
    present = [value for name, value in zip(node.input, ins) if name]
    return bool(present) and all(value is not None and not _is_symbolic(value) for value in present)


def _reshape_target(target: np.ndarray, data_dims: list[int | str] | None) -> np.ndarray | None:
    """A symbolic Reshape target made constant: a symbol equal to the input's dim at its position becomes ``0``
    (copy), one remaining symbol becomes ``-1`` (infer); None if symbols remain."""
    values = list(target.reshape(-1))
    if data_dims is not None:
        values = [
            0 if isinstance(v, str) and j < len(data_dims) and data_dims[j] == v else v for j, v in enumerate(values)
        ]
    symbols = [j for j, v in enumerate(values) if isinstance(v, str)]
    if len(symbols) == 1 and -1 not in values:
        values[symbols[0]] = -1
    return None if any(isinstance(v, str) for v in values) else np.asarray(values, dtype=np.int64)


def _constant(value: np.ndarray) -> np.ndarray | None:
    """A known value as a plain array (symbolic arrays whose elements are all ints become int64), else None."""
    if not _is_symbolic(value):
        return value
    if all(isinstance(v, (int, np.integer)) for v in value.reshape(-1)):
        return value.astype(np.int64)
    return None


def fold_static_shapes(model: onnx.ModelProto) -> int:
    """One pass of shape folding (see the module doc); returns how many values and Reshape targets it fixed."""
    graph = model.graph
    opset = _opset(model)
    dims = _infer_dims(model)
    values: dict[str, np.ndarray] = {
        init.name: numpy_helper.to_array(init) for init in graph.initializer if np.prod(init.dims) <= MAX_FOLD_ELEMENTS
    }
    graph_outputs = {output.name for output in graph.output}
    kept: list[onnx.NodeProto] = []
    new_initializers: list[onnx.TensorProto] = []
    for node in graph.node:
        ins = [values.get(name) if name else None for name in node.input]
        out = None
        if node.domain in _ONNX_DOMAINS and len(node.output) == 1:
            if node.op_type == "Shape" or (node.op_type in _SYMBOLIC_OPS and any(_is_symbolic(v) for v in ins)):
                out = _symbolic_op(node, ins, dims)
            elif node.op_type not in _RANDOM_OPS and _all_constant(node, ins):
                out = _evaluate(node, ins, opset)
        if out is not None and out.size <= MAX_FOLD_ELEMENTS:
            values[node.output[0]] = out
            constant = _constant(out)
            if constant is not None and node.output[0] not in graph_outputs:
                new_initializers.append(numpy_helper.from_array(constant, node.output[0]))
                continue
        shape_in = ins[1] if node.op_type == "Reshape" else None
        if shape_in is not None and _is_symbolic(shape_in) and not _attr(node, "allowzero", 0):
            target = _reshape_target(shape_in, dims.get(node.input[0]))
            if target is not None:
                name = f"{node.name or node.output[0]}/static_shape"
                new_initializers.append(numpy_helper.from_array(target, name))
                node.input[1] = name
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_initializers)
    return len(new_initializers)


def _uses(graph: onnx.GraphProto) -> Counter[str]:
    """How many node inputs and graph outputs read each tensor."""
    return Counter([*(name for node in graph.node for name in node.input), *(o.name for o in graph.output)])


def _replace_nodes(
    graph: onnx.GraphProto,
    drop: set[str],
    renames: dict[str, str] | None = None,
    insert: list[onnx.NodeProto] | None = None,
) -> None:
    """Remove the nodes whose first output is in ``drop``, read ``renames``' values in place of their keys, and put
    ``insert`` where the first removed node stood (its inputs exist there, and its outputs before every reader)."""
    renames = renames or {}
    nodes = list(graph.node)
    removed = {k for k, node in enumerate(nodes) if node.output and node.output[0] in drop}
    at = min(removed, default=len(nodes))
    kept = [node for k, node in enumerate(nodes) if k not in removed]
    for node in kept:
        for k, name in enumerate(node.input):
            node.input[k] = renames.get(name, name)
    before = at - sum(1 for k in removed if k < at)  # kept nodes ahead of the first removed one
    del graph.node[:]
    graph.node.extend([*kept[:before], *(insert or []), *kept[before:]])


class _Graph:
    """What the passes look up about a graph, built once per pass: initializers, producers and uses by name."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.initializers = {init.name: init for init in graph.initializer}
        self.producers = {out: node for node in graph.node for out in node.output}
        self.uses = _uses(graph)


def _projection(g: _Graph, tensor: str, exclusive: bool) -> tuple[onnx.NodeProto, onnx.NodeProto, str] | None:
    """(MatMul, Add, bias name) if ``tensor`` is ``MatMul(x, W) + b`` with W (2-D) and b (1-D) initializers and the
    MatMul's output read only by that Add; with ``exclusive``, W and b must be read nowhere else (to change them)."""
    initializers, uses = g.initializers, g.uses
    add = g.producers.get(tensor)
    if add is None or add.op_type != "Add" or len(add.input) != 2:
        return None
    biases = [name for name in add.input if name in initializers and len(initializers[name].dims) == 1]
    others = [name for name in add.input if name not in biases]
    if len(biases) != 1 or len(others) != 1 or uses[others[0]] != 1:
        return None
    matmul = g.producers.get(others[0])
    if matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in initializers:
        return None
    weight, bias = initializers[matmul.input[1]], initializers[biases[0]]
    if len(weight.dims) != 2 or list(bias.dims) != [weight.dims[1]]:  # a broadcast (1,) bias is not one per column
        return None
    if exclusive and (uses[matmul.input[1]] != 1 or uses[biases[0]] != 1):
        return None
    return matmul, add, biases[0]


def _is_scalar(init: onnx.TensorProto | None) -> bool:
    """A one-element initializer of rank 0 or 1: multiplying by it never changes a tensor's rank or shape."""
    return init is not None and len(init.dims) <= 1 and int(np.prod(init.dims)) == 1


def fold_scalar_scales(model: onnx.ModelProto) -> int:
    """Fold ``Mul(layout(MatMul(x, W) + b), c)``, c a scalar constant and layout any Reshape/Transpose chain read
    once, into ``W * c`` and ``b * c``; returns how many Muls went."""
    graph = model.graph
    g = _Graph(graph)
    initializers, producers, uses = g.initializers, g.producers, g.uses
    graph_outputs = {output.name for output in graph.output}
    drop: set[str] = set()
    renames: dict[str, str] = {}
    for mul in graph.node:
        if mul.op_type != "Mul" or len(mul.input) != 2 or mul.output[0] in graph_outputs:
            continue  # a graph output keeps its producer
        scalars = [k for k, name in enumerate(mul.input) if _is_scalar(initializers.get(name))]
        if len(scalars) != 1:
            continue
        source = tensor = mul.input[1 - scalars[0]]
        while tensor in producers and producers[tensor].op_type in _LAYOUT_OPS and uses[tensor] == 1:
            tensor = producers[tensor].input[0]
        found = _projection(g, tensor, exclusive=True) if uses[tensor] == 1 else None
        if found is None:
            continue
        matmul, _, bias = found
        factor = numpy_helper.to_array(initializers[mul.input[scalars[0]]]).reshape(-1)[0]
        for name in (matmul.input[1], bias):
            array = numpy_helper.to_array(initializers[name])
            initializers[name].CopyFrom(numpy_helper.from_array((array * factor).astype(array.dtype), name))
        drop.add(mul.output[0])
        renames[mul.output[0]] = source
    _replace_nodes(graph, drop, renames)
    return len(drop)


def _merged_name(names: list[str]) -> str:
    """``/l0/self/query/MatMul``, ``/l0/self/key/MatMul`` -> ``/l0/self/query+key/MatMul``."""
    parts = [name.split("/") for name in names]
    if len({len(p) for p in parts}) == 1:
        columns = list(zip(*parts))
        differing = [j for j, column in enumerate(columns) if len(set(column)) > 1]
        if len(differing) == 1:
            j = differing[0]
            return "/".join([*parts[0][:j], "+".join(columns[j]), *parts[0][j + 1 :]])
    return "+".join(names)


def merge_parallel_matmuls(model: onnx.ModelProto) -> int:
    """Merge each set of biased projections of one input into one MatMul + Add + Split; returns the sets merged."""
    graph = model.graph
    g = _Graph(graph)
    initializers = g.initializers
    groups: dict[str, list[tuple[onnx.NodeProto, onnx.NodeProto, str]]] = {}
    for node in graph.node:
        found = _projection(g, node.output[0], exclusive=False) if node.op_type == "Add" else None
        if found is not None:
            groups.setdefault(found[0].input[0], []).append(found)
    merged = 0
    for source, members in groups.items():
        if any(g.uses[m.input[1]] != 1 for m, _, _ in members):
            continue  # a weight shared across layers (ALBERT) would be copied into every layer's merged one
        weights = [numpy_helper.to_array(initializers[m.input[1]]) for m, _, _ in members]
        if len(members) < 2 or len({(w.shape[0], w.dtype) for w in weights}) != 1:
            continue
        name = _merged_name([m.name or m.output[0] for m, _, _ in members])
        biases = [numpy_helper.to_array(initializers[b]) for _, _, b in members]
        sizes = np.asarray([w.shape[1] for w in weights], dtype=np.int64)
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.concatenate(weights, axis=1), f"{name}.weight"),
                numpy_helper.from_array(np.concatenate(biases), f"{name}.bias"),
            ]
        )
        split_inputs = [f"{name}/Add_output_0"]
        split_attrs: dict[str, Any] = {"axis": -1}
        if _opset(model) >= 13:
            graph.initializer.append(numpy_helper.from_array(sizes, f"{name}.split"))
            split_inputs.append(f"{name}.split")
        else:
            split_attrs["split"] = sizes.tolist()
        new = [
            helper.make_node("MatMul", [source, f"{name}.weight"], [f"{name}/MatMul_output_0"], name=name),
            helper.make_node("Add", [f"{name}/MatMul_output_0", f"{name}.bias"], split_inputs[:1], name=f"{name}/Add"),
            helper.make_node(
                "Split", split_inputs, [a.output[0] for _, a, _ in members], f"{name}/Split", **split_attrs
            ),
        ]
        _replace_nodes(graph, {n.output[0] for m, a, _ in members for n in (m, a)}, insert=new)
        merged += 1
    return merged


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Turn ``Constant`` nodes holding a tensor into initializers (as ONNX Runtime does when it loads a model), so
    the passes see a bias or scale the exporter wrote as a node like any other weight; returns how many."""
    graph = model.graph
    constants = [node for node in graph.node if node.op_type == "Constant" and _attr(node, "value") is not None]
    for node in constants:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(_attr(node, "value"))
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
    _replace_nodes(graph, {node.output[0] for node in constants})
    return len(constants)


def remove_dead_nodes(model: onnx.ModelProto) -> int:
    """Drop nodes whose outputs nothing reads and initializers no node reads; returns the nodes dropped."""
    graph, removed = model.graph, 0
    while True:
        needed = set(_uses(graph))
        kept = [node for node in graph.node if any(out in needed for out in node.output)]
        if len(kept) == len(graph.node):
            break
        removed += len(graph.node) - len(kept)
        del graph.node[:]
        graph.node.extend(kept)
    needed = set(_uses(graph))
    initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return removed


def _fixed_point(model: onnx.ModelProto) -> Iterator[int]:
    for _ in range(MAX_PASSES):
        folded = fold_static_shapes(model)
        remove_dead_nodes(model)
        yield folded
        if not folded:
            return


def simplify_model(model: onnx.ModelProto, passes: Sequence[str] = PASSES) -> dict[str, Any]:
    """Run ``passes`` (default all three, see the module doc) on ``model`` in place, in :data:`PASSES` order.

    Returns:
        ``passes`` (those run), ``nodes_before``, ``nodes_after``, ``folded_values`` (values and Reshape targets
        made constant), ``folded_scales`` (Muls folded into weights) and ``merged_matmuls`` (sets of projections
        merged); a pass not run counts 0.

    Raises:
        ValueError: a pass name not in :data:`PASSES`.
    """
    unknown = sorted(set(passes) - set(PASSES))
    if unknown:
        raise ValueError(f"unknown simplify passes {unknown}; known: {', '.join(PASSES)}")
    before = len(model.graph.node)
    constants_to_initializers(model)
    folded = sum(_fixed_point(model)) if "fold_shapes" in passes else 0
    scales = fold_scalar_scales(model) if "fold_scales" in passes else 0
    merged = merge_parallel_matmuls(model) if "merge_matmuls" in passes else 0
    remove_dead_nodes(model)
    return {
        "passes": [name for name in PASSES if name in passes],
        "nodes_before": before,
        "nodes_after": len(model.graph.node),
        "folded_values": folded,
        "folded_scales": scales,
        "merged_matmuls": merged,
    }


def simplify_graph(onnx_path: Path, out_path: Path, passes: Sequence[str] = PASSES) -> dict[str, Any]:
    """Read ``onnx_path``, simplify it (:func:`simplify_model` with ``passes``), check it with ONNX's checker and
    write ``out_path``.

    Returns:
        The counts of :func:`simplify_model`.

    Raises:
        ExportError: a pass failed or left a graph ONNX's checker rejects (one line, naming ``--no-simplify``).
    """
    model = onnx.load(str(onnx_path))
    try:
        info = simplify_model(model, passes)
        onnx.checker.check_model(model)
    except Exception as err:  # any failure here is a bug of a pass on an unforeseen graph: say how to go around it
        raise ExportError(
            f"{onnx_path}: graph simplification failed ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "export with --no-simplify"
        ) from err
    onnx.save(model, str(out_path))
    logger.info("simplified %s: %s", onnx_path.name, info)
    return info
