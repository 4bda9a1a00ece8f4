"""Distributed batch prediction: single-process ``edgesent predict`` against Ray Data and Spark (issue 13).

On one machine, scores the first ``--rows`` texts of ``--data`` (SST-2 ``train.tsv``: 67k texts) with ``--model``
(the int8 export) four ways, and reports texts/s for each:

1. ``single-1t``: ``edgesent predict --input texts.csv --json --output ... --threads 1``: the per-core rate;
2. ``single``: the same with ``--threads WORKERS``: one process on every core the engines get;
3. ``ray`` and ``spark``: ``edgesent predict --input texts.parquet --engine E --workers WORKERS --output DIR``,
   end to end (start-up of the engine included), each in a fresh process;
4. ``ray-warm`` and ``spark-warm``: in this process, the engine started and warmed up on 256 rows first, then
   the whole job timed (``predict_dataset``/``predict_dataframe`` + Parquet write): the engine's steady state.

Engine overhead = single-process texts/s (``single``, same cores) / engine texts/s: 1.0 is free, 1.25 means the
engine needs 25% more time for the same texts. Then a paper estimate of the wall time for ``--target-rows``
reviews on ``--nodes`` nodes of ``--cores-per-node`` cores, from the measured per-core rate; the assumptions are
written next to the figure.

Run on a quiet machine (every run is timed once, after a warm-up where stated)::

    python bench/distributed_predict.py --model models/sst2-minilm-int8 --data ../shared/data/sst2/train.tsv \\
        --out bench/results/distributed_predict

Proof run on a tiny model: ``--rows 300``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


WARMUP_ROWS = 256


def _texts(path: Path, rows: int | None) -> list[str]:
    from edgesent.data import iter_records

    texts = []
    for record in iter_records(path, strict=False):
        if record.error is None:
            texts.append(record.text)
        if rows is not None and len(texts) >= rows:
            break
    return texts


def _cli(args: list[str]) -> float:
    """Wall seconds of one ``edgesent`` command in a fresh process (interpreter start included)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgesent", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _warm_ray(model: Path, parquet: Path, out: Path, workers: int) -> float:
    import ray

    from edgesent.distributed.ray_engine import BLOCKS_PER_WORKER, predict_dataset, start_local

    start_local(workers)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        head = ray.data.read_parquet(str(parquet)).limit(WARMUP_ROWS)
        predict_dataset(head, model, concurrency=workers).materialize()
        started = time.perf_counter()
        lake = ray.data.read_parquet(str(parquet)).repartition(workers * BLOCKS_PER_WORKER)  # as the CLI splits it
        predict_dataset(lake, model, concurrency=workers).write_parquet(str(out))
        return time.perf_counter() - started
    finally:
        ray.shutdown()


def _warm_spark(model: Path, parquet: Path, out: Path, workers: int) -> float:
    from edgesent.distributed.spark_engine import predict_dataframe, start_local

    spark, _ = start_local(workers)
    try:
        predict_dataframe(spark.read.parquet(str(parquet)).limit(WARMUP_ROWS), model).collect()
        started = time.perf_counter()
        lake = spark.read.parquet(str(parquet)).repartition(workers)  # as the CLI splits it
        predict_dataframe(lake, model).write.parquet(str(out))
        return time.perf_counter() - started
    finally:
        spark.stop()


def _mean_tokens(model: Path, texts: list[str]) -> tuple[float, int]:
    from edgesent.runtime import Predictor

    predictor = Predictor.load(model, provider="cpu", threads=1)
    sample = texts[:2000]
    counts = [int(predictor.encode(sample[i : i + 64])["attention_mask"].sum()) for i in range(0, len(sample), 64)]
    return sum(counts) / len(sample), predictor.max_length


def _estimate(args: argparse.Namespace, rates: dict[str, float], mean_tokens: float, max_length: int) -> dict:
    """Wall time for ``target_rows`` reviews on the cluster, from the per-core rate, with its assumptions."""
    review_tokens = min(args.review_tokens, max_length)
    per_core = rates["single-1t"] * mean_tokens / review_tokens  # reviews/s on one core
    engine = (
        "ray-warm" if "ray-warm" in rates else next((e for e in ("spark-warm", "ray", "spark") if e in rates), None)
    )
    efficiency = min(1.0, rates[engine] / (args.workers * rates["single-1t"])) if engine else 1.0
    cores = args.nodes * args.cores_per_node
    seconds = args.target_rows / (per_core * cores * efficiency)
    return {
        "target_rows": args.target_rows,
        "nodes": args.nodes,
        "cores_per_node": args.cores_per_node,
        "per_core_texts_per_s_measured": round(rates["single-1t"], 1),
        "mean_tokens_measured": round(mean_tokens, 1),
        "review_tokens_assumed": review_tokens,
        "per_core_reviews_per_s": round(per_core, 1),
        "engine_efficiency": round(efficiency, 3),
        "efficiency_from": engine,
        "wall_s": round(seconds, 1),
        "wall_h": round(seconds / 3600, 2),
        "assumptions": [
            (
                f"each of the {cores} cores runs one worker at the per-core rate measured here with --threads 1 "
                "(the cluster's cores are as fast as this machine's)"
            ),
            (
                f"a review averages {review_tokens} tokens (truncated at max_length {max_length}) against "
                f"{mean_tokens:.1f} measured here, and cost grows linearly with tokens (attention's quadratic term "
                "is small at these lengths; it makes long reviews somewhat slower than this)"
            ),
            (
                f"the engine keeps the efficiency measured here ({efficiency:.2f} of ideal, from {engine}) at "
                f"{args.nodes} nodes: reading, shuffling nothing, writing Parquet; data already split into at least "
                f"{cores} partitions"
            ),
            "cluster start-up, model shipping and straggler tails are not included (minutes, not hours)",
        ],
    }


