"""The one per-partition function behind every engine: pandas batches in, the same rows plus predictions out.

Ray Data (``map_batches(batch_format="pandas")``) and Spark (``mapInPandas``) both hand a worker an iterator of
pandas DataFrames. :func:`predict_partition` turns each into the same rows with the prediction columns added,
through :meth:`edgesent.runtime.Predictor.predict_stream`, so an engine's rows are the single-process predictor's
rows: same labels, same scores, and a row with an empty, missing or non-string text gets an ``error`` instead of
failing the job.

The predictor is cached per process (keyed by model directory and settings): a Ray actor or a Spark Python worker
loads and hash-verifies the model once and reuses it for every batch it is given.

Output columns (a fixed, Parquet-friendly schema; see :func:`prediction_fields`): the input columns, then for a
classifier ``label`` (string, null on error), ``score`` (double, null on error) and one ``score_<label>`` double
per label of the model; for a span model (``token-classification``) ``spans`` instead (string: the JSON list of
span dicts ``{text, start, end, label, score}`` that ``Predictor.predict`` returns, as in ``edgesent predict
--json``; null on error); then ``truncated`` (bool), ``unknown_tokens`` (int64) and ``error`` (string, null when
fine). An input column whose name is one of these is kept as ``input_<name>``.

Imports pandas only when called; neither ray nor pyspark.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesent.artifacts import TASK_CLASSIFY, TASK_SPANS, TASKS
from edgesent.config import ConfigBase, check_bool, check_choice, check_number
from edgesent.config.providers import PROVIDERS
from edgesent.errors import ConfigError, DataError, ModelError


if TYPE_CHECKING:
    import pandas as pd

    from edgesent.runtime import Prediction, Predictor

logger = logging.getLogger(__name__)

SCORE_PREFIX = "score_"
RENAMED_PREFIX = "input_"
DEFAULT_BATCH_SIZE = 32
# Logical types, mapped by each engine onto its own (Arrow, Spark SQL).
STRING, DOUBLE, BOOLEAN, INT64 = "string", "double", "boolean", "int64"

_PREDICTORS: dict[tuple[Any, ...], Predictor] = {}
_LOCK = threading.Lock()


@dataclass
class PartitionConfig(ConfigBase):
    """What every worker needs to predict a partition; validated on the driver, pickled to the workers.

    Args:
        model_dir: the ONNX export directory, on storage every worker can read.
        text_column: the column holding the texts (default ``"text"``).
        labels: the model's labels as the driver read them (default empty: not checked). They fix the output
            schema, so a worker whose model has other labels refuses to run rather than write other columns.
        task: the model's task as the driver read it: ``"text-classification"`` (default) or
            ``"token-classification"`` (spans); it picks the prediction columns, so a worker checks it too.
        batch_size: texts per ONNX Runtime call (default 32), as in ``Predictor.predict``.
        provider: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"openvino"``, as in ``Predictor.load``.
        threads: ONNX Runtime threads per worker (default 1: an engine scales with one worker per core);
            None lets ONNX Runtime use every core.
        verify: hash-check the model on every worker before loading it (default True).
    """

    model_dir: Path
    text_column: str = "text"
    labels: tuple[str, ...] = ()
    task: str = TASK_CLASSIFY
    batch_size: int = DEFAULT_BATCH_SIZE
    provider: str = "auto"
    threads: int | None = 1
    verify: bool = True

    def __post_init__(self) -> None:
        self.model_dir = Path(self.model_dir)
        if not isinstance(self.text_column, str) or not self.text_column:
            raise ConfigError(f"text_column must be a non-empty string, got {self.text_column!r}")
        self.labels = tuple(self.labels)
        if not all(isinstance(label, str) and label for label in self.labels):
            raise ConfigError(f"labels must be non-empty strings, got {self.labels!r}")
        check_choice("task", self.task, TASKS)
        check_number("batch_size", self.batch_size, low=1, integer=True)
        check_choice("provider", self.provider, PROVIDERS)
        if self.threads is not None:
            check_number("threads", self.threads, low=1, integer=True)
        check_bool("verify", self.verify)


def score_column(label: str) -> str:
    """The column holding one label's probability: ``score_<label>``."""
    return f"{SCORE_PREFIX}{label}"


