"""edgesent's int8 against every peer a user could reach for, in one interleaved run.

Variants (each one that cannot be built, for a missing extra or an input not given, is a table row that says
why, never a crash):

| name | what |
| --- | --- |
| pytorch-fp32 | the fine-tuned model in PyTorch (``--model-dir``); the reference for agreement |
| torch-ao-int8 | ``torch.ao.quantization.quantize_dynamic`` on its ``nn.Linear`` layers (qint8) |
| ort-fp32 | the plain fp32 export (``--onnx-fp32``, ``edgesent export --no-simplify``) in ONNX Runtime |
| optimum-<target> | Optimum's ``ORTQuantizer`` with ``AutoQuantizationConfig.<target>`` (dynamic) for this CPU |
| ort-quantize-dynamic | a bare ``onnxruntime.quantization.quantize_dynamic`` with its defaults |
| openvino-fp32 | the fp32 ONNX file compiled by OpenVINO |
| openvino-nncf-int8 | ``nncf.quantize`` (static, MIXED preset, TRANSFORMER model type) on it, compiled by OpenVINO |
| edgesent-int8 | ``edgesent export --int8`` (``--int8``) |
| edgesent-static-int8 | ``edgesent export --int8 --static`` (``--static-int8``, or built here from ``--calibration-data``) |
| edgesent-openvino-int8 | ``edgesent export --int8 --runtime openvino`` (``--openvino-int8``), on the runtime its manifest records |
| edgesent-pruned-int8 | ``edgesent prune`` then ``export --int8`` (``--pruned-int8``), on the runtime its manifest records |
| edgesent-pruned-openvino-int8 | the same with ``--runtime openvino`` (``--pruned-openvino-int8``) |

Every ONNX Runtime session is ``edgesent.sessions.create_session(path, "cpu", threads, **SESSION_SETTINGS)``,
the settings of ``edgesent bench``, with ONNX Runtime's own load-time fusions for the peers (``fusions=
"onnxruntime"``, what a bare ``InferenceSession`` does) and the predictor's for edgesent's rows (``"edgesent"``:
no ``SkipLayerNormFusion`` on the CPU); PyTorch runs with ``torch.set_num_threads(threads)``; OpenVINO with
``INFERENCE_NUM_THREADS = threads`` and the LATENCY hint. Latency is measured in two cells, interleaved run by
run with the starting variant rotating each round (as ``edgesent bench`` does): ``fixed`` (random token ids,
exactly ``--seq-len`` tokens, ``--batch`` rows) and ``data`` (consecutive ``--data`` texts, ``--batch`` per
run, padded to the longest: the real length distribution). With ``--data``, every variant also runs each text
alone, and its labels are judged against PyTorch's by ``edgesent.agreement.agreement_verdict`` (accuracy too
when the file has labels). GOP/s and the fraction of the machine's GEMM peak (``measure_gemm_peak``: int8
variants against the int8 GEMM, fp32 against fp32) are for the fixed cell.

What runs just before a variant changes its time: on the Intel Xeon (AMX) draw of 2026-12-04, ONNX Runtime's
int8 took 2.61 ms a dev text in turn with OpenVINO and 1.97 ms alone, and 2.72-3.32 ms after an OpenVINO run and
2-50 ms idle (``bench/openvino_shapes.py``, ``bench/results/openvino-shapes-amx``). With ``--block 20`` each
variant runs 20 consecutive inputs per turn, as a deployed model serving a stream does, so only the first of
each block follows another runtime; ``--block 1`` (default) is the cold case, every run after another variant's.

Every peer starts from the exporter's plain graph (``--onnx-fp32`` exported with ``--no-simplify``; a simplified
one is refused): what a user of those tools has. edgesent's rows are its own exports, simplified by default.

    python bench/peers.py --model-dir models/sst2-minilm --onnx-fp32 models/sst2-minilm-onnx-fp32-plain \\
        --int8 models/sst2-minilm-onnx-int8 --pruned-int8 models/sst2-pruned-int8 \\
        --calibration-data ../shared/data/sst2/train.tsv --data ../shared/data/sst2/dev.tsv --runs 200

Writes ``peers.json`` and ``peers.md`` to ``--out`` (default ``bench/results/peers``) and prints the table.
Needs ``pip install 'edgesent[peers]'`` for the OpenVINO/NNCF rows.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


logger = logging.getLogger("edgesent.bench.peers")
SCHEMA = "edgesent.peers/1"
DEFAULT_OUT = Path("bench/results/peers")
CELLS = ("fixed", "data")

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]  # feed -> (B, C) logits


@dataclass
class Peer:
    """One variant: how to run it, or why it could not be built."""

    name: str
    precision: str
    run: Runner | None = None
    skipped: str | None = None
    hf_config: dict[str, Any] = field(default_factory=dict, repr=False)
    note: str = ""


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())[:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _hf_config(model: Any) -> dict[str, Any]:
    """config.json of a model directory, {} where there is none (FLOPs are then not counted)."""
    from edgesent.errors import ModelError

    try:
        return dict(model.hf_config())
    except ModelError:
        return {}


def _try(name: str, precision: str, build: Callable[[], Peer]) -> Peer:
    """Build a peer; any failure becomes a skipped row with its reason."""
    try:
        return build()
    except ImportError as err:
        return Peer(name, precision, skipped=f"not installed ({err.name or err}); pip install 'edgesent[peers]'")
    except Exception as err:  # noqa: BLE001 - a peer that cannot be built is a row, not a crash
        logger.warning("%s not built: %s", name, _reason(err))
        return Peer(name, precision, skipped=f"failed: {_reason(err)}")


class Inputs:
    """The fp32 export's predictor (its tokenizer and input names), which turns texts into feeds."""

    def __init__(self, onnx_dir: Path) -> None:
        from tokenizers import Tokenizer

        from edgesent.artifacts import KIND_ONNX, TOKENIZER_FILE_NAME, read_model_dir
        from edgesent.runtime import Predictor

        self.model = read_model_dir(onnx_dir, kind=KIND_ONNX)
        if self.model.manifest.get("export", {}).get("simplified"):
            raise SystemExit(
                f"{onnx_dir}: simplified by edgesent (export.simplified in its manifest); the peers start from the "
                "exporter's plain graph, as a user of those tools would: export it with --no-simplify"
            )
        self.hf_config = _hf_config(self.model)
        self.predictor = Predictor.load(onnx_dir, provider="cpu", threads=1)
        self.names = [i.name for i in self.predictor.session.get_inputs()]
        self.vocab_size = int(
            self.hf_config.get("vocab_size")
            or Tokenizer.from_file(str(self.model.path / TOKENIZER_FILE_NAME)).get_vocab_size()
        )

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """(B, T) int64 inputs, padded to the longest text of the batch: what the predictor feeds its session."""
        return self.predictor.encode(texts)

    def fixed(self, batch: int, seq_len: int) -> dict[str, np.ndarray]:
        from edgesent.bench.runners import synthetic_inputs

        feed = synthetic_inputs(batch, seq_len, self.vocab_size, 0)
        return {n: feed[n] for n in self.names}


