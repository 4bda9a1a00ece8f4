"""bench/keep_fp32.py on the tiny model: the ranking, one variant per k with its accuracy, agreement and timings,
JSON and table written. A handful of runs: this proves the script, it measures nothing."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_bench_script, make_texts, write_csv


def test_keep_fp32_measures_each_k(_tiny_model_master: Path, tiny_int8_dir: Path, tiny_onnx_dir: Path, tmp_path: Path):
    script = load_bench_script("keep_fp32")
    data = write_csv(tmp_path / "dev.csv", make_texts(4, seed=5))
    out = tmp_path / "out"
    fp32 = tiny_onnx_dir / "model.onnx"
    args = [str(_tiny_model_master), str(tiny_int8_dir), str(fp32), "--data", str(data), "--top", "2"]
    result = script.main([*args, "--seq-len", "16", "--runs", "3", "--out", str(out)])
    variants = result["variants"]
    assert [v["fp32_matmuls"] for v in variants] == [0, 1, 2]
    ranked = [node["name"] for node in result["ranking"]]
    assert variants[0]["nodes"] == [] and variants[2]["nodes"] == ranked[:2]  # the most sensitive first
    for v in variants:
        for where in ("gate", "alone"):
            assert 0.0 <= v[where]["accuracy"] <= 100.0 and 0.0 <= v[where]["agreement"] <= 100.0
        assert v["p50_ms_seq_len"] > 0 and v["p50_ms_texts"] > 0
    assert result["texts"] == 12 and result["quantize"]["per_channel"] is True  # the int8 export's settings
    assert json.loads((out / "keep_fp32.json").read_text())["schema"] == "edgesent.keep-fp32/1"
    assert (out / "keep_fp32.md").read_text().count("x) |") == 3 * 2  # both timings of each k
