"""Per-MatMul sensitivity on the tiny model: the ranking covers every quantized MatMul, and the remedy helps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest


pytest.importorskip("optimum.exporters.onnx")

from edgesent.agreement import agreement_verdict
from edgesent.config.quantize import QuantizeConfig
from edgesent.errors import ConfigError
from edgesent.sensitivity import (
    keep_sensitive_fp32,
    latency_cost,
    quantizable_matmuls,
    quantize_excluding,
    rank_matmuls,
    run_logits,
)


CFG = QuantizeConfig.for_target("avx512_vnni", smooth_alpha=0.0)  # the export's graph, unsmoothed


@pytest.fixture(scope="module")
def feeds(tiny_onnx_dir: Path) -> list[dict[str, np.ndarray]]:
    """12 batches of 4 random texts of 16 tokens: enough rows for a stable mean error."""
    rng = np.random.default_rng(0)
    return [
        {
            "input_ids": rng.integers(5, 100, (4, 16)).astype(np.int64),
            "attention_mask": np.ones((4, 16), np.int64),
            "token_type_ids": np.zeros((4, 16), np.int64),
        }
        for _ in range(12)
    ]


@pytest.fixture(scope="module")
def ranking(tiny_onnx_dir: Path, feeds):
    return rank_matmuls(tiny_onnx_dir / "model.onnx", feeds, CFG)


def test_ranking_covers_every_quantized_matmul(tiny_onnx_dir: Path, ranking):
    fp32 = tiny_onnx_dir / "model.onnx"
    names = quantizable_matmuls(fp32)
    assert len(names) >= 8  # 2 layers x (Q+K+V merged, attention out, FFN in, FFN out), + pooler/classifier
    assert {"/bert/pooler/dense/Gemm", "/classifier/Gemm"} <= set(names)  # the head: Gemms int8 quantizes too
    assert sorted(ranking.names()) == sorted(names)
    gains = [n.gain for n in ranking.nodes]
    assert gains == sorted(gains, reverse=True)
    assert ranking.full_logit_error > 0
    assert all(n.logit_error == pytest.approx(ranking.full_logit_error - n.gain) for n in ranking.nodes)


def test_excluding_the_top_node_reduces_the_logit_error(tiny_onnx_dir: Path, feeds, ranking, tmp_path: Path):
    fp32 = tiny_onnx_dir / "model.onnx"
    top = ranking.nodes[0]
    info = quantize_excluding(fp32, tmp_path / "top.onnx", [top.name], CFG)
    assert info["excluded_nodes"] == [top.name]
    model = onnx.load(str(tmp_path / "top.onnx"))
    floats = {n.name for n in model.graph.node if n.op_type == "MatMul"}  # a Gemm is quantized as <name>_MatMul
    assert top.name in floats or f"{top.name}_MatMul" in floats  # still a float product
    reference = run_logits(fp32, feeds)
    error = float(np.abs(run_logits(tmp_path / "top.onnx", feeds) - reference).mean())
    assert error < ranking.full_logit_error
    assert error == pytest.approx(top.logit_error, rel=1e-5)


def test_remedy_keeps_nodes_until_the_gate_passes(tiny_onnx_dir: Path, feeds, ranking, tmp_path: Path):
    fp32 = tiny_onnx_dir / "model.onnx"
    reference = run_logits(fp32, feeds)
    quantize_excluding(fp32, tmp_path / "top2.onnx", ranking.names()[:2], CFG)
    bound = float(np.abs(run_logits(tmp_path / "top2.onnx", feeds) - reference).mean())
    assert bound < ranking.nodes[0].logit_error  # true of the tiny model's ranking; the test needs it

    # A gate on the logit error that only the top two nodes in fp32 meet: the remedy must get there.
    def passes(logits: np.ndarray) -> bool:
        return float(np.abs(logits - reference).mean()) <= bound

    result = keep_sensitive_fp32(
        fp32, tmp_path / "remedy.onnx", feeds, CFG, passes, ranking=ranking, timing_feed=feeds[0], timing_runs=2
    )
    assert result.passed and result.excluded == ranking.names()[: len(result.excluded)]
    assert [a["excluded"] for a in result.attempts] == list(range(1, len(result.attempts) + 1))
    assert len(result.attempts) == 2 and result.attempts[1]["passed"] and not result.attempts[0]["passed"]
    assert passes(run_logits(tmp_path / "remedy.onnx", feeds))
    assert set(result.latency or {}) == {"base_ms", "candidate_ms", "cost"}
    # With the agreement rule as the gate (what parity will pass in), the full tiny int8 model already agrees.
    verdict = keep_sensitive_fp32(
        fp32,
        tmp_path / "agree.onnx",
        feeds,
        CFG,
        lambda logits: agreement_verdict(reference, logits).passed,
        ranking=ranking,
        max_nodes=1,
    )
    assert verdict.passed and len(verdict.excluded) == 1
    assert set(verdict.to_dict()) == {"passed", "excluded", "attempts", "latency"}


def test_static_settings_are_refused(tiny_onnx_dir: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="static"):
        quantize_excluding(tiny_onnx_dir / "model.onnx", tmp_path / "x.onnx", [], {"target": "avx2", "static": True})


def test_latency_cost_runs(tiny_onnx_dir: Path, tiny_int8_dir: Path, feeds):
    cost = latency_cost(tiny_int8_dir / "model.onnx", tiny_onnx_dir / "model.onnx", feeds[0], runs=2)
    assert cost["base_ms"] > 0 and cost["candidate_ms"] > 0