def _ort_peer(
    name: str,
    path: Path,
    threads: int,
    precision: str,
    hf_config: dict,
    note: str = "",
    provider: str = "cpu",
    fusions: str = "onnxruntime",
) -> Peer:
    from edgesent.artifacts import LOGITS_OUTPUT
    from edgesent.bench.runners import SESSION_SETTINGS
    from edgesent.sessions import create_session

    session = create_session(path, provider, threads, fusions=fusions, **SESSION_SETTINGS)
    names = [i.name for i in session.get_inputs()]

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        return session.run([LOGITS_OUTPUT], {n: feed[n] for n in names})[0]

    return Peer(name, precision, run, hf_config=hf_config, note=note)


def _dir_peer(name: str, model_dir: Path | None, threads: int, flag: str) -> Peer:
    if model_dir is None:
        return Peer(name, "int8", skipped=f"not given ({flag})")

    def build() -> Peer:
        from edgesent.artifacts import KIND_ONNX, RUNTIME_OPENVINO, read_model_dir

        model = read_model_dir(model_dir, kind=KIND_ONNX)
        provider = "openvino" if model.runtime == RUNTIME_OPENVINO else "cpu"  # the runtime the export chose
        precision = model.manifest.get("precision", "int8")
        hf_config = _hf_config(model)
        return _ort_peer(name, model.model_path, threads, precision, hf_config, model.runtime, provider, "edgesent")

    return _try(name, "int8", build)


