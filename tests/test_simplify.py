"""edgesent.simplify: the passes keep the model's outputs, remove what they say, and leave alone what is not exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


pytest.importorskip("onnxruntime")
import onnxruntime as ort

from edgesent.errors import ExportError
from edgesent.simplify import (
    constants_to_initializers,
    fold_scalar_scales,
    fold_static_shapes,
    merge_parallel_matmuls,
    remove_dead_nodes,
    simplify_graph,
    simplify_model,
)


N_LAYERS = 2  # the tiny model's


@pytest.fixture(scope="module")
def plain_graph(_tiny_model_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's fp32 export as Optimum writes it, by ``edgesent export --no-simplify``."""
    pytest.importorskip("optimum.exporters.onnx")
    from click.testing import CliRunner

    from edgesent.cli import cli

    out = tmp_path_factory.mktemp("onnx") / "plain"
    result = CliRunner().invoke(cli, ["export", str(_tiny_model_master), "--no-simplify", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "model.onnx"


def _feeds(rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """Batches of several shapes, the last row of each padded: the dynamic axes are what the folds must respect."""
    feeds = []
    for batch, length in ((1, 5), (3, 17), (2, 64)):
        ids = rng.integers(5, 60, (batch, length))
        mask = np.ones_like(ids)
        mask[-1, length // 2 :] = 0
        feeds.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return feeds


def _logits(model: onnx.ModelProto | Path, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return [session.run(None, {k: v for k, v in feed.items() if k in names})[0] for feed in feeds]


def _ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def test_simplify_keeps_the_outputs_and_removes_the_run_time_shape_work(plain_graph: Path):
    model = onnx.load(str(plain_graph))
    info = simplify_model(model)
    onnx.checker.check_model(model)
    feeds = _feeds(np.random.default_rng(0))
    for before, after in zip(_logits(plain_graph, feeds), _logits(model, feeds)):
        np.testing.assert_allclose(after, before, atol=1e-5, rtol=1e-5)
    assert info["nodes_after"] == len(model.graph.node) < 0.6 * info["nodes_before"]  # 233 -> 117 nodes
    assert info["merged_matmuls"] == N_LAYERS  # query, key and value of each layer
    assert info["folded_scales"] == 2 * N_LAYERS  # the scale on query and on key
    assert "Sqrt" not in _ops(model)  # the attention scale is a constant now
    encoder = [node for node in model.graph.node if "/encoder/" in node.name]
    assert not {"Shape", "Concat", "Unsqueeze", "Gather"} & {node.op_type for node in encoder}
    merged = [node.name for node in model.graph.node if node.op_type == "MatMul" and "+" in node.name]
    assert merged == [f"/bert/encoder/layer.{i}/attention/self/query+key+value/MatMul" for i in range(N_LAYERS)]


def test_merged_projections_quantize_per_channel_to_the_same_model(plain_graph: Path, tmp_path: Path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The exporter wrote the tiny model's all-zero biases as Identity copies of one tensor: fold those first, in both.
    folded = onnx.load(str(plain_graph))
    constants_to_initializers(folded)
    fold_static_shapes(folded)
    merged = onnx.ModelProto()
    merged.CopyFrom(folded)
    assert merge_parallel_matmuls(merged) == N_LAYERS
    for name, model in (("folded", folded), ("merged", merged)):
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
        quantize_dynamic(
            str(tmp_path / f"{name}.onnx"),
            str(tmp_path / f"{name}-int8.onnx"),
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
    feeds = _feeds(np.random.default_rng(1))
    for a, b in zip(_logits(tmp_path / "folded-int8.onnx", feeds), _logits(tmp_path / "merged-int8.onnx", feeds)):
        np.testing.assert_allclose(b, a, atol=1e-6)


def _model(nodes, inputs, outputs, initializers=(), opset=18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _tensor(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def test_a_reshape_target_with_two_unknown_sizes_is_left_to_run_time():
    # y = reshape(x, [x.shape[1], x.shape[0]]): two symbols, neither at its own position, so no 0 or -1 is exact.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["d1"]),
        helper.make_node("Gather", ["s", "zero"], ["d0"]),
        helper.make_node("Unsqueeze", ["d1", "zero_axis"], ["u1"]),
        helper.make_node("Unsqueeze", ["d0", "zero_axis"], ["u0"]),
        helper.make_node("Concat", ["u1", "u0"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [_const("one", np.int64(1)), _const("zero", np.int64(0)), _const("zero_axis", np.array([0], np.int64))]
    model = _model(nodes, [_tensor("x", ["a", "b"])], [_tensor("y", None)], inits)
    fold_static_shapes(model)
    remove_dead_nodes(model)
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    assert reshape.input[1] == "target" and "Concat" in _ops(model)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert y.shape == (3, 2)


def test_a_reshape_target_that_copies_the_batch_dim_becomes_constant():
    # y = reshape(x, [x.shape[0], x.shape[1] * 0 + 2, 3]) written the exporter's way: [B, -1, 3] -> [0, -1, 3].
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["d0"]),
        helper.make_node("Unsqueeze", ["d0", "zero_axis"], ["u0"]),
        helper.make_node("Concat", ["u0", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [_const("zero", np.int64(0)), _const("zero_axis", np.array([0], np.int64))]
    inits.append(_const("rest", np.array([-1, 3], np.int64)))
    model = _model(nodes, [_tensor("x", ["batch", 6])], [_tensor("y", None)], inits)
    assert fold_static_shapes(model) == 1
    remove_dead_nodes(model)
    assert _ops(model) == ["Reshape"]
    target = next(i for i in model.graph.initializer if i.name == model.graph.node[0].input[1])
    assert numpy_helper.to_array(target).tolist() == [0, -1, 3]


def _projection_then_scale(weight_uses: int, scale_shape: tuple) -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["p"]),
        helper.make_node("Transpose", ["p"], ["t"], perm=[1, 0]),
        helper.make_node("Mul", ["t", "c"], ["s"]),
        helper.make_node("Identity", ["s"], ["y"]),
    ]
    outputs = [_tensor("y", None)]
    if weight_uses == 2:
        nodes.append(helper.make_node("MatMul", ["x", "w"], ["z"]))
        outputs.append(_tensor("z", None))
    rng = np.random.default_rng(0)
    inits = [
        _const("w", rng.normal(size=(4, 3)).astype(np.float32)),
        _const("b", rng.normal(size=3).astype(np.float32)),
        _const("c", np.full(scale_shape, 0.5, np.float32)),
    ]
    return _model(nodes, [_tensor("x", [2, 4])], outputs, inits)


def test_a_scalar_scale_is_folded_into_the_projection_it_follows():
    model = _projection_then_scale(weight_uses=1, scale_shape=())
    x = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert fold_scalar_scales(model) == 1
    remove_dead_nodes(model)
    assert _ops(model) == ["MatMul", "Add", "Transpose", "Identity"] and model.graph.node[-1].input[0] == "t"
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(after[0], before[0], rtol=1e-6)


@pytest.mark.parametrize(("weight_uses", "scale_shape"), [(2, ()), (1, (1, 1, 1))])
def test_a_scale_is_not_folded_into_a_shared_weight_or_when_it_would_change_the_rank(weight_uses, scale_shape):
    model = _projection_then_scale(weight_uses, scale_shape)
    assert fold_scalar_scales(model) == 0
    assert "Mul" in _ops(model)


def test_projections_without_their_own_bias_are_not_merged():
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["y1"]),
        helper.make_node("MatMul", ["x", "w2"], ["y2"]),
    ]
    inits = [_const("w1", np.ones((4, 3), np.float32)), _const("b1", np.zeros(3, np.float32))]
    inits.append(_const("w2", np.ones((4, 2), np.float32)))
    model = _model(nodes, [_tensor("x", [2, 4])], [_tensor("y1", None), _tensor("y2", None)], inits)
    assert merge_parallel_matmuls(model) == 0 and _ops(model) == ["MatMul", "Add", "MatMul"]


def test_a_failed_pass_is_one_export_error_naming_the_way_around(
    plain_graph: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from edgesent import simplify

    def broken(model, passes):
        raise ValueError("unforeseen graph\nsecond line")

    monkeypatch.setattr(simplify, "simplify_model", broken)
    with pytest.raises(ExportError, match=r"graph simplification failed \(ValueError: unforeseen graph\); export "):
        simplify_graph(plain_graph, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_simplify_runs_only_the_passes_asked_for(plain_graph: Path):
    model = onnx.load(str(plain_graph))
    info = simplify_model(model, ("fold_shapes",))
    feeds = _feeds(np.random.default_rng(1))
    for before, after in zip(_logits(plain_graph, feeds), _logits(model, feeds)):
        np.testing.assert_allclose(after, before, atol=1e-5, rtol=1e-5)
    assert info["passes"] == ["fold_shapes"] and info["folded_values"] > 0
    assert info["merged_matmuls"] == info["folded_scales"] == 0
    assert _ops(model).count("MatMul") == _ops(onnx.load(str(plain_graph))).count("MatMul")  # projections kept
    assert "Sqrt" not in _ops(model)  # the scale arithmetic folded to a constant, still applied by its Mul
    with pytest.raises(ValueError, match="unknown simplify passes"):
        simplify_model(onnx.load(str(plain_graph)), ("fold_everything",))


def test_export_records_the_simplification_and_no_simplify_turns_it_off(tiny_onnx_dir: Path, plain_graph: Path):
    from edgesent.artifacts import read_manifest

    simplified = read_manifest(tiny_onnx_dir)["export"]["simplified"]
    assert simplified["merged_matmuls"] == N_LAYERS and simplified["nodes_after"] < simplified["nodes_before"]
    assert simplified["passes"] == ["fold_shapes", "fold_scales", "merge_matmuls"]
    assert read_manifest(plain_graph.parent)["export"]["simplified"] is None
    assert len(onnx.load(str(tiny_onnx_dir / "model.onnx")).graph.node) == simplified["nodes_after"]
    assert len(onnx.load(str(plain_graph)).graph.node) == simplified["nodes_before"]


TINY_ARCHITECTURES = {  # other encoders whose exports go through the same passes; 2 layers, hidden 32
    "distilbert": {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64},
    "roberta": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
    "deberta-v2": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
}


@pytest.mark.parametrize("model_type", sorted(TINY_ARCHITECTURES))
def test_simplify_keeps_the_outputs_of_other_encoder_exports(model_type: str, tmp_path: Path):
    pytest.importorskip("optimum.exporters.onnx")
    from optimum.exporters.onnx import main_export
    from transformers import AutoConfig, AutoModelForSequenceClassification

    settings = {"vocab_size": 120, "max_position_embeddings": 80, "num_labels": 3, **TINY_ARCHITECTURES[model_type]}
    AutoModelForSequenceClassification.from_config(AutoConfig.for_model(model_type, **settings)).save_pretrained(
        tmp_path / "hf"
    )
    main_export(str(tmp_path / "hf"), tmp_path / "onnx", task="text-classification", device="cpu", do_validation=False)
    plain = tmp_path / "onnx" / "model.onnx"
    model = onnx.load(str(plain))
    info = simplify_model(model)
    onnx.checker.check_model(model)
    assert info["merged_matmuls"] == N_LAYERS and info["nodes_after"] < 0.6 * info["nodes_before"]
    feeds = _feeds(np.random.default_rng(2))
    for before, after in zip(_logits(plain, feeds), _logits(model, feeds)):
        np.testing.assert_allclose(after, before, atol=1e-5, rtol=1e-5)


def test_projections_sharing_weights_or_with_a_broadcast_bias_are_not_merged():
    """ALBERT shares each layer's weights: a merge would copy them into every layer. A (1,) bias is no column bias."""
    shared = [helper.make_node("MatMul", [x, "w1"], [f"m1{x}"]) for x in ("a", "b")]
    nodes = [
        *shared,
        helper.make_node("MatMul", ["a", "w2"], ["m2a"]),
        helper.make_node("MatMul", ["b", "w2"], ["m2b"]),
    ]
    nodes += [helper.make_node("Add", [f"m{i}{x}", f"b{i}"], [f"y{i}{x}"]) for i in (1, 2) for x in ("a", "b")]
    inits = [_const(f"w{i}", np.ones((4, 3), np.float32)) for i in (1, 2)]
    inits += [_const(f"b{i}", np.zeros(3, np.float32)) for i in (1, 2)]
    outputs = [_tensor(f"y{i}{x}", None) for i in (1, 2) for x in ("a", "b")]
    model = _model(nodes, [_tensor("a", [2, 4]), _tensor("b", [2, 4])], outputs, inits)
    assert merge_parallel_matmuls(model) == 0
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["y1"]),
        helper.make_node("MatMul", ["x", "w2"], ["m2"]),
        helper.make_node("Add", ["m2", "b2"], ["y2"]),
    ]
    inits = [_const("w1", np.ones((4, 3), np.float32)), _const("b1", np.zeros(1, np.float32))]
    inits += [_const("w2", np.ones((4, 2), np.float32)), _const("b2", np.zeros(2, np.float32))]
    model = _model(nodes, [_tensor("x", [2, 4])], [_tensor("y1", None), _tensor("y2", None)], inits)
    assert merge_parallel_matmuls(model) == 0  # without the check: a merged bias of 3 for 5 columns
