"""OpenVINO as a second CPU runtime: the session adapter, the predictor's choice of runtime, ``export --runtime``.

Tests that build or run an OpenVINO model are skipped without the ``openvino`` extra (openvino, nncf); those of a
missing extra hide it with a patched ``find_spec`` and run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import _export, no_leftovers

from edgesent.artifacts import read_model_dir
from edgesent.cli import cli
from edgesent.errors import ConfigError, MissingDependencyError, ModelError, ParityError
from edgesent.runtime import Predictor
from edgesent.sessions import OpenVINOSession, choose_provider, create_session, session_device, session_runtime


HAS_OPENVINO = all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="the openvino extra is not installed")
INSTALL = "pip install 'edgesent[openvino]'"
TEXTS = ["great food and friendly staff", "awful rude staff", "an ordinary tuesday", "a", "loved it 😍"]


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make ``names`` look uninstalled to ``require_extra``/``missing_modules`` (they ask ``find_spec``)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] in names else real(name, *a)
    )


# --- the session adapter ---------------------------------------------------------------------------------------


@needs_openvino
def test_openvino_session_quacks_like_an_ort_session(tiny_onnx_dir: Path) -> None:
    path = tiny_onnx_dir / "model.onnx"
    session = create_session(path, "openvino", threads=1)
    reference = create_session(path, "cpu", threads=1)
    assert isinstance(session, OpenVINOSession)
    assert (session_device(session), session_runtime(session)) == ("cpu", "openvino")
    assert session_runtime(reference) == "onnxruntime"
    assert [(n.name, n.type) for n in session.get_inputs()] == [(n.name, n.type) for n in reference.get_inputs()]
    assert all(n.type == "tensor(int64)" for n in session.get_inputs())
    (logits,) = session.get_outputs()
    assert (logits.name, logits.type, logits.shape) == ("logits", "tensor(float)", [None, 3])
    feed = {n.name: np.array([[2, 7, 9, 3], [2, 5, 3, 0]], dtype=np.int64) for n in reference.get_inputs()}
    feed["attention_mask"] = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=np.int64)
    feed["token_type_ids"] = np.zeros((2, 4), dtype=np.int64)
    (ours,) = session.run(["logits"], feed)
    (theirs,) = reference.run(["logits"], feed)
    # OpenVINO computes in bf16 by default on CPUs that have it (its precision hint): close, not bit-close
    assert ours.shape == (2, 3) and np.abs(ours - theirs).max() < 2e-3
    assert np.array_equal(OpenVINOSession(path.read_bytes()).run(None, feed)[0], ours)  # a serialized model
    with pytest.raises(ModelError, match="no output named 'probs'"):
        session.run(["probs"], feed)


def test_openvino_without_the_extra_is_one_line(monkeypatch: pytest.MonkeyPatch, tiny_onnx_dir: Path, runner) -> None:
    _hide(monkeypatch, "openvino")
    with pytest.raises(MissingDependencyError, match=r"missing: openvino\); install it with: pip install") as err:
        Predictor.load(tiny_onnx_dir, provider="openvino")
    assert INSTALL in str(err.value) and "\n" not in str(err.value)
    result = runner.invoke(cli, ["predict", str(tiny_onnx_dir), "--provider", "openvino", "good food"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [result.output.strip()] and INSTALL in result.output


def test_choose_provider_follows_the_manifest(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    assert choose_provider("cpu", "openvino") == "cpu"  # an explicit provider is taken as asked
    assert choose_provider("auto", "onnxruntime") == "auto"
    _hide(monkeypatch, "openvino")
    with caplog.at_level(logging.WARNING, logger="edgesent.sessions"):
        assert choose_provider("auto", "openvino") == "auto"
    assert [r.levelno for r in caplog.records] == [logging.WARNING] and INSTALL in caplog.text


# --- export --runtime openvino and the predictor ---------------------------------------------------------------


@needs_openvino
def test_openvino_export_is_gated_on_openvino_and_recorded(tiny_openvino_dir: Path) -> None:
    manifest = read_model_dir(tiny_openvino_dir).manifest
    assert read_model_dir(tiny_openvino_dir).runtime == "openvino"
    assert (manifest["runtime"], manifest["export"]["runtime"], manifest["verified"]) == ("openvino", "openvino", True)
    assert manifest["parity"]["runtime"] == "openvino" and manifest["parity"]["passed"]
    assert {"tool": "nncf", "backend": "onnx", "preset": "mixed"}.items() <= manifest["export"]["quantize"].items()
    counts = manifest["export"]["quantized_op_counts"]
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] > counts["QuantizeLinear"]  # QDQ ONNX
    calibration = manifest["export"]["calibration"]
    assert calibration["samples"] == manifest["parity"]["n_texts"] and "parity texts" in calibration["data"]
    assert "openvino" in manifest["versions"] and "nncf" in manifest["versions"]
    simplified = manifest["export"]["simplified"]  # OpenVINO's own passes: shapes folded, projections kept apart
    assert simplified["passes"] == ["fold_shapes"] and simplified["folded_values"] > 0
    assert simplified["merged_matmuls"] == simplified["folded_scales"] == 0


def _activation_zero_points(model) -> dict[str, str]:
    """Each activation QuantizeLinear's output -> its zero point's type (``int8``/``uint8``)."""
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    return {
        node.output[0]: str(numpy_helper.to_array(inits[node.input[2]]).dtype)
        for node in model.graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits
    }


@needs_openvino
def test_unsigned_fc_activations_is_the_same_arithmetic(tiny_onnx_dir: Path, tiny_openvino_dir: Path) -> None:
    import onnx
    import onnxruntime as ort

    from edgesent.bench.runners import synthetic_inputs
    from edgesent.quantize import quantize_nncf, unsigned_fc_activations

    vocab = json.loads((tiny_onnx_dir / "config.json").read_text())["vocab_size"]
    feeds = [synthetic_inputs(1, 6 + k, vocab, seed=k) for k in range(8)]
    signed, _ = quantize_nncf(onnx.load(str(tiny_onnx_dir / "model.onnx")), feeds)
    unsigned = onnx.ModelProto()
    unsigned.CopyFrom(signed)
    rewritten = unsigned_fc_activations(unsigned)
    before, after = _activation_zero_points(signed), _activation_zero_points(unsigned)
    changed = [name for name in before if before[name] != after[name]]
    assert rewritten == len(changed) > 0 and all(before[n] == "int8" and after[n] == "uint8" for n in changed)
    assert "int8" in after.values()  # attention's quantizers (activation x activation) stay signed
    assert unsigned_fc_activations(unsigned) == 0  # nothing left to rewrite
    onnx.checker.check_model(unsigned, full_check=True)

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ ops as written
    runs = [
        ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
        for m in (signed, unsigned)
    ]
    names = [i.name for i in runs[0].get_inputs()]
    for feed in feeds:
        a, b = (r.run(None, {n: feed[n] for n in names})[0] for r in runs)
        assert np.array_equal(a, b)  # every quantizer dequantizes to the same values

    shipped = read_model_dir(tiny_openvino_dir).manifest["export"]["quantize"]["unsigned_activations"]
    assert shipped == rewritten  # the export makes them unsigned too
    assert "uint8" in _activation_zero_points(onnx.load(str(tiny_openvino_dir / "model.onnx"))).values()


@needs_openvino
def test_predictor_runs_an_openvino_export_on_openvino(tiny_openvino_dir: Path) -> None:
    predictor = Predictor.load(tiny_openvino_dir)
    assert (predictor.runtime, predictor.provider) == ("openvino", "cpu")
    assert "runtime='openvino'" in repr(predictor)
    ort_predictor = Predictor.load(tiny_openvino_dir, provider="cpu")  # the same QDQ file on ONNX Runtime
    assert ort_predictor.runtime == "onnxruntime"
    ours, theirs = predictor.predict(TEXTS), ort_predictor.predict(TEXTS)
    probs = np.array([[p.scores[label] for label in predictor.labels] for p in ours])
    reference = np.array([[p.scores[label] for label in predictor.labels] for p in theirs])
    assert np.allclose(probs, reference, atol=2e-3)
    top2 = np.sort(reference, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > 2e-3  # labels compared where ONNX Runtime's own choice is not a near-tie
    assert [p.label for p, d in zip(ours, decided) if d] == [p.label for p, d in zip(theirs, decided) if d]
    batched = predictor.predict_logits(TEXTS * 3, batch_size=4)
    assert batched.shape == (15, 3) and np.allclose(batched[:5], batched[5:10], atol=1e-5)


@needs_openvino
def test_auto_falls_back_to_onnxruntime_without_openvino(
    monkeypatch: pytest.MonkeyPatch, tiny_openvino_dir: Path, caplog
) -> None:
    _hide(monkeypatch, "openvino")
    with caplog.at_level(logging.WARNING):
        predictor = Predictor.load(tiny_openvino_dir)
    assert predictor.runtime == "onnxruntime" and predictor.predict("great food").label in predictor.labels
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "exported for OpenVINO" in warnings[0].getMessage()


@needs_openvino
def test_span_tagger_exports_and_predicts_through_openvino(_tiny_span_model_master: Path, tmp_path: Path) -> None:
    out = _export(_tiny_span_model_master, tmp_path / "spans-ov", precision="int8", runtime="openvino")
    manifest = read_model_dir(out).manifest
    assert manifest["runtime"] == "openvino" and manifest["parity"]["runtime"] == "openvino"
    predictor = Predictor.load(out)
    assert predictor.runtime == "openvino"
    texts = ["great battery awful screen", "the food was cold"]
    rows = predictor.predict(texts)
    assert all(isinstance(row.spans, list) for row in rows)
    for text, row in zip(texts, rows):
        assert all(text[s["start"] : s["end"]] == s["text"] for s in row.spans)


@needs_openvino
def test_runtime_auto_gates_and_times_both_and_records_the_choice(tiny_model_dir: Path, tmp_path: Path) -> None:
    from edgesent.quantize import QuantizeConfig

    out = _export(
        tiny_model_dir, tmp_path / "auto", precision="int8", runtime="auto", quantize=QuantizeConfig.avx512_vnni()
    )
    manifest = read_model_dir(out).manifest
    candidates = manifest["export"]["runtime_candidates"]
    assert [c["runtime"] for c in candidates] == ["onnxruntime", "openvino"]
    passed = [c for c in candidates if c["passed"]]
    assert len(passed) == 2 and all(c["p50_ms"] > 0 for c in passed)  # both pass on the tiny model: both timed
    fastest = min(passed, key=lambda c: c["p50_ms"])["runtime"]
    assert manifest["runtime"] == manifest["export"]["runtime"] == manifest["parity"]["runtime"] == fastest
    # The OpenVINO candidate re-simplified the exporter's graph with its own passes; the manifest has the shipped one's.
    passes = ["fold_shapes"] if fastest == "openvino" else ["fold_shapes", "fold_scales", "merge_matmuls"]
    assert manifest["export"]["simplified"]["passes"] == passes
    assert manifest["export"]["config"]["runtime"] == "auto"
    assert Predictor.load(out).runtime == fastest


def test_runtime_auto_without_the_extra_uses_onnxruntime(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from edgesent.quantize import QuantizeConfig

    _hide(monkeypatch, "nncf")
    out = _export(
        tiny_model_dir, tmp_path / "auto", precision="int8", runtime="auto", quantize=QuantizeConfig.avx512_vnni()
    )
    manifest = read_model_dir(out).manifest
    assert manifest["runtime"] == "onnxruntime" and manifest["parity"]["runtime"] == "onnxruntime"
    assert [c["runtime"] for c in manifest["export"]["runtime_candidates"]] == ["onnxruntime"]
    assert "not installed" in manifest["export"]["runtime_choice"] and INSTALL in manifest["export"]["runtime_choice"]


@needs_openvino
def test_failed_openvino_gate_writes_nothing_and_says_remedies_are_ort_only(tiny_model_dir: Path, tmp_path: Path):
    with pytest.raises(ParityError, match=r"max_abs_diff .*remedies are ONNX Runtime's only"):
        _export(tiny_model_dir, tmp_path / "out", precision="int8", runtime="openvino", parity={"max_abs_diff": 1e-9})
    assert no_leftovers(tmp_path, "out")


@needs_openvino
def test_runtime_auto_with_both_failing_names_both(tiny_model_dir: Path, tmp_path: Path):
    from edgesent.quantize import QuantizeConfig

    settings = {"quantize": QuantizeConfig.avx512_vnni(), "remedies": False, "parity": {"max_abs_diff": 1e-9}}
    with pytest.raises(ParityError, match=r"max_abs_diff .*; also failed: openvino \(max_abs_diff"):
        _export(tiny_model_dir, tmp_path / "out", precision="int8", runtime="auto", **settings)
    assert no_leftovers(tmp_path, "out")


# --- configuration and the CLI ----------------------------------------------------------------------------------


def test_export_config_runtime() -> None:
    from edgesent.config.export import ExportConfig

    cfg = ExportConfig(precision="int8", runtime="openvino")
    assert cfg.quantize is None and ExportConfig.from_dict(cfg.to_dict()) == cfg
    assert ExportConfig(precision="int8").runtime == "onnxruntime"
    with pytest.raises(ConfigError, match="runtime='tensorrt' is not one of onnxruntime, openvino, auto"):
        ExportConfig(precision="int8", runtime="tensorrt")
    with pytest.raises(ConfigError, match="add --int8"):
        ExportConfig(runtime="openvino")
    with pytest.raises(ConfigError, match="target: ONNX Runtime int8 settings, unused by --runtime openvino"):
        ExportConfig(precision="int8", runtime="openvino", quantize={"target": "avx2"})
    assert ExportConfig(precision="int8", runtime="auto", calibration_data="c.csv").calibration_data == Path("c.csv")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--runtime", "openvino"], "add --int8"),
        (["--int8", "--runtime", "openvino", "--target", "avx2"], "unused by --runtime openvino"),
        (["--int8", "--runtime", "openvino", "--static"], "unused by --runtime openvino"),
    ],
)
def test_export_cli_bad_runtime_combinations(tiny_model_dir: Path, tmp_path: Path, runner, args, fragment) -> None:
    result = runner.invoke(cli, ["export", str(tiny_model_dir), "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and fragment in lines[0], lines
    assert no_leftovers(tmp_path, "out")


def test_export_cli_openvino_without_the_extra(monkeypatch, tiny_model_dir: Path, tmp_path: Path, runner) -> None:
    _hide(monkeypatch, "nncf")
    result = runner.invoke(
        cli, ["export", str(tiny_model_dir), "--out", str(tmp_path / "out"), "--int8", "--runtime", "openvino"]
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("Error: --runtime openvino needs the 'openvino' extra (missing: nncf)")
    assert INSTALL in result.output and no_leftovers(tmp_path, "out")


@needs_openvino
def test_parity_cli_runs_the_recorded_runtime(_tiny_model_master: Path, tiny_openvino_dir: Path, runner) -> None:
    result = runner.invoke(cli, ["parity", str(_tiny_model_master), str(tiny_openvino_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["runtime"] == "openvino"


@needs_openvino
def test_bench_times_openvino_cells(tiny_onnx_dir: Path, tiny_openvino_dir: Path, runner) -> None:
    args = ["bench", str(tiny_onnx_dir), str(tiny_openvino_dir), "--name", "fp32", "--name", "ov-int8"]
    args += ["--provider", "cpu,openvino", "--seq-lens", "8", "--warmup", "1", "--runs", "2", "--no-rss", "--no-peak"]
    result = runner.invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert {(r["variant"], r["provider"]) for r in rows} == {
        (name, provider) for name in ("fp32", "ov-int8") for provider in ("cpu", "openvino")
    }
    assert json.loads(result.output)["notes"] == []
    cpu_only = runner.invoke(cli, [*(a.replace("cpu,openvino", "cpu") for a in args), "--json"])
    doc = json.loads(cpu_only.output)
    assert cpu_only.exit_code == 0 and [v["runtime"] for v in doc["variants"]] == ["onnxruntime", "openvino"]
    note = "ov-int8 was exported for OpenVINO: these cells run it on ONNX Runtime, slower than it ships; "
    assert [n for n in doc["notes"] if "OpenVINO" in n] == [note + "add --provider openvino to time it on OpenVINO"]
