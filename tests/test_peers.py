"""bench/peers.py on the tiny model: every variant is built or skipped with a reason, and the table and JSON are written.

Skipped as a whole without the ``peers`` extra (openvino, nncf). A handful of runs: this proves the script, it
measures nothing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest


pytest.importorskip("torch")
pytest.importorskip("optimum.onnxruntime")
if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None:
    pytest.skip("the peers extra is not installed: pip install 'edgesent[peers]'", allow_module_level=True)

from conftest import LABELS, make_texts, write_csv
from conftest import load_bench_script as load_script


@pytest.fixture(scope="module")
def plain_onnx_dir(_tiny_model_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's fp32 export without edgesent's simplification: where the peers start."""
    from conftest import _export

    return _export(_tiny_model_master, tmp_path_factory.mktemp("onnx") / "plain", simplify=False)


def test_peers_refuse_a_simplified_fp32_export(tiny_onnx_dir: Path):
    peers = load_script("peers")
    with pytest.raises(SystemExit, match="--no-simplify"):
        peers.Inputs(tiny_onnx_dir)


def test_peers_runs_every_variant_on_the_tiny_model(
    tiny_openvino_dir: Path, _tiny_model_master: Path, plain_onnx_dir: Path, tiny_int8_dir: Path, tmp_path: Path
):
    peers = load_script("peers")
    data = write_csv(tmp_path / "eval.csv", make_texts(3, seed=2))  # 9 labelled texts
    calibration = write_csv(tmp_path / "calib.csv", make_texts(4, seed=3))
    out = tmp_path / "out"
    result = peers.main(
        [
            "--model-dir",
            str(_tiny_model_master),
            "--onnx-fp32",
            str(plain_onnx_dir),
            "--int8",
            str(tiny_int8_dir),
            "--openvino-int8",
            str(tiny_openvino_dir),
            "--calibration-data",
            str(calibration),
            "--calibration-samples",
            "8",
            "--data",
            str(data),
            "--seq-len",
            "32",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--no-peak",
            "--out",
            str(out),
        ]
    )
    variants = {v["name"]: v for v in result["variants"]}
    built = {
        "pytorch-fp32",
        "torch-ao-int8",
        "ort-fp32",
        "ort-quantize-dynamic",
        "openvino-fp32",
        "openvino-nncf-int8",
        "edgesent-int8",
        "edgesent-static-int8",
        "edgesent-openvino-int8",
    }
    assert {n for n, v in variants.items() if v["skipped"] is None} >= built, variants
    assert variants["edgesent-pruned-int8"]["skipped"] == "not given (--pruned-int8)"
    assert variants["edgesent-pruned-openvino-int8"]["skipped"] == "not given (--pruned-openvino-int8)"
    assert variants["edgesent-openvino-int8"]["note"] == "openvino"  # run on the runtime its manifest records
    assert any(n.startswith("optimum-") for n in variants)
    rows = {(r["variant"], r["cell"]): r for r in result["rows"]}
    for name in built:
        for cell in ("fixed", "data"):
            assert rows[(name, cell)]["runs"] == 3 and rows[(name, cell)]["p50_ms"] > 0
        quality = result["quality"][name]
        assert 0 <= quality["agreement"] <= 1 and quality["accuracy"] is not None
    assert result["quality"]["pytorch-fp32"]["agreement"] == 1.0
    assert result["quality"]["ort-fp32"]["agreement"] == 1.0
    assert rows[("edgesent-int8", "fixed")]["gops"] > 0 and rows[("edgesent-int8", "fixed")]["seq_len"] == 32
    saved = json.loads((out / "peers.json").read_text())
    assert saved["schema"] == "edgesent.peers/1" and len(saved["variants"]) == len(variants)
    table = (out / "peers.md").read_text()
    assert "edgesent-int8" in table and "skipped: not given (--pruned-int8)" in table
    assert len(LABELS) == 3


def test_a_peer_that_cannot_be_built_is_a_row_not_a_crash():
    peers = load_script("peers")

    def broken():
        raise ImportError("no module", name="openvino")

    def failing():
        raise RuntimeError("bad model")

    assert "edgesent[peers]" in peers._try("x", "int8", broken).skipped
    assert peers._try("y", "int8", failing).skipped == "failed: RuntimeError: bad model"


def test_openvino_shapes_measures_every_cell_on_the_tiny_model(
    tiny_int8_dir: Path, tiny_openvino_dir: Path, tmp_path: Path
):
    shapes = load_script("openvino_shapes")
    data = write_csv(tmp_path / "eval.csv", make_texts(3, seed=2))  # 9 labelled texts
    out = tmp_path / "out"
    argv = [str(tiny_int8_dir), str(tiny_openvino_dir), str(data), "--lengths", "8", "16", "--alternate", "8", "16"]
    result = shapes.main([*argv, "--texts", "9", "--block", "3", "--runs", "2", "--pauses-ms", "1", "--out", str(out)])

    assert set(result["same_shape"]) == {8, 16}
    timings = [t for cell in result["same_shape"].values() for t in cell.values()]
    timings += [t for cell in result["alternating"].values() for t in cell.values()]
    timings += [t for cell in result["data"].values() for t in cell.values()]
    assert len(timings) == 4 + 4 + 6 and all(t > 0 for t in timings)
    assert set(result["data"]) == {"alone", "block 1", "block 3"}
    assert list(result["after_pause"]) == [1.0] and result["after_pause"][1.0] > 0
    assert result["data_mean_tokens"] > 2  # [CLS] text [SEP]
    assert json.loads((out / "shapes.json").read_text())["data"] == result["data"]
    table = (out / "shapes.md").read_text()
    assert "| 8 |" in table and "| 16 |" in table and "| openvino static per length |" in table
    assert "| alone |" in table and "| 1 ms |" in table


def test_measure_runs_block_consecutive_inputs_per_peer_and_turn():
    peers = load_script("peers")
    calls: list[tuple[str, int]] = []

    def runner(name: str):
        def run(feed: dict) -> np.ndarray:
            calls.append((name, int(feed["i"][0])))
            return np.zeros((1, 2))

        return run

    live = [peers.Peer(n, "int8", runner(n)) for n in ("a", "b")]
    skipped = peers.Peer("c", "int8", skipped="not given")
    feeds = [{"i": np.array([i])} for i in range(6)]
    times = peers.measure([*live, skipped], {"data": feeds}, runs=5, warmup=0, block=3)
    assert set(times) == {"a", "b"}
    assert [len(times[n]["data"]) for n in ("a", "b")] == [6, 6]  # 5 runs asked: two whole rounds of 3
    assert calls == [*(("a", i) for i in range(3)), *(("b", i) for i in range(3))] + [
        *(("b", i) for i in range(3, 6)),
        *(("a", i) for i in range(3, 6)),
    ]
