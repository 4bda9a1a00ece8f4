"""Spark engine: a DataFrame through ``mapInPandas``, one predictor per Python worker process.

Needs ``pip install 'edgesent[spark]'`` and Java 17 or 21 (pyspark 4). pyspark is imported inside the functions,
after the extra is checked, so a missing extra is one line naming the install command. Spark reuses its Python
workers between tasks (``spark.python.worker.reuse``, on by default), so the per-process predictor cache of
:mod:`edgesent.distributed.partition` loads the model once per worker, not once per partition.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgesent.distributed import require_engine
from edgesent.distributed.files import header_groups
from edgesent.distributed.partition import (
    BOOLEAN,
    DEFAULT_BATCH_SIZE,
    DOUBLE,
    INT64,
    STRING,
    PartitionConfig,
    column_renames,
    predict_partition,
    prediction_fields,
    prepare_config,
)


if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

logger = logging.getLogger(__name__)


class _PartitionFunction:
    """The function ``mapInPandas`` runs: a plain class, so Spark pickles it by reference to this module.

    With ``shipped``, the model directory was sent with ``SparkContext.addFile`` and is looked up where the worker
    keeps it; otherwise ``cfg.model_dir`` is read from storage every worker sees.
    """

    def __init__(self, cfg: PartitionConfig, shipped: bool) -> None:
        self.cfg = cfg
        self.shipped = shipped

    def __call__(self, batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        cfg = self.cfg
        if self.shipped:
            from pyspark import SparkFiles

            cfg = dataclasses.replace(cfg, model_dir=Path(SparkFiles.get(cfg.model_dir.name)))
        yield from predict_partition(batches, cfg)


def output_schema(schema: StructType, labels: Sequence[str], task: str) -> StructType:
    """The input schema (clashing names renamed to ``input_<name>``) plus the task's prediction columns."""
    from pyspark.sql.types import BooleanType, DoubleType, LongType, StringType, StructField, StructType

    types = {STRING: StringType(), DOUBLE: DoubleType(), BOOLEAN: BooleanType(), INT64: LongType()}
    renames = column_renames(schema.names, labels, task)
    renamed = [StructField(renames.get(f.name, f.name), f.dataType, f.nullable, f.metadata) for f in schema.fields]
    predicted = [StructField(name, types[kind], True) for name, kind in prediction_fields(labels, task)]
    return StructType(renamed + predicted)


def predict_dataframe(
    df: DataFrame,
    model_dir: str | Path,
    *,
    text_column: str = "text",
    batch_size: int = DEFAULT_BATCH_SIZE,
    provider: str = "auto",
    threads: int | None = 1,
    verify: bool = True,
    ship: bool = False,
) -> DataFrame:
    """Add predictions to a Spark DataFrame: its rows with ``label``, ``score``, ``score_<label>`` (a span model:
    ``spans``) ... ``error``.

    The model is read and hash-checked on the driver before anything runs; each executor's Python worker then
    loads it once (hash-checked again there) and reuses it. Lazy, like every Spark transformation.

    Args:
        df: the DataFrame; ``text_column`` holds the texts.
        model_dir: the ONNX export directory.
        text_column: the text column (default ``"text"``, falling back to ``"sentence"``).
        batch_size: texts per ONNX Runtime call (default 32).
        provider: ``"auto"`` (default), ``"cpu"`` or ``"cuda"``.
        threads: ONNX Runtime threads per Python worker (default 1: Spark runs one worker per task slot).
        verify: hash-check the model on the driver and on every worker (default True).
        ship: send the model directory to every executor with ``SparkContext.addFile`` (default False: every
            executor reads ``model_dir`` from shared storage, e.g. a mounted volume).

    Returns:
        The mapped DataFrame (see :mod:`edgesent.distributed.partition` for the columns).

    Raises:
        MissingDependencyError: the ``spark`` extra is not installed.
        ModelError, DataError, ConfigError: as :func:`edgesent.distributed.partition.prepare_config`.
    """
    require_engine("spark")
    cfg = prepare_config(
        model_dir,
        df.columns,
        text_column=text_column,
        batch_size=batch_size,
        provider=provider,
        threads=threads,
        verify=verify,
    )
    if ship:
        df.sparkSession.sparkContext.addFile(str(cfg.model_dir), recursive=True)
    return df.mapInPandas(_PartitionFunction(cfg, ship), output_schema(df.schema, cfg.labels, cfg.task))


def start_local(workers: int, memory: str = "1g") -> tuple[SparkSession, bool]:
    """The active SparkSession, or a local one with ``workers`` cores for one job.

    The local session binds to 127.0.0.1, has no UI, uses Arrow for pandas exchange and runs its Python workers
    on this interpreter (``PYSPARK_PYTHON``, unless already set).

    Returns:
        (session, True when this call created it and the caller should stop it).
    """
    require_engine("spark")
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master(f"local[{workers}]")
        .appName("edgesent-predict")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.memory", memory)
        .config("spark.sql.shuffle.partitions", str(workers))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session, True


def read_files(spark: SparkSession, files: Sequence[Path], fmt: str) -> DataFrame:
    """A DataFrame of Parquet, CSV, TSV or JSONL files (one format), read as the single-process reader reads them.

    CSV and TSV columns are all strings; CSV fields may hold quoted line breaks (``""`` escapes a quote); TSV has
    no quoting, as in :func:`edgesent.data.csv_quoting`. Spark applies a CSV schema by position, so files are read
    in groups of one header each (:func:`edgesent.distributed.files.header_groups`) and joined by column name:
    a file with its columns in another order is read right, and the columns come in the first file's order.
    """
    paths = [str(path) for path in files]
    if fmt == "parquet":
        return spark.read.parquet(*paths)
    if fmt == "jsonl":
        return spark.read.json(paths)
    frames = [_read_csv(spark, header, group, fmt) for header, group in header_groups(files, fmt).items()]
    return functools.reduce(lambda left, right: left.unionByName(right), frames)


def _read_csv(spark: SparkSession, header: Sequence[str], files: Sequence[Path], fmt: str) -> DataFrame:
    """CSV or TSV files that share this header, every column a string."""
    from pyspark.sql.types import StringType, StructField, StructType

    schema = StructType([StructField(name, StringType(), True) for name in header])
    reader = spark.read.schema(schema).option("header", "true")
    paths = [str(path) for path in files]
    if fmt == "tsv":
        return reader.option("sep", "\t").option("quote", "").csv(paths)
    return reader.option("multiLine", "true").option("escape", '"').csv(paths)


def run_files(files: Sequence[Path], fmt: str, cfg: PartitionConfig, out_dir: Path, workers: int) -> None:
    """Read ``files``, predict on ``workers`` cores and write Parquet files into ``out_dir``."""
    spark, started = start_local(workers)
    try:
        df = read_files(spark, files, fmt)
        if df.rdd.getNumPartitions() < workers:  # one small file is one partition: one core would do all the work
            df = df.repartition(workers)
        predicted = df.mapInPandas(_PartitionFunction(cfg, False), output_schema(df.schema, cfg.labels, cfg.task))
        predicted.write.mode("errorifexists").parquet(str(out_dir))
    finally:
        if started:
            spark.stop()
