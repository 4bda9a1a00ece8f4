"""The span task through the stages on a tiny tagger: finetune, evaluate, export + parity, prune."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest


pytest.importorskip("torch")
pytest.importorskip("optimum.exporters.onnx")

import onnxruntime as ort
from conftest import SPAN_LABELS, make_span_rows, prune_args, write_csv, write_jsonl
from transformers import AutoModelForTokenClassification

import edgesent.export as export_module
from edgesent.artifacts import TASK_SPANS, read_manifest, read_model_dir, verify_files
from edgesent.cli import cli
from edgesent.evaluate import evaluate_model, load_torch_model
from edgesent.export import ExportConfig, export_model
from edgesent.parity import ParityConfig, check_parity
from edgesent.tasks import detect_task, get_task
from edgesent.tasks.spans import Span, tag_names
from edgesent.tasks.spans_data import load_span_dataset


TAGS = tag_names(SPAN_LABELS)
QUICK = ["--epochs", "4", "--lr", "1e-2", "--batch-size", "8", "--early-stopping", "0", "--warmup-ratio", "0"]
SPAN_METRICS = ("precision", "recall", "f1", "span_f1", "label_accuracy", "label_macro_f1")


def _finetune(runner, base: Path, train: Path, dev: Path | None, out: Path, *extra: str):
    args = ["finetune", "--data", str(train), "--base", str(base), "--out", str(out), *QUICK, *extra]
    return runner.invoke(cli, args + (["--eval-data", str(dev)] if dev else []))


def _one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


# --- the task interface ------------------------------------------------------------------------------------------


def test_detect_task_reads_what_the_data_holds(tmp_path: Path, tiny_data, tiny_span_data):
    assert detect_task(None) == "classify"
    assert detect_task(tiny_data[0]) == "classify"  # CSV
    assert detect_task(tiny_span_data[0]) == "spans"  # JSONL with "spans"
    aspects = tmp_path / "a.jsonl"
    aspects.write_text('{"text": "x", "aspects": []}\n')
    labelled = tmp_path / "b.jsonl"
    labelled.write_text('{"text": "x", "label": "positive"}\n')
    assert detect_task(aspects) == "spans" and detect_task(labelled) == "classify"
    assert detect_task(tmp_path / "restaurants.xml") == "spans" and detect_task(tmp_path / "x.conll") == "spans"
    assert get_task("spans") is get_task(TASK_SPANS) and get_task("classify").hf_task == "text-classification"


def test_load_torch_model_picks_the_class_from_the_manifest(tiny_span_model_dir: Path, tiny_model_dir: Path):
    _, tagger = load_torch_model(tiny_span_model_dir)
    _, classifier = load_torch_model(tiny_model_dir)
    assert type(tagger).__name__ == "BertForTokenClassification"
    assert type(classifier).__name__ == "BertForSequenceClassification"


# --- finetune ----------------------------------------------------------------------------------------------------


def test_finetune_spans_writes_a_reloadable_model_with_tags_and_labels(
    runner, tiny_model_dir, tiny_span_data, tmp_path
):
    train, dev = tiny_span_data
    out = tmp_path / "out"
    result = _finetune(runner, tiny_model_dir, train, dev, out, "--task", "spans")
    assert result.exit_code == 0, result.output
    assert "best epoch" in result.output and "span_f1" in result.output

    manifest = read_manifest(out)
    assert manifest["task"] == TASK_SPANS and manifest["labels"] == SPAN_LABELS and manifest["tags"] == TAGS
    assert manifest["max_length"] == 128 and manifest["hyperparameters"]["task"] == "spans"
    assert [e["epoch"] for e in manifest["epochs"]] == [1.0, 2.0, 3.0, 4.0]
    assert all(set(SPAN_METRICS) <= set(e) and set(e["per_label"]) == set(SPAN_LABELS) for e in manifest["epochs"])
    assert manifest["data"]["train"]["rows"] == 60 and manifest["data"]["eval"]["rows"] == 16
    verify_files(out, manifest)
    model_dir = read_model_dir(out)
    assert model_dir.task == TASK_SPANS and model_dir.outputs == tuple(TAGS)
    assert AutoModelForTokenClassification.from_pretrained(out).config.id2label == dict(enumerate(TAGS))

    # best epoch by span F1, and its weights were saved: evaluating reproduces the manifest's numbers
    best = max(manifest["epochs"], key=lambda e: e["f1"])
    assert manifest["metrics"]["f1"] == best["f1"] > 0.5  # a keyword tagger learns this in 4 epochs
    report = evaluate_model(out, dev)
    for name in SPAN_METRICS:
        assert report[name] == pytest.approx(manifest["metrics"][name]), name


def test_finetune_detects_spans_and_holds_out_a_split(runner, tiny_model_dir, tiny_span_data, tmp_path):
    train, _ = tiny_span_data
    out = tmp_path / "out"
    result = _finetune(runner, tiny_model_dir, train, None, out, "--epochs", "1", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["task"] == TASK_SPANS and manifest["tags"] == TAGS
    assert manifest["data"]["train"]["rows"] + manifest["data"]["eval"]["rows"] == 60


def test_finetune_spans_bad_input_is_one_line_exit_2_and_writes_nothing(
    runner, tiny_model_dir, tiny_span_data, tmp_path
):
    train, dev = tiny_span_data
    out = tmp_path / "out"
    overlapping = tmp_path / "overlap.jsonl"
    overlapping.write_text(
        '{"text": "great food", "spans": [{"start": 0, "end": 5, "label": "positive"},'
        ' {"start": 2, "end": 10, "label": "negative"}]}\n'
    )
    unknown = write_jsonl(
        tmp_path / "unknown.jsonl",
        [{"text": "the food", "spans": [{"start": 4, "end": 8, "label": "conflict"}]}],
    )
    cases = [
        (["--data", str(overlapping), "--task", "spans"], "overlap"),
        (["--data", str(train), "--eval-data", str(unknown)], "--drop-label conflict"),
        (["--data", str(train), "--task", "classify", "--drop-label", "conflict"], "drop_labels"),
        (["--data", str(tmp_path / "missing.xml")], "no such file"),
    ]
    for args, expected in cases:
        result = runner.invoke(cli, ["finetune", "--base", str(tiny_model_dir), "--out", str(out), *QUICK, *args])
        assert result.exit_code == 2, result.output
        assert expected in _one_error_line(result)
        assert not out.exists()
    # --drop-label conflict makes the same evaluation file usable
    ok = _finetune(runner, tiny_model_dir, train, dev, out, "--epochs", "1", "--drop-label", "conflict")
    assert ok.exit_code == 0, ok.output
    assert read_manifest(out)["hyperparameters"]["drop_labels"] == ["conflict"]


# --- export and parity -------------------------------------------------------------------------------------------


def test_span_export_fp32_round_trip(tiny_span_onnx_dir: Path, _tiny_span_model_master: Path):
    manifest = read_manifest(tiny_span_onnx_dir)
    assert manifest["task"] == TASK_SPANS and manifest["labels"] == SPAN_LABELS and manifest["tags"] == TAGS
    assert manifest["max_length"] == 64 and manifest["precision"] == "fp32" and manifest["verified"]
    parity = manifest["parity"]
    assert parity["passed"] and parity["task"] == TASK_SPANS and parity["span_f1"] == 1.0
    assert {c["name"] for c in parity["checks"]} >= {"max_abs_diff", "agreement", "span_f1", "tokenizer_match"}
    assert parity["thresholds"]["min_span_f1"] == 1.0
    config = json.loads((tiny_span_onnx_dir / "config.json").read_text())
    assert config["id2label"] == {str(i): tag for i, tag in enumerate(TAGS)}
    read_model_dir(tiny_span_onnx_dir)  # the runtime's view: tags validated

    graph = onnx.load(str(tiny_span_onnx_dir / "model.onnx"))
    (logits,) = [o for o in graph.graph.output if o.name == "logits"]
    dims = logits.type.tensor_type.shape.dim
    assert len(dims) == 3 and dims[0].dim_param and dims[1].dim_param and dims[2].dim_value == len(TAGS)

    # the fp32 graph reproduces PyTorch's (B, T, K) logits on a padded batch
    tokenizer, model = load_torch_model(_tiny_span_model_master)
    encoded = tokenizer(["great food", "the staff were rude and the phone broken"], padding=True, return_tensors="np")
    session = ort.InferenceSession(str(tiny_span_onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()})[0]
    import torch

    with torch.no_grad():
        torch_logits = model(**{k: torch.from_numpy(v) for k, v in encoded.items()}).logits.numpy()
    assert onnx_logits.shape == torch_logits.shape == (2, encoded["input_ids"].shape[1], len(TAGS))
    assert np.allclose(onnx_logits, torch_logits, atol=1e-4)


def test_span_export_int8_with_span_parity_data(_tiny_span_model_master: Path, tiny_span_data, tmp_path: Path):
    from edgesent.quantize import QuantizeConfig

    _, dev = tiny_span_data
    out = tmp_path / "int8"
    # a random tagger's tags are near-ties, so int8 may flip some: the bounds here test the mechanics
    parity = ParityConfig(data=dev, min_agreement=0.5, min_span_f1=0.0, max_accuracy_drop=1.0)
    cfg = ExportConfig(precision="int8", quantize=QuantizeConfig.avx512_vnni(), parity=parity)
    manifest = export_model(_tiny_span_model_master, out, cfg)
    assert manifest["task"] == TASK_SPANS and manifest["tags"] == TAGS and manifest["precision"] == "int8"
    report = manifest["parity"]
    assert report["passed"] and report["source"] == str(dev) and report["n_texts"] == 16
    assert report["accuracy_torch"] is not None and report["span_f1"] is not None
    assert manifest["export"]["quantized_op_counts"]  # quantization is task-agnostic
    assert read_model_dir(out).outputs == tuple(TAGS)


def test_span_export_falls_back_to_torch_onnx_export(_tiny_span_model_master: Path, tmp_path: Path, monkeypatch):
    def optimum_fails(*args, **kwargs):
        raise RuntimeError("simulated Optimum failure")

    monkeypatch.setattr(export_module, "main_export", optimum_fails)
    out = tmp_path / "fallback"
    manifest = export_model(_tiny_span_model_master, out, ExportConfig())
    assert manifest["export"]["exporter"] == "torch.onnx" and manifest["parity"]["passed"]
    graph = onnx.load(str(out / "model.onnx"))
    (logits,) = [o for o in graph.graph.output if o.name == "logits"]
    dims = logits.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch_size" and dims[1].dim_param == "sequence_length"


def test_span_parity_fails_on_a_damaged_model(tiny_span_onnx_dir: Path, _tiny_span_model_master: Path, tmp_path):
    broken = Path(shutil.copytree(tiny_span_onnx_dir, tmp_path / "broken"))
    model = onnx.load(str(broken / "model.onnx"))
    init = max(
        (i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT), key=lambda i: i.ByteSize()
    )
    array = onnx.numpy_helper.to_array(init)
    noisy = array + np.random.default_rng(0).normal(0, 0.5, array.shape).astype(array.dtype)
    init.CopyFrom(onnx.numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(broken / "model.onnx"))
    report = check_parity(_tiny_span_model_master, broken, ParityConfig(verify=False))
    assert not report.passed
    failed = {c["name"] for c in report.checks if not c["passed"]}
    assert "max_abs_diff" in failed and "agreement" in failed
    assert report.disagreements or report.span_f1 == 1.0


def test_with_gold_spans_default_bounds_report_and_set_ones_gate(
    tiny_span_onnx_dir: Path, _tiny_span_model_master: Path, tiny_span_data, tmp_path
):
    """With gold spans the span F1 drop decides; token agreement and span F1 against PyTorch gate only when set."""
    broken = Path(shutil.copytree(tiny_span_onnx_dir, tmp_path / "broken"))
    model = onnx.load(str(broken / "model.onnx"))
    for node in model.graph.node:  # negated logits: every decisive tag flips
        node.output[:] = ["raw" if name == "logits" else name for name in node.output]
    model.graph.node.append(onnx.helper.make_node("Neg", ["raw"], ["logits"]))
    onnx.save(model, str(broken / "model.onnx"))
    loose = {"data": tiny_span_data[1], "precision": "int8", "verify": False, "max_accuracy_drop": 1.0}
    loose |= {"near_tie_margin": 0.0, "probe_max_prob_diff": 1.0}
    default = check_parity(_tiny_span_model_master, broken, ParityConfig(**loose))
    assert default.passed and default.agreement < 0.97
    set_bounds = check_parity(_tiny_span_model_master, broken, ParityConfig(**loose, min_agreement=0.97))
    assert not set_bounds.passed and [c["name"] for c in set_bounds.checks if not c["passed"]] == ["agreement"]


def test_span_parity_on_texts_without_gold_spans(tiny_span_onnx_dir: Path, _tiny_span_model_master: Path, tmp_path):
    """A parity sample whose held-out texts have no aspects still compares the two models (no gold F1 then)."""
    data = write_jsonl(tmp_path / "plain.jsonl", [{"text": row["text"], "spans": []} for row in make_span_rows(6)])
    report = check_parity(_tiny_span_model_master, tiny_span_onnx_dir, ParityConfig(data=data, verify=False))
    assert report.passed and report.n_texts == 6 and report.accuracy_torch is None
    assert "accuracy_drop" not in {c["name"] for c in report.checks}


def test_parity_cli_on_a_span_model(runner, tiny_span_onnx_dir: Path, _tiny_span_model_master: Path, tiny_span_data):
    _, dev = tiny_span_data
    result = runner.invoke(
        cli, ["parity", str(_tiny_span_model_master), str(tiny_span_onnx_dir), "--data", str(dev), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["passed"] and report["span_f1"] == 1.0 and report["accuracy_torch"] == report["accuracy_onnx"]


# --- evaluate ----------------------------------------------------------------------------------------------------


def test_evaluate_pytorch_and_onnx_span_dirs_agree(
    runner, _tiny_span_model_master: Path, tiny_span_onnx_dir: Path, tmp_path: Path
):
    rows = make_span_rows(30, seed=3)
    rows.append({"text": "the food", "spans": [{"start": 4, "end": 8, "label": "conflict"}]})
    data = write_jsonl(tmp_path / "eval.jsonl", rows)
    reports = []
    for model_dir in (_tiny_span_model_master, tiny_span_onnx_dir):
        result = runner.invoke(
            cli, ["evaluate", str(model_dir), "--data", str(data), "--drop-label", "conflict", "--json"]
        )
        assert result.exit_code == 0, result.output
        reports.append(json.loads(result.output))
    torch_report, onnx_report = reports
    assert torch_report["kind"] == "pytorch" and onnx_report["kind"] == "onnx"
    assert torch_report["task"] == onnx_report["task"] == TASK_SPANS
    for name in (*SPAN_METRICS, "n_gold", "n_pred", "n_boundary_matches", "per_label"):
        assert torch_report[name] == onnx_report[name], name  # the same spans, so the same numbers
    assert torch_report["data"]["dropped"] == {"conflict": 1} and torch_report["n_texts"] == 31
    # the table form names the span scores
    table = runner.invoke(cli, ["evaluate", str(tiny_span_onnx_dir), "--data", str(data), "--drop-label", "conflict"])
    assert table.exit_code == 0 and "span_f1=" in table.output and "label_accuracy=" in table.output


def test_evaluate_span_model_bad_input(runner, _tiny_span_model_master: Path, tiny_data, tmp_path: Path):
    unknown = write_jsonl(
        tmp_path / "unknown.jsonl",
        [{"text": "the food", "spans": [{"start": 4, "end": 8, "label": "conflict"}]}],
    )
    for data in (tiny_data[1], unknown):  # a classification CSV; a span label the model does not know
        result = runner.invoke(cli, ["evaluate", str(_tiny_span_model_master), "--data", str(data)])
        assert result.exit_code == 2, result.output
        _one_error_line(result)


def test_evaluate_span_metrics_are_exact_match(_tiny_span_model_master: Path, tmp_path: Path, monkeypatch):
    """Start, end and label must all match; the span-only F1 ignores the label."""
    from edgesent.tasks import spans_stages

    data = write_jsonl(
        tmp_path / "gold.jsonl",
        [
            {
                "text": "great food and rude staff",
                "spans": [{"start": 0, "end": 5, "label": "positive"}, {"start": 15, "end": 19, "label": "negative"}],
            }
        ],
    )
    predicted = [[Span(0, 5, "positive", "great"), Span(15, 19, "positive", "rude")]]
    monkeypatch.setattr(spans_stages.SpanTask, "predict_spans", lambda self, model, texts, batch_size=64: predicted)
    report = evaluate_model(_tiny_span_model_master, data)
    assert report["f1"] == pytest.approx(0.5) and report["span_f1"] == 1.0
    assert report["label_accuracy"] == 0.5 and report["n_boundary_matches"] == 2
    assert load_span_dataset(data).labels() == ["negative", "positive"]


# --- prune -------------------------------------------------------------------------------------------------------


def test_prune_a_span_model_scores_tokens_distils_and_exports(
    runner, tiny_span_model_dir: Path, tiny_span_data, tmp_path: Path
):
    """Heads and FFN neurons of a tagger are scored on the token loss, removed, recovered by per-token
    distillation and judged by span F1; the saved tagger evaluates to its manifest's figures and exports."""
    dev = tiny_span_data[1]
    out = tmp_path / "pruned"
    options = ["--heads", "0.5", "--ffn", "0.5", "--max-steps", "2", "--batch-size", "8", "--json"]
    result = runner.invoke(cli, prune_args(tiny_span_model_dir, tiny_span_data, out, *options))
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    pruning = manifest["pruning"]
    assert manifest["task"] == TASK_SPANS and manifest["labels"] == SPAN_LABELS and manifest["tags"] == TAGS
    assert pruning["heads_per_layer"] == {"before": [4, 4], "after": [2, 2]}
    assert pruning["ffn_per_layer"] == {"before": [64, 64], "after": [32, 32]}
    # the token loss reached every layer's gates: no layer's head scores are all zero
    assert all(max(layer) > 0 for layer in pruning["importance"]["heads_normalized"])
    assert set(pruning["accuracy"]) == {"before", "pruned", "recovered"}
    assert set(pruning["accuracy"]["recovered"]) == {"precision", "recall", "f1", "span_f1", "label_accuracy"}
    assert pruning["accuracy"]["recovered"]["f1"] == manifest["metrics"]["f1"]
    assert manifest["recovery"]["epochs"] and "span_f1" in manifest["recovery"]["epochs"][0]
    assert manifest["parity_sample"]["rows"] == 16

    report = evaluate_model(out, dev)  # the saved tagger, reloaded, scores what the manifest says
    assert report["f1"] == pytest.approx(manifest["metrics"]["f1"])
    assert report["n_pred"] == manifest["metrics"]["n_pred"]
    onnx = export_model(out, tmp_path / "onnx", ExportConfig())
    assert onnx["task"] == TASK_SPANS and onnx["parity"]["passed"]


