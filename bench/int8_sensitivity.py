"""Which int8 settings keep an exported classifier's answers, and what they cost in latency.

Quantizes an fp32 export (``edgesent export``) several ways with ONNX Runtime's ``quantize_dynamic``,
then measures for each: agreement of predicted labels with fp32 and accuracy on labelled texts (run
one at a time, so the activation scales of dynamic quantization are per text), and latency at
batch 1, one thread: at 128 tokens interleaved run by run, and on the texts themselves (their real lengths),
each variant running ``--block`` consecutive texts per round, as a deployed model serving a stream does (its
weights stay in cache). The table behind bench/EXPORT_DEFAULTS.md.

    python bench/int8_sensitivity.py models/sst2-minilm-onnx-fp32 ../shared/data/sst2/dev.tsv
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer

from edgesent.artifacts import KIND_ONNX, LOGITS_OUTPUT, TOKENIZER_FILE_NAME, read_model_dir
from edgesent.bench.runners import OrtRunner, create_bench_session, measure_units
from edgesent.data import encode_labels, load_dataset


def _session(path: Path, threads: int) -> ort.InferenceSession:
    """A CPU session with the settings of ``edgesent bench`` (edgesent.sessions via bench.runners)."""
    return create_bench_session(path, "cpu", threads)


def _logits(session: ort.InferenceSession, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([session.run([LOGITS_OUTPUT], feed)[0] for feed in feeds])  # (N, C)


# One quantize_dynamic pass: (nodes to quantize, None for all; nodes to leave in fp32; per-channel weights).
Pass = tuple[list[str] | None, list[str], bool]
FUSED = "fused graph (ORT transformer optimizer: Attention -> QAttention), per-channel"
# The same optimizer with other attention choices: the attention core as one fp32 MultiHeadAttention op (its
# projections stay MatMuls, quantized as the plain graph's are: 69 nodes instead of 529 on MiniLM-L6), or no
# attention fusion at all (SkipLayerNorm, BiasGelu and EmbedLayerNorm only).
FUSED_MHA = "fused graph, attention core as fp32 MultiHeadAttention, per-channel"
FUSED_NO_ATTENTION = "fused graph without attention fusion, per-channel"
FUSIONS = {FUSED: {}, FUSED_MHA: {"use_multi_head_attention": True}, FUSED_NO_ATTENTION: {"enable_attention": False}}


def _variants(model: onnx.ModelProto) -> dict[str, list[Pass]]:
    """Each variant as its quantization passes; a second pass quantizes what the first left in fp32."""
    matmuls = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    ffn_out = [n for n in matmuls if n.endswith("/output/dense/MatMul") and "/attention/" not in n]
    return {
        "per-tensor": [(None, [], False)],
        "per-channel": [(None, [], True)],
        "per-channel FFN out, per-tensor elsewhere": [(ffn_out, [], True), (None, ffn_out, False)],
        "per-channel, FFN out fp32": [(None, ffn_out, True)],
        "per-channel, last half FFN out fp32": [(None, ffn_out[len(ffn_out) // 2 :], True)],
        **{name: [(None, [], True)] for name in FUSIONS},
    }


def _fuse(source: Path, config: dict, out: Path, **fusion_options: bool) -> Path:
    """ORT's transformer optimizer on the fp32 graph: fused Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm,
    with ``fusion_options`` set on its ``FusionOptions``."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    for name, value in fusion_options.items():
        setattr(options, name, value)
    fused = optimize_model(
        str(source),
        model_type="bert",
        num_heads=config["num_attention_heads"],
        hidden_size=config["hidden_size"],
        optimization_options=options,
    )
    fused.save_model_to_file(str(out))
    return out


def _quantize(source: Path, passes: list[Pass], out: Path) -> Path:
    for i, (only, exclude, per_channel) in enumerate(passes):
        target = out.with_suffix(f".{i}.onnx")
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            nodes_to_quantize=only,
            nodes_to_exclude=exclude,
            # A fused graph's Attention weights need a default type where shape inference finds none.
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        source = target
    return source


def _median_ms(sessions: dict[str, ort.InferenceSession], feeds: list[dict], rounds: int, block: int) -> dict:
    """Median ms per variant, timed by ``measure_units`` (rotating order; ``block`` consecutive feeds a turn)."""
    units = [OrtRunner(session, io_binding=False) for session in sessions.values()]
    samples = measure_units(units, feeds, warmup=10, runs=rounds, budget_s=None, block=block)
    return {name: float(np.median(ns)) / 1e6 for name, ns in zip(sessions, samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx_dir", type=Path, help="fp32 export directory (edgesent export)")
    parser.add_argument("data", type=Path, help="labelled CSV/TSV/JSONL")
    parser.add_argument("--runs", type=int, default=60, help="rounds at 128 tokens")
    parser.add_argument("--block", type=int, default=20, help="consecutive texts per variant and round")
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
        for name, passes in _variants(onnx.load(str(fp32_path))).items():
            fused = Path(tmp) / f"fused-{len(paths)}.onnx"
            source = _fuse(fp32_path, model.hf_config(), fused, **FUSIONS[name]) if name in FUSIONS else fp32_path
            paths[name] = _quantize(source, passes, Path(tmp) / f"{len(paths)}.onnx")
        reference = _logits(_session(fp32_path, 2), feeds).argmax(-1)
        quality = {}
        for name, path in paths.items():
            predicted = _logits(_session(path, 2), feeds).argmax(-1)
            quality[name] = ((predicted == reference).mean(), (predicted == y).mean())
        sessions = {name: _session(path, 1) for name, path in paths.items()}
        at_128 = _median_ms(sessions, [timing_feed], args.runs, 1)  # drift hits every variant alike
        on_data = _median_ms(sessions, feeds, len(feeds) // args.block, args.block)
    print(f"{'variant':68} {'p50 ms @128':>12} {'p50 ms data':>12} {'agree':>8} {'accuracy':>9}")
    for name in paths:
        agree, acc = quality[name]
        print(f"{name:68} {at_128[name]:12.2f} {on_data[name]:12.3f} {agree:8.2%} {acc:9.2%}")


if __name__ == "__main__":
    main()
