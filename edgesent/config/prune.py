"""``PruneConfig``: what ``edgesent prune`` removes, how it scores, and the ``TrainConfig`` of its recovery.

Stdlib only. The recovery run's hyperparameters (epochs, lr, warm-up, weight decay, accumulation, early
stopping, max_steps) are a nested ``TrainConfig`` rather than copies of its fields; the settings the whole
prune run shares (data, output, device, seed, batch sizes, max_length, columns) are the prune config's own
and are handed to the recovery run by :meth:`PruneConfig.train_config`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgesent.config._base import (
    ConfigBase,
    check_bool,
    check_choice,
    check_number,
    check_optional_number,
    check_text,
    check_texts,
    optional_path,
)
from edgesent.config.train import DEVICES, MAX_MAX_LENGTH, MAX_SEED, MIN_MAX_LENGTH, TrainConfig
from edgesent.errors import ConfigError


DEFAULT_SCORE_SAMPLES = 2048
DEFAULT_RECOVERY_MAX_LENGTH = 128  # only to validate the recovery settings before the source model is read
# TrainConfig fields the prune run sets itself; a recovery config must leave them at their defaults.
SHARED_WITH_RECOVERY = (
    "data",
    "eval_data",
    "out",
    "max_length",
    "device",
    "seed",
    "batch_size",
    "eval_batch_size",
    "text_column",
    "label_column",
    "skip_empty",
    "drop_labels",
    "overwrite",
)
# TrainConfig fields the recovery run has no use for: it distils the source model (no base, its task) with an
# unweighted loss and one learning rate for every layer, on the required eval_data. Set, they would be recorded
# in the manifest without ever running, so a recovery config must leave them at their defaults too.
UNUSED_BY_RECOVERY = ("base", "task", "class_weights", "layer_lr_decay", "eval_split", "allow_unknown_tokens")


@dataclass
class PruneConfig(ConfigBase):
    """What to remove, how to score it and how to recover; validated on creation, recorded in the manifest.

    Fractions are of the units each layer has now: ``heads=0.5`` on 12 heads keeps 6 per layer. ``speedup``
    (FLOPs before / after at batch 1, length 128) instead picks the smallest equal fraction of heads and FFN
    neurons that reaches it, after any layer removal.

    Args:
        model_dir: Source PyTorch model directory (``edgesent finetune`` output).
        data: Training file: importance scoring and recovery.
        eval_data: Evaluation file: accuracy before/after, early stopping and best checkpoint.
        out: Output model directory.
        heads: Fraction of attention heads to remove per layer, in [0, 1); at least one head stays.
        ffn: Fraction of FFN intermediate neurons to remove per layer, in [0, 1).
        layers: Number of layers to keep (None: all).
        speedup: Target FLOPs reduction factor (> 1), instead of ``heads``/``ffn``.
        score_samples: Training examples used for importance scores (a seeded random subset; default 2048).
        temperature: Softmax temperature of the distillation targets (default 2.0).
        alpha: Weight of the hard-label loss; ``1 - alpha`` weighs the distillation loss (default 0.5).
        batch_size: Batch size of scoring and of recovery training (default 32).
        eval_batch_size: Batch size of evaluation (default 64).
        max_length: Tokens per text; None (default): the source model's.
        device: ``auto`` (default), ``cpu`` or ``cuda``.
        seed: Seed of the scoring subset and of recovery (default 42).
        text_column, label_column, skip_empty, drop_labels: How the data files are read (as in TrainConfig;
            ``drop_labels`` is for span models, e.g. ``("conflict",)``).
        recovery: The recovery fine-tuning's hyperparameters (a TrainConfig or its dict; default: TrainConfig's
            defaults); None: save the pruned model without recovery. Its fields in ``SHARED_WITH_RECOVERY``
            must stay at their defaults: the prune run's own settings are used; so must those in
            ``UNUSED_BY_RECOVERY`` (class weights, layer-wise lr decay, ...), which the recovery run does not do.
        overwrite: Replace an existing output directory (default False).

    Raises:
        ConfigError: a bad value or an impossible target, naming the field and the value.
    """

    model_dir: Path
    data: Path
    eval_data: Path
    out: Path
    heads: float = 0.0
    ffn: float = 0.0
    layers: int | None = None
    speedup: float | None = None
    score_samples: int = DEFAULT_SCORE_SAMPLES
    temperature: float = 2.0
    alpha: float = 0.5
    batch_size: int = 32
    eval_batch_size: int = 64
    max_length: int | None = None
    device: str = "auto"
    seed: int = 42
    text_column: str = "text"
    label_column: str = "label"
    skip_empty: bool = False
    drop_labels: tuple[str, ...] = ()
    recovery: TrainConfig | None = field(default_factory=TrainConfig)
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name in ("model_dir", "data", "eval_data", "out"):
            path = optional_path(getattr(self, name))
            if path is None:
                raise ConfigError(f"{name} is required")
            setattr(self, name, path)
        if isinstance(self.recovery, Mapping):
            self.recovery = TrainConfig.from_dict(self.recovery)
        for name in ("heads", "ffn"):
            value = getattr(self, name)
            check_number(name, value)
            if not 0.0 <= value < 1.0:
                raise ConfigError(
                    f"{name}={value!r}: the fraction to remove must be in [0, 1) "
                    "(removing every head or neuron of a layer would disconnect it)"
                )
        if self.layers is not None:
            check_number("layers", self.layers, integer=True)
            if self.layers < 1:
                raise ConfigError(f"layers={self.layers!r}: must keep at least 1 layer")
        if self.speedup is not None:
            check_number("speedup", self.speedup)
            if not self.speedup > 1.0:
                raise ConfigError(f"speedup={self.speedup!r}: must be > 1 (FLOPs before / after)")
            if self.heads or self.ffn:
                raise ConfigError("give either speedup or heads/ffn fractions, not both")
        if not (self.heads or self.ffn or self.layers or self.speedup):
            raise ConfigError("nothing to prune: set heads, ffn, layers or speedup")
        check_number("score_samples", self.score_samples, low=1, integer=True)
        check_number("temperature", self.temperature, low=0, low_open=True)
        check_number("alpha", self.alpha)
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha={self.alpha!r}: must be in [0, 1]")
        check_number("batch_size", self.batch_size, low=1, integer=True)
        check_number("eval_batch_size", self.eval_batch_size, low=1, integer=True)
        check_optional_number("max_length", self.max_length, low=MIN_MAX_LENGTH, high=MAX_MAX_LENGTH, integer=True)
        check_choice("device", self.device, DEVICES)
        check_number("seed", self.seed, low=0, high=MAX_SEED, integer=True)
        check_text("text_column", self.text_column)
        check_text("label_column", self.label_column)
        check_bool("skip_empty", self.skip_empty)
        self.drop_labels = check_texts("drop_labels", self.drop_labels)
        check_bool("overwrite", self.overwrite)
        if self.recovery is not None:
            if not isinstance(self.recovery, TrainConfig):
                raise ConfigError(
                    f"recovery must be a TrainConfig, a dict of its settings or None, got {self.recovery!r}"
                )
            clashing = _changed(self.recovery, SHARED_WITH_RECOVERY)
            if clashing:
                raise ConfigError(
                    f"recovery.{', recovery.'.join(clashing)}: set on the prune config itself "
                    "(the recovery run uses the prune run's data, output, device, seed, batch sizes and columns)"
                )
            unused = _changed(self.recovery, UNUSED_BY_RECOVERY)
            if unused:
                raise ConfigError(
                    f"recovery.{', recovery.'.join(unused)}: not supported by pruning's recovery run (it distils "
                    "the source model with an unweighted loss and one learning rate for all layers); leave unset"
                )
            self.train_config(self.max_length or DEFAULT_RECOVERY_MAX_LENGTH)  # validated before any work

    def train_config(self, max_length: int, task: str | None = None) -> TrainConfig:
        """The recovery run's TrainConfig: ``recovery``'s hyperparameters with the prune run's shared settings,
        for the source model's ``task`` (None: what the data holds).

        Raises:
            ConfigError: recovery is off (None), or the merged settings are invalid.
        """
        if self.recovery is None:
            raise ConfigError("recovery is off (recovery=None): there is no recovery run to configure")
        shared = {
            name: getattr(self, name) for name in SHARED_WITH_RECOVERY if name not in ("max_length", "overwrite")
        }
        return dataclasses.replace(self.recovery, max_length=max_length, task=task, **shared)


def _changed(recovery: TrainConfig, names: tuple[str, ...]) -> list[str]:
    """The fields of ``names`` that ``recovery`` sets to something other than TrainConfig's default."""
    defaults = TrainConfig()
    return [name for name in names if getattr(recovery, name) != getattr(defaults, name)]
