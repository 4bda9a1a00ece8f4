"""Why OpenVINO loses to ONNX Runtime on short texts of varying length, and what static shapes would cost.

Both int8 exports of one model (``edgesent export --int8`` and ``--int8 --runtime openvino``), batch 1, one
thread, through ``edgesent.sessions`` (the predictor's settings). Three measurements:

1. ``same_shape``: random token ids of one length, the same input repeated (every runtime at its best).
2. ``alternating``: two lengths taken in turn; OpenVINO's one dynamic-shape model against one static-shape
   model per length (``Model.reshape``), with the process's resident memory after each static compile.
3. ``data``: the labelled texts at their own lengths, one after another; ``alone`` times each runtime by itself,
   ``block 1`` interleaves the runtimes text by text (each run follows the other runtime's), ``block N`` runs N
   consecutive texts per runtime and round (a deployed model serving a stream).
4. ``after_pause``: ONNX Runtime on those texts, each run right after an OpenVINO run and ``--pauses-ms`` of idle:
   whether what the previous run left (caches, clock), not contention, is what slows a neighbour.

    python bench/openvino_shapes.py models/sst2-onnx-int8 models/sst2-onnx-int8-ov ../shared/data/sst2/dev.tsv

Writes ``shapes.json`` and ``shapes.md`` to ``--out`` (default ``bench/results/openvino-shapes``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgesent.artifacts import KIND_ONNX, TOKENIZER_FILE_NAME, read_model_dir
from edgesent.bench.runners import OrtRunner, create_bench_session, measure_units
from edgesent.data import load_dataset
from edgesent.sessions import OpenVINOSession


Feed = dict[str, np.ndarray]


def _feed(ids: list[int] | np.ndarray) -> Feed:
    array = np.asarray([ids], dtype=np.int64)
    return {"input_ids": array, "attention_mask": np.ones_like(array), "token_type_ids": np.zeros_like(array)}


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def _openvino_session(path: Path, length: int | None) -> OpenVINOSession:
    """The predictor's OpenVINO session (one thread); on a static-shape copy of the model if ``length`` is given."""
    if length is None:
        return OpenVINOSession(path, 1)
    import openvino as ov

    model = ov.Core().read_model(str(path))
    model.reshape({port.get_any_name(): [1, length] for port in model.inputs})
    return OpenVINOSession(model, 1)


class _StaticPerLength:
    """A runner that sends each feed to the static-shape session of its length."""

    def __init__(self, sessions: dict[int, OpenVINOSession]) -> None:
        self.runners = {length: OrtRunner(session, io_binding=False) for length, session in sessions.items()}

    def prepare(self, feed: Feed) -> tuple[OrtRunner, Any]:
        runner = self.runners[feed["input_ids"].shape[1]]
        return runner, runner.prepare(feed)

    def run(self, prepared: tuple[OrtRunner, Any]) -> None:
        runner, item = prepared
        runner.run(item)


class _ThenPause:
    """A runner followed by ``pause_s`` idle (counted in its own time, not in the next unit's)."""

    def __init__(self, runner: Any, pause_s: float) -> None:
        self.runner, self.pause_s = runner, pause_s

    def prepare(self, feed: Feed) -> Any:
        return self.runner.prepare(feed)

    def run(self, prepared: Any) -> None:
        self.runner.run(prepared)
        time.sleep(self.pause_s)


def _samples(units: dict[str, Any], feeds: list[Feed], rounds: int, block: int, warmup: int) -> dict[str, list[int]]:
    """Nanoseconds per run and unit, timed by ``measure_units`` (rotating order, ``block`` feeds a turn)."""
    samples = measure_units(list(units.values()), feeds, warmup=warmup, runs=rounds, budget_s=None, block=block)
    return dict(zip(units, samples))