def test_prune_reads_span_labels_like_finetune(runner, tiny_span_model_dir: Path, tmp_path: Path):
    """A span label the model does not know is one line naming --drop-label; with it the data is accepted."""
    rows = make_span_rows(20, seed=3)
    rows[0]["spans"][0]["label"] = "conflict"
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    dev = write_jsonl(tmp_path / "dev.jsonl", make_span_rows(8, seed=4))
    options = ["--heads", "0.5", "--no-recovery"]
    refused = runner.invoke(cli, prune_args(tiny_span_model_dir, (train, dev), tmp_path / "a", *options))
    assert refused.exit_code == 2 and "--drop-label conflict" in _one_error_line(refused)
    assert not (tmp_path / "a").exists()
    accepted = runner.invoke(
        cli, prune_args(tiny_span_model_dir, (train, dev), tmp_path / "b", *options, "--drop-label", "conflict")
    )
    assert accepted.exit_code == 0, accepted.output
    assert "span_f1" in accepted.output and "FLOPs x" in accepted.output


def test_classification_csv_is_refused_as_span_parity_data(
    _tiny_span_model_master: Path, tiny_span_onnx_dir: Path, tmp_path: Path
):
    from edgesent.errors import DataError

    csv_path = write_csv(tmp_path / "x.csv", [("great", "positive")])
    with pytest.raises(DataError, match="unknown format"):
        check_parity(_tiny_span_model_master, tiny_span_onnx_dir, ParityConfig(data=csv_path))


