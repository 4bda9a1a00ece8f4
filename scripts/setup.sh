#!/usr/bin/env bash
# Set up edgesent for development in ./.venv (or in the virtualenv that is already active).
#
# torch comes first and pinned: on these machines `pip install torch==2.13.0` takes the local CPU
# wheel, while a bare `torch` requirement with no torch installed pulls the newest CUDA build (GBs).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    PY=.venv/bin/python
else
    PY="$VIRTUAL_ENV/bin/python"
fi

stamp=.venv/.edgesent-setup
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && "$PY" -c "import edgesent, torch" 2>/dev/null; then
    exit 0
fi
"$PY" -m pip install --quiet --upgrade pip
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install --quiet "torch==${EDGESENT_TORCH_VERSION:-2.13.0}"
"$PY" -m pip install --quiet -e ".[train,bench,dev,serve,search,ray,spark,openvino]"
mkdir -p .venv && touch "$stamp"
echo "edgesent set up with $("$PY" -c 'import sys; print(sys.executable)')"
