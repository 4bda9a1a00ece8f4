"""bench/ort_fusions.py on the tiny int8 model: both fusion settings timed in every cell, logits the same, JSON and
table written. A handful of runs: this proves the script, it measures nothing."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_bench_script, make_texts, write_csv


def test_ort_fusions_times_both_settings_in_every_cell(tiny_int8_dir: Path, tmp_path: Path) -> None:
    script = load_bench_script("ort_fusions")
    data = write_csv(tmp_path / "eval.csv", make_texts(3, seed=2))
    out = tmp_path / "out"
    args = [str(tiny_int8_dir), "--data", str(data), "--seq-lens", "8", "24", "--batch", "2", "--runs", "3"]
    result = script.main([*args, "--out", str(out)])
    name = tiny_int8_dir.name
    assert list(result["p50_ms"]) == ["8 tokens", "24 tokens", "eval.csv texts"]
    for times in result["p50_ms"].values():
        assert set(times) == {f"{name}/onnxruntime", f"{name}/edgesent"}
        assert all(ms > 0 for ms in times.values())
    assert result["max_abs_logit_diff"][name] < 1e-4
    assert result["unfused_by_edgesent"] == ["SkipLayerNormFusion"]
    assert json.loads((out / "fusions.json").read_text())["schema"] == "edgesent.ort-fusions/1"
    assert (out / "fusions.md").read_text().count(f"| {name} |") == 3