def _torch_peers(model_dir: Path | None, threads: int, names: list[str]) -> list[Peer]:
    if model_dir is None:
        return [
            Peer(n, p, skipped="not given (--model-dir)")
            for n, p in (("pytorch-fp32", "fp32"), ("torch-ao-int8", "int8"))
        ]
    state: dict[str, Any] = {}

    def load() -> Any:
        if "model" not in state:
            import torch

            from edgesent.artifacts import KIND_PYTORCH, read_model_dir
            from edgesent.evaluate import load_torch_model

            torch.set_num_threads(threads)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:  # already set once in this process
                pass
            state["config"] = _hf_config(read_model_dir(model_dir, kind=KIND_PYTORCH))
            state["model"] = load_torch_model(model_dir)[1]
        return state["model"]

    def runner(model: Any) -> Runner:
        import torch

        def run(feed: dict[str, np.ndarray]) -> np.ndarray:
            with torch.inference_mode():
                return model(**{n: torch.from_numpy(feed[n]) for n in names}).logits.float().numpy()

        return run

    def fp32() -> Peer:
        return Peer("pytorch-fp32", "fp32", runner(load()), hf_config=state["config"])

    def ao() -> Peer:
        import torch
        from torch.ao.quantization import quantize_dynamic

        quantized = quantize_dynamic(copy.deepcopy(load()), {torch.nn.Linear}, dtype=torch.qint8)
        note = f"engine {torch.backends.quantized.engine}"
        return Peer("torch-ao-int8", "int8", runner(quantized), hf_config=state["config"], note=note)

    return [_try("pytorch-fp32", "fp32", fp32), _try("torch-ao-int8", "int8", ao)]


def _optimum_peer(fp32_dir: Path, fp32_file: str, work: Path, threads: int, hf_config: dict) -> Peer:
    from edgesent.quantize import detect_target

    target = detect_target()
    optimum_target = {"portable": "avx2"}.get(target, target)
    name = f"optimum-{optimum_target}"

    def build() -> Peer:
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        quantizer = ORTQuantizer.from_pretrained(fp32_dir, file_name=fp32_file)
        qconfig = getattr(AutoQuantizationConfig, optimum_target)(is_static=False)
        out = work / "optimum"
        quantizer.quantize(save_dir=out, quantization_config=qconfig)
        path = next(out.glob("*quantized*.onnx"))
        note = f"weights {qconfig.weights_dtype.name}, per_channel {qconfig.per_channel}"
        return _ort_peer(name, path, threads, "int8", hf_config, note)

    return _try(name, "int8", build)


def _bare_dynamic_peer(fp32_path: Path, work: Path, threads: int, hf_config: dict) -> Peer:
    def build() -> Peer:
        from onnxruntime.quantization import quantize_dynamic

        path = work / "bare_dynamic.onnx"
        quantize_dynamic(str(fp32_path), str(path))
        return _ort_peer("ort-quantize-dynamic", path, threads, "int8", hf_config, "quantize_dynamic defaults")

    return _try("ort-quantize-dynamic", "int8", build)


