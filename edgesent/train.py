"""Fine-tuning on the Transformers ``Trainer``: schedules, AMP, accumulation and early stopping come from it.

What edgesent adds: base-model resolution without a hub, label mapping from the data, checks before any
model loads (``max_length`` within the base's positions, the base tokenizer's coverage of the data), metrics
per epoch (the task's: accuracy, macro-F1 and per-class report for classification; span P/R/F1 for spans),
class weights for imbalanced data, layer-wise learning-rate decay, a refusal to save a
model whose loss or weights are not finite, and an atomic output directory with a manifest that ties the
model to its data and settings. The settings are ``edgesent.config.train.TrainConfig`` (re-exported here).
What differs between tasks (data, model class, encoding, collator, metrics, the best-epoch metric) is asked of
the task (``edgesent.tasks``); the classification pieces live here and ``tasks.classify`` wraps them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from edgesent.artifacts import (
    KIND_PYTORCH,
    PARITY_SAMPLE_NAME,
    PARITY_SAMPLE_ROWS,
    read_manifest,
    write_manifest,
)
from edgesent.config.train import DEFAULT_BASE, TrainConfig
from edgesent.ddp import barrier, distributed_info, process_group, rank_output, shared_scratch
from edgesent.errors import TrainingError
from edgesent.flops import position_limit
from edgesent.metrics import classification_metrics
from edgesent.tasks import Task, resolve_task
from edgesent.tasks.spans import IGNORE_INDEX
from edgesent.train_inputs import (
    check_max_length,
    default_out_dir,
    encode_texts,
    evaluate_coverage,
    load_model,
    load_tokenizer,
    load_training_data,
    measure_coverage,
    resolve_base,
    resolve_device,
)


logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BASE",
    "TrainConfig",
    "check_max_length",
    "default_out_dir",
    "encode_texts",
    "evaluate_coverage",
    "load_model",
    "load_tokenizer",
    "load_training_data",
    "measure_coverage",
    "position_limit",
    "resolve_base",
    "resolve_device",
    "train",
]


def planned_steps(n_examples: int, batch_size: int, grad_accum: int, epochs: float) -> int:
    """Optimiser steps ``epochs`` take, counted as the Trainer does (a partial accumulation still steps)."""
    batches = math.ceil(n_examples / batch_size)
    per_epoch = max(batches // grad_accum + int(batches % grad_accum > 0), 1)
    return math.ceil(epochs * per_epoch)


def check_finite(model: torch.nn.Module, loss: float | None, what: str, lr: float | None = None) -> None:
    """TrainingError unless the final training loss and every parameter are finite: such a model is not saved.

    Raises:
        TrainingError: NaN or infinity in the loss or the weights (diverged training), naming them.
    """
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    loss_bad = loss is not None and not math.isfinite(loss)
    if not bad and not loss_bad:
        return
    found = [f"final training loss {loss}"] if loss_bad else []
    if bad:
        found.append(f"{len(bad)} parameter tensor(s) with NaN or inf (first: {bad[0]})")
    advice = f"try a lower learning rate (--lr, now {lr:g}) and check the data" if lr else "check the source model"
    raise TrainingError(f"{what} produced a broken model: {' and '.join(found)}; nothing was saved; {advice}")


class MetricsRecorder:
    """``compute_metrics`` for the Trainer: returns scalars to log, keeps every full report.

    The Trainer logs only flat numbers, but the manifest wants the per-class report of each epoch.
    """

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self.reports: list[dict[str, Any]] = []

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        report = classification_metrics(eval_pred.label_ids, np.argmax(logits, axis=-1), self.labels)
        self.reports.append(report)
        scalars = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}
        scalars.update({f"f1_{label}": cls["f1"] for label, cls in report["per_class"].items()})
        return scalars


class FinetuneTrainer(Trainer):
    """The Trainer of a fine-tuning run, with the two things edgesent adds to its loss and optimiser.

    - ``class_weights``: cross-entropy weighted by class (inverse frequency) for imbalanced data. Logits and
      labels are flattened, so a tagger's (B, T, K) logits and (B, T) tags (-100 where no tag is read) are
      weighted per tag the same way as a classifier's (B, C) logits and (B,) labels.
    - ``layer_lr_decay``: below 1, one AdamW parameter group per layer with its own rate
      (:func:`layerwise_param_groups`); the Trainer's schedule scales every group alike.
    """

    def __init__(
        self, *args: Any, class_weights: torch.Tensor | None = None, layer_lr_decay: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights
        self.layer_lr_decay = layer_lr_decay

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.class_weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss_fn = torch.nn.CrossEntropyLoss(
            weight=self.class_weights.to(outputs.logits.device), ignore_index=IGNORE_INDEX
        )
        logits = outputs.logits.float()
        loss = loss_fn(logits.view(-1, logits.shape[-1]), labels.view(-1))
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self):
        if self.optimizer is not None or self.layer_lr_decay == 1.0:
            return super().create_optimizer()
        groups = layerwise_param_groups(
            list(self.model.named_parameters()),
            set(self.get_decay_parameter_names(self.model)),
            self.args.learning_rate,
            self.layer_lr_decay,
            self.args.weight_decay,
        )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


_LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")  # encoder.layer.3. (BERT), transformer.layer.3. (DistilBERT)


def layer_depth(name: str, num_layers: int) -> int:
    """A parameter's depth: 0 for the embeddings, i + 1 for encoder layer i, ``num_layers + 1`` above them
    (pooler, classifier)."""
    match = _LAYER_INDEX.search(name)
    if match:
        return int(match.group(1)) + 1
    return 0 if "embeddings" in name else num_layers + 1


def layerwise_param_groups(
    named_parameters: list[tuple[str, torch.nn.Parameter]],
    decay_names: set[str],
    lr: float,
    layer_lr_decay: float,
    weight_decay: float,
) -> list[dict[str, Any]]:
    """AdamW parameter groups for layer-wise learning-rate decay: depth ``k`` (:func:`layer_depth`) trains at
    ``lr * layer_lr_decay ** (num_layers + 1 - k)``, with weight decay only on ``decay_names`` (the Trainer's
    choice: no decay on biases and LayerNorm). Highest rate first, so the Trainer logs the head's rate."""
    indices = [int(m.group(1)) for name, _ in named_parameters if (m := _LAYER_INDEX.search(name))]
    num_layers = max(indices) + 1 if indices else 0
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        depth, decays = layer_depth(name, num_layers), name in decay_names
        group = groups.setdefault(
            (depth, decays),
            {
                "params": [],
                "lr": lr * layer_lr_decay ** (num_layers + 1 - depth),
                "weight_decay": weight_decay if decays else 0.0,
            },
        )
        group["params"].append(param)
    return [groups[key] for key in sorted(groups, reverse=True)]


