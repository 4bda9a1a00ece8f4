"""Why OpenVINO loses to ONNX Runtime on short texts of varying length, and what static shapes would cost.

Both int8 exports of one model (``edgesent export --int8`` and ``--int8 --runtime openvino``), batch 1, one
thread, through ``edgesent.sessions`` (the predictor's settings). Three measurements:

1. ``same_shape``: random token ids of one length, the same input repeated (every runtime at its best).
2. ``alternating``: two lengths taken in turn; OpenVINO's one dynamic-shape model against one static-shape
   model per length (``Model.reshape``), with the process's resident memory after each static compile.
3. ``data``: the labelled texts at their own lengths, one after another; ``block 1`` interleaves the runtimes
   text by text (each starts with the other's weights in cache), ``block N`` runs N consecutive texts per runtime
   and round (a deployed model serving a stream).

    python bench/openvino_shapes.py models/sst2-onnx-int8 models/sst2-onnx-int8-ov ../shared/data/sst2/dev.tsv

Writes ``shapes.json`` and ``shapes.md`` to ``--out`` (default ``bench/results/openvino-shapes``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgesent.artifacts import KIND_ONNX, LOGITS_OUTPUT, TOKENIZER_FILE_NAME, read_model_dir
from edgesent.bench.runners import create_bench_session
from edgesent.data import load_dataset
from edgesent.sessions import OPENVINO_DEVICE, openvino_config


Feed = dict[str, np.ndarray]
Runner = Callable[[Feed], Any]


def _feed(ids: list[int] | np.ndarray) -> Feed:
    array = np.asarray([ids], dtype=np.int64)
    return {"input_ids": array, "attention_mask": np.ones_like(array), "token_type_ids": np.zeros_like(array)}


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def _median_ms(runners: dict[str, Runner], feeds: list[Feed], rounds: int, block: int) -> dict[str, float]:
    """Each round every runner takes ``block`` consecutive feeds, the first runner rotating round by round."""
    names = list(runners)
    times: dict[str, list[int]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            for j in range(block):
                feed = feeds[(r * block + j) % len(feeds)]
                start = time.perf_counter_ns()
                runners[name](feed)
                times[name].append(time.perf_counter_ns() - start)
    return {name: round(float(np.median(t)) / 1e6, 3) for name, t in times.items()}


def _openvino_request(path: Path, length: int | None) -> Runner:
    """An infer request on the model compiled as OpenVINOSession compiles it; static at ``length`` if given."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    if length is not None:
        model.reshape({port.get_any_name(): [1, length] for port in model.inputs})
    request = core.compile_model(model, OPENVINO_DEVICE, openvino_config(1)).create_infer_request()
    return request.infer


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
    parser.add_argument("--out", type=Path, default=Path("bench/results/openvino-shapes"))
    args = parser.parse_args(argv)

    from tokenizers import Tokenizer

    ort_dir = read_model_dir(args.ort_int8, kind=KIND_ONNX)
    ov_path = read_model_dir(args.openvino_int8, kind=KIND_ONNX).model_path
    session = create_bench_session(ort_dir.model_path, "cpu", 1)
    ov_dynamic = _openvino_request(ov_path, None)
    runners: dict[str, Runner] = {
        "onnxruntime": lambda feed: session.run([LOGITS_OUTPUT], feed),
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
        result["same_shape"][length] = _median_ms(runners, [feed], args.runs, 5)

    short, long = args.alternate
    pair = [random_feed(n) for n in (short, long)]
    rss_before = _rss_mb()
    static = {n: _openvino_request(ov_path, n) for n in (short, long)}
    for n, feed in zip((short, long), pair):
        static[n](feed)
    per_static_mb = (_rss_mb() - rss_before) / 2
    alternating = {
        "openvino dynamic": ov_dynamic,
        "openvino static per length": lambda feed: static[feed["input_ids"].shape[1]](feed),
    }
    times = {name: {short: [], long: []} for name in alternating}
    for r in range(args.runs * 4):
        feed = pair[r % 2]
        for name, run in alternating.items():
            start = time.perf_counter_ns()
            run(feed)
            times[name][feed["input_ids"].shape[1]].append(time.perf_counter_ns() - start)
    result["alternating"] = {
        name: {n: round(float(np.median(t)) / 1e6, 3) for n, t in by_length.items()}
        for name, by_length in times.items()
    }
    result["static_model_rss_mb"] = round(per_static_mb, 1)

    tokenizer = Tokenizer.from_file(str(ort_dir.path / TOKENIZER_FILE_NAME))
    tokenizer.enable_truncation(ort_dir.max_length)
    texts = load_dataset(args.data).texts[: args.texts]
    feeds = [_feed(e.ids) for e in tokenizer.encode_batch(texts)]
    result["data_mean_tokens"] = round(float(np.mean([f["input_ids"].shape[1] for f in feeds])), 1)
    result["data"] = {
        f"block {block}": _median_ms(runners, feeds, len(feeds) * 2 // block, block) for block in (1, args.block)
    }

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
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
