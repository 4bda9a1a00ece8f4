"""Which quantized MatMuls cost an int8 model its accuracy, and a remedy that keeps only those in fp32.

The parity gate's older remedies change the whole model (per-channel, ``reduce_range``) or fixed groups (the
head, the embeddings). This one targets the cause: it measures each quantized MatMul's contribution to the
output error on the parity data, then keeps the most sensitive ones in fp32 until the gate passes: the
export's remedy tries the top 1, 2, 4 and 8 (``edgesent.export.SENSITIVE_MATMUL_STEPS``);
``keep_sensitive_fp32`` (``bench/keep_fp32.py``) adds one at a time and records what each costs in latency.

**Method: leave one out.** For every MatMul that dynamic quantization turns into int8 (a MatMul whose B is an
initializer: ``quantize_dynamic``'s ``MatMulConstBOnly`` default), the model is quantized with that one node
excluded (``nodes_to_exclude=[name]``, every other setting as the real export) and run on the parity batches;
its ``gain`` is the full int8 model's mean absolute logit error minus this model's. The alternative, quantizing
one node alone (``nodes_to_quantize=[name]``), costs the same number of quantizations but runs N mostly-fp32
models (slower to evaluate) and answers a different question: what a node does alone, not what keeping it in
fp32 removes from the real int8 model, with every other node's rounding already in the activations it sees.
Leave-one-out is both the cheaper to run and the faithful one for the remedy.

Every ONNX Runtime session is built by ``edgesent.sessions.create_session`` on the CPU. Needs onnx,
onnxruntime and numpy; no torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgesent.artifacts import LOGITS_OUTPUT, scratch_dir
from edgesent.config.quantize import QuantizeConfig
from edgesent.errors import ConfigError, ExportError
from edgesent.sessions import create_session


logger = logging.getLogger(__name__)

__all__ = [
    "NodeSensitivity",
    "RemedyResult",
    "SensitivityRanking",
    "keep_sensitive_fp32",
    "latency_cost",
    "quantizable_matmuls",
    "quantize_excluding",
    "rank_matmuls",
    "run_logits",
]

Feeds = Sequence[Mapping[str, np.ndarray]]


def _config(cfg: QuantizeConfig | str | Mapping[str, Any]) -> QuantizeConfig:
    resolved = QuantizeConfig.resolve(cfg)
    if resolved.static:
        raise ConfigError("sensitivity: static (QDQ) quantization is not supported here; use a dynamic preset")
    return resolved


def quantizable_matmuls(model_path: Path) -> list[str]:
    """Names of the weight products dynamic int8 quantizes, in graph order: each MatMul whose second input (B) is
    an initializer, and each such Gemm (an Optimum export's pooler and classifier head, which ``quantize_dynamic``
    quantizes as ``<name>_MatMul``; ``quantize_model`` excludes them under both names).

    Raises:
        ExportError: a MatMul or Gemm without a name (the quantizer addresses nodes by name).
    """
    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    names = []
    for node in model.graph.node:
        transposed_a = any(a.name == "transA" and a.i for a in node.attribute)
        weight_op = node.op_type == "MatMul" or (node.op_type == "Gemm" and not transposed_a)
        if weight_op and len(node.input) > 1 and node.input[1] in initializers:
            if not node.name:
                raise ExportError(f"{model_path}: a MatMul has no name; cannot address it for quantization")
            names.append(node.name)
    return names


def quantize_excluding(
    fp32_path: Path,
    out_path: Path,
    nodes_to_exclude: Sequence[str],
    cfg: QuantizeConfig | str | Mapping[str, Any],
) -> dict[str, Any]:
    """Dynamic int8 with the given nodes left in fp32, with the weight settings of ``cfg``.

    ``edgesent.quantize.quantize_model`` itself (the one quantization path) for a dynamic config, with
    ``nodes_to_exclude`` extended by the names given (plain, unfused graphs: the export default).

    Args:
        fp32_path: The fp32 ONNX model.
        out_path: Where to write the int8 model.
        nodes_to_exclude: Node names to keep in fp32.
        cfg: A QuantizeConfig, preset name or settings mapping (``QuantizeConfig.resolve``); dynamic only.

    Returns:
        ``{"excluded_nodes": [...], "op_counts": {...}}`` of the written model, like ``quantize_model``.

    Raises:
        ConfigError: a static config. ExportError: the quantizer failed.
    """
    qcfg = _config(cfg)
    from edgesent.quantize import quantize_model  # the one quantization path, with these nodes added to fp32

    return quantize_model(fp32_path, out_path, replace(qcfg, fp32_nodes=(*qcfg.fp32_nodes, *nodes_to_exclude)))


def run_logits(model_path: Path, feeds: Feeds, threads: int = 1, provider: str = "cpu") -> np.ndarray:
    """Logits of an ONNX model on each batch, concatenated: (R, C) over all rows of ``feeds``.

    Each feed may hold more inputs than the model takes (``token_type_ids`` for a DistilBERT); extra ones are
    dropped. One session, ``create_session(model_path, provider, threads)``.
    """
    session = create_session(model_path, provider, threads)
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([session.run([LOGITS_OUTPUT], {n: feed[n] for n in names})[0] for feed in feeds])


@dataclass(frozen=True)
class NodeSensitivity:
    """One MatMul's share of the int8 error, measured by keeping it alone in fp32.

    Attributes:
        name: The node's name.
        logit_error: Mean absolute logit difference from the reference with this node in fp32, the rest int8.
        max_error: Largest absolute logit difference, same model.
        gain: The full int8 model's ``logit_error`` minus this one: what keeping the node in fp32 removes.
        flips: Rows whose argmax differs from the reference's, same model.
    """

    name: str
    logit_error: float
    max_error: float
    gain: float
    flips: int


@dataclass
class SensitivityRanking:
    """The full int8 model's error and every quantized MatMul, most sensitive (largest gain) first."""

    full_logit_error: float
    full_max_error: float
    full_flips: int
    nodes: list[NodeSensitivity]

    def names(self) -> list[str]:
        """Node names, most sensitive first."""
        return [n.name for n in self.nodes]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_quality(logits: np.ndarray, reference: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Of (R, C) int8 logits against the reference's and the rows' gold class ids: accuracy and agreement in
    percent, and the mean absolute logit error (the figures the int8 bench scripts report side by side)."""
    predicted = logits.argmax(-1)
    return {
        "accuracy": 100.0 * float((predicted == gold).mean()),
        "agreement": 100.0 * float((predicted == reference.argmax(-1)).mean()),
        "logit_error": _errors(logits, reference)[0],
    }


def _errors(logits: np.ndarray, reference: np.ndarray) -> tuple[float, float, int]:
    diff = np.abs(logits.astype(np.float64) - reference)  # (R, C)
    return float(diff.mean()), float(diff.max()), int((logits.argmax(-1) != reference.argmax(-1)).sum())


def rank_matmuls(
    fp32_path: Path,
    feeds: Feeds,
    cfg: QuantizeConfig | str | Mapping[str, Any],
    reference_logits: np.ndarray | None = None,
    nodes: Sequence[str] | None = None,
) -> SensitivityRanking:
    """Rank the quantized MatMuls by how much keeping each one in fp32 reduces the logit error (leave one out).

    Cost: one quantization and one pass over ``feeds`` per node, plus one for the full int8 model; on the
    6-layer MiniLM that is 37 passes, so give it the parity batches, not a whole dev set.

    Args:
        fp32_path: The fp32 ONNX model.
        feeds: Input batches (name -> (B, T) int64), e.g. ``TorchReference.batches``.
        cfg: The quantization settings of the export (dynamic).
        reference_logits: (R, C) reference over the rows of ``feeds`` (e.g. ``TorchReference.logits``);
            None: the fp32 ONNX model's own.
        nodes: The nodes to rank; None: :func:`quantizable_matmuls`.

    Returns:
        The ranking, largest gain first (ties: fewer flips first, then graph order).

    Raises:
        ConfigError: a static config, or reference logits that do not match the feeds' rows.
        ExportError: the quantizer failed.
    """
    fp32_path = Path(fp32_path)
    candidates = list(nodes) if nodes is not None else quantizable_matmuls(fp32_path)
    reference = run_logits(fp32_path, feeds) if reference_logits is None else np.asarray(reference_logits, np.float64)
    with scratch_dir("sensitivity") as work:
        full_path = Path(work) / "full.onnx"
        quantize_excluding(fp32_path, full_path, [], cfg)
        full_logits = run_logits(full_path, feeds)
        if full_logits.shape != reference.shape:
            raise ConfigError(f"reference logits {reference.shape} do not match the feeds' {full_logits.shape}")
        full_error, full_max, full_flips = _errors(full_logits, reference)
        results = []
        for i, name in enumerate(candidates):
            path = Path(work) / f"loo{i}.onnx"
            quantize_excluding(fp32_path, path, [name], cfg)
            error, worst, flips = _errors(run_logits(path, feeds), reference)
            results.append(NodeSensitivity(name, error, worst, full_error - error, flips))
            path.unlink()
            logger.debug("sensitivity %s: error %.4g (gain %.4g), %d flips", name, error, full_error - error, flips)
    order = sorted(range(len(results)), key=lambda i: (-results[i].gain, results[i].flips, i))
    return SensitivityRanking(full_error, full_max, full_flips, [results[i] for i in order])


@dataclass
class RemedyResult:
    """What :func:`keep_sensitive_fp32` kept in fp32 and what each attempt measured.

    Attributes:
        passed: Whether the written model passed ``passes``.
        excluded: The MatMuls kept in fp32 in the written model, most sensitive first.
        attempts: Per attempt: ``excluded`` (count), ``nodes``, ``logit_error``, ``flips`` and ``passed``.
        logits: (R, C) logits of the written model on the feeds.
        latency: ``latency_cost`` of the written model against full int8, when timing was asked for.
    """

    passed: bool
    excluded: list[str]
    attempts: list[dict[str, Any]]
    logits: np.ndarray = field(repr=False)
    latency: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: everything but the logits."""
        return {"passed": self.passed, "excluded": self.excluded, "attempts": self.attempts, "latency": self.latency}


def keep_sensitive_fp32(
    fp32_path: Path,
    out_path: Path,
    feeds: Feeds,
    cfg: QuantizeConfig | str | Mapping[str, Any],
    passes: Callable[[np.ndarray], bool],
    ranking: SensitivityRanking | None = None,
    reference_logits: np.ndarray | None = None,
    max_nodes: int | None = None,
    timing_feed: Mapping[str, np.ndarray] | None = None,
    timing_runs: int = 0,
) -> RemedyResult:
    """Keep the most sensitive MatMuls in fp32, one more per attempt, until ``passes`` accepts the logits.

    Attempt k excludes the top k nodes of the ranking (k = 1, 2, ... up to ``max_nodes``); the first that
    passes is written to ``out_path``. When none passes, the last attempt is written and ``passed`` is False.

    Args:
        fp32_path: The fp32 ONNX model.
        out_path: Where to write the chosen int8 model.
        feeds: The parity batches.
        cfg: Quantization settings (dynamic).
        passes: The gate on a candidate's (R, C) logits, e.g.
            ``lambda logits: agreement_verdict(reference.logits, logits, y).passed``.
        ranking: A ranking from :func:`rank_matmuls`; None: computed here.
        reference_logits: For the ranking (and the recorded errors); None: the fp32 ONNX model's logits.
        max_nodes: Most nodes kept in fp32 (default: all ranked nodes with a positive gain, at least one).
        timing_feed: One input batch to time full int8 against the result on (e.g. batch 1, 128 tokens).
        timing_runs: Interleaved timed runs per model (0, the default: no timing; see :func:`latency_cost`).

    Returns:
        The RemedyResult.

    Raises:
        ConfigError: a static config or a bad ``max_nodes``. ExportError: the quantizer failed.
    """
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    reference = run_logits(fp32_path, feeds) if reference_logits is None else np.asarray(reference_logits, np.float64)
    ranking = ranking or rank_matmuls(fp32_path, feeds, cfg, reference)
    useful = [n.name for n in ranking.nodes if n.gain > 0] or ranking.names()[:1]
    limit = len(useful) if max_nodes is None else max_nodes
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"max_nodes must be a positive integer, got {max_nodes!r}")
    order = useful[:limit] if max_nodes is None else ranking.names()[:limit]
    attempts: list[dict[str, Any]] = []
    logits = np.empty((0, 0))
    passed = False
    for k in range(1, len(order) + 1):
        quantize_excluding(fp32_path, out_path, order[:k], cfg)
        logits = run_logits(out_path, feeds)
        error, _, flips = _errors(logits, reference)
        passed = bool(passes(logits))
        attempts.append({"excluded": k, "nodes": order[:k], "logit_error": error, "flips": flips, "passed": passed})
        logger.info("keep %d MatMul(s) in fp32: logit error %.4g, %d flips, %s", k, error, flips, passed)
        if passed:
            break
    excluded = attempts[-1]["nodes"] if attempts else []
    latency = None
    if timing_feed is not None and timing_runs > 0:
        with scratch_dir("sensitivity-timing") as work:
            full_path = Path(work) / "full.onnx"
            quantize_excluding(fp32_path, full_path, [], cfg)
            latency = latency_cost(full_path, out_path, timing_feed, runs=timing_runs)
    return RemedyResult(passed, excluded, attempts, logits, latency)