def test_pytorch_spans_keep_a_word_cut_by_truncation_whole_as_the_predictor_does(
    _tiny_span_model_master: Path, monkeypatch
):
    """evaluate scores PyTorch and ONNX alike: both extend the word at the cut to its end (extend_cut_word)."""
    import transformers

    from edgesent import evaluate as evaluate_module
    from edgesent.tasks.spans_stages import torch_spans

    tokenizer = transformers.AutoTokenizer.from_pretrained(_tiny_span_model_master)
    max_length = 16
    text = "the " * (max_length - 3) + "qwertyuiop the"  # [CLS], 13 words, "q" of the cut word, [SEP]
    tags = ["O", "B-positive", "I-positive"]

    def every_token_begins_a_span(model, tok, texts, batches, length, desc=None):
        for rows in batches:
            n = len(tok([texts[i] for i in rows], padding=True, truncation=True, max_length=length)["input_ids"][0])
            logits = np.zeros((len(rows), n, len(tags)), dtype=np.float32)
            logits[:, :, 1] = 5.0
            yield {}, logits

    monkeypatch.setattr(evaluate_module, "iter_torch_logits", every_token_begins_a_span)
    (spans,) = torch_spans(None, tokenizer, [text], tags, max_length)
    assert spans[-1].text == "qwertyuiop" and len(spans) == max_length - 2