def inverse_frequency_weights(class_ids: list[int], num_labels: int) -> torch.Tensor:
    """n / (C * count_c): the "balanced" weighting, so each class contributes equally to the loss."""
    counts = np.bincount(np.asarray(class_ids), minlength=num_labels).astype(np.float64)
    weights = len(class_ids) / (num_labels * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)


def _amp_flags(device: str) -> dict[str, Any]:
    """bf16 on GPUs that support it (no loss scaling needed), else fp16; none on CPU."""
    if device != "cuda":
        return {"bf16": False, "fp16": False}
    bf16 = torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": not bf16}


def _to_hf_args(cfg: TrainConfig, work_dir: Path, device: str, train_size: int) -> TrainingArguments:
    """The one place a TrainConfig becomes TrainingArguments.

    The Trainer's ``max_steps`` replaces the epochs (``--epochs 1 --max-steps 20`` ran 10 epochs), so it is
    passed only when it is the smaller of the two: edgesent's ``max_steps`` is a cap.
    """
    args = TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=cfg.epochs,
        max_steps=-1,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        warmup_ratio=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=resolve_task(cfg.task, cfg.data).best_metric,
        greater_is_better=True,
        save_only_model=True,
        report_to=[],
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        group_by_length=cfg.group_by_length,
        **_amp_flags(device),
    )
    if cfg.max_steps:
        batch = args.train_batch_size * max(args.world_size, 1)  # per device x devices, as the Trainer counts
        if cfg.max_steps < planned_steps(train_size, batch, cfg.grad_accum, cfg.epochs):
            args.max_steps = cfg.max_steps
    return args


