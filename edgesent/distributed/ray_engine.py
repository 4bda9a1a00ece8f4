"""Ray Data engine: a Dataset mapped through a pool of actors, each loading the predictor once.

Needs ``pip install 'edgesent[ray]'``. ray is imported inside the functions, after the extra is checked, so a
missing extra is one line naming the install command.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesent.config import check_number
from edgesent.distributed import require_engine
from edgesent.distributed.partition import (
    BOOLEAN,
    DEFAULT_BATCH_SIZE,
    DOUBLE,
    INT64,
    STRING,
    PartitionConfig,
    load_predictor,
    predict_partition,
    prediction_fields,
    prepare_config,
)
from edgesent.errors import ConfigError


if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import ray.data

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 2
DEFAULT_ROWS_PER_BATCH = 1024


class PredictActor:
    """A Ray Data actor: loads (and hash-verifies) the predictor once in ``__init__``, then predicts each batch.

    Returns Arrow tables with the prediction columns' types set, so a batch whose rows all failed still has a
    string ``label`` column (pandas would hand Ray an all-null column of no type).
    """

    def __init__(self, cfg: PartitionConfig) -> None:
        self._cfg = cfg
        load_predictor(cfg)  # now, once per actor, rather than inside the first batch

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        (frame,) = predict_partition([batch], self._cfg)
        return _to_arrow(frame, self._cfg.labels, self._cfg.task)


def _to_arrow(frame: pd.DataFrame, labels: Sequence[str], task: str) -> pa.Table:
    import pyarrow as pa

    types = {STRING: pa.string(), DOUBLE: pa.float64(), BOOLEAN: pa.bool_(), INT64: pa.int64()}
    table = pa.Table.from_pandas(frame, preserve_index=False)  # NaN -> null in float columns
    for name, kind in prediction_fields(labels, task):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, table.column(index).cast(types[kind]))
    return table


def predict_dataset(
    ds: ray.data.Dataset,
    model_dir: str | Path,
    *,
    text_column: str = "text",
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    rows_per_batch: int = DEFAULT_ROWS_PER_BATCH,
    provider: str = "auto",
    threads: int | None = 1,
    verify: bool = True,
) -> ray.data.Dataset:
    """Add predictions to a Ray Dataset: its rows with ``label``, ``score``, ``score_<label>`` (a span model:
    ``spans``) ... ``error``.

    The model is read and hash-checked here, on the driver, before anything runs; then ``concurrency`` actors
    each load it once (hash-checked again where they run) and reuse it. Lazy, like every Ray Data transform:
    nothing runs until the result is consumed or written.

    Args:
        ds: the dataset; ``text_column`` holds the texts.
        model_dir: the ONNX export directory, on storage every node can read.
        text_column: the text column (default ``"text"``, falling back to ``"sentence"``).
        batch_size: texts per ONNX Runtime call (default 32).
        concurrency: number of actors (default 2); each reserves ``threads`` CPUs (1 when threads is None).
        rows_per_batch: rows handed to an actor per call (default 1024; Ray's ``map_batches`` batch_size).
        provider: ``"auto"`` (default), ``"cpu"`` or ``"cuda"``.
        threads: ONNX Runtime threads per actor (default 1).
        verify: hash-check the model on the driver and in every actor (default True).

    Returns:
        The mapped dataset (see :mod:`edgesent.distributed.partition` for the columns).

    Raises:
        MissingDependencyError: the ``ray`` extra is not installed.
        ModelError, DataError, ConfigError: as :func:`edgesent.distributed.partition.prepare_config`; or
            ConfigError: the running cluster cannot start one actor (see :func:`check_cluster`).
    """
    require_engine("ray")
    check_number("concurrency", concurrency, low=1, integer=True)
    check_number("rows_per_batch", rows_per_batch, low=1, integer=True)
    schema = ds.schema()
    cfg = prepare_config(
        model_dir,
        list(schema.names) if schema is not None else [],
        text_column=text_column,
        batch_size=batch_size,
        provider=provider,
        threads=threads,
        verify=verify,
    )
    import ray

    if ray.is_initialized():  # a Dataset made without ray.init() starts Ray when it runs, with every local CPU
        check_cluster(cfg.threads or 1)
    return _map(ds, cfg, concurrency, rows_per_batch)


def _map(ds: ray.data.Dataset, cfg: PartitionConfig, concurrency: int, rows_per_batch: int) -> ray.data.Dataset:
    from ray.data import ActorPoolStrategy

    return ds.map_batches(
        PredictActor,
        fn_constructor_args=(cfg,),
        batch_size=rows_per_batch,
        batch_format="pandas",
        compute=ActorPoolStrategy(size=concurrency),
        num_cpus=cfg.threads or 1,
    )


# Blocks per actor when the CLI reads files: more than one, so a slow block does not leave an actor idle at the end.
BLOCKS_PER_WORKER = 4


def local_cpus(workers: int, threads: int) -> int:
    """Logical CPUs of a local cluster for ``workers`` actors of ``threads`` CPUs each: all of them, plus one for
    the read and write tasks, so every actor can start and the actors never hold every CPU while the tasks that
    feed them wait (fewer and an actor stays pending forever)."""
    return workers * threads + 1


def start_local(workers: int, threads: int = 1) -> bool:
    """Start Ray for one job on this machine, unless it is running or ``RAY_ADDRESS`` names a cluster.

    Local mode gets :func:`local_cpus` logical CPUs. No dashboard, no usage statistics. A running cluster (joined,
    or already started in this process) is checked instead: see :func:`check_cluster`.

    Returns:
        True when this call started Ray (and the caller should shut it down).

    Raises:
        ConfigError: the running cluster cannot place one actor of ``threads`` CPUs.
    """
    require_engine("ray")
    import ray

    if ray.is_initialized():
        check_cluster(threads)
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    settings: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if not os.environ.get("RAY_ADDRESS"):
        ray.init(num_cpus=local_cpus(workers, threads), include_dashboard=False, **settings)
        return True
    ray.init(**settings)
    check_cluster(threads)  # a joined cluster may autoscale: a warning there, never a refusal
    return True


def check_cluster(threads: int) -> None:
    """Refuse a running cluster where no actor can start, which Ray Data would otherwise wait on forever.

    An actor reserves ``threads`` CPUs on one node; with no alive node that large, and no CPU left beside it for
    the read tasks, the job never starts. Checked against the nodes up now: a cluster named by ``RAY_ADDRESS``, or
    one with no CPU at all yet (a head node that only schedules, as KubeRay's often is), may have an autoscaler
    that adds nodes once actors wait, so there it is a warning, not a refusal.

    Raises:
        ConfigError: a cluster with CPUs and without ``RAY_ADDRESS`` where no node has ``threads`` CPUs, or with
            no CPU beside one actor's.
    """
    import ray

    nodes = [node.get("Resources", {}).get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")]
    largest, total = max(nodes, default=0.0), sum(nodes)
    if largest >= threads and total >= threads + 1:
        return
    problem = (
        f"the Ray cluster has {total:g} CPU(s), at most {largest:g} on one node; each actor needs {threads} "
        "on one node (--threads) plus 1 for reading"
    )
    if os.environ.get("RAY_ADDRESS") or total == 0:
        logger.warning("%s: the job waits until the cluster grows (an autoscaler) or forever", problem)
        return
    raise ConfigError(f"{problem}: lower --threads or use a larger cluster")


def read_files(files: Sequence[Path], fmt: str, columns: Sequence[str]) -> ray.data.Dataset:
    """A Dataset of Parquet, CSV, TSV or JSONL files (one format), read as the single-process reader reads them.

    CSV and TSV columns are all strings (a text column of digits stays text); CSV fields may hold quoted line
    breaks; TSV has no quoting, as in :func:`edgesent.data.csv_quoting`.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray.data

    paths = [str(path) for path in files]
    if fmt == "parquet":
        return ray.data.read_parquet(paths)
    if fmt == "jsonl":
        return ray.data.read_json(paths, lines=True)
    parse = (
        pacsv.ParseOptions(delimiter="\t", quote_char=False)
        if fmt == "tsv"
        else pacsv.ParseOptions(newlines_in_values=True)
    )
    convert = pacsv.ConvertOptions(column_types={name: pa.string() for name in columns}, strings_can_be_null=False)
    return ray.data.read_csv(paths, parse_options=parse, convert_options=convert)


def run_files(
    files: Sequence[Path],
    fmt: str,
    columns: Sequence[str],
    cfg: PartitionConfig,
    out_dir: Path,
    workers: int,
    rows_per_batch: int = DEFAULT_ROWS_PER_BATCH,
) -> None:
    """Read ``files``, predict with ``workers`` actors and write Parquet files into ``out_dir``."""
    import ray

    started = start_local(workers, cfg.threads or 1)
    try:
        # One file reads as one block, which feeds one actor: split it so every actor gets work.
        ds = read_files(files, fmt, columns).repartition(workers * BLOCKS_PER_WORKER)
        _map(ds, cfg, workers, rows_per_batch).write_parquet(str(out_dir))
    finally:
        if started:
            ray.shutdown()
