"""Structured pruning on the tiny BERT: scores, physical removal, reload, export, CLI and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from click.testing import CliRunner
from conftest import LABELS, make_texts, no_leftovers, prune_args, torchrun
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from edgesent.artifacts import read_manifest
from edgesent.cli import cli
from edgesent.distill import distillation_loss, task_loss
from edgesent.errors import ConfigError, ModelError
from edgesent.prune import (
    Importance,
    PruneConfig,
    PrunePlan,
    apply_pruning,
    compute_importance,
    count_flops,
    count_parameters,
    plan_pruning,
)


HEADS, HEAD_SIZE, FFN, LAYERS = 4, 8, 64, 2  # the tiny model's shapes (conftest)


def _batches(model_dir: Path, n_per_class: int = 4, batch_size: int = 6, seed: int = 3) -> list[dict]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = make_texts(n_per_class, seed=seed)
    features = [{**tokenizer(text), "labels": LABELS.index(label)} for text, label in rows]
    collate = DataCollatorWithPadding(tokenizer)
    return [collate(features[i : i + batch_size]) for i in range(0, len(features), batch_size)]


def _logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**{k: v for k, v in batch.items() if k != "labels"}).logits


def _pruned(model_dir: Path, heads: float, ffn: float, layers: int | None = None):
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    batches = _batches(model_dir)
    plan = plan_pruning(compute_importance(model, batches), heads, ffn, layers)
    apply_pruning(model, plan)
    return model, plan, batches


def test_head_scores_equal_michel_head_mask_gradients(tiny_model_dir: Path) -> None:
    # Reference: Michel et al.'s head mask through the eager attention path, one example at a time.
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, attn_implementation="eager").eval()
    batches = _batches(tiny_model_dir)
    expected = torch.zeros(LAYERS, HEADS)
    for batch in batches:
        for i in range(batch["input_ids"].shape[0]):
            mask = torch.ones(LAYERS, HEADS, requires_grad=True)
            one = {k: v[i : i + 1] for k, v in batch.items()}
            length = int(one["attention_mask"].sum())
            one = {k: (v[:, :length] if v.dim() == 2 else v) for k, v in one.items()}
            labels = one.pop("labels")
            loss = torch.nn.functional.cross_entropy(model(**one, head_mask=mask).logits, labels)
            expected += torch.autograd.grad(loss, mask)[0].abs()
    importance = compute_importance(model, batches)
    assert importance.examples == 12
    assert torch.allclose(torch.stack(importance.heads), expected, rtol=1e-4, atol=1e-6)
    assert all(n.shape == (FFN,) and bool((n > 0).all()) for n in importance.neurons)
    assert all(p.requires_grad for p in model.parameters())  # parameters unfrozen again
    normalized = importance.normalized_heads()
    assert torch.allclose(torch.stack([h.norm() for h in normalized]), torch.ones(LAYERS))


def test_dead_units_score_zero_and_go_first(tiny_model_dir: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    layer = model.bert.encoder.layer[1]
    with torch.no_grad():
        layer.attention.output.dense.weight[:, 2 * HEAD_SIZE : 3 * HEAD_SIZE] = 0  # head 2 writes nothing
        layer.output.dense.weight[:, 5] = 0  # neuron 5 writes nothing
    importance = compute_importance(model, _batches(tiny_model_dir))
    assert importance.heads[1][2] == 0 and importance.neurons[1][5] == 0
    plan = plan_pruning(importance, heads=0.25, ffn=1 / FFN)
    assert 2 not in plan.heads[1] and len(plan.heads[1]) == 3
    assert 5 not in plan.neurons[1] and len(plan.neurons[1]) == FFN - 1


@pytest.mark.parametrize(
    ("heads", "ffn", "layers", "kept_heads", "kept_ffn", "kept_layers"),
    [
        (0.5, 0.5, None, 2, 32, 2),
        (0.75, 0.25, 1, 1, 48, 1),
        (0.9, 0.0, None, 1, 64, 2),  # rounds to zero heads: one stays
    ],
)
def test_pruning_shrinks_and_reloads_to_the_same_logits(
    tiny_model_dir: Path,
    tmp_path: Path,
    heads: float,
    ffn: float,
    layers: int | None,
    kept_heads: int,
    kept_ffn: int,
    kept_layers: int,
) -> None:
    model, _plan, batches = _pruned(tiny_model_dir, heads, ffn, layers)
    encoder = model.bert.encoder.layer
    assert len(encoder) == model.config.num_hidden_layers == kept_layers
    for layer in encoder:
        assert layer.attention.self.num_attention_heads == kept_heads
        assert layer.attention.self.query.weight.shape == (kept_heads * HEAD_SIZE, 32)
        assert layer.attention.output.dense.weight.shape == (32, kept_heads * HEAD_SIZE)
        assert layer.intermediate.dense.weight.shape == (kept_ffn, 32)
        assert layer.output.dense.weight.shape == (32, kept_ffn)
    assert model.config.intermediate_size == kept_ffn
    assert all(len(v) == HEADS - kept_heads for v in model.config.pruned_heads.values())
    model.save_pretrained(tmp_path / "pruned")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned")
    assert count_parameters(reloaded) == count_parameters(model)
    for batch in batches:
        assert torch.allclose(_logits(model, batch), _logits(reloaded, batch), atol=1e-6)


def test_pruning_a_pruned_model_keeps_original_head_indices(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, _, batches = _pruned(tiny_model_dir, heads=0.25, ffn=0.25)
    model.save_pretrained(tmp_path / "once")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "once")
    plan = PrunePlan(layers=[1], heads=[[0]], neurons=[list(range(10))])  # keep the first remaining head of layer 1
    first_remaining = min(set(range(HEADS)) - set(again.config.pruned_heads[1]))
    apply_pruning(again, plan)
    assert again.config.pruned_heads == {0: sorted(set(range(HEADS)) - {first_remaining})}
    again.save_pretrained(tmp_path / "twice")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "twice")
    assert reloaded.bert.encoder.layer[0].intermediate.dense.out_features == 10
    assert torch.allclose(_logits(again, batches[0]), _logits(reloaded, batches[0]), atol=1e-6)


def test_roberta_layers_prune_and_reload(tmp_path: Path) -> None:
    config = transformers.RobertaConfig(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        num_labels=2,
    )
    model = transformers.RobertaForSequenceClassification(config).eval()
    importance = Importance([torch.arange(4.0)] * 2, [torch.arange(64.0)] * 2, examples=1)
    apply_pruning(model, plan_pruning(importance, heads=0.5, ffn=0.5))
    model.save_pretrained(tmp_path / "roberta")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "roberta")
    batch = {"input_ids": torch.randint(3, 60, (2, 12))}
    assert torch.allclose(_logits(model, batch), _logits(reloaded, batch), atol=1e-6)
    assert model.config.pruned_heads == {0: [0, 1], 1: [0, 1]}  # the two lowest-scored heads


def test_unsupported_architecture_is_refused() -> None:
    config = transformers.DistilBertConfig(vocab_size=60, dim=32, n_layers=1, n_heads=4, hidden_dim=64)
    model = transformers.DistilBertForSequenceClassification(config)
    with pytest.raises(ModelError, match="not model_type 'distilbert'"):
        count_flops(model)


def test_flops_match_torch_flop_counter_before_and_after(tiny_model_dir: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, attn_implementation="eager").eval()

    def measured() -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(input_ids=torch.ones(1, 128, dtype=torch.long))
        return counter.get_total_flops()

    before = count_flops(model)
    assert before == measured()
    importance = Importance([torch.arange(4.0)] * 2, [torch.arange(64.0)] * 2, examples=1)
    apply_pruning(model, plan_pruning(importance, heads=0.5, ffn=0.5))
    after = count_flops(model)
    assert after == measured()
    head = 2 * 32 * 32 + 2 * 32 * 3  # pooler and classifier: once per sequence, unchanged
    assert after - head == (before - head) // 2  # every encoder matmul is linear in heads or neurons


def test_flops_count_the_embedding_projection_of_electra() -> None:
    config = transformers.ElectraConfig(
        vocab_size=60,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=140,
        num_labels=3,
        attn_implementation="eager",
    )
    model = transformers.ElectraForSequenceClassification(config).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=torch.ones(1, 128, dtype=torch.long))
    assert count_flops(model) == counter.get_total_flops()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"heads": 1.0}, "heads=1.0: the fraction to remove must be in [0, 1)"),
        ({"ffn": -0.1}, "ffn=-0.1: the fraction to remove must be in [0, 1)"),
        ({"heads": 0.5, "layers": 0}, "layers=0: must keep at least 1 layer"),
        ({"speedup": 1.0}, "speedup=1.0: must be > 1"),
        ({"speedup": 2.0, "heads": 0.3}, "either speedup or heads/ffn"),
        ({}, "nothing to prune"),
        ({"heads": 0.5, "alpha": 1.5}, "alpha=1.5: must be in [0, 1]"),
        ({"heads": 0.5, "recovery": {"epochs": 0}}, "epochs must be in (0, inf), got 0"),
        (  # the recovery run distils with an unweighted loss and one rate: recorded, they would never have run
            {"heads": 0.5, "recovery": {"class_weights": "auto", "layer_lr_decay": 0.8}},
            "recovery.class_weights, recovery.layer_lr_decay: not supported by pruning's recovery run",
        ),
    ],
)
def test_config_refuses_invalid_targets(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        PruneConfig(
            model_dir=tmp_path, data=tmp_path / "t.csv", eval_data=tmp_path / "e.csv", out=tmp_path / "o", **changes
        )
    assert message in str(err.value)


def test_plan_refuses_more_layers_than_the_model_has() -> None:
    importance = Importance([torch.ones(4)] * 2, [torch.ones(64)] * 2, examples=1)
    with pytest.raises(ConfigError, match="layers=3: the model has 2 layers"):
        plan_pruning(importance, heads=0.5, layers=3)


def test_distillation_loss() -> None:
    student, teacher = torch.randn(5, 3), torch.randn(5, 3)
    labels = torch.tensor([0, 1, 2, 1, 0])
    ce = torch.nn.functional.cross_entropy(student, labels)
    assert torch.allclose(distillation_loss(student, teacher, labels, 2.0, 1.0), ce)
    assert distillation_loss(teacher, teacher, labels, 3.0, 0.0).abs() < 1e-6
    p, log_q = torch.softmax(teacher / 2, -1), torch.log_softmax(student / 2, -1)
    kl = (p * (p.log() - log_q)).sum(-1).mean()
    assert torch.allclose(distillation_loss(student, teacher, labels, 2.0, 0.25), 0.25 * ce + 0.75 * 4 * kl)


def test_distillation_loss_of_a_tagger_reads_only_the_tagged_tokens() -> None:
    """(B, T, K) logits with -100 labels: the loss equals the classifier loss over the tagged rows, and logits of
    untagged tokens (special tokens, later sub-tokens, padding) do not move it."""
    student, teacher = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    labels = torch.tensor([[-100, 3, -100, 0], [1, -100, -100, -100]])
    keep = labels != -100
    flat = distillation_loss(student[keep], teacher[keep], labels[keep], 2.0, 0.5)
    assert torch.allclose(distillation_loss(student, teacher, labels, 2.0, 0.5), flat)
    noisy_student, noisy_teacher = student.clone(), teacher.clone()
    noisy_student[~keep], noisy_teacher[~keep] = 100.0, -100.0
    assert torch.allclose(distillation_loss(noisy_student, noisy_teacher, labels, 2.0, 0.5), flat)
    assert torch.allclose(task_loss(student, labels), torch.nn.functional.cross_entropy(student[keep], labels[keep]))


def test_help(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["prune", "--help"])
    assert result.exit_code == 0
    assert "--heads" in result.output and "--no-recovery" in result.output


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (["--heads", "1"], "Error: heads=1.0: the fraction to remove must be in [0, 1)"),  # refused by the config
        (["--layers", "5"], "Error: layers=5: the model has only 2 layers"),  # refused once the model is loaded
        (  # over the tiny BERT's 128 positions: a tensor size mismatch in scoring, without the check
            ["--heads", "0.5", "--max-length", "256", "--no-recovery"],
            "Error: max_length 256 exceeds the 128 positions of",
        ),
    ],
)
def test_cli_refuses_impossible_targets(
    runner: CliRunner, tiny_model_dir: Path, tiny_data, tmp_path: Path, target: list[str], message: str
) -> None:
    result = runner.invoke(cli, prune_args(tiny_model_dir, tiny_data, tmp_path / "out", *target))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith(message), result.output
    assert "Traceback" not in result.output and no_leftovers(tmp_path, "out")


def test_cli_prune_with_recovery_then_export(runner, tiny_model_dir: Path, tiny_data, tmp_path: Path) -> None:
    dev = tiny_data[1]
    out = tmp_path / "pruned"
    options = ["--heads", "0.5", "--ffn", "0.5", "--max-steps", "2", "--batch-size", "8", "--json"]
    result = runner.invoke(cli, prune_args(tiny_model_dir, tiny_data, out, *options))
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    pruning = manifest["pruning"]
    assert manifest["kind"] == "pytorch" and manifest["labels"] == LABELS
    assert pruning["heads_per_layer"] == {"before": [4, 4], "after": [2, 2]}
    assert pruning["ffn_per_layer"] == {"before": [64, 64], "after": [32, 32]}
    assert pruning["parameters"]["after"] < pruning["parameters"]["before"]
    assert pruning["flops"]["ratio"] > 1.5
    assert set(pruning["accuracy"]) == {"before", "pruned", "recovered"}
    assert manifest["recovery"]["epochs"] and manifest["metrics"]["n"] == 18
    assert manifest["pruning"]["accuracy"]["recovered"]["accuracy"] == manifest["metrics"]["accuracy"]
    assert "model.safetensors" in manifest["files"]

    # the directory is a plain HF directory: from_pretrained, Optimum's exporter and ONNX Runtime take it as is
    from edgesent.evaluate import evaluate_model

    assert evaluate_model(out, dev)["accuracy"] == pytest.approx(manifest["metrics"]["accuracy"])
    _export_and_compare(out, tmp_path / "onnx")  # export and parity (fp32 and int8) take it unchanged


def _export_and_compare(model_dir: Path, onnx_dir: Path) -> None:
    from edgesent.export import ExportConfig, export_model
    from edgesent.parity import ParityConfig, check_parity
    from edgesent.quantize import QuantizeConfig

    manifest = export_model(model_dir, onnx_dir, ExportConfig())
    assert manifest["kind"] == "onnx" and manifest["labels"] == LABELS
    report = check_parity(model_dir, onnx_dir, ParityConfig())
    assert report.passed and report.max_abs_diff < 1e-4 and report.agreement == 1.0
    int8_cfg = ExportConfig(precision="int8", quantize=QuantizeConfig())
    int8 = export_model(model_dir, onnx_dir.with_name("int8"), int8_cfg)
    assert int8["precision"] == "int8" and int8["parity"]["passed"]


def test_cli_speedup_target_without_recovery(runner, tiny_model_dir: Path, tiny_data, tmp_path: Path) -> None:
    options = ["--speedup", "1.5", "--no-recovery"]
    result = runner.invoke(cli, prune_args(tiny_model_dir, tiny_data, tmp_path / "fast", *options))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "fast" / "edgesent.json").read_text())
    pruning = manifest["pruning"]
    assert pruning["flops"]["ratio"] >= 1.5
    assert pruning["fractions"]["heads"] == pruning["fractions"]["ffn"] > 0
    assert manifest["recovery"] is None and "recovered" not in pruning["accuracy"]
    assert "FLOPs x" in result.output and "pruned" in result.output


def test_cli_refuses_onnx_dirs_and_unknown_labels(runner, tiny_model_dir: Path, tiny_data, tmp_path: Path) -> None:
    train, dev = tiny_data
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    (onnx_dir / "edgesent.json").write_text(json.dumps({"kind": "onnx", "labels": LABELS}))
    args = ["--data", str(train), "--eval-data", str(dev), "--out", str(tmp_path / "out"), "--heads", "0.5"]
    result = runner.invoke(cli, ["prune", str(onnx_dir), *args])
    assert result.exit_code == 2
    assert "manifest kind is 'onnx', not 'pytorch'" in result.output  # the one message every stage gives
    other = tmp_path / "other.csv"
    other.write_text("text,label\ngreat hotel,delighted\nrude staff,negative\n")
    result = runner.invoke(cli, ["prune", str(tiny_model_dir), *args[:2], "--eval-data", str(other), *args[4:]])
    assert result.exit_code == 2
    assert "label(s) 'delighted' not among the training labels" in result.output
    assert not (tmp_path / "out").exists()


def test_table_on_stdout_trainer_logs_on_stderr(runner, tiny_model_dir: Path, tiny_data, tmp_path: Path) -> None:
    args = prune_args(tiny_model_dir, tiny_data, tmp_path / "p")
    result = runner.invoke(cli, [*args, "--heads", "0.5", "--epochs", "1", "--batch-size", "8", "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split() == ["stage", "parameters", "MFLOPs", "accuracy", "macro_f1"]
    assert "'loss'" not in result.stdout and "'eval_loss'" in result.stderr  # the Trainer's log dicts
    recovery = json.loads((tmp_path / "p" / "edgesent.json").read_text())["recovery"]
    assert recovery["config"]["epochs"] == 1.0 and recovery["config"]["lr"] == 1e-3
    assert recovery["config"]["batch_size"] == 8 and recovery["config"]["max_length"] == 64  # the source's


def test_recovery_options_without_recovery_are_refused(
    runner, tiny_model_dir: Path, tiny_data, tmp_path: Path
) -> None:
    args = prune_args(tiny_model_dir, tiny_data, tmp_path / "p")
    result = runner.invoke(cli, [*args, "--heads", "0.5", "--no-recovery", "--epochs", "2", "--lr", "1e-3"])
    assert result.exit_code == 2
    assert "--epochs, --lr: only used by recovery" in result.output
    result = runner.invoke(cli, [*args, "--heads", "0.5", "--lr", "nan"])
    assert result.exit_code == 2 and "Error: lr must be a finite number, got nan" in result.output
    assert not (tmp_path / "p").exists()


def test_prune_under_torchrun_writes_once_and_says_world_size_2(tiny_model_dir: Path, tiny_data, tmp_path: Path):
    """Recovery is DDP on CPU (gloo) through the real launcher; only rank 0 writes the pruned directory."""
    import os
    import subprocess

    out = tmp_path / "pruned"
    options = ["--heads", "0.5", "--epochs", "1", "--batch-size", "8", "--json"]
    command = [*torchrun(2), "-m", "edgesent", *prune_args(tiny_model_dir, tiny_data, out, *options)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads(proc.stdout)  # one JSON object: rank 1 printed nothing
    assert manifest["distributed"]["world_size"] == 2 and manifest["distributed"]["backend"] == "gloo"
    assert read_manifest(out)["pruning"]["heads_per_layer"]["after"] == [2, 2]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".pruned", "edgesent-"))] == []


def test_a_base_without_a_padding_token_is_refused_at_load(runner, tiny_data, tmp_path: Path) -> None:
    """A decoder base (GPT-2 has no padding token) is refused as it loads, not with a traceback mid-training."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([text for text, _ in make_texts(5)], vocab_size=300, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(tmp_path))
    tokenizer = transformers.GPT2TokenizerFast(
        vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt")
    )
    base = tmp_path / "gpt2"
    config = transformers.GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=1, n_head=4, n_positions=64)
    config.save_pretrained(base)  # no weights needed: the tokenizer is refused before the model loads
    tokenizer.save_pretrained(base)
    train, dev = tiny_data
    args = ["--data", str(train), "--eval-data", str(dev), "--base", str(base), "--out", str(tmp_path / "out")]
    result = runner.invoke(cli, ["finetune", *args, "--device", "cpu", "--max-length", "32"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: base model '{base}' (model_type 'gpt2') has no padding token; "
        "edgesent fine-tunes encoder models such as BERT or MiniLM"
    )
    assert "Traceback" not in result.output and no_leftovers(tmp_path, "out")
