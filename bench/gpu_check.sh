#!/usr/bin/env bash
# The GPU check in one command (bench/gpu_check.py; bench/README.md, "GPU check"). On the GPU box:
#
#   bash bench/gpu_check.sh --out "$OUT/gpu" --wheels .whl
#
# installs what is missing from the wheel folder (edgesent[train], a CUDA torch when torch sees no GPU,
# onnxruntime-gpu in place of onnxruntime), then fine-tunes, exports, checks parity, benchmarks and predicts on
# CUDA in well under 8 minutes, writing results.json and summary.md into --out. Rehearsal on any CPU:
#
#   bash bench/gpu_check.sh --dry-run --out bench/out/gpu-check-dry-run
#
# Python: $PYTHON when set, else the active virtualenv, else bench/out/gpu-venv (created with the system's
# site-packages, so a CUDA torch that the machine already has is used rather than installed again).
set -euo pipefail
cd "$(dirname "$0")/.."

py="${PYTHON:-}"
if [ -z "$py" ] && [ -n "${VIRTUAL_ENV:-}" ]; then
    py="$VIRTUAL_ENV/bin/python"
fi
if [ -z "$py" ]; then
    venv=bench/out/gpu-venv
    if [ ! -x "$venv/bin/python" ] && ! python3 -m venv --system-site-packages "$venv" >/dev/null 2>&1; then
        echo "gpu-check: cannot create $venv (python3 -m venv failed); using python3 itself" >&2
        export PIP_BREAK_SYSTEM_PACKAGES=1
        venv=""
    fi
    py="${venv:+$venv/bin/python}"
    py="${py:-python3}"
fi
exec "$py" bench/gpu_check.py "$@"
