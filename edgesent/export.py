"""``edgesent export``: a PyTorch model directory becomes a verified ONNX directory (fp32, int8 or fp16).

The steps, in order: check the source directory (before any model loads); export fp32 with
Optimum's exporter, or with ``torch.onnx.export`` where Optimum cannot; simplify the graph (``edgesent.simplify``:
fold what the exporter leaves to run time), or instead fuse it with ``--optimize``;
convert it to int8 or fp16; run the parity gate against PyTorch, trying the known int8 remedies
when it fails; write the model, tokenizer, config and manifest into a temporary sibling directory
that replaces the output only when everything passed. A model that fails parity is never
presented as verified: it is discarded, or kept with ``verified: false`` on request.

The source's task (``edgesent.tasks``) says which head Optimum exports (text- or token-classification), the
dynamic axes of ``logits`` in the fallback, what calibration data holds, the manifest's task fields (a span
model's ``tags``) and the parity measure; quantization is the same for every task.
"""

from __future__ import annotations

import functools
import inspect
import logging
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import torch
from optimum.exporters.onnx import main_export
from transformers import AutoConfig, AutoTokenizer

from edgesent._imports import missing_modules
from edgesent.artifacts import (
    KIND_ONNX,
    KIND_PYTORCH,
    LOGITS_OUTPUT,
    ONNX_FILE_NAME,
    RUNTIME_ONNXRUNTIME,
    RUNTIME_OPENVINO,
    TASK_CLASSIFY,
    TOKENIZER_FILE_NAME,
    ModelDir,
    atomic_output_dir,
    read_model_dir,
    scratch_dir,
    write_manifest,
)
from edgesent.bench.runners import CallRunner, measure_units
from edgesent.config.export import DEFAULT_CALIBRATION_SAMPLES, DEFAULT_OPSET, MIN_OPSET, ExportConfig
from edgesent.config.providers import AUTO, OPENVINO_EXTRA
from edgesent.config.quantize import QuantizeConfig
from edgesent.errors import ConfigError, ExportError, ModelError, ParityError
from edgesent.evaluate import load_torch_model
from edgesent.flops import check_position_limit
from edgesent.parity import PROBE_SOURCE, ParityReport, TorchReference
from edgesent.predictor_tokenizer import load_predictor_tokenizer
from edgesent.quantize import (
    NNCF_CALIBRATION_TEXTS,
    QUANTIZED_OP_TYPES,
    convert_fp16,
    detect_target,
    op_counts,
    optimize_graph,
    quantize_model,
    quantize_nncf,
    smooth_activations,
    unsigned_fc_activations,
)
from edgesent.runtime import Predictor
from edgesent.sensitivity import rank_matmuls
from edgesent.sessions import OPENVINO_EXPORT_MODULES, create_session, require_openvino
from edgesent.simplify import PASSES, simplify_graph
from edgesent.tasks import Task, get_task


logger = logging.getLogger(__name__)
# The targeted int8 remedy keeps this many of the most sensitive MatMuls in fp32, one attempt each.
SENSITIVE_MATMUL_STEPS = (1, 2, 4, 8)
# --runtime auto times the int8 candidates that pass parity on this many parity texts, batch 1, one thread,
# after a few untimed calls, each text this many times, TIMING_BLOCK consecutive texts per candidate and turn;
# p50 per call decides.
TIMING_TEXTS = 64
TIMING_WARMUP = 8
TIMING_ROUNDS = 3
TIMING_BLOCK = 16
# The simplify passes of the graph NNCF quantizes for OpenVINO. NNCF's int8 of the SST-2 MiniLM ran fastest on
# OpenVINO with the shape folding alone (bench/simplify_passes.py, batch 1, one thread, 400 interleaved runs,
# bench/results/simplify-passes-sst2): at 128 tokens 10.86 ms, against 11.15 with all three passes and 11.02 with
# none; on dev texts 4.28 against 4.46 and 4.49. OpenVINO fuses attention itself; the merged projections measured
# slower on it. ONNX Runtime's int8 keeps all three passes (the fastest or within 1% of it in every cell there).
OPENVINO_SIMPLIFY_PASSES = ("fold_shapes",)

# ExportConfig and its constants live in edgesent.config.export; re-exported here for existing imports.
__all__ = [
    "DEFAULT_CALIBRATION_SAMPLES",
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "ExportConfig",
    "default_out_dir",
    "export_model",
]

