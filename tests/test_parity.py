"""The parity gate on its own: probe coverage, the report, and that it fails when the ONNX model is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest


pytest.importorskip("torch")
pytest.importorskip("optimum.exporters.onnx")

import onnx
import transformers
from conftest import LABELS, make_texts, write_csv

from edgesent.artifacts import KIND_ONNX, read_manifest, write_manifest
from edgesent.cli import cli
from edgesent.errors import ConfigError, ParityError
from edgesent.parity import DEFAULT_THRESHOLDS, PROBE_TEXTS, ParityConfig, check_parity


REPORT_KEYS = {"max_abs_diff", "mean_abs_diff", "agreement", "accuracy_torch", "accuracy_onnx", "passed"}


@pytest.fixture
def broken_copy(tiny_onnx_dir: Path, tmp_path: Path):
    """Copy the export and let a test damage its model.onnx; the manifest records the damaged file, as an export
    that went wrong would (an edited file is refused before parity judges it: see the test below)."""

    def make(damage) -> Path:
        copy = Path(shutil.copytree(tiny_onnx_dir, tmp_path / "broken"))
        model = onnx.load(str(copy / "model.onnx"))
        damage(model)
        onnx.save(model, str(copy / "model.onnx"))
        return rerecorded(copy)

    return make


def rerecorded(export: Path) -> Path:
    """The export with its manifest written anew over its current files: an export that went wrong, recorded."""
    recorded = read_manifest(export)
    automatic = {"format_version", "kind", "created", "versions", "files", "content_sha256"}
    write_manifest(export, KIND_ONNX, {k: v for k, v in recorded.items() if k not in automatic})
    return export


def perturb_largest_weight(model: onnx.ModelProto, scale: float = 0.05) -> None:
    """Add seeded noise to the largest float initializer (the word embeddings)."""
    init = max(
        (i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT), key=lambda i: i.ByteSize()
    )
    array = onnx.numpy_helper.to_array(init)
    noisy = array + np.random.default_rng(0).normal(0, scale, array.shape).astype(array.dtype)
    init.CopyFrom(onnx.numpy_helper.from_array(noisy, init.name))


def test_probe_texts_cover_the_edges(_tiny_model_master: Path):
    texts = PROBE_TEXTS
    assert texts["empty"] == "" and texts["whitespace_only"].strip() == "" and len(texts["one_char"]) == 1
    assert len(texts["one_word"].split()) == 1
    assert any(ord(ch) > 0x1F000 for ch in texts["emoji"])
    assert any(ord(ch) > 0x3000 for ch in texts["cjk"]) and any("\u0400" <= ch <= "\u04ff" for ch in texts["cyrillic"])
    tokenizer = transformers.AutoTokenizer.from_pretrained(_tiny_model_master)
    assert len(tokenizer(texts["far_over_max_length"])["input_ids"]) > 512


def test_check_parity_passes_and_reports_every_check(tiny_onnx_dir: Path, _tiny_model_master: Path):
    report = check_parity(_tiny_model_master, tiny_onnx_dir)
    assert report.passed and report.failures == [] and report.precision == "fp32"
    assert report.n_texts == len(PROBE_TEXTS) and report.n_rows == 2 * len(PROBE_TEXTS)  # mixed batch + one by one
    assert report.thresholds == DEFAULT_THRESHOLDS["fp32"]
    assert {c["name"] for c in report.checks} == {
        "output_shape",
        "finite",
        "max_abs_diff",
        "agreement",
        "tokenizer_match",
    }
    assert report.accuracy_torch is None and report.accuracy_delta is None
    assert set(json.loads(json.dumps(report.to_dict()))) >= REPORT_KEYS


def test_parity_cli_json(tiny_onnx_dir: Path, _tiny_model_master: Path, runner):
    result = runner.invoke(cli, ["parity", str(_tiny_model_master), str(tiny_onnx_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) >= REPORT_KEYS and report["passed"] is True and report["max_abs_diff"] <= 1e-4
    human = runner.invoke(cli, ["parity", str(_tiny_model_master), str(tiny_onnx_dir)])
    assert human.exit_code == 0 and human.output.startswith("parity passed on 13 texts from probe texts")


def test_labelled_data_adds_accuracy(tiny_onnx_dir: Path, _tiny_model_master: Path, tmp_path: Path, runner):
    data = write_csv(tmp_path / "dev.csv", make_texts(5))
    result = runner.invoke(cli, ["parity", str(_tiny_model_master), str(tiny_onnx_dir), "--data", str(data), "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 0 and report["n_texts"] == 15 and report["source"] == str(data)
    assert report["accuracy_torch"] == report["accuracy_onnx"] and report["accuracy_delta"] == 0.0
    assert "accuracy_drop" in {c["name"] for c in report["checks"]}
    unlabelled = runner.invoke(
        cli,
        ["parity", str(_tiny_model_master), str(tiny_onnx_dir), "--data", str(data), "--label-column", "", "--json"],
    )
    assert json.loads(unlabelled.output)["accuracy_torch"] is None


def test_probe_texts_run_beside_real_data_but_never_decide_agreement(
    tiny_int8_dir: Path, _tiny_model_master: Path, tmp_path: Path
):
    """With real texts deciding, the probes still run (shapes, finiteness, a probability bound) under their own
    checks; agreement counts only the real texts, and a tight probe bound fails the gate on its own."""
    data = write_csv(tmp_path / "dev.csv", make_texts(5))  # 15 labelled texts
    report = check_parity(_tiny_model_master, tiny_int8_dir, ParityConfig(data=data))
    checks = {c["name"]: c for c in report.checks}
    assert report.passed and report.n_texts == 15 and report.n_rows == 15  # the probes are not in agreement
    assert {"probes_output_shape", "probes_finite", "probes_max_prob_diff"} <= set(checks)
    moved = checks["probes_max_prob_diff"]["value"]
    assert 0.0 < moved <= 0.5 and checks["probes_max_prob_diff"]["bound"] == 0.5  # int8's default
    strict = check_parity(_tiny_model_master, tiny_int8_dir, ParityConfig(data=data, probe_max_prob_diff=moved / 2))
    assert not strict.passed
    assert strict.failures == [f"probe texts: a probability moved by {moved:.4f} > {moved / 2} against PyTorch"]
    assert strict.agreement == report.agreement


def test_an_edited_export_is_refused_before_it_is_judged(
    tiny_onnx_dir: Path, _tiny_model_master: Path, tmp_path: Path, runner
):
    """As predict and serve refuse it: a model file or tokenizer changed after the export (exit 2, one line)."""
    edited = Path(shutil.copytree(tiny_onnx_dir, tmp_path / "edited"))
    model = onnx.load(str(edited / "model.onnx"))
    perturb_largest_weight(model)
    onnx.save(model, str(edited / "model.onnx"))
    result = runner.invoke(cli, ["parity", str(_tiny_model_master), str(edited)])
    assert result.exit_code == 2 and "model.onnx" in result.output.strip().splitlines()[-1]
    assert runner.invoke(cli, ["parity", str(_tiny_model_master), str(edited), "--no-verify"]).exit_code == 1
    no_tokenizer = Path(shutil.copytree(tiny_onnx_dir, tmp_path / "no-tokenizer"))
    (no_tokenizer / "tokenizer.json").unlink()
    result = runner.invoke(cli, ["parity", str(_tiny_model_master), str(no_tokenizer), "--no-verify"])
    assert result.exit_code == 2 and "no tokenizer.json" in result.output.strip().splitlines()[-1]


def test_perturbed_weights_fail_with_exit_1(broken_copy, _tiny_model_master: Path, runner):
    broken = broken_copy(perturb_largest_weight)
    result = runner.invoke(cli, ["parity", str(_tiny_model_master), str(broken), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output[: result.output.rindex("}") + 1])
    assert report["passed"] is False and report["max_abs_diff"] > 1e-4
    assert any(f.startswith("max_abs_diff") and "> 1e-04" in f for f in report["failures"])
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error: parity failed for") and "max_abs_diff" in error


def test_thresholds_are_configurable(broken_copy, _tiny_model_master: Path, runner):
    broken = broken_copy(lambda m: perturb_largest_weight(m, scale=1e-3))
    args = ["parity", str(_tiny_model_master), str(broken)]
    assert runner.invoke(cli, args).exit_code == 1
    loose = runner.invoke(cli, [*args, "--max-abs-diff", "10", "--min-agreement", "0", "--json"])
    assert loose.exit_code == 0 and json.loads(loose.output)["thresholds"]["max_abs_diff"] == 10


def test_flipped_predictions_are_named(broken_copy, _tiny_model_master: Path):
    def negate(model: onnx.ModelProto) -> None:
        for node in model.graph.node:
            node.output[:] = ["raw" if name == "logits" else name for name in node.output]
        model.graph.node.append(onnx.helper.make_node("Neg", ["raw"], ["logits"]))

    report = check_parity(_tiny_model_master, broken_copy(negate))
    assert not report.passed and report.agreement < 0.5 and report.disagreements
    assert {report.disagreements[0]["torch"], report.disagreements[0]["onnx"]} <= set(LABELS)
    with pytest.raises(ParityError, match=r"agreement 0\.\d+ < 1\.0000 \(\d+ of 26 rows changed"):
        report.raise_if_failed()


def test_a_wrong_tokenizer_is_caught(tiny_onnx_dir: Path, _tiny_model_master: Path, tmp_path: Path):
    copy = Path(shutil.copytree(tiny_onnx_dir, tmp_path / "copy"))
    tokenizer = json.loads((copy / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["great"], vocab["awful"] = vocab["awful"], vocab["great"]
    (copy / "tokenizer.json").write_text(json.dumps(tokenizer))
    report = check_parity(_tiny_model_master, rerecorded(copy))
    assert not report.passed and 0 < report.tokenizer_match < 1
    assert any(f.startswith("tokenizer:") for f in report.failures)


def test_a_model_that_cannot_run_is_a_failure_not_a_crash(broken_copy, _tiny_model_master: Path):
    def rename_input(model: onnx.ModelProto) -> None:
        model.graph.input[0].name = "ids"  # dangling: nothing feeds the graph's input_ids any more

    report = check_parity(_tiny_model_master, broken_copy(rename_input))
    assert not report.passed and report.max_abs_diff is None
    assert report.failures[0].startswith("onnxruntime cannot run model.onnx")


def test_bad_inputs_exit_2(tiny_onnx_dir: Path, _tiny_model_master: Path, tmp_path: Path, runner):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(cli, ["parity", str(_tiny_model_master), str(empty)])
    assert result.exit_code == 2 and "no model.onnx" in result.output
    result = runner.invoke(cli, ["parity", str(tiny_onnx_dir), str(tiny_onnx_dir)])
    assert result.exit_code == 2 and "manifest kind is 'onnx', not 'pytorch'" in result.output
    data = write_csv(tmp_path / "d.csv", [("fine", "neutral"), ("hm", "unknown")])
    result = runner.invoke(cli, ["parity", str(_tiny_model_master), str(tiny_onnx_dir), "--data", str(data)])
    assert result.exit_code == 2 and "'unknown' not among the training labels" in result.output


def test_max_length_over_the_positions_is_a_one_line_error(tiny_onnx_dir: Path, _tiny_model_master: Path, runner):
    result = runner.invoke(cli, ["parity", str(_tiny_model_master), str(tiny_onnx_dir), "--max-length", "256"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: max_length 256 exceeds the 128 positions of {_tiny_model_master}/config.json; "
        "pass --max-length 128 or less"
    )
    assert "Traceback" not in result.output


def test_parity_config_validation():
    with pytest.raises(ConfigError, match="min_agreement must be a fraction in \\[0, 1\\], got 1.5"):
        ParityConfig(min_agreement=1.5)
    with pytest.raises(ConfigError, match="precision='int4' is not one of"):
        ParityConfig(precision="int4")
    cfg = ParityConfig(max_abs_diff=0.5, data="x.csv", label_column="")
    assert cfg.label_column is None and cfg.thresholds("int8") == {**DEFAULT_THRESHOLDS["int8"], "max_abs_diff": 0.5}
    assert ParityConfig(max_abs_diff=float("inf")).thresholds("fp32")["max_abs_diff"] is None
    assert ParityConfig.from_dict(cfg.to_dict()) == cfg


def test_flips_on_near_ties_are_reported_not_judged(broken_copy, _tiny_model_master: Path):
    """The tiny random head decides by < 0.02 logits: negating it flips labels that PyTorch itself barely chose."""

    def negate(model: onnx.ModelProto) -> None:
        for node in model.graph.node:
            node.output[:] = ["raw" if name == "logits" else name for name in node.output]
        model.graph.node.append(onnx.helper.make_node("Neg", ["raw"], ["logits"]))

    broken = broken_copy(negate)
    lenient = check_parity(_tiny_model_master, broken, ParityConfig(precision="int8"))
    verdict = lenient.agreement_verdict
    assert lenient.passed and verdict["near_tie_flips"] == 13 and verdict["decisive_flips"] == 0
    strict = check_parity(_tiny_model_master, broken, ParityConfig(precision="int8", near_tie_margin=0.0))
    assert not strict.passed and "13 decisive flip(s) in 13" in strict.failures[0]


def test_with_labels_a_default_agreement_bound_reports_and_a_set_one_gates(
    broken_copy, _tiny_model_master: Path, tmp_path: Path
):
    """With labelled data the accuracy drop decides and the default agreement bound is reported only; a bound the
    user sets is enforced as set (``--min-agreement 0.9`` must not be silently ignored)."""

    def negate(model: onnx.ModelProto) -> None:
        for node in model.graph.node:
            node.output[:] = ["raw" if name == "logits" else name for name in node.output]
        model.graph.node.append(onnx.helper.make_node("Neg", ["raw"], ["logits"]))

    broken, data = broken_copy(negate), write_csv(tmp_path / "dev.csv", make_texts(5))
    loose = {"data": data, "precision": "int8", "near_tie_margin": 0.0, "max_accuracy_drop": 1.0}
    default = check_parity(_tiny_model_master, broken, ParityConfig(**loose))
    assert default.passed and default.agreement < 0.5 and default.thresholds["min_agreement"] == 0.99
    assert not default.agreement_verdict["agreement_passed"]
    set_bound = check_parity(_tiny_model_master, broken, ParityConfig(**loose, min_agreement=0.9))
    assert not set_bound.passed and set_bound.failures[0].startswith("agreement 0.")


def test_the_gate_judges_the_batches_the_predictor_runs(tiny_onnx_dir: Path, _tiny_model_master: Path, monkeypatch):
    """Dynamic int8 takes one activation range per batch, so the gate must see the predictor's own batches
    (length-sorted windows), and every row must still be compared with its own text's PyTorch logits."""
    import torch

    from edgesent import runtime
    from edgesent.parity import TorchReference
    from edgesent.runtime import Predictor

    monkeypatch.setattr(runtime, "SORT_WINDOW_BATCHES", 2)  # 2 windows of 6 texts: the window edge matters
    rng = np.random.default_rng(0)
    texts = [" ".join(["good"] * int(n)) for n in rng.integers(1, 30, size=12)]
    labels = [LABELS[i % 2] for i in range(12)]
    reference = TorchReference(_tiny_model_master, ParityConfig(batch_size=3), texts=texts, labels=labels)
    predictor = Predictor.load(tiny_onnx_dir)
    assert reference.rows == [rows for rows, _, _ in predictor._batches(texts, 3)]
    assert reference.rows != [list(range(i, i + 3)) for i in range(0, 12, 3)]  # not the input order
    model = transformers.AutoModelForSequenceClassification.from_pretrained(_tiny_model_master).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(_tiny_model_master)
    for r, text_index in enumerate(reference.row_text):
        with torch.inference_mode():
            alone = model(**tokenizer(texts[text_index], return_tensors="pt")).logits[0].numpy()
        assert np.allclose(reference.logits[r], alone, atol=1e-4)