def build_trainer(
    model: Any,
    tokenizer: Any,
    train_set: torch.utils.data.Dataset,
    eval_set: torch.utils.data.Dataset,
    cfg: TrainConfig,
    labels: list[str],
    work_dir: Path,
    device: str,
    trainer_cls: type[Trainer] = Trainer,
    **trainer_kwargs: Any,
) -> tuple[Trainer, Any]:
    """A Trainer with the task's metrics and collator (dynamic padding) and early stopping on the task's best
    metric (reused by pruning recovery)."""
    task = resolve_task(cfg.task, cfg.data)
    recorder = task.metrics_recorder(labels)
    callbacks = [EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping)] if cfg.early_stopping else []
    trainer = trainer_cls(
        model=model,
        args=_to_hf_args(cfg, work_dir, device, len(train_set)),  # type: ignore[arg-type]
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=task.collator(tokenizer),
        compute_metrics=recorder,
        callbacks=callbacks,
        **trainer_kwargs,
    )
    return trainer, recorder


def epoch_history(trainer: Trainer, recorder: Any) -> list[dict[str, Any]]:
    """One entry per evaluation: epoch, step, train loss, and the full metrics report."""
    train_loss = {round(e["epoch"], 4): e["loss"] for e in trainer.state.log_history if "loss" in e}
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    return [
        {
            "epoch": e["epoch"],
            "step": e["step"],
            "train_loss": train_loss.get(round(e["epoch"], 4)),
            "eval_loss": e["eval_loss"],
            **report,
        }
        for e, report in zip(evals, recorder.reports)
    ]


def best_entry(history: list[dict[str, Any]], best_step: int | None) -> dict[str, Any]:
    """The history entry the Trainer kept as best (by the task's best metric), or the last one."""
    for entry in history:
        if entry["step"] == best_step:
            return entry
    return history[-1]


