"""Fine-tuning and evaluation on the tiny model: CLI runs, manifest, best checkpoint, atomic output."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import torchrun


pytest.importorskip("torch")
from transformers import AutoModelForSequenceClassification, Trainer

from edgesent.artifacts import read_manifest, read_model_dir, verify_files
from edgesent.cli import cli
from edgesent.errors import ConfigError
from edgesent.evaluate import evaluate_model
from edgesent.train import (
    TrainConfig,
    inverse_frequency_weights,
    layerwise_param_groups,
    resolve_base,
    resolve_device,
)


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
    assert "needs the 'train' extra (missing: torch)" in result.output and "edgesent[train]" in result.output


def test_config_validation_names_field_and_value():
    with pytest.raises(ConfigError, match="eval_split must be in \\(0, 1\\), got 1.5"):
        TrainConfig(eval_split=1.5)
    with pytest.raises(ConfigError, match=r"lr must be in \(0, inf\), got 0"):
        TrainConfig(lr=0)


def test_class_weights_balance_the_classes():
    weights = inverse_frequency_weights([0, 0, 0, 1], 2).numpy()
    assert weights == pytest.approx([4 / 6, 2.0])


def test_layerwise_groups_give_each_depth_its_rate_and_keep_the_trainers_weight_decay(tiny_model_dir):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3)  # 2 layers
    named = list(model.named_parameters())
    decay_names = set(Trainer(model=model).get_decay_parameter_names(model))
    groups = layerwise_param_groups(named, decay_names, lr=1.0, layer_lr_decay=0.5, weight_decay=0.1)

    rate = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert sorted(rate) == sorted(id(p) for _, p in named)  # every parameter in exactly one group
    params = dict(named)
    expected = {
        "classifier.weight": (1.0, 0.1),
        "bert.pooler.dense.bias": (1.0, 0.0),
        "bert.encoder.layer.1.output.dense.weight": (0.5, 0.1),
        "bert.encoder.layer.0.attention.self.query.weight": (0.25, 0.1),
        "bert.encoder.layer.0.output.LayerNorm.weight": (0.25, 0.0),
        "bert.embeddings.word_embeddings.weight": (0.125, 0.1),
    }
    assert {name: rate[id(params[name])] for name in expected} == expected
    assert groups[0]["lr"] == 1.0  # the head's group first: the rate the Trainer logs


def test_layer_lr_decay_trains_the_lower_layers_slower(tiny_model_dir, tiny_data, tmp_path):
    train, dev = tiny_data
    out = tmp_path / "out"
    result = _finetune(tiny_model_dir, train, dev, out, "--epochs", "1", "--layer-lr-decay", "0.001")
    assert result.exit_code == 0, result.output
    assert read_manifest(out)["hyperparameters"]["layer_lr_decay"] == 0.001

    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3).state_dict()
    tuned = AutoModelForSequenceClassification.from_pretrained(out).state_dict()

    def moved(name: str) -> float:
        return float((tuned[name] - base[name]).abs().max())

    # 8 Adam steps at lr 1e-2: the top layer (1e-5) moves ~1e-4, the embeddings (1e-11) not measurably.
    assert moved("bert.embeddings.word_embeddings.weight") < 1e-8
    assert 1e-6 < moved("bert.encoder.layer.1.output.dense.weight") < 1e-3


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


# --- issue 10: refusals before training, a cap that caps, no NaN model, bounded tokenization, signals ----------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weight-decay", "nan"], "Error: weight_decay must be a finite number, got nan"),
        (["--lr", "inf"], "Error: lr must be a finite number, got inf"),
        (["--epochs", "inf"], "Error: epochs must be a finite number, got inf"),
        (["--seed", "-1"], "Error: seed must be in [0, 4.29497e+09], got -1"),
        (["--warmup-ratio", "nan"], "Error: warmup_ratio must be a finite number, got nan"),
        (["--batch-size", "0"], "Error: batch_size must be in [1, inf), got 0"),
        (["--layer-lr-decay", "0"], "Error: layer_lr_decay must be in (0, 1], got 0.0"),
        (["--layer-lr-decay", "1.5"], "Error: layer_lr_decay must be in (0, 1], got 1.5"),
    ],
)
def test_non_finite_and_out_of_range_options_are_one_line_exit_2(tiny_model_dir, tiny_data, tmp_path, args, message):
    train, dev = tiny_data
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "finetune",
            "--data",
            str(train),
            "--eval-data",
            str(dev),
            "--base",
            str(tiny_model_dir),
            "--out",
            str(out),
            *args,
        ],
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip() == message and not out.exists()


def test_max_steps_is_a_cap_not_an_override(tiny_model_dir, tiny_data, tmp_path):
    train, dev = tiny_data
    out = tmp_path / "out"
    result = _finetune(tiny_model_dir, train, dev, out, "--epochs", "1", "--max-steps", "1000")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert [e["epoch"] for e in manifest["epochs"]] == [1.0]  # 60 rows / batch 8 = 8 steps, not 1000
    assert manifest["epochs"][-1]["step"] == 8


def test_max_steps_below_the_epochs_still_stops_early(tiny_model_dir, tiny_data, tmp_path):
    train, dev = tiny_data
    result = _finetune(tiny_model_dir, train, dev, tmp_path / "out", "--max-steps", "3", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs"][-1]["step"] == 3


def test_max_length_over_the_base_positions_is_refused_before_training(tiny_model_dir, tiny_data, tmp_path):
    train, dev = tiny_data
    result = _finetune(tiny_model_dir, train, dev, tmp_path / "out", "--max-length", "1024")
    assert result.exit_code == 2, result.output
    assert "max_length 1024 exceeds the 128 positions of base model" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def _chinese(tmp_path: Path, name: str, n: int) -> Path:
    from conftest import write_csv

    reviews = [
        ("这家酒店的服务非常好", "positive"),
        ("快递太慢了，包装也破了", "negative"),
        ("东西一般，价格还行", "neutral"),
    ]
    return write_csv(tmp_path / name, [reviews[i % 3] for i in range(n)])


def test_a_base_that_cannot_read_the_data_is_refused_unless_allowed(tiny_model_dir, tmp_path):
    train, dev = _chinese(tmp_path, "zh-train.csv", 30), _chinese(tmp_path, "zh-dev.csv", 9)
    out = tmp_path / "out"
    result = _finetune(tiny_model_dir, train, dev, out)
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("Error: 100.0% of the data's tokens are unknown ([UNK]) to the tokenizer of base model")
    assert "use a base whose vocabulary covers the language" in line and "--allow-unknown-tokens" in line
    assert not out.exists()

    result = _finetune(tiny_model_dir, train, dev, out, "--allow-unknown-tokens", "--max-steps", "1")
    assert result.exit_code == 0, result.output
    coverage = read_manifest(out)["data"]["coverage"]
    assert coverage["unknown_rate"] == 1.0 and coverage["train"]["texts"] == 30
    assert coverage["train"]["tokens_per_char"] > 0


def test_coverage_of_readable_data_is_recorded_without_a_warning(tiny_model_dir, tiny_data, tmp_path, caplog):
    train, dev = tiny_data
    result = _finetune(tiny_model_dir, train, dev, tmp_path / "out", "--max-steps", "1")
    assert result.exit_code == 0, result.output
    coverage = read_manifest(tmp_path / "out")["data"]["coverage"]
    assert coverage["unknown_rate"] == 0.0 and coverage["eval"]["texts"] == 18
    assert not [r for r in caplog.records if "unknown" in r.getMessage()]


@pytest.mark.parametrize("damage", ["config_only", "no_tokenizer", "truncated_weights"])
def test_damaged_base_directory_is_one_line(tiny_model_dir, tiny_data, tmp_path, damage):
    base = tmp_path / "base"
    base.mkdir()
    keep = {
        "config_only": ["config.json"],
        "no_tokenizer": ["config.json", "model.safetensors"],
        "truncated_weights": [p.name for p in tiny_model_dir.iterdir()],
    }[damage]
    for name in keep:
        (base / name).write_bytes((tiny_model_dir / name).read_bytes())
    if damage == "truncated_weights":
        weights = base / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    train, dev = tiny_data
    result = _finetune(base, train, dev, tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot load"), lines
    assert not (tmp_path / "out").exists()


def test_a_model_with_non_finite_weights_is_not_saved(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    import torch

    real_train = Trainer.train

    def train_then_break(self, *args, **kwargs):
        output = real_train(self, *args, **kwargs)
        with torch.no_grad():
            next(self.model.parameters()).fill_(float("nan"))
        return output

    monkeypatch.setattr(Trainer, "train", train_then_break)
    train, dev = tiny_data
    out = tmp_path / "out"
    result = _finetune(tiny_model_dir, train, dev, out, "--max-steps", "1")
    assert result.exit_code == 1, result.output
    assert "fine-tuning produced a broken model" in result.output and "nothing was saved" in result.output
    assert "parameter tensor(s) with NaN or inf" in result.output
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_capped_tokenization_keeps_exactly_the_same_tokens(tiny_model_dir):
    from transformers import AutoTokenizer

    from edgesent.data import LabelledTexts
    from edgesent.train_inputs import CHARS_PER_TOKEN_BUDGET, encode_texts

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    max_length = 16
    budget = max_length * CHARS_PER_TOKEN_BUDGET
    texts = [
        "great " * 200,  # cut at a word boundary, still far over max_length tokens
        "x" * 90 + " " + "y" * 90 + " " + "z" * 500,  # few long words: the cut text falls short, re-encoded whole
        "a" * (budget + 50),  # no space at all: left whole
        "the staff",  # short
        "friendly " * (budget // 9) + "refund",  # the cut lands near the budget
    ]
    data = LabelledTexts(texts=texts, labels=["positive"] * len(texts), source="test")
    encoded = encode_texts(tokenizer, data, ["positive"], max_length)
    expected = tokenizer(texts, truncation=True, max_length=max_length)
    for i, feature in enumerate(encoded.features):
        assert feature["input_ids"].tolist() == expected["input_ids"][i], texts[i][:40]
        assert feature["attention_mask"].tolist() == expected["attention_mask"][i]


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_signal_during_training_leaves_nothing_behind(tiny_model_dir, tiny_data, tmp_path, signum):
    import os
    import signal
    import subprocess
    import time

    train, dev = tiny_data
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "out"
    args = ["--data", str(train), "--eval-data", str(dev), "--base", str(tiny_model_dir), "--out", str(out)]
    args += ["--epochs", "500", "--batch-size", "4", "--early-stopping", "0"]
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "edgesent", "finetune", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(scratch.glob("edgesent-checkpoints-*")):  # created just before trainer.train()
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "training did not start within 120 s"
            time.sleep(0.2)
        time.sleep(1.0)  # inside the training loop
        assert child.poll() is None
        child.send_signal(getattr(signal, signum))
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode != 0
    assert not out.exists()
    assert not list(tmp_path.glob(".out.tmp-*"))
    assert not list(scratch.glob("edgesent-checkpoints-*"))


def test_torchrun_two_processes_train_and_only_rank_0_writes(tiny_model_dir: Path, tiny_data, tmp_path: Path):
    """DDP on CPU (gloo) through the real launcher: one output directory, saying world size 2, that reloads."""
    train, dev = tiny_data
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    command = [
        *torchrun(2),
        "-m",
        "edgesent",
        "finetune",
        "--base",
        str(tiny_model_dir),
        "--data",
        str(train),
        "--eval-data",
        str(dev),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--json",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads(proc.stdout)  # one JSON object: rank 1 printed nothing
    assert manifest["distributed"]["world_size"] == 2 and manifest["distributed"]["backend"] == "gloo"
    assert manifest["distributed"]["global_batch_size"] == 16
    assert read_model_dir(out).manifest["distributed"]["world_size"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".ddp", "edgesent-"))] == []
    report = evaluate_model(out, dev)
    assert 0.0 <= report["accuracy"] <= 1.0 and report["n"] == 18


def test_torchrun_data_error_is_one_line_from_rank_0_and_fails_every_rank(tiny_model_dir: Path, tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label,text\na,1,b\n")
    command = [
        *torchrun(2),
        "-m",
        "edgesent",
        "finetune",
        "--base",
        str(tiny_model_dir),
        "--data",
        str(bad),
        "--out",
        str(tmp_path / "o"),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]  # torchrun adds its own report
    assert len(ours) == 1 and "column 'text' appears twice" in ours[0]
    assert not (tmp_path / "o").exists()
