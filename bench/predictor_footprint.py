"""Footprint and overhead of the embeddable predictor (issue 4's closing benchmark).

Measures, for an ONNX export directory (the int8 SST-2 MiniLM) and the PyTorch model it came from:

1. Cold start and peak RSS, each in a fresh child process, one child at a time, interleaved across variants:
   - ``predictor``: ``edgesent.runtime.Predictor.load(dir).predict(text)``;
   - ``bare``: tokenizers by hand and a session from ``edgesent.sessions.create_session`` (the predictor's
     settings), the floor the predictor is measured against;
   - ``pipeline``: Transformers ``pipeline("text-classification")`` on the PyTorch model.
   Cold start = wall time from spawning the child to the child reporting its first prediction (interpreter
   start, imports, model load, first call). Peak RSS = the child's ``ru_maxrss`` from ``os.wait4``.
2. Per-text latency at batch 1 on real texts, one calling thread: end to end (``predictor.predict(text)``:
   tokenize, pad, run, softmax, Prediction) against the bare ``session.run`` of the same session on inputs
   tokenized beforehand. The two are interleaved text by text, alternating which goes first, so drift in
   clock speed or background load hits both alike.

Goals (issue 4): cold start <= 0.25 s, peak RSS <= 120 MiB, end to end <= 1.05x the bare run.

Usage (on a quiet machine)::

    python bench/predictor_footprint.py --onnx-dir models/sst2-minilm-int8 --model-dir models/sst2-minilm \\
        --data ../shared/data/sst2/dev.tsv --out bench/results/predictor_footprint.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any


GOALS = {"cold_start_s": 0.25, "peak_rss_mib": 120.0, "e2e_over_bare": 1.05}
FIRST_TEXT = "it 's a charming and often affecting journey ."

# Each child prints one JSON line once its first prediction is done, then exits. Timings inside the child are
# for the breakdown only; the cold start itself is measured by the parent from spawn to that line.
_CHILDREN = {
    "predictor": """
        import json, sys, time
        t0 = time.perf_counter()
        from edgesent.runtime import Predictor
        t1 = time.perf_counter()
        predictor = Predictor.load(sys.argv[1], provider="cpu", threads=THREADS)
        t2 = time.perf_counter()
        label = predictor.predict(sys.argv[3]).label
        t3 = time.perf_counter()
        heavy = [m for m in ("torch", "transformers") if m in sys.modules]
        print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_predict_s": t3 - t2, "label": label,
                          "heavy_modules": heavy}), flush=True)
    """,
    "bare": """
        import json, sys, time
        t0 = time.perf_counter()
        import numpy as np
        from tokenizers import Tokenizer
        from edgesent.artifacts import MANIFEST_NAME, ONNX_FILE_NAME, TOKENIZER_FILE_NAME
        from edgesent.sessions import create_session
        t1 = time.perf_counter()
        manifest = json.load(open(sys.argv[1] + "/" + MANIFEST_NAME))
        tokenizer = Tokenizer.from_file(sys.argv[1] + "/" + TOKENIZER_FILE_NAME)
        tokenizer.no_padding()
        tokenizer.enable_truncation(manifest["max_length"])
        # The predictor's own session settings, so "bare" differs from "predictor" only by the predictor's code.
        session = create_session(sys.argv[1] + "/" + manifest.get("onnx_file", ONNX_FILE_NAME), "cpu", THREADS)
        names = [i.name for i in session.get_inputs()]
        t2 = time.perf_counter()
        enc = tokenizer.encode(sys.argv[3])
        arrays = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
        logits = session.run(None, {n: np.array([arrays[n]], dtype=np.int64) for n in names})[0]
        label = manifest["labels"][int(logits.argmax())]
        t3 = time.perf_counter()
        print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_predict_s": t3 - t2, "label": label}),
              flush=True)
    """,
    "pipeline": """
        import json, sys, time
        t0 = time.perf_counter()
        import torch
        from transformers import pipeline
        t1 = time.perf_counter()
        if THREADS:
            torch.set_num_threads(THREADS)
        classifier = pipeline("text-classification", model=sys.argv[2], device=-1)
        t2 = time.perf_counter()
        label = classifier(sys.argv[3])[0]["label"]
        t3 = time.perf_counter()
        print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_predict_s": t3 - t2, "label": label}),
              flush=True)
    """,
}


def run_child(variant: str, onnx_dir: Path, model_dir: Path | None, threads: int | None) -> dict[str, Any]:
    """Spawn one child, time spawn -> first prediction, and read its peak RSS once it exits."""
    code = textwrap.dedent(_CHILDREN[variant]).replace("THREADS", repr(threads))
    argv = [sys.executable, "-c", code, str(onnx_dir), str(model_dir or ""), FIRST_TEXT]
    # stderr to a file, not a pipe: a chatty child (Transformers warnings) must never block on a full pipe.
    with tempfile.TemporaryFile(mode="w+") as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, text=True)
        line = proc.stdout.readline()
        cold_start = time.perf_counter() - started
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would accumulate every child so far).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        if proc.returncode != 0 or not line:
            errors.seek(0)
            raise RuntimeError(f"{variant} child failed (exit {proc.returncode}):\n{errors.read()[-2000:]}")
    rss_kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024  # macOS reports bytes
    return {"cold_start_s": cold_start, "peak_rss_mib": rss_kib / 1024, **json.loads(line)}


def measure_footprint(
    variants: list[str], onnx_dir: Path, model_dir: Path | None, runs: int, threads: int | None
) -> dict[str, Any]:
    """Median cold start and peak RSS per variant over ``runs`` runs, after one untimed warm-up run each.

    The warm-up puts model files and libraries in the page cache, so every timed run is a warm-disk cold
    start: the case of an app that starts often. Variants are interleaved run by run.
    """
    for variant in variants:
        run_child(variant, onnx_dir, model_dir, threads)
    samples: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for _ in range(runs):
        for variant in variants:
            samples[variant].append(run_child(variant, onnx_dir, model_dir, threads))
    summary = {}
    for variant, rows in samples.items():
        summary[variant] = {
            key: statistics.median(row[key] for row in rows)
            for key in ("cold_start_s", "peak_rss_mib", "import_s", "load_s", "first_predict_s")
        }
        summary[variant]["cold_start_s_runs"] = [round(row["cold_start_s"], 4) for row in rows]
        summary[variant]["label"] = rows[-1]["label"]
        if "heavy_modules" in rows[-1]:
            summary[variant]["heavy_modules"] = rows[-1]["heavy_modules"]
    return summary


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure_latency(
    onnx_dir: Path, texts: list[str], repeats: int, warmup: int, threads: int | None
) -> dict[str, Any]:
    """Batch-1 latency per text: predictor.predict end to end against session.run on pre-tokenized inputs."""
    from edgesent.runtime import Predictor

    predictor = Predictor.load(onnx_dir, provider="cpu", threads=threads)
    session, output_names = predictor.session, [predictor.session.get_outputs()[0].name]
    feeds = [predictor.encode([text]) for text in texts]
    for text, feed in list(zip(texts, feeds))[:warmup]:
        predictor.predict(text)
        session.run(output_names, feed)
    e2e: list[int] = []
    bare: list[int] = []
    clock = time.perf_counter_ns
    for repeat in range(repeats):
        for i, (text, feed) in enumerate(zip(texts, feeds)):
            calls = (
                (e2e, lambda text=text: predictor.predict(text)),
                (bare, lambda feed=feed: session.run(output_names, feed)),
            )
            for samples, call in calls if (i + repeat) % 2 else calls[::-1]:
                started = clock()
                call()
                samples.append(clock() - started)
    tokens = [feed["input_ids"].shape[1] for feed in feeds]
    return {
        "texts": len(texts),
        "repeats": repeats,
        "tokens_mean": statistics.fmean(tokens),
        "tokens_max": max(tokens),
        "threads": threads,
        "e2e_ms": _summary_ms(e2e),
        "bare_ms": _summary_ms(bare),
        "e2e_over_bare": sum(e2e) / sum(bare),
        "e2e_over_bare_p50": _percentile(e2e, 0.5) / _percentile(bare, 0.5),
        "overhead_ms_mean": (statistics.fmean(e2e) - statistics.fmean(bare)) * 1e-6,
    }


def _summary_ms(samples_ns: list[int]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(samples_ns) * 1e-6,
        "p50": _percentile(samples_ns, 0.5) * 1e-6,
        "p95": _percentile(samples_ns, 0.95) * 1e-6,
    }


def load_texts(path: Path, n: int) -> list[str]:
    """The first ``n`` non-empty texts of a labelled file (repeated if it has fewer)."""
    from edgesent.data import load_dataset

    texts = load_dataset(path, label_column=None, skip_empty=True).texts
    return [texts[i % len(texts)] for i in range(n)]


def report_table(results: dict[str, Any]) -> str:
    lines = [
        f"{'variant':<12} {'cold start s':>12} {'peak RSS MiB':>13} {'import s':>9} {'load s':>8} {'1st pred s':>10}"
    ]
    for variant, row in results["footprint"].items():
        lines.append(
            f"{variant:<12} {row['cold_start_s']:>12.3f} {row['peak_rss_mib']:>13.1f} {row['import_s']:>9.3f} "
            f"{row['load_s']:>8.3f} {row['first_predict_s']:>10.4f}"
        )
    lat = results["latency"]
    lines += [
        "",
        (
            f"batch-1 latency over {lat['texts']} texts x {lat['repeats']} (mean {lat['tokens_mean']:.1f} tokens, "
            f"threads={lat['threads']}):"
        ),
        *(
            f"  {name:<10}  mean {ms['mean']:.3f} ms  p50 {ms['p50']:.3f}  p95 {ms['p95']:.3f}"
            for name, ms in (("end to end", lat["e2e_ms"]), ("bare run", lat["bare_ms"]))
        ),
        (
            f"  ratio       {lat['e2e_over_bare']:.3f}x (mean), {lat['e2e_over_bare_p50']:.3f}x (p50); "
            f"overhead {lat['overhead_ms_mean'] * 1000:.0f} us/text"
        ),
        "",
    ]
    for name, check in results["goals"].items():
        lines.append(f"goal {name} <= {check['goal']}: {check['value']:.3f} {'PASS' if check['pass'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx-dir", type=Path, required=True, help="ONNX export directory (the int8 model).")
    parser.add_argument("--model-dir", type=Path, help="PyTorch model directory, for the pipeline baseline.")
    parser.add_argument("--data", type=Path, required=True, help="Labelled CSV/TSV/JSONL with real texts.")
    parser.add_argument("--out", type=Path, help="Write the results as JSON here.")
    parser.add_argument("--runs", type=int, default=5, help="Timed cold starts per variant (median reported).")
    parser.add_argument("--texts", type=int, default=200, help="Texts for the latency comparison.")
    parser.add_argument("--repeats", type=int, default=3, help="Passes over the texts.")
    parser.add_argument("--warmup", type=int, default=20, help="Untimed calls before the latency loop.")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime (and torch) threads; 0: library default.")
    args = parser.parse_args(argv)
    threads = args.threads or None

    variants = ["predictor", "bare"] + (["pipeline"] if args.model_dir else [])
    footprint = measure_footprint(variants, args.onnx_dir, args.model_dir, args.runs, threads)
    latency = measure_latency(args.onnx_dir, load_texts(args.data, args.texts), args.repeats, args.warmup, threads)
    from edgesent.artifacts import library_versions, read_manifest

    values = {
        "cold_start_s": footprint["predictor"]["cold_start_s"],
        "peak_rss_mib": footprint["predictor"]["peak_rss_mib"],
        "e2e_over_bare": latency["e2e_over_bare"],
    }
    results = {
        "benchmark": "predictor_footprint",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "onnx_dir": str(args.onnx_dir),
        "precision": read_manifest(args.onnx_dir).get("precision"),
        "model_dir": str(args.model_dir) if args.model_dir else None,
        "data": str(args.data),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "versions": library_versions(),
        "settings": {"runs": args.runs, "threads": threads, "first_text": FIRST_TEXT},
        "footprint": footprint,
        "latency": latency,
        "goals": {k: {"goal": GOALS[k], "value": v, "pass": v <= GOALS[k]} for k, v in values.items()},
    }
    print(report_table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
