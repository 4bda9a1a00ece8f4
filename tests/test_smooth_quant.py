"""bench/smooth_quant.py on the tiny model: one row per (alpha, min ratio) beside the unsmoothed int8, each with its
error, agreement and accuracy, JSON and table written. This proves the script, it measures nothing."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_bench_script, make_texts, write_csv


def test_smooth_quant_sweeps_alpha_and_ratio(_tiny_model_master: Path, tiny_onnx_dir: Path, tmp_path: Path):
    script = load_bench_script("smooth_quant")
    data = write_csv(tmp_path / "dev.csv", make_texts(4, seed=5))
    calibration = write_csv(tmp_path / "calibration.csv", make_texts(4, seed=6))
    out = tmp_path / "out"
    args = [str(_tiny_model_master), str(tiny_onnx_dir / "model.onnx"), "--data", str(data), "--target", "avx2"]
    args += ["--calibration-data", str(calibration), "--calibration-samples", "8", "--alphas", "0.5,0.8"]
    result = script.main([*args, "--min-ratios", "0,1000", "--out", str(out)])
    rows = result["variants"]
    assert [(r["alpha"], r["min_ratio"]) for r in rows] == [
        (0.0, 0.0),
        (0.5, 0.0),
        (0.8, 0.0),
        (0.5, 1000.0),
        (0.8, 1000.0),
    ]
    # ratio 0 smooths the input of every weight MatMul (2 layers x 4), a ratio no input reaches none
    assert [r["smoothed_matmuls"] for r in rows] == [0, 8, 8, 0, 0]
    for row in rows:
        for where in ("gate", "alone"):
            assert 0.0 <= row[where]["agreement"] <= 100.0 and row[where]["logit_error"] >= 0.0
    assert rows[3]["gate"] == rows[0]["gate"]  # nothing smoothed: the unsmoothed int8 exactly
    assert result["quantize"]["target"] == "avx2" and result["quantize"]["per_channel"] is True  # made per-channel
    assert result["quantize"]["smooth_alpha"] == 0.0 and result["calibration"]["samples"] == 8
    assert json.loads((out / "smooth_quant.json").read_text())["schema"] == "edgesent.smooth-quant/1"
    assert (out / "smooth_quant.md").read_text().count("\n| ") == 1 + len(rows)
