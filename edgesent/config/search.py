"""``SearchConfig``: the settings of ``edgesent finetune --search`` and its search space, stdlib only.

A search space maps ``TrainConfig`` fields to distributions. It comes from the default below or from a TOML
file (``--search-space FILE``), one table per parameter::

    [lr]
    type = "log_float"      # log_float, float, int or categorical
    low = 1e-5
    high = 2e-4

    [batch_size]
    type = "categorical"
    choices = [16, 32]

Every entry is validated here, before any model loads: an unknown parameter or type, a missing or extra key,
a non-finite bound, ``low >= high`` or empty choices raise one ``ConfigError`` that names the entry; and each
bound and choice is checked by ``TrainConfig`` itself, so the space can only propose settings a plain
``edgesent finetune`` would accept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesent.config._base import ConfigBase, check_number, optional_path
from edgesent.config.train import TrainConfig
from edgesent.errors import ConfigError
from edgesent.tasks import CLASSIFY, detect_task


# TrainConfig fields a search may vary; class_weights only where the task classifies texts.
SEARCHABLE = (
    "lr",
    "epochs",
    "batch_size",
    "warmup_ratio",
    "weight_decay",
    "layer_lr_decay",
    "grad_accum",
    "class_weights",
)
CLASSIFICATION_ONLY = ("class_weights",)
PARAM_TYPES = ("log_float", "float", "int", "categorical")
_NUMERIC_KEYS = ("type", "low", "high")
_CATEGORICAL_KEYS = ("type", "choices")
# Sensible for a small pretrained encoder (MiniLM, BERT-small) fine-tuned on a few thousand to 100k texts.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "log_float", "low": 1e-5, "high": 2e-4},
    "epochs": {"type": "int", "low": 1, "high": 4},
    "batch_size": {"type": "categorical", "choices": [16, 32]},
    "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
    "weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
    "class_weights": {"type": "categorical", "choices": ["none", "auto"]},
}
DEFAULT_TRIALS = 20
# Completed trials before the median pruner may stop one: low, because CPU searches run few trials.
DEFAULT_STARTUP_TRIALS = 2


def is_classification(train: TrainConfig) -> bool:
    """Whether ``train`` fine-tunes a text classifier: its task, else what its data holds (as finetune resolves
    it), so the space does not depend on whether ``--task`` was typed."""
    return (train.task or detect_task(train.data)) == CLASSIFY


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_entry(name: str, entry: Any, where: str, classification: bool) -> dict[str, Any]:
    """One validated, normalised entry of a space (a new dict); ConfigError naming ``[name]`` otherwise."""
    at = f"search space{where} [{name}]"
    if name not in SEARCHABLE:
        raise ConfigError(f"{at}: unknown parameter; searchable: {', '.join(SEARCHABLE)}")
    if name in CLASSIFICATION_ONLY and not classification:
        raise ConfigError(f"{at}: only searched for text classification")
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{at}: must be a table with a type, got {entry!r}")
    kind = entry.get("type")
    if kind not in PARAM_TYPES:
        raise ConfigError(f"{at}: type {kind!r} is not one of {', '.join(PARAM_TYPES)}")
    keys = _CATEGORICAL_KEYS if kind == "categorical" else _NUMERIC_KEYS
    unknown = sorted(set(entry) - set(keys))
    missing = [key for key in keys if key not in entry]
    if unknown or missing:
        problem = f"unknown key(s) {', '.join(unknown)}" if unknown else f"missing {', '.join(missing)}"
        raise ConfigError(f"{at}: {problem}; a {kind} entry takes {', '.join(keys)}")
    if kind == "categorical":
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{at}: choices must be a non-empty list, got {choices!r}")
        for choice in choices:
            if not (isinstance(choice, str) or _is_number(choice)) or (
                _is_number(choice) and not math.isfinite(choice)
            ):
                raise ConfigError(f"{at}: choice {choice!r} is not a finite number or a string")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{at}: choices repeat a value: {choices!r}")
        values = list(choices)
        normal: dict[str, Any] = {"type": kind, "choices": values}
    else:
        low, high = entry["low"], entry["high"]
        for key, value in (("low", low), ("high", high)):
            if not _is_number(value) or not math.isfinite(value):
                raise ConfigError(f"{at}: {key} must be a finite number, got {value!r}")
            if kind == "int" and not isinstance(value, int):
                raise ConfigError(f"{at}: {key} must be an integer for type int, got {value!r}")
        if low >= high:
            raise ConfigError(f"{at}: low ({low:g}) must be below high ({high:g})")
        if kind == "log_float" and low <= 0:
            raise ConfigError(f"{at}: low must be > 0 for type log_float, got {low:g}")
        values = [low, high]
        normal = {
            "type": kind,
            "low": low if kind == "int" else float(low),
            "high": high if kind == "int" else float(high),
        }
    for value in values:  # the ends of the range and every choice must be settings TrainConfig accepts
        try:
            TrainConfig(**{name: value})
        except ConfigError as err:
            raise ConfigError(f"{at}: {err}") from err
    return normal


def parse_space(raw: Any, where: str = "", classification: bool = True) -> dict[str, dict[str, Any]]:
    """Validate a search space (parameter name -> entry) and return a normalised copy.

    Args:
        raw: the space, e.g. a parsed TOML file or ``DEFAULT_SPACE``.
        where: the file it came from, for messages ("" for a space given in Python).
        classification: whether the task classifies texts (``class_weights`` is searchable only then).

    Raises:
        ConfigError: the space is not a table, is empty, or an entry is invalid (see the module docstring).
    """
    where = f" {where}" if where else ""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"search space{where}: expected a table of parameters, got {type(raw).__name__}")
    if not raw:
        raise ConfigError(f"search space{where}: no parameters; add a table such as [lr] with type, low and high")
    return {name: _check_entry(str(name), entry, where, classification) for name, entry in raw.items()}


def load_space(path: Path, classification: bool = True) -> dict[str, dict[str, Any]]:
    """Read and validate a TOML search space file.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or holds an invalid entry (one line, naming it).
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: tomli is a dependency there
        import tomli as tomllib
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"search space {path}: cannot read it ({err.strerror or err})") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"search space {path}: not valid TOML ({str(err).splitlines()[0]})") from err
    return parse_space(raw, str(path), classification)