def _openvino_peers(
    fp32_path: Path, calibration: list[dict[str, np.ndarray]], threads: int, hf_config: dict, preset: str
) -> list[Peer]:
    """OpenVINO on the fp32 model, and on NNCF's int8 of it (OpenVINO backend), through edgesent's own pieces:
    ``edgesent.sessions.OpenVINOSession`` (the predictor's compile settings) and ``edgesent.quantize.quantize_nncf``
    (the export's NNCF settings)."""
    state: dict[str, Any] = {}

    def session_runner(model: Any) -> Runner:
        from edgesent.artifacts import LOGITS_OUTPUT
        from edgesent.sessions import OpenVINOSession

        session = OpenVINOSession(model, threads)

        def run(feed: dict[str, np.ndarray]) -> np.ndarray:
            return session.run([LOGITS_OUTPUT], feed)[0]

        return run

    def fp32() -> Peer:
        import openvino as ov

        state["model"] = ov.Core().read_model(str(fp32_path))
        return Peer("openvino-fp32", "fp32", session_runner(state["model"]), hf_config=hf_config, note=ov.__version__)

    def int8() -> Peer:
        import nncf  # noqa: F401 - not installed: a skipped row naming the extra, like openvino's

        from edgesent.quantize import quantize_nncf

        if "model" not in state:
            raise RuntimeError("the OpenVINO fp32 model could not be read")
        if not calibration:
            raise ValueError("no calibration texts (--calibration-data or --data)")
        quantized, info = quantize_nncf(state["model"], calibration, preset)
        note = f"nncf {info['nncf']}, {preset} preset, {len(calibration)} calibration texts"
        return Peer("openvino-nncf-int8", "int8", session_runner(quantized), hf_config=hf_config, note=note)

    return [_try("openvino-fp32", "fp32", fp32), _try("openvino-nncf-int8", "int8", int8)]


def _static_peer(args: argparse.Namespace, calibration: list[dict[str, np.ndarray]], work: Path, hf: dict) -> Peer:
    name = "edgesent-static-int8"
    if args.static_int8 is not None:
        return _dir_peer(name, args.static_int8, args.threads, "--static-int8")
    if not calibration:
        return Peer(name, "int8", skipped="not given (--static-int8, or --calibration-data to build it)")

    def build() -> Peer:
        from edgesent.config.quantize import QuantizeConfig
        from edgesent.quantize import quantize_model

        cfg = QuantizeConfig.for_target("auto", static=True, smooth_alpha=0.0)  # the exported graph, unsmoothed
        path = work / "static.onnx"
        quantize_model(args.inputs.model.model_path, path, cfg, calibration)
        note = f"built here: {cfg.target}, {len(calibration)} texts"
        return _ort_peer(name, path, args.threads, "int8", hf, note, fusions="edgesent")

    return _try(name, "int8", build)


def build_peers(args: argparse.Namespace, calibration: list[dict[str, np.ndarray]], work: Path) -> list[Peer]:
    """Every variant in table order, built or skipped with its reason."""
    inputs: Inputs = args.inputs
    hf = inputs.hf_config
    fp32 = inputs.model.model_path
    peers = _torch_peers(args.model_dir, args.threads, inputs.names)
    peers.append(_try("ort-fp32", "fp32", lambda: _ort_peer("ort-fp32", fp32, args.threads, "fp32", hf)))
    peers.append(_optimum_peer(inputs.model.path, fp32.name, work, args.threads, hf))
    peers.append(_bare_dynamic_peer(fp32, work, args.threads, hf))
    peers += _openvino_peers(fp32, calibration, args.threads, hf, args.nncf_preset)
    peers.append(_dir_peer("edgesent-int8", args.int8, args.threads, "--int8"))
    peers.append(_static_peer(args, calibration, work, hf))
    peers.append(_dir_peer("edgesent-openvino-int8", args.openvino_int8, args.threads, "--openvino-int8"))
    peers.append(_dir_peer("edgesent-pruned-int8", args.pruned_int8, args.threads, "--pruned-int8"))
    flag = "--pruned-openvino-int8"
    peers.append(_dir_peer("edgesent-pruned-openvino-int8", args.pruned_openvino_int8, args.threads, flag))
    return peers