TASK = TASK_CLASSIFY  # the default; an export takes its task from the source's manifest
_DYNAMIC_AXES = {0: "batch_size", 1: "sequence_length"}


def default_out_dir(model_dir: Path, cfg: ExportConfig) -> Path:
    """``<model_dir>-onnx-<precision>[-<level>]`` beside the source, e.g. ``models/sst2-minilm-onnx-int8``."""
    suffix = cfg.precision + (f"-{cfg.optimize.lower()}" if cfg.optimize else "")
    return Path(model_dir).parent / f"{Path(model_dir).name}-onnx-{suffix}"


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _torch_onnx_export(model_dir: Path, out_path: Path, opset: int, task: Task | None = None) -> None:
    """The fallback: TorchScript-based ``torch.onnx.export`` (``dynamo=True`` would need onnxscript).

    ``logits`` gets the task's dynamic axes: (batch,) for a classifier's (B, C), (batch, sequence) for a
    tagger's (B, T, K). ``task`` None: the source manifest's.
    """
    task = task or get_task(read_model_dir(model_dir, verify=False).task)
    tokenizer, model = load_torch_model(model_dir, task.hf_task, attn_implementation="eager")
    # Two texts of different lengths: batch and sequence dims > 1, so the tracer cannot specialise on 1.
    sample = tokenizer(
        ["a short text", "a somewhat longer text for the sample batch"], padding=True, return_tensors="pt"
    )
    # input_names bind to the traced inputs by position, i.e. in forward()'s order; the tokenizer's order
    # (input_ids, token_type_ids, attention_mask) would silently swap the mask and the segment ids.
    names = [name for name in inspect.signature(model.forward).parameters if name in sample]
    axes = {name: _DYNAMIC_AXES for name in names} | {LOGITS_OUTPUT: task.logits_axes()}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about constants that are constant for this model
        torch.onnx.export(
            model,
            (),
            str(out_path),
            kwargs={name: sample[name] for name in names},
            input_names=names,
            output_names=[LOGITS_OUTPUT],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _export_fp32(
    model_dir: Path, work_dir: Path, opset: int | None, task: Task | None = None
) -> tuple[Path, dict[str, Any]]:
    """Export with Optimum (dynamic batch/sequence axes); fall back to torch.onnx.export if it fails.

    Optimum exports the task's head (``task.hf_task``: text- or token-classification; None: the source
    manifest's). Its own validation is off: the parity gate that follows is stricter and runs on real text.
    """
    task = task or get_task(read_model_dir(model_dir, verify=False).task)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main_export(
                str(model_dir),
                work_dir / "optimum",
                task=task.hf_task,
                opset=opset,
                device="cpu",
                do_validation=False,
            )
        path = work_dir / "optimum" / ONNX_FILE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"Optimum wrote no {ONNX_FILE_NAME}")
        logger.info("exported %s with Optimum's ONNX exporter", model_dir)
        return path, {"exporter": "optimum", "fallback_reason": None}
    except Exception as err:  # noqa: BLE001 - any failure of Optimum's exporter means: try the fallback
        reason = _one_line(err)
    logger.warning("Optimum's ONNX exporter failed (%s); falling back to torch.onnx.export", reason)
    path = work_dir / "torch_onnx.onnx"
    try:
        _torch_onnx_export(model_dir, path, opset or DEFAULT_OPSET, task)
    except Exception as err:
        raise ExportError(
            f"{model_dir}: cannot export to ONNX: Optimum failed ({reason}), "
            f"torch.onnx.export failed ({_one_line(err)})"
        ) from err
    return path, {"exporter": "torch.onnx", "fallback_reason": reason}


def _graph_info(path: Path) -> dict[str, Any]:
    model = onnx.load(str(path), load_external_data=False)
    outputs = [o.name for o in model.graph.output]
    if LOGITS_OUTPUT not in outputs:
        raise ExportError(f"{path.name}: the exported graph has no '{LOGITS_OUTPUT}' output (outputs: {outputs})")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {"inputs": [i.name for i in model.graph.input], "outputs": outputs, "opset": opset}