@dataclass
class SearchConfig(ConfigBase):
    """Everything a hyperparameter search depends on; validated on creation, recorded in the manifest.

    Args:
        train: The fine-tuning settings every trial starts from (a TrainConfig or its dict); its ``seed``
            seeds the sampler and every trial, its ``out`` receives the retrained best configuration.
        trials: Trials to run (default 20), fewer if ``timeout_minutes`` runs out first.
        space: The search space (parameter -> entry, see the module docstring); None: read ``space_file``,
            or the default space (``DEFAULT_SPACE``, without ``class_weights`` for span tasks).
        space_file: TOML file the space was read from (recorded; read only when ``space`` is None).
        subset: Train trials on a stratified sample of this many training rows, then retrain the best
            configuration on all of them; None (default): trials use all the training data.
        timeout_minutes: Start no new trial after this many minutes (the running one finishes); None: no limit.
        startup_trials: Completed trials before the median pruner may stop a trial (default 2).
        fixed: TrainConfig fields held at ``train``'s value rather than searched: they are taken out of the
            space (the CLI passes the options given on the command line).

    Raises:
        ConfigError: a bad value or an invalid space, naming the field or the space entry.
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    trials: int = DEFAULT_TRIALS
    space: dict[str, dict[str, Any]] | None = None
    space_file: Path | None = None
    subset: int | None = None
    timeout_minutes: float | None = None
    startup_trials: int = DEFAULT_STARTUP_TRIALS
    fixed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.train, Mapping):
            self.train = TrainConfig.from_dict(self.train)
        if not isinstance(self.train, TrainConfig):
            raise ConfigError(f"train must be a TrainConfig or a dict of its settings, got {self.train!r}")
        check_number("trials", self.trials, low=1, integer=True)
        self.space_file = optional_path(self.space_file)
        if self.subset is not None:
            check_number("subset", self.subset, low=2, integer=True)
        if self.timeout_minutes is not None:
            check_number("timeout_minutes", self.timeout_minutes, low=0, low_open=True)
        check_number("startup_trials", self.startup_trials, low=0, integer=True)
        self.fixed = tuple(sorted(set(self.fixed) & set(SEARCHABLE)))
        classification = is_classification(self.train)
        if self.space is not None:
            space = parse_space(self.space, "", classification)
        elif self.space_file is not None:
            space = load_space(self.space_file, classification)
        else:
            space = parse_space(
                {k: v for k, v in DEFAULT_SPACE.items() if classification or k not in CLASSIFICATION_ONLY}
            )
        self.space = without(space, self.fixed)

    def searched(self) -> list[str]:
        """The parameters the search varies, in the space's order."""
        return list(self.space or {})


def without(space: Mapping[str, dict[str, Any]], names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``space`` less ``names``; ConfigError if nothing is left to search.

    Raises:
        ConfigError: every parameter of the space was fixed.
    """
    fixed = set(names)
    rest = {name: entry for name, entry in space.items() if name not in fixed}
    if not rest:
        raise ConfigError(
            f"search space: every parameter ({', '.join(space)}) is fixed by an option given on the command line; "
            "drop one of them, or search another parameter with --search-space"
        )
    return rest
