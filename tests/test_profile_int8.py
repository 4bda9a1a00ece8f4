"""bench/profile_int8.py on the tiny int8 model: every cell profiled, shares by operator type, JSON and table written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_bench_script


pytest.importorskip("optimum.exporters.onnx")


def test_profile_reports_time_by_operator_type(tiny_int8_dir: Path, tmp_path: Path):
    profile = load_bench_script("profile_int8")
    out = tmp_path / "profile"
    result = profile.main(
        [str(tiny_int8_dir), "--batch-sizes", "1,4", "--seq-lens", "8,32", "--runs", "2", "--out", str(out)]
    )
    cells = result["cells"]
    assert [(c["batch"], c["seq_len"]) for c in cells] == [(1, 8), (1, 32), (4, 8), (4, 32)]
    for cell in cells:
        assert sum(cell["op_share"].values()) == pytest.approx(1.0)
        assert any(op in cell["op_share"] for op in ("MatMulIntegerToFloat", "MatMulInteger", "DynamicQuantizeMatMul"))
        assert cell["kernel_ms_per_run"] > 0
        c = cell["ceiling"]  # the tiny model's GEMMs are far too small to come near the machine's peak
        assert cell["wall_ms"] > 0 and c["rest_ms"] >= 0
        assert 0 < c["peak_fraction"] < c["ceiling_fraction"] and 0 < c["gemm_fraction"] < 1
    written = json.loads((out / "profile.json").read_text())
    assert written["schema"] == "edgesent.profile/1" and written["gemm_peak"]["int8_gops"] > 0
    table = (out / "profile.md").read_text()
    assert table.count("\n| ") >= 5 + 5 and "other" in table and "ceiling" in table


def test_ceiling_moves_the_products_to_their_peaks_and_keeps_the_rest():
    profile = load_bench_script("profile_int8")
    share = {"DynamicQuantizeMatMul": 0.5, "MatMul": 0.1, "Softmax": 0.4}
    peak = {"int8_gops": 1000.0, "fp32_gops": 100.0}  # 1e9 and 1e8 FLOPs per ms
    c = profile.ceiling(share, {"weights": 10**9, "attention": 10**8}, 10.0, peak)
    # at peak: 1 ms of int8 GEMMs + 1 ms of fp32 products; the rest stays 40% of 10 ms
    assert c["rest_ms"] == pytest.approx(4.0)
    assert c["peak_fraction"] == pytest.approx(1.1e9 / 10 / 1e9)
    assert c["gemm_fraction"] == pytest.approx(0.2) and c["product_fraction"] == pytest.approx(1.0)
    assert c["ceiling_fraction"] == pytest.approx(1.1e9 / 6 / 1e9)
    assert c["rest_budget_ms"] == pytest.approx(1.1e9 / 0.7e9 - 2)  # negative: 70% is out of reach
    assert profile.ceiling({"Softmax": 1.0}, {"weights": 1, "attention": 1}, 1.0, peak)["gemm_fraction"] is None


def test_op_times_sums_kernel_events():
    profile = load_bench_script("profile_int8")
    trace = [
        {"cat": "Node", "name": "a_kernel_time", "dur": 30, "args": {"op_name": "MatMulInteger"}},
        {"cat": "Node", "name": "b_kernel_time", "dur": 10, "args": {"op_name": "MatMulInteger"}},
        {"cat": "Node", "name": "c_fence_before", "dur": 99, "args": {"op_name": "Add"}},
        {"cat": "Node", "name": "d_kernel_time", "dur": 5, "args": {"op_name": "Add"}},
        {"cat": "Session", "name": "model_run", "dur": 1000},
    ]
    assert profile.op_times(trace) == {"MatMulInteger": 40.0, "Add": 5.0}
