"""bench/int8_batch_effect.py on the tiny models: labels alone, batched and in random input orders, accuracy with
gold labels, JSON and table written. This proves the script; it measures nothing."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_bench_script, make_texts, write_csv


def test_batch_effect_counts_unstable_labels_and_accuracy_over_orders(
    tiny_int8_dir: Path, tiny_onnx_dir: Path, tmp_path: Path
) -> None:
    script = load_bench_script("int8_batch_effect")
    rows = make_texts(6, seed=3)
    data = write_csv(tmp_path / "dev.csv", rows)
    out = tmp_path / "out"
    args = [str(tiny_int8_dir), str(tiny_onnx_dir), "--data", str(data), "--batch-size", "4", "--orders", "3"]
    int8, fp32 = script.main([*args, "--out", str(out)])
    for row in (int8, fp32):
        assert row["texts"] == len(rows) and row["orders"] == 3 and len(row["accuracy_orders"]) == 3
        assert 0.0 <= row["accuracy_alone"] <= 100.0
        assert row["accuracy_orders_min"] <= row["accuracy_orders_mean"] <= row["accuracy_orders_max"]
        assert row["texts_with_more_than_one_label"] >= row["labels_differ"]
    assert fp32["texts_with_more_than_one_label"] == 0  # fp32 labels do not depend on the batch
    assert len(set(fp32["accuracy_orders"]) | {fp32["accuracy_alone"], fp32["accuracy_batched"]}) == 1
    assert json.loads((out / "results.json").read_text())[0]["model"] == str(tiny_int8_dir)
    assert (out / "results.md").read_text().count("| int8 | onnxruntime |") == 1


def test_without_labels_there_is_no_accuracy(tiny_onnx_dir: Path, tmp_path: Path) -> None:
    script = load_bench_script("int8_batch_effect")
    data = write_csv(tmp_path / "dev.csv", make_texts(2, seed=1))
    (row,) = script.main([str(tiny_onnx_dir), "--data", str(data), "--label-column", "", "--orders", "1"])
    assert row["accuracy_alone"] is None and row["accuracy_orders"] == [] and row["accuracy_orders_mean"] is None