def _markdown(result: dict) -> str:
    lines = [
        "# Distributed batch prediction",
        "",
        (
            f"{result['rows']} texts of `{result['data']}`, model `{result['model']}`, {result['workers']} workers, "
            f"{result['machine']['cpus']} CPUs ({result['machine']['platform']})."
        ),
        "",
        "| run | seconds | texts/s | overhead vs single |",
        "|---|---:|---:|---:|",
    ]
    for name, run in result["runs"].items():
        overhead = run.get("overhead")
        lines.append(
            f"| {name} | {run['seconds']:.2f} | {run['texts_per_s']:.1f} | {'' if overhead is None else overhead} |"
        )
    est = result["estimate"]
    lines += [
        "",
        f"## Paper estimate: {est['target_rows']:.0e} reviews on {est['nodes']} nodes x {est['cores_per_node']} cores",
        "",
        (
            f"**{est['wall_h']} h** ({est['wall_s']} s) at {est['per_core_reviews_per_s']} reviews/s per core and "
            f"{est['engine_efficiency']} engine efficiency. Assumes:"
        ),
        "",
        *(f"- {item}" for item in est["assumptions"]),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="ONNX export directory (the int8 model)")
    parser.add_argument("--data", type=Path, required=True, help="CSV/TSV/JSONL of texts (SST-2 train.tsv)")
    parser.add_argument("--rows", type=int, default=None, help="score the first N texts (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors / Spark cores, and single's threads")
    parser.add_argument("--engines", default="ray,spark", help="comma-separated: ray, spark")
    parser.add_argument("--no-warm", action="store_true", help="skip the in-process warm-engine runs")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    parser.add_argument("--target-rows", type=float, default=1e8)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--cores-per-node", type=int, default=16)
    parser.add_argument("--review-tokens", type=int, default=128, help="assumed mean tokens of a review")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    engines = [engine for engine in args.engines.split(",") if engine]

    texts = _texts(args.data, args.rows)
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="edgesent-bench-") as work_dir:
        work = Path(work_dir)
        with open(work / "texts.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text"])
            writer.writerows([text] for text in texts)
        import pandas as pd

        pd.DataFrame({"text": texts}).to_parquet(work / "lake.parquet")
        model = str(args.model)
        for name, threads in (("single-1t", 1), ("single", args.workers)):
            cmd = ["predict", model, "--input", str(work / "texts.csv"), "--json", "--output", str(work / "o.jsonl")]
            cmd += ["--overwrite"]  # the second single-process row writes the same file again
            runs[name] = {"seconds": _cli([*cmd, "--threads", str(threads)])}
        for engine in engines:
            out = ["--output", str(work / f"out-{engine}"), "--overwrite"]
            cmd = ["predict", model, "--input", str(work / "lake.parquet"), "--engine", engine, *out]
            runs[engine] = {"seconds": _cli([*cmd, "--workers", str(args.workers)])}
            if not args.no_warm:
                warm = _warm_ray if engine == "ray" else _warm_spark
                runs[f"{engine}-warm"] = {
                    "seconds": warm(args.model, work / "lake.parquet", work / f"w-{engine}", args.workers)
                }
    for name, run in runs.items():
        run["texts_per_s"] = round(len(texts) / run["seconds"], 1)
        if not name.startswith("single"):
            run["overhead"] = round(runs["single"]["texts_per_s"] / run["texts_per_s"], 3)
    mean_tokens, max_length = _mean_tokens(args.model, texts)
    rates = {name: run["texts_per_s"] for name, run in runs.items()}
    result = {
        "model": model,
        "data": str(args.data),
        "rows": len(texts),
        "workers": args.workers,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "runs": runs,
        "estimate": _estimate(args, rates, mean_tokens, max_length),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
