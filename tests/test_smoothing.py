"""Activation smoothing before int8 (``edgesent.quantize.smooth_activations``) and its place in the export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_texts, write_csv
from onnx import TensorProto, helper, numpy_helper

from edgesent.config.quantize import SMOOTH_ALPHA, QuantizeConfig
from edgesent.errors import ConfigError
from edgesent.quantize import SMOOTH_MIN_OUTLIER_RATIO, activation_ranges, quantize_model, smooth_activations


pytest.importorskip("onnxruntime")

HIDDEN, OUT, OUTLIER = 16, 8, 3


def _outlier_graph(path: Path) -> Path:
    """x -> (x * gamma, channel OUTLIER 40x the rest) -> MatMul -> y, also read by an Add (a residual's second
    reader); and x -> MatMul -> y_plain, an input without outliers."""
    rng = np.random.default_rng(0)
    gamma = np.ones(HIDDEN, np.float32)
    gamma[OUTLIER] = 40.0
    inits = [
        numpy_helper.from_array(gamma, "gamma"),
        numpy_helper.from_array(rng.normal(0, 0.2, (HIDDEN, OUT)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.2, (HIDDEN, OUT)).astype(np.float32), "w_plain"),
    ]
    nodes = [
        helper.make_node("Mul", ["x", "gamma"], ["a"], name="scale"),
        helper.make_node("MatMul", ["a", "w"], ["y"], name="outlier/MatMul"),
        helper.make_node("Add", ["a", "a"], ["r"], name="residual"),
        helper.make_node("MatMul", ["x", "w_plain"], ["y_plain"], name="plain/MatMul"),
    ]

    def value(name: str, dim: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["b", "t", dim])

    graph = helper.make_graph(
        nodes,
        "outliers",
        [value("x", HIDDEN)],
        [value("y", OUT), value("r", HIDDEN), value("y_plain", OUT)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _feeds(seed: int, n: int = 6) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (2, 5, HIDDEN)).astype(np.float32)} for _ in range(n)]


def _run(path: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    runs = [session.run(names, feed) for feed in feeds]
    return {name: np.concatenate([run[i] for run in runs]) for i, name in enumerate(names)}


def test_smoothing_keeps_the_outputs_and_flattens_the_outlier_input(tmp_path: Path):
    source = _outlier_graph(tmp_path / "fp32.onnx")
    info = smooth_activations(source, tmp_path / "smoothed.onnx", _feeds(1), alpha=0.8)
    assert info == {
        "alpha": 0.8,
        "min_outlier_ratio": SMOOTH_MIN_OUTLIER_RATIO,
        "calibration_samples": 6,
        "matmuls": ["outlier/MatMul"],  # the input without outliers is left alone
    }
    held_out = _feeds(2)
    before, after = _run(source, held_out), _run(tmp_path / "smoothed.onnx", held_out)
    for name in ("y", "r", "y_plain"):  # the residual reader still sees the unsmoothed tensor
        np.testing.assert_allclose(after[name], before[name], rtol=1e-4, atol=1e-4)
    smoothed = onnx.load(str(tmp_path / "smoothed.onnx"))
    matmul = next(n for n in smoothed.graph.node if n.name == "outlier/MatMul")
    ranges = {
        name: activation_ranges(tmp_path / "smoothed.onnx", held_out, [name])[name] for name in ("a", matmul.input[0])
    }
    ratio = {name: r.max() / np.median(r) for name, r in ranges.items()}
    assert ratio["a"] > 20 and ratio[matmul.input[0]] < 3


def test_smoothing_lowers_the_dynamic_int8_error(tmp_path: Path):
    source = _outlier_graph(tmp_path / "fp32.onnx")
    smooth_activations(source, tmp_path / "smoothed.onnx", _feeds(1), alpha=SMOOTH_ALPHA)
    held_out, errors = _feeds(2), {}
    reference = _run(source, held_out)["y"]
    for name, alpha in (("fp32", 0.0), ("smoothed", SMOOTH_ALPHA)):
        cfg = QuantizeConfig(per_channel=True, reduce_range=False, smooth_alpha=alpha)
        quantize_model(tmp_path / f"{name}.onnx", tmp_path / f"{name}-int8.onnx", cfg)
        errors[name] = float(np.abs(_run(tmp_path / f"{name}-int8.onnx", held_out)["y"] - reference).mean())
    assert errors["smoothed"] < 0.5 * errors["fp32"], errors


def test_smoothing_refuses_a_bad_alpha_missing_calibration_and_a_mismatched_quantization(tmp_path: Path):
    source = _outlier_graph(tmp_path / "fp32.onnx")
    with pytest.raises(ConfigError, match="alpha must be in"):
        smooth_activations(source, tmp_path / "s.onnx", _feeds(1), alpha=0.0)
    with pytest.raises(ConfigError, match="calibration texts"):
        smooth_activations(source, tmp_path / "s.onnx", [], alpha=0.8)
    smooth_activations(source, tmp_path / "s.onnx", _feeds(1), alpha=0.8)
    with pytest.raises(ConfigError, match="smoothed with alpha 0.8, but the config asks for smooth_alpha=0.0"):
        quantize_model(tmp_path / "s.onnx", tmp_path / "q.onnx", QuantizeConfig(smooth_alpha=0.0))
    with pytest.raises(ConfigError, match="smoothed with alpha 0.0, but the config asks for smooth_alpha=0.8"):
        quantize_model(source, tmp_path / "q.onnx", QuantizeConfig.avx512_vnni())


def test_smoothing_belongs_to_the_per_channel_presets():
    assert QuantizeConfig.avx512_vnni().smooth_alpha == SMOOTH_ALPHA == QuantizeConfig.portable().smooth_alpha
    assert QuantizeConfig.avx2().smooth_alpha == 0.0 == QuantizeConfig.arm64().smooth_alpha
    assert QuantizeConfig.for_target("avx512_vnni", per_channel=False).smooth_alpha == 0.0
    assert QuantizeConfig.for_target("arm64", per_channel=True, smooth_alpha=0.5).smooth_alpha == 0.5
    with pytest.raises(ConfigError, match="needs per-channel weight scales"):
        QuantizeConfig.for_target("avx512_vnni", per_channel=False, smooth_alpha=0.8)
    with pytest.raises(ConfigError, match="smooth_alpha"):
        QuantizeConfig(smooth_alpha=1.5)


def test_export_smooths_the_outlier_input_and_records_it(outlier_model_dir: Path, tmp_path: Path, runner):
    import json

    from edgesent.cli import cli

    data = write_csv(tmp_path / "dev.csv", make_texts(20))
    args = ["export", str(outlier_model_dir), "--int8", "--target", "avx512_vnni", "--json"]
    probes_only = runner.invoke(cli, [*args, "--out", str(tmp_path / "probes")])
    assert probes_only.exit_code == 0, probes_only.output
    skipped = json.loads(probes_only.stdout)["export"]  # 13 edge-case probes would set the scales: no smoothing
    assert skipped["smoothing"]["matmuls"] == [] and "probe texts only" in skipped["smoothing"]["skipped"]
    assert skipped["quantize"]["smooth_alpha"] == 0.0
    args += ["--parity-data", str(data)]
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "smoothed")])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    smoothing = manifest["export"]["smoothing"]
    assert manifest["verified"] and manifest["export"]["quantize"]["smooth_alpha"] == SMOOTH_ALPHA
    # the outlier channel feeds layer 0's FFN (and what follows it), not the attention before it
    assert "/bert/encoder/layer.0/intermediate/dense/MatMul" in smoothing["matmuls"]
    assert not [name for name in smoothing["matmuls"] if name.startswith("/bert/encoder/layer.0/attention/")]
    assert smoothing["calibration"].startswith("parity texts")
    graph = onnx.load(str(tmp_path / "smoothed" / "model.onnx")).graph
    assert [n.name for n in graph.node if n.name.endswith("_smooth_inverse_scale_Mul")] != []

    result = runner.invoke(cli, [*args, "--smooth-alpha", "0", "--out", str(tmp_path / "plain")])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert "smoothing" not in manifest["export"] and manifest["export"]["quantize"]["smooth_alpha"] == 0.0
    graph = onnx.load(str(tmp_path / "plain" / "model.onnx")).graph
    assert not [n for n in graph.node if n.name.endswith("_smooth_inverse_scale_Mul")]


def test_a_channel_quiet_in_calibration_is_not_blown_up(tmp_path: Path) -> None:
    """A channel ~0 on every calibration text (a dead unit) is smoothed as if it reached 0.1 of the median range:
    without the floor its inverse scale was thousands, and the first text that made it fire set the tensor's
    whole int8 range."""
    source = _outlier_graph(tmp_path / "g.onnx")
    quiet = 5
    feeds = _feeds(0)
    for feed in feeds:
        feed["x"][..., quiet] = 0.0
    smooth_activations(source, tmp_path / "s.onnx", feeds, SMOOTH_ALPHA)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "s.onnx")).graph.initializer}
    (inverse,) = [v for name, v in inits.items() if name.endswith("_smooth_inverse_scale")]
    assert inverse[quiet] < 20 * float(np.median(inverse))  # 1e-5 ** -0.8 would be ~10,000x