def measure(
    peers: list[Peer], cells: dict[str, list[dict[str, np.ndarray]]], runs: int, warmup: int, block: int = 1
) -> dict[str, dict[str, list[int]]]:
    """Nanoseconds per run, per peer and cell, by ``edgesent bench``'s loop (``measure_units``): every peer gets the
    same inputs in a round, the starting peer rotating, ``block`` consecutive runs per peer and turn (at least
    ``runs`` in all: whole rounds)."""
    from edgesent.bench.runners import CallRunner, measure_units

    live = [p for p in peers if p.run is not None]
    times: dict[str, dict[str, list[int]]] = {p.name: {} for p in live}
    rounds = -(-runs // block)
    for cell, feeds in cells.items():
        units = [CallRunner(p.run) for p in live]
        samples = measure_units(units, feeds, warmup, rounds, None, block)  # type: ignore[arg-type]
        for peer, ns in zip(live, samples):
            times[peer.name][cell] = ns
    return times


def judge(peers: list[Peer], feeds: list[dict[str, np.ndarray]], labels: np.ndarray | None) -> dict[str, dict]:
    """Each peer's labels on every text (run alone) against PyTorch's (ort-fp32's without PyTorch)."""
    from edgesent.agreement import agreement_verdict

    logits = {p.name: np.concatenate([p.run(f) for f in feeds]) for p in peers if p.run is not None}
    reference_name = "pytorch-fp32" if "pytorch-fp32" in logits else "ort-fp32"
    if reference_name not in logits:
        return {}
    reference = logits[reference_name]
    out = {}
    for name, values in logits.items():
        verdict = agreement_verdict(reference, values, labels)
        out[name] = {
            "reference": reference_name,
            "agreement": verdict.agreement,
            "flips": verdict.flips,
            "decisive_flips": verdict.decisive_flips,
            "near_tie_flips": verdict.near_tie_flips,
            "accuracy": verdict.accuracy_candidate,
            "gate_passed": verdict.passed,
            "gate": verdict.message(),
        }
    return out


def _stats(samples_ns: list[int]) -> dict[str, float]:
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)), "runs": len(ms)}


