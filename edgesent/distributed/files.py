"""Files in, Parquet out: ``edgesent predict MODEL_DIR --input DIR_OR_GLOB --engine ray|spark --output OUT_DIR``.

:func:`predict_files` finds the input files (a directory, a glob or one file, of one format: Parquet, CSV, TSV or
JSONL), checks the model and the text column on the driver before any engine starts, runs the engine, and
writes its Parquet files (``OUT_DIR/predictions/*.parquet``) and an ``edgesent.json`` manifest (model sha256,
engine, rows, errors) into a directory that replaces ``OUT_DIR`` only when everything succeeded.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgesent.config import check_choice, check_number
from edgesent.distributed import ENGINES, require_engine
from edgesent.distributed.partition import DEFAULT_BATCH_SIZE, prepare_config
from edgesent.errors import DataError


logger = logging.getLogger(__name__)

INPUT_FORMATS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
HEADER_FORMATS = ("csv", "tsv")
PREDICTIONS_KIND = "predictions"
# The Parquet files go one level down: readers of a Parquet folder (Spark, pyarrow, pandas, DuckDB) would try to
# read the manifest beside them as Parquet.
PARQUET_DIR = "predictions"
DEFAULT_WORKERS = 2


def find_input_files(inputs: str | Path) -> tuple[str, list[Path]]:
    """The files to score and their format.

    Args:
        inputs: a directory (its ``*.parquet``, ``*.csv``, ``*.tsv`` and ``*.jsonl`` files; other files and
            hidden or ``_``-prefixed ones, such as Spark's ``_SUCCESS``, are skipped), a glob (``data/*.csv``,
            ``lake/**/*.parquet``) or one file.

    Returns:
        (format, sorted files): format is ``"parquet"``, ``"csv"``, ``"tsv"`` or ``"jsonl"``.

    Raises:
        DataError: nothing found, or the files mix formats.
    """
    path = Path(inputs)
    kinds = ", ".join(sorted(set(INPUT_FORMATS)))
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and not p.name.startswith((".", "_")) and p.suffix.lower() in INPUT_FORMATS
        )
        if not files:
            raise DataError(f"{path}: no {kinds} files in this directory")
    elif path.is_file():
        if path.suffix.lower() not in INPUT_FORMATS:
            raise DataError(f"{path}: unknown format '{path.suffix}'; use {kinds}")
        files = [path]
    else:
        matches = sorted(Path(match) for match in glob.glob(str(inputs), recursive=True) if Path(match).is_file())
        if not matches:
            raise DataError(f"{inputs}: no such file or directory, and no file matches it as a glob")
        files = [match for match in matches if match.suffix.lower() in INPUT_FORMATS]
        if not files:
            raise DataError(f"{inputs}: matches {len(matches)} file(s), none of them {kinds}")
    formats = sorted({INPUT_FORMATS[file.suffix.lower()] for file in files})
    if len(formats) > 1:
        raise DataError(
            f"{inputs}: mixes formats ({', '.join(formats)}); score one format per run, e.g. with a glob "
            f"such as {path if path.is_dir() else path.parent}/*.{formats[0]}"
        )
    return formats[0], files


def read_columns(path: Path, fmt: str) -> list[str]:
    """A file's column names: the Parquet schema, the CSV/TSV header, or the keys of the first JSON object.

    Raises:
        DataError: the file is empty, unreadable or its first record is not what its format promises.
    """
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        with open(path, encoding="utf-8-sig", newline="") as handle:
            if fmt == "jsonl":
                line = next((line for line in handle if line.strip()), None)
                first = json.loads(line) if line is not None else None
                if not isinstance(first, dict):
                    raise DataError(f"{path}: the first line is not a JSON object; is this a JSON Lines file?")
                return list(first)
            delimiter = "\t" if fmt == "tsv" else ","
            header = next(csv.reader(handle, delimiter=delimiter, quoting=csv.QUOTE_NONE if fmt == "tsv" else 0), None)
    # ValueError: JSON, UTF-8 or a Parquet footer (ArrowInvalid); RecursionError: JSON nested too deep to parse.
    except (OSError, ValueError, RecursionError) as err:
        raise DataError(f"{path}: cannot read its columns ({err})") from err
    if not header:
        raise DataError(f"{path}: empty file, no header")
    return header


def header_groups(files: Sequence[Path], fmt: str) -> dict[tuple[str, ...], list[Path]]:
    """CSV/TSV files grouped by their header (first file's header first), once every header names the same columns.

    Each file's header is read (one line), because a CSV reader given one schema for many files applies it by
    position: a file with its columns in another order would have the wrong column scored as text. Files are
    matched by name instead (see :func:`edgesent.distributed.spark_engine.read_files`); a file with other columns
    is refused, rather than read with nulls where its columns are missing.

    Raises:
        DataError: a file's header is unreadable, or names other columns than the first file's (both named).
    """
    groups: dict[tuple[str, ...], list[Path]] = {}
    for file in files:
        groups.setdefault(tuple(read_columns(file, fmt)), []).append(file)
    first, *others = groups
    for header in others:
        if sorted(header) != sorted(first):
            raise DataError(
                f"{groups[header][0]}: its columns ({', '.join(header)}) are not those of {files[0]} "
                f"({', '.join(first)}); score files with the same columns together"
            )
    return groups


def input_columns(files: Sequence[Path], fmt: str) -> list[str]:
    """The input's column names: the first file's, after checking (CSV/TSV) that every file has the same ones."""
    if fmt in HEADER_FORMATS:
        return list(next(iter(header_groups(files, fmt))))
    return read_columns(files[0], fmt)


def predict_files(
    model_dir: str | Path,
    inputs: str | Path,
    out_dir: str | Path,
    *,
    engine: str,
    text_column: str = "text",
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = DEFAULT_WORKERS,
    provider: str = "auto",
    threads: int | None = 1,
    verify: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score every text of a folder or glob of files with a Ray or Spark job and write Parquet.

    The extra, the input files (every CSV/TSV header), their text column, the model (hash-checked) and the output
    directory are all checked before the engine starts, so a mistake costs a second, not a cluster start-up.

    Args:
        model_dir: the ONNX export directory.
        inputs: a directory, a glob or a file (see :func:`find_input_files`).
        out_dir: the output directory, written atomically: ``edgesent.json`` and the Parquet files under
            ``predictions/`` (read them with ``pandas.read_parquet(out_dir / "predictions")``).
        engine: ``"ray"`` or ``"spark"``.
        text_column: the text column (default ``"text"``, falling back to ``"sentence"``).
        batch_size: texts per ONNX Runtime call (default 32).
        workers: Ray actors, or Spark local cores (default 2). Ray joins the cluster named by ``RAY_ADDRESS``
            and Spark an active session where there is one; otherwise each runs on this machine.
        provider: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"openvino"``, as in ``Predictor.load``.
        threads: ONNX Runtime threads per worker (default 1).
        verify: hash-check the model on the driver and on every worker (default True).
        overwrite: replace ``out_dir`` if it is an edgesent output (default False).

    Returns:
        The summary recorded in the manifest: rows, errors (message -> count), seconds, engine, files...

    Raises:
        MissingDependencyError: the engine's extra is not installed.
        ModelError, DataError, ConfigError: a bad model, input, setting or output directory.
    """
    from edgesent.artifacts import atomic_output_dir, manifest_sha256, write_manifest

    check_choice("engine", engine, ENGINES)
    check_number("workers", workers, low=1, integer=True)
    require_engine(engine)
    fmt, files = find_input_files(inputs)
    columns = input_columns(files, fmt)
    cfg = prepare_config(
        model_dir,
        columns,
        text_column=text_column,
        batch_size=batch_size,
        provider=provider,
        threads=threads,
        verify=verify,
        source=str(files[0]),
    )
    started = time.perf_counter()
    with atomic_output_dir(Path(out_dir), overwrite, [cfg.model_dir, *files], PREDICTIONS_KIND) as tmp:
        if engine == "ray":
            from edgesent.distributed import ray_engine

            ray_engine.run_files(files, fmt, columns, cfg, tmp / PARQUET_DIR, workers)
        else:
            from edgesent.distributed import spark_engine

            spark_engine.run_files(files, fmt, cfg, tmp / PARQUET_DIR, workers)  # reads each file's header
        rows, errors = count_rows(tmp / PARQUET_DIR)
        summary = {
            "engine": engine,
            "workers": workers,
            "model_dir": str(cfg.model_dir),
            "model_sha256": manifest_sha256(cfg.model_dir),
            "task": cfg.task,
            "labels": list(cfg.labels),
            "inputs": [str(file.resolve()) for file in files],
            "input_format": fmt,
            "text_column": cfg.text_column,
            "rows": rows,
            "predicted": rows - sum(errors.values()),
            "errors": errors,
            "parquet_dir": PARQUET_DIR,
            "seconds": round(time.perf_counter() - started, 3),
        }
        write_manifest(tmp, PREDICTIONS_KIND, summary)  # last: its file table covers every Parquet file
    logger.info("%s: %d rows scored with %s in %.1f s", out_dir, rows, engine, summary["seconds"])
    return summary


def count_rows(out_dir: Path) -> tuple[int, dict[str, int]]:
    """Rows of the Parquet files in ``out_dir`` and the count of each ``error`` message (reads that column only)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    table = pads.dataset(str(out_dir), format="parquet").to_table(columns=["error"])  # skips ".*" and "_*" files
    counts = pc.value_counts(table.column("error").drop_null())
    errors = {str(item["values"]): int(item["counts"]) for item in counts.to_pylist()}
    return table.num_rows, dict(sorted(errors.items()))
