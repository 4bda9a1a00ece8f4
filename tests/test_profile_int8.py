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
    assert json.loads((out / "profile.json").read_text())["schema"] == "edgesent.profile/1"
    table = (out / "profile.md").read_text()
    assert table.count("\n| ") >= 5 and "other" in table


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
