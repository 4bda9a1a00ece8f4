"""The GPU half of edgesent in one prepared command: install, fine-tune, export, parity, bench, predict on CUDA.

Why one script: a GPU is lent for minutes at a time, from a bare machine with no internet, so the whole check
has to be ready before the machine is. ``--dry-run`` runs the same steps on CPU with a tiny random BERT and a
few training steps (CI runs it through ``tests/test_gpu_check.py``), so the script cannot rot between GPUs.

Every step is timed and written, as soon as it ends, into ``<out>/results.json`` and ``<out>/summary.md``;
a step that cannot run stops the check with one line on stderr and a non-zero exit. Failed checks (parity
bounds, latency gates, label agreement) do not stop it: they are recorded and make the exit code 1 at the end.

The parent process imports only the standard library: installing torch or onnxruntime-gpu must be possible
before anything imports them. The work happens in subprocesses: the public ``edgesent`` CLI
(``python -m edgesent ...``) and a few child functions of this file (``--child NAME``) that need torch,
transformers or onnxruntime directly (the environment probe, parity on the GPU, the tiny model).

Usage (bench/README.md, "GPU check")::

    bash bench/gpu_check.sh --out bench/results/gpu-h200 --wheels .whl   # on the GPU box
    python bench/gpu_check.py --dry-run --out /tmp/gpu-dry                # anywhere, on CPU, ~1 minute
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "edgesent.gpu_check/1"
STEPS = ("install", "environment", "finetune", "export", "bench", "predictor", "serve")
SERVE_MODULES = ("starlette", "uvicorn", "prometheus_client", "httpx")  # the serve extra, for the last step

# Parity on the device, ONNX Runtime against PyTorch fp32 on the same device. On CUDA, fp32 may run TF32
# matmuls in either library and reduces in another order, so the fp32 bound is 1e-3 rather than the CPU's 1e-4.
# fp16 runs natively end to end on the GPU (no casts back to fp32 as on the CPU), so the largest difference
# over hundreds of texts is looser than edgesent's CPU fp16 bound (1e-2); labels and accuracy carry the decision.
PARITY_BOUNDS: dict[str, dict[str, dict[str, float]]] = {
    "cuda": {
        "fp32": {"max_abs_diff": 1e-3, "min_agreement": 0.999, "max_accuracy_drop": 0.0},
        "fp16": {"max_abs_diff": 3e-2, "min_agreement": 0.99, "max_accuracy_drop": 0.01},
    },
    "cpu": {
        "fp32": {"max_abs_diff": 1e-4, "min_agreement": 1.0, "max_accuracy_drop": 0.0},
        "fp16": {"max_abs_diff": 3e-2, "min_agreement": 0.99, "max_accuracy_drop": 0.01},
    },
}
# Predictor labels on the device against the fp32 export on CPU.
MIN_LABEL_AGREEMENT = {"fp32": 0.999, "fp16": 0.99}

# Provisional GPU gate rules, used when bench/gates.toml has no rule for provider "cuda". Ratios only: no GPU
# figure has been measured yet, so the bounds are deliberately loose; tighten them from the first recorded run.
PROVISIONAL_GPU_RULES: list[dict[str, Any]] = [
    {
        "name": "onnx-fp16 with IO binding at least as fast as PyTorch (batch 1, length 128) [provisional]",
        "kind": "speedup",
        "variant": "onnx-fp16",
        "reference": "{torch}",
        "batch_size": 1,
        "seq_len": 128,
        "min": 1.0,
    },
    {
        "name": "onnx-fp16 tail latency: p99 at most 4x p50 (batch 1, length 128) [provisional]",
        "kind": "p99_over_p50",
        "variant": "onnx-fp16",
        "batch_size": 1,
        "seq_len": 128,
        "max": 4.0,
    },
]


class StepFailed(Exception):
    """A step cannot go on; the message is the one line the user sees."""


class StepSkipped(Exception):
    """The step does not apply here (a dry run without CUDA, a command that does not exist yet)."""


@dataclass
class Plan:
    """What this run does: the GPU run by default, the CPU rehearsal with ``--dry-run``."""

    device: str  # "cuda" | "cpu"
    dry_run: bool
    out_dir: Path
    work_dir: Path
    wheels: Path | None
    base: str | None
    sst2_dir: Path | None
    sst2_rows: int
    max_steps: int
    batch_sizes: str
    seq_lens: str
    warmup: int
    runs: int
    e2e_runs: int
    serve_requests: int
    serve_concurrency: str
    command_timeout_s: float
    install: bool

    @property
    def provider(self) -> str:
        return self.device

    @property
    def torch_name(self) -> str:
        # edgesent bench runs a PyTorch directory as fp16 on CUDA and fp32 on CPU.
        return "torch-fp16" if self.device == "cuda" else "torch-fp32"


@dataclass
class Run:
    """Everything the steps share: the plan, the subprocess environment, results so far, paths they produced."""

    plan: Plan
    env: dict[str, str]
    started: float = field(default_factory=time.perf_counter)
    steps: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    texts_path: Path | None = None

    @property
    def logs(self) -> Path:
        return self.plan.out_dir / "logs"

    def check(self, name: str, passed: bool, measured: Any, bound: str, timing: bool = False) -> None:
        """Record a pass/fail figure: failures do not stop the run, they make its exit code 1.

        Timing checks (latency gates) are advisory in a dry run: a tiny model on a shared CPU says nothing
        about the GPU, and a test must not fail on another job's burst.
        """
        advisory = timing and self.plan.dry_run
        self.checks.append(
            {"name": name, "passed": bool(passed), "advisory": advisory, "measured": measured, "bound": bound}
        )


# ---------------------------------------------------------------------------------------------------------------------
# Subprocesses


def _progress(message: str) -> None:
    print(f"gpu-check: {message}", file=sys.stderr, flush=True)


def _last_error_line(text: str) -> str:
    """The ``Error: ...`` line edgesent prints, else the last non-empty line: the one-line reason."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors or lines or ["(no output)"])[-1][:400]