def latency_cost(
    base_path: Path, candidate_path: Path, feed: Mapping[str, np.ndarray], runs: int = 60, threads: int = 1
) -> dict[str, float]:
    """p50 latency of two models on one batch, timed interleaved run by run, and their ratio.

    For the record of a remedy, on a quiet machine; the figures of a shared machine are not results.

    Args:
        base_path: The reference model (full int8).
        candidate_path: The model with nodes kept in fp32.
        feed: One input batch.
        runs: Timed runs per model after 5 warm-up runs each (default 60).
        threads: Intra-op threads (default 1).

    Returns:
        ``base_ms``, ``candidate_ms`` (p50) and ``cost`` = candidate / base.
    """
    sessions = [create_session(p, "cpu", threads, spinning=False) for p in (base_path, candidate_path)]
    feeds = [{i.name: feed[i.name] for i in s.get_inputs()} for s in sessions]
    times: list[list[float]] = [[], []]
    for _ in range(5):
        for s, f in zip(sessions, feeds):
            s.run(None, f)
    for _ in range(runs):
        for i, (s, f) in enumerate(zip(sessions, feeds)):
            start = time.perf_counter()
            s.run(None, f)
            times[i].append(time.perf_counter() - start)
    base, candidate = (float(np.median(t)) * 1e3 for t in times)
    return {"base_ms": base, "candidate_ms": candidate, "cost": candidate / base}
