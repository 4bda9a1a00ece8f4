"""Distributed batch prediction: the torch-free predictor run where the data lives (Ray Data, Spark).

Both engines call one per-partition function, :func:`edgesent.distributed.partition.predict_partition`, built on
``Predictor.predict_stream``, so their rows are the single-process predictor's rows. Each is an optional extra:

- ``predict_dataset(ds, model_dir, ...)`` (``pip install 'edgesent[ray]'``): a Ray Dataset mapped through a pool
  of actors that each load the predictor once;
- ``predict_dataframe(df, model_dir, ...)`` (``pip install 'edgesent[spark]'``): a Spark DataFrame through
  ``mapInPandas``, one predictor per Python worker process;
- ``predict_files(model_dir, inputs, out_dir, engine=...)``: a folder or glob of Parquet, CSV, TSV or JSONL files in,
  a folder of Parquet out (``edgesent predict --engine``).

Importing this package imports neither ray, pyspark, pandas nor torch; names resolve on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from edgesent._imports import require_extra


ENGINES = ("ray", "spark")
EXTRAS = {"ray": "pip install 'edgesent[ray]'", "spark": "pip install 'edgesent[spark]'"}
_ENGINE_MODULES = {"ray": ("ray", "ray.data", "pandas", "pyarrow"), "spark": ("pyspark", "pandas", "pyarrow")}

_LAZY = {
    "predict_dataset": "edgesent.distributed.ray_engine",
    "predict_dataframe": "edgesent.distributed.spark_engine",
    "predict_files": "edgesent.distributed.files",
    "predict_partition": "edgesent.distributed.partition",
    "PartitionConfig": "edgesent.distributed.partition",
}

__all__ = [
    "ENGINES",
    "PartitionConfig",
    "predict_dataframe",
    "predict_dataset",
    "predict_files",
    "predict_partition",
    "require_engine",
]


def require_engine(engine: str) -> None:
    """Raise MissingDependencyError, naming the pip command, unless the engine's extra is importable.

    Args:
        engine: ``"ray"`` or ``"spark"``.

    Raises:
        MissingDependencyError: a module of the extra is missing.
    """
    require_extra(f"the {engine} engine", engine, _ENGINE_MODULES[engine], EXTRAS[engine])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgesent.distributed' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
