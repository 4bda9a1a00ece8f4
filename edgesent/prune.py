"""Structured pruning that makes models faster: remove attention heads, FFN neurons and layers, then recover.

Zeroed weights (unstructured sparsity) buy nothing in ONNX Runtime on CPU: the MatMuls stay the same
size. Only removing whole heads, FFN neurons or layers shrinks them, so that is what this stage does.

Importance is measured on training data with one mechanism for both kinds of unit: a gate of ones is
multiplied into the unit's output and the loss gradient with respect to the gate is accumulated as
``|dL/dgate|`` per example. For a head the gate sits on its slice of the attention context (the same as
the head mask of Michel et al. 2019, "Are Sixteen Heads Really Better than One?", since the context is
linear in the attention probabilities); for an FFN neuron it sits on its activation, which makes the
score the first-order Taylor estimate ``|a * dL/da|`` of removing it (Molchanov et al. 2017). Gates are
applied with forward pre-hooks on the output projections, so the scoring needs neither the ``head_mask``
argument (gone in Transformers 5) nor the eager attention path. Head scores are L2-normalised per layer
as in Michel et al.; they are recorded in the manifest.

Every layer keeps the same number of heads (the top ``round((1 - heads) * H)``, at least one) and the same
number of FFN neurons (top ``round((1 - ffn) * I)``), ranked within the layer. The FFN count has to be the
same in every layer because ``intermediate_size`` is one number in the config; equal head counts keep the
latency predictable. ``layers=N`` keeps the N layers with the largest total raw importance (heads plus
neurons: the summed first-order loss sensitivity of everything in the layer), in their original order.

Reloading (the design decision): parameters are removed with ``transformers.pytorch_utils.
prune_linear_layer`` directly (Q, K, V rows, output-projection columns; FFN rows and columns), and the
config records the result in fields the installed Transformers (4.x, pinned ``<4.58``) already reads:
``num_hidden_layers``, ``intermediate_size`` and ``pruned_heads`` (layer -> original head indices removed).
``from_pretrained`` shrinks a freshly built model to those shapes before loading the weights, so the
directory loads with plain ``AutoModelForSequenceClassification.from_pretrained`` and exports with
Optimum's ``main_export`` with no custom modelling code; every downstream stage works on it unchanged.
A plain config cannot say "k heads of size 64" (BERT derives the head size as hidden / heads), so the
only alternative was a custom loader every stage would have to call. The risk: Transformers 5 drops
``pruned_heads``; the manifest's ``pruning`` section records per-layer head counts and FFN sizes so a
loader can rebuild the shapes if the pin is ever lifted.

Recovery fine-tunes the pruned model with knowledge distillation from the unpruned one (``edgesent.distill``:
hard-label cross-entropy plus ``T^2``-scaled KL to the teacher's softened distribution), through
the same Trainer setup as ``finetune`` (per-epoch evaluation, early stopping, best checkpoint by the task's
metric: macro-F1, or span F1).

Both tasks go through the same code: the loss (of the scores and of both distillation terms) is taken over the
rows that carry a label, one per text for a classifier and one per tagged word (its first sub-token) for a span
tagger; data, encoding, collator and the before/after metrics are asked of the task (``edgesent.tasks``).
Its hyperparameters are the ``TrainConfig`` nested in ``edgesent.config.prune.PruneConfig`` (re-exported here).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers.pytorch_utils import prune_linear_layer

from edgesent import flops
from edgesent.artifacts import KIND_PYTORCH, read_manifest, read_model_dir, write_manifest
from edgesent.config.prune import DEFAULT_SCORE_SAMPLES, PruneConfig
from edgesent.ddp import barrier, distributed_info, process_group, rank_output, shared_scratch
from edgesent.distill import DistillationTrainer, task_loss
from edgesent.errors import ConfigError, ModelError
from edgesent.evaluate import load_torch_model
from edgesent.tasks import Task, get_task
from edgesent.train import (
    best_entry,
    build_trainer,
    check_finite,
    epoch_history,
    resolve_device,
    write_parity_sample,
)


logger = logging.getLogger(__name__)

# PruneConfig lives in edgesent.config.prune; re-exported here for existing imports.
__all__ = [
    "DEFAULT_SCORE_SAMPLES",
    "PruneConfig",
    "apply_pruning",
    "compute_importance",
    "plan_pruning",
    "prune_model",
]

# Architectures whose encoder layers are BERT's (query/key/value, attention.output.dense, intermediate.dense,
# output.dense) and whose from_pretrained re-applies config.pruned_heads.
SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "electra")
FLOPS_SEQ_LEN = 128
FLOPS_BATCH_SIZE = 1
_SPEEDUP_STEP = 0.01  # granularity of the shared head/FFN fraction searched for a --speedup target


@dataclass
class Importance:
    """Summed per-example ``|dL/dgate|`` scores of every head and FFN neuron, per layer.

    Attributes:
        heads: One (h,) tensor per layer (h = heads the layer has now).
        neurons: One (I,) tensor per layer.
        examples: How many examples were summed over.
    """

    heads: list[torch.Tensor]
    neurons: list[torch.Tensor]
    examples: int

    def normalized_heads(self) -> list[torch.Tensor]:
        """Head scores divided by their layer's L2 norm (Michel et al. 2019, sec. 4.1)."""
        return [h / h.norm().clamp_min(1e-12) for h in self.heads]

    def layer_scores(self) -> torch.Tensor:
        """(L,) total raw importance of each layer's heads and neurons; ranks layers for removal."""
        return torch.stack([h.sum() + n.sum() for h, n in zip(self.heads, self.neurons)])