def _median_ms(samples: list[int]) -> float:
    return round(float(np.median(samples)) / 1e6, 3)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ort_int8", type=Path, help="edgesent export --int8 directory")
    parser.add_argument("openvino_int8", type=Path, help="edgesent export --int8 --runtime openvino directory")
    parser.add_argument("data", type=Path, help="texts at their real lengths (CSV/TSV/JSONL)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 24, 32, 48, 64, 128])
    parser.add_argument("--alternate", type=int, nargs=2, default=[16, 32])
    parser.add_argument("--texts", type=int, default=400)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--pauses-ms", type=float, nargs="*", default=[2.0, 10.0, 50.0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/openvino-shapes"))
    args = parser.parse_args(argv)

    from tokenizers import Tokenizer

    ort_dir = read_model_dir(args.ort_int8, kind=KIND_ONNX)
    ov_path = read_model_dir(args.openvino_int8, kind=KIND_ONNX).model_path
    ov_dynamic = OrtRunner(_openvino_session(ov_path, None), io_binding=False)
    runners = {
        "onnxruntime": OrtRunner(create_bench_session(ort_dir.model_path, "cpu", 1), io_binding=False),
        "openvino": ov_dynamic,
    }
    rng = np.random.default_rng(0)
    vocab = int(ort_dir.hf_config()["vocab_size"])

    def random_feed(length: int) -> Feed:
        return _feed(rng.integers(vocab // 10, vocab, length))

    result: dict[str, Any] = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    result["same_shape"] = {}
    for length in args.lengths:
        feed = random_feed(length)
        samples = _samples(runners, [feed], args.runs, block=5, warmup=5)
        result["same_shape"][length] = {name: _median_ms(ns) for name, ns in samples.items()}

    short, long = args.alternate
    pair = [random_feed(n) for n in (short, long)]
    rss_before = _rss_mb()
    static = _StaticPerLength({n: _openvino_session(ov_path, n) for n in (short, long)})
    for feed in pair:
        static.run(static.prepare(feed))
    per_static_mb = (_rss_mb() - rss_before) / 2
    alternating = {"openvino dynamic": ov_dynamic, "openvino static per length": static}
    samples = _samples(alternating, pair, args.runs * 4, block=1, warmup=0)  # round r takes pair[r % 2]
    result["alternating"] = {
        name: {short: _median_ms(ns[0::2]), long: _median_ms(ns[1::2])} for name, ns in samples.items()
    }
    result["static_model_rss_mb"] = round(per_static_mb, 1)

    tokenizer = Tokenizer.from_file(str(ort_dir.path / TOKENIZER_FILE_NAME))
    tokenizer.enable_truncation(ort_dir.max_length)
    texts = load_dataset(args.data).texts[: args.texts]
    feeds = [_feed(e.ids) for e in tokenizer.encode_batch(texts)]
    result["data_mean_tokens"] = round(float(np.mean([f["input_ids"].shape[1] for f in feeds])), 1)
    result["data"] = {"alone": {}}
    for name, runner in runners.items():
        result["data"]["alone"][name] = _median_ms(_samples({name: runner}, feeds, len(feeds) * 2, 1, 10)[name])
    for block in (1, args.block):
        samples = _samples(runners, feeds, len(feeds) * 2 // block, block=block, warmup=10)
        result["data"][f"block {block}"] = {name: _median_ms(ns) for name, ns in samples.items()}
    result["after_pause"] = {}
    for pause_ms in args.pauses_ms:
        units = {"paused openvino": _ThenPause(ov_dynamic, pause_ms / 1e3), "onnxruntime": runners["onnxruntime"]}
        samples = _samples(units, feeds, len(feeds), block=1, warmup=10)
        result["after_pause"][pause_ms] = _median_ms(samples["onnxruntime"])

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shapes.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "shapes.md").write_text(_markdown(result, short, long))
    print(_markdown(result, short, long))
    return result


def _markdown(result: dict[str, Any], short: int, long: int) -> str:
    lines = [f"# ONNX Runtime vs OpenVINO int8 by input shape ({result['created']})", ""]
    lines += ["| tokens, same input repeated | onnxruntime ms | openvino ms |", "| ---: | ---: | ---: |"]
    lines += [f"| {n} | {t['onnxruntime']} | {t['openvino']} |" for n, t in result["same_shape"].items()]
    lines += ["", f"| OpenVINO, {short} and {long} tokens in turn | {short} ms | {long} ms |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {t[short]} | {t[long]} |" for name, t in result["alternating"].items()]
    lines += ["", f"Resident memory per static-shape compiled model: {result['static_model_rss_mb']} MB.", ""]
    lines += [
        f"| real texts (mean {result['data_mean_tokens']} tokens), one after another | onnxruntime ms | openvino ms |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {cell} | {t['onnxruntime']} | {t['openvino']} |" for cell, t in result["data"].items()]
    lines += ["", "| ONNX Runtime right after OpenVINO and an idle pause of | onnxruntime ms |", "| ---: | ---: |"]
    lines += [f"| {pause:g} ms | {ms} |" for pause, ms in result["after_pause"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