def prediction_fields(labels: Sequence[str], task: str = TASK_CLASSIFY) -> list[tuple[str, str]]:
    """(name, logical type) of the prediction columns, in output order, for a model with these labels and task.

    One ``score_<label>`` double per label rather than a map column: every label is known from the model's
    manifest before the job starts, flat double columns are what Parquet stores and filters best (column
    statistics, predicate pushdown: ``WHERE score_positive > 0.9``), and they read back alike in pandas, Arrow,
    Spark and SQL engines, whereas a pandas column of dicts becomes an Arrow struct or a map depending on who
    converts it.

    A span model's ``spans`` is one JSON string rather than a list-of-struct column for the same reason: Arrow
    and Spark would each give a nested column their own shape (and nullability of ``score``), whereas a string
    reads back identically everywhere and ``json.loads`` gives exactly what ``Predictor.predict`` returned.
    """
    if task == TASK_SPANS:
        predicted = [("spans", STRING)]
    else:
        predicted = [("label", STRING), ("score", DOUBLE), *((score_column(label), DOUBLE) for label in labels)]
    return [
        *predicted,
        ("truncated", BOOLEAN),
        ("unknown_tokens", INT64),
        ("error", STRING),
    ]


def column_renames(columns: Sequence[str], labels: Sequence[str], task: str = TASK_CLASSIFY) -> dict[str, str]:
    """Input columns that share a name with a prediction column, mapped to the name they are kept under.

    Scoring a labelled file keeps its ``label`` column as ``input_label`` beside the predicted ``label``.

    Raises:
        DataError: the new name is taken too.
    """
    reserved = {name for name, _ in prediction_fields(labels, task)}
    renames = {}
    for column in columns:
        if column in reserved:
            new = f"{RENAMED_PREFIX}{column}"
            if new in columns or new in reserved:
                raise DataError(
                    f"input column '{column}' clashes with the prediction column of that name, and '{new}' is taken "
                    "too; rename one of them"
                )
            renames[column] = new
    return renames


def output_columns(columns: Sequence[str], labels: Sequence[str], task: str = TASK_CLASSIFY) -> list[str]:
    """Every output column name, in order: the (renamed) input columns, then the prediction columns."""
    renames = column_renames(columns, labels, task)
    return [renames.get(column, column) for column in columns] + [name for name, _ in prediction_fields(labels, task)]


def prepare_config(
    model_dir: str | Path,
    columns: Sequence[str],
    *,
    text_column: str = "text",
    batch_size: int = DEFAULT_BATCH_SIZE,
    provider: str = "auto",
    threads: int | None = 1,
    verify: bool = True,
    source: str = "dataset",
) -> PartitionConfig:
    """The driver's half: check the model and the columns before any worker starts, so mistakes fail fast.

    Args:
        model_dir: the ONNX export directory; read and (with ``verify``) hash-checked here, once.
        columns: the input's column names.
        text_column: as in :class:`PartitionConfig`; ``text`` falls back to ``sentence`` as in every reader.
        batch_size, provider, threads, verify: as in :class:`PartitionConfig`.
        source: what the columns belong to, for messages (a file name, or ``"dataset"``).

    Returns:
        The validated settings, with the model's labels and task (they fix the output schema).

    Raises:
        ModelError: not an ONNX export, a file missing or modified.
        DataError: no such text column, or an input column clashes with a prediction column twice over.
        ConfigError: a bad setting.
    """
    from edgesent.artifacts import KIND_ONNX, read_model_dir
    from edgesent.data import pick_text_column

    info = read_model_dir(model_dir, kind=KIND_ONNX, verify=verify)
    column = pick_text_column(Path(source), [str(name) for name in columns], text_column)
    column_renames(columns, info.labels, info.task)
    return PartitionConfig(
        model_dir=info.path.resolve(),  # workers may run in another directory
        text_column=column,
        labels=info.labels,
        task=info.task,
        batch_size=batch_size,
        provider=provider,
        threads=threads,
        verify=verify,
    )


