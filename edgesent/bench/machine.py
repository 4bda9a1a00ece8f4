"""Facts about the machine a benchmark ran on: CPU and GPU, achieved GEMM peak, and peak RSS per variant.

The CPU facts come from ``edgesent.sessions.cpu_info`` (the one reader of /proc/cpuinfo, shared with the
quantizer's target detection). The GEMM peak runs in benchmark sessions (``create_bench_session``) so a
model's GOP/s and the peak are measured the same way; onnx is imported only to build those two graphs.
Peak RSS is measured in a child process per variant, which re-enters this module through ``rss_probe``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgesent.artifacts import library_versions
from edgesent.bench.config import SOURCE_SYNTHETIC
from edgesent.bench.runners import (
    OrtRunner,
    RunnerPool,
    Variant,
    create_bench_session,
    load_variant,
    measure_units,
    synthetic_inputs,
)
from edgesent.sessions import CUDA_PROVIDER, available_providers, cpu_info


logger = logging.getLogger(__name__)

# The FFN shape of MiniLM-H384 at batch 1, length 128: the GEMM that dominates the models we ship.
GEMM_SHAPE = (128, 384, 1536)
GEMM_RUNS = 30
RSS_PROBE_TIMEOUT_S = 600
# Instruction-set flags that decide int8/fp32/fp16 GEMM speed (x86 and ARM names).
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimdhp",
    "asimddp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
)


def gpu_names() -> list[str]:
    """GPU model names from nvidia-smi (empty without an NVIDIA driver)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=15, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def machine_info() -> dict[str, Any]:
    """CPU model and GEMM-relevant ISA flags, cores, OS, library versions, ORT providers, GPUs and devices.

    ``devices`` are the cell providers this machine can run: cpu, plus cuda when onnxruntime has the
    CUDA provider and nvidia-smi sees a GPU (what ``--provider auto`` resolves to).

    ``versions`` lists what is installed; whether torch was actually loaded is recorded by
    ``run_benchmark`` as ``machine["torch"]`` once the variants have run.
    """
    cpu = cpu_info()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    providers, gpus = available_providers(), gpu_names()
    return {
        "cpu_model": cpu.model,
        "cpu_flags": [f for f in ISA_FLAGS if f in cpu.flags],
        "logical_cores": os.cpu_count(),
        "physical_cores": cpu.physical_cores,
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "ort_providers": providers,
        "gpus": gpus,
        "devices": ["cpu", "cuda"] if CUDA_PROVIDER in providers and gpus else ["cpu"],
        "versions": library_versions(),
    }


def measure_gemm_peak(threads: int, shape: tuple[int, int, int] = GEMM_SHAPE, runs: int = GEMM_RUNS) -> dict[str, Any]:
    """The machine's achieved fp32 (MatMul) and int8 (MatMulInteger, u8 x s8) GEMM throughput in ORT.

    Both graphs are built with onnx.helper and run in the same kind of session as the models, with
    the weight as an initializer (pre-packed, as in a real model), interleaved run by run. The p50
    is used, as for the models, so ``peak_fraction`` compares like with like.

    Args:
        threads: intra-op threads.
        shape: (M, K, N) of (M, K) @ (K, N).
        runs: Timed runs per GEMM.

    Returns:
        ``shape``, ``threads``, ``fp32_gops`` and ``int8_gops`` (1 GOP = 1e9 multiply or add operations).
    """
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = shape
    rng = np.random.default_rng(0)

    def model(op: str, a_name: str, a_type: int, b: np.ndarray, y_type: int) -> bytes:
        graph = helper.make_graph(
            [helper.make_node(op, [a_name, "B"], ["Y"])],
            f"gemm_{op}",
            [helper.make_tensor_value_info(a_name, a_type, [m, k])],
            [helper.make_tensor_value_info("Y", y_type, [m, n])],
            initializer=[numpy_helper.from_array(b, "B")],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()

    graphs = [
        model("MatMul", "A", TensorProto.FLOAT, rng.standard_normal((k, n), dtype=np.float32), TensorProto.FLOAT),
        model(
            "MatMulInteger",
            "A_u8",
            TensorProto.UINT8,
            rng.integers(-128, 128, (k, n), dtype=np.int8),
            TensorProto.INT32,
        ),
    ]
    units = [OrtRunner(create_bench_session(g, "cpu", threads), io_binding=False) for g in graphs]
    # One feed dict for both: each session picks its own input by name.
    feeds = {"A": rng.standard_normal((m, k), dtype=np.float32), "A_u8": rng.integers(0, 256, (m, k), dtype=np.uint8)}
    samples = measure_units(units, [feeds], warmup=3, runs=runs, budget_s=None)
    ops = 2 * m * k * n
    fp32_s, int8_s = (float(np.percentile(s, 50)) / 1e9 for s in samples)
    return {"shape": list(shape), "threads": threads, "fp32_gops": ops / fp32_s / 1e9, "int8_gops": ops / int8_s / 1e9}


def measure_peak_rss(variant: Variant, provider: str, threads: int, batch_size: int, seq_len: int) -> float | None:
    """Peak resident memory (MB) of a fresh process that loads ``variant`` and runs one batch.

    A subprocess per variant, because a process's high-water mark cannot be reset: measured in the
    benchmark process it would report the largest variant for all of them. The figure includes the
    interpreter and the libraries the variant needs (torch for PyTorch, only onnxruntime for ONNX),
    which is what a deployment pays. None where the child fails (the reason is logged) or the
    platform reports no peak (Windows).
    """
    with tempfile.TemporaryDirectory(prefix="edgesent-rss-") as tmp:
        out_path = Path(tmp) / "rss.json"
        spec = {
            "model_dir": str(variant.model_dir),
            "name": variant.name,
            "provider": provider,
            "threads": threads,
            "batch_size": batch_size,
            "seq_len": seq_len,
            "out": str(out_path),
        }
        code = "import sys, edgesent.bench.machine as m; m.rss_probe(sys.argv[1])"
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code, json.dumps(spec)],
                check=False,
                capture_output=True,
                text=True,
                timeout=RSS_PROBE_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            logger.warning("peak RSS of %s not measured: the probe ran past %d s", variant.name, RSS_PROBE_TIMEOUT_S)
            return None
        if proc.returncode != 0 or not out_path.is_file():
            logger.warning("peak RSS of %s not measured: %s", variant.name, proc.stderr.strip()[-500:])
            return None
        peak = json.loads(out_path.read_text())["peak_rss_mb"]
        return None if peak is None else float(peak)


def peak_rss_mb() -> float | None:
    """This process's peak RSS in MB.

    Linux: VmHWM of /proc/self/status, not ``ru_maxrss``, which the kernel carries over from the
    parent across fork+exec and so would report the benchmark process's own (torch-sized) peak.
    """
    try:
        status = Path("/proc/self/status").read_text()
        return next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10  # bytes on macOS, KiB elsewhere


def rss_probe(spec_json: str) -> None:
    """Child-process side of ``measure_peak_rss``: load, run one batch, write the peak RSS."""
    spec = json.loads(spec_json)
    variant = load_variant(Path(spec["model_dir"]), spec["name"])
    units = RunnerPool([variant]).units(spec["provider"], spec["threads"], SOURCE_SYNTHETIC)
    feeds = synthetic_inputs(spec["batch_size"], spec["seq_len"], int(variant.hf_config.get("vocab_size", 2)), 0)
    runner = units[0][2]
    runner.run(runner.prepare(feeds))
    Path(spec["out"]).write_text(json.dumps({"peak_rss_mb": peak_rss_mb()}))
