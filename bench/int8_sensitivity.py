"""Which int8 settings keep an exported classifier's answers, and what they cost in latency.

Quantizes an fp32 export (``edgesent export``) several ways with ONNX Runtime's ``quantize_dynamic``,
then measures for each: agreement of predicted labels with fp32 and accuracy on labelled texts (run
one at a time, so the activation scales of dynamic quantization are per text), and latency at
batch 1, 128 tokens, one thread, interleaved. The table behind bench/EXPORT_DEFAULTS.md.

    python bench/int8_sensitivity.py models/sst2-minilm-onnx-fp32 ../shared/data/sst2/dev.tsv
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer

from edgesent.artifacts import KIND_ONNX, LOGITS_OUTPUT, TOKENIZER_FILE_NAME, read_model_dir
from edgesent.bench.runners import create_bench_session
from edgesent.data import encode_labels, load_dataset


def _session(path: Path, threads: int) -> ort.InferenceSession:
    """A CPU session with the settings of ``edgesent bench`` (edgesent.sessions via bench.runners)."""
    return create_bench_session(path, "cpu", threads)


def _logits(session: ort.InferenceSession, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([session.run([LOGITS_OUTPUT], feed)[0] for feed in feeds])  # (N, C)


def _variants(model: onnx.ModelProto) -> dict[str, tuple[list[str], bool]]:
    matmuls = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    ffn_out = [n for n in matmuls if n.endswith("/output/dense/MatMul") and "/attention/" not in n]
    return {
        "per-tensor": ([], False),
        "per-channel": ([], True),
        "per-channel, FFN out fp32": (ffn_out, True),
        "per-channel, last half FFN out fp32": (ffn_out[len(ffn_out) // 2 :], True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx_dir", type=Path, help="fp32 export directory (edgesent export)")
    parser.add_argument("data", type=Path, help="labelled CSV/TSV/JSONL")
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()

    model = read_model_dir(args.onnx_dir, kind=KIND_ONNX)
    fp32_path = model.model_path
    data = load_dataset(args.data)
    y = np.asarray(encode_labels(data, list(model.labels)))
    tokenizer = Tokenizer.from_file(str(model.path / TOKENIZER_FILE_NAME))
    tokenizer.enable_truncation(model.max_length)
    tokenizer.no_padding()
    names = [i.name for i in _session(fp32_path, 1).get_inputs()]

    def feed(ids: list[int], mask: list[int], types: list[int]) -> dict[str, np.ndarray]:
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: np.asarray([arrays[k]], dtype=np.int64) for k in names}

    feeds = [feed(e.ids, e.attention_mask, e.type_ids) for e in tokenizer.encode_batch(data.texts)]
    rng = np.random.default_rng(0)
    timing_feed = feed(rng.integers(1000, 20000, 128).tolist(), [1] * 128, [0] * 128)

    paths = {"fp32": fp32_path}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (exclude, per_channel) in _variants(onnx.load(str(fp32_path))).items():
            paths[name] = Path(tmp) / f"{len(paths)}.onnx"
            quantize_dynamic(
                fp32_path,
                paths[name],
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                nodes_to_exclude=exclude,
                extra_options={"MatMulConstBOnly": True},
            )
        reference = _logits(_session(fp32_path, 2), feeds).argmax(-1)
        quality = {}
        for name, path in paths.items():
            predicted = _logits(_session(path, 2), feeds).argmax(-1)
            quality[name] = ((predicted == reference).mean(), (predicted == y).mean())
        sessions = {name: _session(path, 1) for name, path in paths.items()}
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(10):
            for session in sessions.values():
                session.run(None, timing_feed)
        for _ in range(args.runs):  # interleaved: drift hits every variant alike
            for name, session in sessions.items():
                start = time.perf_counter()
                session.run(None, timing_feed)
                times[name].append(time.perf_counter() - start)
    print(f"{'variant':40} {'p50 ms':>8} {'agree':>8} {'accuracy':>9}")
    for name in paths:
        agree, acc = quality[name]
        print(f"{name:40} {np.median(times[name]) * 1e3:8.2f} {agree:8.2%} {acc:9.2%}")


if __name__ == "__main__":
    main()