def train(cfg: TrainConfig, *, manifest_extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fine-tune ``cfg.base`` on ``cfg.data`` for ``cfg.task`` and save the best epoch's model to ``cfg.out``.

    The task (``cfg.task``, else what the data holds) says how the data is read and encoded, which model class,
    collator and metrics are used, and which metric picks the best epoch; everything else is the same Trainer
    setup for every task.

    Args:
        cfg: the settings.
        manifest_extra: more manifest keys (``finetune --search`` records its trials under ``search``).

    Returns:
        The manifest written to ``<out>/edgesent.json`` (its ``out_dir`` key says where).

    Raises:
        DataError, ConfigError, ModelError, MissingDependencyError: before any model is loaded (unusable data,
            a base that cannot be loaded or cannot read the data, ``max_length`` over the base's positions).
        TrainingError: the loss or the weights are not finite after training; nothing is saved.
    """
    started = time.perf_counter()
    cfg, inputs = prepare_run(cfg)
    rank, world = process_group(inputs.device)
    out_dir = Path(cfg.out or default_out_dir(cfg))
    base = Path(inputs.base_path)
    sources = [path for path in (cfg.data, cfg.eval_data, base) if path is not None and path.exists()]
    # Under torchrun/accelerate every rank trains; only rank 0 writes the output (atomically, as always).
    with rank_output(out_dir, cfg.overwrite, sources, rank) as tmp_dir:
        with shared_scratch("checkpoints", rank, world) as work_dir:
            trainer, result, history, best = fit(cfg, inputs, work_dir, "fine-tuning")
            if tmp_dir is not None:
                trainer.model.save_pretrained(tmp_dir)  # the best epoch's weights (load_best_model_at_end)
                inputs.tokenizer.save_pretrained(tmp_dir)
                sample = write_parity_sample(inputs.task, inputs.eval_data, tmp_dir, cfg.seed)
        if tmp_dir is None:
            barrier(world)  # rank 0 writes and renames the output meanwhile
            return {**read_manifest(out_dir), "out_dir": str(out_dir)}
        task, labels = inputs.task, inputs.labels
        manifest = write_manifest(
            tmp_dir,
            KIND_PYTORCH,
            {
                "task": task.hf_task,
                "labels": labels,
                **task.manifest_fields(labels),
                "max_length": cfg.max_length,
                "base_model": {"name": cfg.base, "resolved": inputs.base_path},
                "hyperparameters": cfg.to_dict(),
                "data": {
                    "train": inputs.train_data.fingerprint(),
                    "eval": inputs.eval_data.fingerprint(),
                    "coverage": inputs.coverage,
                },
                "epochs": history,
                "best_epoch": best["epoch"],
                "metrics": {k: best[k] for k in task.summary_keys},
                "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 2),
                "train_samples_per_second": result.metrics.get("train_samples_per_second"),
                "wall_time_s": round(time.perf_counter() - started, 2),
                "device": _device_info(inputs.device),
                "distributed": distributed_info(cfg, world),
                "parity_sample": sample,
                **(manifest_extra or {}),
            },
        )
    barrier(world)
    return {**manifest, "out_dir": str(out_dir)}


def write_parity_sample(task: Task, data: Any, out_dir: Path, seed: int) -> dict[str, Any]:
    """Keep a seeded sample (up to ``PARITY_SAMPLE_ROWS``) of the evaluation split in the model directory.

    ``export`` and ``parity`` judge the exported model on it when no ``--parity-data`` is given: real, in-domain
    texts with labels, where the built-in probe texts (empty string, emoji, ...) say nothing about agreement.

    Returns:
        What the manifest records under ``parity_sample``.
    """
    if len(data) > PARITY_SAMPLE_ROWS:
        data = task.sample(data, PARITY_SAMPLE_ROWS, seed)
    rows = task.records(data)
    (Path(out_dir) / PARITY_SAMPLE_NAME).write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
    )
    return {"file": PARITY_SAMPLE_NAME, "rows": len(rows), "seed": seed, "source": "evaluation split"}


def _device_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device, "torch_threads": torch.get_num_threads(), **_amp_flags(device)}
    if device == "cuda":
        info["name"] = torch.cuda.get_device_name(0)
    return info


# --- hooks for the hyperparameter search (edgesent.search): one configuration trained without saving it ----------


@dataclass
class RunInputs:
    """What a run needs besides its hyperparameters, loaded and checked once (a search shares it across trials)."""

    task: Task
    train_data: Any
    eval_data: Any
    labels: list[str]
    base_path: str
    device: str
    tokenizer: Any
    coverage: dict[str, Any]
    train_set: Any
    eval_set: Any
    subset: dict[str, Any] | None = None


def prepare_run(cfg: TrainConfig, subset: int | None = None) -> tuple[TrainConfig, RunInputs]:
    """Resolve the task, then load, check and encode the data of ``cfg``, before any model is loaded.

    Args:
        cfg: the settings (task, data, base, max_length, columns, seed).
        subset: encode only a seeded sample of about this many training rows (classification: stratified);
            None, or at least the training set's size: all of it.

    Returns:
        ``cfg`` with its task resolved (recorded so), and the inputs; ``subset`` holds the sample's fingerprint.

    Raises:
        DataError, ConfigError, ModelError, MissingDependencyError: unusable data, a base that cannot be loaded
            or cannot read the data, ``max_length`` over the base's positions.
    """
    task = resolve_task(cfg.task, cfg.data)
    cfg = dataclasses.replace(cfg, task=task.name)  # recorded resolved, and asked of by _to_hf_args/build_trainer
    train_data, eval_data, labels = task.load_training_data(cfg)
    base_path = resolve_base(cfg.base)
    tokenizer, hf_config = load_tokenizer(base_path)
    check_max_length(cfg, hf_config, base_path)
    coverage = evaluate_coverage(cfg, tokenizer, train_data, eval_data)
    fingerprint = None
    if subset is not None and subset < len(train_data):
        train_data = task.sample(train_data, subset, cfg.seed)
        fingerprint = train_data.fingerprint()
    inputs = RunInputs(
        task=task,
        train_data=train_data,
        eval_data=eval_data,
        labels=labels,
        base_path=base_path,
        device=resolve_device(cfg.device),
        tokenizer=tokenizer,
        coverage=coverage,
        train_set=task.encode(tokenizer, train_data, labels, cfg.max_length),
        eval_set=task.encode(tokenizer, eval_data, labels, cfg.max_length),
        subset=fingerprint,
    )
    return cfg, inputs


def fit(
    cfg: TrainConfig,
    inputs: RunInputs,
    work_dir: Path,
    what: str,
    report: Callable[[int, float, bool], None] | None = None,
) -> tuple[Trainer, Any, list[dict[str, Any]], dict[str, Any]]:
    """Train one configuration on prepared inputs: the one Trainer run behind finetune and every search trial.

    Args:
        cfg: the run's settings (hyperparameters; data settings must match ``inputs``).
        inputs: from :func:`prepare_run`.
        work_dir: a scratch directory for the Trainer's checkpoints.
        what: the run's name for the non-finite error ("fine-tuning", "a search trial").
        report: called after every evaluation with its number (1, 2, ...), the selection metric's value and
            whether training has finished; an exception it raises (a pruned trial) stops training and propagates.

    Returns:
        (trainer holding the best epoch's model, the train result, per-epoch history, the best entry).

    Raises:
        TrainingError: the loss or the weights are not finite after training.
    """
    torch.manual_seed(cfg.seed)
    task, labels = inputs.task, inputs.labels
    outputs = task.output_names(labels)
    model = load_model(inputs.base_path, outputs, task.model_class())
    class_weights = None
    if cfg.class_weights == "auto":
        ids = [int(i) for f in inputs.train_set.features for i in np.atleast_1d(f["labels"]) if i != IGNORE_INDEX]
        class_weights = inverse_frequency_weights(ids, len(outputs))
    trainer, recorder = build_trainer(
        model,
        inputs.tokenizer,
        inputs.train_set,
        inputs.eval_set,
        cfg,
        labels,
        work_dir,
        inputs.device,
        FinetuneTrainer,
        class_weights=class_weights,
        layer_lr_decay=cfg.layer_lr_decay,
    )
    if report is not None:
        trainer.add_callback(_EvaluationHook(report))
    result = trainer.train()
    check_finite(trainer.model, result.training_loss, what, cfg.lr)
    history = epoch_history(trainer, recorder)
    return trainer, result, history, best_entry(history, trainer.state.best_global_step)


class _EvaluationHook(TrainerCallback):
    """Hands each evaluation's selection metric to ``report(evaluation number, value, final)``; it may raise to
    stop. ``final`` is True for the evaluation after the last training step: nothing is left to stop early."""

    def __init__(self, report: Callable[[int, float, bool], None]) -> None:
        self.report = report
        self.evaluations = 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.evaluations += 1
        final = state.max_steps > 0 and state.global_step >= state.max_steps
        self.report(self.evaluations, float((metrics or {})[f"eval_{args.metric_for_best_model}"]), final)


def fit_candidate(
    cfg: TrainConfig,
    inputs: RunInputs,
    work_dir: Path,
    report: Callable[[int, float, bool], None] | None = None,
) -> dict[str, Any]:
    """Train one configuration on prepared inputs, as :func:`train` does, and return its scores; save nothing.

    The score is the metric the run selects its best epoch by (the Trainer's ``metric_for_best_model``:
    macro-F1 for classification), taken at the best epoch, so a search maximises what training keeps.

    Args:
        cfg: the settings of this run (hyperparameters; data settings must match ``inputs``).
        inputs: from :func:`prepare_run`.
        work_dir: a scratch directory for the Trainer's checkpoints.
        report: called after every evaluation with its number (1, 2, ...), the metric's value and whether
            training has finished; an exception it raises (a pruned trial) stops training and propagates.

    Returns:
        ``{"metric", "score", "best_epoch", "epochs", "train_runtime_s"}``.

    Raises:
        TrainingError: the loss or the weights are not finite after training.
    """
    trainer, result, history, best = fit(cfg, inputs, work_dir, "a search trial", report)
    metric = trainer.args.metric_for_best_model
    score = trainer.state.best_metric if trainer.state.best_metric is not None else best[metric]
    return {
        "metric": metric,
        "score": float(score),
        "best_epoch": best["epoch"],
        "epochs": history,
        "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 2),
    }