def _rows(peers: list[Peer], times: dict, args: argparse.Namespace, gemm: dict | None) -> list[dict[str, Any]]:
    from edgesent.flops import count_flops

    rows = []
    reference = next((n for n in ("pytorch-fp32", "ort-fp32") if n in times), None)
    for peer in peers:
        if peer.name not in times:
            continue
        for cell, samples in times[peer.name].items():
            row: dict[str, Any] = {"variant": peer.name, "precision": peer.precision, "cell": cell, **_stats(samples)}
            row["batch"], row["seq_len"] = args.batch, args.seq_len if cell == "fixed" else None
            if reference:
                row["speedup"] = _stats(times[reference][cell])["p50_ms"] / row["p50_ms"]
            flops = count_flops(peer.hf_config, args.batch, args.seq_len) if cell == "fixed" else None
            row["gops"] = flops / (row["p50_ms"] / 1e3) / 1e9 if flops else None
            peak = gemm and gemm.get(f"{peer.precision}_gops")
            row["peak_fraction"] = row["gops"] / peak if row["gops"] and peak else None
            rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The table: one line per variant."""
    by = {(r["variant"], r["cell"]): r for r in result["rows"]}
    seq = result["config"]["seq_len"]
    header = (
        f"| variant | p50 ms @{seq} | p90 ms @{seq} | speedup | int8/fp32 GEMM peak | p50 ms data | p90 ms data "
        "| agreement | decisive flips | accuracy | note |"
    )
    lines = [
        header,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def f(value: Any, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    for v in result["variants"]:
        fixed, data = by.get((v["name"], "fixed"), {}), by.get((v["name"], "data"), {})
        q = result["quality"].get(v["name"], {})
        note = f"skipped: {v['skipped']}" if v["skipped"] else v["note"]
        lines.append(
            f"| {v['name']} | {f(fixed.get('p50_ms'), '.2f')} | {f(fixed.get('p90_ms'), '.2f')} "
            f"| {f(fixed.get('speedup'), '.2f')} | {f(fixed.get('peak_fraction'), '.1%')} "
            f"| {f(data.get('p50_ms'), '.2f')} | {f(data.get('p90_ms'), '.2f')} | {f(q.get('agreement'), '.2%')} "
            f"| {f(q.get('decisive_flips'), 'd')} | {f(q.get('accuracy'), '.2%')} | {note} |"
        )
    return "\n".join(lines) + "\n"


def _texts(path: Path | None, limit: int | None, labelled: bool, labels: list[str]) -> tuple[list[str], Any]:
    if path is None:
        return [], None
    from edgesent.data import encode_labels, load_dataset
    from edgesent.errors import DataError

    try:
        data = load_dataset(path, label_column="label" if labelled else None, skip_empty=True)
        y = np.asarray(encode_labels(data, labels)) if labelled else None
    except DataError:
        if not labelled:
            raise
        return _texts(path, limit, False, labels)
    texts = data.texts[:limit] if limit else data.texts
    return texts, (y[: len(texts)] if y is not None else None)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from edgesent.config.export import NNCF_DEFAULT_PRESET, NNCF_PRESETS  # stdlib only: --help stays fast

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="the PyTorch fine-tuned model directory")
    parser.add_argument(
        "--onnx-fp32", type=Path, required=True, help="the plain fp32 export (edgesent export --no-simplify)"
    )
    parser.add_argument("--int8", type=Path, help="edgesent export --int8 directory")
    parser.add_argument("--pruned-int8", type=Path, help="edgesent prune + export --int8 directory")
    parser.add_argument(
        "--pruned-openvino-int8", type=Path, help="edgesent prune + export --int8 --runtime openvino directory"
    )
    parser.add_argument(
        "--openvino-int8", type=Path, help="edgesent export --int8 --runtime openvino directory (run on OpenVINO)"
    )
    parser.add_argument("--static-int8", type=Path, help="edgesent export --int8 --static directory")
    parser.add_argument("--calibration-data", type=Path, help="texts for NNCF and the static int8 build")
    parser.add_argument("--calibration-samples", type=int, default=300, help="calibration texts used (default 300)")
    parser.add_argument("--data", type=Path, help="real texts (labelled: accuracy too) for the data cell and quality")
    parser.add_argument("--max-texts", type=int, help="use only the first N texts of --data")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100, help="timed runs per variant and cell (default 100)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--block",
        type=int,
        default=1,
        help="consecutive runs per variant and turn (default 1: every run follows another variant's; 20: a model "
        "serving a stream, as it runs deployed)",
    )
    parser.add_argument("--nncf-preset", choices=NNCF_PRESETS, default=NNCF_DEFAULT_PRESET)
    parser.add_argument("--no-peak", action="store_true", help="skip the GEMM peak measurement")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for peers.json and peers.md")
    args = parser.parse_args(argv)
    for name in ("seq_len", "batch", "threads", "runs", "calibration_samples", "block"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    args.inputs = inputs = Inputs(args.onnx_fp32)
    texts, labels = _texts(args.data, args.max_texts, True, list(inputs.model.labels))
    calibration_texts = _texts(args.calibration_data, None, False, [])[0] or texts
    calibration = [inputs.encode([t]) for t in calibration_texts[: args.calibration_samples]]
    cells = {"fixed": [inputs.fixed(args.batch, args.seq_len)]}
    if texts:
        cells["data"] = [inputs.encode(texts[i : i + args.batch]) for i in range(0, len(texts), args.batch)]
    with tempfile.TemporaryDirectory(prefix="edgesent-peers-") as tmp:
        peers = build_peers(args, calibration, Path(tmp))
        quality = judge(peers, [inputs.encode([t]) for t in texts], labels) if texts else {}
        times = measure(peers, cells, args.runs, args.warmup, args.block)
    gemm = None
    if not args.no_peak:
        from edgesent.bench.machine import measure_gemm_peak

        gemm = measure_gemm_peak(args.threads)
    from edgesent.bench.machine import machine_info

    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "inputs"}
    result = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "machine": machine_info(),
        "gemm_peak": gemm,
        "calibration_source": str(args.calibration_data or args.data) if calibration else None,
        "variants": [{"name": p.name, "precision": p.precision, "skipped": p.skipped, "note": p.note} for p in peers],
        "rows": _rows(peers, times, args, gemm),
        "quality": quality,
    }
    table = markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.json").write_text(json.dumps(result, indent=2) + "\n")
    setting = f"batch {args.batch}, {args.threads} thread(s), {args.block} consecutive run(s) per variant and turn"
    (args.out / "peers.md").write_text(f"# edgesent int8 vs peers ({result['created']})\n\n{setting}\n\n{table}")
    print(table)
    return result


if __name__ == "__main__":
    main()
