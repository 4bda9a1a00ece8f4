"""bench/unsigned_activations.py on the tiny model: both forms built, their labels compared and each timed in its own
processes on each runtime, JSON and table written. A few runs: this proves the script, it measures nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_bench_script, make_texts, write_csv


def test_unsigned_activations_compares_and_times_both_forms(tiny_onnx_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    script = load_bench_script("unsigned_activations")
    data = write_csv(tmp_path / "calibration.csv", make_texts(3, seed=7))
    out = tmp_path / "out"
    args = [str(tiny_onnx_dir), "--calibration-data", str(data), "--lengths", "8", "16"]
    result = script.main([*args, "--runs", "3", "--rounds", "2", "--out", str(out)])
    assert result["unsigned_activations"] > 0 and result["calibration_texts"] > 0
    for runtime in ("onnxruntime", "openvino"):
        row = result["runtimes"][runtime]
        assert row["label_agreement"] >= 0.5 and set(row["against_fp32"]) == {"signed", "unsigned"}
        assert [len(row["rounds"][form]) for form in ("signed", "unsigned")] == [2, 2]
        assert all(row["p50_ms"][form][n] > 0 for form in ("signed", "unsigned") for n in ("8", "16"))
    assert json.loads((out / "unsigned_activations.json").read_text())["schema"] == "edgesent.unsigned-activations/1"
    assert (out / "unsigned_activations.md").read_text().count("x |") == 2 * 2  # two runtimes, two lengths
