"""bench/simplify_passes.py on the tiny model: each runtime's int8 built per subset of passes, all timed in every
cell, accuracy on the data, the JSON and table written and the scratch models removed. A handful of runs: this
proves the script, it measures nothing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import load_bench_script, make_texts, write_csv


def test_simplify_passes_builds_and_times_every_subset(_tiny_model_master: Path, tmp_path: Path) -> None:
    pytest.importorskip("optimum.exporters.onnx")
    from edgesent.cli import cli

    plain = tmp_path / "plain"
    result = CliRunner().invoke(cli, ["export", str(_tiny_model_master), "--no-simplify", "--out", str(plain)])
    assert result.exit_code == 0, result.output
    data = write_csv(tmp_path / "eval.csv", make_texts(3, seed=4))
    has_openvino = all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))
    runtimes = ["onnxruntime", "openvino"] if has_openvino else ["onnxruntime"]
    args = [str(plain), "--data", str(data), "--calibration-data", str(data), "--passes", "", "--passes"]
    args += ["fold_shapes,merge_matmuls", "--runs", "4", "--blocks", "1", "2", "--seq-len", "16"]
    args += [arg for runtime in runtimes for arg in ("--runtime", runtime)]
    out = tmp_path / "out"
    report = load_bench_script("simplify_passes").main([*args, "--out", str(out)])
    rows = report["rows"]
    assert [(r["runtime"], r["passes"]) for r in rows] == [
        (runtime, passes) for runtime in runtimes for passes in ([], ["fold_shapes", "merge_matmuls"])
    ]
    cells = {"16 tokens, block 1", "eval.csv texts, block 1", "16 tokens, block 2", "eval.csv texts, block 2"}
    for row in rows:
        assert set(row["p50_ms"]) == cells and all(ms > 0 for ms in row["p50_ms"].values())
        assert 0.0 <= row["accuracy"] <= 1.0
    for runtime in runtimes:
        plain_nodes, simplified_nodes = [r["nodes"] for r in rows if r["runtime"] == runtime]
        assert simplified_nodes < plain_nodes  # the passes ran before quantizing
    assert json.loads((out / "passes.json").read_text())["schema"] == "edgesent.simplify-passes/1"
    assert (out / "passes.md").read_text().count("| onnxruntime |") == 2
    assert sorted(p.name for p in out.iterdir()) == ["passes.json", "passes.md"]  # scratch models removed
