"""Fine-tuning and evaluation on the tiny model: CLI runs, manifest, best checkpoint, atomic output."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner


pytest.importorskip("torch")
from transformers import AutoModelForSequenceClassification, Trainer

from edgesent.artifacts import read_manifest, verify_files
from edgesent.cli import cli
from edgesent.errors import ConfigError
from edgesent.evaluate import evaluate_model
from edgesent.train import TrainConfig, inverse_frequency_weights, resolve_base, resolve_device


QUICK = ["--epochs", "4", "--lr", "1e-2", "--batch-size", "8", "--early-stopping", "0", "--warmup-ratio", "0"]


def _finetune(tiny_model_dir: Path, train: Path, dev: Path, out: Path, *extra: str):
    args = [
        "finetune",
        "--data",
        str(train),
        "--eval-data",
        str(dev),
        "--base",
        str(tiny_model_dir),
        "--out",
        str(out),
        *QUICK,
        *extra,
    ]
    return CliRunner().invoke(cli, args)


def test_finetune_writes_a_reloadable_model_with_a_complete_manifest(tiny_model_dir, tiny_data, tmp_path):
    train, dev = tiny_data
    out = tmp_path / "out"
    result = _finetune(tiny_model_dir, train, dev, out)
    assert result.exit_code == 0, result.output
    assert "best epoch" in result.output and "macro_f1" in result.output

    manifest = read_manifest(out)
    assert manifest["kind"] == "pytorch"
    assert manifest["labels"] == ["negative", "neutral", "positive"]
    assert manifest["hyperparameters"]["lr"] == 1e-2 and manifest["hyperparameters"]["epochs"] == 4
    assert manifest["data"]["train"]["sha256"] == hashlib.sha256(train.read_bytes()).hexdigest()
    assert manifest["data"]["train"]["rows"] == 60 and manifest["data"]["eval"]["rows"] == 18
    assert [e["epoch"] for e in manifest["epochs"]] == [1.0, 2.0, 3.0, 4.0]
    assert set(manifest["epochs"][0]["per_class"]) == {"negative", "neutral", "positive"}
    assert {"torch", "transformers", "python"} <= set(manifest["versions"])
    assert manifest["device"]["type"] == "cpu"
    verify_files(out, manifest)  # every file hash matches

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}

    # The saved weights are the best epoch's: re-evaluating reproduces its metrics exactly.
    best = max(manifest["epochs"], key=lambda e: e["macro_f1"])
    assert manifest["metrics"]["macro_f1"] == best["macro_f1"]
    report = evaluate_model(out, dev)
    assert report["accuracy"] == pytest.approx(manifest["metrics"]["accuracy"])
    assert report["confusion_matrix"] == manifest["metrics"]["confusion_matrix"]


def test_evaluate_cli_json(tiny_model_dir, tiny_data):
    _, dev = tiny_data
    result = CliRunner().invoke(cli, ["evaluate", str(tiny_model_dir), "--data", str(dev), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "n"} <= set(report)
    assert report["n"] == 18 and np.sum(report["confusion_matrix"]) == 18


def test_held_out_split_when_no_eval_data(tiny_model_dir, tiny_data, tmp_path):
    train, _ = tiny_data
    out = tmp_path / "out"
    args = [
        "finetune",
        "--data",
        str(train),
        "--base",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--eval-split",
        "0.2",
        "--json",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["out_dir"] == str(out)  # stdout is pure JSON; Trainer logs go to stderr
    data = read_manifest(out)["data"]
    assert data["eval"]["rows"] == 12 and data["train"]["rows"] == 48
    assert "held-out 0.2" in data["eval"]["source"]


def test_bad_data_is_one_line_exit_2_and_writes_nothing(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("body,label\nx,a\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["finetune", "--data", str(bad), "--base", str(tiny_model_dir), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {bad}: no text column 'text' (columns: body, label); use --text-column"
    assert not out.exists()


def test_existing_output_needs_overwrite(tiny_model_dir, tiny_data, tmp_path):
    train, dev = tiny_data
    out = tmp_path / "out"
    out.mkdir()
    result = _finetune(tiny_model_dir, train, dev, out)
    assert result.exit_code == 2 and "already exists; pass --overwrite" in result.output


def test_failed_run_leaves_previous_model_untouched(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    train, dev = tiny_data
    out = tmp_path / "out"
    assert _finetune(tiny_model_dir, train, dev, out, "--max-steps", "1").exit_code == 0
    before = read_manifest(out)

    def explode(self, *args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(Trainer, "train", explode)
    result = _finetune(tiny_model_dir, train, dev, out, "--overwrite")
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)
    assert read_manifest(out) == before
    verify_files(out, before)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp dirs left


def test_unseen_eval_label_refused_before_training(tiny_model_dir, tiny_data, tmp_path):
    train, _ = tiny_data
    dev = tmp_path / "dev.csv"
    dev.write_text("text,label\nhello,angry\n")
    result = _finetune(tiny_model_dir, train, dev, tmp_path / "out")
    assert result.exit_code == 2 and "'angry' not among the training labels" in result.output


def test_missing_train_extra_names_the_install_command(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "torch" else real_find_spec(n, *a))
    result = CliRunner().invoke(cli, ["finetune", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "needs the training/export extra (missing: torch)" in result.output and "edgesent[train]" in result.output


def test_config_validation_names_field_and_value():
    with pytest.raises(ConfigError, match="eval_split must be in \\(0, 1\\), got 1.5"):
        TrainConfig(eval_split=1.5)
    with pytest.raises(ConfigError, match=r"lr must be in \(0, inf\), got 0"):
        TrainConfig(lr=0)


def test_class_weights_balance_the_classes():
    weights = inverse_frequency_weights([0, 0, 0, 1], 2).numpy()
    assert weights == pytest.approx([4 / 6, 2.0])


def test_base_resolution():
    assert (Path(resolve_base("minilm-l6")) / "config.json").is_file()
    assert resolve_base("bert-base-uncased") == "bert-base-uncased"  # a hub id passes through
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_base(str(Path(__file__).parent))
    with pytest.raises(ConfigError, match="no such directory"):
        resolve_base("/nonexistent/model")


def test_unloadable_hub_id_is_one_line(tiny_data, tmp_path, monkeypatch):
    import huggingface_hub.constants
    import transformers.utils.hub

    # The offline switch is read at import time, so patch the module-level flags, not the environment.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", True)
    train, _dev = tiny_data
    result = CliRunner().invoke(
        cli, ["finetune", "--data", str(train), "--base", "no-such-org/no-such-model", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: cannot load base model 'no-such-org/no-such-model'")
    assert not (tmp_path / "o").exists()


def test_cuda_without_gpu_is_a_config_error():
    import torch

    if torch.cuda.is_available():
        assert resolve_device("auto") == "cuda"
    else:
        assert resolve_device("auto") == "cpu"
        with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.parametrize("command", ["finetune", "evaluate"])
def test_help(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