@dataclass
class PrunePlan:
    """What survives: kept layers (original indices) and, per kept layer, kept head positions and neurons.

    Head positions count the heads the layer has now; all lists are ascending so weights keep their order.
    """

    layers: list[int]
    heads: list[list[int]]
    neurons: list[list[int]]


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's BERT-style encoder layers; ModelError for architectures pruning does not support."""
    model_type = getattr(model.config, "model_type", "?")
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if model_type not in SUPPORTED_MODEL_TYPES or layers is None:
        raise ModelError(
            f"pruning supports BERT-style encoders ({', '.join(SUPPORTED_MODEL_TYPES)}), not model_type {model_type!r}"
        )
    return layers


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def _layer_shapes(model: nn.Module) -> list[tuple[int, int, int]]:
    """(heads, head_size, intermediate) of every encoder layer."""
    return [
        (
            layer.attention.self.num_attention_heads,
            layer.attention.self.attention_head_size,
            layer.intermediate.dense.out_features,
        )
        for layer in encoder_layers(model)
    ]


def count_flops(model: nn.Module, seq_len: int = FLOPS_SEQ_LEN, batch_size: int = FLOPS_BATCH_SIZE) -> int:
    """Analytic FLOPs of one forward pass (``edgesent.flops.count_flops``) of a model this stage can prune.

    Counted from ``model.config``, which ``apply_pruning`` keeps in step with the weights, so the figure
    is the one ``edgesent bench`` reports for the saved directory.

    Raises:
        ModelError: an architecture pruning does not support.
    """
    encoder_layers(model)  # the architecture check
    return flops.count_flops(model.config.to_dict(), batch_size, seq_len)


def _keep_count(total: int, fraction: float) -> int:
    """Units kept when ``fraction`` of ``total`` is removed: rounded half up, never below one."""
    return max(1, math.floor(total * (1.0 - fraction) + 0.5))


