"""bench/gpu_check.py: the dry run (the GPU check's steps on CPU, tiny model) passes, and a missing GPU fails fast.

The GPU check runs on a lent GPU for minutes at a time; this test is what keeps it from rotting in between.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


pytest.importorskip("torch")
pytest.importorskip("optimum.exporters.onnx")

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "bench" / "gpu_check.py"
STEPS = ["install", "environment", "finetune", "export", "bench", "predictor", "serve"]


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu-check") / "out"
    return _run("--dry-run", "--out", str(out), timeout=300), out


def test_dry_run_passes_every_step(dry_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    proc, out = dry_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema"] == "edgesent.gpu_check/1" and doc["exit_code"] == 0
    assert [s["step"] for s in doc["steps"]] == STEPS
    for step in doc["steps"]:
        assert step["status"] in ("ok", "skipped"), step
        assert step["seconds"] >= 0
        if step["status"] == "skipped":
            assert step["reason"]
    assert (out / "summary.md").read_text().startswith("# edgesent GPU check")
    assert all(c["passed"] or c["advisory"] for c in doc["checks"])


def test_dry_run_figures(dry_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    _, out = dry_run
    steps = {s["step"]: s for s in json.loads((out / "results.json").read_text())["steps"]}
    assert steps["environment"]["figures"]["ort_loaded"]

    finetune = steps["finetune"]["figures"]
    (fp32,) = finetune["runs"]  # AMP needs CUDA: skipped, with the reason
    assert fp32["precision"] == "fp32" and fp32["amp"] == "none" and fp32["samples_per_s"] > 0
    assert 0 <= fp32["accuracy"] <= 1
    assert any("amp: skipped: needs CUDA" in note for note in finetune["notes"])

    export = steps["export"]["figures"]
    assert [e["precision"] for e in export["exports"]] == ["fp32", "fp16", "int8"]
    assert all(e["parity_cpu"]["passed"] for e in export["exports"])
    device_parity = export["device_parity"]["results"]
    assert set(device_parity) == {"fp32", "fp16"} and all(r["passed"] for r in device_parity.values())

    bench = steps["bench"]["figures"]
    variants = {r["variant"] for r in bench["rows"]}
    assert variants == {"torch-fp32", "onnx-fp32", "onnx-fp16"}
    assert all(r["p50_ms"] > 0 and r["throughput"] > 0 for r in bench["rows"])
    assert bench["gates"] and all(g["status"] in ("pass", "fail") for g in bench["gates"])
    assert json.loads((out / "bench.json").read_text())["schema"] == "edgesent.bench/1"

    predictor = steps["predictor"]["figures"]
    assert predictor["agreement_with_cpu_fp32"]["fp32"] == 1.0
    assert all(v > 0 for v in predictor["e2e_texts_per_s_batch64"].values())

    serve = steps["serve"]["figures"]  # the bounded load test against a real server, batching on and off
    assert steps["serve"]["status"] == "ok" and serve["provider"] == "cpu" and serve["in_process_texts_per_s"] > 0
    assert set(serve["cells"]) == {"on", "off"} and all(set(cells) == {"1", "4"} for cells in serve["cells"].values())
    assert serve["summary"]["errors_on"] == serve["summary"]["errors_off"] == 0
    assert all(
        c["requests"] == 20 and c["texts_per_s"] > 0 for cells in serve["cells"].values() for c in cells.values()
    )


def test_cuda_without_gpu_fails_fast_in_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = _run("--device", "cuda", "--no-install", "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("gpu-check failed at install: ")
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [s["status"] for s in doc["steps"]] == ["failed"] and doc["exit_code"] == proc.returncode