def load_predictor(cfg: PartitionConfig) -> Predictor:
    """The process's predictor for these settings, loaded (and hash-verified) on first use, then reused.

    Raises:
        ModelError: the model cannot be loaded, or its labels or task are not the ones the driver read.
    """
    key = (str(cfg.model_dir.resolve()), cfg.provider, cfg.threads, cfg.verify)
    with _LOCK:  # Ray may run an actor's calls on several threads; load once all the same
        predictor = _PREDICTORS.get(key)
        if predictor is None:
            from edgesent.runtime import Predictor

            predictor = Predictor.load(cfg.model_dir, provider=cfg.provider, threads=cfg.threads, verify=cfg.verify)
            _PREDICTORS[key] = predictor
    if (cfg.labels and tuple(predictor.labels) != cfg.labels) or predictor.task != cfg.task:
        raise ModelError(
            f"{cfg.model_dir}: this worker's model is a {predictor.task} model with labels {predictor.labels}, the "
            f"driver read a {cfg.task} model with {list(cfg.labels)}; every worker must read the same model directory"
        )
    return predictor


def predict_partition(batches: Iterable[pd.DataFrame], cfg: PartitionConfig) -> Iterator[pd.DataFrame]:
    """Predict one partition: for each input DataFrame, the same rows with the prediction columns added.

    The shared body of every engine (Ray Data's actors, Spark's ``mapInPandas``). A row whose text is missing,
    empty, whitespace only or not a string gets ``error`` set and null ``label``/``score`` (``spans``); it never
    fails the partition.

    Args:
        batches: pandas DataFrames holding ``cfg.text_column``.
        cfg: the settings; the predictor is loaded once per process and reused.

    Yields:
        One DataFrame per input DataFrame, rows in input order: the input columns (renamed by
        :func:`column_renames` where they clash) followed by :func:`prediction_fields` for ``cfg.task``.

    Raises:
        DataError: a batch has no ``cfg.text_column``.
        ModelError: the model cannot be loaded (see :func:`load_predictor`).
    """
    predictor = load_predictor(cfg)
    for frame in batches:
        yield _predict_frame(frame, predictor, cfg)


def _predict_frame(frame: pd.DataFrame, predictor: Predictor, cfg: PartitionConfig) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    if cfg.text_column not in frame.columns:
        raise DataError(f"no text column '{cfg.text_column}' (columns: {', '.join(map(str, frame.columns))})")
    texts = [_text_or_none(value) for value in frame[cfg.text_column].tolist()]
    preds = list(predictor.predict_stream(texts, cfg.batch_size))
    labels = list(predictor.labels)
    # Nullable string arrays, so an all-null column is still a string column in Arrow (never Arrow's null type);
    # NaN marks a null double, which Arrow and Spark both read back as null.
    values = _span_values(preds) if cfg.task == TASK_SPANS else _label_values(preds, labels)
    values["truncated"] = np.array([p.truncated for p in preds], dtype=bool)
    values["unknown_tokens"] = np.array([p.unknown_tokens for p in preds], dtype=np.int64)
    values["error"] = pd.array([p.error for p in preds], dtype="string")
    renames = column_renames([str(column) for column in frame.columns], labels, cfg.task)
    inputs = frame.rename(columns=renames) if renames else frame
    return pd.concat([inputs.reset_index(drop=True), pd.DataFrame(values)], axis=1)


def _label_values(preds: Sequence[Prediction], labels: Sequence[str]) -> dict[str, Any]:
    """A classifier's prediction columns: ``label``, ``score`` and one ``score_<label>`` per label."""
    import numpy as np
    import pandas as pd

    nan = float("nan")
    values: dict[str, Any] = {
        "label": pd.array([p.label for p in preds], dtype="string"),
        "score": np.array([nan if p.score is None else p.score for p in preds], dtype=np.float64),
    }
    for label in labels:
        values[score_column(label)] = np.array([p.scores.get(label, nan) for p in preds], dtype=np.float64)
    return values


def _span_values(preds: Sequence[Prediction]) -> dict[str, Any]:
    """A span model's prediction column: ``spans``, each row's spans as a JSON list; null on a row with an error,
    as a classifier's ``label`` is, so "no spans found" (``[]``) and "not predicted" stay apart."""
    import pandas as pd

    rows = [None if p.error is not None else json.dumps(p.spans or [], ensure_ascii=False) for p in preds]
    return {"spans": pd.array(rows, dtype="string")}


def _text_or_none(value: Any) -> Any:
    """A cell as the predictor should see it: a string as is, a missing value (None, NaN, pd.NA) as None."""
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, float) and math.isnan(value):
        return None
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value  # the predictor reports it as "not a string (<type>)"