def compute_importance(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> Importance:
    """Score every attention head and FFN neuron on labelled batches (see the module docstring).

    The model runs in eval mode (no dropout) with its parameters frozen, so only gate gradients are
    computed; the loss is summed over the batch, so each example's gate gets its own gradient, and
    ``|dL/dgate|`` is summed over examples (Michel et al.'s expectation of the absolute gradient).

    Args:
        model: A sequence- or token-classification model with BERT-style layers; left unchanged.
        batches: Dicts of (B, T) tensors with ``labels``, (B,) or (B, T) with -100 where no tag is read, e.g. from
            the task's collator.

    Returns:
        Importance with raw (unnormalised) scores.
    """
    layers = encoder_layers(model)
    device = next(model.parameters()).device
    gates: dict[str, list[torch.Tensor]] = {}

    def gate_heads(i: int):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            context = args[0]  # (B, T, h*d): the heads' outputs side by side
            gate = gates["heads"][i]  # (B, h)
            batch, tokens, _ = context.shape
            gated = context.view(batch, tokens, gate.shape[1], -1) * gate[:, None, :, None]
            return (gated.view(batch, tokens, -1), *args[1:])

        return hook

    def gate_neurons(i: int):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            return (args[0] * gates["neurons"][i][:, None, :], *args[1:])  # (B, T, I) * (B, 1, I)

        return hook

    shapes = _layer_shapes(model)
    head_scores = [torch.zeros(h, device=device) for h, _, _ in shapes]
    neuron_scores = [torch.zeros(n, device=device) for _, _, n in shapes]
    handles = [layer.attention.output.dense.register_forward_pre_hook(gate_heads(i)) for i, layer in enumerate(layers)]
    handles += [layer.output.dense.register_forward_pre_hook(gate_neurons(i)) for i, layer in enumerate(layers)]
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    model.eval().requires_grad_(False)
    examples = 0
    try:
        for batch in tqdm(batches, desc="importance", unit="batch"):
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            size = labels.shape[0]
            gates["heads"] = [torch.ones(size, h, device=device, requires_grad=True) for h, _, _ in shapes]
            gates["neurons"] = [torch.ones(size, n, device=device, requires_grad=True) for _, _, n in shapes]
            loss = task_loss(model(**batch).logits.float(), labels, reduction="sum")
            grads = torch.autograd.grad(loss, gates["heads"] + gates["neurons"])
            for score, grad in zip(head_scores + neuron_scores, grads):
                score += grad.abs().sum(dim=0)
            examples += size
    finally:
        for handle in handles:
            handle.remove()
        for name, p in model.named_parameters():
            p.requires_grad_(trainable[name])
        model.train(was_training)
    if examples == 0:
        raise ConfigError("no examples to score importance on")
    return Importance([s.cpu() for s in head_scores], [s.cpu() for s in neuron_scores], examples)


def plan_pruning(importance: Importance, heads: float = 0.0, ffn: float = 0.0, layers: int | None = None) -> PrunePlan:
    """Choose the units to keep: top layers, then the top heads and neurons within each kept layer.

    Args:
        importance: Scores from ``compute_importance``.
        heads: Fraction of each layer's heads to remove, in [0, 1); at least one stays.
        ffn: Fraction of each layer's FFN neurons to remove, in [0, 1).
        layers: Layers to keep (None: all), chosen by ``Importance.layer_scores``.

    Raises:
        ConfigError: a fraction outside [0, 1), or ``layers`` outside [1, number of layers].
    """
    for name, value in (("heads", heads), ("ffn", ffn)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name}={value!r}: the fraction to remove must be in [0, 1)")
    n_layers = len(importance.heads)
    if layers is not None and not 1 <= layers <= n_layers:
        raise ConfigError(f"layers={layers!r}: the model has {n_layers} layers; keep between 1 and {n_layers}")
    kept_layers = list(range(n_layers))
    if layers is not None:
        kept_layers = sorted(torch.topk(importance.layer_scores(), layers).indices.tolist())

    def top(scores: torch.Tensor, fraction: float) -> list[int]:
        return sorted(torch.topk(scores, _keep_count(scores.numel(), fraction)).indices.tolist())

    return PrunePlan(
        layers=kept_layers,
        heads=[top(importance.heads[i], heads) for i in kept_layers],
        neurons=[top(importance.neurons[i], ffn) for i in kept_layers],
    )


def apply_pruning(model: nn.Module, plan: PrunePlan) -> None:
    """Physically remove what ``plan`` does not keep, in place, and record it in ``model.config``.

    Heads: rows of Q, K and V and columns of the attention output projection; FFN neurons: rows of the
    intermediate projection and columns of the output projection (``prune_linear_layer``). The config gets
    ``num_hidden_layers``, ``intermediate_size`` and ``pruned_heads`` (original head indices removed per
    new layer index), which ``from_pretrained`` re-applies on load.

    Raises:
        ValueError: the plan keeps different FFN sizes per layer (one ``intermediate_size`` cannot say so).
    """
    config = model.config
    layers = encoder_layers(model)
    if len({len(n) for n in plan.neurons}) != 1:
        raise ValueError("every kept layer must keep the same number of FFN neurons")
    original_heads = config.num_attention_heads
    already_pruned = {int(k): set(v) for k, v in (config.pruned_heads or {}).items()}
    kept_modules, pruned_heads = [], {}
    for new_index, (old_index, heads, neurons) in enumerate(zip(plan.layers, plan.heads, plan.neurons)):
        layer = layers[old_index]
        attention, ffn_in, ffn_out = layer.attention, layer.intermediate, layer.output
        # original indices of the heads the layer still has, in the order their weights are stored
        remaining = [h for h in range(original_heads) if h not in already_pruned.get(old_index, set())]
        if len(heads) < len(remaining):
            size = attention.self.attention_head_size
            index = torch.cat([torch.arange(p * size, (p + 1) * size) for p in heads])
            for name in ("query", "key", "value"):
                setattr(attention.self, name, prune_linear_layer(getattr(attention.self, name), index, dim=0))
            attention.output.dense = prune_linear_layer(attention.output.dense, index, dim=1)
            attention.self.num_attention_heads = len(heads)
            attention.self.all_head_size = len(heads) * size
        removed = set(range(original_heads)) - {remaining[p] for p in heads}
        attention.pruned_heads = removed
        if removed:
            pruned_heads[new_index] = sorted(removed)
        if len(neurons) < ffn_in.dense.out_features:
            index = torch.tensor(neurons, dtype=torch.long)
            ffn_in.dense = prune_linear_layer(ffn_in.dense, index, dim=0)
            ffn_out.dense = prune_linear_layer(ffn_out.dense, index, dim=1)
        kept_modules.append(layer)
    model.base_model.encoder.layer = nn.ModuleList(kept_modules)
    config.num_hidden_layers = len(kept_modules)
    config.intermediate_size = len(plan.neurons[0])
    config.pruned_heads = pruned_heads


def _fraction_for_speedup(model: nn.Module, kept_layers: list[int], speedup: float) -> float:
    """Smallest equal head/FFN fraction (in steps of 0.01) whose FLOPs reduction reaches ``speedup``."""
    hidden, shapes = model.config.hidden_size, _layer_shapes(model)

    def encoder_flops(layers: Iterable[tuple[int, int, int]]) -> int:
        return sum(flops.layer_flops(hidden, h * d, i, FLOPS_BATCH_SIZE, FLOPS_SEQ_LEN) for h, d, i in layers)

    before = count_flops(model)
    fixed = before - encoder_flops(shapes)  # embeddings, pooler and classifier: pruning leaves them alone
    for step in range(round(1 / _SPEEDUP_STEP)):
        fraction = step * _SPEEDUP_STEP
        after = fixed + encoder_flops(
            (_keep_count(shapes[k][0], fraction), shapes[k][1], _keep_count(shapes[k][2], fraction))
            for k in kept_layers
        )
        if before / after >= speedup:
            return fraction
    raise ConfigError(
        f"speedup={speedup:g} cannot be reached by removing heads and FFN neurons alone; "
        "ask for less, or also remove layers with --layers"
    )


def _summary(report: dict[str, Any], task: Task) -> dict[str, Any]:
    """The task's per-epoch figures of a report (accuracy and macro-F1; span P/R/F1 and polarity accuracy)."""
    return {key: report[key] for key in task.epoch_columns}


def _recover(
    student: nn.Module,
    teacher: nn.Module,
    tokenizer: Any,
    train_set: Any,
    eval_set: Any,
    cfg: PruneConfig,
    task: Task,
    labels: list[str],
    max_length: int,
    device: str,
    rank: int = 0,
    world: int = 1,
) -> dict[str, Any]:
    """Distillation fine-tuning with finetune's Trainer setup; leaves the best epoch's weights in ``student``.

    Under torchrun the ranks share one checkpoint directory (``train.shared_scratch``), as finetune's do.

    Raises:
        TrainingError: the loss or the weights are not finite afterwards.
    """
    train_cfg = cfg.train_config(max_length, task.name)
    with shared_scratch("prune-checkpoints", rank, world) as work_dir:
        trainer, recorder = build_trainer(
            student,
            tokenizer,
            train_set,
            eval_set,
            train_cfg,
            labels,
            Path(work_dir),
            device,
            DistillationTrainer,
            teacher=teacher,
            temperature=cfg.temperature,
            alpha=cfg.alpha,
        )
        result = trainer.train()
        check_finite(trainer.model, result.training_loss, "pruning recovery", train_cfg.lr)
        history = epoch_history(trainer, recorder)
        best = best_entry(history, trainer.state.best_global_step)
    return {
        "config": train_cfg.to_dict(),
        "epochs": history,
        "best_epoch": best["epoch"],
        "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 2),
    }


def prune_model(cfg: PruneConfig) -> dict[str, Any]:
    """Score, prune, (optionally) recover with distillation, and save a smaller PyTorch model directory.

    Returns:
        The manifest written to ``<out>/edgesent.json`` plus ``out_dir``. Its ``pruning`` section records
        the targets, what was removed, parameters and FLOPs before/after, and accuracy before pruning,
        after pruning and after recovery; ``metrics`` is the final model's full report on ``eval_data``.

    Raises:
        ModelError: the source is not an edgesent PyTorch directory, or not a BERT-style encoder.
        DataError: unusable data or labels the model does not know.
        ConfigError: invalid targets (checked before training), or an unwritable/existing ``out``.
    """
    started = time.perf_counter()
    source = read_model_dir(cfg.model_dir, kind=KIND_PYTORCH)
    task = get_task(source.task)
    labels = list(source.labels)
    max_length = cfg.max_length or source.max_length
    read_options = {
        "text_column": cfg.text_column,
        "label_column": cfg.label_column,
        "skip_empty": cfg.skip_empty,
        "drop_labels": cfg.drop_labels,
    }
    train_data = task.load_labelled(cfg.data, labels, read_options)
    eval_data = task.load_labelled(cfg.eval_data, labels, read_options)
    device = resolve_device(cfg.device)
    rank, world = process_group(device)
    # Under torchrun every rank scores, prunes and recovers alike (same seed, same data); only rank 0 writes.
    sources = [cfg.model_dir, cfg.data, cfg.eval_data]
    with rank_output(cfg.out, cfg.overwrite, sources, rank) as tmp_dir:
        torch.manual_seed(cfg.seed)
        tokenizer, teacher = load_torch_model(cfg.model_dir)
        flops.check_position_limit(max_length, teacher.config, f"{cfg.model_dir}/config.json")
        teacher = teacher.to(device)
        layers_before = _layer_shapes(teacher)  # also rejects unsupported architectures
        if cfg.layers is not None and cfg.layers > len(layers_before):
            raise ConfigError(f"layers={cfg.layers}: the model has only {len(layers_before)} layers")
        student = copy.deepcopy(teacher)
        train_set = task.encode(tokenizer, train_data, labels, max_length)
        eval_set = task.encode(tokenizer, eval_data, labels, max_length)

        rows = random.Random(cfg.seed).sample(range(len(train_set)), min(cfg.score_samples, len(train_set)))
        score_loader = torch.utils.data.DataLoader(
            [train_set[i] for i in rows], batch_size=cfg.batch_size, collate_fn=task.collator(tokenizer)
        )
        importance = compute_importance(student, score_loader)
        heads, ffn = cfg.heads, cfg.ffn
        if cfg.speedup is not None:
            kept = plan_pruning(importance, layers=cfg.layers).layers
            heads = ffn = _fraction_for_speedup(student, kept, cfg.speedup)
        plan = plan_pruning(importance, heads, ffn, cfg.layers)

        before = {"parameters": count_parameters(teacher), "flops": count_flops(teacher)}
        evaluate = partial(
            task.torch_report,
            tokenizer=tokenizer,
            data=eval_data,
            labels=labels,
            batch_size=cfg.eval_batch_size,
            max_length=max_length,
        )
        accuracy = {"before": _summary(evaluate(teacher), task)}
        apply_pruning(student, plan)
        after = {"parameters": count_parameters(student), "flops": count_flops(student)}
        final = evaluate(student)
        accuracy["pruned"] = _summary(final, task)
        logger.info(
            "pruned: %s -> %s parameters, %s %.4f -> %.4f",
            before["parameters"],
            after["parameters"],
            task.best_metric,
            accuracy["before"][task.best_metric],
            accuracy["pruned"][task.best_metric],
        )
        recovery = None
        if cfg.recovery is not None:
            recovery = _recover(
                student, teacher, tokenizer, train_set, eval_set, cfg, task, labels, max_length, device, rank, world
            )
            final = evaluate(student)
            accuracy["recovered"] = _summary(final, task)
        check_finite(student, None, "pruning")
        if tmp_dir is None:
            barrier(world)  # rank 0 writes and renames the output meanwhile
            return {**read_manifest(Path(cfg.out)), "out_dir": str(Path(cfg.out))}
        student.save_pretrained(tmp_dir)
        tokenizer.save_pretrained(tmp_dir)
        sample = write_parity_sample(task, eval_data, tmp_dir, cfg.seed)
        layers_after = _layer_shapes(student)
        manifest = write_manifest(
            tmp_dir,
            KIND_PYTORCH,
            {
                "task": source.task,
                "labels": labels,
                **task.manifest_fields(labels),
                "max_length": max_length,
                "base_model": source.manifest.get("base_model"),
                "source": {"model_dir": str(cfg.model_dir), "manifest_sha256": source.sha256},
                "parity_sample": sample,
                "distributed": (
                    distributed_info(cfg.train_config(max_length, task.name), world)
                    if cfg.recovery is not None
                    else {"world_size": world}
                ),
                "pruning": {
                    "config": cfg.to_dict(),
                    "fractions": {"heads": heads, "ffn": ffn},
                    "layers_kept": plan.layers,
                    "layers_removed": sorted(set(range(len(layers_before))) - set(plan.layers)),
                    "heads_per_layer": {
                        "before": [s[0] for s in layers_before],
                        "after": [s[0] for s in layers_after],
                    },
                    "heads_removed": {str(k): v for k, v in student.config.pruned_heads.items()},
                    "head_size": layers_before[0][1],
                    "ffn_per_layer": {"before": [s[2] for s in layers_before], "after": [s[2] for s in layers_after]},
                    "importance": {
                        "examples": importance.examples,
                        "heads_normalized": [[round(float(v), 4) for v in h] for h in importance.normalized_heads()],
                        "layer_scores": [round(float(v), 4) for v in importance.layer_scores()],
                    },
                    "parameters": {
                        **{k: v["parameters"] for k, v in (("before", before), ("after", after))},
                        "ratio": before["parameters"] / after["parameters"],
                    },
                    "flops": {
                        **{k: v["flops"] for k, v in (("before", before), ("after", after))},
                        "ratio": before["flops"] / after["flops"],
                        "batch_size": FLOPS_BATCH_SIZE,
                        "seq_len": FLOPS_SEQ_LEN,
                    },
                    "accuracy": accuracy,
                },
                "recovery": recovery,
                "data": {"train": train_data.fingerprint(), "eval": eval_data.fingerprint()},
                "metrics": {k: final[k] for k in task.summary_keys if k in final},
                "wall_time_s": round(time.perf_counter() - started, 2),
                "device": {"type": device, "torch_threads": torch.get_num_threads()},
            },
        )
    barrier(world)
    return {**manifest, "out_dir": str(Path(cfg.out))}