def _run(
    run: Run, log_name: str, cmd: list[str], allowed: tuple[int, ...] = (0,), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``cmd`` with stdout captured and stderr logged to ``logs/<log_name>.log``; StepFailed on a bad exit."""
    run.logs.mkdir(parents=True, exist_ok=True)
    log_path = run.logs / f"{log_name}.log"
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        try:
            proc = subprocess.run(
                cmd,
                check=False,
                cwd=REPO_ROOT,
                env={**run.env, **(env or {})},
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                timeout=run.plan.command_timeout_s,
            )
        except subprocess.TimeoutExpired as err:
            raise StepFailed(
                f"{log_name}: timed out after {run.plan.command_timeout_s:.0f} s (log: {log_path})"
            ) from err
    if proc.returncode not in allowed:
        reason = _last_error_line(log_path.read_text(encoding="utf-8", errors="replace"))
        raise StepFailed(f"{log_name}: exit {proc.returncode}: {reason} (log: {log_path})")
    return proc


def _edgesent(
    run: Run, log_name: str, *args: str, allowed: tuple[int, ...] = (0,), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return _run(run, log_name, [sys.executable, "-m", "edgesent", *args], allowed, env)


def _child(run: Run, log_name: str, name: str, **kwargs: Any) -> dict[str, Any]:
    """Run one child function of this file in a fresh interpreter; it prints one JSON object."""
    proc = _run(run, log_name, [sys.executable, str(Path(__file__).resolve()), "--child", name, json.dumps(kwargs)])
    return json.loads(proc.stdout)


def _json_stdout(proc: subprocess.CompletedProcess, what: str) -> dict[str, Any]:
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as err:
        raise StepFailed(f"{what}: expected one JSON object on stdout, got {proc.stdout[:120]!r}") from err


def _help_text(run: Run, *command: str) -> str:
    return _edgesent(run, "help-" + ("-".join(command) or "edgesent"), *command, "--help").stdout


# ---------------------------------------------------------------------------------------------------------------------
# Step 0: install what is missing (timed separately)


def _pip(run: Run, log_name: str, *args: str) -> None:
    """pip from the wheel folder when given (the GPU box has no internet), else from the configured index."""
    source = ["--no-index", "--find-links", str(run.plan.wheels)] if run.plan.wheels else ["--retries", "1"]
    try:
        _run(run, log_name, [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *source, *args])
    except StepFailed as err:
        where = f"the wheel folder {run.plan.wheels}" if run.plan.wheels else "the package index (no --wheels DIR)"
        raise StepFailed(f"cannot install {' '.join(args)} from {where}: {err}") from err


def _probe(run: Run, log_name: str) -> dict[str, Any]:
    """The probe child, run with the environment every later subprocess gets (nvidia libraries added on CUDA)."""
    probe = _child(run, log_name, "probe")
    if run.plan.device == "cuda" and _add_nvidia_libs(run, probe):
        probe = _child(run, log_name + "-libs", "probe")
    return probe


def _add_nvidia_libs(run: Run, probe: dict[str, Any]) -> bool:
    """Put the CUDA libraries that pip's nvidia-* wheels ship on LD_LIBRARY_PATH for every later subprocess.

    onnxruntime-gpu finds cuDNN and cuBLAS through the loader; with a pip-installed CUDA torch they live in
    site-packages/nvidia/*/lib, which the loader does not search, and ONNX-only processes never import torch.
    """
    dirs = [d for d in probe.get("nvidia_lib_dirs", []) if d not in run.env.get("LD_LIBRARY_PATH", "")]
    if dirs:
        run.env["LD_LIBRARY_PATH"] = os.pathsep.join([*dirs, run.env.get("LD_LIBRARY_PATH", "")]).strip(os.pathsep)
    return bool(dirs)


def _swap(run: Run, installed: str, wanted: str) -> None:
    """Replace ``installed`` by ``wanted`` (a CUDA torch, onnxruntime-gpu), only once ``wanted`` is known to resolve.

    Uninstalling first keeps pip from calling the CPU build "already satisfied" or mixing two builds' files.
    """
    _pip(run, f"resolve-{wanted}", "--dry-run", "--ignore-installed", "--no-deps", wanted)
    _run(run, f"uninstall-{installed}", [sys.executable, "-m", "pip", "uninstall", "-y", installed])
    _pip(run, f"install-{wanted}", wanted)


def step_install(run: Run) -> dict[str, Any]:
    """edgesent with its train extra, a CUDA build of torch and onnxruntime-gpu, each only when missing."""
    plan, done = run.plan, []
    probe = _probe(run, "install-probe")
    if not probe["edgesent_train"]:
        if not plan.install:
            raise StepFailed(
                f"edgesent or its train extra is not importable ({probe['edgesent_error']}); --no-install"
            )
        _pip(run, "install-edgesent", "-e", f"{REPO_ROOT}[train]")
        done.append("edgesent[train]")
        probe = _probe(run, "install-probe-2")
        if not probe["edgesent_train"]:
            raise StepFailed(f"edgesent installed, but still not importable: {probe['edgesent_error']}")
    if plan.device == "cpu":
        return {"installed": done, "gpu_packages": "skipped: CPU run"}
    if not probe["nvidia_smi"]:
        raise StepFailed("no NVIDIA GPU: nvidia-smi is missing or lists no GPU")
    if not probe.get("torch_cuda"):
        if not plan.install:
            raise StepFailed(f"torch {probe.get('torch')} sees no CUDA GPU (CPU build?); --no-install")
        _swap(run, "torch", "torch")
        done.append("torch (CUDA build)")
        probe = _probe(run, "install-probe-torch")
        if not probe.get("torch_cuda"):
            raise StepFailed(
                f"torch {probe.get('torch')} (CUDA {probe.get('torch_cuda_version')}) still sees no GPU; "
                f"driver {probe['nvidia_smi'][0].get('driver')}: wheel and driver do not match"
            )
    if "CUDAExecutionProvider" not in probe.get("ort_available", []):
        if not plan.install:
            raise StepFailed(f"onnxruntime {probe.get('ort')} has no CUDAExecutionProvider; --no-install")
        _swap(run, "onnxruntime", "onnxruntime-gpu")  # both wheels install the module `onnxruntime`
        done.append("onnxruntime-gpu")
        probe = _probe(run, "install-probe-ort")
    if "CUDAExecutionProvider" not in probe.get("ort_loaded", []):
        raise StepFailed(
            f"onnxruntime {probe.get('ort')}: CUDAExecutionProvider does not load: {probe.get('ort_error')}"
        )
    return {"installed": done or "nothing: all present", "ld_library_path_added": probe.get("nvidia_lib_dirs", [])}


# ---------------------------------------------------------------------------------------------------------------------
# Step 1: environment


def step_environment(run: Run) -> dict[str, Any]:
    """What torch, onnxruntime and the driver see; fails on CUDA when any of them does not see the GPU."""
    probe = _probe(run, "environment")
    if run.plan.device == "cuda":
        if not probe.get("torch_cuda"):
            raise StepFailed(f"torch {probe.get('torch')} sees no CUDA GPU")
        if "CUDAExecutionProvider" not in probe.get("ort_loaded", []):
            raise StepFailed(f"onnxruntime CUDAExecutionProvider does not load: {probe.get('ort_error')}")
    probe.pop("edgesent_error", None)
    return probe


# ---------------------------------------------------------------------------------------------------------------------
# Step 2: fine-tuning, AMP against fp32


def _base(run: Run) -> str:
    """The base model: --base, the installed MiniLM on the GPU run, a tiny random BERT built here in a dry run."""
    if run.plan.base:
        return run.plan.base
    if not run.plan.dry_run:
        return "minilm-l6"
    tiny = run.plan.work_dir / "tiny-base"
    if not (tiny / "config.json").is_file():
        _child(run, "tiny-base", "tiny_model", out=str(tiny))
    return str(tiny)


def _demo_eval(run: Run) -> Path:
    proc = _run(run, "demo-path", [sys.executable, "-c", "from edgesent.demo import DEMO_EVAL; print(DEMO_EVAL)"])
    return Path(proc.stdout.strip())


def _sst2_slice(run: Run) -> tuple[Path, Path] | None:
    """The first ``sst2_rows`` rows of SST-2 train and all of dev, when the data set is at hand."""
    src = run.plan.sst2_dir
    if src is None or not (src / "train.tsv").is_file() or not (src / "dev.tsv").is_file():
        return None
    train = run.plan.work_dir / f"sst2-train-{run.plan.sst2_rows}.tsv"
    with open(src / "train.tsv", encoding="utf-8") as fin, open(train, "w", encoding="utf-8") as fout:
        for i, line in enumerate(fin):
            if i > run.plan.sst2_rows:
                break
            fout.write(line)
    return train, src / "dev.tsv"


def _finetune_fp32_args(run: Run) -> tuple[list[str], str]:
    """How to fine-tune in fp32 on CUDA: ``--precision fp32`` when the CLI has it, else AMP switched off in a child.

    ``edgesent finetune`` turns AMP on whenever it trains on CUDA; the comparison needs the same run without it.
    """
    if "--precision" in _help_text(run, "finetune"):
        cli = [sys.executable, "-m", "edgesent", "finetune", "--precision", "fp32"]
        return cli, "edgesent finetune --precision fp32"
    return [sys.executable, str(Path(__file__).resolve()), "--child", "finetune_fp32"], "AMP switched off in a child"


def _finetune_once(run: Run, label: str, precision: str, extra: list[str]) -> dict[str, Any]:
    out = run.plan.work_dir / "models" / f"{label}-{precision}"
    args = ["--base", _base(run), "--out", str(out), "--device", run.plan.device, "--overwrite", "--json", *extra]
    if run.plan.max_steps:
        args += ["--max-steps", str(run.plan.max_steps)]
    how = "edgesent finetune"
    if precision == "fp32":  # on CPU too, where AMP is off anyway: the dry run proves the GPU run's route
        prefix, how = _finetune_fp32_args(run)
        proc = _run(run, f"finetune-{label}-{precision}", [*prefix, *args])
    else:
        proc = _edgesent(run, f"finetune-{label}-{precision}", "finetune", *args)
    manifest = _json_stdout(proc, f"finetune {label} {precision}")
    device = manifest.get("device", {})
    amp = "bf16" if device.get("bf16") else "fp16" if device.get("fp16") else "none"
    if precision == "fp32" and amp != "none":
        raise StepFailed(f"finetune {label}: asked for fp32 but the run used {amp} AMP ({how})")
    run.paths[f"{label}-{precision}"] = out
    metrics = manifest.get("metrics", {})
    return {
        "data": label,
        "precision": precision,
        "amp": amp,
        "how": how,
        "samples_per_s": manifest.get("train_samples_per_second"),
        "train_runtime_s": manifest.get("train_runtime_s"),
        "wall_time_s": manifest.get("wall_time_s"),
        "accuracy": metrics.get("accuracy"),
        "macro_f1": metrics.get("macro_f1"),
        "device": device.get("name", device.get("type")),
    }


def step_finetune(run: Run) -> dict[str, Any]:
    """Demo data (and an SST-2 slice when present): AMP and fp32 on the device, samples/s and accuracy of each."""
    plan = run.plan
    datasets: list[tuple[str, list[str]]] = [("demo", ["--epochs", "1"] if plan.dry_run else [])]
    if plan.dry_run:
        datasets[0][1].extend(["--max-length", "32"])
    sst2 = _sst2_slice(run)
    if sst2 is not None:
        datasets.append(
            ("sst2", ["--data", str(sst2[0]), "--eval-data", str(sst2[1]), "--epochs", "1", "--max-length", "64"])
        )
    runs, skipped = [], []
    for label, extra in datasets:
        for precision in ("amp", "fp32"):
            if precision == "amp" and plan.device != "cuda":
                skipped.append(f"{label} amp: skipped: needs CUDA (edgesent uses AMP only on a GPU)")
                continue
            _progress(f"  finetune {label} {precision}")
            runs.append(_finetune_once(run, label, precision, extra))
    speedups = {}
    for label, _ in datasets:
        by = {r["precision"]: r for r in runs if r["data"] == label}
        if "amp" in by and by["amp"]["samples_per_s"] and by["fp32"]["samples_per_s"]:
            speedups[label] = round(by["amp"]["samples_per_s"] / by["fp32"]["samples_per_s"], 3)
    # Later steps use the model of the last data set (SST-2 when present), trained the way users train on
    # this device: AMP on CUDA, fp32 on CPU.
    main_key = f"{datasets[-1][0]}-{'amp' if plan.device == 'cuda' else 'fp32'}"
    run.paths["model"] = run.paths[main_key]
    run.texts_path = sst2[1] if sst2 is not None else _demo_eval(run)
    notes = skipped + ([] if sst2 is not None else [f"SST-2 slice: skipped: no train.tsv/dev.tsv in {plan.sst2_dir}"])
    return {"runs": runs, "amp_speedup": speedups, "model_for_later_steps": main_key, "notes": notes}


# ---------------------------------------------------------------------------------------------------------------------
# Step 3: export fp32, fp16 and int8, with parity


def _export_once(run: Run, precision: str, jobs: int) -> dict[str, Any]:
    out = run.plan.work_dir / "models" / f"onnx-{precision}"
    flags = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8"]}[precision]
    assert run.texts_path is not None
    args = ["export", str(run.paths["model"]), *flags, "--out", str(out), "--parity-data", str(run.texts_path)]
    threads = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))} if jobs > 1 else None
    args += ["--keep-unverified", "--overwrite", "--json"]
    proc = _edgesent(run, f"export-{precision}", *args, allowed=(0, 1), env=threads)
    manifest_path = out / "edgesent.json"
    if proc.returncode != 0 and not manifest_path.is_file():
        reason = _last_error_line((run.logs / f"export-{precision}.log").read_text(encoding="utf-8", errors="replace"))
        raise StepFailed(f"export {precision}: exit 1 and no model written: {reason}")
    manifest = (
        _json_stdout(proc, f"export {precision}") if proc.returncode == 0 else json.loads(manifest_path.read_text())
    )
    run.paths[f"onnx-{precision}"] = out
    parity = manifest.get("parity", {})
    run.check(
        f"export {precision}: edgesent parity on CPU",
        parity.get("passed", proc.returncode == 0),
        {k: parity.get(k) for k in ("max_abs_diff", "agreement", "accuracy_delta")},
        json.dumps(parity.get("thresholds")),
    )
    info = manifest.get("export", {})
    return {
        "precision": precision,
        "exporter": info.get("exporter"),
        "onnx_bytes": info.get("sizes", {}).get("onnx_bytes"),
        "remedy": info.get("remedy"),
        "parity_cpu": {k: parity.get(k) for k in ("passed", "n_rows", "max_abs_diff", "agreement", "accuracy_delta")},
    }


def step_export(run: Run) -> dict[str, Any]:
    """fp32, fp16 and int8 exports (edgesent's CPU parity each), then fp32 and fp16 parity on the device."""
    # Exports run on the CPU; a machine with cores to spare (the GPU box) runs the three at once.
    jobs = 3 if (os.cpu_count() or 1) >= 12 else 1
    _progress(f"  export fp32, fp16, int8 ({jobs} at a time)")
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        exports = list(pool.map(lambda precision: _export_once(run, precision, jobs), ("fp32", "fp16", "int8")))
    _progress(f"  parity on {run.plan.device}")
    assert run.texts_path is not None
    device_parity = _child(
        run,
        f"parity-{run.plan.device}",
        "parity",
        model=str(run.paths["model"]),
        onnx={p: str(run.paths[f"onnx-{p}"]) for p in ("fp32", "fp16")},
        texts=str(run.texts_path),
        device=run.plan.device,
    )
    for precision, result in device_parity["results"].items():
        bounds = PARITY_BOUNDS[run.plan.device][precision]
        drop = result.get("accuracy_drop")
        ok = (
            result["max_abs_diff"] <= bounds["max_abs_diff"]
            and result["agreement"] >= bounds["min_agreement"]
            and (drop is None or drop <= bounds["max_accuracy_drop"] + 1e-12)
        )
        result["bounds"] = bounds
        result["passed"] = ok
        run.check(
            f"parity {precision} ONNX vs PyTorch fp32 on {run.plan.device}",
            ok,
            {k: result.get(k) for k in ("max_abs_diff", "agreement", "accuracy_drop")},
            json.dumps(bounds),
        )
    return {"exports": exports, "device_parity": device_parity}


# ---------------------------------------------------------------------------------------------------------------------
# Step 4: edgesent bench on the device, with the GPU gate rules


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def _toml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def write_gate_file(run: Run) -> tuple[Path, str]:
    """The rules for this run: bench/gates.toml's rules for the run's provider, else the provisional GPU rules.

    On CPU (dry run) the provisional GPU rules are evaluated with provider "cpu", so the gate path is exercised.
    """
    doc = _load_toml(REPO_ROOT / "bench" / "gates.toml")
    defaults = doc.get("defaults", {})
    names = {run.plan.torch_name, "onnx-fp32", "onnx-fp16"}
    rules = [{**defaults, **rule} for rule in doc.get("rule", [])]
    rules = [r for r in rules if r.get("provider", "cpu") == run.plan.provider and r.get("variant") in names]
    rules = [r for r in rules if r.get("reference", run.plan.torch_name) in names]
    source = "bench/gates.toml"
    if run.plan.provider == "cpu" or not rules:
        source = "the provisional GPU rules of bench/gpu_check.py" + (
            ", evaluated on cpu" if run.plan.provider == "cpu" else " (bench/gates.toml has no GPU rule)"
        )
        rules = [
            {**r, "reference": run.plan.torch_name} if "reference" in r else dict(r) for r in PROVISIONAL_GPU_RULES
        ]
    lines = [f"# Written by bench/gpu_check.py; source: {source}\n"]
    for rule in rules:
        rule = {"threads": 1, **rule, "provider": run.plan.provider}
        lines.append("[[rule]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in rule.items()]
        lines.append("")
    path = run.plan.out_dir / "gates_used.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path, source


def _bench_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    keys = ("variant", "provider", "batch_size", "seq_len", "source", "mode", "p50_ms", "p99_ms", "throughput")
    return [{k: row.get(k) for k in keys} for row in doc.get("rows", [])]


def step_bench(run: Run) -> dict[str, Any]:
    """PyTorch against ONNX fp32 and fp16 over the batch x length grid, IO binding on CUDA, gates evaluated."""
    plan = run.plan
    gate_path, gate_source = write_gate_file(run)
    dirs = [run.paths["model"], run.paths["onnx-fp32"], run.paths["onnx-fp16"]]
    names = [plan.torch_name, "onnx-fp32", "onnx-fp16"]
    args = ["bench", *map(str, dirs), *[a for n in names for a in ("--name", n)], "--provider", plan.provider]
    args += ["--batch-sizes", plan.batch_sizes, "--seq-lens", plan.seq_lens, "--warmup", str(plan.warmup)]
    args += ["--runs", str(plan.runs), "--gate", str(gate_path), "--no-rss", "--no-peak", "--json"]
    proc = _edgesent(run, "bench", *args, allowed=(0, 1))
    doc = _json_stdout(proc, "edgesent bench")
    (plan.out_dir / "bench.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    for gate in doc.get("gates", []):
        if gate.get("status") != "skip":
            passed, measured = gate.get("status") == "pass", gate.get("measured")
            run.check(f"gate: {gate.get('name')}", passed, measured, gate.get("message"), timing=True)
    return {
        "variants": names,
        "note": "edgesent bench runs a PyTorch directory as fp16 on CUDA (fp32 on CPU): no PyTorch fp32 row on CUDA",
        "gate_source": gate_source,
        "gates": [{k: g.get(k) for k in ("name", "status", "message")} for g in doc.get("gates", [])],
        "rows": _bench_rows(doc),
        "gpus": doc.get("machine", {}).get("gpus"),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Step 5: the predictor on the device


def _labels(run: Run, precision: str, provider: str) -> list[str]:
    assert run.texts_path is not None
    args = ["predict", str(run.paths[f"onnx-{precision}"]), "--input", str(run.texts_path), "--json"]
    proc = _edgesent(run, f"predict-{precision}-{provider}", *args, "--provider", provider, "--batch-size", "64")
    return [json.loads(line).get("label") for line in proc.stdout.splitlines() if line.strip()]


def step_predictor(run: Run) -> dict[str, Any]:
    """Labels on the device against the fp32 export on CPU; end-to-end texts/s at batch 64 (edgesent bench --data)."""
    plan = run.plan
    reference = _labels(run, "fp32", "cpu")
    agreement = {}
    for precision in ("fp32", "fp16"):
        labels = _labels(run, precision, plan.provider)
        if len(labels) != len(reference):
            raise StepFailed(
                f"predict {precision} on {plan.provider}: {len(labels)} results for {len(reference)} texts"
            )
        agreement[precision] = sum(a == b for a, b in zip(labels, reference)) / max(len(reference), 1)
        run.check(
            f"predictor {precision} on {plan.provider}: labels equal to fp32 on CPU",
            agreement[precision] >= MIN_LABEL_AGREEMENT[precision],
            round(agreement[precision], 5),
            f">= {MIN_LABEL_AGREEMENT[precision]}",
        )
    args = ["bench", str(run.paths["onnx-fp32"]), str(run.paths["onnx-fp16"]), "--name", "onnx-fp32"]
    args += ["--name", "onnx-fp16", "--provider", plan.provider, "--data", str(run.texts_path), "--batch-sizes", "64"]
    args += ["--seq-lens", "32", "--warmup", "2", "--runs", str(plan.e2e_runs), "--no-rss", "--no-peak", "--json"]
    doc = _json_stdout(_edgesent(run, "predictor-e2e", *args), "edgesent bench --data")
    e2e = {row["variant"]: row["throughput"] for row in doc.get("rows", []) if row.get("mode") == "e2e"}
    return {
        "texts": str(run.texts_path),
        "n_texts": len(reference),
        "agreement_with_cpu_fp32": agreement,
        "e2e_texts_per_s_batch64": e2e,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Step 6: the server


def step_serve(run: Run) -> dict[str, Any]:
    """``edgesent serve`` of the fp16 export on the device under ``bench/serve_load.py``'s bounded load test.

    The load test starts and stops the server itself on a free loopback port; every loop is bounded by its
    request count and by a deadline inside this step's subprocess timeout. Errors and a clean stop are checks;
    throughput against the in-process predictor is a figure (issue 12's 0.7x goal is a CPU one: on a GPU the
    in-process predictor's batches of 64 outrun any stream of one-text HTTP requests).
    """
    plan = run.plan
    missing = [m for m in SERVE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        if not plan.install:
            raise StepFailed(f"the serve extra is missing ({', '.join(missing)}); --no-install")
        _pip(run, "install-serve", "-e", f"{REPO_ROOT}[serve]")
    out = plan.out_dir / "serve"
    args = ["--model", str(run.paths["onnx-fp16"]), "--provider", plan.provider, "--data", str(run.texts_path)]
    args += ["--requests", str(plan.serve_requests), "--concurrency", plan.serve_concurrency, "--batching", "on,off"]
    args += ["--leak-requests", "0", "--timeout", str(max(plan.command_timeout_s - 60, 30)), "--out", str(out)]
    _run(run, "serve-load", [sys.executable, str(REPO_ROOT / "bench" / "serve_load.py"), *args])
    report = json.loads((out / "results.json").read_text(encoding="utf-8"))
    summary = report["summary"]
    for mode, served in report["served"].items():
        errors = sum(sum(cell["errors"].values()) for cell in served["cells"].values())
        run.check(f"serve batching {mode}: no errors in any cell", errors == 0, errors, "== 0")
        run.check(
            f"serve batching {mode}: exit code after SIGTERM",
            served["exit_code_after_sigterm"] == 0,
            served["exit_code_after_sigterm"],
            "== 0",
        )
    return {
        "model": "onnx-fp16",
        "provider": plan.provider,
        "in_process_texts_per_s": report["in_process"]["texts_per_s"],
        "cells": {mode: served["cells"] for mode, served in report["served"].items()},
        "summary": summary,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Results


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return "" if value is None else str(value)


def _md_table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    return out + ["| " + " | ".join(_fmt(v).replace("|", "/") for v in row) + " |" for row in rows]


def write_results(run: Run, exit_code: int | None, reason: str | None) -> None:
    """results.json and summary.md of everything so far (called after every step, so a killed run leaves them)."""
    plan = run.plan
    install = next((s["seconds"] for s in run.steps if s["step"] == "install"), 0.0)
    total = round(time.perf_counter() - run.started, 2)
    doc = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "dry-run (CPU)" if plan.dry_run else plan.device,
        "device": plan.device,
        "total_seconds": total,
        "install_seconds": install,
        "check_seconds": round(total - install, 2),
        "exit_code": exit_code,
        "reason": reason,
        "steps": run.steps,
        "checks": run.checks,
    }
    (plan.out_dir / "results.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    md = [f"# edgesent GPU check: {doc['mode']}", ""]
    md.append(f"{doc['created']}; {total:.1f} s in all, of which install {install:.1f} s.")
    md.append(f"Exit code {exit_code}" + (f": {reason}" if reason else "") if exit_code is not None else "Running.")
    md += ["", "## Steps", ""]
    md += _md_table(
        ["step", "status", "seconds", "reason"],
        [[s["step"], s["status"], s["seconds"], s.get("reason")] for s in run.steps],
    )
    md += ["", "## Checks", ""]
    md += _md_table(
        ["check", "result", "measured", "bound"],
        [[c["name"], "PASS" if c["passed"] else "FAIL", c["measured"], c["bound"]] for c in run.checks],
    )
    figures = {s["step"]: s.get("figures", {}) for s in run.steps}
    if env := figures.get("environment"):
        md += ["", "## Environment", ""]
        md += _md_table(["what", "value"], [[k, v] for k, v in env.items()])
    if ft := figures.get("finetune"):
        md += ["", "## Fine-tuning", ""]
        keys = ["data", "precision", "amp", "samples_per_s", "train_runtime_s", "accuracy", "macro_f1", "device"]
        md += _md_table(keys, [[r.get(k) for k in keys] for r in ft.get("runs", [])])
        md += ["", f"AMP speedup (samples/s AMP / fp32): {_fmt(ft.get('amp_speedup')) or 'n/a'}"]
        md += [f"- {note}" for note in ft.get("notes", [])]
    if ex := figures.get("export"):
        md += ["", "## Export and parity", ""]
        md += _md_table(
            ["precision", "exporter", "onnx_bytes", "parity on CPU"],
            [[e["precision"], e["exporter"], e["onnx_bytes"], e["parity_cpu"]] for e in ex.get("exports", [])],
        )
        device_parity = ex.get("device_parity", {})
        md += ["", f"On {device_parity.get('device')} ({device_parity.get('n_texts')} texts):", ""]
        keys = ["max_abs_diff", "mean_abs_diff", "agreement", "accuracy_drop", "passed", "bounds"]
        md += _md_table(
            ["onnx", *keys], [[p, *[r.get(k) for k in keys]] for p, r in device_parity.get("results", {}).items()]
        )
        md += [f"- {note}" for note in device_parity.get("notes", [])]
    if be := figures.get("bench"):
        md += ["", f"## Bench ({be['gate_source']})", "", be["note"], ""]
        keys = ["variant", "batch_size", "seq_len", "p50_ms", "p99_ms", "throughput"]
        md += _md_table(keys[:-1] + ["texts/s"], [[r.get(k) for k in keys] for r in be.get("rows", [])])
    if pr := figures.get("predictor"):
        md += ["", "## Predictor", ""]
        md += [
            f"{pr['n_texts']} texts from {pr['texts']}; agreement with fp32 on CPU: {_fmt(pr['agreement_with_cpu_fp32'])}"
        ]
        md += [f"End to end, batch 64 (texts/s): {_fmt(pr['e2e_texts_per_s_batch64'])}"]
    (plan.out_dir / "summary.md").write_text("\n".join(md) + "\n", encoding="utf-8")


STEP_FUNCTIONS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "install": step_install,
    "environment": step_environment,
    "finetune": step_finetune,
    "export": step_export,
    "bench": step_bench,
    "predictor": step_predictor,
    "serve": step_serve,
}


def run_check(plan: Plan) -> int:
    """Run every step in order; stop at the first that fails. Returns the exit code (0 ok, 1 check failed, 2 step failed)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    if plan.dry_run:
        env.setdefault("CUDA_VISIBLE_DEVICES", "")  # the rehearsal is CPU only, even on a machine with a GPU
    run = Run(plan=plan, env=env)
    for name in STEPS:
        _progress(f"{name} ...")
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"step": name}
        try:
            entry.update(status="ok", figures=STEP_FUNCTIONS[name](run))
        except StepSkipped as err:
            entry.update(status="skipped", reason=str(err))
        except StepFailed as err:
            entry.update(status="failed", reason=str(err))
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        run.steps.append(entry)
        _progress(
            f"{name}: {entry['status']} in {entry['seconds']:.1f} s"
            + (f": {entry['reason']}" if "reason" in entry else "")
        )
        if entry["status"] == "failed":
            write_results(run, 2, f"{name}: {entry['reason']}")
            print(f"gpu-check failed at {name}: {entry['reason']}", file=sys.stderr)
            return 2
        write_results(run, None, None)
    failed = [c["name"] for c in run.checks if not c["passed"] and not c["advisory"]]
    reason = f"{len(failed)} check(s) failed: {'; '.join(failed)}" if failed else None
    write_results(run, 1 if failed else 0, reason)
    _progress(
        f"done in {time.perf_counter() - run.started:.1f} s: {plan.out_dir}/summary.md"
        + (f"; {reason}" if reason else "")
    )
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------------------------------
# Children: run in a fresh interpreter (they import torch, transformers, onnxruntime), print one JSON object.


def child_probe() -> dict[str, Any]:
    """Versions and devices as torch, onnxruntime and nvidia-smi see them; never raises on a missing piece."""
    import platform

    info: dict[str, Any] = {"python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        import edgesent
        from edgesent._imports import require_train_extra

        require_train_extra("gpu-check")
        info.update(edgesent=getattr(edgesent, "__version__", "?"), edgesent_train=True, edgesent_error=None)
    except Exception as err:  # noqa: BLE001 - any import failure means: install it
        info.update(
            edgesent_train=False,
            edgesent_error=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
        )
    info["nvidia_smi"] = _nvidia_smi()
    try:
        import torch

        info.update(
            torch=torch.__version__, torch_cuda_version=torch.version.cuda, torch_cuda=torch.cuda.is_available()
        )
        info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        if info["torch_cuda"]:
            props = torch.cuda.get_device_properties(0)
            info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
            info.update(compute_capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported())
    except ImportError as err:
        info.update(torch=None, torch_error=str(err))
    info["nvidia_lib_dirs"] = _nvidia_lib_dirs()
    try:
        import onnxruntime as ort

        info.update(ort=ort.__version__, ort_device=ort.get_device(), ort_available=ort.get_available_providers())
        try:
            from onnxruntime.capi import build_and_package_info as build

            info.update(
                ort_cuda_version=getattr(build, "cuda_version", None),
                ort_cudnn_version=getattr(build, "cudnn_version", None),
            )
        except ImportError:
            pass
        info["ort_loaded"], info["ort_error"] = _loading_providers(ort, info["ort_available"])
    except ImportError as err:
        info.update(ort=None, ort_available=[], ort_loaded=[], ort_error=str(err))
    return info


def _nvidia_smi() -> list[dict[str, str]]:
    if shutil.which("nvidia-smi") is None:
        return []
    query = "--query-gpu=name,memory.total,driver_version"
    try:
        out = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"], check=False, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = [[c.strip() for c in line.split(",")] for line in out.stdout.splitlines() if line.strip()]
    return [{"name": r[0], "memory": r[1], "driver": r[2]} for r in rows if len(r) >= 3]


def _nvidia_lib_dirs() -> list[str]:
    import site

    roots = [Path(p) for p in [*site.getsitepackages(), site.getusersitepackages()]]
    return sorted({str(d) for root in roots for d in root.glob("nvidia/*/lib") if d.is_dir()})


def _loading_providers(ort: Any, available: list[str]) -> tuple[list[str], str | None]:
    """Providers that actually create a session on a one-node model (being listed is not loading)."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        return [], "onnx is not installed: cannot build the probe model"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    blob = model.SerializeToString()
    onnx.checker.check_model(model)
    loaded, error = [], None
    for provider in available:
        if provider in ("TensorrtExecutionProvider",):  # builds engines: slow, and not what edgesent uses
            continue
        try:
            session = ort.InferenceSession(blob, providers=[provider])
            if session.get_providers()[0] == provider:
                loaded.append(provider)
        except Exception as err:  # noqa: BLE001 - ORT raises its own types; all mean "does not load"
            error = f"{provider}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    return loaded, error


def child_tiny_model(out: str) -> dict[str, Any]:
    """A tiny random BERT (2 layers, hidden 32) with an offline WordPiece vocabulary: the dry run's base model.

    Built the way tests/conftest.py builds its model, with 512 positions so the bench grid's lengths fit.
    """
    import string

    import torch
    import transformers

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + ".,!?'-")
    words = ["the", "and", "was", "great", "terrible", "okay", "battery", "service", "staff", "arrived", "not"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *[f"##{c}" for c in chars], *words]
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizerFast(
        vocab_file=str(out_dir / "vocab.txt"), do_lower_case=True, model_max_length=512
    )
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    transformers.BertForSequenceClassification(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"out": str(out_dir), "vocab_size": len(vocab)}


def child_parity(model: str, onnx: dict[str, str], texts: str, device: str) -> dict[str, Any]:
    """ONNX Runtime on ``device`` (CUDA provider, or CPU) against PyTorch fp32 on the same device, same encodings.

    For fp16 also the difference to PyTorch fp16 (``model.half()``) on the same device, as a figure: the same
    precision on both sides tells runtime differences from fp16 rounding.
    """
    import numpy as np
    import onnxruntime as ort
    import torch
    import transformers

    rows = _read_texts(Path(texts))
    manifest = json.loads((Path(model) / "edgesent.json").read_text())
    labels, max_length = [str(label) for label in manifest["labels"]], manifest.get("max_length", 128)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    load = transformers.AutoModelForSequenceClassification.from_pretrained
    torch_model = load(model).eval().to(device)
    torch_half = load(model).eval().half().to(device)  # fp16 runs on CPU too in torch >= 2.1
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    # TF32 off in ORT as in torch's default for matmuls: the fp32 comparison is fp32 against fp32.
    options = [{"device_id": 0, "use_tf32": 0}] if device == "cuda" else [{}]
    sessions = {
        p: ort.InferenceSession(str(Path(d) / "model.onnx"), providers=[provider], provider_options=options)
        for p, d in onnx.items()
    }
    for p, session in sessions.items():
        if session.get_providers()[0] != provider:  # ORT falls back to CPU silently when CUDA cannot load
            print(f"Error: {p} ONNX session runs on {session.get_providers()[0]}, not {provider}", file=sys.stderr)
            raise SystemExit(2)
    notes = [f"{p}: ran on {session.get_providers()[0]}" for p, session in sessions.items()]
    reference: list[np.ndarray] = []
    half: list[np.ndarray] = []
    outputs: dict[str, list[np.ndarray]] = {p: [] for p in sessions}
    for start in range(0, len(rows), 64):
        batch = [t for t, _ in rows[start : start + 64]]
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")  # (B, T)
        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v).to(device) for k, v in enc.items()}
            reference.append(torch_model(**tensors).logits.float().cpu().numpy())  # (B, C)
            half.append(torch_half(**tensors).logits.float().cpu().numpy())
        for p, session in sessions.items():
            feeds = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs() if i.name in enc}
            outputs[p].append(np.asarray(session.run(None, feeds)[0], dtype=np.float32))
    ref = np.concatenate(reference)
    gold = [r for _, r in rows]
    gold_ids = (
        np.array([labels.index(g) if g in labels else -1 for g in gold]) if all(g is not None for g in gold) else None
    )
    results: dict[str, dict[str, float | None]] = {}
    for p, chunks in outputs.items():
        got = np.concatenate(chunks)
        diff = np.abs(got - ref)
        result: dict[str, float | None] = {
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "agreement": float((got.argmax(-1) == ref.argmax(-1)).mean()),
            "accuracy_drop": None,
        }
        if gold_ids is not None:
            accuracy_torch = float((ref.argmax(-1) == gold_ids).mean())
            accuracy_onnx = float((got.argmax(-1) == gold_ids).mean())
            result.update(accuracy_torch=accuracy_torch, accuracy_onnx=accuracy_onnx)
            result["accuracy_drop"] = round(accuracy_torch - accuracy_onnx, 6)
        if p == "fp16":
            result["max_abs_diff_vs_torch_fp16"] = float(np.abs(got - np.concatenate(half)).max())
        results[p] = result
    return {"device": device, "n_texts": len(rows), "results": results, "notes": notes}


def _read_texts(path: Path) -> list[tuple[str, str | None]]:
    """(text, label or None) rows of a CSV/TSV with a header holding ``text`` (or ``sentence``) and maybe ``label``."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ",")
        rows = list(reader)
    column = "text" if rows and "text" in rows[0] else "sentence"
    return [(r[column], r.get("label")) for r in rows]


def child_finetune_fp32(argv: list[str]) -> None:
    """``edgesent finetune`` with AMP off, for the fp32 comparison on CUDA while the CLI has no precision option.

    Patches edgesent.train._amp_flags (private); when a refactor removes it, this says so in one line.
    """
    import edgesent.train as train_module

    if not hasattr(train_module, "_amp_flags"):
        print(
            "Error: cannot turn AMP off: edgesent finetune has no --precision option and edgesent.train._amp_flags is gone",
            file=sys.stderr,
        )
        raise SystemExit(2)
    train_module._amp_flags = lambda device: {"bf16": False, "fp16": False}
    from edgesent.cli import cli

    cli.main(args=["finetune", *argv], prog_name="edgesent")


CHILDREN: dict[str, Callable[..., Any]] = {
    "probe": child_probe,
    "tiny_model": child_tiny_model,
    "parity": child_parity,
}


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def parse_args(argv: list[str]) -> tuple[Plan, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="The same steps on CPU with a tiny random BERT and a few steps."
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), help="Default: cuda, or cpu with --dry-run.")
    parser.add_argument(
        "--out",
        type=Path,
        help="Output folder. Default: bench/results/gpu-<gpu name> (bench/out/gpu-check-<device> in a dry run).",
    )
    parser.add_argument("--overwrite", action="store_true", help="Write into a non-empty --out.")
    parser.add_argument(
        "--work", type=Path, help="Folder for models (kept). Default: a temporary folder, removed at the end."
    )
    parser.add_argument(
        "--wheels", type=Path, help="Install missing packages from this wheel folder only (pip --no-index)."
    )
    parser.add_argument("--no-install", action="store_true", help="Fail instead of installing a missing piece.")
    parser.add_argument(
        "--base", help="Base model for finetune. Default: minilm-l6 (a tiny random BERT in a dry run)."
    )
    parser.add_argument(
        "--sst2",
        type=Path,
        help="Folder with SST-2 train.tsv/dev.tsv. Default: shared/data/sst2 or ../shared/data/sst2 (none in a dry run).",
    )
    parser.add_argument(
        "--sst2-rows", type=int, default=20000, help="Rows of SST-2 train to fine-tune on. Default: 20000."
    )
    parser.add_argument("--max-steps", type=int, help="Cap fine-tuning steps. Default: none (3 in a dry run).")
    parser.add_argument("--batch-sizes", help="Bench batch sizes. Default: 1,8,32,128 (1,8 in a dry run).")
    parser.add_argument("--seq-lens", help="Bench lengths. Default: 32,128,512 (32,128 in a dry run).")
    parser.add_argument("--runs", type=int, help="Timed runs per bench cell. Default: 50 (5 in a dry run).")
    parser.add_argument(
        "--timeout", type=float, help="Seconds allowed per subprocess. Default: 420 (240 in a dry run)."
    )
    args = parser.parse_args(argv)
    dry = args.dry_run
    device = args.device or ("cpu" if dry else "cuda")
    if dry and device == "cuda":
        parser.error("--dry-run runs on CPU; drop --device cuda")
    out = args.out or REPO_ROOT / "bench" / "out" / f"gpu-check-{'dry-run' if dry else device}"
    if args.out is None and device == "cuda":
        names = _nvidia_smi()
        out = REPO_ROOT / "bench" / "results" / f"gpu-{_slug(names[0]['name']) if names else 'unknown'}"
    sst2 = args.sst2
    if sst2 is None and not dry:
        sst2 = next(
            (p for p in (REPO_ROOT / "shared/data/sst2", REPO_ROOT.parent / "shared/data/sst2") if p.is_dir()), None
        )
    return Plan(
        device=device,
        dry_run=dry,
        out_dir=out.resolve(),
        work_dir=(args.work or Path(tempfile.mkdtemp(prefix="edgesent-gpu-check-"))).resolve(),
        wheels=args.wheels.resolve() if args.wheels else None,
        base=args.base,
        sst2_dir=sst2,
        sst2_rows=args.sst2_rows,
        max_steps=args.max_steps if args.max_steps is not None else (3 if dry else 0),
        batch_sizes=args.batch_sizes or ("1,8" if dry else "1,8,32,128"),
        seq_lens=args.seq_lens or ("32,128" if dry else "32,128,512"),
        warmup=2 if dry else 10,
        runs=args.runs or (5 if dry else 50),
        e2e_runs=3 if dry else 20,
        serve_requests=20 if dry else 1000,
        serve_concurrency="1,4" if dry else "1,8,32",
        command_timeout_s=args.timeout or (240.0 if dry else 420.0),
        install=not args.no_install,
    ), args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["--child", "finetune_fp32"]:
        child_finetune_fp32(argv[2:])
        return 0
    if argv[:1] == ["--child"]:
        print(json.dumps(CHILDREN[argv[1]](**(json.loads(argv[2]) if len(argv) > 2 else {}))))
        return 0
    plan, args = parse_args(argv)
    if plan.out_dir.exists() and any(plan.out_dir.iterdir()) and not args.overwrite:
        print(f"gpu-check: {plan.out_dir} is not empty; pass --overwrite or another --out", file=sys.stderr)
        return 2
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return run_check(plan)
    finally:
        if args.work is None:
            shutil.rmtree(plan.work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
