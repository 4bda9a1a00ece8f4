"""What differs between tasks: labels and ids, label alignment, decoding, metrics and the parity measure.

A task lives in one module here and changes no stage's control flow: the stages (finetune, evaluate, export,
parity, the Predictor) ask the task. This package's light part (this module, ``spans``, ``spans_data``) imports
the stdlib and numpy only (no torch, transformers or onnxruntime), so the runtime can decode without the
training stack; the task classes (``classify.ClassifyTask``, ``spans_stages.SpanTask``) import those only inside
the methods that need them.

- :class:`Task`: the questions a stage asks (how to load and encode the data, which model class, collator and
  metrics, which metric picks the best epoch, how to evaluate a model directory, how to judge parity). Get one
  with :func:`get_task` (by CLI name or manifest task) or :func:`resolve_task` (what the data holds).
- ``classify``: text classification, wrapping what ``train``, ``evaluate`` and ``parity`` do for it.
- ``spans``: token tagging with BIO tags whose type is the span's label (aspect-based sentiment: one pass
  returns every aspect with its polarity); tags, label alignment, decoding, span metrics and agreement.
- ``spans_data``: the span task's readers (JSONL with character spans, CoNLL, SemEval-2014 ABSA XML) and its
  embedded demo data.
- ``spans_stages``: the span task's answers to the stages (training, evaluation, parity).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesent.errors import ConfigError


if TYPE_CHECKING:
    from edgesent.artifacts import ModelDir
    from edgesent.config.parity import ParityConfig
    from edgesent.config.train import TrainConfig


CLASSIFY = "classify"
SPANS = "spans"
TASK_NAMES = (CLASSIFY, SPANS)
# CLI name -> the task a manifest records (Hugging Face's pipeline/Optimum task names)
HF_TASKS = {CLASSIFY: "text-classification", SPANS: "token-classification"}
_IMPLEMENTATIONS = {CLASSIFY: "edgesent.tasks.classify:ClassifyTask", SPANS: "edgesent.tasks.spans_stages:SpanTask"}
# File extensions that only span data uses (a .jsonl may hold either; see detect_task).
_SPAN_ONLY_SUFFIXES = (".xml", ".conll", ".bio", ".iob")
_SPAN_KEYS = ("spans", "aspects")

# check(name, measured value, bound, passed, message shown when it failed): how parity records one check
ParityCheck = Callable[[str, "float | None", "float | None", bool, str], None]

__all__ = ["CLASSIFY", "HF_TASKS", "SPANS", "TASK_NAMES", "Task", "detect_task", "get_task", "resolve_task"]


class Task:
    """One task's answers to the stages' questions. Subclasses set the attributes and implement the methods.

    Attributes:
        name: the CLI name (``classify``, ``spans``).
        hf_task: what manifests record and Optimum exports (``text-classification``, ``token-classification``).
        best_metric: the per-epoch metric (a key of the recorder's scalars) that picks the best epoch and drives
            early stopping.
        epoch_columns: per-epoch report keys ``finetune`` prints.
        summary_keys: keys of the best epoch's report kept as the manifest's ``metrics``.
    """

    name: str = ""
    hf_task: str = ""
    best_metric: str = ""
    epoch_columns: tuple[str, ...] = ()
    summary_keys: tuple[str, ...] = ()

    # -- labels and the manifest ---------------------------------------------------------------------------
    def output_names(self, labels: Sequence[str]) -> list[str]:
        """What each output unit of the model means (``id2label``), index = output id."""
        raise NotImplementedError

    def manifest_fields(self, labels: Sequence[str]) -> dict[str, Any]:
        """Task-specific manifest keys besides ``task`` and ``labels`` (a span model's ``tags``)."""
        return {}

    # -- training ------------------------------------------------------------------------------------------
    def load_training_data(self, cfg: TrainConfig) -> tuple[Any, Any, list[str]]:
        """(train data, eval data, sorted label set), validated before any model loads; DataError if unusable.

        Both data objects have ``texts`` (the coverage check) and ``fingerprint()`` (the manifest).
        """
        raise NotImplementedError

    def sample(self, data: Any, size: int, seed: int) -> Any:
        """A seeded sample of about ``size`` training rows (a search's trial set); classes kept where it can."""
        raise NotImplementedError

    def records(self, data: Any) -> list[dict[str, Any]]:
        """The rows of a data object as JSON objects this task's readers read back (the parity sample)."""
        raise NotImplementedError

    def load_labelled(self, path: Path, labels: Sequence[str], options: dict[str, Any]) -> Any:
        """A labelled file of this task, checked against a model's labels (DataError naming any it does not know).

        ``options``: ``text_column``, ``label_column``, ``skip_empty``, ``drop_labels`` (as :meth:`evaluate`).
        """
        raise NotImplementedError

    def read_texts(self, path: Path, text_column: str) -> list[str]:
        """The texts of a data file of this task (calibration texts), labels not needed."""
        raise NotImplementedError

    def model_class(self) -> Any:
        """The Transformers auto class of the model (``AutoModelFor...``)."""
        raise NotImplementedError

    def encode(self, tokenizer: Any, data: Any, labels: list[str], max_length: int) -> Any:
        """The tokenized, unpadded training/eval set (a torch Dataset of feature dicts with ``labels``)."""
        raise NotImplementedError

    def collator(self, tokenizer: Any) -> Any:
        """The data collator that pads a batch (and its labels) dynamically."""
        raise NotImplementedError

    def metrics_recorder(self, labels: list[str]) -> Any:
        """``compute_metrics`` for the Trainer: returns scalars, keeps every full report in ``.reports``."""
        raise NotImplementedError

    # -- evaluation ----------------------------------------------------------------------------------------
    def evaluate(self, model: ModelDir, data_path: Path, options: dict[str, Any]) -> dict[str, Any]:
        """The task's metrics of a PyTorch or ONNX model directory on a labelled file, plus ``data``.

        ``options``: ``text_column``, ``label_column``, ``batch_size``, ``skip_empty``, ``drop_labels``.
        """
        raise NotImplementedError

    def torch_report(
        self, model: Any, tokenizer: Any, data: Any, labels: list[str], batch_size: int, max_length: int
    ) -> dict[str, Any]:
        """The task's metrics of an in-memory PyTorch model on data from :meth:`load_labelled` (evaluate's PyTorch
        path, and prune's before/after scores)."""
        raise NotImplementedError

    def format_report(self, report: dict[str, Any]) -> str:
        """The metrics of :meth:`evaluate` (or a manifest's ``metrics``) as plain-text tables."""
        raise NotImplementedError

    # -- export and parity ---------------------------------------------------------------------------------
    def logits_axes(self) -> dict[int, str]:
        """The dynamic axes of the ``logits`` output (``torch.onnx.export``'s fallback)."""
        raise NotImplementedError

    def parity_data(self, cfg: ParityConfig, model: ModelDir) -> tuple[list[str], Any, str]:
        """(texts, gold or None, source description) parity runs on: ``cfg.data`` or the probe texts."""
        raise NotImplementedError

    def parity_gold(self, gold: Any, n_texts: int, model: ModelDir) -> Any:
        """Gold annotations given to parity, checked against the texts and the model's labels."""
        raise NotImplementedError

    def judge_parity(
        self,
        reference: Any,
        torch_outputs: list[Any],
        onnx_outputs: list[Any],
        bounds: dict[str, float | None],
        check: ParityCheck,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Compare the ONNX outputs with PyTorch's per reference batch; record every check; return
        (the report's metrics, up to 5 disagreements)."""
        raise NotImplementedError


_LOADED: dict[str, Task] = {}


def stage_module(name: str) -> Any:
    """``edgesent.<name>`` (a stage: ``train``, ``evaluate``, ``parity``, ``cli._format``), imported when a task
    method first needs it.

    Imported by name so that this light package neither loads the heavy stages when it is imported nor pulls
    them into the type check of the light core (mypy follows even function-level imports).
    """
    return importlib.import_module(f"edgesent.{name}")


def get_task(name: str) -> Task:
    """The task for a CLI name (``classify``, ``spans``) or a manifest task (``text-classification``, ...).

    Raises:
        ConfigError: an unknown task.
    """
    by_hf = {hf: cli for cli, hf in HF_TASKS.items()}
    key = by_hf.get(name, name)
    if key not in _IMPLEMENTATIONS:
        known = ", ".join([*TASK_NAMES, *HF_TASKS.values()])
        raise ConfigError(f"task {name!r} is not one of {known}")
    if key not in _LOADED:
        module, attr = _IMPLEMENTATIONS[key].split(":")
        _LOADED[key] = getattr(importlib.import_module(module), attr)()
    return _LOADED[key]


def detect_task(path: str | Path | None) -> str:
    """The task a data file holds: spans for .xml/.conll/.bio/.iob, or a JSONL whose first object has ``spans``
    or ``aspects``; classify otherwise (and for no file, the classification demo).

    Unreadable files are left to the task's reader, which reports them with its one-line error.
    """
    if path is None:
        return CLASSIFY
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _SPAN_ONLY_SUFFIXES:
        return SPANS
    if suffix in (".jsonl", ".ndjson") and path.is_file():
        try:
            with open(path, encoding="utf-8-sig") as fh:
                first = next((line for line in fh if line.strip()), "")
            obj = json.loads(first) if first else None
        except (OSError, ValueError):
            return CLASSIFY
        if isinstance(obj, dict) and any(key in obj for key in _SPAN_KEYS):
            return SPANS
    return CLASSIFY


def resolve_task(task: str | None, data: str | Path | None) -> Task:
    """The task asked for, else the one the data holds (:func:`detect_task`)."""
    return get_task(task or detect_task(data))