def _check_opset(opset: int | None) -> None:
    """The opset's upper bound is the installed onnx's (ExportConfig, torch-free, checks the lower one)."""
    max_opset = onnx.defs.onnx_opset_version()
    if opset is not None and opset > max_opset:
        raise ConfigError(f"opset must be in [{MIN_OPSET}, {max_opset}] (the installed onnx's), got {opset!r}")


def _resolve_max_length(cfg: ExportConfig, source: ModelDir, hf_config: Any, model_dir: Path) -> int:
    """``--max-length``, else the source's, checked against the positions before anything is exported."""
    max_length = int(cfg.max_length or source.max_length)
    check_position_limit(max_length, hf_config, f"{model_dir}/config.json")
    return max_length


def _save_support_files(model_dir: Path, out_dir: Path, max_length: int) -> None:
    """Tokenizer files and config.json: what the predictor and Optimum's ORTModel need besides the graph."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.model_max_length = max_length  # HF-side consumers (Optimum pipelines) then truncate like the predictor
    tokenizer.save_pretrained(out_dir)
    AutoConfig.from_pretrained(model_dir).save_pretrained(out_dir)


def _calibration_texts(cfg: ExportConfig, task: Task) -> list[str]:
    """The first ``calibration_samples`` texts of ``calibration_data`` (a data file of the model's task), read
    before any model loads."""
    if cfg.calibration_data is None:
        return []
    return task.read_texts(cfg.calibration_data, cfg.parity.text_column)[: cfg.calibration_samples]


def _quantize_attempts(
    base: QuantizeConfig, remedies: bool, rank_matmuls: Callable[[], list[str]]
) -> Iterator[tuple[str | None, QuantizeConfig]]:
    """The requested config, then the known remedies, each one change away from it, cheapest first.

    Without activation smoothing (the graph as exported; per-tensor weights go without it too), flipping
    per-channel (half the logit error in the issue's measurement), 7-bit weights (cures VPMADDUBSW saturation),
    then the targeted remedy: the MatMuls whose int8 error hurts most (measured
    on the parity batches by ``edgesent.sensitivity``, only when reached) kept in fp32, 1, 2, 4, then 8 of
    them; then the coarse ones: the classifier head, then also the embeddings, in fp32. The last costs the
    most size (the word embeddings are half of MiniLM), so it comes last.
    """
    yield None, base
    if not remedies:
        return
    tried = [base]
    unsmoothed = replace(base, smooth_alpha=0.0)

    def fresh(candidates: list[tuple[str, QuantizeConfig]]) -> Iterator[tuple[str, QuantizeConfig]]:
        for name, candidate in candidates:
            if candidate not in tried:
                tried.append(candidate)
                yield name, candidate

    yield from fresh(
        [
            ("no_smoothing", unsmoothed),
            (
                "per_tensor" if base.per_channel else "per_channel",
                replace(unsmoothed, per_channel=not base.per_channel),
            ),
            ("reduce_range", replace(base, reduce_range=True)),
        ]
    )
    ranked = [] if base.static else rank_matmuls()
    steps = [k for k in SENSITIVE_MATMUL_STEPS if k <= len(ranked)]
    # Added to what the request keeps in fp32 (--fp32-matmuls): a step the request already covers is skipped.
    yield from fresh(
        [(f"fp32_matmuls_top{k}", replace(base, fp32_nodes=(*base.fp32_nodes, *ranked[:k]))) for k in steps]
    )
    yield from fresh(
        [
            ("fp32_head", replace(base, keep_fp32=(*base.keep_fp32, "head"))),
            ("fp32_embeddings_and_head", replace(base, keep_fp32=("embeddings", "head"))),
        ]
    )


def _requested_quantize(cfg: ExportConfig, rank_matmuls: Callable[[], list[str]]) -> QuantizeConfig:
    """``cfg.quantize`` with ``cfg.fp32_matmuls`` of the most harmful MatMuls added to its fp32 nodes.

    Raises:
        ConfigError: ``fp32_matmuls`` on a model whose MatMuls are not ranked (a span model).
    """
    assert cfg.quantize is not None
    if not cfg.fp32_matmuls:
        return cfg.quantize
    ranked = rank_matmuls()
    if not ranked:
        raise ConfigError("fp32_matmuls: only a classifier's MatMuls are ranked; leave it at 0 for this model")
    if len(ranked) < cfg.fp32_matmuls:
        logger.warning("fp32_matmuls=%d: only %d MatMuls gain from fp32; keeping those", cfg.fp32_matmuls, len(ranked))
    return replace(cfg.quantize, fp32_nodes=(*cfg.quantize.fp32_nodes, *ranked[: cfg.fp32_matmuls]))


class _Int8Job(NamedTuple):
    """What every int8 build of an export works from: the fp32 graph, the scratch and output directories, the
    settings, the PyTorch reference of the gate and the ``--calibration-data`` texts (may be empty)."""

    graph_path: Path
    work_dir: Path
    out_dir: Path
    cfg: ExportConfig
    reference: TorchReference
    calibration_texts: list[str]
    # The exporter's graph and the simplify passes graph_path ran, when graph_path is its simplification; else None.
    simplified_from: tuple[Path, tuple[str, ...]] | None = None

    @property
    def tokenizer_path(self) -> Path:
        return self.out_dir / TOKENIZER_FILE_NAME

    def graph_for(self, passes: tuple[str, ...]) -> tuple[Path, dict[str, Any] | None]:
        """The fp32 graph for a runtime whose simplify passes are ``passes``: ``graph_path`` when it was not
        simplified or ran those passes, else the exporter's graph simplified with them (and that simplification's
        counts, for the manifest)."""
        if self.simplified_from is None or self.simplified_from[1] == passes:
            return self.graph_path, None
        path = self.work_dir / f"simplified-{'-'.join(passes) or 'none'}.onnx"
        return path, simplify_graph(self.simplified_from[0], path, passes)


# An int8 candidate: (its model in the scratch directory, its parity report, the manifest's int8 details).
_Candidate = tuple[Path, ParityReport, dict[str, Any]]


def _ort_int8(job: _Int8Job) -> _Candidate:
    """ONNX Runtime's int8 (``cfg.quantize``), gated on ONNX Runtime; a failed gate triggers the remedies and the
    first variant that passes is kept. If none passes, the requested variant is kept (for ``keep_unverified``)
    and every attempt is reported. Activation smoothing (``smooth_alpha``) runs once, on the fp32 graph, only when
    an attempt asks for it, and every attempt that asks quantizes that smoothed graph.

    Returns:
        (the kept model's path in ``work_dir``, its parity report, the manifest's int8 details).
    """
    graph_path, work_dir, _, cfg, reference, calibration_texts, _ = job
    assert cfg.quantize is not None  # set by ExportConfig for int8 on onnxruntime or auto
    skipped = None
    if cfg.quantize.smooth_alpha and not calibration_texts and reference.source == PROBE_SOURCE:
        # 13 edge-case probes (empty, emoji, one over-long text) would set the smoothing scales: none is better
        skipped = "no real texts to calibrate on (probe texts only); pass --calibration-data or --parity-data"
        logger.warning("int8: activation smoothing skipped: %s", skipped)
        cfg = replace(cfg, quantize=replace(cfg.quantize, smooth_alpha=0.0))
    texts = calibration_texts if cfg.quantize.static else []  # --runtime auto may have them for NNCF only
    inputs = _graph_info(graph_path)["inputs"]
    calibration = reference.alone_feeds(texts, inputs)
    attempts: list[dict[str, Any]] = []
    kept: tuple[Path, ParityReport, int] | None = None

    @functools.cache  # smoothed once: every attempt with this alpha quantizes the same graph
    def smoothed(alpha: float) -> tuple[Path, dict[str, Any]]:
        path = work_dir / f"smoothed-{alpha}.onnx"
        texts, source = _calibration_source(job)
        feeds = reference.batch_feeds(texts, inputs)  # padded, as dynamic int8 runs
        return path, {**smooth_activations(graph_path, path, feeds, alpha), "calibration": source}

    def fp32_graph(qcfg: QuantizeConfig) -> Path:
        """The fp32 graph ``qcfg`` quantizes: the exported one, or its smoothed form."""
        return smoothed(qcfg.smooth_alpha)[0] if qcfg.smooth_alpha else graph_path

    @functools.cache  # ranked once: the request (--fp32-matmuls) and the remedies share it
    def ranked_matmuls() -> list[str]:
        """The quantized MatMuls, most harmful in int8 first (classification; a span model's are not ranked)."""
        if reference.task.hf_task != TASK_CLASSIFY:
            return []
        assert cfg.quantize is not None
        ranking = rank_matmuls(
            fp32_graph(cfg.quantize), reference.batches, cfg.quantize, reference_logits=reference.logits
        )
        logger.info("int8 sensitivity: %s", ", ".join(f"{n.name} {n.gain:.3g}" for n in ranking.nodes[:8]))
        return [node.name for node in ranking.nodes if node.gain > 0]

    for remedy, qcfg in _quantize_attempts(_requested_quantize(cfg, ranked_matmuls), cfg.remedies, ranked_matmuls):
        candidate = work_dir / f"int8-{remedy or 'requested'}.onnx"
        info = quantize_model(fp32_graph(qcfg), candidate, qcfg, calibration)
        report = reference.compare(candidate, "int8", job.tokenizer_path)
        attempts.append(
            {
                "remedy": remedy,
                "quantize": qcfg.to_dict(),
                **info,
                "passed": report.passed,
                "summary": report.summary(),
            }
        )
        if kept is None or report.passed:
            kept = (candidate, report, len(attempts) - 1)
        if report.passed:
            break
        logger.warning("int8 parity failed with %s: %s", remedy or "the requested settings", report.summary())
    assert kept is not None
    candidate, report, index = kept
    chosen = attempts[index]
    details = {
        "quantize": chosen["quantize"],
        "remedy": chosen["remedy"],
        "excluded_nodes": chosen["excluded_nodes"],
        "quantized_op_counts": chosen["op_counts"],
        "attempts": attempts,
    }
    if calibration:
        details["calibration"] = {"data": str(cfg.calibration_data), "samples": len(calibration)}
    if chosen["quantize"]["smooth_alpha"]:
        details["smoothing"] = smoothed(chosen["quantize"]["smooth_alpha"])[1]
    elif skipped:
        details["smoothing"] = {"matmuls": [], "skipped": skipped}
    return candidate, report, details


def _calibration_source(job: _Int8Job) -> tuple[list[str], str]:
    """The texts smoothing and NNCF calibrate on: the ``--calibration-data`` texts, else the parity texts (the
    model's own sample, ``--parity-data`` or the probes), at most ``NNCF_CALIBRATION_TEXTS``; and where they came
    from, for the manifest."""
    texts = job.calibration_texts or job.reference.texts[:NNCF_CALIBRATION_TEXTS]
    source = str(job.cfg.calibration_data) if job.calibration_texts else f"parity texts ({job.reference.source})"
    return texts, source


def _openvino_int8(job: _Int8Job) -> _Candidate:
    """NNCF's static int8 of the fp32 graph through its ONNX backend (a QDQ ONNX model: OpenVINO runs it fast,
    ONNX Runtime still runs it correctly), gated on OpenVINO. No remedies: they are ONNX Runtime settings.

    Calibrates on ``--calibration-data`` when given, else on the parity texts (the model's own sample, or
    ``--parity-data``, or the probes), at most ``NNCF_CALIBRATION_TEXTS`` of them. The activations of the weight
    MatMuls are made unsigned (``unsigned_fc_activations``: the same values, ONNX Runtime's fast kernels for the
    fallback). A simplified export quantizes
    the exporter's graph simplified with :data:`OPENVINO_SIMPLIFY_PASSES` only, and records that simplification.

    Returns:
        (the model's path in ``work_dir``, its parity report on OpenVINO, the manifest's int8 details).
    """
    _, work_dir, _, _, reference, _, _ = job
    graph_path, simplified = job.graph_for(OPENVINO_SIMPLIFY_PASSES)
    texts, source = _calibration_source(job)
    calibration = reference.alone_feeds(texts, _graph_info(graph_path)["inputs"])
    quantized, info = quantize_nncf(onnx.load(str(graph_path)), calibration)
    info["unsigned_activations"] = unsigned_fc_activations(quantized)
    candidate = work_dir / "int8-openvino.onnx"
    onnx.save(quantized, str(candidate))
    counts = {k: v for k, v in op_counts(quantized).items() if k in QUANTIZED_OP_TYPES}
    report = reference.compare(candidate, "int8", job.tokenizer_path, RUNTIME_OPENVINO)
    attempt = {"remedy": None, "runtime": RUNTIME_OPENVINO, "passed": report.passed, "summary": report.summary()}
    details = {
        "quantize": info,
        "remedy": None,
        "quantized_op_counts": counts,
        "attempts": [attempt],
        "calibration": {"data": source, "samples": len(calibration)},
    }
    if simplified is not None:
        details["simplified"] = simplified  # re-simplified for OpenVINO (--runtime auto): the manifest's counts
    return candidate, report, details


def _time_candidates(candidates: dict[str, _Candidate], out_dir: Path, reference: TorchReference) -> dict[str, float]:
    """p50 ms per call of each candidate through the Predictor: batch 1, one thread, on up to
    ``TIMING_TEXTS`` parity texts, by ``edgesent bench``'s loop (``measure_units``): ``TIMING_BLOCK`` consecutive
    texts per candidate and turn, the first rotating each round, so a busy moment of the machine costs each the
    same, and each runs as it will deployed, on a stream. Text by text, every call would follow the other
    runtime's: ONNX Runtime took 2.61 ms a SST-2 dev text so, 2.04 in blocks of 20, 1.97 alone (openvino_shapes)."""
    tokenizer, pad_id, pad_right = load_predictor_tokenizer(out_dir, reference.max_length)
    predictors = {}
    for runtime, (path, _, _) in candidates.items():
        session = create_session(path, RUNTIME_OPENVINO if runtime == RUNTIME_OPENVINO else "cpu", threads=1)
        labels = reference.labels_vocab
        tags = None if reference.task.hf_task == TASK_CLASSIFY else reference.outputs_vocab
        predictors[runtime] = Predictor(session, tokenizer, labels, reference.max_length, pad_id, pad_right, tags=tags)
    texts = [text for text in reference.texts[:TIMING_TEXTS] if text.strip()] or ["a"]
    units = [CallRunner(predictor.predict) for predictor in predictors.values()]
    rounds = TIMING_ROUNDS * -(-len(texts) // TIMING_BLOCK)  # every text TIMING_ROUNDS times per candidate
    samples = measure_units(units, texts, TIMING_WARMUP, rounds, None, TIMING_BLOCK)
    return {runtime: round(float(np.median(values)) / 1e6, 4) for runtime, values in zip(predictors, samples)}


def _int8_for_runtime(job: _Int8Job) -> _Candidate:
    """The int8 model of ``cfg.runtime``: ONNX Runtime's, OpenVINO's (NNCF), or with ``auto`` the faster of both
    that passes its gate (if neither passes, ONNX Runtime's, for ``keep_unverified``)."""
    cfg = job.cfg
    runtimes = [RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO] if cfg.runtime == AUTO else [cfg.runtime]
    note = None
    if cfg.runtime == AUTO and missing_modules(OPENVINO_EXPORT_MODULES):
        note = f"the openvino extra is not installed ({OPENVINO_EXTRA}); onnxruntime only"
        logger.warning("--runtime auto: %s", note)
        runtimes = [RUNTIME_ONNXRUNTIME]
    build = {RUNTIME_ONNXRUNTIME: _ort_int8, RUNTIME_OPENVINO: _openvino_int8}
    candidates = {runtime: build[runtime](job) for runtime in runtimes}
    passing = [runtime for runtime, (_, report, _) in candidates.items() if report.passed]
    timings = (
        _time_candidates({r: candidates[r] for r in passing}, job.out_dir, job.reference) if len(passing) > 1 else {}
    )
    chosen = min(passing, key=lambda r: timings.get(r, 0.0)) if passing else runtimes[0]
    path, report, details = candidates[chosen]
    details = {"runtime": chosen, **details}
    if cfg.runtime == AUTO:
        details["runtime_candidates"] = [
            {"runtime": r, "passed": rep.passed, "p50_ms": timings.get(r), "summary": rep.summary()}
            for r, (_, rep, _) in candidates.items()
        ]
        details["runtime_choice"] = note or (
            f"fastest that passed parity (batch 1, one thread, {TIMING_ROUNDS} rounds of {TIMING_BLOCK}-text blocks)"
            if len(passing) > 1
            else "the only one that passed parity"
            if passing
            else "none passed parity"
        )
        logger.info("--runtime auto: chose %s (%s)", chosen, details["runtime_choice"])
    return path, report, details


def _convert_and_verify(
    graph_path: Path,
    work_dir: Path,
    out_dir: Path,
    cfg: ExportConfig,
    reference: TorchReference,
    calibration_texts: list[str],
    simplified_from: tuple[Path, tuple[str, ...]] | None = None,
) -> tuple[ParityReport, dict[str, Any]]:
    """Write ``out_dir/model.onnx`` in the requested precision and return its parity report.

    For int8, the model of ``cfg.runtime`` (see :func:`_int8_for_runtime`), gated on that runtime; the details
    name the runtime chosen (``runtime``), which the manifest records for the predictor. ``simplified_from`` is the
    exporter's graph and the passes ``graph_path`` ran, when it is that graph's simplification: a runtime with other
    passes (:data:`OPENVINO_SIMPLIFY_PASSES`) simplifies the exporter's graph again (:meth:`_Int8Job.graph_for`).
    """
    target = out_dir / ONNX_FILE_NAME
    tokenizer_path = out_dir / TOKENIZER_FILE_NAME
    if cfg.precision == "fp32":
        shutil.copyfile(graph_path, target)
        return reference.compare(target, "fp32", tokenizer_path), {}
    if cfg.precision == "fp16":
        initializers = convert_fp16(graph_path, target)
        return reference.compare(target, "fp16", tokenizer_path), {"initializer_types": initializers}
    job = _Int8Job(graph_path, work_dir, out_dir, cfg, reference, calibration_texts, simplified_from)
    candidate, report, details = _int8_for_runtime(job)
    shutil.copyfile(candidate, target)
    return report, details


def _simplify_passes(cfg: ExportConfig) -> tuple[str, ...]:
    """The simplify passes of the export's graph: OpenVINO's for an int8 export built for OpenVINO alone, else all
    (ONNX Runtime's; ``--runtime auto`` simplifies again for its OpenVINO candidate)."""
    openvino_only = cfg.precision == "int8" and cfg.runtime == RUNTIME_OPENVINO
    return OPENVINO_SIMPLIFY_PASSES if openvino_only else PASSES


def _failure_message(out_dir: Path, cfg: ExportConfig, report: ParityReport, details: dict[str, Any]) -> str:
    message = f"{out_dir}: parity failed for the {cfg.precision} export ({report.n_texts} texts from {report.source})"
    message += f": {report.summary()}"
    remedies = [a for a in details.get("attempts", []) if a["remedy"]]
    if remedies:
        message += "; remedies tried, none passed: " + ", ".join(f"{a['remedy']} ({a['summary']})" for a in remedies)
    if details.get("runtime") == RUNTIME_OPENVINO:
        message += "; the int8 remedies are ONNX Runtime's only: try --runtime onnxruntime (or auto)"
    others = [c for c in details.get("runtime_candidates", []) if c["runtime"] != details.get("runtime")]
    if others:
        message += "; also failed: " + ", ".join(f"{c['runtime']} ({c['summary']})" for c in others)
    if cfg.keep_unverified:
        return message + f"; kept for inspection with verified: false in {out_dir}/edgesent.json; do not ship it"
    return message + "; nothing was written (pass --keep-unverified to keep the model for inspection)"


def export_model(model_dir: str | Path, out_dir: str | Path, cfg: ExportConfig | None = None) -> dict[str, Any]:
    """Export a fine-tuned PyTorch model directory to a verified ONNX directory.

    The output holds ``model.onnx``, ``config.json`` (label map), the tokenizer files and
    ``edgesent.json`` (source and its manifest hash, settings, opset, versions, sizes, sha256 of
    every file, parity report). It is written atomically: it appears complete or not at all.

    Args:
        model_dir: A PyTorch model directory (``edgesent finetune``).
        out_dir: The directory to create (``cfg.overwrite`` to replace one).
        cfg: Precision, quantization, optimisation and parity settings (default: fp32, the model's parity
            sample, else the probe texts).

    Returns:
        The manifest written, plus ``out_dir``.

    Raises:
        ModelError: the source is not an intact model directory (e.g. no tokenizer.json).
        ConfigError: bad settings or an unwritable/existing output. DataError: unusable parity or
            calibration data. ExportError: export, optimisation or conversion failed.
        ParityError: the model does not reproduce the source; nothing written unless keep_unverified.
    """
    started = time.perf_counter()
    cfg = cfg or ExportConfig()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _check_opset(cfg.opset)
    if cfg.runtime == RUNTIME_OPENVINO:
        require_openvino("--runtime openvino", OPENVINO_EXPORT_MODULES)
    source = read_model_dir(model_dir, kind=KIND_PYTORCH, verify=cfg.verify)
    task = get_task(source.task)
    try:
        hf_config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise ModelError(f"{model_dir}/config.json: unreadable ({_one_line(err)})") from err
    max_length = _resolve_max_length(cfg, source, hf_config, model_dir)
    parity_cfg = replace(cfg.parity, max_length=max_length, verify=cfg.verify)
    calibration_texts = _calibration_texts(cfg, task)
    with atomic_output_dir(out_dir, cfg.overwrite, sources=[model_dir]) as tmp_dir, scratch_dir("export") as tmp:
        work_dir = Path(tmp)
        reference = TorchReference(model_dir, parity_cfg)
        fp32_path, exporter = _export_fp32(model_dir, work_dir, cfg.opset, task)
        graph_path, fused, simplified, simplified_from = fp32_path, None, None, None
        if cfg.simplify and not cfg.optimize:
            graph_path = work_dir / "simplified.onnx"
            passes = _simplify_passes(cfg)
            simplified = simplify_graph(fp32_path, graph_path, passes)
            simplified_from = (fp32_path, passes)
        if cfg.optimize:
            graph_path = work_dir / "optimized.onnx"
            num_heads = getattr(hf_config, "num_attention_heads", None) or getattr(hf_config, "n_heads", 0)
            hidden_size = getattr(hf_config, "hidden_size", None) or getattr(hf_config, "dim", 0)
            fused = optimize_graph(fp32_path, graph_path, cfg.optimize, num_heads, hidden_size)
        _save_support_files(model_dir, tmp_dir, max_length)
        report, details = _convert_and_verify(
            graph_path, work_dir, tmp_dir, cfg, reference, calibration_texts, simplified_from
        )
        if not report.passed and not cfg.keep_unverified:
            raise ParityError(_failure_message(out_dir, cfg, report, details))
        runtime = details.get("runtime", RUNTIME_ONNXRUNTIME)
        onnx_bytes, fp32_bytes = (tmp_dir / ONNX_FILE_NAME).stat().st_size, fp32_path.stat().st_size
        graph = _graph_info(tmp_dir / ONNX_FILE_NAME)
        manifest = write_manifest(
            tmp_dir,
            KIND_ONNX,
            {
                "task": task.hf_task,
                "labels": list(source.labels),
                **task.manifest_fields(source.labels),
                "max_length": max_length,
                "onnx_file": ONNX_FILE_NAME,
                "precision": cfg.precision,
                "runtime": runtime,  # what the predictor runs it on by default (ModelDir.runtime)
                "verified": report.passed,
                "opset": graph["opset"],
                "inputs": graph["inputs"],
                "outputs": graph["outputs"],
                "source": {
                    "model_dir": str(model_dir.resolve()),
                    "manifest_sha256": source.sha256,
                    "base_model": source.manifest.get("base_model"),
                    "model_type": hf_config.model_type,
                },
                "export": {
                    **exporter,
                    "opset_requested": cfg.opset,
                    "optimize": cfg.optimize,
                    "fused_operators": fused,
                    "simplified": simplified,
                    "detected_target": detect_target(),
                    **details,
                    "sizes": {
                        "onnx_bytes": onnx_bytes,
                        "fp32_onnx_bytes": fp32_bytes,
                        "fp32_to_onnx_ratio": round(fp32_bytes / onnx_bytes, 3),
                    },
                    "config": cfg.to_dict(),
                    "wall_time_s": round(time.perf_counter() - started, 2),
                },
                # The report ran on the model in the temporary directory: record the file's name, not that path.
                "parity": {**report.to_dict(), "onnx_file": ONNX_FILE_NAME},
            },
        )
    if not report.passed:
        raise ParityError(_failure_message(out_dir, cfg, report, details))
    logger.info(
        "exported %s -> %s (%s via %s, for %s)", model_dir, out_dir, cfg.precision, exporter["exporter"], runtime
    )
    return {**manifest, "out_dir": str(out_dir.resolve())}
